//! Crash safety of the real binary: many clients ingest into several tenants while `logbook serve` is killed
//! with SIGKILL at random moments, repeatedly. After every restart each acknowledged event is present exactly
//! once (unanswered requests are retried with their idempotency keys), `seq` has no gaps, every stored event
//! matches its hash, filtered queries (the index) agree with the full log, and `logbook reindex` agrees.

mod support;

use rand::Rng;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{free_port, serve_with, wait_for_port};

/// Segments seal often, so the background compactor runs (and is killed) during the test.
const SMALL_SEGMENTS: &[(&str, &str)] = &[("LOGBOOK_SEGMENT_MIB", "1")];

const ADMIN: &str = "crash-test-admin";

/// Every event of the tenant matching `filter` (a query string, may be empty), oldest first.
async fn all_events(client: &reqwest::Client, base: &str, key: &str, filter: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut request = client
            .get(format!("{base}/v1/events"))
            .bearer_auth(key)
            .query(&[("order", "asc"), ("limit", "1000")]);
        if let Some((name, value)) = filter.split_once('=') {
            request = request.query(&[(name, value)]);
        }
        if let Some(cursor) = &cursor {
            request = request.query(&[("cursor", cursor)]);
        }
        let page: Value = request.send().await.unwrap().json().await.unwrap();
        events.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return events,
        }
    }
}

const TENANTS: [&str; 4] = ["crash-a", "crash-b", "crash-c", "crash-d"];
const WRITERS: usize = 16;
const ROUNDS: usize = 12;

/// A request that was sent but not answered when the server died; it is retried with the same
/// `Idempotency-Key` after the restart.
#[derive(Clone)]
struct Unanswered {
    tenant: usize,
    idempotency_key: String,
    labels: Vec<String>,
}

/// What the clients were told: label → (tenant, id, seq).
type Acknowledged = Arc<Mutex<HashMap<String, (usize, String, u64)>>>;

fn events_for(labels: &[String], writer: usize) -> Vec<Value> {
    labels
        .iter()
        .map(|label| {
            json!({"type": if label.len() % 2 == 0 { "crash.even" } else { "crash.odd" },
                   "metadata": {"label": label, "writer": format!("w{writer}"), "pad": "x".repeat(200)}})
        })
        .collect()
}

/// Sends one request; `Some(receipts)` once acknowledged, `None` if the server did not answer.
async fn send(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    request: &Unanswered,
    writer: usize,
) -> Option<Vec<Value>> {
    let response = client
        .post(format!("{base}/v1/events"))
        .bearer_auth(key)
        .header("idempotency-key", &request.idempotency_key)
        .json(&events_for(&request.labels, writer))
        .send()
        .await
        .ok()?;
    assert!(
        response.status() == 201 || response.status() == 200,
        "a live server accepts a valid request: {}",
        response.status()
    );
    Some(
        response.json::<Value>().await.ok()?["items"]
            .as_array()?
            .clone(),
    )
}

fn record(acknowledged: &Acknowledged, request: &Unanswered, receipts: &[Value]) {
    let mut acknowledged = acknowledged.lock().unwrap();
    for (label, receipt) in request.labels.iter().zip(receipts) {
        let entry = (
            request.tenant,
            receipt["id"].as_str().unwrap().to_string(),
            receipt["seq"].as_u64().unwrap(),
        );
        if let Some(previous) = acknowledged.insert(label.clone(), entry.clone()) {
            assert_eq!(
                previous, entry,
                "a retried request returns its first receipts"
            );
        }
    }
}

/// Retries what the last crash left unanswered, with the same idempotency keys: each request is then stored
/// once, whether or not it was before the crash.
async fn retry_unanswered(
    client: &reqwest::Client,
    base: &str,
    keys: &[String],
    unanswered: &Mutex<Vec<(usize, Unanswered)>>,
    acknowledged: &Acknowledged,
) {
    let retries: Vec<(usize, Unanswered)> = std::mem::take(&mut *unanswered.lock().unwrap());
    for (writer, request) in retries {
        let receipts = send(client, base, &keys[request.tenant], &request, writer)
            .await
            .expect("the restarted server answers");
        record(acknowledged, &request, &receipts);
    }
}

/// Sixteen clients write to four tenants (batches of 1 to 60 events, each request with an
/// `Idempotency-Key`) while `logbook serve` is killed with SIGKILL at random moments, twelve times. After every
/// restart, requests left unanswered are retried with their keys. Then: every acknowledged event is present
/// exactly once with its receipt, `seq` is dense per tenant, every event matches its hash, the index answers
/// filtered queries exactly as the full log does, and the offline `logbook reindex` agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_repeated_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let acknowledged: Acknowledged = Arc::default();
    let unanswered: Arc<Mutex<Vec<(usize, Unanswered)>>> = Arc::default();
    let mut keys: Vec<String> = Vec::new();
    let mut kills = 0;
    for round in 0..ROUNDS {
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let mut child = serve_with(dir.path(), port, ADMIN, SMALL_SEGMENTS);
        wait_for_port(port);
        if round == 0 {
            for tenant in TENANTS {
                keys.push(
                    logbook_testkit::tenant_key(&client, &base, ADMIN, tenant, &["ingest", "read"])
                        .await,
                );
            }
        }
        verify(&client, &base, &keys, &acknowledged).await;
        retry_unanswered(&client, &base, &keys, &unanswered, &acknowledged).await;

        let writers: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let (client, base, keys) = (client.clone(), base.clone(), keys.clone());
                let (acknowledged, unanswered) = (acknowledged.clone(), unanswered.clone());
                tokio::spawn(async move {
                    let tenant = writer % TENANTS.len();
                    for counter in 0.. {
                        let size = if counter % 4 == 0 {
                            1
                        } else {
                            rand::rng().random_range(2..60)
                        };
                        let request = Unanswered {
                            tenant,
                            idempotency_key: format!("r{round}-w{writer}-{counter}"),
                            labels: (0..size)
                                .map(|i| format!("r{round}-w{writer}-{counter}-{i}"))
                                .collect(),
                        };
                        match send(&client, &base, &keys[tenant], &request, writer).await {
                            Some(receipts) => record(&acknowledged, &request, &receipts),
                            None => {
                                unanswered.lock().unwrap().push((writer, request));
                                return;
                            }
                        }
                    }
                })
            })
            .collect();
        // Readers run too, so the kill also lands during queries.
        let reader = {
            let (client, base, key) = (client.clone(), base.clone(), keys[0].clone());
            tokio::spawn(async move {
                while let Ok(response) = client
                    .get(format!("{base}/v1/events?limit=100&type=crash.even"))
                    .bearer_auth(&key)
                    .send()
                    .await
                {
                    if response.bytes().await.is_err() {
                        return;
                    }
                }
            })
        };
        let delay = rand::rng().random_range(100..900);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        child.kill().expect("SIGKILL"); // std's kill() is SIGKILL on Unix
        child.wait().unwrap();
        kills += 1;
        for writer in writers {
            writer.await.unwrap();
        }
        reader.await.unwrap();
    }
    // Final restart: retry, verify, then the offline rebuild.
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = serve_with(dir.path(), port, ADMIN, SMALL_SEGMENTS);
    wait_for_port(port);
    retry_unanswered(&client, &base, &keys, &unanswered, &acknowledged).await;
    let total = verify(&client, &base, &keys, &acknowledged).await;
    let count = acknowledged.lock().unwrap().len();
    assert_eq!(kills, ROUNDS);
    assert!(
        count > 2_000,
        "the test acknowledged too few events ({count}) to mean anything"
    );
    assert_eq!(
        total, count,
        "every stored event was acknowledged (after retries)"
    );
    terminate_gracefully(&mut child);
    let blocks = std::fs::read_dir(dir.path().join("blocks"))
        .unwrap()
        .count();
    assert!(
        blocks > 0,
        "sealed segments were compacted into block files during the test"
    );
    let reindex = Command::new(env!("CARGO_BIN_EXE_logbook"))
        .args(["reindex", "--data-dir", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&reindex.stderr);
    assert!(reindex.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("{total} events")), "{stderr}");
}

/// Sends SIGTERM through the `kill` command and expects a clean exit.
fn terminate_gracefully(child: &mut Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "graceful shutdown exits 0, got {exit:?}");
}

/// Checks the invariants for every tenant; returns the number of stored events.
async fn verify(
    client: &reqwest::Client,
    base: &str,
    keys: &[String],
    acknowledged: &Mutex<HashMap<String, (usize, String, u64)>>,
) -> usize {
    let mut by_label = HashMap::new();
    let mut total = 0;
    for (tenant, key) in keys.iter().enumerate() {
        let events = all_events(client, base, key, "").await;
        let mut seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        seqs.sort_unstable();
        assert_eq!(
            seqs,
            (1..=events.len() as u64).collect::<Vec<_>>(),
            "seq is dense with no gaps or duplicates"
        );
        let mut per_filter: HashMap<String, HashSet<u64>> = HashMap::new();
        for event in &events {
            let label = event["metadata"]["label"].as_str().unwrap().to_string();
            let stored: logbook_core::Event = serde_json::from_value(event.clone()).unwrap();
            assert_eq!(
                stored.compute_hash(),
                stored.hash,
                "event {label} matches its hash"
            );
            assert!(
                by_label
                    .insert(label.clone(), (tenant, stored.id, stored.seq))
                    .is_none(),
                "event {label} stored twice"
            );
            for filter in [
                format!("type={}", stored.event_type),
                format!(
                    "meta.writer={}",
                    event["metadata"]["writer"].as_str().unwrap()
                ),
            ] {
                per_filter.entry(filter).or_default().insert(stored.seq);
            }
        }
        // The index (rebuilt from the log at start) answers filters exactly as the full log does.
        for (filter, expected) in per_filter {
            let found: HashSet<u64> = all_events(client, base, key, &filter)
                .await
                .iter()
                .map(|e| e["seq"].as_u64().unwrap())
                .collect();
            assert_eq!(found, expected, "`{filter}` agrees with the log");
        }
        total += events.len();
    }
    for (label, receipt) in acknowledged.lock().unwrap().iter() {
        assert_eq!(
            by_label.get(label),
            Some(receipt),
            "acknowledged event {label} is present with its receipt"
        );
    }
    total
}
