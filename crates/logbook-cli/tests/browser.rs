//! The dashboard in a real headless Chromium (Debian's `chromium` and `chromium-driver`, installed by
//! `scripts/test` when missing), driven over the WebDriver protocol against a real `logbook serve`.
//! Screenshots of each main screen are saved in `artifacts/` (ignored by git) for people to look at.

mod support;

use logbook_testkit::Browser;
use serde_json::{json, Value};
use std::path::PathBuf;
use support::{free_port, serve, wait_for_port, Killed};

const ADMIN: &str = "browser-test-admin";

fn screenshots() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../artifacts/screenshots")
}

/// Sets a control of the last filter row and fires `change`, as a person choosing from a list would.
async fn set_last_filter(browser: &Browser, label: &str, value: &str) {
    browser
        .js(&format!(
            "const c = document.querySelector('#filters .filter-row:last-child [aria-label=\"{label}\"]'); \
             c.value = {value:?}; c.dispatchEvent(new Event('change')); return true;"
        ))
        .await;
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

/// A running `logbook serve` with tenant `acme` holding an audit trail: 60 card updates from three hours ago,
/// a story created, updated and (recently) deleted, one failed integration call, and `bulk` operational
/// `bulk.import` events from the last two days.
struct AuditTrail {
    base: String,
    key: String,
    http: reqwest::Client,
    _server: Killed,
    _dir: tempfile::TempDir,
}

async fn audit_trail(bulk: usize) -> AuditTrail {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let server = Killed(serve(dir.path(), port, ADMIN));
    wait_for_port(port);
    let http = reqwest::Client::new();
    let key =
        logbook_testkit::tenant_key(&http, &base, ADMIN, "acme", &["read", "ingest", "admin"])
            .await;
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
    events.extend((0..bulk as i64).map(|i| {
        json!({"type": "bulk.import", "resources": {"dataset_id": format!("ds_{}", i % 7)},
               "metadata": {"row": i, "note": "a \"quoted\", comma"}, "created_at": now - 2 * 1440 * minute + i * 1000})
    }));
    for chunk in events.chunks(1000) {
        let ingested = http
            .post(format!("{base}/v1/events"))
            .bearer_auth(&key)
            .json(&chunk)
            .send()
            .await
            .unwrap();
        assert_eq!(ingested.status(), 201);
    }
    AuditTrail {
        base,
        key,
        http,
        _server: server,
        _dir: dir,
    }
}

/// Opens the dashboard and signs in with the tenant's key.
async fn signed_in(browser: &Browser, trail: &AuditTrail) {
    browser.goto(&format!("{}/", trail.base)).await;
    browser
        .wait_for(
            "the sign-in form",
            "return !document.getElementById('signin').hidden",
        )
        .await;
    browser.type_into("#key", &trail.key).await;
    browser.click("#signin button[type=submit]").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_a_real_browser() {
    let trail = audit_trail(0).await;
    let AuditTrail {
        base, key, http, ..
    } = &trail;
    let browser = Browser::start().await;

    // Sign in; newest first.
    signed_in(&browser, &trail).await;
    let rows = rows_where(&browser, "the first page", "rows.length === 50").await;
    let times: Vec<&str> = rows.iter().map(|r| r["time"].as_str().unwrap()).collect();
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, sorted, "newest first");
    assert_eq!(rows[0]["action"], "DELETED");
    browser.screenshot(&screenshots(), "01-audit-log").await;

    // Action = DELETED.
    browser.click("#add-filter").await;
    set_last_filter(&browser, "Action", "DELETED").await;
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
    browser
        .screenshot(&screenshots(), "02-filter-deleted")
        .await;

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
    set_last_filter(&browser, "Category", "timestamp").await;
    set_last_filter(&browser, "Time range", "1h").await;
    let recent = rows_where(&browser, "the last hour", "rows.length === 2").await;
    assert!(
        recent.iter().all(|r| r["entity"] == "Welcome story"),
        "{recent:?}"
    );
    browser.click("#filters .remove-filter").await;

    // Entity Name contains "welc" (case-insensitive).
    browser.click("#add-filter").await;
    set_last_filter(&browser, "Category", "entity_name").await;
    set_last_filter(&browser, "Operator", "contains").await;
    set_last_filter(&browser, "Value", "welc").await;
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
    browser.screenshot(&screenshots(), "03-change-block").await;

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
    browser
        .screenshot(&screenshots(), "04-entity-timeline")
        .await;
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
            .bearer_auth(key)
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
    browser.screenshot(&screenshots(), "05-event-log").await;

    // Sign out forgets the key.
    browser.click("#signout").await;
    browser.wait_for("the sign-in form", "return !document.getElementById('signin').hidden && !sessionStorage.getItem('logbook.key')").await;

    // A viewer token pinned to one actor shows only that actor's events, whatever the URL asks for.
    let token: Value = http
        .post(format!("{base}/v1/tenants/acme/viewer-tokens"))
        .bearer_auth(key)
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
    browser.screenshot(&screenshots(), "06-viewer-token").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_zoom_and_exports() {
    // 1,200 operational events besides the audit trail: exports of the event log cross the 1,000-row page.
    let trail = audit_trail(1200).await;
    let browser = Browser::start().await;
    signed_in(&browser, &trail).await;
    rows_where(&browser, "the first page", "rows.length === 50").await;

    // The chart spans the audit trail (oldest event three hours and twenty minutes ago) and is stacked by action.
    let bars = browser
        .wait_for(
            "the chart's bars",
            "const bars = document.querySelectorAll('#chart rect:not(#chart-selection)'); return bars.length > 3 ? bars.length : null",
        )
        .await;
    assert!(bars.as_u64().unwrap() > 3);
    let legend = browser
        .js("return document.getElementById('chart-legend').textContent")
        .await;
    assert!(
        ["UPDATED", "CREATED", "DELETED"]
            .iter()
            .all(|action| legend.as_str().unwrap().contains(action)),
        "{legend}"
    );

    // Dragging across the right part of the chart narrows the time window to what was selected.
    browser.drag_across("#chart", 100, 600).await;
    let window = browser
        .wait_for(
            "since and until in the URL",
            "const p = new URLSearchParams(location.search); return p.get('since') && p.get('until') ? [p.get('since'), p.get('until')] : null",
        )
        .await;
    let (since, until) = (
        window[0].as_str().unwrap().to_string(),
        window[1].as_str().unwrap().to_string(),
    );
    let since_ms = logbook_core::time::parse_time(&since, 0).unwrap();
    let until_ms = logbook_core::time::parse_time(&until, 0).unwrap();
    assert!(since_ms < until_ms);
    let narrowed = rows_where(&browser, "rows inside the selected window", "true").await;
    for row in &narrowed {
        let time = logbook_core::time::parse_time(row["time"].as_str().unwrap(), 0).unwrap();
        assert!(
            since_ms - 60_000 <= time && time <= until_ms + 60_000,
            "{row} outside {since}..{until}"
        );
    }
    let filters = browser
        .js("return [...document.querySelectorAll('#filters .filter-row')].map(r => r.dataset.category)")
        .await;
    assert_eq!(filters, json!(["timestamp", "timestamp"]));
    browser.screenshot(&screenshots(), "07-chart-zoomed").await;

    // Exports of the event log view: every event of the view, across pages, in both formats.
    browser.click("#tab-events").await;
    // Clear the zoom: the whole event log.
    browser.click("#filters .remove-filter").await;
    browser.click("#filters .remove-filter").await;
    browser
        .wait_for(
            "the event log",
            "return document.getElementById('status').textContent !== 'Loading…' && document.querySelectorAll('#rows tr').length === 50 \
             && !location.search.includes('since')",
        )
        .await;
    let expected = 1200 + 64;
    browser.click("#export-jsonl").await;
    let jsonl = browser.take_download("logbook-export.jsonl").await;
    let mut ids: Vec<String> = jsonl
        .lines()
        .map(|line| {
            let event: Value = serde_json::from_str(line).expect("each line is an event");
            event["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ids.len(), expected);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), expected, "no event twice in the JSONL export");

    browser.click("#export-csv").await;
    let csv = browser.take_download("logbook-export.csv").await;
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    assert_eq!(reader.headers().unwrap().get(0), Some("id"));
    let mut csv_ids: Vec<String> = reader
        .records()
        .map(|record| record.expect("a CSV record")[0].to_string())
        .collect();
    assert_eq!(csv_ids.len(), expected, "one header row, then every event");
    csv_ids.sort();
    assert_eq!(csv_ids, ids, "CSV and JSONL exports hold the same events");
    browser
        .wait_for(
            "the export status",
            &format!("return document.getElementById('status').textContent === 'Exported {expected} events.'"),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyboard_only_narrow_window_and_dark_theme() {
    let trail = audit_trail(0).await;
    let browser = Browser::start().await;
    browser.goto(&format!("{}/", trail.base)).await;
    browser
        .wait_for(
            "the focused key field",
            "return document.activeElement && document.activeElement.id === 'key'",
        )
        .await;

    // Sign in with the keyboard alone.
    browser
        .keys(&format!("{}{}", trail.key, Browser::ENTER))
        .await;
    rows_where(&browser, "the first page", "rows.length === 50").await;
    let active = "return document.activeElement ? (document.activeElement.id || document.activeElement.tagName) : null";

    /// Presses Tab until `script` is true of the focused element; at most 60 times.
    async fn tab_to(browser: &Browser, what: &str, script: &str) {
        for _ in 0..60 {
            if browser.js(script).await == json!(true) {
                return;
            }
            browser.keys(Browser::TAB).await;
        }
        panic!("Tab never reached {what}");
    }

    // "+ Add filter", then Action → equals → DELETED with arrow keys.
    tab_to(
        &browser,
        "+ Add filter",
        "return document.activeElement.id === 'add-filter'",
    )
    .await;
    browser.keys(Browser::ENTER).await;
    let focused_label = "return document.activeElement.getAttribute('aria-label')";
    assert_eq!(browser.js(focused_label).await, json!("Category"));
    browser.keys(&Browser::TAB.repeat(2)).await;
    assert_eq!(browser.js(focused_label).await, json!("Action"));
    // The options: choose…, CREATED, UPDATED, DELETED.
    browser.keys(&Browser::DOWN.repeat(3)).await;
    let deleted = rows_where(
        &browser,
        "only deletions",
        "rows.every(r => r.action === 'DELETED')",
    )
    .await;
    assert_eq!(deleted.len(), 1);

    // Tab to the row, then to its entity name: the change block shows on focus.
    tab_to(
        &browser,
        "the first row",
        "return document.activeElement.tagName === 'TR'",
    )
    .await;
    browser.keys(Browser::TAB).await;
    let shown = browser
        .js(
            "const a = document.activeElement; return a.classList.contains('entity-name') && \
             getComputedStyle(a.parentElement.querySelector('.changes')).display === 'block'",
        )
        .await;
    assert_eq!(
        shown,
        json!(true),
        "focusing the entity name shows its changes"
    );

    // Back to the row; Enter opens the detail panel with the focus inside; on to the timeline; Escape closes
    // it and gives the focus back to the row.
    browser.keys(Browser::SHIFT_TAB).await;
    assert_eq!(browser.js(active).await, json!("TR"));
    browser.keys(Browser::ENTER).await;
    browser
        .wait_for(
            "the detail panel",
            "return !document.getElementById('detail').hidden && document.getElementById('detail').contains(document.activeElement)",
        )
        .await;
    tab_to(
        &browser,
        "the timeline button",
        "return document.activeElement.id === 'timeline-button'",
    )
    .await;
    browser.keys(Browser::ENTER).await;
    browser
        .wait_for(
            "the timeline",
            "return document.getElementById('timeline-title')",
        )
        .await;
    browser.keys(Browser::ESCAPE).await;
    assert_eq!(
        browser
            .js("return document.getElementById('detail').hidden")
            .await,
        json!(true)
    );
    assert_eq!(
        browser.js(active).await,
        json!("TR"),
        "focus returns to the row"
    );

    // A narrow window (a phone held upright): nothing sticks out of the page; the table scrolls on its own.
    browser.resize(390, 844).await;
    let layout = browser
        .wait_for(
            "the narrow layout",
            "return window.innerWidth <= 420 ? { page: document.documentElement.scrollWidth, viewport: window.innerWidth, \
             idColumn: getComputedStyle(document.querySelector('#thead th')).display, \
             buttons: [...document.querySelectorAll('header button, #add-filter')].every(b => b.getBoundingClientRect().right <= window.innerWidth), \
             rowsVisible: document.querySelector('#rows tr').getBoundingClientRect().height > 0 } : null",
        )
        .await;
    assert!(
        layout["page"].as_u64() <= layout["viewport"].as_u64(),
        "no sideways scrolling of the page: {layout}"
    );
    assert_eq!(layout["idColumn"], "none", "{layout}");
    assert_eq!(layout["buttons"], true, "{layout}");
    assert_eq!(layout["rowsVisible"], true, "{layout}");
    browser.screenshot(&screenshots(), "08-narrow").await;
    browser.resize(1400, 900).await;

    // The theme follows the system setting.
    let colours = "const rgb = (c) => c.match(/\\d+/g).slice(0, 3).map(Number).reduce((a, b) => a + b, 0); \
                   return { background: rgb(getComputedStyle(document.body).backgroundColor), text: rgb(getComputedStyle(document.body).color) };";
    browser.color_scheme("dark").await;
    let dark = browser.js(colours).await;
    assert!(
        dark["background"].as_u64().unwrap() < 150 && dark["text"].as_u64().unwrap() > 500,
        "dark theme: {dark}"
    );
    browser.screenshot(&screenshots(), "09-dark").await;
    browser.color_scheme("light").await;
    let light = browser.js(colours).await;
    assert!(
        light["background"].as_u64().unwrap() > 700 && light["text"].as_u64().unwrap() < 150,
        "light theme: {light}"
    );
}
