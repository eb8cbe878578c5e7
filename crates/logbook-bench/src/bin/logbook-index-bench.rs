//! The in-memory index alone: how fast events go into [`TenantIndex`], on one thread, without HTTP, the log or
//! compaction. For profiling the indexer (`perf record -g target/release/logbook-index-bench ...`).
//!
//! ```text
//! cargo run --release -p logbook-bench --bin logbook-index-bench -- --workload WORK_DIR/workload.jsonl
//! ```
//! The workload is the JSON lines file `logbook-compare --work-dir WORK_DIR` writes.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use logbook_core::event::{new_event_id, Assigned, Event, Limits, NewEvent};
use logbook_store::index::{Location, TenantIndex};
use logbook_store::wal::RecordPosition;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "Times inserting a workload's events into the in-memory index, on one thread")]
struct Args {
    /// The workload: one event per line, each naming its `tenant`.
    #[arg(long)]
    workload: PathBuf,
    /// Events to read from it (at most).
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Times to build the index from scratch; the best run is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Instead of the index: time building events and their stored JSON (the writer's work per event), the
    /// way it is done (`into_event_and_json`, one serialization of the JSON values) against hashing and then
    /// serializing the event again, alternating rounds.
    #[arg(long)]
    build: bool,
    /// Instead of the index: time validating events from their JSON text (the ingest handler's work per
    /// event: strict parsing, then `NewEvent::from_json`).
    #[arg(long)]
    parse: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let file = std::fs::File::open(&args.workload)
        .with_context(|| format!("open {}", args.workload.display()))?;
    let limits = Limits::default();
    if args.parse {
        let lines: Vec<String> = std::io::BufReader::new(file)
            .lines()
            .take(args.events)
            .collect::<std::io::Result<_>>()?;
        return time_parse(&lines, &limits, args.rounds);
    }
    let mut seqs: HashMap<String, u64> = HashMap::new();
    let mut events: Vec<Event> = Vec::with_capacity(args.events);
    let mut pending: Vec<(NewEvent, Assigned)> = Vec::new();
    for line in std::io::BufReader::new(file).lines().take(args.events) {
        let line = line?;
        let value: serde_json::Value = serde_json::from_str(&line)?;
        let new = NewEvent::from_json(value, line.len(), &limits, 0)
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        let tenant = new.tenant.clone().context("each event names its tenant")?;
        let seq = seqs.entry(tenant.clone()).or_default();
        *seq += 1;
        let created_at = new.created_at.context("each event has its created_at")?;
        let assigned = Assigned {
            id: new_event_id(created_at),
            seq: *seq,
            tenant,
            received_at: created_at,
        };
        if args.build {
            pending.push((new, assigned));
        } else {
            events.push(new.into_event(assigned));
        }
    }
    if args.build {
        return time_build(&pending, args.rounds);
    }
    let location = Location {
        record: RecordPosition {
            segment: 1,
            offset: 0,
            compacted: false,
        },
        line: 0,
    };
    let mut best = f64::INFINITY;
    for round in 1..=args.rounds {
        let resident_before = resident_bytes();
        let started = Instant::now();
        let mut indexes: HashMap<&str, TenantIndex> = HashMap::new();
        for event in &events {
            indexes
                .entry(event.tenant.as_str())
                .or_default()
                .insert(event, location);
        }
        let seconds = started.elapsed().as_secs_f64();
        best = best.min(seconds);
        println!(
            "round {round}: {} events into {} tenants in {seconds:.3} s ({:.0} events/s, {:.2} µs/event)",
            events.len(),
            indexes.len(),
            events.len() as f64 / seconds,
            seconds * 1e6 / events.len() as f64
        );
        println!(
            "  resident memory grew by {:.0} MB ({:.0} bytes/event)",
            resident_bytes().saturating_sub(resident_before) as f64 / 1e6,
            resident_bytes().saturating_sub(resident_before) as f64 / events.len() as f64
        );
        drop(indexes);
    }
    println!(
        "best: {:.0} events/s ({:.2} µs/event)",
        events.len() as f64 / best,
        best * 1e6 / events.len() as f64
    );
    Ok(())
}

/// Times two ways of doing the same work, `rounds` times each, alternating: `run(way, input)` does it once on
/// an input `prepare()` made before the clock starts, and says what it produced (printed beside its time).
/// Returns the best µs per item of each way.
fn alternate<T>(
    names: [&str; 2],
    items: usize,
    rounds: usize,
    mut prepare: impl FnMut() -> T,
    mut run: impl FnMut(usize, T) -> Result<String>,
) -> Result<[f64; 2]> {
    let mut best = [f64::INFINITY; 2];
    for round in 1..=rounds {
        for (way, name) in names.iter().enumerate() {
            let input = prepare();
            let started = Instant::now();
            let produced = run(way, input)?;
            let micros = started.elapsed().as_secs_f64() * 1e6 / items as f64;
            best[way] = best[way].min(micros);
            println!("round {round}: {name}: {micros:.2} µs/event ({produced})");
        }
    }
    Ok(best)
}

/// Builds every event and its stored JSON both ways, `rounds` times each, alternating; prints µs per event.
fn time_build(pending: &[(NewEvent, Assigned)], rounds: usize) -> Result<()> {
    let names = ["into_event_and_json", "into_event + serde_json::to_vec"];
    let best = alternate(
        names,
        pending.len(),
        rounds,
        || pending.to_vec(),
        |way, inputs| {
            let mut bytes = 0usize;
            for (new, assigned) in inputs {
                let json = if way == 0 {
                    new.into_event_and_json(assigned).1
                } else {
                    serde_json::to_vec(&new.into_event(assigned))?
                };
                bytes += json.len();
            }
            Ok(format!("{bytes} bytes"))
        },
    )?;
    println!(
        "best: into_event_and_json {:.2} µs/event, into_event + serde_json::to_vec {:.2} µs/event",
        best[0], best[1]
    );
    Ok(())
}

/// Validates every line both ways (strict parsing then `from_json`; `from_json_text`, the ingest handler's),
/// `rounds` times, alternating; prints µs per event.
fn time_parse(lines: &[String], limits: &Limits, rounds: usize) -> Result<()> {
    let best = alternate(
        ["two steps", "one pass"],
        lines.len(),
        rounds,
        || (),
        |way, ()| {
            let mut events = 0usize;
            for line in lines {
                let event = if way == 0 {
                    let value = logbook_core::json::from_str_strict(line)?;
                    NewEvent::from_json(value, line.len(), limits, 0)
                        .map_err(|error| anyhow::anyhow!("{error}"))?
                } else {
                    NewEvent::from_json_text(line, limits, 0).context("an event is accepted")?
                };
                events += usize::from(event.tenant.is_some());
            }
            Ok(format!("parsed {events} events"))
        },
    )?;
    println!(
        "best: two steps (from_str_strict, from_json) {:.2} µs/event, one pass (from_json_text) {:.2} µs/event",
        best[0], best[1]
    );
    Ok(())
}

/// This process's resident memory (Linux), or 0.
fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}
