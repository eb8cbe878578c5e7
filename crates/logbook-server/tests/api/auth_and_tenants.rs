//! Keys, scopes and tenant isolation on every route.

use crate::support::*;
use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test]
async fn missing_unknown_and_underscoped_keys() {
    let server = TestServer::new();
    let ingest_only = server.tenant("acme", &["ingest"]).await;
    let read_only = server.tenant("acme", &["read"]).await;
    let none = server
        .send(Method::GET, "/v1/events", None, &[], Body::empty())
        .await;
    none.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(none.headers["www-authenticate"], "Bearer");
    server
        .get("/v1/events", "lbk_not_a_key")
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    let basic = server
        .send(
            Method::GET,
            "/v1/events",
            None,
            &[("authorization", "Basic abc")],
            Body::empty(),
        )
        .await;
    basic.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    server
        .get("/v1/events", &ingest_only)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    server
        .post_json("/v1/events", &read_only, &json!({"type": "a"}))
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    server
        .post_json("/v1/tenants", &read_only, &json!({"id": "x"}))
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    server
        .get("/v1/tenants", &ingest_only)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
}

#[tokio::test]
async fn a_tenant_never_sees_or_writes_another_tenants_events() {
    let server = TestServer::new();
    let acme = server.tenant("acme", &["ingest", "read", "admin"]).await;
    let globex = server.tenant("globex", &["ingest", "read"]).await;
    let acme_receipts = server
        .ingest(
            &acme,
            json!([{"type": "acme.secret", "metadata": {"label": "a1"}}, {"type": "shared"}]),
        )
        .await;
    server
        .ingest(
            &globex,
            json!([{"type": "globex.event", "metadata": {"label": "g1"}}, {"type": "shared"}]),
        )
        .await;
    let acme_id = acme_receipts[0]["id"].as_str().unwrap();

    // get
    server
        .get(&format!("/v1/events/{acme_id}"), &globex)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    server
        .get(&format!("/v1/events/{acme_id}?tenant=acme"), &globex)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    // list, in every format and with filters that would match the other tenant
    for query in [
        "",
        "type=acme.secret",
        "q=acme",
        "format=jsonl",
        "format=csv",
        "meta.label=a1",
        "filter[seq][gte]=1",
    ] {
        let reply = server.get(&format!("/v1/events?{query}"), &globex).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(
            !reply.text().contains("acme"),
            "{query} leaked: {}",
            reply.text()
        );
    }
    server
        .get("/v1/events?tenant=acme", &globex)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    // a cursor of acme's listing does not work for globex
    let page = server.get("/v1/events?limit=1", &acme).await.json();
    let cursor = page["next_cursor"].as_str().unwrap();
    server
        .get(&format!("/v1/events?limit=1&cursor={cursor}"), &globex)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_cursor");
    // ingest into another tenant
    server
        .post_json(
            "/v1/events",
            &globex,
            &json!({"type": "x", "tenant": "acme"}),
        )
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    server
        .post_json("/v1/events?tenant=acme", &globex, &json!({"type": "x"}))
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    // keys of another tenant
    server
        .get("/v1/tenants/globex/keys", &acme)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    server
        .post_json(
            "/v1/tenants/globex/keys",
            &acme,
            &json!({"scopes": ["read"]}),
        )
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(server.list_all(&acme, "", 10).await.len(), 2);
    assert_eq!(server.list_all(&globex, "", 10).await.len(), 2);
}

#[tokio::test]
async fn the_admin_key_works_across_tenants_and_names_one_to_write() {
    let server = TestServer::new();
    server.tenant("acme", &["read"]).await;
    server.tenant("globex", &["read"]).await;
    server
        .post_json("/v1/events", ADMIN, &json!({"type": "x"}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    server
        .ingest(
            ADMIN,
            json!([{"type": "a", "tenant": "acme"}, {"type": "g", "tenant": "globex"}]),
        )
        .await;
    let reply = server
        .post_json("/v1/events?tenant=acme", ADMIN, &json!([{"type": "a2"}]))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::CREATED,
        "?tenant= sets the default tenant for the admin key"
    );
    server
        .post_json(
            "/v1/events",
            ADMIN,
            &json!({"type": "x", "tenant": "nobody"}),
        )
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    // Without `tenant=`, the admin key reads every tenant's events (see admin_listing_across_tenants).
    let everything = server.list_all(ADMIN, "order=asc", 10).await;
    assert_eq!(everything.len(), 3);
    server
        .get("/v1/events/histogram?interval=1h", ADMIN)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    let acme: Vec<String> = server
        .list_all(ADMIN, "tenant=acme", 10)
        .await
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(acme, ["a2", "a"]);
    let globex = server.list_all(ADMIN, "tenant=globex", 10).await;
    assert_eq!(globex.len(), 1);
    let id = globex[0]["id"].as_str().unwrap();
    assert_eq!(
        server.get(&format!("/v1/events/{id}"), ADMIN).await.json()["tenant"],
        "globex"
    );
}

#[tokio::test]
async fn tenants_and_keys_lifecycle() {
    let server = TestServer::new();
    let created = server
        .post_json(
            "/v1/tenants",
            ADMIN,
            &json!({"id": "acme", "name": "Acme Inc"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(created.json()["name"], "Acme Inc");
    server
        .post_json("/v1/tenants", ADMIN, &json!({"id": "acme"}))
        .await
        .expect_error(StatusCode::CONFLICT, "conflict");
    server
        .post_json("/v1/tenants", ADMIN, &json!({"id": "Not Valid"}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    server
        .post_json("/v1/tenants", ADMIN, &json!({"name": "no id"}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    let tenants = server.get("/v1/tenants", ADMIN).await.json();
    assert_eq!(tenants["items"][0]["id"], "acme");

    let key = server
        .post_json(
            "/v1/tenants/acme/keys",
            ADMIN,
            &json!({"name": "ci", "scopes": ["ingest", "read", "admin"]}),
        )
        .await;
    assert_eq!(key.status, StatusCode::CREATED);
    let key = key.json();
    let secret = key["key"].as_str().unwrap().to_string();
    assert!(secret.starts_with("lbk_"));
    assert_eq!(key["scopes"], json!(["ingest", "read", "admin"]));
    server
        .post_json(
            "/v1/tenants/acme/keys",
            ADMIN,
            &json!({"scopes": ["write"]}),
        )
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_request");
    server
        .post_json(
            "/v1/tenants/nobody/keys",
            ADMIN,
            &json!({"scopes": ["read"]}),
        )
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");

    // A tenant admin key manages its own tenant's keys.
    let reader = server
        .post_json(
            "/v1/tenants/acme/keys",
            &secret,
            &json!({"scopes": ["read"]}),
        )
        .await;
    assert_eq!(reader.status, StatusCode::CREATED);
    let reader = reader.json();
    let listed = server.get("/v1/tenants/acme/keys", &secret).await;
    assert_eq!(listed.json()["items"].as_array().unwrap().len(), 2);
    assert!(
        !listed.text().contains("lbk_"),
        "no secret of any key is listed"
    );

    let reader_secret = reader["key"].as_str().unwrap();
    assert_eq!(
        server.get("/v1/events", reader_secret).await.status,
        StatusCode::OK
    );
    let revoke_uri = format!("/v1/tenants/acme/keys/{}", reader["id"].as_str().unwrap());
    let revoke = server
        .send(
            Method::DELETE,
            &revoke_uri,
            Some(&secret),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(revoke.status, StatusCode::NO_CONTENT);
    server
        .get("/v1/events", reader_secret)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    let listed = server.get("/v1/tenants/acme/keys", &secret).await.json();
    assert!(listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|k| k["revoked_at"].is_string()));
}

/// The admin listing across tenants pages through every tenant's events in `(created_at, tenant, seq)` order,
/// never repeating or skipping one, also when many events of different tenants share a `created_at`.
#[tokio::test]
async fn admin_listing_across_tenants() {
    let server = TestServer::new();
    let base = logbook_core::time::now_millis() - 3_600_000;
    let tenants = ["t-a", "t-b", "t-c", "t-d"];
    let mut keys = Vec::new();
    for tenant in tenants {
        keys.push(server.tenant(tenant, &["ingest", "read"]).await);
    }
    // Skewed sizes (40, 20, 7, 1 events), created_at on a coarse grid so many collide across tenants.
    let mut expected = Vec::new();
    for (number, (tenant, key)) in tenants.iter().zip(&keys).enumerate() {
        let count = [40, 20, 7, 1][number];
        let events: Vec<_> = (0..count)
            .map(|i| {
                json!({"type": "x", "created_at": base + (i % 9) * 1000,
                       "metadata": {"channel": if i % 3 == 0 { "slack" } else { "web" }}})
            })
            .collect();
        for receipt in server.ingest(key, json!(events)).await {
            expected.push((tenant.to_string(), receipt["seq"].as_u64().unwrap()));
        }
    }
    let key_of = |event: &Value| {
        (
            event["created_at"].as_str().unwrap().to_string(),
            event["tenant"].as_str().unwrap().to_string(),
            event["seq"].as_u64().unwrap(),
        )
    };
    for order in ["asc", "desc"] {
        for limit in [1, 2, 5, 1000] {
            let seen = server
                .list_all(ADMIN, &format!("order={order}"), limit)
                .await;
            let keys: Vec<_> = seen.iter().map(key_of).collect();
            let mut sorted = keys.clone();
            sorted.sort();
            if order == "desc" {
                sorted.reverse();
            }
            assert_eq!(keys, sorted, "order={order} limit={limit}: in order");
            let mut got: Vec<_> = keys.into_iter().map(|(_, t, s)| (t, s)).collect();
            got.sort();
            let mut want = expected.clone();
            want.sort();
            assert_eq!(got, want, "order={order} limit={limit}: each event once");
        }
    }
    // Filters apply across tenants; a tenant key still sees only its own tenant.
    let slack = server.list_all(ADMIN, "meta.channel=slack", 3).await;
    assert_eq!(slack.len(), 14 + 7 + 3 + 1);
    assert!(slack.iter().all(|e| e["metadata"]["channel"] == "slack"));
    let own = server.list_all(&keys[1], "meta.channel=slack", 3).await;
    assert_eq!(own.len(), 7);
    assert!(own.iter().all(|e| e["tenant"] == "t-b"));
    // Cursors do not cross between a tenant's listing and the listing across tenants.
    let page = server.get("/v1/events?limit=1", ADMIN).await.json();
    let across = page["next_cursor"].as_str().unwrap();
    server
        .get(&format!("/v1/events?limit=1&cursor={across}"), &keys[0])
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_cursor");
    let page = server
        .get("/v1/events?limit=1&tenant=t-a", ADMIN)
        .await
        .json();
    let one = page["next_cursor"].as_str().unwrap();
    server
        .get(&format!("/v1/events?limit=1&cursor={one}"), ADMIN)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_cursor");
}
