//! Helpers shared by Logbook's end-to-end tests and its benchmark: loopback ports, child processes that die
//! with their owner, and [`Browser`], a minimal WebDriver client for Debian's `chromium` + `chromium-driver`.

mod browser;
mod process;

pub use browser::{Browser, BrowserOptions};
pub use process::{free_port, wait_for_port, Killed};
