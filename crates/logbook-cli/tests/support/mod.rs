//! Helpers shared by the test binaries that run the real `logbook` executable. Each binary uses a part of
//! them, hence `dead_code` is allowed here.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port free on loopback right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process, killed (SIGKILL) when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `logbook serve` on `data_dir` and `127.0.0.1:port`, with `admin_key`.
pub fn serve(data_dir: &Path, port: u16, admin_key: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_logbook"))
        .args([
            "serve",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("LOGBOOK_ADMIN_KEY", admin_key)
        .env("LOGBOOK_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("logbook starts")
}

/// Waits until the server accepts connections (it listens only once its store is open and it can serve).
pub fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the server on port {port} did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
