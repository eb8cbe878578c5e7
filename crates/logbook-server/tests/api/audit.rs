//! Audit events through the API: defaults and the server-computed diff.

use crate::support::*;
use serde_json::json;

#[tokio::test]
async fn audit_defaults_and_diffs_for_created_updated_deleted() {
    let server = TestServer::new();
    let key = server.tenant("acme", &["ingest", "read"]).await;
    let receipts = server
        .ingest(&key, json!([
            {"action": "created", "actor": "u_42", "entity": {"type": "story", "id": "st_9", "name": "Welcome"},
             "changes": {"after": {"name": "Hello World!", "steps": [{"id": 1}], "is_active": true}}},
            {"action": "UPDATED", "actor": {"id": "u_42", "name": "Alice"}, "entity": {"type": "story", "id": "st_9"},
             "changes": {"before": {"name": "Hello World!", "steps": [{"id": 1}], "is_active": true},
                         "after": {"name": "Good Morning 🌞", "steps": [{"id": 1}, {"id": 2}], "is_active": true}}},
            {"action": "DELETED", "entity": {"type": "story", "id": "st_9"},
             "changes": {"before": {"name": "Good Morning 🌞"}, "diff": [{"path": "/ignored", "op": "added"}]}}
        ]))
        .await;
    let get = |index: usize| {
        let id = receipts[index]["id"].as_str().unwrap().to_string();
        let server = &server;
        let key = key.clone();
        async move { server.get(&format!("/v1/events/{id}"), &key).await.json() }
    };
    let created = get(0).await;
    assert_eq!(created["type"], "story.created");
    assert_eq!(created["action"], "CREATED");
    assert_eq!(created["actor"], json!({"id": "u_42"}));
    assert_eq!(
        created["changes"]["diff"],
        json!([
            {"path": "/is_active", "op": "added", "after": true},
            {"path": "/name", "op": "added", "after": "Hello World!"},
            {"path": "/steps/0/id", "op": "added", "after": 1}
        ])
    );
    let updated = get(1).await;
    assert_eq!(updated["type"], "story.updated");
    assert_eq!(
        updated["changes"]["diff"],
        json!([
            {"path": "/name", "op": "changed", "before": "Hello World!", "after": "Good Morning 🌞"},
            {"path": "/steps/1/id", "op": "added", "after": 2}
        ])
    );
    let deleted = get(2).await;
    assert_eq!(
        deleted["changes"]["diff"],
        json!([{"path": "/name", "op": "removed", "before": "Good Morning 🌞"}])
    );
    assert!(deleted["changes"].get("after").is_none());
    let timeline = server
        .list_all(&key, "entity_type=story&entity_id=st_9&order=asc", 10)
        .await;
    let actions: Vec<&str> = timeline
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["CREATED", "UPDATED", "DELETED"]);
}

#[tokio::test]
async fn entity_catalog_is_served_and_configurable() {
    let server = TestServer::new();
    let key = server.tenant("acme", &["read"]).await;
    let builtin = server.get("/v1/entity-types", &key).await.json();
    let story = builtin["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["name"] == "story")
        .expect("the shipped catalog has story");
    assert!(story["description"].as_str().unwrap().len() > 5);
    assert_eq!(
        builtin["actions"],
        json!(["CREATED", "UPDATED", "DELETED", "INVITED", "ACCEPTED", "LOGIN", "LOGOUT"])
    );
    assert!(builtin["resource_keys"]
        .as_array()
        .unwrap()
        .contains(&json!("bot_id")));

    let catalog = logbook_core::demo::Catalog::from_json(r#"{"entity_types": [{"name": "invoice", "description": "A bill"}], "actions": ["approved"]}"#).unwrap();
    let config = logbook_server::ServerConfig {
        catalog,
        ..Default::default()
    };
    let custom = TestServer::with_config(config);
    let key = custom.tenant("acme", &["read", "ingest"]).await;
    let body = custom.get("/v1/entity-types", &key).await.json();
    assert_eq!(
        body["items"],
        json!([{"name": "invoice", "description": "A bill"}])
    );
    assert_eq!(body["actions"], json!(["APPROVED"]));
    // Unknown entity types are still accepted.
    custom
        .ingest(
            &key,
            json!({"action": "CREATED", "entity": {"type": "not_in_catalog"}}),
        )
        .await;
    let unauthenticated = custom
        .send(
            axum::http::Method::GET,
            "/v1/entity-types",
            None,
            &[],
            axum::body::Body::empty(),
        )
        .await;
    unauthenticated.expect_error(axum::http::StatusCode::UNAUTHORIZED, "unauthorized");
}
