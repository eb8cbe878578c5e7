//! `GET /v1/events/export`: every matching event in one streamed response, in the listing's order and with
//! its filters; the same events a client paging `GET /v1/events` gets.

use crate::support::*;
use axum::http::StatusCode;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::Arc;

/// The export's JSON lines, each parsed.
fn lines(reply: &Reply) -> Vec<Value> {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply
        .text()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|event| event["id"].as_str().unwrap().to_string())
        .collect()
}

/// 2,600 events (more than two of the export's internal pages), half of type `a`, created over an hour with
/// some instants shared.
async fn ingest_many(server: &TestServer, key: &str) {
    let base = logbook_core::time::now_millis() - 3_600_000;
    let events: Vec<Value> = (0..2600)
        .map(|i| {
            json!({
                "type": if i % 2 == 0 { "a" } else { "b" },
                "created_at": base + (i / 4) * 1000,
                "metadata": {"n": i, "note": "comma, \"quote\""},
            })
        })
        .collect();
    for chunk in events.chunks(1000) {
        server.ingest(key, json!(chunk)).await;
    }
}

#[tokio::test]
async fn an_export_is_the_whole_listing_in_one_response() {
    let server = TestServer::new();
    let key = server.tenant("acme", &["ingest", "read"]).await;
    ingest_many(&server, &key).await;

    for query in [
        "",
        "order=asc",
        "type=a",
        "order=asc&q=meta.n%3A%3E%3D2000",
        "type=none",
    ] {
        let exported = lines(
            &server
                .get(&format!("/v1/events/export?{query}"), &key)
                .await,
        );
        let listed = server.list_all(&key, query, 1000).await;
        assert_eq!(ids(&exported), ids(&listed), "query `{query}`");
        assert_eq!(
            exported, listed,
            "the same bytes as the listing, query `{query}`"
        );
    }
    let all = lines(&server.get("/v1/events/export?order=asc", &key).await);
    assert_eq!(all.len(), 2600);
    let seqs: Vec<u64> = all.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=2600).collect::<Vec<u64>>(),
        "oldest first, every event once"
    );

    let reply = server.get("/v1/events/export", &key).await;
    assert_eq!(reply.headers["content-type"], "application/x-ndjson");
    assert_eq!(
        reply.headers["content-disposition"],
        "attachment; filename=\"logbook-export.jsonl\""
    );
    // JSONL by Accept or format= alike.
    let by_accept = server
        .send(
            axum::http::Method::GET,
            "/v1/events/export?type=b",
            Some(&key),
            &[("accept", "application/x-ndjson")],
            axum::body::Body::empty(),
        )
        .await;
    let by_format = server
        .get("/v1/events/export?type=b&format=jsonl", &key)
        .await;
    assert_eq!(by_accept.body, by_format.body);
}

#[tokio::test]
async fn a_csv_export_has_one_header_row() {
    let server = TestServer::new();
    let key = server.tenant("acme", &["ingest", "read"]).await;
    ingest_many(&server, &key).await;
    let reply = server
        .get("/v1/events/export?format=csv&order=asc", &key)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.headers["content-type"], "text/csv; charset=utf-8");
    let text = reply.text();
    let rows: Vec<&str> = text.split_terminator("\r\n").collect();
    assert_eq!(rows.len(), 2601, "a header row and one row per event");
    assert!(rows[0].starts_with("id,seq,tenant,type,"));
    assert_eq!(
        rows.iter().filter(|row| row.starts_with("id,seq,")).count(),
        1,
        "the header is not repeated per page"
    );
    assert!(rows[1].contains(",1,acme,a,"), "{}", rows[1]);
    assert!(rows[2600].contains(",2600,acme,b,"), "{}", rows[2600]);
    // The same as the listing's CSV pages without their repeated header rows.
    let by_accept = server
        .send(
            axum::http::Method::GET,
            "/v1/events/export?order=asc",
            Some(&key),
            &[("accept", "text/csv")],
            axum::body::Body::empty(),
        )
        .await;
    assert_eq!(by_accept.body, reply.body);
}

#[tokio::test]
async fn an_export_sees_only_its_tenant_and_the_admin_sees_all() {
    let server = TestServer::new();
    let acme = server.tenant("acme", &["ingest", "read"]).await;
    let globex = server.tenant("globex", &["ingest", "read"]).await;
    server
        .ingest(&acme, json!([{"type": "acme.one"}, {"type": "acme.two"}]))
        .await;
    server
        .ingest(&globex, json!([{"type": "globex.one"}]))
        .await;

    let mine = lines(&server.get("/v1/events/export", &acme).await);
    assert_eq!(mine.len(), 2);
    assert!(mine.iter().all(|event| event["tenant"] == "acme"));
    // A tenant key cannot name another tenant.
    let foreign = server.get("/v1/events/export?tenant=globex", &acme).await;
    assert!(
        foreign.status.is_client_error(),
        "{} {}",
        foreign.status,
        foreign.text()
    );
    assert!(!foreign.text().contains("globex.one"));

    let one = lines(&server.get("/v1/events/export?tenant=globex", ADMIN).await);
    assert_eq!(ids(&one).len(), 1);
    assert_eq!(one[0]["type"], "globex.one");
    let every = lines(&server.get("/v1/events/export?order=asc", ADMIN).await);
    let tenants: HashSet<&str> = every
        .iter()
        .map(|e| e["tenant"].as_str().unwrap())
        .collect();
    assert_eq!(every.len(), 3);
    assert_eq!(tenants, HashSet::from(["acme", "globex"]));
    let listed = server.list_all(ADMIN, "order=asc", 2).await;
    assert_eq!(
        ids(&every),
        ids(&listed),
        "the admin's export is the admin's listing"
    );
}

#[tokio::test]
async fn export_parameters_are_checked() {
    let server = TestServer::new();
    let key = server.tenant("acme", &["ingest", "read"]).await;
    let writer = server.tenant("acme", &["ingest"]).await;
    server.ingest(&key, json!([{"type": "a"}])).await;
    for (query, mentions) in [
        ("limit=10", "`limit`"),
        ("take=10", "`take`"),
        ("cursor=abc", "`cursor`"),
        ("format=json", "format=jsonl"),
        ("format=xml", "format"),
        ("filter[nope][eq]=1", "nope"),
        ("since=yesterday-ish", "since"),
    ] {
        let error = server
            .get(&format!("/v1/events/export?{query}"), &key)
            .await
            .expect_error(StatusCode::BAD_REQUEST, "invalid_filter");
        assert!(
            error["message"].as_str().unwrap().contains(mentions),
            "{query}: {error}"
        );
    }
    server
        .get("/v1/events/export", &writer)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    let anonymous = server
        .send(
            axum::http::Method::GET,
            "/v1/events/export",
            None,
            &[],
            axum::body::Body::empty(),
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    // Nothing matching is an empty 200.
    let empty = server.get("/v1/events/export?type=none", &key).await;
    assert_eq!(empty.status, StatusCode::OK);
    assert!(empty.body.is_empty());
}

/// Events arriving while an export streams: none of the events that existed before it is missing, none is
/// sent twice, and the order holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_during_ingest_neither_repeats_nor_skips() {
    let server = Arc::new(TestServer::new());
    let key = server.tenant("acme", &["ingest", "read"]).await;
    ingest_many(&server, &key).await;
    let writer = {
        let server = server.clone();
        let key = key.clone();
        let base = logbook_core::time::now_millis() - 3_600_000;
        tokio::spawn(async move {
            for round in 0..30 {
                let batch = json!([{"type": "during"}, {"type": "during", "created_at": base + round * 60_000}]);
                server.ingest(&key, batch).await;
                tokio::task::yield_now().await;
            }
        })
    };
    for order in ["asc", "desc"] {
        let exported = lines(
            &server
                .get(&format!("/v1/events/export?order={order}"), &key)
                .await,
        );
        assert_whole_and_ordered(&exported, &(1..=2600).collect(), order);
    }
    writer.await.unwrap();
}

/// A store error part-way through an export cuts the response off: the body ends in an error, never as if the
/// export were complete. The error is real: bytes of the oldest log segment are overwritten on disk after the
/// store opened, and the record cache holds one record, so the export's last page reads the damaged file.
#[tokio::test]
async fn a_store_error_part_way_cuts_the_export_off() {
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use logbook_server::{AppState, ServerConfig};
    use logbook_store::{EmbeddedStore, EventStore, StoreOptions};
    use tower::ServiceExt;

    let dir = tempfile::tempdir().unwrap();
    let mut options = StoreOptions::new(dir.path());
    options.segment_bytes = 64 << 10;
    options.cache_bytes = 1;
    options.background_compaction = false;
    let store = EmbeddedStore::open(options).unwrap();
    store.ensure_admin_key(Some(ADMIN)).unwrap();
    let store: Arc<dyn EventStore> = Arc::new(store);
    let server = TestServer::from_router(logbook_server::router(AppState::new(
        store,
        ServerConfig::default(),
    )));
    let key = server.tenant("acme", &["ingest", "read"]).await;
    // 6,000 events in time order, in records of 500: the oldest record holds events 1 to 500.
    let base = logbook_core::time::now_millis() - 3_600_000;
    let events: Vec<Value> = (0..6000)
        .map(|i| json!({"type": "a", "created_at": base + i * 100, "metadata": {"n": i}}))
        .collect();
    for chunk in events.chunks(500) {
        server.ingest(&key, json!(chunk)).await;
    }
    let complete = lines(&server.get("/v1/events/export", &key).await);
    assert_eq!(
        complete.len(),
        6000,
        "the export is whole before the damage"
    );

    // Newest first, the oldest record is read by the last of the export's two pages: damage its start.
    let oldest = dir.path().join("wal").join(format!("{:08}.wal", 1));
    let mut bytes = std::fs::read(&oldest).unwrap();
    assert!(bytes.len() > 1024, "the oldest segment holds records");
    bytes[64..320].fill(0xA5);
    std::fs::write(&oldest, &bytes).unwrap();

    let response = server
        .router
        .clone()
        .oneshot(
            Request::get("/v1/events/export")
                .header("authorization", format!("Bearer {key}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "the first page was whole"
    );
    let mut body = response.into_body();
    let mut received = Vec::new();
    let mut failed = false;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => received.extend_from_slice(frame.data_ref().map_or(&[][..], |d| &d[..])),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(
        failed,
        "the body ends in an error, not as a complete export"
    );
    let text = String::from_utf8(received).unwrap();
    let sent = text.lines().count();
    assert!(
        (4096..6000).contains(&sent),
        "whole pages before the damage, not all: {sent}"
    );
    assert!(text.ends_with('\n'), "only whole lines are sent");
}
