//! A router over a fresh embedded store in a temporary directory, and request helpers.

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use logbook_server::{AppState, ServerConfig};
use logbook_store::{EmbeddedStore, EventStore, StoreOptions};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::Arc;
use tower::ServiceExt;

pub const ADMIN: &str = "test-admin-key";

pub struct TestServer {
    pub router: Router,
    _dir: Option<tempfile::TempDir>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts the status and the error code of the API's error format; returns the error object.
    pub fn expect_error(&self, status: StatusCode, code: &str) -> Value {
        assert_eq!(self.status, status, "body: {}", self.text());
        let body = self.json();
        assert_eq!(body["error"]["code"], code, "body: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.len() > 10),
            "a human message: {body}"
        );
        body["error"].clone()
    }
}

impl TestServer {
    pub fn new() -> TestServer {
        TestServer::with_config(ServerConfig::default())
    }

    pub fn with_config(config: ServerConfig) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(StoreOptions::new(dir.path())).unwrap();
        store.ensure_admin_key(Some(ADMIN)).unwrap();
        let store: Arc<dyn EventStore> = Arc::new(store);
        let router = logbook_server::router(AppState::new(store, config));
        TestServer {
            router,
            _dir: Some(dir),
        }
    }

    /// A test server over a router whose store the caller set up (and whose directory the caller keeps).
    pub fn from_router(router: Router) -> TestServer {
        TestServer { router, _dir: None }
    }

    pub async fn send(
        &self,
        method: Method,
        uri: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> Reply {
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(key) = key {
            builder = builder.header("authorization", format!("Bearer {key}"));
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let response = self
            .router
            .clone()
            .oneshot(builder.body(body.into()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, uri: &str, key: &str) -> Reply {
        self.send(Method::GET, uri, Some(key), &[], Body::empty())
            .await
    }

    pub async fn post_json(&self, uri: &str, key: &str, body: &Value) -> Reply {
        self.send(
            Method::POST,
            uri,
            Some(key),
            &[("content-type", "application/json")],
            body.to_string(),
        )
        .await
    }

    /// Creates a tenant and a key with `scopes`; returns the key secret.
    pub async fn tenant(&self, id: &str, scopes: &[&str]) -> String {
        let created = self
            .post_json("/v1/tenants", ADMIN, &json!({"id": id, "name": id}))
            .await;
        assert!(
            created.status == StatusCode::CREATED || created.status == StatusCode::CONFLICT,
            "{}",
            created.text()
        );
        let key = self
            .post_json(
                &format!("/v1/tenants/{id}/keys"),
                ADMIN,
                &json!({"name": "test", "scopes": scopes}),
            )
            .await;
        assert_eq!(key.status, StatusCode::CREATED, "{}", key.text());
        key.json()["key"].as_str().unwrap().to_string()
    }

    /// Ingests events (JSON array); returns the receipts.
    pub async fn ingest(&self, key: &str, events: Value) -> Vec<Value> {
        let reply = self.post_json("/v1/events", key, &events).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
        reply.json()["items"].as_array().unwrap().clone()
    }

    /// All events of a listing, following cursors; `query` without `limit`.
    pub async fn list_all(&self, key: &str, query: &str, limit: usize) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut uri = format!("/v1/events?{query}&limit={limit}");
            if let Some(cursor) = &cursor {
                uri.push_str(&format!("&cursor={cursor}"));
            }
            let reply = self.get(&uri, key).await;
            assert_eq!(reply.status, StatusCode::OK, "{uri}: {}", reply.text());
            let page = reply.json();
            let items = page["items"].as_array().unwrap();
            assert!(items.len() <= limit);
            out.extend(items.iter().cloned());
            assert_eq!(
                page["has_more"].as_bool().unwrap(),
                !page["next_cursor"].is_null()
            );
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => return out,
            }
        }
    }
}

/// Asserts that `events` holds no event twice, holds every seq of `existing`, and is in listing order
/// (`created_at`, then `seq`; reversed for `desc`).
pub fn assert_whole_and_ordered(events: &[Value], existing: &HashSet<u64>, order: &str) {
    let seqs: Vec<u64> = events
        .iter()
        .map(|event| event["seq"].as_u64().unwrap())
        .collect();
    let unique: HashSet<u64> = seqs.iter().copied().collect();
    assert_eq!(unique.len(), seqs.len(), "no event is repeated ({order})");
    assert!(
        existing.is_subset(&unique),
        "no event that existed before is skipped ({order})"
    );
    let keys: Vec<(String, u64)> = events
        .iter()
        .map(|event| {
            (
                event["created_at"].as_str().unwrap().to_string(),
                event["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    if order == "desc" {
        sorted.reverse();
    }
    assert_eq!(keys, sorted, "in order ({order})");
}

/// `metadata.label` of each event, in order.
pub fn labels(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|event| {
            event["metadata"]["label"]
                .as_str()
                .unwrap_or("?")
                .to_string()
        })
        .collect()
}

pub fn encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}
