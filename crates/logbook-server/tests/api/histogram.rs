//! `GET /v1/events/histogram`: counts per bucket, grouping with top N and "other", filters, errors, isolation.

use crate::support::*;
use axum::http::StatusCode;
use logbook_core::time::{format_millis, now_millis};
use serde_json::{json, Value};

const HOUR: i64 = 3_600_000;

async fn dataset(server: &TestServer) -> (String, i64) {
    let key = server.tenant("acme", &["ingest", "read"]).await;
    let base = (now_millis() - 5 * HOUR) / HOUR * HOUR;
    server
        .ingest(&key, json!([
            {"action": "CREATED", "entity": {"type": "story"}, "actor": "u_1", "created_at": base + 600_000, "metadata": {"tags": ["a", "b"]}},
            {"action": "UPDATED", "entity": {"type": "story"}, "actor": "u_2", "created_at": base + 1_200_000, "description": "Bob renamed it", "metadata": {"tags": ["a"]}},
            {"action": "DELETED", "entity": {"type": "card"}, "actor": "u_1", "created_at": base + 4_200_000, "outcome": "failure"},
            {"action": "CREATED", "entity": {"type": "card"}, "actor": "u_1", "created_at": base + 7_800_000, "metadata": {"tags": ["b"], "n": 5}},
            {"type": "outside.window", "created_at": base + 4 * HOUR}
        ]))
        .await;
    (key, base)
}

fn counts(body: &Value) -> Vec<u64> {
    body["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|bucket| bucket["count"].as_u64().unwrap())
        .collect()
}

/// Each group's count summed over every bucket.
fn group_totals(body: &Value) -> Value {
    let mut totals = serde_json::Map::new();
    for bucket in body["buckets"].as_array().unwrap() {
        for (name, count) in bucket["groups"].as_object().unwrap() {
            let sum =
                totals.get(name).and_then(Value::as_u64).unwrap_or(0) + count.as_u64().unwrap();
            totals.insert(name.clone(), json!(sum));
        }
    }
    Value::Object(totals)
}

fn window(base: i64) -> String {
    format!(
        "since={}&until={}",
        encode(&format_millis(base)),
        encode(&format_millis(base + 3 * HOUR))
    )
}

#[tokio::test]
async fn counts_per_bucket_with_filters() {
    let server = TestServer::new();
    let (key, base) = dataset(&server).await;
    let all = server
        .get(
            &format!("/v1/events/histogram?interval=1h&{}", window(base)),
            &key,
        )
        .await
        .json();
    assert_eq!(counts(&all), [2, 1, 1]);
    assert_eq!(all["total"], 4);
    assert_eq!(all["buckets"][0]["start"], format_millis(base));
    assert_eq!(all["buckets"][1]["start"], format_millis(base + HOUR));
    assert_eq!(all["group_by"], Value::Null);
    let filtered = server
        .get(
            &format!(
                "/v1/events/histogram?interval=1h&{}&actor=u_1",
                window(base)
            ),
            &key,
        )
        .await
        .json();
    assert_eq!(counts(&filtered), [1, 1, 1]);
    let text = server
        .get(
            &format!(
                "/v1/events/histogram?interval=1h&{}&q=renamed",
                window(base)
            ),
            &key,
        )
        .await
        .json();
    assert_eq!(
        counts(&text),
        [1, 0, 0],
        "inexact filters are evaluated on the events"
    );
    let minutes = server
        .get(
            &format!("/v1/events/histogram?interval=30m&{}", window(base)),
            &key,
        )
        .await
        .json();
    assert_eq!(counts(&minutes), [2, 0, 1, 0, 1, 0]);
    let default_window = server
        .get("/v1/events/histogram?interval=1h", &key)
        .await
        .json();
    assert_eq!(
        default_window["buckets"].as_array().unwrap().len(),
        101,
        "100 intervals before now, aligned"
    );
    assert_eq!(default_window["total"], 5);
}

#[tokio::test]
async fn groups_with_top_n_and_other() {
    let server = TestServer::new();
    let (key, base) = dataset(&server).await;
    let by_action = server
        .get(
            &format!(
                "/v1/events/histogram?interval=1h&{}&group_by=action&top=1",
                window(base)
            ),
            &key,
        )
        .await
        .json();
    assert_eq!(by_action["groups"], json!(["CREATED", "other"]));
    let groups: Vec<Value> = by_action["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["groups"].clone())
        .collect();
    assert_eq!(
        groups,
        [
            json!({"CREATED": 1, "other": 1}),
            json!({"other": 1}),
            json!({"CREATED": 1})
        ]
    );
    let by_tag = server
        .get(
            &format!(
                "/v1/events/histogram?interval=3h&{}&group_by=metadata.tags",
                window(base)
            ),
            &key,
        )
        .await
        .json();
    assert_eq!(
        by_tag["groups"],
        json!(["a", "b", "other"]),
        "ties are ordered by name; events without tags are other"
    );
    // 3h buckets are aligned to UTC multiples of 3h, so the window spans two of them.
    assert_eq!(group_totals(&by_tag), json!({"a": 2, "b": 2, "other": 1}));
    let by_type = server
        .get(
            &format!(
                "/v1/events/histogram?interval=3h&{}&group_by=entity.type&outcome=success",
                window(base)
            ),
            &key,
        )
        .await
        .json();
    assert_eq!(by_type["groups"], json!(["story", "card", "other"]));
    assert_eq!(
        group_totals(&by_type),
        json!({"story": 2, "card": 1}),
        "a group without events is not listed in any bucket"
    );
}

#[tokio::test]
async fn invalid_parameters_and_isolation() {
    let server = TestServer::new();
    let (key, base) = dataset(&server).await;
    for (query, needle) in [
        ("interval=10ms", "at least 1s"),
        ("interval=1s&since=30d", "more than 10000 buckets"),
        ("interval=1h&group_by=created_at", "cannot group by"),
        ("interval=1h&group_by=colour", "accepted fields"),
        ("interval=1h&top=0", "1 to 1000"),
        ("interval=1h&top=1001", "1 to 1000"),
        ("interval=1h&since=now&until=1h", "before"),
        ("interval=1h&filter[type][like]=x", "accepted operators"),
    ] {
        let error = server
            .get(&format!("/v1/events/histogram?{query}"), &key)
            .await
            .expect_error(StatusCode::BAD_REQUEST, "invalid_filter");
        assert!(
            error["message"].as_str().unwrap().contains(needle),
            "{query}: {error}"
        );
    }
    let other = server.tenant("globex", &["read"]).await;
    let theirs = server
        .get(
            &format!("/v1/events/histogram?interval=1h&{}", window(base)),
            &other,
        )
        .await
        .json();
    assert_eq!(theirs["total"], 0);
    server
        .get("/v1/events/histogram?interval=1h&tenant=acme", &other)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden");
}
