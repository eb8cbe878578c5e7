//! Cursors: pages never repeat or skip an event, even while events arrive; cursors are tamper-checked.

use crate::support::*;
use axum::http::StatusCode;
use serde_json::json;
use std::collections::HashSet;
use std::sync::Arc;

async fn page_through_while_ingesting(order: &str) {
    let server = Arc::new(TestServer::new());
    let key = server.tenant("acme", &["ingest", "read"]).await;
    let base = logbook_core::time::now_millis() - 3_600_000;
    // 600 events before paging starts, with created_at spread over the last hour (some equal).
    let initial: Vec<_> = (0..600)
        .map(|i| json!({"type": "before", "created_at": base + (i / 3) * 1000}))
        .collect();
    let mut existing = HashSet::new();
    for chunk in initial.chunks(200) {
        for receipt in server.ingest(&key, json!(chunk)).await {
            existing.insert(receipt["seq"].as_u64().unwrap());
        }
    }
    let writer = {
        let server = server.clone();
        let key = key.clone();
        tokio::spawn(async move {
            for round in 0..40 {
                // New events now, and backfilled ones inside the paged window.
                let batch = json!([{"type": "during"}, {"type": "during", "created_at": base + round * 5_000}]);
                server.ingest(&key, batch).await;
                tokio::task::yield_now().await;
            }
        })
    };
    let seen = server.list_all(&key, &format!("order={order}"), 37).await;
    writer.await.unwrap();
    assert_whole_and_ordered(&seen, &existing, order);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_duplicates_or_gaps_under_concurrent_ingest_newest_first() {
    page_through_while_ingesting("desc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_duplicates_or_gaps_under_concurrent_ingest_oldest_first() {
    page_through_while_ingesting("asc").await;
}

#[tokio::test]
async fn cursors_are_bound_to_their_query_and_checked() {
    let server = TestServer::new();
    let key = server.tenant("acme", &["ingest", "read"]).await;
    server
        .ingest(
            &key,
            json!((0..10)
                .map(|i| json!({"type": if i % 2 == 0 { "even" } else { "odd" }}))
                .collect::<Vec<_>>()),
        )
        .await;
    let first = server
        .get("/v1/events?type=even&limit=2", &key)
        .await
        .json();
    let cursor = first["next_cursor"].as_str().unwrap().to_string();
    let same = server
        .get(
            &format!("/v1/events?type=even&limit=3&cursor={cursor}"),
            &key,
        )
        .await;
    assert_eq!(
        same.status,
        StatusCode::OK,
        "limit may change between pages"
    );
    assert_eq!(same.json()["items"].as_array().unwrap().len(), 3);
    let changed = server
        .get(
            &format!("/v1/events?type=odd&limit=2&cursor={cursor}"),
            &key,
        )
        .await;
    changed.expect_error(StatusCode::BAD_REQUEST, "invalid_cursor");
    let reordered = server
        .get(
            &format!("/v1/events?type=even&order=asc&cursor={cursor}"),
            &key,
        )
        .await;
    reordered.expect_error(StatusCode::BAD_REQUEST, "invalid_cursor");
    let mut forged = cursor.clone();
    forged.replace_range(5..6, if &cursor[5..6] == "A" { "B" } else { "A" });
    server
        .get(&format!("/v1/events?type=even&cursor={forged}"), &key)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_cursor");
    server
        .get("/v1/events?cursor=not-a-cursor", &key)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_cursor");
}

#[tokio::test]
async fn relative_windows_stay_fixed_across_pages() {
    let server = TestServer::new();
    let key = server.tenant("acme", &["ingest", "read"]).await;
    server
        .ingest(
            &key,
            json!((0..5).map(|_| json!({"type": "a"})).collect::<Vec<_>>()),
        )
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await; // `until` is exclusive
    let first = server
        .get("/v1/events?until=now&limit=2", &key)
        .await
        .json();
    // Events created after the first page's `now` stay out of later pages of the same listing.
    server
        .ingest(
            &key,
            json!([{"type": "later", "created_at": logbook_core::time::now_millis() + 5}]),
        )
        .await;
    let rest = server
        .list_all(
            &key,
            &format!(
                "until=now&cursor={}",
                first["next_cursor"].as_str().unwrap()
            ),
            10,
        )
        .await;
    assert_eq!(rest.len(), 3);
    assert!(rest.iter().all(|event| event["type"] == "a"));
}
