//! Helpers shared by the test binaries that run the real `logbook` executable. Each binary uses a part of
//! them, hence `dead_code` is allowed here.
#![allow(dead_code)]

#[allow(unused_imports)]
pub use logbook_testkit::{free_port, wait_for_port, Killed};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Starts `logbook serve` on `data_dir` and `127.0.0.1:port`, with `admin_key`.
pub fn serve(data_dir: &Path, port: u16, admin_key: &str) -> Child {
    serve_with(data_dir, port, admin_key, &[])
}

/// [`serve`] with extra `LOGBOOK_*` environment variables.
pub fn serve_with(data_dir: &Path, port: u16, admin_key: &str, env: &[(&str, &str)]) -> Child {
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
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("logbook starts")
}
