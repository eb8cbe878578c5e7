//! The hostile input corpus: each input gets a clear 4xx in the API's error format (never a 5xx, never a
//! stored half), and the server stays healthy afterwards. The socket-level cases (oversized headers, a body
//! trickled byte by byte) run against `logbook_server::serve` on loopback.

use crate::support::*;
use axum::body::Body;
use axum::http::{Method, StatusCode};
use logbook_server::{AppState, ServerConfig};
use logbook_store::{EmbeddedStore, EventStore, StoreOptions};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Posts `body` as `content_type`; returns the reply after checking it is a 4xx with an error message.
async fn hostile_post(server: &TestServer, key: &str, content_type: &str, body: Vec<u8>) -> Reply {
    let shown = String::from_utf8_lossy(&body[..body.len().min(100)]).into_owned();
    let reply = server
        .send(
            Method::POST,
            "/v1/events",
            Some(key),
            &[("content-type", content_type)],
            Body::from(body),
        )
        .await;
    assert!(
        reply.status.is_client_error(),
        "{shown}: expected a 4xx, got {}: {}",
        reply.status,
        reply.text()
    );
    let error = reply.json();
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|m| m.len() > 10),
        "{error}"
    );
    reply
}

#[tokio::test]
async fn hostile_bodies_get_clear_4xx_and_nothing_is_stored() {
    let server = TestServer::new();
    let key = server.tenant("acme", &["ingest", "read"]).await;
    let json = "application/json";

    // Deeply nested JSON: far beyond the parser's recursion limit, and just beyond the event depth limit.
    let deep = format!(
        "{{\"type\":\"a\",\"metadata\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    hostile_post(&server, &key, json, deep.into_bytes())
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_json");
    let mut nested = json!(1);
    for _ in 0..40 {
        nested = json!({ "x": nested });
    }
    let reply = hostile_post(
        &server,
        &key,
        json,
        json!({"type": "a", "metadata": nested})
            .to_string()
            .into_bytes(),
    )
    .await;
    let error = reply.expect_error(StatusCode::BAD_REQUEST, "invalid_event");
    assert!(
        error["message"].as_str().unwrap().contains("levels deep"),
        "{error}"
    );
    let nested_array = format!("[{}]", "[".repeat(200) + &"]".repeat(200));
    hostile_post(&server, &key, json, nested_array.into_bytes())
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_json");

    // A huge string, and a 10 MB body in three shapes: one event, garbage, and too many small events.
    let huge = json!({"type": "a", "metadata": {"blob": "x".repeat(5 << 20)}}).to_string();
    hostile_post(&server, &key, json, huge.into_bytes())
        .await
        .expect_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    let ten_mb = 10 << 20;
    let one_event = format!(
        "{{\"type\":\"a\",\"metadata\":{{\"blob\":\"{}\"}}}}",
        "y".repeat(ten_mb)
    );
    hostile_post(&server, &key, json, one_event.into_bytes())
        .await
        .expect_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    hostile_post(&server, &key, json, vec![b'a'; ten_mb])
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_json");
    let many = "{\"type\":\"bulk\"}\n".repeat(ten_mb / 16);
    hostile_post(&server, &key, "application/x-ndjson", many.into_bytes())
        .await
        .expect_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    // Invalid UTF-8, inside a string and as a whole line of JSONL.
    let mut invalid = b"{\"type\":\"a\",\"metadata\":{\"s\":\"".to_vec();
    invalid.extend_from_slice(&[0xff, 0xfe, 0xc3]);
    invalid.extend_from_slice(b"\"}}");
    let error = hostile_post(&server, &key, json, invalid)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_json");
    assert!(
        error["message"].as_str().unwrap().contains("UTF-8"),
        "{error}"
    );

    // NUL bytes: raw in the body, and escaped in an identifier.
    hostile_post(&server, &key, json, b"{\"type\":\"a\0b\"}".to_vec())
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_json");
    hostile_post(&server, &key, json, br#"{"type":"a\u0000b"}"#.to_vec())
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_event");
    hostile_post(
        &server,
        &key,
        json,
        br#"{"type":"a","actor":{"id":"u\u0000"}}"#.to_vec(),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "invalid_event");

    // Duplicate keys, at the top and nested: which value was meant is unknowable, and the hash would differ
    // between parsers.
    let error = hostile_post(&server, &key, json, br#"{"type":"a","type":"b"}"#.to_vec())
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_json");
    assert!(
        error["message"].as_str().unwrap().contains("duplicate"),
        "{error}"
    );
    hostile_post(
        &server,
        &key,
        json,
        br#"{"type":"a","metadata":{"k":{"x":1,"x":2}}}"#.to_vec(),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "invalid_json");

    // Numbers beyond f64, and times beyond i64 and beyond the accepted range.
    hostile_post(
        &server,
        &key,
        json,
        br#"{"type":"a","metadata":{"n":1e400}}"#.to_vec(),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "invalid_json");
    for created_at in [
        "99999999999999999999999",
        "-99999999999999999999999",
        "18446744073709551615",
        "1e300",
        "1.5",
    ] {
        hostile_post(
            &server,
            &key,
            json,
            format!(r#"{{"type":"a","created_at":{created_at}}}"#).into_bytes(),
        )
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_event");
    }

    // Content types that are not JSON.
    for content_type in [
        "application/xml",
        "text/plain",
        "multipart/form-data; boundary=x",
    ] {
        hostile_post(&server, &key, content_type, br#"{"type":"a"}"#.to_vec())
            .await
            .expect_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    }

    // A batch whose last event is bad stores nothing.
    let mut batch: Vec<serde_json::Value> = (0..500)
        .map(|i| json!({"type": "ok", "metadata": {"i": i}}))
        .collect();
    batch.push(json!({"type": "bad", "created_at": "not a time"}));
    hostile_post(&server, &key, json, serde_json::to_vec(&batch).unwrap())
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_event");

    // Nothing above was stored, and the server is healthy and still ingests.
    assert!(server.list_all(&key, "order=asc", 1000).await.is_empty());
    assert_eq!(server.get("/healthz", &key).await.status, StatusCode::OK);
    server
        .ingest(&key, json!([{"type": "after.hostile"}]))
        .await;
    assert_eq!(server.list_all(&key, "order=asc", 1000).await.len(), 1);
}

#[tokio::test]
async fn hostile_queries_get_clear_4xx() {
    let server = TestServer::new();
    let key = server.tenant("acme", &["ingest", "read"]).await;
    let other = server.tenant("globex", &["ingest", "read"]).await;
    server
        .ingest(
            &key,
            json!((0..30)
                .map(|i| json!({"type": "t", "metadata": {"i": i}}))
                .collect::<Vec<_>>()),
        )
        .await;
    server.ingest(&other, json!([{"type": "t"}])).await;

    let cases: Vec<(String, StatusCode, &str)> = vec![
        // Numbers beyond i64/f64 where numbers are expected.
        (
            "limit=99999999999999999999999".to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_filter",
        ),
        (
            "since=99999999999999999999999".to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_filter",
        ),
        (
            "filter[seq][gt]=1e400".to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_filter",
        ),
        (
            "filter[created_at][gt]=-99999999999999999999".to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_filter",
        ),
        // A metadata path deeper than any event can be.
        (
            format!("filter[metadata.{}][eq]=1", "a.".repeat(5_000)),
            StatusCode::BAD_REQUEST,
            "invalid_filter",
        ),
        // Invalid UTF-8 in a value and in a key.
        (
            "type=%FF%FE".to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_filter",
        ),
        (
            "meta.%C3=1".to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_filter",
        ),
        // Unknown operators and fields.
        (
            "filter[type][regex]=.*".to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_filter",
        ),
        (
            "filter[nope][eq]=1".to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_filter",
        ),
        // Forged cursors.
        (
            "cursor=AAAA".to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_cursor",
        ),
        (
            format!("cursor={}", "A".repeat(60_000)),
            StatusCode::BAD_REQUEST,
            "invalid_cursor",
        ),
        (
            "cursor=%00%01".to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_cursor",
        ),
    ];
    for (query, status, code) in &cases {
        let reply = server.get(&format!("/v1/events?{query}"), &key).await;
        let shown = &query[..query.len().min(80)];
        assert_eq!(reply.status, *status, "{shown}: {}", reply.text());
        assert_eq!(
            reply.json()["error"]["code"],
            *code,
            "{shown}: {}",
            reply.text()
        );
    }
    // The q= syntax has no nesting, so no input can recurse: brackets, dashes and operators are words. Each
    // gets its exact answer: a word no event contains, the negation of one (all 30 events), or a 400 for an
    // unterminated phrase.
    let cases: [(String, Option<usize>); 4] = [
        ("(".repeat(20_000), Some(0)),
        ("-".repeat(20_000), Some(30)),
        ("NOT ".repeat(5_000), Some(0)),
        ("\"".repeat(9_999), None),
    ];
    for (q, expected) in cases {
        let reply = server
            .get(&format!("/v1/events?q={}&limit=100", encode(&q)), &key)
            .await;
        match expected {
            Some(count) => {
                assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
                assert_eq!(
                    reply.json()["items"].as_array().unwrap().len(),
                    count,
                    "q={}…",
                    &q[..8]
                );
            }
            None => {
                reply.expect_error(StatusCode::BAD_REQUEST, "invalid_filter");
            }
        }
    }
    // A huge value, and a NUL in a value, are values that match nothing.
    let reply = server
        .get(
            &format!("/v1/events?filter[type][eq]={}", "x".repeat(60_000)),
            &key,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["items"], json!([]));
    let reply = server.get("/v1/events?type=t%00", &key).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["items"], json!([]));

    // A cursor from another tenant's listing, replayed with this tenant's key.
    let page = server.get("/v1/events?limit=1", &other).await.json();
    assert!(page["next_cursor"].is_null(), "globex has one event");
    let mine = server.get("/v1/events?limit=10", &key).await.json();
    let cursor = mine["next_cursor"].as_str().unwrap();
    let foreign = server
        .get(&format!("/v1/events?limit=10&cursor={cursor}"), &other)
        .await;
    foreign.expect_error(StatusCode::BAD_REQUEST, "invalid_cursor");
    // A cursor with one character changed.
    let mut forged = cursor.to_string().into_bytes();
    let last = forged.len() - 3;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    server
        .get(&format!("/v1/events?limit=10&cursor={forged}"), &key)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_cursor");
    // Very long event ids.
    let reply = server
        .get(&format!("/v1/events/evt_{}", "Z".repeat(60_000)), &key)
        .await;
    assert!(reply.status.is_client_error(), "{}", reply.status);

    assert_eq!(server.get("/healthz", &key).await.status, StatusCode::OK);
}

/// A server on a loopback socket with a short body deadline.
async fn socket_server() -> (
    String,
    String,
    tempfile::TempDir,
    tokio::sync::oneshot::Sender<()>,
) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(StoreOptions::new(dir.path())).unwrap();
    store.ensure_admin_key(Some(ADMIN)).unwrap();
    let store: Arc<dyn EventStore> = Arc::new(store);
    let config = ServerConfig {
        body_timeout: Duration::from_secs(2),
        ..ServerConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(logbook_server::serve(
        listener,
        AppState::new(store, config),
        async {
            let _ = stopped.await;
        },
    ));
    let http = reqwest::Client::new();
    let base = format!("http://{address}");
    let key = logbook_testkit::tenant_key(&http, &base, ADMIN, "acme", &["ingest", "read"]).await;
    (address, key, dir, stop)
}

/// Sends raw `request` bytes on a new connection and returns the raw response.
async fn exchange(address: &str, request: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    // The server may answer and close before it has read everything; the answer is what matters.
    let _ = stream.write_all(request.as_bytes()).await;
    read_response(&mut stream).await
}

/// Reads a whole HTTP/1.1 response (the server closes or says how long it is); at most 10 s.
async fn read_response(stream: &mut tokio::net::TcpStream) -> String {
    let mut out = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                out.extend_from_slice(&buffer[..n]);
                let text = String::from_utf8_lossy(&out);
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text[..end].lines().find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    });
                    if length.is_some_and(|length| out.len() >= end + 4 + length) {
                        break;
                    }
                }
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_and_slow_trickled_bodies() {
    let (address, key, _dir, _stop) = socket_server().await;

    // Headers too large: refused by the HTTP layer with 431.
    let response = exchange(
        &address,
        &format!(
            "GET /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nX-Padding: {}\r\n\r\n",
            "p".repeat(1 << 20)
        ),
    )
    .await;
    assert!(
        response.starts_with("HTTP/1.1 431"),
        "{}",
        &response[..response.len().min(200)]
    );

    // A request line longer than the HTTP layer accepts.
    let response = exchange(
        &address,
        &format!(
            "GET /v1/events?q={} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n",
            "a".repeat(1 << 20)
        ),
    )
    .await;
    assert!(
        response.starts_with("HTTP/1.1 414") || response.starts_with("HTTP/1.1 431"),
        "{}",
        &response[..response.len().min(200)]
    );

    // A body trickled a byte every 100 ms: answered 408 once the 2 s body deadline passes, not held open.
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let body = br#"{"type":"slow","metadata":{"padding":"................................................................"}}"#;
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    let trickle = tokio::spawn(async move {
        for byte in body.iter().take(60) {
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains("request_timeout"), "{response}");
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(6), "answered after {waited:?}");
    trickle.abort();

    // The server is still healthy and nothing of the slow request was stored.
    let http = reqwest::Client::new();
    let base = format!("http://{address}");
    assert_eq!(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let page: serde_json::Value = http
        .get(format!("{base}/v1/events"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"], json!([]));
}
