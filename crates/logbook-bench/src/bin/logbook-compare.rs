//! `logbook-compare`: the same workload on Logbook's embedded engine, on a PostgreSQL table and on a SQLite
//! file, side by side, with a table of figures and ratios.
//!
//! The workload is `--events` generated chatbot-platform events (the demo generator, ~500 bytes, nested
//! metadata) spread over 30 days and over `--tenants` tenants of Zipf-skewed sizes (tenant `t0001` is the
//! largest). It is written once to `workload.jsonl` in the work directory, and every system gets it in its own
//! input form, prepared before timing starts:
//! - **Logbook**: `logbook serve`'s code in a child process (this binary, `__serve`), fed JSONL batches over
//!   HTTP by `--batch-clients` clients with the admin key (each event names its tenant);
//! - **PostgreSQL** (`--postgres`, default the local server): database `logbook_bench`, one table with a btree
//!   on `(tenant, created_at DESC, seq DESC)`, a GIN `jsonb_path_ops` index on the event's metadata, a uuid
//!   primary key; batches by `COPY` from as many connections as Logbook has clients;
//! - **SQLite**: a child process (this binary, `__sqlite`) with a WAL-mode file (`synchronous=FULL`), the same
//!   btree, a unique id, and `json_extract` for metadata filters (SQLite has no GIN).
//!
//! SQLite answers in-process, without a network or a response format. For the same comparison of engines,
//! **engine** opens the data the Logbook phase left in a child process (this binary, `__engine`) and runs the
//! query shapes and the export through the embedded engine's calls directly (reads only; its open time is the
//! replay of the log).
//!
//! Figures: durable ingest events/s; one-event writes/s from `--single-clients` concurrent clients; p50/p99 of
//! seven query shapes (each returns its rows to the client); JSONL export events/s of every tenant's events
//! (Logbook: `GET /v1/events/export`, one streamed response per tenant, and separately the listing's pages of
//! 1000 following cursors); bytes on disk per event including indexes; peak RSS of the storing process(es).
//!
//! Run: `cargo run --release -p logbook-bench --bin logbook-compare -- --events 1000000`

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use futures_util::{pin_mut, SinkExt, StreamExt};
use logbook_bench::{directory_bytes, percentile, post_events};
use logbook_core::demo::DemoGenerator;
use logbook_core::time::{format_millis, now_millis};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ADMIN: &str = "bench-admin";
const DAY: i64 = 86_400_000;
const SPAN: i64 = 30 * DAY;
const BIG: &str = "t0001";
/// Step between the pool events one one-event client sends, so the clients spread over the pool.
const STRIDE: usize = 97;

/// Logbook against PostgreSQL and SQLite on one workload.
#[derive(Parser, Debug)]
struct Args {
    #[command(subcommand)]
    internal: Option<Internal>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args, Debug, Clone, serde::Serialize, serde::Deserialize)]
struct RunArgs {
    /// Events in the workload (use 10000000 for the 10M run).
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Tenants, with Zipf-skewed sizes.
    #[arg(long, default_value_t = 500)]
    tenants: usize,
    /// Events per ingest batch.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Concurrent batch writers (HTTP clients for Logbook, connections for PostgreSQL; SQLite has one writer).
    #[arg(long, default_value_t = 4)]
    batch_clients: usize,
    /// Concurrent clients writing one event per request.
    #[arg(long, default_value_t = 64)]
    single_clients: usize,
    /// Duration of the one-event phase.
    #[arg(long, default_value_t = 10)]
    single_seconds: u64,
    /// Requests per query shape...
    #[arg(long, default_value_t = 200)]
    repeat: usize,
    /// ...or fewer, if a shape has run this long.
    #[arg(long, default_value_t = 20)]
    shape_seconds: u64,
    /// Systems to run, comma-separated: logbook (the server over HTTP), engine (Logbook's engine called
    /// in-process on the data the logbook phase wrote; reads only), postgres, sqlite.
    #[arg(long, default_value = "logbook,engine,postgres,sqlite")]
    systems: String,
    /// PostgreSQL connection (it must allow creating and dropping database `logbook_bench`).
    #[arg(
        long,
        env = "LOGBOOK_BENCH_POSTGRES",
        default_value = "host=127.0.0.1 user=postgres"
    )]
    postgres: String,
    /// Stop Logbook after the ingest, for profiling the write path (the other systems run in full).
    #[arg(long)]
    ingest_only: bool,
    /// Work directory (default: a temporary directory, removed afterwards).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    output: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Internal {
    /// Serve Logbook on DIR at 127.0.0.1:PORT (the benchmark's Logbook process).
    #[command(name = "__serve", hide = true)]
    Serve { dir: PathBuf, port: u16 },
    /// Run the SQLite side on the work directory (the benchmark's SQLite process); prints JSON results.
    #[command(name = "__sqlite", hide = true)]
    Sqlite { work_dir: PathBuf, plan: PathBuf },
    /// Run Logbook's engine in-process on the data the Logbook phase left (the benchmark's engine process);
    /// prints JSON results.
    #[command(name = "__engine", hide = true)]
    Engine { work_dir: PathBuf, plan: PathBuf },
    /// Run only the export against a server started with `__serve` on a work directory's data (for
    /// profiling and comparing builds); prints events/s and the server's CPU time per event.
    #[command(name = "__export", hide = true)]
    Export {
        port: u16,
        work_dir: PathBuf,
        /// The server's process id, for its CPU time.
        #[arg(long)]
        pid: Option<u32>,
        /// Streamed exports, or the listing's pages.
        #[arg(long, value_enum, default_value = "stream")]
        way: ExportWay,
    },
}

/// What every system needs to know about the workload.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Plan {
    args: RunArgs,
    start_time: i64,
    tenants: Vec<String>,
    /// The events used by the one-event phase (JSON with `tenant`).
    single_pool: Vec<String>,
    /// The page the deep-page shape fetches: 100, or fewer when the largest tenant has fewer than 100 pages.
    deep_page: usize,
}

impl Plan {
    /// Events of the largest tenant before the deep page (the SQL baselines' offset of its position).
    fn deep_offset(&self) -> usize {
        (self.deep_page - 1) * 50 - 1
    }
}

/// One workload event in every system's input form.
struct Row {
    tenant: String,
    event_type: String,
    created_at: i64,
    json: String,
}

impl Row {
    fn from_line(line: &str) -> Result<Row> {
        let value: Value = serde_json::from_str(line)?;
        Ok(Row {
            tenant: value["tenant"].as_str().context("tenant")?.to_string(),
            event_type: value["type"].as_str().context("type")?.to_string(),
            created_at: value["created_at"].as_i64().context("created_at")?,
            json: line.to_string(),
        })
    }
}

// ---------------------------------------------------------------------------------------------------------
// Query shapes

#[derive(Debug, Clone, Copy, PartialEq)]
enum Shape {
    NewestPage,
    OneDay,
    Type,
    Metadata,
    AdminMetadata,
    Page100,
    Histogram,
}

const SHAPES: [Shape; 7] = [
    Shape::NewestPage,
    Shape::OneDay,
    Shape::Type,
    Shape::Metadata,
    Shape::AdminMetadata,
    Shape::Page100,
    Shape::Histogram,
];

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::NewestPage => "tenant newest page (50)",
            Shape::OneDay => "tenant + one day",
            Shape::Type => "tenant + day + type",
            Shape::Metadata => "tenant + metadata path",
            Shape::AdminMetadata => "metadata path, all tenants (admin)",
            Shape::Page100 => "tenant page 100 (or last) via cursor",
            Shape::Histogram => "histogram: per type per hour, 30 days",
        }
    }

    /// The one-day window of the i-th request: one of the 29 whole days of the workload.
    fn day(start_time: i64, i: usize) -> (i64, i64) {
        let from = start_time + (i as i64 % 29) * DAY;
        (from, from + DAY)
    }
}

struct Timings {
    shape: Shape,
    millis: Vec<f64>,
    rows: usize,
}

impl Timings {
    fn summary(mut self) -> Value {
        self.millis.sort_by(|a, b| a.total_cmp(b));
        json!({"shape": self.shape.name(), "p50_ms": percentile(&self.millis, 0.5), "p99_ms": percentile(&self.millis, 0.99),
               "requests": self.millis.len(), "rows": self.rows})
    }
}

/// Runs `run(i)` (which returns the rows it got) up to `repeat` times or `shape_seconds`, whichever ends first.
async fn time_shape<F, Fut>(args: &RunArgs, shape: Shape, mut run: F) -> Result<Value>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<usize>>,
{
    let mut timings = Timings {
        shape,
        millis: Vec::new(),
        rows: 0,
    };
    let started = Instant::now();
    for i in 0..args.repeat {
        let begun = Instant::now();
        timings.rows = run(i).await?;
        timings.millis.push(begun.elapsed().as_secs_f64() * 1000.0);
        if started.elapsed() > Duration::from_secs(args.shape_seconds) {
            break;
        }
    }
    eprintln!(
        "    {}: {} requests, {} rows",
        shape.name(),
        timings.millis.len(),
        timings.rows
    );
    Ok(timings.summary())
}

// ---------------------------------------------------------------------------------------------------------
// Measuring processes

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|line| line.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU seconds a process has used (user and system, all threads), from `/proc/PID/stat`.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at state, field 3; utime and stime are 14, 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let per_second = rustix::param::clock_ticks_per_second() as f64;
    Some(ticks / per_second)
}

/// Proportional set size of a process in KiB (shared pages split among the processes sharing them).
fn pss_kib(pid: u32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    rollup
        .lines()
        .find(|line| line.starts_with("Pss:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn postgres_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|comm| comm.trim() == "postgres")
                .unwrap_or(false)
        })
        .collect()
}

/// Samples the summed PSS of every `postgres` process every 200 ms; `stop` returns the peak in bytes.
struct PostgresMemory {
    peak: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl PostgresMemory {
    fn start() -> PostgresMemory {
        let peak = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let thread = {
            let (peak, done) = (peak.clone(), done.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    let total: u64 = postgres_pids().into_iter().filter_map(pss_kib).sum();
                    peak.fetch_max(total * 1024, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
        };
        PostgresMemory { peak, done, thread }
    }

    fn stop(self) -> u64 {
        self.done.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.peak.load(Ordering::Relaxed)
    }
}

// ---------------------------------------------------------------------------------------------------------
// The workload

/// Generates the workload into `work_dir/workload.jsonl`; returns the plan.
fn generate(args: &RunArgs, work_dir: &Path) -> Result<Plan> {
    let start_time = (now_millis() - SPAN) / DAY * DAY;
    let tenants: Vec<String> = (1..=args.tenants).map(|n| format!("t{n:04}")).collect();
    // Zipf (s = 1): tenant n has weight 1/n.
    let mut cumulative = Vec::with_capacity(tenants.len());
    let mut total = 0.0;
    for n in 1..=tenants.len() {
        total += 1.0 / n as f64;
        cumulative.push(total);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut generator = DemoGenerator::new(1);
    let step = (SPAN / args.events.max(1) as i64).max(1);
    let file = std::fs::File::create(work_dir.join("workload.jsonl"))?;
    let mut out = std::io::BufWriter::new(file);
    let progress = progress_bar(args.events as u64, "generating the workload");
    let mut event_at = |i: usize, rng: &mut rand::rngs::StdRng| {
        let pick = rng.random::<f64>() * total;
        let tenant = &tenants[cumulative
            .partition_point(|c| *c < pick)
            .min(tenants.len() - 1)];
        let mut event = generator.event(start_time + i as i64 * step);
        if event.get("type").is_none() {
            // Audit events without a type get the one Logbook would derive, so every system stores the same.
            let derived = format!(
                "{}.{}",
                event["entity"]["type"].as_str().unwrap_or("event"),
                event["action"].as_str().unwrap_or("event").to_lowercase()
            );
            event["type"] = json!(derived);
        }
        event["tenant"] = json!(tenant);
        event.to_string()
    };
    for i in 0..args.events {
        writeln!(out, "{}", event_at(i, &mut rng))?;
        if i % 10_000 == 0 {
            progress.set(i as u64);
        }
    }
    out.flush()?;
    progress.finish();
    let single_pool = (0..10_000)
        .map(|i| event_at(i, &mut rng))
        .collect::<Vec<_>>();
    Ok(Plan {
        args: args.clone(),
        start_time,
        tenants,
        single_pool,
        deep_page: 100,
    })
}

/// A plain progress line on stderr: `label  n/total (p%)`, redrawn in place on a terminal.
struct Progress {
    label: &'static str,
    total: u64,
    last: std::cell::Cell<u64>,
}

fn progress_bar(total: u64, label: &'static str) -> Progress {
    Progress {
        label,
        total,
        last: std::cell::Cell::new(u64::MAX),
    }
}

impl Progress {
    fn set(&self, done: u64) {
        let percent = done * 100 / self.total.max(1);
        if percent != self.last.get() {
            self.last.set(percent);
            if std::io::stderr().is_terminal() {
                eprint!("\r  {} {done}/{} ({percent}%)", self.label, self.total);
            }
        }
    }

    fn finish(&self) {
        self.set(self.total);
        if std::io::stderr().is_terminal() {
            eprintln!();
        } else {
            eprintln!("  {} {}/{} (100%)", self.label, self.total, self.total);
        }
    }
}

/// Reads the workload in batches of `batch` lines.
fn workload_batches(work_dir: &Path, batch: usize) -> Result<Vec<Vec<String>>> {
    let file = std::io::BufReader::new(std::fs::File::open(work_dir.join("workload.jsonl"))?);
    let mut batches = Vec::new();
    let mut current = Vec::with_capacity(batch);
    for line in file.lines() {
        current.push(line?);
        if current.len() == batch {
            batches.push(std::mem::replace(&mut current, Vec::with_capacity(batch)));
        }
    }
    if !current.is_empty() {
        batches.push(current);
    }
    Ok(batches)
}

// ---------------------------------------------------------------------------------------------------------
// Logbook

async fn run_logbook(plan: &Plan, work_dir: &Path) -> Result<Value> {
    let args = &plan.args;
    let data_dir = work_dir.join("logbook-data");
    // A kept --work-dir holds the last run's data: start empty.
    if data_dir.exists() {
        std::fs::remove_dir_all(&data_dir)?;
    }
    let port = logbook_testkit::free_port();
    let start_server = || -> Result<logbook_testkit::Killed> {
        Ok(logbook_testkit::Killed(
            Command::new(std::env::current_exe()?)
                .args([
                    "__serve",
                    data_dir.to_str().context("path")?,
                    &port.to_string(),
                ])
                .stdout(Stdio::null())
                .spawn()?,
        ))
    };
    let server = start_server()?;
    let pid = server.0.id();
    logbook_testkit::wait_for_port(port);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(120))
        .build()?;
    for tenant in &plan.tenants {
        let response = client
            .post(format!("{base}/v1/tenants"))
            .bearer_auth(ADMIN)
            .json(&json!({"id": tenant}))
            .send()
            .await?;
        anyhow::ensure!(response.status() == 201, "create tenant {tenant}");
    }
    let mut report = json!({});

    // Ingest.
    let bodies: Vec<String> = workload_batches(work_dir, args.batch)?
        .into_iter()
        .map(|lines| lines.join("\n"))
        .collect();
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicU64::new(0));
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let workers: Vec<_> = (0..args.batch_clients)
        .map(|_| {
            let (client, base, bodies, next) =
                (client.clone(), base.clone(), bodies.clone(), next.clone());
            tokio::spawn(async move {
                while let Some(body) = bodies.get(next.fetch_add(1, Ordering::Relaxed) as usize) {
                    post_events(&client, &base, ADMIN, "application/x-ndjson", body.clone())
                        .await?;
                }
                Ok::<(), anyhow::Error>(())
            })
        })
        .collect();
    for worker in workers {
        worker.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    drop(bodies);
    record_rate(
        &mut report,
        "ingest_events_per_second",
        "ingest",
        " events/s",
        args.events as f64,
        seconds,
    );
    if let (Some(before), Some(after)) = (cpu_before, cpu_seconds(pid)) {
        // The server's own CPU time (all threads, user and system) per event: steadier than the rate on a
        // machine whose speed varies, and the figure to drive down (the client's work is not in it).
        let micros = (after - before) * 1e6 / args.events as f64;
        report["ingest_server_cpu_us_per_event"] = json!(micros);
        eprintln!("    ingest: {micros:.1} µs of server CPU per event");
    }
    if args.ingest_only {
        report["peak_rss_bytes"] = json!(status_kib(pid, "VmHWM:").unwrap_or(0) * 1024);
        return Ok(report);
    }

    // One event per request.
    let pool = Arc::new(plan.single_pool.clone());
    let sent = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.single_seconds);
    let started = Instant::now();
    let workers: Vec<_> = (0..args.single_clients)
        .map(|worker| {
            let (client, base, pool, sent) =
                (client.clone(), base.clone(), pool.clone(), sent.clone());
            tokio::spawn(async move {
                let mut i = worker;
                while Instant::now() < deadline {
                    let mut event: Value = serde_json::from_str(&pool[i % pool.len()])?;
                    event["created_at"] = json!(now_millis());
                    post_events(&client, &base, ADMIN, "application/json", event.to_string())
                        .await?;
                    sent.fetch_add(1, Ordering::Relaxed);
                    i += STRIDE;
                }
                Ok::<(), anyhow::Error>(())
            })
        })
        .collect();
    for worker in workers {
        worker.await??;
    }
    let single = sent.load(Ordering::Relaxed);
    record_rate(
        &mut report,
        "single_per_second",
        "one-event writes",
        "/s",
        single as f64,
        started.elapsed().as_secs_f64(),
    );
    let total_events = args.events as u64 + single;

    // Queries.
    let get = |url: String| {
        let client = client.clone();
        async move {
            let response = client.get(&url).bearer_auth(ADMIN).send().await?;
            let status = response.status();
            let body: Value = response.json().await?;
            anyhow::ensure!(status.is_success(), "{url}: {status} {body}");
            Ok::<Value, anyhow::Error>(body)
        }
    };
    let mut cursor = String::new();
    for _ in 1..plan.deep_page {
        let body = get(format!(
            "{base}/v1/events?tenant={BIG}&limit=50&cursor={cursor}"
        ))
        .await?;
        cursor = body["next_cursor"]
            .as_str()
            .context("fewer than 100 pages")?
            .to_string();
    }
    let mut queries = Vec::new();
    for shape in SHAPES {
        let start = plan.start_time;
        let (base, cursor, client) = (&base, &cursor, &client);
        let summary = time_shape(args, shape, |i| async move {
            let (from, to) = Shape::day(start, i);
            let url = match shape {
                Shape::NewestPage => format!("{base}/v1/events?tenant={BIG}&limit=50"),
                Shape::OneDay => format!("{base}/v1/events?tenant={BIG}&limit=50&since={from}&until={to}"),
                Shape::Type => format!("{base}/v1/events?tenant={BIG}&limit=50&since={from}&until={to}&type=integration.error"),
                Shape::Metadata => format!("{base}/v1/events?tenant={BIG}&limit=50&meta.channel=slack"),
                Shape::AdminMetadata => format!("{base}/v1/events?limit=50&meta.channel=slack"),
                Shape::Page100 => format!("{base}/v1/events?tenant={BIG}&limit=50&cursor={cursor}"),
                Shape::Histogram => format!(
                    "{base}/v1/events/histogram?tenant={BIG}&interval=1h&group_by=type&top=1000&since={start}&until={}",
                    start + SPAN
                ),
            };
            if shape == Shape::Histogram {
                // Non-zero (hour, type) cells, as the SQL baselines return them, read as a typed client would
                // (the baselines' drivers decode rows into typed values too).
                let response = client.get(&url).bearer_auth(ADMIN).send().await?;
                anyhow::ensure!(response.status().is_success(), "{url}: {}", response.status());
                let bytes = response.bytes().await?;
                let body: HistogramBody = serde_json::from_slice(&bytes)?;
                return Ok(body
                    .buckets
                    .iter()
                    .flat_map(|bucket| bucket.groups.values())
                    .filter(|count| **count > 0)
                    .count());
            }
            // Events as JSON lines, one row each as the SQL baselines return them (the last line is the trailer).
            let response = client
                .get(format!("{url}&format=jsonl"))
                .bearer_auth(ADMIN)
                .send()
                .await?;
            anyhow::ensure!(response.status().is_success(), "{url}: {}", response.status());
            let text = response.bytes().await?;
            Ok(line_ends(&text) - 1)
        })
        .await?;
        queries.push(summary);
    }
    report["queries"] = json!(queries);

    // How much of the log the compactor has not yet rewritten into per-tenant blocks: events still in WAL
    // segments are read from records that mix tenants, which makes the export slower.
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let gauge = |name: &str| -> Option<f64> {
        metrics.lines().find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
    };
    if let (Some(wal), Some(blocks)) = (gauge("logbook_wal_bytes"), gauge("logbook_block_bytes")) {
        report["wal_bytes_at_export"] = json!(wal);
        eprintln!(
            "    at the export's start: {:.0} MB in WAL segments, {:.0} MB in blocks",
            wal / 1e6,
            blocks / 1e6
        );
    }

    // Export: every tenant's events, oldest first, as JSON lines: one streamed export per tenant (as the other
    // systems stream one query per tenant), then the same through the listing's pages of 1000.
    let started = Instant::now();
    let exported = export_logbook(&client, &base, &plan.tenants, ExportWay::Stream).await?;
    record_export(&mut report, exported, total_events, started)?;
    let started = Instant::now();
    let exported = export_logbook(&client, &base, &plan.tenants, ExportWay::Pages).await?;
    anyhow::ensure!(
        exported == total_events,
        "paged through {exported} of {total_events}"
    );
    record_rate(
        &mut report,
        "export_pages_events_per_second",
        "export as pages of 1000",
        " events/s",
        exported as f64,
        started.elapsed().as_secs_f64(),
    );

    report["peak_rss_bytes"] = json!(status_kib(pid, "VmHWM:").unwrap_or(0) * 1024);
    drop(server); // SIGKILL

    // Restart after the kill: until the server answers again, the log is replayed and the index rebuilt.
    let started = Instant::now();
    let server = start_server()?;
    let deadline = started + Duration::from_secs(1800);
    loop {
        match client.get(format!("{base}/healthz")).send().await {
            Ok(response) if response.status().is_success() => break,
            _ if Instant::now() > deadline => {
                bail!("the server did not answer 30 min after a restart")
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let restart = started.elapsed().as_secs_f64();
    report["restart_seconds"] = json!(restart);
    eprintln!("    restart after kill -9: {restart:.1} s");
    // Bytes on disk of the store as it stays, not of one killed in the middle of writing a file: a merge of
    // index files in progress writes a file as large as those it merges. The server stops on SIGTERM (a
    // merge gives up and removes its file); then the directory is measured.
    stop_gracefully(server)?;
    report["bytes_per_event"] = json!(directory_bytes(&data_dir) as f64 / total_events as f64);
    report["events"] = json!(total_events);
    Ok(report)
}

/// How many line ends `bytes` holds (the clients count JSON lines this way; a byte-at-a-time count was a
/// tenth of the machine during an export).
fn line_ends(bytes: &[u8]) -> usize {
    memchr::memchr_iter(b'\n', bytes).count()
}

/// Checks that an export read every event, and records its rate.
fn record_export(report: &mut Value, exported: u64, total: u64, started: Instant) -> Result<()> {
    anyhow::ensure!(exported == total, "exported {exported} of {total}");
    record_rate(
        report,
        "export_events_per_second",
        "export",
        " events/s",
        exported as f64,
        started.elapsed().as_secs_f64(),
    );
    Ok(())
}

/// Records `count / seconds` in the report under `key` and prints it as `label: N<unit>`.
fn record_rate(report: &mut Value, key: &str, label: &str, unit: &str, count: f64, seconds: f64) {
    let rate = count / seconds;
    report[key] = json!(rate);
    eprintln!("    {label}: {rate:.0}{unit}");
}

/// How the benchmark reads a Logbook export.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ExportWay {
    /// `GET /v1/events/export`, one streamed response per tenant.
    Stream,
    /// `GET /v1/events` as JSONL pages of 1000, one request at a time, following cursors.
    Pages,
}

/// Reads every tenant's events, oldest first, as JSON lines; returns how many events it read.
async fn export_logbook(
    client: &reqwest::Client,
    base: &str,
    tenants: &[String],
    way: ExportWay,
) -> Result<u64> {
    let mut exported = 0u64;
    for tenant in tenants {
        if way == ExportWay::Stream {
            let mut response = client
                .get(format!("{base}/v1/events/export?tenant={tenant}&order=asc"))
                .bearer_auth(ADMIN)
                .send()
                .await?
                .error_for_status()?;
            while let Some(chunk) = response.chunk().await? {
                exported += line_ends(&chunk) as u64;
            }
            continue;
        }
        let mut cursor = String::new();
        loop {
            let text = client
                .get(format!(
                    "{base}/v1/events?tenant={tenant}&format=jsonl&order=asc&limit=1000&cursor={cursor}"
                ))
                .bearer_auth(ADMIN)
                .send()
                .await?
                .text()
                .await?;
            let mut lines: Vec<&str> = text.lines().collect();
            let trailer: Value = serde_json::from_str(lines.pop().context("empty page")?)?;
            exported += lines.len() as u64;
            match trailer["next_cursor"].as_str() {
                Some(next) => cursor = next.to_string(),
                None => break,
            }
        }
    }
    Ok(exported)
}

/// The part of a histogram response the benchmark reads.
#[derive(serde::Deserialize)]
struct HistogramBody<'a> {
    #[serde(borrow)]
    buckets: Vec<HistogramBucket<'a>>,
}

#[derive(serde::Deserialize)]
struct HistogramBucket<'a> {
    #[serde(borrow)]
    groups: HashMap<&'a str, u64>,
}

async fn serve(dir: PathBuf, port: u16) -> Result<()> {
    use logbook_store::{EmbeddedStore, EventStore, StoreOptions};
    // The store's log (compactions, merges, the open) on stderr, when asked for: `LOGBOOK_LOG=info`.
    if let Ok(filter) = std::env::var("LOGBOOK_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let mut options = StoreOptions::new(&dir);
    // As `logbook serve` reads it: the WAL segment size, for experiments with compaction.
    if let Some(mib) = std::env::var("LOGBOOK_SEGMENT_MIB")
        .ok()
        .and_then(|mib| mib.parse::<u64>().ok())
    {
        options.segment_bytes = mib.clamp(1, 1024) << 20;
    }
    // The record cache's budget, as `logbook serve --cache-mib`.
    if let Some(mib) = std::env::var("LOGBOOK_CACHE_MIB")
        .ok()
        .and_then(|mib| mib.parse::<usize>().ok())
    {
        options.cache_bytes = mib.max(1) << 20;
    }
    // The merge threshold of index pieces, for experiments with merging.
    if let Some(events) = std::env::var("LOGBOOK_MERGE_EVENTS")
        .ok()
        .and_then(|events| events.parse::<u32>().ok())
    {
        options.merge_events = events;
    }
    // The zstd level of block files, as `logbook serve --block-level`.
    if let Some(level) = std::env::var("LOGBOOK_BLOCK_LEVEL")
        .ok()
        .and_then(|level| level.parse::<i32>().ok())
    {
        options.compaction_level = level.clamp(1, 19);
        options.dictionary_level = level.clamp(1, 19);
    }
    let store = EmbeddedStore::open(options)?;
    store.ensure_admin_key(Some(ADMIN))?;
    let store: Arc<dyn EventStore> = Arc::new(store);
    let state = logbook_server::AppState::new(store, logbook_server::ServerConfig::default());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    logbook_server::serve(listener, state, async move {
        terminate.recv().await;
    })
    .await?;
    Ok(())
}

/// Sends the benchmark's server SIGTERM and waits (up to 2 minutes) until it has exited.
fn stop_gracefully(mut server: logbook_testkit::Killed) -> Result<()> {
    let pid = server.0.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status()?;
    anyhow::ensure!(sent.success(), "kill -TERM {pid} failed");
    let deadline = Instant::now() + Duration::from_secs(120);
    while server.0.try_wait()?.is_none() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the server did not stop 2 min after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// PostgreSQL

/// A COPY text-format field: backslash, newline, carriage return and tab escaped.
fn copy_escape(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
}

async fn pg_connect(config: &str) -> Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(config, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connect to PostgreSQL with `{config}`"))?;
    tokio::spawn(connection);
    Ok(client)
}

async fn run_postgres(plan: &Plan, work_dir: &Path) -> Result<Value> {
    let args = &plan.args;
    let admin = pg_connect(&args.postgres).await?;
    admin
        .batch_execute("DROP DATABASE IF EXISTS logbook_bench")
        .await?;
    admin.batch_execute("CREATE DATABASE logbook_bench").await?;
    let version: String = admin.query_one("SHOW server_version", &[]).await?.get(0);
    let fsync: String = admin.query_one("SHOW fsync", &[]).await?.get(0);
    let synchronous: String = admin
        .query_one("SHOW synchronous_commit", &[])
        .await?
        .get(0);
    anyhow::ensure!(
        fsync == "on" && synchronous != "off",
        "PostgreSQL must commit durably for a fair comparison (fsync={fsync}, synchronous_commit={synchronous})"
    );
    let config = format!("{} dbname=logbook_bench", args.postgres);
    let db = pg_connect(&config).await?;
    db.batch_execute(
        "CREATE TABLE events (
             id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
             seq bigserial NOT NULL,
             tenant text NOT NULL,
             type text NOT NULL,
             created_at timestamptz NOT NULL,
             received_at timestamptz NOT NULL DEFAULT now(),
             event jsonb NOT NULL
         );
         CREATE INDEX events_tenant_time ON events (tenant, created_at DESC, seq DESC);
         CREATE INDEX events_metadata ON events USING gin ((event -> 'metadata') jsonb_path_ops);",
    )
    .await?;
    let memory = PostgresMemory::start();
    let mut report = json!({"version": version});

    // Ingest by COPY, batches prepared before timing.
    let batches: Vec<String> = workload_batches(work_dir, args.batch)?
        .into_iter()
        .map(|lines| {
            let mut text = String::new();
            for line in lines {
                let row = Row::from_line(&line).expect("the workload parses");
                copy_escape(&row.tenant, &mut text);
                text.push('\t');
                copy_escape(&row.event_type, &mut text);
                text.push('\t');
                text.push_str(&format_millis(row.created_at));
                text.push('\t');
                copy_escape(&row.json, &mut text);
                text.push('\n');
            }
            text
        })
        .collect();
    let batches = Arc::new(batches);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.batch_clients {
        let client = pg_connect(&config).await?;
        let (batches, next) = (batches.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            while let Some(batch) = batches.get(next.fetch_add(1, Ordering::Relaxed) as usize) {
                let sink = client
                    .copy_in("COPY events (tenant, type, created_at, event) FROM STDIN")
                    .await?;
                pin_mut!(sink);
                sink.send(bytes::Bytes::from(batch.clone())).await?;
                sink.finish().await?;
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for worker in workers {
        worker.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    drop(batches);
    record_rate(
        &mut report,
        "ingest_events_per_second",
        "ingest",
        " events/s",
        args.events as f64,
        seconds,
    );

    // One event per transaction from many connections.
    let insert = "INSERT INTO events (tenant, type, created_at, event) VALUES ($1, $2, to_timestamp($3::float8 / 1000), $4::text::jsonb)";
    let pool = Arc::new(
        plan.single_pool
            .iter()
            .map(|line| Row::from_line(line))
            .collect::<Result<Vec<_>>>()?,
    );
    let sent = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.single_seconds);
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..args.single_clients {
        let client = pg_connect(&config).await?;
        let (pool, sent) = (pool.clone(), sent.clone());
        workers.push(tokio::spawn(async move {
            let statement = client.prepare(insert).await?;
            let mut i = worker;
            while Instant::now() < deadline {
                let row = &pool[i % pool.len()];
                let now = now_millis() as f64;
                client
                    .execute(&statement, &[&row.tenant, &row.event_type, &now, &row.json])
                    .await?;
                sent.fetch_add(1, Ordering::Relaxed);
                i += STRIDE;
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for worker in workers {
        worker.await??;
    }
    let single = sent.load(Ordering::Relaxed);
    record_rate(
        &mut report,
        "single_per_second",
        "one-event writes",
        "/s",
        single as f64,
        started.elapsed().as_secs_f64(),
    );
    let total_events = args.events as u64 + single;
    // What autovacuum would have done by the time anyone queries.
    db.batch_execute("VACUUM ANALYZE events").await?;

    // Queries.
    let position = db
        .query_one(
            "SELECT created_at, seq FROM events WHERE tenant = $1 ORDER BY created_at DESC, seq DESC OFFSET $2 LIMIT 1",
            &[&BIG, &(plan.deep_offset() as i64)],
        )
        .await?;
    let (page_time, page_seq): (std::time::SystemTime, i64) = (position.get(0), position.get(1));
    let statements = [
        "SELECT event::text FROM events WHERE tenant = $1 ORDER BY created_at DESC, seq DESC LIMIT 50",
        "SELECT event::text FROM events WHERE tenant = $1 AND created_at >= to_timestamp($2::float8 / 1000) AND created_at < to_timestamp($3::float8 / 1000) ORDER BY created_at DESC, seq DESC LIMIT 50",
        "SELECT event::text FROM events WHERE tenant = $1 AND created_at >= to_timestamp($2::float8 / 1000) AND created_at < to_timestamp($3::float8 / 1000) AND type = 'integration.error' ORDER BY created_at DESC, seq DESC LIMIT 50",
        "SELECT event::text FROM events WHERE tenant = $1 AND event -> 'metadata' @> '{\"channel\": \"slack\"}' ORDER BY created_at DESC, seq DESC LIMIT 50",
        "SELECT event::text FROM events WHERE event -> 'metadata' @> '{\"channel\": \"slack\"}' ORDER BY created_at DESC, seq DESC LIMIT 50",
        "SELECT event::text FROM events WHERE tenant = $1 AND (created_at, seq) < ($2, $3) ORDER BY created_at DESC, seq DESC LIMIT 50",
        "SELECT date_trunc('hour', created_at), type, count(*) FROM events WHERE tenant = $1 AND created_at >= to_timestamp($2::float8 / 1000) AND created_at < to_timestamp($3::float8 / 1000) GROUP BY 1, 2",
    ];
    let mut prepared = Vec::new();
    for text in statements {
        prepared.push(db.prepare(text).await?);
    }
    let mut queries = Vec::new();
    for (shape, statement) in SHAPES.into_iter().zip(&prepared) {
        let (db, start) = (&db, plan.start_time);
        let summary = time_shape(args, shape, |i| async move {
            let (from, to) = Shape::day(start, i);
            let (from, to) = (from as f64, to as f64);
            let rows = match shape {
                Shape::NewestPage | Shape::Metadata => db.query(statement, &[&BIG]).await?,
                Shape::OneDay | Shape::Type => db.query(statement, &[&BIG, &from, &to]).await?,
                Shape::AdminMetadata => db.query(statement, &[]).await?,
                Shape::Page100 => db.query(statement, &[&BIG, &page_time, &page_seq]).await?,
                Shape::Histogram => {
                    let end = (start + SPAN) as f64;
                    db.query(statement, &[&BIG, &(start as f64), &end]).await?
                }
            };
            Ok(rows.len())
        })
        .await?;
        queries.push(summary);
    }
    report["queries"] = json!(queries);

    // Export: every tenant's events, oldest first, as JSON lines (COPY TO STDOUT).
    let started = Instant::now();
    let mut exported = 0u64;
    for tenant in &plan.tenants {
        let stream = db
            .copy_out(&format!(
                "COPY (SELECT event FROM events WHERE tenant = '{tenant}' ORDER BY created_at, seq) TO STDOUT"
            ))
            .await?;
        pin_mut!(stream);
        while let Some(chunk) = stream.next().await {
            exported += line_ends(&chunk?) as u64;
        }
    }
    record_export(&mut report, exported, total_events, started)?;

    report["peak_rss_bytes"] = json!(memory.stop());
    let bytes: i64 = db
        .query_one("SELECT pg_total_relation_size('events')", &[])
        .await?
        .get(0);
    report["bytes_per_event"] = json!(bytes as f64 / total_events as f64);
    report["events"] = json!(total_events);
    drop(db);
    admin
        .batch_execute("DROP DATABASE IF EXISTS logbook_bench")
        .await?;
    Ok(report)
}

// ---------------------------------------------------------------------------------------------------------
// SQLite (in its own process, so its peak RSS is its own)

fn sqlite_open(path: &Path) -> Result<rusqlite::Connection> {
    let connection = rusqlite::Connection::open(path)?;
    connection.busy_timeout(Duration::from_secs(60))?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    Ok(connection)
}

fn random_id(rng: &mut impl Rng) -> String {
    format!("{:032x}", rng.random::<u128>())
}

fn run_sqlite(work_dir: &Path, plan: &Plan) -> Result<Value> {
    let args = &plan.args;
    let path = work_dir.join("sqlite").join("events.db");
    if path.parent().context("parent")?.exists() {
        std::fs::remove_dir_all(path.parent().context("parent")?)?;
    }
    std::fs::create_dir_all(path.parent().context("parent")?)?;
    let db = sqlite_open(&path)?;
    db.execute_batch(
        "CREATE TABLE events (
             seq INTEGER PRIMARY KEY,
             id TEXT NOT NULL UNIQUE,
             tenant TEXT NOT NULL,
             type TEXT NOT NULL,
             created_at INTEGER NOT NULL,
             received_at INTEGER NOT NULL,
             event TEXT NOT NULL
         );
         CREATE INDEX events_tenant_time ON events (tenant, created_at DESC, seq DESC);",
    )?;
    let mut report = json!({"version": rusqlite::version()});
    let insert = "INSERT INTO events (id, tenant, type, created_at, received_at, event) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

    // Ingest: one writer (SQLite has one), a transaction per batch.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let batches: Vec<Vec<(String, Row)>> = workload_batches(work_dir, args.batch)?
        .into_iter()
        .map(|lines| {
            lines
                .iter()
                .map(|line| Ok((random_id(&mut rng), Row::from_line(line)?)))
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<_>>()?;
    let started = Instant::now();
    let mut db = db;
    for batch in &batches {
        let transaction = db.transaction()?;
        {
            let mut statement = transaction.prepare_cached(insert)?;
            let now = now_millis();
            for (id, row) in batch {
                statement.execute(rusqlite::params![
                    id,
                    row.tenant,
                    row.event_type,
                    row.created_at,
                    now,
                    row.json
                ])?;
            }
        }
        transaction.commit()?;
    }
    let seconds = started.elapsed().as_secs_f64();
    drop(batches);
    record_rate(
        &mut report,
        "ingest_events_per_second",
        "ingest",
        " events/s",
        args.events as f64,
        seconds,
    );

    // One event per transaction from many threads, each with its own connection.
    let pool = Arc::new(
        plan.single_pool
            .iter()
            .map(|line| Row::from_line(line))
            .collect::<Result<Vec<_>>>()?,
    );
    let sent = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.single_seconds);
    let started = Instant::now();
    let threads: Vec<_> = (0..args.single_clients)
        .map(|worker| {
            let (pool, sent, path) = (pool.clone(), sent.clone(), path.clone());
            std::thread::spawn(move || {
                let connection = sqlite_open(&path)?;
                let mut statement = connection.prepare(insert)?;
                let mut rng = rand::rngs::StdRng::seed_from_u64(1_000 + worker as u64);
                let mut i = worker;
                while Instant::now() < deadline {
                    let row = &pool[i % pool.len()];
                    let now = now_millis();
                    statement.execute(rusqlite::params![
                        random_id(&mut rng),
                        row.tenant,
                        row.event_type,
                        now,
                        now,
                        row.json
                    ])?;
                    sent.fetch_add(1, Ordering::Relaxed);
                    i += STRIDE;
                }
                Ok::<(), anyhow::Error>(())
            })
        })
        .collect();
    for thread in threads {
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("a writer thread panicked"))??;
    }
    let single = sent.load(Ordering::Relaxed);
    record_rate(
        &mut report,
        "single_per_second",
        "one-event writes",
        "/s",
        single as f64,
        started.elapsed().as_secs_f64(),
    );
    let total_events = args.events as u64 + single;
    db.execute_batch("ANALYZE")?;

    // Queries.
    let (page_time, page_seq): (i64, i64) = db.query_row(
        "SELECT created_at, seq FROM events WHERE tenant = ?1 ORDER BY created_at DESC, seq DESC LIMIT 1 OFFSET ?2",
        rusqlite::params![BIG, plan.deep_offset() as i64],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    let statements = [
        "SELECT event FROM events WHERE tenant = ?1 ORDER BY created_at DESC, seq DESC LIMIT 50",
        "SELECT event FROM events WHERE tenant = ?1 AND created_at >= ?2 AND created_at < ?3 ORDER BY created_at DESC, seq DESC LIMIT 50",
        "SELECT event FROM events WHERE tenant = ?1 AND created_at >= ?2 AND created_at < ?3 AND type = 'integration.error' ORDER BY created_at DESC, seq DESC LIMIT 50",
        "SELECT event FROM events WHERE tenant = ?1 AND json_extract(event, '$.metadata.channel') = 'slack' ORDER BY created_at DESC, seq DESC LIMIT 50",
        "SELECT event FROM events WHERE json_extract(event, '$.metadata.channel') = 'slack' ORDER BY created_at DESC, seq DESC LIMIT 50",
        "SELECT event FROM events WHERE tenant = ?1 AND (created_at, seq) < (?2, ?3) ORDER BY created_at DESC, seq DESC LIMIT 50",
        "SELECT created_at / 3600000, type, count(*) FROM events WHERE tenant = ?1 AND created_at >= ?2 AND created_at < ?3 GROUP BY 1, 2",
    ];
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let mut queries = Vec::new();
    for (shape, text) in SHAPES.into_iter().zip(statements) {
        let (db, start) = (&db, plan.start_time);
        let summary = runtime.block_on(time_shape(args, shape, |i| async move {
            let (from, to) = Shape::day(start, i);
            let mut statement = db.prepare_cached(text)?;
            let params: Vec<Box<dyn rusqlite::ToSql>> = match shape {
                Shape::NewestPage | Shape::Metadata => vec![Box::new(BIG)],
                Shape::OneDay | Shape::Type => vec![Box::new(BIG), Box::new(from), Box::new(to)],
                Shape::AdminMetadata => vec![],
                Shape::Page100 => vec![Box::new(BIG), Box::new(page_time), Box::new(page_seq)],
                Shape::Histogram => vec![Box::new(BIG), Box::new(start), Box::new(start + SPAN)],
            };
            let mut rows = statement.query(rusqlite::params_from_iter(params.iter()))?;
            let mut count = 0;
            while let Some(row) = rows.next()? {
                // Read the value as a client would.
                let _: rusqlite::types::Value = row.get(0)?;
                count += 1;
            }
            Ok(count)
        }))?;
        queries.push(summary);
    }
    report["queries"] = json!(queries);

    // Export: every tenant's events, oldest first, as JSON lines.
    let started = Instant::now();
    let mut exported = 0u64;
    let mut sink = Vec::with_capacity(1 << 20);
    {
        let mut statement =
            db.prepare("SELECT event FROM events WHERE tenant = ?1 ORDER BY created_at, seq")?;
        for tenant in &plan.tenants {
            let mut rows = statement.query([tenant])?;
            while let Some(row) = rows.next()? {
                let text = row.get_ref(0)?.as_str()?;
                sink.extend_from_slice(text.as_bytes());
                sink.push(b'\n');
                exported += 1;
                if sink.len() > 1 << 20 {
                    sink.clear();
                }
            }
        }
    }
    record_export(&mut report, exported, total_events, started)?;

    db.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
    drop(db);
    report["bytes_per_event"] =
        json!(directory_bytes(path.parent().context("parent")?) as f64 / total_events as f64);
    report["peak_rss_bytes"] = json!(status_kib(std::process::id(), "VmHWM:").unwrap_or(0) * 1024);
    report["events"] = json!(total_events);
    Ok(report)
}

// ---------------------------------------------------------------------------------------------------------
// Logbook's engine in-process

/// The read figures of Logbook's embedded engine called in-process, as the SQLite baseline is (no network, no
/// HTTP, no JSON response around the events): the data directory the Logbook phase left, opened by this
/// process (the open replays the log and rebuilds the index), the same query shapes through the engine's
/// `EventStore` calls, and the export as pages of 1000.
fn run_engine(work_dir: &Path, plan: &Plan) -> Result<Value> {
    use logbook_core::filter::query_string::RawQuery;
    use logbook_store::{EmbeddedStore, EventStore, HistogramRequest, Position, StoreOptions};
    let args = &plan.args;
    let data_dir = work_dir.join("logbook-data");
    anyhow::ensure!(
        data_dir.exists(),
        "{} does not exist: the engine phase reads what the logbook phase wrote (--systems logbook,engine)",
        data_dir.display()
    );
    let mut report = json!({});
    let started = Instant::now();
    let store = EmbeddedStore::open(StoreOptions::new(&data_dir))?;
    let open = started.elapsed().as_secs_f64();
    report["open_seconds"] = json!(open);
    eprintln!("    open (replay the log, rebuild the index): {open:.1} s");
    let total_events = store.stats().events;
    let now = now_millis();
    let query = |text: &str| {
        RawQuery::parse(text)
            .to_list_query(now)
            .map_err(|error| anyhow::anyhow!("{text}: {error:?}"))
    };
    // The deep page's position, as the HTTP client's cursor.
    let newest = query("limit=50")?;
    let mut after: Option<Position> = None;
    for _ in 1..plan.deep_page {
        after = store.list(BIG, &newest, after)?.next;
    }
    let deep = after.context("fewer pages than the deep page")?;
    // Each event's JSON is read, as the SQLite client reads its value.
    let read = |items: &mut dyn Iterator<Item = &logbook_store::RawEvent>| -> usize {
        items.filter(|item| item.json().ends_with('}')).count()
    };
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let mut queries = Vec::new();
    for shape in SHAPES {
        let (store, start) = (&store, plan.start_time);
        let summary = runtime.block_on(time_shape(args, shape, |i| {
            let (from, to) = Shape::day(start, i);
            let list = |text: &str, after: Option<Position>| -> Result<usize> {
                Ok(read(
                    &mut store.list(BIG, &query(text)?, after)?.items.iter(),
                ))
            };
            let result = (|| -> Result<usize> {
                Ok(match shape {
                    Shape::NewestPage => list("limit=50", None)?,
                    Shape::OneDay => list(&format!("limit=50&since={from}&until={to}"), None)?,
                    Shape::Type => list(
                        &format!("limit=50&since={from}&until={to}&type=integration.error"),
                        None,
                    )?,
                    Shape::Metadata => list("limit=50&meta.channel=slack", None)?,
                    Shape::AdminMetadata => {
                        let page = store.list_all(&query("limit=50&meta.channel=slack")?, None)?;
                        read(&mut page.items.iter().map(|(_, item)| item))
                    }
                    Shape::Page100 => list("limit=50", Some(deep))?,
                    Shape::Histogram => {
                        let request = HistogramRequest {
                            interval_ms: 3_600_000,
                            start,
                            end: start + SPAN,
                            group_by: Some(logbook_core::Field::Type),
                            top: 1000,
                        };
                        let histogram = store.histogram(BIG, &query("")?, &request)?;
                        // Non-zero (hour, type) cells, as the SQL baselines return them.
                        histogram
                            .buckets
                            .iter()
                            .flat_map(|bucket| &bucket.groups)
                            .filter(|&&count| count > 0)
                            .count()
                    }
                })
            })();
            async move { result }
        }))?;
        queries.push(summary);
    }
    report["queries"] = json!(queries);

    // Export: every tenant's events, oldest first, as pages of 1000 written out as JSON lines.
    let started = Instant::now();
    let mut exported = 0u64;
    let mut sink = Vec::with_capacity(1 << 20);
    let oldest_first = query("order=asc&limit=1000")?;
    for tenant in &plan.tenants {
        let mut after = None;
        loop {
            let page = store.list(tenant, &oldest_first, after)?;
            for item in &page.items {
                sink.extend_from_slice(item.json().as_bytes());
                sink.push(b'\n');
                exported += 1;
            }
            if sink.len() > 1 << 20 {
                sink.clear();
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
    }
    record_export(&mut report, exported, total_events, started)?;
    drop(store);
    report["peak_rss_bytes"] = json!(status_kib(std::process::id(), "VmHWM:").unwrap_or(0) * 1024);
    report["events"] = json!(total_events);
    Ok(report)
}

// ---------------------------------------------------------------------------------------------------------
// The table

fn print_table(report: &Value) {
    let systems = ["logbook", "engine", "postgres", "sqlite"];
    let names = [
        "Logbook",
        "Logbook engine, in-process",
        "PostgreSQL",
        "SQLite",
    ];
    let present: Vec<usize> = (0..systems.len())
        .filter(|&i| report.get(systems[i]).is_some())
        .collect();
    // (ours, theirs): the server against both baselines, and the in-process engine against in-process SQLite.
    let ratios: Vec<(usize, usize)> = [(0, 2), (0, 3), (1, 3)]
        .into_iter()
        .filter(|(ours, theirs)| present.contains(ours) && present.contains(theirs))
        .collect();
    let mut header = "| figure |".to_string();
    let mut rule = "|---|".to_string();
    for &i in &present {
        header.push_str(&format!(" {} |", names[i]));
        rule.push_str("---|");
    }
    for &(ours, theirs) in &ratios {
        let ours = if ours == 0 { "Logbook" } else { "engine" };
        header.push_str(&format!(" {ours} vs {} |", names[theirs]));
        rule.push_str("---|");
    }
    println!("{header}\n{rule}");
    // (label, value getter, higher is better, formatter)
    type Getter = Box<dyn Fn(&Value) -> Option<f64>>;
    let mut figures: Vec<(String, Getter, bool, &str)> = vec![
        (
            "durable ingest, events/s".into(),
            Box::new(|r: &Value| r["ingest_events_per_second"].as_f64()),
            true,
            "count",
        ),
        (
            "one-event writes/s (concurrent clients)".into(),
            Box::new(|r: &Value| r["single_per_second"].as_f64()),
            true,
            "count",
        ),
    ];
    for (index, shape) in SHAPES.iter().enumerate() {
        for (key, label) in [("p50_ms", "p50"), ("p99_ms", "p99")] {
            figures.push((
                format!("{} {label}, ms", shape.name()),
                Box::new(move |r: &Value| r["queries"][index][key].as_f64()),
                false,
                "ms",
            ));
        }
    }
    figures.push((
        "JSONL export, events/s".into(),
        Box::new(|r: &Value| r["export_events_per_second"].as_f64()),
        true,
        "count",
    ));
    figures.push((
        "JSONL export as pages of 1,000 (Logbook over HTTP), events/s".into(),
        Box::new(|r: &Value| r["export_pages_events_per_second"].as_f64()),
        true,
        "count",
    ));
    figures.push((
        "bytes on disk per event (with indexes)".into(),
        Box::new(|r: &Value| r["bytes_per_event"].as_f64()),
        false,
        "count",
    ));
    figures.push((
        "restart after kill -9 until answering (engine: open), s".into(),
        Box::new(|r: &Value| {
            r["restart_seconds"]
                .as_f64()
                .or_else(|| r["open_seconds"].as_f64())
        }),
        false,
        "ms",
    ));
    figures.push((
        "peak RSS, MB".into(),
        Box::new(|r: &Value| r["peak_rss_bytes"].as_f64().map(|b| b / 1e6)),
        false,
        "count",
    ));
    for (label, get, higher_is_better, kind) in figures {
        let values: Vec<Option<f64>> = systems
            .iter()
            .map(|s| report.get(*s).and_then(&get))
            .collect();
        let mut line = format!("| {label} |");
        for &i in &present {
            line.push_str(&match values[i] {
                Some(v) if kind == "ms" => format!(" {v:.2} |"),
                Some(v) => format!(" {v:.0} |"),
                None => " — |".into(),
            });
        }
        for &(ours, theirs) in &ratios {
            {
                let ratio = match (values[ours], values[theirs]) {
                    (Some(ours), Some(theirs)) if ours > 0.0 && theirs > 0.0 => {
                        let ratio = if higher_is_better {
                            ours / theirs
                        } else {
                            theirs / ours
                        };
                        format!(
                            " {ratio:.2}× {} |",
                            if ratio >= 1.0 { "ahead" } else { "behind" }
                        )
                    }
                    _ => " — |".into(),
                };
                line.push_str(&ratio);
            }
        }
        println!("{line}");
    }
}

// ---------------------------------------------------------------------------------------------------------

fn main() -> Result<()> {
    // As `logbook` does (crates/logbook-cli/src/main.rs): no transparent huge pages for mimalloc's arenas. Set
    // before the children start, so the server, the engine and the SQLite process all run this way.
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    let args = Args::parse();
    match args.internal {
        Some(Internal::Serve { dir, port }) => {
            return tokio::runtime::Runtime::new()?.block_on(serve(dir, port));
        }
        Some(Internal::Export {
            port,
            work_dir,
            pid,
            way,
        }) => {
            let plan: Plan = serde_json::from_slice(&std::fs::read(work_dir.join("plan.json"))?)?;
            let client = reqwest::Client::new();
            let base = format!("http://127.0.0.1:{port}");
            let cpu_before = pid.and_then(cpu_seconds);
            let started = Instant::now();
            let exported = tokio::runtime::Runtime::new()?.block_on(export_logbook(
                &client,
                &base,
                &plan.tenants,
                way,
            ))?;
            let seconds = started.elapsed().as_secs_f64();
            print!(
                "{exported} events, {:.0} events/s",
                exported as f64 / seconds
            );
            if let (Some(before), Some(after)) = (cpu_before, pid.and_then(cpu_seconds)) {
                print!(
                    ", {:.2} µs of server CPU per event",
                    (after - before) * 1e6 / exported as f64
                );
            }
            println!();
            return Ok(());
        }
        Some(Internal::Engine { work_dir, plan }) => {
            let plan: Plan = serde_json::from_slice(&std::fs::read(plan)?)?;
            let report = run_engine(&work_dir, &plan)?;
            println!("{report}");
            return Ok(());
        }
        Some(Internal::Sqlite { work_dir, plan }) => {
            let plan: Plan = serde_json::from_slice(&std::fs::read(plan)?)?;
            let report = run_sqlite(&work_dir, &plan)?;
            println!("{report}");
            return Ok(());
        }
        None => {}
    }
    let args = args.run;
    let systems: Vec<&str> = args.systems.split(',').map(str::trim).collect();
    for system in &systems {
        if !["logbook", "engine", "postgres", "sqlite"].contains(system) {
            bail!("unknown system `{system}`; expected logbook, engine, postgres or sqlite");
        }
    }
    let position = |name: &str| systems.iter().position(|system| *system == name);
    if let Some(engine) = position("engine") {
        if position("logbook").is_none_or(|logbook| logbook >= engine) {
            bail!("the engine phase reads the data the logbook phase writes: list logbook before engine");
        }
    }
    let temporary = tempfile::tempdir()?;
    let work_dir = args
        .work_dir
        .clone()
        .unwrap_or_else(|| temporary.path().to_path_buf());
    std::fs::create_dir_all(&work_dir)?;
    eprintln!(
        "workload: {} events over {} tenants, 30 days, in {}",
        args.events,
        args.tenants,
        work_dir.display()
    );
    let mut plan = generate(&args, &work_dir)?;
    let big = std::io::BufReader::new(std::fs::File::open(work_dir.join("workload.jsonl"))?)
        .lines()
        .map_while(|line| line.ok())
        .filter(|line| line.contains(&format!("\"tenant\":\"{BIG}\"")))
        .count();
    let mut report = json!({"events": args.events, "tenants": args.tenants, "largest_tenant_events": big,
                            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)});
    // Page 100 needs 4,951 events in the largest tenant; small runs (CI's) take its last whole page instead.
    anyhow::ensure!(
        big > 100,
        "the largest tenant has {big} events; use more --events"
    );
    plan.deep_page = ((big - 1) / 50).min(100);
    report["deep_page"] = json!(plan.deep_page);
    let plan_path = work_dir.join("plan.json");
    std::fs::write(&plan_path, serde_json::to_vec(&plan)?)?;
    eprintln!(
        "  largest tenant ({BIG}): {big} events; deep page {}",
        plan.deep_page
    );
    let runtime = tokio::runtime::Runtime::new()?;
    for system in &systems {
        eprintln!("{system}:");
        let result = match *system {
            "logbook" => runtime.block_on(run_logbook(&plan, &work_dir))?,
            "postgres" => runtime.block_on(run_postgres(&plan, &work_dir))?,
            child => {
                std::fs::write(&plan_path, serde_json::to_vec(&plan)?)?;
                let output = Command::new(std::env::current_exe()?)
                    .args([
                        if child == "engine" {
                            "__engine"
                        } else {
                            "__sqlite"
                        },
                        work_dir.to_str().context("path")?,
                        plan_path.to_str().context("path")?,
                    ])
                    .stderr(Stdio::inherit())
                    .output()?;
                if !output.status.success() {
                    bail!("the {child} process failed: {}", output.status);
                }
                serde_json::from_slice(&output.stdout)?
            }
        };
        report[*system] = result;
    }
    print_table(&report);
    if let Some(output) = &args.output {
        std::fs::write(output, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}
