//! Helpers shared by Logbook's end-to-end tests and its benchmark: loopback ports, child processes that die
//! with their owner, [`tenant_key`] to set up a tenant over HTTP, and [`Browser`], a minimal WebDriver client for Debian's `chromium` + `chromium-driver`.

mod api;
mod browser;
mod process;

pub use api::tenant_key;
pub use browser::{Browser, BrowserOptions};
pub use process::{free_port, wait_for_port, Killed};
