//! A minimal WebDriver client: only the commands Logbook's browser tests and benchmark use. It drives Debian's
//! `/usr/bin/chromium` through `chromedriver` (package `chromium-driver`), headless, with a fresh profile.

use crate::process::{free_port, Killed};
use base64::Engine;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How to start the browser.
#[derive(Debug, Clone)]
pub struct BrowserOptions {
    pub width: u32,
    pub height: u32,
}

impl Default for BrowserOptions {
    fn default() -> Self {
        BrowserOptions {
            width: 1400,
            height: 900,
        }
    }
}

/// One headless Chromium session. Every failed command panics with WebDriver's message: this is for tests and
/// benchmarks, where a failure should stop the run and say why.
pub struct Browser {
    http: reqwest::Client,
    session: String,
    downloads: tempfile::TempDir,
    _driver: Killed,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn start() -> Browser {
        Browser::start_with(BrowserOptions::default()).await
    }

    pub async fn start_with(options: BrowserOptions) -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs (Debian package chromium-driver; scripts/test installs it)");
        let driver = Killed(driver);
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.get(format!("{base}/status")).send().await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().expect("a temporary profile directory");
        let downloads = tempfile::tempdir().expect("a temporary downloads directory");
        let capabilities = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", format!("--window-size={},{}", options.width, options.height),
                     format!("--user-data-dir={}", profile.path().display())],
            "prefs": {"download.default_directory": downloads.path(), "download.prompt_for_download": false}}}}});
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .expect("chromedriver answers JSON");
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {created}"))
            .to_string();
        let browser = Browser {
            http,
            session: format!("{base}/session/{session}"),
            downloads,
            _driver: driver,
            _profile: profile,
        };
        // Headless Chromium asks before downloading unless told where to put files.
        browser
            .cdp(
                "Browser.setDownloadBehavior",
                json!({"behavior": "allow", "downloadPath": browser.downloads.path()}),
            )
            .await;
        browser
    }

    /// Where downloads land.
    pub fn downloads(&self) -> &Path {
        self.downloads.path()
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let request = self.http.request(method, format!("{}{path}", self.session));
        let request = if body.is_null() {
            request
        } else {
            request.json(&body)
        };
        let reply: Value = request
            .send()
            .await
            .unwrap_or_else(|error| panic!("webdriver {path}: {error}"))
            .json()
            .await
            .unwrap_or_else(|error| panic!("webdriver {path}: {error}"));
        if let Some(error) = reply["value"].get("error") {
            panic!("webdriver {path}: {error} {}", reply["value"]["message"]);
        }
        reply["value"].clone()
    }

    /// A Chrome DevTools Protocol command (chromedriver's `goog/cdp/execute`).
    pub async fn cdp(&self, command: &str, params: Value) -> Value {
        self.command(
            reqwest::Method::POST,
            "/goog/cdp/execute",
            json!({"cmd": command, "params": params}),
        )
        .await
    }

    pub async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", json!({"url": url}))
            .await;
    }

    /// Runs `script` (a function body; `return` gives the result) in the page.
    pub async fn js(&self, script: &str) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
        .await
    }

    /// Polls `script` (which returns a value) until it is truthy, for up to 15 seconds; returns it.
    pub async fn wait_for(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let value = self.js(script).await;
            let truthy = !(value.is_null()
                || value == json!(false)
                || value == json!(0)
                || value == json!("")
                || value == json!([]));
            if truthy {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what} (last value {value})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The WebDriver id of the element matching `css`.
    pub async fn find(&self, css: &str) -> String {
        let element = self
            .command(
                reqwest::Method::POST,
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await;
        element[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element id for {css}: {element}"))
            .to_string()
    }

    pub async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            json!({}),
        )
        .await;
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            json!({"text": text}),
        )
        .await;
    }

    /// Presses and releases keys on whatever has the focus, as a keyboard would. Use WebDriver's codes for
    /// special keys: [`Browser::TAB`], [`Browser::ENTER`], [`Browser::ESCAPE`], [`Browser::DOWN`], ...
    /// Modifiers (Shift, Control, Alt, Meta) stay held from where they appear to the end, as in
    /// [`Browser::SHIFT_TAB`].
    pub async fn keys(&self, keys: &str) {
        const MODIFIERS: [char; 4] = ['\u{E008}', '\u{E009}', '\u{E00A}', '\u{E03D}'];
        let mut actions: Vec<Value> = Vec::new();
        let mut held = Vec::new();
        for key in keys.chars() {
            actions.push(json!({"type": "keyDown", "value": key.to_string()}));
            if MODIFIERS.contains(&key) {
                held.push(key);
            } else {
                actions.push(json!({"type": "keyUp", "value": key.to_string()}));
            }
        }
        for key in held.into_iter().rev() {
            actions.push(json!({"type": "keyUp", "value": key.to_string()}));
        }
        self.command(
            reqwest::Method::POST,
            "/actions",
            json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]}),
        )
        .await;
        self.command(reqwest::Method::DELETE, "/actions", Value::Null)
            .await;
    }

    pub const TAB: &'static str = "\u{E004}";
    pub const ENTER: &'static str = "\u{E007}";
    pub const ESCAPE: &'static str = "\u{E00C}";
    pub const DOWN: &'static str = "\u{E015}";
    pub const SHIFT_TAB: &'static str = "\u{E008}\u{E004}";

    /// Drags the mouse across the element matching `css`, from `from_x` to `to_x` pixels relative to its centre.
    pub async fn drag_across(&self, css: &str, from_x: i64, to_x: i64) {
        let id = self.find(css).await;
        let origin = json!({ELEMENT: id});
        let steps = [
            json!({"type": "pointerMove", "duration": 0, "origin": origin, "x": from_x, "y": 0}),
            json!({"type": "pointerDown", "button": 0}),
            json!({"type": "pointerMove", "duration": 100, "origin": origin, "x": (from_x + to_x) / 2, "y": 0}),
            json!({"type": "pointerMove", "duration": 100, "origin": origin, "x": to_x, "y": 0}),
            json!({"type": "pointerUp", "button": 0}),
        ];
        self.command(
            reqwest::Method::POST,
            "/actions",
            json!({"actions": [{"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"}, "actions": steps}]}),
        )
        .await;
        self.command(reqwest::Method::DELETE, "/actions", Value::Null)
            .await;
    }

    /// Resizes the window (outer size, in CSS pixels).
    pub async fn resize(&self, width: u32, height: u32) {
        self.command(
            reqwest::Method::POST,
            "/window/rect",
            json!({"width": width, "height": height}),
        )
        .await;
    }

    /// Makes the page see `prefers-color-scheme: dark` (or light), as a system setting would.
    pub async fn color_scheme(&self, scheme: &str) {
        self.cdp(
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "prefers-color-scheme", "value": scheme}]}),
        )
        .await;
    }

    /// Saves a PNG of the viewport as `directory/name.png`.
    pub async fn screenshot(&self, directory: &Path, name: &str) -> PathBuf {
        let encoded = self
            .command(reqwest::Method::GET, "/screenshot", Value::Null)
            .await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().expect("a base64 screenshot"))
            .expect("valid base64");
        std::fs::create_dir_all(directory).expect("create the screenshot directory");
        let path = directory.join(format!("{name}.png"));
        std::fs::write(&path, bytes).expect("write the screenshot");
        path
    }

    /// Waits up to 15 seconds for a finished download named `name`, removes it (so the next download of that
    /// name keeps it) and returns its contents.
    pub async fn take_download(&self, name: &str) -> String {
        let path = self.downloads.path().join(name);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(text) = std::fs::read_to_string(&path) {
                std::fs::remove_file(&path).expect("remove the download");
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "no download {name} in {}",
                self.downloads.path().display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
