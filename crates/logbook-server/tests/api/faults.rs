//! Storage faults as HTTP clients see them, with the WAL on a simulated disk: a failed fsync answers 503 (and
//! `/healthz` says so) until restart; a full disk answers 507, stores nothing of the request, and ingest
//! resumes once space is freed.

use crate::support::*;
use axum::http::{Method, StatusCode};
use logbook_server::{AppState, ServerConfig};
use logbook_store::io::SimulatedFs;
use logbook_store::{EmbeddedStore, EventStore, StoreOptions};
use serde_json::json;
use std::sync::Arc;

/// A server whose WAL lives on `fs` (the catalog stays in `dir`).
fn server_on(dir: &std::path::Path, fs: &SimulatedFs) -> TestServer {
    let mut options = StoreOptions::new(dir);
    options.fs = Arc::new(fs.clone());
    let store = EmbeddedStore::open(options).unwrap();
    store.ensure_admin_key(Some(ADMIN)).unwrap();
    let store: Arc<dyn EventStore> = Arc::new(store);
    TestServer::from_router(logbook_server::router(AppState::new(
        store,
        ServerConfig::default(),
    )))
}

fn batch(label: &str, count: usize) -> serde_json::Value {
    json!((0..count)
        .map(|i| json!({"type": "fault", "metadata": {"label": label, "i": i, "pad": "p".repeat(200)}}))
        .collect::<Vec<_>>())
}

#[tokio::test]
async fn a_failed_fsync_answers_503_until_restart() {
    let dir = tempfile::tempdir().unwrap();
    let fs = SimulatedFs::new();
    let server = server_on(dir.path(), &fs);
    let key = server.tenant("acme", &["ingest", "read"]).await;
    let kept = server.ingest(&key, batch("kept", 3)).await;

    fs.fail_syncs(true);
    let reply = server
        .post_json("/v1/events", &key, &batch("lost", 2))
        .await;
    reply.expect_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    fs.fail_syncs(false);
    // Still refused: after a failed fsync the kernel may have dropped the pages; only a restart recovers.
    let reply = server
        .post_json("/v1/events", &key, &batch("after", 1))
        .await;
    reply.expect_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    let health = server.send(Method::GET, "/healthz", None, &[], "").await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(health.json()["status"], "read_only");
    // Reads still work.
    assert_eq!(server.list_all(&key, "order=asc", 100).await.len(), 3);

    // Restart (after a power loss, for good measure): the acknowledged events are there; writes work again.
    drop(server);
    fs.power_loss(11);
    let server = server_on(dir.path(), &fs);
    let listed = server.list_all(&key, "order=asc", 100).await;
    let ids: Vec<&str> = listed.iter().map(|e| e["id"].as_str().unwrap()).collect();
    for receipt in &kept {
        assert!(ids.contains(&receipt["id"].as_str().unwrap()));
    }
    assert!(
        labels(&listed).iter().all(|l| l == "kept" || l == "lost"),
        "{:?}",
        labels(&listed)
    );
    server.ingest(&key, batch("recovered", 1)).await;
    let health = server.send(Method::GET, "/healthz", None, &[], "").await;
    assert_eq!(health.status, StatusCode::OK);
}

#[tokio::test]
async fn a_full_disk_answers_507_and_ingest_resumes_when_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let fs = SimulatedFs::new();
    let server = server_on(dir.path(), &fs);
    let key = server.tenant("acme", &["ingest", "read"]).await;
    server.ingest(&key, batch("before", 2)).await;

    fs.set_capacity(Some(fs.used() + 1000));
    let reply = server
        .post_json("/v1/events", &key, &batch("big", 500))
        .await;
    let error = reply.expect_error(StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage");
    assert!(
        error["message"].as_str().unwrap().contains("disk is full"),
        "{error}"
    );
    let listed = server.list_all(&key, "order=asc", 1000).await;
    assert_eq!(
        labels(&listed),
        vec!["before", "before"],
        "nothing of the refused batch"
    );
    assert_eq!(
        server
            .send(Method::GET, "/healthz", None, &[], "")
            .await
            .status,
        StatusCode::OK
    );

    fs.set_capacity(None);
    server.ingest(&key, batch("big", 500)).await;
    let listed = server.list_all(&key, "order=asc", 1000).await;
    assert_eq!(listed.len(), 502);
    let seqs: Vec<u64> = listed.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=502).collect::<Vec<_>>(),
        "seq stays dense across the refusal"
    );
}
