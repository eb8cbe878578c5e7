//! The dashboard in a real headless Chromium (Debian's `chromium` and `chromium-driver`, installed by
//! `scripts/test` when missing), driven over the WebDriver protocol against a real `logbook serve`.
//! Screenshots of each main screen are saved in `artifacts/` (ignored by git) for people to look at.

mod support;

use base64::Engine;
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{free_port, serve, wait_for_port, Killed};

const ADMIN: &str = "browser-test-admin";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A minimal WebDriver client: only the commands these tests use.
struct Browser {
    http: reqwest::Client,
    session: String,
    _driver: Killed,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
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
        let profile = tempfile::tempdir().unwrap();
        let capabilities = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", "--window-size=1400,900",
                     format!("--user-data-dir={}", profile.path().display())]}}}});
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_string();
        Browser {
            http,
            session: format!("{base}/session/{session}"),
            _driver: driver,
            _profile: profile,
        }
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let request = self.http.request(method, format!("{}{path}", self.session));
        let request = if body.is_null() {
            request
        } else {
            request.json(&body)
        };
        let reply: Value = request.send().await.unwrap().json().await.unwrap();
        if let Some(error) = reply["value"].get("error") {
            panic!("webdriver {path}: {error} {}", reply["value"]["message"]);
        }
        reply["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", json!({"url": url}))
            .await;
    }

    async fn js(&self, script: &str) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
        .await
    }

    /// Polls `script` (which returns a value) until it is truthy; returns it.
    async fn wait_for(&self, what: &str, script: &str) -> Value {
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
    async fn find(&self, css: &str) -> String {
        let element = self
            .command(
                reqwest::Method::POST,
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await;
        element[ELEMENT].as_str().unwrap().to_string()
    }

    async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            json!({}),
        )
        .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            json!({"text": text}),
        )
        .await;
    }

    async fn screenshot(&self, name: &str) {
        let encoded = self
            .command(reqwest::Method::GET, "/screenshot", Value::Null)
            .await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap())
            .unwrap();
        let directory =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../artifacts/screenshots");
        std::fs::create_dir_all(&directory).unwrap();
        std::fs::write(directory.join(format!("{name}.png")), bytes).unwrap();
    }

    /// Sets a control of the last filter row and fires `change`, as a person choosing from a list would.
    async fn set_last_filter(&self, label: &str, value: &str) {
        self.js(&format!(
            "const c = document.querySelector('#filters .filter-row:last-child [aria-label=\"{label}\"]'); \
             c.value = {value:?}; c.dispatchEvent(new Event('change')); return true;"
        ))
        .await;
    }
}

const ROWS: &str = "return [...document.querySelectorAll('#rows tr')].map(r => ({id: r.dataset.id, seq: Number(r.dataset.seq), \
    user: r.children[1].textContent, action: r.children[2].textContent, entity: r.children[3].querySelector('.entity-name').textContent, \
    time: r.querySelector('time').getAttribute('datetime')}))";

/// Waits until the table has settled on rows satisfying `condition` (JS over `rows`).
async fn rows_where(browser: &Browser, what: &str, condition: &str) -> Vec<Value> {
    let script = format!("const rows = (() => {{ {ROWS} }})(); return (document.getElementById('status').textContent !== 'Loading…' && rows.length && ({condition})) ? rows : null;");
    browser
        .wait_for(what, &script)
        .await
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_a_real_browser() {
    // A server with an audit trail: 60 old card updates, and a story created, updated and (recently) deleted.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _server = Killed(serve(dir.path(), port, ADMIN));
    wait_for_port(port);
    let http = reqwest::Client::new();
    http.post(format!("{base}/v1/tenants"))
        .bearer_auth(ADMIN)
        .json(&json!({"id": "acme"}))
        .send()
        .await
        .unwrap();
    let key: Value = http
        .post(format!("{base}/v1/tenants/acme/keys"))
        .bearer_auth(ADMIN)
        .json(&json!({"scopes": ["read", "ingest", "admin"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = key["key"].as_str().unwrap().to_string();
    let now = logbook_core::time::now_millis();
    let minute = 60_000;
    let mut events: Vec<Value> = (0..60)
        .map(|i| json!({"action": "UPDATED", "actor": {"id": "u_2", "name": "Bob"}, "entity": {"type": "card", "id": format!("c_{i}"), "name": format!("Card {i}")},
                        "created_at": now - 180 * minute + i * minute, "changes": {"before": {"title": "old"}, "after": {"title": format!("new {i}")}}}))
        .collect();
    events.push(json!({"action": "CREATED", "actor": {"id": "u_1", "name": "Alice"}, "entity": {"type": "story", "id": "st_1", "name": "Welcome story"},
        "created_at": now - 200 * minute, "changes": {"after": {"name": "Hello World!", "is_active": true}}}));
    events.push(json!({"action": "UPDATED", "actor": {"id": "u_1", "name": "Alice"}, "entity": {"type": "story", "id": "st_1", "name": "Welcome story"},
        "created_at": now - 30 * minute, "changes": {"before": {"name": "Hello World!", "is_active": true}, "after": {"name": "Good Morning", "is_active": true}}}));
    events.push(json!({"action": "DELETED", "actor": {"id": "u_1", "name": "Alice"}, "entity": {"type": "story", "id": "st_1", "name": "Welcome story"},
        "created_at": now - 10 * minute, "changes": {"before": {"name": "Good Morning", "is_active": true}}}));
    events.push(
        json!({"type": "integration.error", "outcome": "failure", "resources": {"bot_id": "bot_1"},
        "metadata": {"code": 429}, "created_at": now - 5 * minute}),
    );
    let ingested = http
        .post(format!("{base}/v1/events"))
        .bearer_auth(&key)
        .json(&events)
        .send()
        .await
        .unwrap();
    assert_eq!(ingested.status(), 201);

    let browser = Browser::start().await;

    // Sign in; newest first.
    browser.goto(&format!("{base}/")).await;
    browser
        .wait_for(
            "the sign-in form",
            "return !document.getElementById('signin').hidden",
        )
        .await;
    browser.type_into("#key", &key).await;
    browser.click("#signin button[type=submit]").await;
    let rows = rows_where(&browser, "the first page", "rows.length === 50").await;
    let times: Vec<&str> = rows.iter().map(|r| r["time"].as_str().unwrap()).collect();
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, sorted, "newest first");
    assert_eq!(rows[0]["action"], "DELETED");
    browser.screenshot("01-audit-log").await;

    // Action = DELETED.
    browser.click("#add-filter").await;
    browser.set_last_filter("Action", "DELETED").await;
    let deleted = rows_where(
        &browser,
        "only deletions",
        "rows.every(r => r.action === 'DELETED')",
    )
    .await;
    assert_eq!(deleted.len(), 1);
    assert!(
        browser
            .js("return location.search")
            .await
            .as_str()
            .unwrap()
            .contains("filter%5Baction%5D%5Beq%5D=DELETED"),
        "filters live in the URL"
    );
    browser.screenshot("02-filter-deleted").await;

    // The trash icon removes it.
    browser.click("#filters .remove-filter").await;
    rows_where(
        &browser,
        "all actions again",
        "rows.some(r => r.action !== 'DELETED')",
    )
    .await;

    // Timestamp: relative "Last 1 hour".
    browser.click("#add-filter").await;
    browser.set_last_filter("Category", "timestamp").await;
    browser.set_last_filter("Time range", "1h").await;
    let recent = rows_where(&browser, "the last hour", "rows.length === 2").await;
    assert!(
        recent.iter().all(|r| r["entity"] == "Welcome story"),
        "{recent:?}"
    );
    browser.click("#filters .remove-filter").await;

    // Entity Name contains "welc" (case-insensitive).
    browser.click("#add-filter").await;
    browser.set_last_filter("Category", "entity_name").await;
    browser.set_last_filter("Operator", "contains").await;
    browser.set_last_filter("Value", "welc").await;
    let named = rows_where(&browser, "names containing welc", "rows.length === 3").await;
    assert!(named
        .iter()
        .all(|r| r["entity"].as_str().unwrap().contains("Welcome")));

    // Hovering (focusing) the entity name shows the change block with struck-through old values in red and
    // new values in green.
    let styles = browser
        .js("const row = [...document.querySelectorAll('#rows tr')].find(r => r.children[2].textContent === 'UPDATED'); \
             row.querySelector('.entity-name').focus(); \
             const block = row.querySelector('.changes'); const del = block.querySelector('del.old'); const ins = block.querySelector('ins.new'); \
             const rgb = (c) => c.match(/\\d+/g).map(Number); \
             return {display: getComputedStyle(block).display, old: del.textContent, new: ins.textContent, \
                     oldDecoration: getComputedStyle(del).textDecorationLine, oldColor: rgb(getComputedStyle(del).color), \
                     newColor: rgb(getComputedStyle(ins).color), path: block.querySelector('.path').textContent};")
        .await;
    assert_eq!(styles["display"], "block", "{styles}");
    assert_eq!(styles["old"], "Hello World!");
    assert_eq!(styles["new"], "Good Morning");
    assert_eq!(styles["path"], "/name");
    assert_eq!(styles["oldDecoration"], "line-through");
    let [r, g, _] = [
        styles["oldColor"][0].as_u64().unwrap(),
        styles["oldColor"][1].as_u64().unwrap(),
        0,
    ];
    assert!(r > g + 60, "old values are red: {styles}");
    let (r, g) = (
        styles["newColor"][0].as_u64().unwrap(),
        styles["newColor"][1].as_u64().unwrap(),
    );
    assert!(g > r + 40, "new values are green: {styles}");
    browser.screenshot("03-change-block").await;

    // Entity timeline from a row: created, updated, deleted, oldest first.
    browser.click("#filters .remove-filter").await;
    rows_where(&browser, "the full first page", "rows.length === 50").await;
    browser.click("#rows tr:first-child").await;
    browser.click("#timeline-button").await;
    browser
        .wait_for(
            "the timeline",
            "return document.getElementById('timeline-title')",
        )
        .await;
    let steps = browser.js("return [...document.querySelectorAll('.timeline-step .badge')].map(b => b.textContent)").await;
    assert_eq!(steps, json!(["CREATED", "UPDATED", "DELETED"]));
    browser.screenshot("04-entity-timeline").await;
    browser
        .js("document.getElementById('detail').hidden = true; return true")
        .await;

    // Load more: the next page, no duplicates.
    browser.click("#more").await;
    let all = rows_where(&browser, "the second page", "rows.length === 63").await;
    let mut ids: Vec<&str> = all.iter().map(|r| r["id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 63, "no row twice");

    // Live mode: a new event appears at the top without reloading.
    browser.js("const live = document.getElementById('live'); live.checked = true; live.dispatchEvent(new Event('change')); return true").await;
    let fresh = json!({"action": "INVITED", "actor": {"id": "u_3", "name": "Carol"}, "entity": {"type": "access", "id": "acc_9", "name": "Dan"}});
    assert_eq!(
        http.post(format!("{base}/v1/events"))
            .bearer_auth(&key)
            .json(&fresh)
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    rows_where(
        &browser,
        "the live event on top",
        "rows[0].action === 'INVITED' && rows[0].user === 'Carol'",
    )
    .await;
    browser.js("const live = document.getElementById('live'); live.checked = false; live.dispatchEvent(new Event('change')); return true").await;

    // The event log view shows operational events, failures highlighted.
    browser.click("#tab-events").await;
    let failure = browser
        .wait_for("the event log", "const r = [...document.querySelectorAll('#rows tr.failure')]; return r.length ? r.map(x => x.children[1].textContent) : null")
        .await;
    assert_eq!(failure, json!(["integration.error"]));
    assert!(browser
        .js("return document.getElementById('thead').textContent")
        .await
        .as_str()
        .unwrap()
        .contains("Resources"));
    browser.screenshot("05-event-log").await;

    // Sign out forgets the key.
    browser.click("#signout").await;
    browser.wait_for("the sign-in form", "return !document.getElementById('signin').hidden && !sessionStorage.getItem('logbook.key')").await;

    // A viewer token pinned to one actor shows only that actor's events, whatever the URL asks for.
    let token: Value = http
        .post(format!("{base}/v1/tenants/acme/viewer-tokens"))
        .bearer_auth(&key)
        .json(&json!({"filter": "actor=u_1"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    browser
        .goto(&format!(
            "{base}/?filter%5Bactor.id%5D%5Bne%5D=u_1#viewer_token={}",
            token["token"].as_str().unwrap()
        ))
        .await;
    browser
        .wait_for(
            "the viewer's empty result",
            "return document.getElementById('status').textContent.includes('No events')",
        )
        .await;
    browser.goto(&format!("{base}/")).await;
    let pinned = rows_where(&browser, "the pinned view", "rows.length === 3").await;
    assert!(pinned.iter().all(|r| r["user"] == "Alice"), "{pinned:?}");
    assert!(browser
        .js("return document.getElementById('pinned').textContent")
        .await
        .as_str()
        .unwrap()
        .contains("actor=u_1"));
    browser.screenshot("06-viewer-token").await;
}
