//! `GET /v1/events` filters: every operator on every kind of field, in every notation, and the formats.

use crate::support::*;
use axum::http::{Method, StatusCode};
use logbook_core::time::{format_millis, now_millis};
use serde_json::{json, Value};

/// Four events two hours ago, one minute apart, labelled e1..e4 in metadata.
async fn dataset(server: &TestServer) -> (String, i64, Vec<Value>) {
    let key = server.tenant("acme", &["ingest", "read"]).await;
    let base = (now_millis() - 2 * 3_600_000) / 60_000 * 60_000;
    let events = json!([
        {"type": "bot.created", "action": "CREATED", "actor": {"id": "u_1", "type": "user", "name": "Alice"},
         "entity": {"type": "story", "id": "st_1", "name": "Welcome story"}, "resources": {"bot_id": "b1"},
         "context": {"ip": "1.1.1.1"}, "description": "Alice created the welcome story", "created_at": base,
         "metadata": {"label": "e1", "n": 5, "status": "ok", "tags": ["x", "y"], "nested": {"flag": true}}},
        {"type": "bot.updated", "action": "updated", "actor": {"id": "u_2", "type": "user", "name": "Bob"},
         "entity": {"type": "card", "id": "c_2", "name": "Pricing card"}, "resources": {"bot_id": "b2"},
         "context": {"ip": "2.2.2.2"}, "outcome": "failure", "description": "Bob renamed the pricing card",
         "created_at": format_millis(base + 60_000), "metadata": {"label": "e2", "n": 10, "status": "error"}},
        {"type": "conversation.message.created", "actor": "system", "resources": {"bot_id": "b1", "conversation_id": "c_91"},
         "created_at": base + 120_000, "metadata": {"label": "e3", "n": -1.5, "status": "Error", "tags": ["z"]}},
        {"type": "integration.error", "action": "DELETED", "actor": {"id": "u_1", "name": "Alice"},
         "entity": {"type": "story", "id": "st_9", "name": "Goodbye"}, "outcome": "failure", "description": "Alice deleted story",
         "context": {"request_id": "r-4"}, "created_at": base + 180_000, "metadata": {"label": "e4", "nested": {"flag": false}}}
    ]);
    let receipts = server.ingest(&key, events).await;
    (key, base, receipts)
}

#[tokio::test]
async fn every_operator_on_every_field_kind() {
    let server = TestServer::new();
    let (key, base, receipts) = dataset(&server).await;
    let e2_id = receipts[1]["id"].as_str().unwrap().to_string();
    let at = |offset: i64| encode(&format_millis(base + offset));
    let cases: Vec<(String, &[&str])> = vec![
        ("type=bot.created".into(), &["e1"]),
        ("type=bot.created,integration.error".into(), &["e1", "e4"]),
        ("filter[type][prefix]=bot.".into(), &["e1", "e2"]),
        ("filter[type][ne]=bot.created".into(), &["e2", "e3", "e4"]),
        (
            "filter[type][in]=bot.updated,conversation.message.created".into(),
            &["e2", "e3"],
        ),
        (
            "filter[type][not_in]=bot.updated".into(),
            &["e1", "e3", "e4"],
        ),
        ("filter[type][contains]=MESSAGE".into(), &["e3"]),
        ("filter[type][not_contains]=bot".into(), &["e3", "e4"]),
        ("filter[type][gt]=bot.updated".into(), &["e3", "e4"]),
        ("filter[type][lte]=bot.updated".into(), &["e1", "e2"]),
        ("filter[type][lt]=bot.updated".into(), &["e1"]),
        ("filter[type][gte]=integration.error".into(), &["e4"]),
        ("action=deleted".into(), &["e4"]),
        ("action=UPDATED".into(), &["e2"]),
        ("filter[action][exists]=false".into(), &["e3"]),
        ("actor=u_1".into(), &["e1", "e4"]),
        ("filter[actor.type][eq]=user".into(), &["e1", "e2"]),
        ("filter[actor.name][contains]=ali".into(), &["e1", "e4"]),
        ("entity_type=story".into(), &["e1", "e4"]),
        ("entity_id=c_2".into(), &["e2"]),
        ("filter[entity.id][gt]=st_1".into(), &["e4"]),
        ("filter[entity.id][lt]=st_1".into(), &["e2"]),
        (
            "filter[entity.name][not_contains]=story".into(),
            &["e2", "e3", "e4"],
        ),
        ("filter[entity.name][eq]=Goodbye".into(), &["e4"]),
        ("outcome=failure".into(), &["e2", "e4"]),
        ("bot_id=b1".into(), &["e1", "e3"]),
        (
            "filter[resources.conversation_id][exists]=true".into(),
            &["e3"],
        ),
        ("filter[context.ip][eq]=2.2.2.2".into(), &["e2"]),
        ("filter[context.request_id][exists]=true".into(), &["e4"]),
        ("meta.status=error".into(), &["e2"]),
        ("filter[meta.status][contains]=error".into(), &["e2", "e3"]),
        ("meta[n]=5".into(), &["e1"]),
        ("metadata.n=10".into(), &["e2"]),
        ("filter[metadata.n][gt]=4".into(), &["e1", "e2"]),
        ("filter[metadata.n][lte]=-1.5".into(), &["e3"]),
        ("filter[metadata.n][exists]=false".into(), &["e4"]),
        ("meta.tags=y".into(), &["e1"]),
        ("metadata.nested.flag=false".into(), &["e4"]),
        ("filter[meta.nested][exists]=true".into(), &["e1", "e4"]),
        ("filter[description][contains]=RENAMED".into(), &["e2"]),
        ("filter[description][exists]=false".into(), &["e3"]),
        (format!("q={}", encode("\"the welcome\"")), &["e1"]),
        ("q=alice".into(), &["e1", "e4"]),
        ("q=-alice".into(), &["e2", "e3"]),
        ("filter[seq][gte]=3".into(), &["e3", "e4"]),
        ("filter[seq][in]=1,4".into(), &["e1", "e4"]),
        ("filter[seq][ne]=2".into(), &["e1", "e3", "e4"]),
        (format!("filter[id][eq]={e2_id}"), &["e2"]),
        (format!("filter[id][gt]={e2_id}"), &["e3", "e4"]),
        (
            format!("filter[created_at][gte]={}", at(120_000)),
            &["e3", "e4"],
        ),
        (format!("filter[created_at][lt]={}", at(60_000)), &["e1"]),
        (format!("filter[created_at][eq]={}", base + 60_000), &["e2"]),
        (
            format!("since={}&until={}", at(60_000), at(180_000)),
            &["e2", "e3"],
        ),
        ("since=3h".into(), &["e1", "e2", "e3", "e4"]),
        ("since=now-1h".into(), &[]),
        ("until=now-3h".into(), &[]),
        (
            "filter[received_at][lte]=now".into(),
            &["e1", "e2", "e3", "e4"],
        ),
        ("filter[received_at][lt]=now-1h".into(), &[]),
        (
            format!(
                "q={}",
                encode("action:DELETED entity.type:story -actor.id:system meta.nested.flag:false")
            ),
            &["e4"],
        ),
        (
            format!("q={}", encode("entity.name:\"Welcome story\"")),
            &["e1"],
        ),
        (
            format!("q={}", encode("type:bot.* outcome:failure")),
            &["e2"],
        ),
        (format!("q={}", encode("meta.n:>=5")), &["e1", "e2"]),
        (
            format!(
                "q={}",
                encode(&format!("created_at:>{}", format_millis(base + 60_000)))
            ),
            &["e3", "e4"],
        ),
        (
            format!("q={}", encode("created_at:>now-3h")),
            &["e1", "e2", "e3", "e4"],
        ),
        (format!("q={}", encode("entity.id:*")), &["e1", "e2", "e4"]),
        (
            format!("q={}", encode("bot_id:b1,b2 -type:bot.created")),
            &["e2", "e3"],
        ),
        (
            format!(
                "type=bot.created,bot.updated&q={}",
                encode("outcome:failure")
            ),
            &["e2"],
        ),
    ];
    for (query, expected) in cases {
        let mut got = labels(&server.list_all(&key, &query, 2).await);
        got.sort();
        assert_eq!(got, expected.to_vec(), "query {query}");
    }
}

#[tokio::test]
async fn order_is_created_at_then_seq() {
    let server = TestServer::new();
    let (key, base, _) = dataset(&server).await;
    // Same created_at as e2, later seq: sorts right after e2.
    server
        .ingest(
            &key,
            json!({"type": "late", "created_at": base + 60_000, "metadata": {"label": "e2b"}}),
        )
        .await;
    assert_eq!(
        labels(&server.list_all(&key, "", 2).await),
        ["e4", "e3", "e2b", "e2", "e1"]
    );
    assert_eq!(
        labels(&server.list_all(&key, "order=asc", 2).await),
        ["e1", "e2", "e2b", "e3", "e4"]
    );
    let first = server.get("/v1/events?take=1", &key).await.json();
    assert_eq!(labels(first["items"].as_array().unwrap()), ["e4"]);
}

#[tokio::test]
async fn invalid_filters_say_what_is_accepted() {
    let server = TestServer::new();
    let (key, _, _) = dataset(&server).await;
    let cases = [
        ("colour=red", "accepted parameters"),
        ("filter[colour][eq]=red", "accepted fields"),
        ("filter[type][like]=x", "accepted operators"),
        ("filter[seq][gt]=many", "whole number"),
        ("since=yesterday", "relative time"),
        ("limit=1001", "1 to 1000"),
        ("q=colour:red", "accepted fields"),
        ("q=%22open", "unterminated"),
        ("order=sideways", "asc"),
    ];
    for (query, needle) in cases {
        let reply = server.get(&format!("/v1/events?{query}"), &key).await;
        let error = reply.expect_error(StatusCode::BAD_REQUEST, "invalid_filter");
        assert!(
            error["message"].as_str().unwrap().contains(needle),
            "{query}: {error}"
        );
    }
}

#[tokio::test]
async fn jsonl_and_csv_formats() {
    let server = TestServer::new();
    let (key, _, _) = dataset(&server).await;
    let reply = server.get("/v1/events?format=jsonl&limit=3", &key).await;
    assert_eq!(reply.headers["content-type"], "application/x-ndjson");
    let lines: Vec<Value> = reply
        .text()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(labels(&lines[..3]), ["e4", "e3", "e2"]);
    assert_eq!(lines[3]["has_more"], true);
    assert!(lines[3]["next_cursor"].is_string());
    let next = server
        .get(
            &format!(
                "/v1/events?format=jsonl&limit=3&cursor={}",
                lines[3]["next_cursor"].as_str().unwrap()
            ),
            &key,
        )
        .await;
    let rest: Vec<Value> = next
        .text()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(labels(&rest[..1]), ["e1"]);
    assert_eq!(rest[1], json!({"next_cursor": null, "has_more": false}));

    let accept = server
        .send(
            Method::GET,
            "/v1/events?limit=1",
            Some(&key),
            &[("accept", "application/x-ndjson")],
            "",
        )
        .await;
    assert_eq!(accept.text().lines().count(), 2);

    let csv = server.get("/v1/events?format=csv&order=asc", &key).await;
    assert!(csv.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = csv.text();
    let rows: Vec<&str> = text.split("\r\n").filter(|row| !row.is_empty()).collect();
    assert_eq!(rows.len(), 5);
    assert!(rows[0].starts_with("id,seq,tenant,type,created_at"));
    assert!(
        rows[1].contains(",bot.created,") && rows[1].contains("\"{\"\"bot_id\"\":\"\"b1\"\"}\""),
        "{}",
        rows[1]
    );
    assert!(
        rows[2].contains(",Bob renamed the pricing card,"),
        "{}",
        rows[2]
    );
}
