//! Crash safety of the real binary: several clients ingest while `logbook serve` is killed with SIGKILL at
//! random moments, repeatedly. After every restart each acknowledged event is present exactly once, `seq` has
//! no gaps, every stored event matches its hash, and the offline `logbook reindex` agrees.

mod support;

use rand::Rng;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{free_port, serve, wait_for_port};

const ADMIN: &str = "crash-test-admin";

/// Every event of the tenant, oldest first.
async fn all_events(client: &reqwest::Client, base: &str, key: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut request = client
            .get(format!("{base}/v1/events"))
            .bearer_auth(key)
            .query(&[("order", "asc"), ("limit", "1000")]);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_repeated_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let acknowledged: Arc<Mutex<HashMap<String, (String, u64)>>> = Arc::default();
    let mut key = String::new();
    let rounds = 6;
    for round in 0..rounds {
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let mut child = serve(dir.path(), port, ADMIN);
        wait_for_port(port);
        if round == 0 {
            key = logbook_testkit::tenant_key(&client, &base, ADMIN, "crash", &["ingest", "read"])
                .await;
        }
        verify(&client, &base, &key, &acknowledged).await;

        let writers: Vec<_> = (0..4)
            .map(|writer| {
                let client = client.clone();
                let base = base.clone();
                let key = key.clone();
                let acknowledged = acknowledged.clone();
                tokio::spawn(async move {
                    let mut counter = 0u64;
                    loop {
                        let size = rand::rng().random_range(1..40);
                        let labels: Vec<String> = (0..size).map(|i| format!("r{round}-w{writer}-{counter}-{i}")).collect();
                        counter += 1;
                        let events: Vec<Value> = labels.iter().map(|label| json!({"type": "crash.test", "metadata": {"label": label, "pad": "x".repeat(200)}})).collect();
                        let Ok(response) = client.post(format!("{base}/v1/events")).bearer_auth(&key).json(&events).send().await else { return };
                        if response.status() != 201 {
                            return;
                        }
                        let Ok(body) = response.json::<Value>().await else { return };
                        let mut acknowledged = acknowledged.lock().unwrap();
                        for (label, receipt) in labels.into_iter().zip(body["items"].as_array().unwrap()) {
                            acknowledged.insert(label, (receipt["id"].as_str().unwrap().to_string(), receipt["seq"].as_u64().unwrap()));
                        }
                    }
                })
            })
            .collect();
        let delay = rand::rng().random_range(150..700);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        child.kill().expect("SIGKILL"); // std's kill() is SIGKILL on Unix
        child.wait().unwrap();
        for writer in writers {
            writer.await.unwrap();
        }
    }
    // Final restart and verification, then the offline rebuild.
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = serve(dir.path(), port, ADMIN);
    wait_for_port(port);
    let total = verify(&client, &base, &key, &acknowledged).await;
    assert!(
        acknowledged.lock().unwrap().len() > 100,
        "the test acknowledged too few events to mean anything"
    );
    terminate_gracefully(&mut child);
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

/// Checks the invariants; returns the number of stored events.
async fn verify(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    acknowledged: &Mutex<HashMap<String, (String, u64)>>,
) -> usize {
    if key.is_empty() {
        return 0;
    }
    let events = all_events(client, base, key).await;
    let seqs: Vec<u64> = {
        let mut seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        seqs.sort_unstable();
        seqs
    };
    assert_eq!(
        seqs,
        (1..=events.len() as u64).collect::<Vec<_>>(),
        "seq is dense with no gaps or duplicates"
    );
    let mut labels = HashSet::new();
    let mut by_label = HashMap::new();
    for event in &events {
        let label = event["metadata"]["label"].as_str().unwrap().to_string();
        assert!(labels.insert(label.clone()), "event {label} stored twice");
        let stored: logbook_core::Event = serde_json::from_value(event.clone()).unwrap();
        assert_eq!(
            stored.compute_hash(),
            stored.hash,
            "event {label} matches its hash"
        );
        by_label.insert(label, (stored.id, stored.seq));
    }
    for (label, receipt) in acknowledged.lock().unwrap().iter() {
        assert_eq!(
            by_label.get(label),
            Some(receipt),
            "acknowledged event {label} is present with its receipt"
        );
    }
    events.len()
}
