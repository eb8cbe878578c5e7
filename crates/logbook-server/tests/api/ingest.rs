//! `POST /v1/events`: every body form, all-or-nothing validation, limits, idempotency, immutability.

use crate::support::*;
use axum::body::Body;
use axum::http::{Method, StatusCode};
use logbook_server::ServerConfig;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

#[tokio::test]
async fn every_body_form_is_accepted_and_receipts_follow_input_order() {
    let server = TestServer::new();
    let key = server.tenant("acme", &["ingest", "read"]).await;
    let single = server.ingest(&key, json!({"type": "a.one"})).await;
    let array = server
        .ingest(&key, json!([{"type": "a.two"}, {"type": "a.three"}]))
        .await;
    let envelope = server
        .ingest(&key, json!({"events": [{"type": "a.four"}]}))
        .await;
    let jsonl = server
        .send(
            Method::POST,
            "/v1/events",
            Some(&key),
            &[("content-type", "application/x-ndjson")],
            "{\"type\":\"a.five\"}\n\n{\"type\":\"a.six\"}\n",
        )
        .await;
    assert_eq!(jsonl.status, StatusCode::CREATED, "{}", jsonl.text());
    let jsonl = jsonl.json()["items"].as_array().unwrap().clone();
    let receipts: Vec<Value> = [single, array, envelope, jsonl].concat();
    assert_eq!(
        receipts
            .iter()
            .map(|r| r["seq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6]
    );
    let expected_types = ["a.one", "a.two", "a.three", "a.four", "a.five", "a.six"];
    for (receipt, expected_type) in receipts.iter().zip(expected_types) {
        let event = server
            .get(
                &format!("/v1/events/{}", receipt["id"].as_str().unwrap()),
                &key,
            )
            .await
            .json();
        assert_eq!(event["type"], expected_type);
        assert_eq!(event["hash"], receipt["hash"]);
        assert_eq!(event["tenant"], "acme");
        assert_eq!(event["outcome"], "success");
        assert!(event["received_at"].as_str().unwrap().ends_with('Z'));
    }
}

#[tokio::test]
async fn the_hash_is_sha256_of_the_canonical_event_without_hash() {
    let server = TestServer::new();
    let key = server.tenant("acme", &["ingest", "read"]).await;
    let receipt = server
        .ingest(
            &key,
            json!({"type": "a", "metadata": {"z": 1, "a": "é", "m": [1.5, true, null]}}),
        )
        .await;
    let mut event = server
        .get(
            &format!("/v1/events/{}", receipt[0]["id"].as_str().unwrap()),
            &key,
        )
        .await
        .json();
    let hash = event.as_object_mut().unwrap().remove("hash").unwrap();
    let canonical = logbook_core::canonical::to_canonical_string(&event);
    assert!(
        canonical.starts_with("{\"context\"") || canonical.starts_with("{\"created_at\""),
        "{canonical}"
    );
    assert_eq!(
        hash.as_str().unwrap(),
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
}

#[tokio::test]
async fn a_bad_event_rejects_the_whole_batch_and_names_it() {
    let server = TestServer::new();
    let key = server.tenant("acme", &["ingest", "read"]).await;
    let reply = server
        .post_json(
            "/v1/events",
            &key,
            &json!([{"type": "ok"}, {"type": "ok"}, {"type": "ok", "outcome": "maybe"}]),
        )
        .await;
    let error = reply.expect_error(StatusCode::BAD_REQUEST, "invalid_event");
    assert_eq!(error["details"]["index"], 2);
    assert_eq!(error["details"]["field"], "outcome");
    assert!(
        error["message"].as_str().unwrap().contains("success"),
        "{error}"
    );

    let jsonl = server
        .send(
            Method::POST,
            "/v1/events",
            Some(&key),
            &[("content-type", "application/jsonl")],
            "{\"type\":\"ok\"}\n\n{\"type\": \n",
        )
        .await;
    let error = jsonl.expect_error(StatusCode::BAD_REQUEST, "invalid_json");
    assert_eq!(error["details"]["index"], 1);
    assert_eq!(error["details"]["line"], 3);

    assert!(
        server.list_all(&key, "", 100).await.is_empty(),
        "nothing of a rejected request is stored"
    );
}

#[tokio::test]
async fn malformed_bodies_get_clear_4xx() {
    let server = TestServer::new();
    let key = server.tenant("acme", &["ingest", "read"]).await;
    let cases: Vec<(&str, &str, StatusCode, &str)> = vec![
        (
            "",
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_event",
        ),
        (
            "[]",
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_event",
        ),
        (
            "{\"type\": ",
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "42",
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "[1]",
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_event",
        ),
        (
            "{\"type\":\"a\"}",
            "text/xml",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "{\"type\":\"a\",\"colour\":1}",
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_event",
        ),
        (
            "{\"type\":\"a\",\"seq\":1}",
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_event",
        ),
    ];
    for (body, content_type, status, code) in cases {
        let reply = server
            .send(
                Method::POST,
                "/v1/events",
                Some(&key),
                &[("content-type", content_type)],
                body.to_string(),
            )
            .await;
        reply.expect_error(status, code);
    }
    let invalid_utf8 = server
        .send(
            Method::POST,
            "/v1/events",
            Some(&key),
            &[],
            Body::from(vec![b'{', 0xff, b'}']),
        )
        .await;
    invalid_utf8.expect_error(StatusCode::BAD_REQUEST, "invalid_json");
    assert!(server.list_all(&key, "", 10).await.is_empty());
}

#[tokio::test]
async fn size_and_count_limits_answer_413() {
    let mut config = ServerConfig::default();
    config.limits.max_batch_events = 3;
    config.max_body_bytes = 600 * 1024;
    let server = TestServer::with_config(config);
    let key = server.tenant("acme", &["ingest", "read"]).await;
    let too_many = server
        .post_json(
            "/v1/events",
            &key,
            &json!([{"type": "a"}, {"type": "a"}, {"type": "a"}, {"type": "a"}]),
        )
        .await;
    too_many.expect_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    let big_event = json!({"type": "a", "metadata": {"blob": "x".repeat(300 * 1024)}});
    let error = server
        .post_json("/v1/events", &key, &big_event)
        .await
        .expect_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert_eq!(error["details"]["index"], 0);
    let huge_body = json!([{"type": "a", "metadata": {"blob": "x".repeat(700 * 1024)}}]);
    server
        .post_json("/v1/events", &key, &huge_body)
        .await
        .expect_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    let mut deep = json!("leaf");
    for _ in 0..40 {
        deep = json!({"d": deep});
    }
    server
        .post_json("/v1/events", &key, &json!({"type": "a", "metadata": deep}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_event");
    assert!(server.list_all(&key, "", 10).await.is_empty());
}

#[tokio::test]
async fn idempotency_key_replays_the_original_receipts() {
    let server = TestServer::new();
    let key = server.tenant("acme", &["ingest", "read"]).await;
    let body = json!([{"type": "a"}, {"type": "b"}]).to_string();
    let headers = [
        ("content-type", "application/json"),
        ("idempotency-key", "req-1"),
    ];
    let first = server
        .send(
            Method::POST,
            "/v1/events",
            Some(&key),
            &headers,
            body.clone(),
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    let second = server
        .send(Method::POST, "/v1/events", Some(&key), &headers, body)
        .await;
    assert_eq!(second.status, StatusCode::CREATED);
    assert_eq!(second.json(), first.json());
    assert_eq!(second.headers["idempotent-replayed"], "true");
    let different = server
        .send(
            Method::POST,
            "/v1/events",
            Some(&key),
            &headers,
            json!([{"type": "c"}]).to_string(),
        )
        .await;
    different.expect_error(StatusCode::CONFLICT, "conflict");
    // Per-event keys: the second copy returns the first's receipt.
    let per_event = server
        .ingest(&key, json!([{"type": "d", "idempotency_key": "e-1"}]))
        .await;
    let again = server
        .ingest(
            &key,
            json!([{"type": "d", "idempotency_key": "e-1"}, {"type": "e"}]),
        )
        .await;
    assert_eq!(again[0], per_event[0]);
    let stored = server.list_all(&key, "", 100).await;
    let types: Vec<&str> = stored.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types.len(), 4, "a, b, d, e stored once each: {types:?}");
}

#[tokio::test]
async fn events_are_immutable() {
    let server = TestServer::new();
    let key = server.tenant("acme", &["ingest", "read", "admin"]).await;
    let receipt = server.ingest(&key, json!({"type": "a"})).await;
    let uri = format!("/v1/events/{}", receipt[0]["id"].as_str().unwrap());
    for method in [Method::PUT, Method::PATCH, Method::DELETE] {
        let reply = server
            .send(
                method.clone(),
                &uri,
                Some(&key),
                &[("content-type", "application/json")],
                "{}",
            )
            .await;
        reply.expect_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
        let reply = server
            .send(
                method,
                "/v1/events",
                Some(&key),
                &[("content-type", "application/json")],
                "{}",
            )
            .await;
        reply.expect_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    }
    let event = server.get(&uri, &key).await;
    assert_eq!(event.status, StatusCode::OK);
    server
        .get("/v1/nothing-here", &key)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn operations_endpoints() {
    let server = TestServer::new();
    let key = server.tenant("acme", &["ingest", "read"]).await;
    server.ingest(&key, json!({"type": "a"})).await;
    let health = server
        .send(Method::GET, "/healthz", None, &[], Body::empty())
        .await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.json()["status"], "ok");
    let metrics = server
        .send(Method::GET, "/metrics", None, &[], Body::empty())
        .await
        .text();
    for name in [
        "logbook_http_requests_total",
        "logbook_events ",
        "logbook_wal_append_sync_seconds",
        "logbook_ingest_request_seconds",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
}

#[tokio::test]
async fn openapi_describes_every_route_and_matches_the_checked_in_copy() {
    let server = TestServer::new();
    let reply = server
        .send(Method::GET, "/openapi.json", None, &[], Body::empty())
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let spec = reply.json();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3.1"));
    for (path, methods) in [
        ("/v1/events", &["get", "post"][..]),
        ("/v1/events/{id}", &["get"]),
        ("/v1/events/histogram", &["get"]),
        ("/v1/events/export", &["get"]),
        ("/v1/tenants", &["get", "post"]),
        ("/v1/tenants/{tenant}", &["get"]),
        ("/v1/tenants/{tenant}/keys", &["get", "post"]),
        ("/v1/tenants/{tenant}/viewer-tokens", &["post"]),
        ("/v1/tenants/{tenant}/keys/{id}", &["delete"]),
        ("/v1/entity-types", &["get"]),
        ("/healthz", &["get"]),
        ("/metrics", &["get"]),
    ] {
        for method in methods {
            assert!(
                spec["paths"][path][method].is_object(),
                "{method} {path} is described"
            );
        }
    }
    for schema in ["Event", "DiffEntry", "ErrorBody", "EventPage", "Receipt"] {
        assert!(
            spec["components"]["schemas"][schema].is_object(),
            "schema {schema}"
        );
    }
    // docs/openapi.json is the published reference; regenerate with UPDATE_OPENAPI=1 cargo test.
    let pretty = serde_json::to_string_pretty(&spec).unwrap() + "\n";
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(path, &pretty).unwrap();
    }
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    assert!(checked_in == pretty, "docs/openapi.json is stale: run `UPDATE_OPENAPI=1 cargo test -p logbook-server` and commit it");
}
