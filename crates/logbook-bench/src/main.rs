//! `logbook-bench`: measures Logbook end to end over HTTP on loopback, with the real server in this process.
//!
//! Phases, on `--events` generated chatbot-platform events (the demo generator) spread over 30 days:
//! 1. durable ingest in batches of `--batch` events from `--batch-clients` concurrent clients;
//! 2. single-event requests from `--single-clients` concurrent clients for `--single-seconds`;
//! 3. query latency (p50/p99 over `--repeat` requests) for: newest page; with a one-day window; with a type;
//!    with a metadata path; page 100 via its cursor; then the dashboard in headless Chromium (skip with
//!    `--skip-dashboard`): navigation to first rows and to the drawn volume chart, from the page's marks;
//! 4. JSONL export through the list API (1000 events a page) of every event;
//! 5. bytes on disk per event (data directory size / events);
//! 6. time to reopen the store (the index is rebuilt from the log).
//!
//! Run: `cargo run --release -p logbook-bench -- --events 1000000`

use anyhow::{Context, Result};
use clap::Parser;
use logbook_bench::{directory_bytes, percentile, post_events};
use logbook_core::demo::DemoGenerator;
use logbook_core::time::now_millis;
use logbook_server::{AppState, ServerConfig};
use logbook_store::{EmbeddedStore, EventStore, StoreOptions};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// mimalloc: ingest and indexing allocate many small objects; it measured faster than the system allocator
/// (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Logbook end-to-end benchmark.
#[derive(Parser, Debug)]
struct Args {
    /// Events to ingest in batches.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Events per ingest request.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Concurrent clients sending batches.
    #[arg(long, default_value_t = 4)]
    batch_clients: usize,
    /// Concurrent clients sending one event per request.
    #[arg(long, default_value_t = 64)]
    single_clients: usize,
    /// Duration of the single-event phase.
    #[arg(long, default_value_t = 10)]
    single_seconds: u64,
    /// Requests per query shape.
    #[arg(long, default_value_t = 200)]
    repeat: usize,
    /// Data directory (default: a temporary directory, removed afterwards).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Skip the dashboard phase (it needs Debian's chromium and chromium-driver).
    #[arg(long)]
    skip_dashboard: bool,
    /// Page loads in the dashboard phase.
    #[arg(long, default_value_t = 20)]
    dashboard_loads: usize,
    /// Write the results as JSON to this file.
    #[arg(long)]
    output: Option<PathBuf>,
}

const ADMIN: &str = "bench-admin";

/// The query string of the i-th request of a query shape.
type QueryFor = Box<dyn Fn(usize) -> String>;

struct Timings {
    name: String,
    millis: Vec<f64>,
    results: usize,
}

impl Timings {
    fn summary(&mut self) -> Value {
        self.millis.sort_by(|a, b| a.total_cmp(b));
        json!({"shape": self.name, "p50_ms": percentile(&self.millis, 0.5), "p99_ms": percentile(&self.millis, 0.99),
               "max_ms": self.millis.last().copied().unwrap_or(f64::NAN), "requests": self.millis.len(), "results_per_page": self.results})
    }
}

async fn timed_get(client: &reqwest::Client, url: &str, key: &str) -> Result<(f64, Value)> {
    let started = Instant::now();
    let response = client.get(url).bearer_auth(key).send().await?;
    let status = response.status();
    let body: Value = response.json().await?;
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(status.is_success(), "{url}: {status} {body}");
    Ok((elapsed, body))
}

/// Loads the dashboard `loads` times (signed in with `key`) and summarizes the page's `logbook:first-rows` and
/// `logbook:chart` performance marks (milliseconds since navigation start).
async fn dashboard_loads(base: &str, key: &str, loads: usize) -> Result<Value> {
    let browser = logbook_testkit::Browser::start().await;
    browser.goto(&format!("{base}/")).await;
    browser
        .js(&format!(
            "sessionStorage.setItem('logbook.key', {key:?}); return true"
        ))
        .await;
    let mut first_rows = Vec::new();
    let mut chart = Vec::new();
    for _ in 0..loads {
        browser.goto(&format!("{base}/")).await;
        let marks = browser
            .wait_for(
                "the dashboard's first rows and chart",
                "const m = (n) => { const e = performance.getEntriesByName(n); return e.length ? e[0].startTime : null; }; \
                 const rows = m('logbook:first-rows'), chart = m('logbook:chart'); \
                 return rows !== null && chart !== null && document.querySelectorAll('#rows tr').length ? [rows, chart] : null",
            )
            .await;
        first_rows.push(marks[0].as_f64().context("first-rows mark")?);
        chart.push(marks[1].as_f64().context("chart mark")?);
    }
    let summary = |mut values: Vec<f64>| {
        let first = values.first().copied().unwrap_or(f64::NAN);
        values.sort_by(|a, b| a.total_cmp(b));
        json!({"first_load_ms": first, "p50_ms": percentile(&values, 0.5), "max_ms": values.last().copied().unwrap_or(f64::NAN)})
    };
    Ok(json!({"loads": loads, "first_rows": summary(first_rows), "chart": summary(chart)}))
}

#[tokio::main]
async fn main() -> Result<()> {
    // As `logbook` does (crates/logbook-cli/src/main.rs): no transparent huge pages for mimalloc's arenas.
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    let args = Args::parse();
    let temporary = tempfile::tempdir()?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| temporary.path().join("data"));
    let store = EmbeddedStore::open(StoreOptions::new(&data_dir)).context("open store")?;
    store.ensure_admin_key(Some(ADMIN))?;
    let store: Arc<dyn EventStore> = Arc::new(store);
    let state = AppState::new(store.clone(), ServerConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(logbook_server::serve(listener, state, async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(60))
        .build()?;
    client
        .post(format!("{base}/v1/tenants"))
        .bearer_auth(ADMIN)
        .json(&json!({"id": "bench"}))
        .send()
        .await?;
    let key_body: Value = client
        .post(format!("{base}/v1/tenants/bench/keys"))
        .bearer_auth(ADMIN)
        .json(&json!({"scopes": ["ingest", "read"]}))
        .send()
        .await?
        .json()
        .await?;
    let key = key_body["key"].as_str().context("key")?.to_string();
    let mut report = json!({"events": args.events, "machine": {"cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)}});

    // 1. Batched durable ingest. Bodies are generated before timing starts.
    let span: i64 = 30 * 86_400_000;
    let start_time = now_millis() - span;
    let step = (span / args.events.max(1) as i64).max(1);
    eprintln!("generating {} events", args.events);
    let mut generator = DemoGenerator::new(1);
    let bodies: Vec<String> = (0..args.events)
        .collect::<Vec<_>>()
        .chunks(args.batch)
        .map(|chunk| {
            chunk
                .iter()
                .map(|&i| generator.event(start_time + i as i64 * step).to_string())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect();
    let payload_bytes: usize = bodies.iter().map(String::len).sum();
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicU64::new(0));
    eprintln!(
        "ingesting {} events in batches of {} from {} clients",
        args.events, args.batch, args.batch_clients
    );
    let started = Instant::now();
    let workers: Vec<_> = (0..args.batch_clients)
        .map(|_| {
            let (client, base, key, bodies, next) = (
                client.clone(),
                base.clone(),
                key.clone(),
                bodies.clone(),
                next.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(body) = bodies.get(index) else {
                        return Ok::<(), anyhow::Error>(());
                    };
                    post_events(&client, &base, &key, "application/x-ndjson", body.clone()).await?;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let batch_rate = args.events as f64 / seconds;
    eprintln!(
        "  {batch_rate:.0} events/s ({seconds:.1}s; {} bytes of JSON per event)",
        payload_bytes / args.events.max(1)
    );
    report["ingest_batched"] = json!({"events_per_second": batch_rate, "seconds": seconds, "batch": args.batch, "clients": args.batch_clients,
                                      "input_bytes_per_event": payload_bytes / args.events.max(1)});

    // 2. Single-event requests.
    eprintln!(
        "single-event requests from {} clients for {}s",
        args.single_clients, args.single_seconds
    );
    let deadline = Instant::now() + Duration::from_secs(args.single_seconds);
    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..args.single_clients)
        .map(|worker| {
            let (client, base, key, sent) =
                (client.clone(), base.clone(), key.clone(), sent.clone());
            tokio::spawn(async move {
                let mut generator = DemoGenerator::new(1000 + worker as u64);
                while Instant::now() < deadline {
                    let body = generator.event(now_millis()).to_string();
                    post_events(&client, &base, &key, "application/json", body).await?;
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<(), anyhow::Error>(())
            })
        })
        .collect();
    for worker in workers {
        worker.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let single_rate = sent.load(Ordering::Relaxed) as f64 / seconds;
    eprintln!("  {single_rate:.0} requests/s");
    report["ingest_single"] = json!({"requests_per_second": single_rate, "clients": args.single_clients, "seconds": seconds});
    let total_events = args.events as u64 + sent.load(Ordering::Relaxed);

    // 3. Query shapes.
    let day = 86_400_000i64;
    let mut shapes: Vec<Timings> = Vec::new();
    let queries: Vec<(&str, QueryFor)> = vec![
        (
            "tenant newest page (limit 50)",
            Box::new(|_| "limit=50".to_string()),
        ),
        (
            "+ one-day window",
            Box::new(move |i| {
                format!(
                    "limit=50&since={}&until={}",
                    start_time + (i as i64 % 29) * day,
                    start_time + (i as i64 % 29 + 1) * day
                )
            }),
        ),
        (
            "+ type=integration.error",
            Box::new(|_| "limit=50&type=integration.error".to_string()),
        ),
        (
            "+ metadata path meta.channel=slack",
            Box::new(|_| "limit=50&meta.channel=slack".to_string()),
        ),
        (
            "+ q= two terms and negation",
            Box::new(|_| "limit=50&q=action%3ADELETED+-actor.id%3Au_alice".to_string()),
        ),
    ];
    for (name, make) in &queries {
        let mut timings = Timings {
            name: name.to_string(),
            millis: Vec::new(),
            results: 0,
        };
        for i in 0..args.repeat {
            let (millis, body) =
                timed_get(&client, &format!("{base}/v1/events?{}", make(i)), &key).await?;
            timings.millis.push(millis);
            timings.results = body["items"].as_array().map(Vec::len).unwrap_or(0);
        }
        eprintln!("  {name}: done");
        shapes.push(timings);
    }
    // Page 100 via cursor: walk to it once, then time fetching it repeatedly.
    let mut cursor = String::new();
    for _ in 0..99 {
        let url = if cursor.is_empty() {
            format!("{base}/v1/events?limit=50")
        } else {
            format!("{base}/v1/events?limit=50&cursor={cursor}")
        };
        let (_, body) = timed_get(&client, &url, &key).await?;
        cursor = body["next_cursor"]
            .as_str()
            .context("fewer than 100 pages")?
            .to_string();
    }
    let mut deep = Timings {
        name: "page 100 via cursor".into(),
        millis: Vec::new(),
        results: 0,
    };
    for _ in 0..args.repeat {
        let (millis, body) = timed_get(
            &client,
            &format!("{base}/v1/events?limit=50&cursor={cursor}"),
            &key,
        )
        .await?;
        deep.millis.push(millis);
        deep.results = body["items"].as_array().map(Vec::len).unwrap_or(0);
    }
    shapes.push(deep);
    report["queries"] = json!(shapes.iter_mut().map(Timings::summary).collect::<Vec<_>>());

    // 3b. The dashboard in headless Chromium: time from navigation start to the first rows in the table (and to
    // the volume chart), as the page's own performance marks record them.
    if !args.skip_dashboard {
        eprintln!(
            "dashboard: {} page loads in headless Chromium",
            args.dashboard_loads
        );
        report["dashboard"] = dashboard_loads(&base, &key, args.dashboard_loads).await?;
    }

    // 4. JSONL export through the list API.
    eprintln!("exporting every event as JSONL");
    let started = Instant::now();
    let mut exported = 0u64;
    let mut exported_bytes = 0u64;
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/v1/events?format=jsonl&order=asc&limit=1000");
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let text = client
            .get(&url)
            .bearer_auth(&key)
            .send()
            .await?
            .text()
            .await?;
        exported_bytes += text.len() as u64;
        let mut lines = text.lines().collect::<Vec<_>>();
        let trailer: Value = serde_json::from_str(lines.pop().context("empty page")?)?;
        exported += lines.len() as u64;
        match trailer["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        exported == total_events,
        "exported {exported} of {total_events} events"
    );
    let export_rate = exported as f64 / seconds;
    eprintln!("  {export_rate:.0} events/s");
    report["export_jsonl"] = json!({"events_per_second": export_rate, "events": exported, "bytes": exported_bytes, "seconds": seconds});

    // 5. Disk.
    let _ = stop.send(());
    server.await??;
    store.shutdown()?;
    let bytes = directory_bytes(&data_dir);
    report["disk"] = json!({"bytes": bytes, "bytes_per_event": bytes as f64 / total_events as f64, "events": total_events});
    drop(store);

    // 6. Reopen: the index is rebuilt from the log at start.
    let started = Instant::now();
    let reopened = EmbeddedStore::open(StoreOptions::new(&data_dir)).context("reopen store")?;
    let reopen_seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        reopened.stats().events == total_events,
        "reopened store has every event"
    );
    drop(reopened);
    report["reopen"] = json!({"seconds": reopen_seconds, "events_per_second": total_events as f64 / reopen_seconds});

    println!("{}", serde_json::to_string_pretty(&report)?);
    eprintln!("\n| figure | value |\n|---|---|");
    eprintln!(
        "| durable ingest, batches of {} ({} clients) | {:.0} events/s |",
        args.batch, args.batch_clients, batch_rate
    );
    eprintln!(
        "| single-event requests ({} clients) | {:.0} requests/s |",
        args.single_clients, single_rate
    );
    for shape in report["queries"].as_array().unwrap() {
        eprintln!(
            "| query: {} | p50 {:.2} ms, p99 {:.2} ms |",
            shape["shape"].as_str().unwrap(),
            shape["p50_ms"].as_f64().unwrap(),
            shape["p99_ms"].as_f64().unwrap()
        );
    }
    if let Some(dashboard) = report.get("dashboard") {
        for (mark, label) in [("first_rows", "first rows"), ("chart", "volume chart")] {
            eprintln!(
                "| dashboard: navigation to {label} | p50 {:.0} ms, max {:.0} ms |",
                dashboard[mark]["p50_ms"].as_f64().unwrap_or(f64::NAN),
                dashboard[mark]["max_ms"].as_f64().unwrap_or(f64::NAN)
            );
        }
    }
    eprintln!(
        "| JSONL export (list API, 1000/page) | {:.0} events/s |",
        export_rate
    );
    eprintln!(
        "| disk per event (all files) | {:.0} bytes |",
        bytes as f64 / total_events as f64
    );
    eprintln!("| reopen (rebuild the index from the log) | {reopen_seconds:.1} s for {total_events} events |");
    if let Some(output) = &args.output {
        std::fs::write(output, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}
