//! Behaviour of the embedded engine through the `EventStore` trait: durability across reopen, read-your-writes,
//! idempotency, and a model-based property test that every filter returns exactly what the reference evaluator
//! selects, in order, across pages and reopens.

use logbook_core::event::{Event, Limits, NewEvent};
use logbook_core::filter::query_string::{Order, RawQuery};
use logbook_core::filter::Field;
use logbook_core::time::now_millis;
use logbook_store::{
    AppendRequest, EmbeddedStore, EventStore, HistogramRequest, IdempotencyKey, Position,
    StoreError, StoreOptions,
};
use proptest::prelude::*;
use serde_json::{json, Value};

fn new_event(value: Value) -> NewEvent {
    let bytes = value.to_string().len();
    NewEvent::from_json(value, bytes, &Limits::default(), now_millis()).expect("valid test event")
}

fn open(dir: &std::path::Path) -> EmbeddedStore {
    let mut options = StoreOptions::new(dir);
    options.segment_bytes = 4096; // many segments, to exercise rolling
    options.cache_bytes = 4096;
    EmbeddedStore::open(options).expect("store opens")
}

fn append(store: &EmbeddedStore, tenant: &str, events: Vec<Value>) -> Vec<logbook_store::Receipt> {
    let request = AppendRequest {
        events: events
            .into_iter()
            .map(|e| (tenant.to_string(), new_event(e)))
            .collect(),
        idempotency: None,
    };
    store.append(request).expect("append").receipts
}

/// Every event of a listing, following cursors.
fn list_all(store: &EmbeddedStore, tenant: &str, query: &str, limit: usize) -> Vec<Event> {
    let mut query = RawQuery::parse(query)
        .to_list_query(now_millis())
        .expect("query parses");
    query.limit = limit;
    let mut after: Option<Position> = None;
    let mut out = Vec::new();
    loop {
        let page = store.list(tenant, &query, after).expect("list");
        assert!(page.items.len() <= limit);
        out.extend(
            page.items
                .iter()
                .map(|item| item.parse().expect("stored JSON parses")),
        );
        match page.next {
            Some(next) => after = Some(next),
            None => return out,
        }
    }
}

#[test]
fn events_survive_reopen_and_seq_continues() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_tenant("acme", "Acme").unwrap();
    let first = append(
        &store,
        "acme",
        (0..50)
            .map(|i| json!({"type": "a", "metadata": {"i": i}}))
            .collect(),
    );
    assert_eq!(
        first.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=50).collect::<Vec<_>>()
    );
    let fetched = store
        .get("acme", &first[7].id)
        .unwrap()
        .expect("read your writes");
    assert_eq!(fetched.metadata, Some(json!({"i": 7})));
    assert_eq!(fetched.hash, first[7].hash);
    // An id of the same millisecond that was never assigned is not found.
    let mut unknown = first[7].id.clone();
    let last = unknown.pop().unwrap();
    unknown.push(if last == '0' { '1' } else { '0' });
    assert!(store.get("acme", &unknown).unwrap().is_none());
    drop(store);

    let store = open(dir.path());
    let again = store.get("acme", &first[7].id).unwrap().expect("durable");
    assert_eq!(again, fetched);
    assert_eq!(
        again.hash,
        again.compute_hash(),
        "the hash still matches the content"
    );
    let next = append(&store, "acme", vec![json!({"type": "b"})]);
    assert_eq!(next[0].seq, 51);
    assert_eq!(list_all(&store, "acme", "", 7).len(), 51);
}

/// 17 events of 250 metadata keys each: 4,250 JSON fields, past the tenant's limit of 4,096 indexed ones.
fn wide_events() -> Vec<Value> {
    (0..17)
        .map(|event| {
            let metadata: serde_json::Map<String, Value> = (0..250)
                .map(|key| (format!("k{event}_{key}"), json!(key)))
                .collect();
            json!({"type": "wide", "metadata": metadata})
        })
        .collect()
}

/// Past the per-tenant limit of indexed JSON fields (4,096), a new path is left to the evaluator, and so is a
/// path below it, which is never marked itself.
#[test]
fn paths_beyond_the_field_limit_are_still_found() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_tenant("acme", "Acme").unwrap();
    append(&store, "acme", wide_events());
    append(
        &store,
        "acme",
        vec![json!({"type": "late", "metadata": {"deep": {"x": 1}}, "context": {"new_key": "v"}})],
    );
    for query in [
        "q=meta.deep.x:1",
        "q=meta.deep:*",
        "q=meta.deep.x:*",
        "q=context.new_key:v",
    ] {
        let found = list_all(&store, "acme", query, 10);
        assert_eq!(found.len(), 1, "{query}");
        assert_eq!(found[0].event_type, "late", "{query}");
    }
    assert_eq!(list_all(&store, "acme", "q=meta.k0_7:7", 10).len(), 1);
}

#[test]
fn tenants_are_isolated_in_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_tenant("acme", "Acme").unwrap();
    store.create_tenant("globex", "Globex").unwrap();
    let acme = append(&store, "acme", vec![json!({"type": "secret"})]);
    append(&store, "globex", vec![json!({"type": "public"})]);
    assert!(store.get("globex", &acme[0].id).unwrap().is_none());
    let globex_events = list_all(&store, "globex", "", 10);
    assert_eq!(globex_events.len(), 1);
    assert_eq!(globex_events[0].event_type, "public");
    assert_eq!(globex_events[0].seq, 1, "seq is per tenant");
}

#[test]
fn unknown_tenant_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_tenant("acme", "Acme").unwrap();
    let request = AppendRequest {
        events: vec![
            ("acme".into(), new_event(json!({"type": "a"}))),
            ("nobody".into(), new_event(json!({"type": "a"}))),
        ],
        idempotency: None,
    };
    assert!(matches!(
        store.append(request),
        Err(StoreError::NotFound(_))
    ));
    assert!(list_all(&store, "acme", "", 10).is_empty());
}

#[test]
fn idempotency_keys_replay_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_tenant("acme", "Acme").unwrap();
    let key = |fingerprint: &str| {
        Some(IdempotencyKey {
            scope: "acme".into(),
            key: "k1".into(),
            fingerprint: fingerprint.into(),
        })
    };
    let request = |fingerprint: &str| AppendRequest {
        events: vec![("acme".into(), new_event(json!({"type": "a"})))],
        idempotency: key(fingerprint),
    };
    let first = store.append(request("f1")).unwrap();
    assert!(!first.replayed);
    let second = store.append(request("f1")).unwrap();
    assert!(second.replayed);
    assert_eq!(second.receipts, first.receipts);
    assert!(matches!(
        store.append(request("other body")),
        Err(StoreError::Conflict(_))
    ));

    let per_event = || AppendRequest {
        events: vec![
            (
                "acme".into(),
                new_event(json!({"type": "b", "idempotency_key": "e1"})),
            ),
            (
                "acme".into(),
                new_event(json!({"type": "b", "idempotency_key": "e1"})),
            ),
        ],
        idempotency: None,
    };
    let receipts = store.append(per_event()).unwrap().receipts;
    assert_eq!(
        receipts[0], receipts[1],
        "a repeated key within one request stores once"
    );
    drop(store);

    let store = open(dir.path());
    assert_eq!(
        store.append(request("f1")).unwrap().receipts,
        first.receipts
    );
    assert_eq!(store.append(per_event()).unwrap().receipts[0], receipts[0]);
    assert_eq!(
        list_all(&store, "acme", "", 100).len(),
        2,
        "one event per key, nothing new after reopen"
    );
}

#[test]
fn concurrent_appends_get_dense_unique_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(open(dir.path()));
    store.create_tenant("acme", "Acme").unwrap();
    let threads: Vec<_> = (0..8)
        .map(|thread| {
            let store = store.clone();
            std::thread::spawn(move || {
                (0..50)
                    .flat_map(|i| {
                        append(
                            &store,
                            "acme",
                            vec![json!({"type": "t", "metadata": {"thread": thread, "i": i}})],
                        )
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .map(|r| r.seq)
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=400).collect::<Vec<_>>());
}

// ---- model-based property test ----

fn arbitrary_event() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec!["bot.created", "bot.updated", "conversation.message.created", "integration.error"]),
        prop::option::of(prop::sample::select(vec!["CREATED", "UPDATED", "DELETED", "LOGIN"])),
        prop::option::of(prop::sample::select(vec!["u_1", "u_2", "system"])),
        prop::option::of((prop::sample::select(vec!["story", "card"]), prop::sample::select(vec!["st_1", "st_2", "c_9"]), prop::sample::select(vec!["Welcome", "Pricing FAQ", "Hello"]))),
        prop::option::of(prop::sample::select(vec!["b1", "b2", "b3"])),
        (0i64..4, prop::option::of(-3i64..6), prop::sample::select(vec!["ok", "error", "Error"]), prop::collection::vec(prop::sample::select(vec!["x", "y", "z"]), 0..3)),
        prop::bool::ANY,
        prop::option::of(prop::sample::select(vec!["Alice renamed the welcome story", "Bob deleted a card", "system retried"])),
        prop::bool::ANY,
    )
        .prop_map(|(event_type, action, actor, entity, bot, (minute, number, status, tags), failed, description, dotted)| {
            let mut event = json!({"type": event_type, "created_at": 1_795_341_600_000i64 + minute * 60_000, "outcome": if failed { "failure" } else { "success" }});
            if let Some(action) = action { event["action"] = json!(action); }
            if let Some(actor) = actor { event["actor"] = json!(actor); }
            if let Some((entity_type, id, name)) = entity { event["entity"] = json!({"type": entity_type, "id": id, "name": name}); }
            if let Some(bot) = bot { event["resources"] = json!({"bot_id": bot}); }
            if let Some(description) = description { event["description"] = json!(description); }
            let mut metadata = json!({"status": status, "tags": tags, "nested": {"deep": {"flag": failed}}});
            if let Some(number) = number { metadata["n"] = json!(number); }
            // A key with a dot is not the nested path it spells: `meta.nested.deep.flag` must not match it.
            if dotted { metadata["nested.deep"] = json!({"flag": !failed}); }
            event["metadata"] = metadata;
            event
        })
}

fn arbitrary_term() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "type:bot.*",
        "type:bot.created,integration.error",
        "action:deleted",
        "actor.id:u_1",
        "-actor.id:system",
        "actor:*",
        "entity.type:story",
        "entity.name:*",
        "entity.id:>st_1",
        "entity.id:<=c_9",
        "bot_id:b2",
        "resources.bot_id:b1,b3",
        "outcome:failure",
        "meta.status:error",
        "meta.status:Error",
        "meta.n:>2",
        "meta.n:<=0",
        "meta.n:*",
        "-meta.n:*",
        "meta.tags:x",
        "meta.nested.deep.flag:true",
        "meta.nested.deep:*",
        "seq:>5",
        "seq:<=3",
        "created_at:>=2026-11-22T10:02:00Z",
        "created_at:<2026-11-22T10:01:00Z",
        "\"welcome story\"",
        "renamed",
        "-\"card\"",
        "description:*",
        "meta.status:>f",
        "entity.name:Welcome",
        "-entity.name:Hello",
        "meta.tags:*",
        "id:*",
    ])
    .prop_map(str::to_string)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn listings_match_the_reference_evaluator(
        batches in prop::collection::vec(prop::collection::vec(arbitrary_event(), 1..8), 1..8),
        queries in prop::collection::vec((prop::collection::vec(arbitrary_term(), 0..3), prop::bool::ANY, 1usize..7), 4),
        reopen_after in 0usize..8,
        compact_after in 0usize..8,
        damage in 0u8..3,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        store.create_tenant("acme", "Acme").unwrap();
        let mut model: Vec<Event> = Vec::new();
        for (batch_index, batch) in batches.into_iter().enumerate() {
            if batch_index == compact_after {
                // The field index of compacted segments is then read from their index files.
                store.compact().unwrap();
            }
            if batch_index == reopen_after {
                drop(store);
                // Lost or torn index files are written again at open.
                for name in files(&dir.path().join("blocks"), ".idx") {
                    let path = dir.path().join("blocks").join(name);
                    match damage {
                        1 => std::fs::remove_file(&path).unwrap(),
                        2 => {
                            let bytes = std::fs::read(&path).unwrap();
                            std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
                        }
                        _ => {}
                    }
                }
                store = open(dir.path());
            }
            let receipts = append(&store, "acme", batch);
            for receipt in receipts {
                model.push(store.get("acme", &receipt.id).unwrap().expect("read your writes"));
            }
        }
        for (terms, ascending, limit) in queries {
            let q = terms.join(" ");
            let order = if ascending { "asc" } else { "desc" };
            let query_string = format!("q={}&order={order}", q.replace(' ', "+").replace('"', "%22").replace(':', "%3A").replace('>', "%3E").replace('<', "%3C").replace('=', "%3D").replace(',', "%2C"));
            let parsed = RawQuery::parse(&query_string).to_list_query(now_millis()).unwrap();
            let mut expected: Vec<&Event> = model.iter().filter(|event| parsed.filter.matches(event)).collect();
            expected.sort_by_key(|event| (event.created_at, event.seq));
            if parsed.order == Order::Desc {
                expected.reverse();
            }
            let got = list_all(&store, "acme", &query_string, limit);
            let got_seqs: Vec<u64> = got.iter().map(|e| e.seq).collect();
            let expected_seqs: Vec<u64> = expected.iter().map(|e| e.seq).collect();
            prop_assert_eq!(got_seqs, expected_seqs, "query {}", q);
        }
    }
}

/// The values an event is grouped under by `group_by` (the fields the histogram test groups by).
fn group_values(event: &Event, field: &str) -> Vec<String> {
    match field {
        "type" => vec![event.event_type.clone()],
        "actor.id" => event.actor.iter().map(|actor| actor.id.clone()).collect(),
        "action" => event.action.iter().cloned().collect(),
        "outcome" => vec![event.outcome.as_str().to_string()],
        "entity.type" => event
            .entity
            .iter()
            .map(|entity| entity.entity_type.clone())
            .collect(),
        "metadata.tags" => event
            .metadata
            .as_ref()
            .and_then(|metadata| metadata["tags"].as_array())
            .map(|tags| {
                let mut tags: Vec<String> = tags
                    .iter()
                    .map(|tag| tag.as_str().unwrap().to_string())
                    .collect();
                tags.sort();
                tags.dedup();
                tags
            })
            .unwrap_or_default(),
        other => panic!("no reference for {other}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// Histograms (whole-hour buckets: without a filter added up from the hourly counts, with one counted from
    /// hour sets; sub-hour buckets: counted event by event) agree with counting the reference evaluator's
    /// matches, for windows that start and end inside hours.
    #[test]
    fn histograms_match_the_reference_count(
        events in prop::collection::vec((arbitrary_event(), 1i64..120, -1i64..=1), 1..60),
        terms in prop::collection::vec(arbitrary_term(), 0..2),
        interval_minutes in prop::sample::select(vec![30i64, 60, 180, 1440]),
        window in (0i64..100, 1i64..160),
        group_by in prop::sample::select(vec!["", "type", "action", "outcome", "entity.type", "actor.id", "metadata.tags"]),
        top in 1usize..4,
        compact_after in 0usize..9,
    ) {
        const BASE: i64 = 1_795_341_600_000;
        const QUARTER: i64 = 15 * 60_000;
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.create_tenant("acme", "Acme").unwrap();
        let events: Vec<Value> = events
            .into_iter()
            .map(|(mut event, quarter, nudge)| {
                // On quarter hours or a millisecond either side, so that events sit on the window's edges.
                event["created_at"] = json!(BASE + quarter * QUARTER + nudge);
                event
            })
            .collect();
        let mut model: Vec<Event> = Vec::new();
        for (number, chunk) in events.chunks(7).enumerate() {
            if number == compact_after {
                store.compact().unwrap();
            }
            for receipt in append(&store, "acme", chunk.to_vec()) {
                model.push(store.get("acme", &receipt.id).unwrap().expect("read your writes"));
            }
        }
        let q = terms.join(" ");
        let query_string = format!("q={}", q.replace(' ', "+").replace('"', "%22").replace(':', "%3A").replace('>', "%3E").replace('<', "%3C").replace('=', "%3D").replace(',', "%2C"));
        let query = RawQuery::parse(&query_string).to_list_query(now_millis()).unwrap();
        let interval = interval_minutes * 60_000;
        let start = BASE + window.0 * QUARTER;
        let end = start + window.1 * QUARTER;
        let request = HistogramRequest {
            interval_ms: interval,
            start,
            end,
            group_by: (!group_by.is_empty()).then(|| Field::parse(group_by).unwrap()),
            top,
        };
        let got = store.histogram("acme", &query, &request).unwrap();

        let first = start.div_euclid(interval) * interval;
        let matching: Vec<&Event> = model
            .iter()
            .filter(|event| (start..end).contains(&event.created_at) && query.filter.matches(event))
            .collect();
        let bucket_of = |event: &Event| ((event.created_at - first) / interval) as usize;
        let bucket_count = ((end - first) + interval - 1) / interval;
        let mut counts = vec![0u64; bucket_count as usize];
        for event in &matching {
            counts[bucket_of(event)] += 1;
        }
        prop_assert_eq!(got.buckets.iter().map(|b| b.start).collect::<Vec<_>>(), (0..bucket_count).map(|i| first + i * interval).collect::<Vec<_>>());
        prop_assert_eq!(got.buckets.iter().map(|b| b.count).collect::<Vec<_>>(), counts, "query {}", q);
        if group_by.is_empty() {
            prop_assert!(got.groups.is_empty());
            return Ok(());
        }
        let mut totals: std::collections::BTreeMap<String, u64> = Default::default();
        for event in &matching {
            for value in group_values(event, group_by) {
                *totals.entry(value).or_default() += 1;
            }
        }
        let mut ranked: Vec<(String, u64)> = totals.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        ranked.truncate(top);
        let mut groups: Vec<String> = ranked.into_iter().map(|(name, _)| name).collect();
        groups.push("other".into());
        prop_assert_eq!(&got.groups, &groups, "query {}", q);
        let mut table = vec![vec![0u64; groups.len()]; bucket_count as usize];
        for event in &matching {
            let values = group_values(event, group_by);
            let mut named = false;
            for (position, group) in groups[..groups.len() - 1].iter().enumerate() {
                if values.contains(group) {
                    table[bucket_of(event)][position] += 1;
                    named = true;
                }
            }
            if !named {
                table[bucket_of(event)][groups.len() - 1] += 1;
            }
        }
        prop_assert_eq!(got.buckets.iter().map(|b| b.groups.clone()).collect::<Vec<_>>(), table, "query {}", q);
    }
}

/// Each tenant's whole listing as JSON text, oldest first, plus a filtered listing.
fn snapshot(store: &EmbeddedStore, tenants: &[&str]) -> Vec<Vec<String>> {
    tenants
        .iter()
        .flat_map(|tenant| {
            [
                list_all(store, tenant, "order=asc", 7),
                list_all(store, tenant, "type=mixed.even&order=asc", 1000),
            ]
        })
        .map(|events| {
            events
                .iter()
                .map(|e| serde_json::to_string(e).unwrap())
                .collect()
        })
        .collect()
}

fn files(dir: &std::path::Path, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| name.ends_with(suffix))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A store with small segments that compacts only when told to.
/// The segments the index files in `blocks` cover (`N.idx` one, `F-L.idx` those from F to L), in order, with
/// a segment covered twice listed twice.
fn indexed_segments(blocks: &std::path::Path) -> Vec<u32> {
    let mut segments: Vec<u32> = files(blocks, ".idx")
        .iter()
        .flat_map(|name| {
            let stem = name.strip_suffix(".idx").unwrap();
            let (first, last) = stem.split_once('-').unwrap_or((stem, stem));
            first.parse::<u32>().unwrap()..=last.parse::<u32>().unwrap()
        })
        .collect();
    segments.sort_unstable();
    segments
}

fn block_segments(blocks: &std::path::Path) -> Vec<u32> {
    files(blocks, ".blk")
        .iter()
        .map(|name| name.strip_suffix(".blk").unwrap().parse().unwrap())
        .collect()
}

/// Options for a store in `dir` with segments of `segment_bytes`, compacted only when a test calls `compact()`.
fn on_demand(dir: &std::path::Path, segment_bytes: u64) -> StoreOptions {
    let mut options = StoreOptions::new(dir);
    options.segment_bytes = segment_bytes;
    options.background_compaction = false;
    options
}

fn open_compacting_on_demand(dir: &std::path::Path) -> Result<EmbeddedStore, StoreError> {
    let mut options = on_demand(dir, 4096);
    options.cache_bytes = 4096;
    EmbeddedStore::open(options)
}

#[test]
fn compaction_keeps_every_event_and_key_and_survives_crashes_between_its_steps() {
    let dir = tempfile::tempdir().unwrap();
    let open_manual = || open_compacting_on_demand(dir.path()).expect("store opens");
    let tenants = ["a", "b", "c"];
    let store = open_manual();
    for tenant in tenants {
        store.create_tenant(tenant, tenant).unwrap();
    }
    // Requests mix tenants, as the deployment admin's do; every one has a request-level key.
    let request = |round: usize| AppendRequest {
        events: (0..1 + round % 4)
            .map(|i| {
                (
                    tenants[(round + i) % 3].to_string(),
                    new_event(json!({
                        "type": if i % 2 == 0 { "mixed.even" } else { "mixed.odd" },
                        "idempotency_key": format!("e{round}-{i}"),
                        "metadata": {"round": round, "pad": "x".repeat(50 * (round % 5))},
                    })),
                )
            })
            .collect(),
        idempotency: Some(IdempotencyKey {
            scope: "admin".into(),
            key: format!("r{round}"),
            fingerprint: format!("f{round}"),
        }),
    };
    let receipts: Vec<_> = (0..80)
        .map(|round| store.append(request(round)).unwrap().receipts)
        .collect();
    let before = snapshot(&store, &tenants);
    let wal_dir = dir.path().join("wal");
    let blocks_dir = dir.path().join("blocks");
    let segments = files(&wal_dir, ".wal");
    assert!(segments.len() > 4, "{segments:?}");
    let saved_segment = std::fs::read(wal_dir.join(&segments[1])).unwrap();

    let compacted = store.compact().unwrap();
    assert_eq!(compacted, segments.len() - 1, "all but the open segment");
    assert_eq!(files(&wal_dir, ".wal"), segments[segments.len() - 1..]);
    assert_eq!(files(&blocks_dir, ".blk").len(), compacted);
    assert_eq!(
        indexed_segments(&blocks_dir),
        block_segments(&blocks_dir),
        "index files cover every block file once"
    );
    let indexes = files(&blocks_dir, ".idx");
    assert!(indexes[0].contains('-'), "index files merged: {indexes:?}");
    assert_eq!(
        snapshot(&store, &tenants),
        before,
        "same events after compaction"
    );
    assert_eq!(store.compact().unwrap(), 0, "nothing left to compact");
    // Keys of compacted requests and events still replay.
    let replay = store.append(request(3)).unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.receipts, receipts[3]);
    drop(store);

    // A crash after the block file was made durable but before its segment was removed...
    std::fs::write(wal_dir.join(&segments[1]), &saved_segment).unwrap();
    // ... and one in the middle of writing the next block file.
    let open_segment = &segments[segments.len() - 1];
    let torn_block = blocks_dir.join(open_segment.replace(".wal", ".blk"));
    std::fs::write(&torn_block, b"LOGBOOKB\x01\x00\x00\x00").unwrap();
    let stray_index = blocks_dir.join(open_segment.replace(".wal", ".idx"));
    std::fs::write(&stray_index, b"LOGBOOKI").unwrap();
    // Index files lost (a merged one), torn and damaged are written again from the block files.
    std::fs::remove_file(blocks_dir.join(&indexes[0])).unwrap();
    let singles: Vec<&String> = indexes.iter().filter(|name| !name.contains('-')).collect();
    let torn_index = blocks_dir.join(singles[0]);
    let whole = std::fs::read(&torn_index).unwrap();
    std::fs::write(&torn_index, &whole[..whole.len() / 2]).unwrap();
    let damaged_index = blocks_dir.join(singles[1]);
    let mut bytes = std::fs::read(&damaged_index).unwrap();
    bytes[20] ^= 0x55;
    std::fs::write(&damaged_index, &bytes).unwrap();
    let store = open_manual();
    assert!(
        !stray_index.exists(),
        "an index file without its block file is removed"
    );
    assert_eq!(
        indexed_segments(&blocks_dir),
        block_segments(&blocks_dir),
        "missing and damaged index files are written again"
    );
    assert_eq!(
        std::fs::read(&torn_index).unwrap(),
        whole,
        "written again the same"
    );
    assert_ne!(std::fs::read(&damaged_index).unwrap(), bytes);
    assert_eq!(
        files(&wal_dir, ".wal"),
        segments[segments.len() - 1..],
        "the replaced segment is removed"
    );
    assert!(!torn_block.exists(), "the torn block file is removed");
    assert_eq!(
        snapshot(&store, &tenants),
        before,
        "same events after reopen"
    );
    let replay = store.append(request(5)).unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.receipts, receipts[5]);
    // Per-event keys too: a new request repeating an old event's key gets the old receipt.
    let repeat = AppendRequest {
        events: vec![(
            "a".to_string(),
            new_event(json!({"type": "mixed.even", "idempotency_key": "e0-0"})),
        )],
        idempotency: None,
    };
    assert_eq!(store.append(repeat).unwrap().receipts[0], receipts[0][0]);

    // New events after compaction continue each tenant's seqs, and compact again.
    let later = store.append(request(80)).unwrap();
    assert!(!later.replayed);
    for _ in 0..30 {
        append(
            &store,
            "b",
            vec![json!({"type": "later", "metadata": {"pad": "y".repeat(200)}})],
        );
    }
    assert!(store.compact().unwrap() > 0);
    drop(store);
    let store = open_manual();
    for tenant in tenants {
        let seqs: Vec<u64> = list_all(&store, tenant, "order=asc", 1000)
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "tenant {tenant}"
        );
    }
    assert!(
        snapshot(&store, &tenants)
            .iter()
            .zip(&before)
            .all(|(now, then)| now.starts_with(then)),
        "earlier events unchanged"
    );
}

#[test]
fn a_block_file_that_is_damaged_without_its_segment_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let open_manual = || open_compacting_on_demand(dir.path());
    let store = open_manual().unwrap();
    store.create_tenant("acme", "Acme").unwrap();
    for round in 0..40 {
        append(
            &store,
            "acme",
            vec![json!({"type": "t", "metadata": {"pad": "z".repeat(100), "round": round}})],
        );
    }
    assert!(store.compact().unwrap() > 0);
    drop(store);
    let block = dir.path().join("blocks").join("00000001.blk");
    let mut bytes = std::fs::read(&block).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&block, &bytes).unwrap();
    let error = open_manual()
        .err()
        .expect("a damaged block file stops the open");
    let message = error.to_string();
    assert!(message.contains("00000001.blk"), "{message}");
}

#[test]
fn a_large_group_over_many_tenants_is_indexed_in_parallel_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let tenants = ["p1", "p2", "p3", "p4", "p5"];
    for tenant in tenants {
        store.create_tenant(tenant, tenant).unwrap();
    }
    // One request of 3,000 events (above the parallel threshold), tenants of unequal sizes.
    let events: Vec<(String, NewEvent)> = (0..3000)
        .map(|i| {
            let tenant = tenants[i % 11 % 5];
            (
                tenant.to_string(),
                new_event(json!({"type": format!("kind.{}", i % 3), "metadata": {"i": i}})),
            )
        })
        .collect();
    let expected: Vec<(String, u64)> = events
        .iter()
        .map(|(tenant, event)| {
            (
                tenant.clone(),
                event.metadata.as_ref().unwrap()["i"].as_u64().unwrap(),
            )
        })
        .collect();
    let receipts = store
        .append(AppendRequest {
            events,
            idempotency: None,
        })
        .unwrap()
        .receipts;
    assert_eq!(receipts.len(), 3000);
    for tenant in tenants {
        let stored = list_all(&store, tenant, "order=asc", 500);
        let wanted: Vec<u64> = expected
            .iter()
            .filter(|(t, _)| t == tenant)
            .map(|(_, i)| *i)
            .collect();
        let seqs: Vec<u64> = stored.iter().map(|e| e.seq).collect();
        assert_eq!(
            seqs,
            (1..=wanted.len() as u64).collect::<Vec<_>>(),
            "{tenant}"
        );
        let order: Vec<u64> = stored
            .iter()
            .map(|e| e.metadata.as_ref().unwrap()["i"].as_u64().unwrap())
            .collect();
        assert_eq!(order, wanted, "{tenant}: request order");
        // The index agrees with the events: a term filter returns exactly the matching ones.
        let of_kind: Vec<u64> = list_all(&store, tenant, "type=kind.1&order=asc", 100)
            .iter()
            .map(|e| e.metadata.as_ref().unwrap()["i"].as_u64().unwrap())
            .collect();
        let wanted_kind: Vec<u64> = wanted.iter().copied().filter(|i| i % 3 == 1).collect();
        assert_eq!(of_kind, wanted_kind, "{tenant}: type filter");
        let by_id = store
            .get(tenant, &stored[0].id)
            .unwrap()
            .expect("get by id");
        assert_eq!(by_id.seq, 1);
    }
}

#[test]
fn the_cross_tenant_listing_matches_a_full_sort_for_every_page_size() {
    use rand::{Rng, SeedableRng};
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let base = 1_700_000_000_000i64;
    // Tenants of different sizes and time spans: some wholly older or newer than others, many equal times.
    let spans = [
        (0, 40),
        (30, 60),
        (0, 5),
        (55, 60),
        (10, 20),
        (0, 60),
        (59, 60),
    ];
    let mut reference: Vec<(i64, String, u64, bool)> = Vec::new();
    for (number, (from, to)) in spans.iter().enumerate() {
        let tenant = format!("m{number}");
        store.create_tenant(&tenant, &tenant).unwrap();
        let count = 1 + number * 7 % 23;
        let events: Vec<Value> = (0..count)
            .map(|_| {
                let minute = rng.random_range(*from..*to);
                let tagged = rng.random_bool(0.5);
                json!({"type": "x", "created_at": base + minute * 60_000, "metadata": {"tagged": tagged}})
            })
            .collect();
        for (seq, event) in append(&store, &tenant, events.clone())
            .iter()
            .map(|r| r.seq)
            .zip(&events)
        {
            let tagged = event["metadata"]["tagged"].as_bool().unwrap();
            reference.push((
                event["created_at"].as_i64().unwrap(),
                tenant.clone(),
                seq,
                tagged,
            ));
        }
    }
    for (query, only_tagged) in [("", false), ("meta.tagged=true", true)] {
        for order in ["asc", "desc"] {
            let mut expected: Vec<(i64, String, u64)> = reference
                .iter()
                .filter(|e| !only_tagged || e.3)
                .map(|e| (e.0, e.1.clone(), e.2))
                .collect();
            expected.sort();
            if order == "desc" {
                expected.reverse();
            }
            for limit in [1, 2, 3, 7, 50, 1000] {
                let text = format!("{query}&order={order}");
                let mut parsed = RawQuery::parse(&text).to_list_query(now_millis()).unwrap();
                parsed.limit = limit;
                let mut after = None;
                let mut got = Vec::new();
                loop {
                    let page = store.list_all(&parsed, after.as_ref()).unwrap();
                    assert!(page.items.len() <= limit);
                    for (tenant, item) in &page.items {
                        got.push((item.position.created_at, tenant.clone(), item.position.seq));
                    }
                    match page.next {
                        Some(next) => after = Some(next),
                        None => break,
                    }
                }
                assert_eq!(got, expected, "{text} limit {limit}");
            }
        }
    }
}

#[test]
fn a_lost_segment_is_reported_as_a_seq_gap_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_compacting_on_demand(dir.path()).expect("store opens");
    store.create_tenant("acme", "Acme").unwrap();
    store.create_tenant("globex", "Globex").unwrap();
    for round in 0..120 {
        let tenant = if round % 3 == 0 { "globex" } else { "acme" };
        append(
            &store,
            tenant,
            vec![json!({"type": "t", "metadata": {"pad": "x".repeat(300), "round": round}})],
        );
    }
    drop(store);
    let wal_dir = dir.path().join("wal");
    let segments = files(&wal_dir, ".wal");
    assert!(segments.len() > 3, "{segments:?}");
    std::fs::remove_file(wal_dir.join(&segments[1])).unwrap();
    let error = open_compacting_on_demand(dir.path())
        .err()
        .expect("a store with a missing segment does not open");
    let message = error.to_string();
    assert!(message.contains("follows seq"), "{message}");
    assert!(
        message.contains(&segments[2]),
        "names the segment after the gap: {message}"
    );
}

#[test]
fn large_pages_read_ahead_and_still_list_every_event_once_in_order() {
    // Pages of 500 or more start reading the next page's records on the worker threads, and a page reads its
    // uncached records in parallel: the pages must still be exactly the events, in order, with or without
    // room in the cache for what was read ahead.
    for cache_bytes in [4096, 64 << 20] {
        let dir = tempfile::tempdir().unwrap();
        let mut options = on_demand(dir.path(), 64 << 10);
        options.cache_bytes = cache_bytes;
        let store = EmbeddedStore::open(options).unwrap();
        store.create_tenant("big", "big").unwrap();
        store.create_tenant("other", "other").unwrap();
        for round in 0..30 {
            let events = (0..100)
                .map(|i| json!({"type": if i % 3 == 0 { "x.three" } else { "x.other" }, "metadata": {"n": round * 100 + i}}))
                .collect();
            append(&store, "big", events);
            append(&store, "other", vec![json!({"type": "noise"})]);
            if round == 20 {
                store.compact().unwrap(); // some pages from block files, some from WAL segments
            }
        }
        let numbers = |events: &[Event]| -> Vec<u64> {
            events
                .iter()
                .map(|event| event.metadata.as_ref().unwrap()["n"].as_u64().unwrap())
                .collect()
        };
        let ascending: Vec<u64> = (0..3000).collect();
        for limit in [500, 777, 1000] {
            let all = list_all(&store, "big", "order=asc", limit);
            assert_eq!(numbers(&all), ascending, "asc, limit {limit}");
            let newest_first = list_all(&store, "big", "", limit);
            let mut descending = ascending.clone();
            descending.reverse();
            assert_eq!(numbers(&newest_first), descending, "desc, limit {limit}");
            let threes = list_all(&store, "big", "type=x.three&order=asc", limit);
            let expected: Vec<u64> = ascending
                .iter()
                .copied()
                .filter(|n| n % 100 % 3 == 0)
                .collect();
            assert_eq!(numbers(&threes), expected, "type filter, limit {limit}");
        }
    }
}

/// Pieces of index files large enough to have tables of many chunks, postings and field records apart from
/// their chunks and sections, and postings of every event: filters of each kind answer as the evaluator does,
/// before compaction (in memory), after it (from the index files, merged: the large tenant's pieces copied,
/// the small one's merged) and after a reopen.
#[test]
fn large_index_files_answer_as_the_evaluator_does() {
    let dir = tempfile::tempdir().unwrap();
    let open_large = || {
        let mut options = on_demand(dir.path(), 320 << 10);
        options.merge_events = 300;
        EmbeddedStore::open(options).expect("store opens")
    };
    let store = open_large();
    store.create_tenant("big", "Big").unwrap();
    store.create_tenant("small", "Small").unwrap();
    let event = |number: usize| {
        let event_type = [
            "bot.created",
            "bot.updated",
            "conversation.started",
            "message.sent",
        ][number % 4];
        let model = ["gpt", "claude", "llama"][number % 3];
        json!({
            "type": event_type,
            "actor": {"id": format!("user_{:04}", number % 300), "name": format!("User {}", number % 300)},
            "entity": {"type": "bot", "id": format!("bot_{:05}", number % 1000)},
            "outcome": if number.is_multiple_of(17) { "failure" } else { "success" },
            "description": format!("Step {} of job {}", number % 7, number % 50),
            "context": {"request_id": format!("req_{number:08}_{}", "x".repeat(number % 5))},
            "resources": {"bot_id": format!("bot_{:05}", number % 1000)},
            "metadata": {
                "tokens": number % 4096,
                "ratio": (number as f64) / 7.0 - 100.0,
                "flag": number.is_multiple_of(3),
                "maybe": if number.is_multiple_of(5) { Value::Null } else { json!(number % 11) },
                "tags": [format!("t{}", number % 13), format!("u{}", number % 29)],
                "nested": {"model": model},
            },
        })
    };
    let mut models: [(&str, Vec<Event>); 2] = [("big", Vec::new()), ("small", Vec::new())];
    for chunk in (0..6000).collect::<Vec<_>>().chunks(250) {
        let small: Vec<usize> = chunk.iter().copied().filter(|n| n % 50 < 2).collect();
        for ((tenant, model), numbers) in models.iter_mut().zip([chunk, &small[..]]) {
            let receipts = append(&store, tenant, numbers.iter().map(|&n| event(n)).collect());
            for receipt in receipts {
                model.push(store.get(tenant, &receipt.id).unwrap().unwrap());
            }
        }
    }
    let queries = [
        "type=message.sent",
        "type=bot.created&outcome=failure",
        "actor.id=user_0042",
        "filter[actor.id][prefix]=user_01",
        "filter[actor.name][contains]=ser 2",
        "filter[entity.id][in]=bot_00007,bot_00999,bot_01000",
        "context.request_id=req_00001234_xxxx",
        "context.request_id=req_00001234",
        "filter[context.request_id][gte]=req_00005990",
        "meta.tokens=17",
        "filter[meta.tokens][lt]=3",
        "filter[meta.ratio][gt]=700",
        "meta.flag=true",
        "meta.maybe=null",
        "filter[meta.maybe][exists]=true",
        "meta.tags=t3",
        "meta.nested.model=claude",
        "filter[outcome][ne]=success",
        "q=%22job+42%22",
        "filter[description][contains]=step 3",
        "resources.bot_id=bot_00321",
    ];
    let check = |store: &EmbeddedStore, stage: &str| {
        for (tenant, model) in &models {
            for query in queries {
                let parsed = RawQuery::parse(query).to_list_query(now_millis()).unwrap();
                let mut expected: Vec<u64> = model
                    .iter()
                    .filter(|event| parsed.filter.matches(event))
                    .map(|event| event.seq)
                    .collect();
                expected.sort_unstable();
                let mut got: Vec<u64> =
                    list_all(store, tenant, &format!("{query}&order=asc"), 1000)
                        .iter()
                        .map(|event| event.seq)
                        .collect();
                got.sort_unstable();
                assert_eq!(got, expected, "{tenant}: {query} {stage}");
            }
        }
    };
    check(&store, "in memory");
    assert!(store.compact().unwrap() >= 8);
    let merged = store.index_files();
    assert!(
        merged.iter().any(|&(first, last)| last > first),
        "{merged:?}"
    );
    check(&store, "from index files");
    drop(store);
    let store = open_large();
    check(&store, "after reopen");
}

/// A tenant's piece that stopped indexing new JSON fields (past the limit of fields) merged with pieces that
/// index a field it may have left out: the merged piece lists that field as unindexed, and its events are
/// still found.
#[test]
fn merged_pieces_keep_fields_that_a_full_piece_left_unindexed() {
    let dir = tempfile::tempdir().unwrap();
    let options = on_demand(dir.path(), 128 << 10);
    let store = EmbeddedStore::open(options).expect("store opens");
    store.create_tenant("acme", "Acme").unwrap();
    append(&store, "acme", wide_events());
    append(
        &store,
        "acme",
        vec![json!({"type": "late", "metadata": {"deep": {"x": 1}}})],
    );
    for round in 0..100 {
        let events = (0..4)
            .map(|i| json!({"type": "filler", "metadata": {"deep": {"x": 2}, "round": round, "i": i, "pad": "f".repeat(4000)}}))
            .collect();
        append(&store, "acme", events);
    }
    assert!(store.compact().unwrap() >= 8);
    let merged = store.index_files();
    assert!(merged[0].1 >= merged[0].0 + 3, "merged: {merged:?}");
    let late = list_all(&store, "acme", "q=meta.deep.x:1", 10);
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].event_type, "late");
    assert_eq!(list_all(&store, "acme", "q=meta.deep.x:2", 100).len(), 400);
    assert_eq!(list_all(&store, "acme", "q=meta.k0_7:7", 10).len(), 1);
}

/// A merge cut short by a crash: the merged file written whole beside the files it merged (they were not
/// removed yet) is kept and they are removed; a merged file torn is removed and theirs are used (or written
/// again). Either way each segment has one index and queries answer as before.
#[test]
fn a_merge_cut_short_by_a_crash_leaves_one_index_of_each_segment() {
    let dir = tempfile::tempdir().unwrap();
    let blocks = dir.path().join("blocks");
    let store = open_compacting_on_demand(dir.path()).expect("store opens");
    for tenant in ["a", "b"] {
        store.create_tenant(tenant, tenant).unwrap();
    }
    for round in 0..60 {
        let tenant = if round % 3 == 0 { "b" } else { "a" };
        let events = (0..3)
            .map(|i| json!({"type": if (round + i) % 4 == 0 { "hit" } else { "miss" }, "metadata": {"round": round, "pad": "m".repeat(300)}}))
            .collect();
        append(&store, tenant, events);
    }
    let answers = |store: &EmbeddedStore| {
        ["a", "b"].map(|tenant| {
            ["type=hit", "q=meta.round:>30", "order=asc"].map(|query| {
                list_all(store, tenant, query, 9)
                    .iter()
                    .map(|event| event.seq)
                    .collect::<Vec<_>>()
            })
        })
    };
    let before = answers(&store);
    assert!(store.compact().unwrap() >= 8);
    let merged_files = store.index_files();
    let (first, last) = merged_files[0];
    assert!(last > first, "{merged_files:?}");
    let merged_name = if first == last {
        format!("{first:08}.idx")
    } else {
        format!("{first:08}-{last:08}.idx")
    };
    assert_eq!(answers(&store), before);
    drop(store);
    let merged = std::fs::read(blocks.join(&merged_name)).unwrap();
    // Without the merged file, the open writes an index file for each of its segments.
    std::fs::remove_file(blocks.join(&merged_name)).unwrap();
    drop(open_compacting_on_demand(dir.path()).unwrap());
    assert!(files(&blocks, ".idx").contains(&format!("{first:08}.idx")));
    // A crash after the merged file was written, before the files it merged were removed.
    std::fs::write(blocks.join(&merged_name), &merged).unwrap();
    let store = open_compacting_on_demand(dir.path()).unwrap();
    assert_eq!(indexed_segments(&blocks), block_segments(&blocks));
    assert!(files(&blocks, ".idx").contains(&merged_name));
    assert_eq!(store.index_files(), merged_files);
    assert_eq!(answers(&store), before);
    drop(store);
    // A crash in the middle of writing it: torn, beside the files it merged.
    std::fs::remove_file(blocks.join(&merged_name)).unwrap();
    drop(open_compacting_on_demand(dir.path()).unwrap());
    std::fs::write(blocks.join(&merged_name), &merged[..merged.len() / 2]).unwrap();
    let store = open_compacting_on_demand(dir.path()).unwrap();
    assert!(!files(&blocks, ".idx").contains(&merged_name));
    assert_eq!(indexed_segments(&blocks), block_segments(&blocks));
    assert_eq!(answers(&store), before);
    // Merged again, the same as before.
    store.compact().unwrap();
    assert_eq!(store.index_files(), merged_files);
    assert_eq!(std::fs::read(blocks.join(&merged_name)).unwrap(), merged);
    assert_eq!(answers(&store), before);
}

/// Block files compressed with a dictionary trained on the first compacted segment of enough events: they
/// read back the same events, before and after a reopen, and are smaller than without one; a store whose
/// dictionary is lost refuses to open rather than serve what it cannot read.
#[test]
fn blocks_compressed_with_a_trained_dictionary_read_back() {
    let run = |dictionary: bool| {
        let dir = tempfile::tempdir().unwrap();
        let open_with = || {
            let mut options = on_demand(dir.path(), 768 << 10);
            options.block_dictionary = dictionary;
            EmbeddedStore::open(options)
        };
        let store = open_with().unwrap();
        store.create_tenant("acme", "Acme").unwrap();
        for round in 0..24 {
            let events = (0..250)
                .map(|i| {
                    let event_type = ["bot.created", "bot.updated", "message.sent"][i % 3];
                    let model = ["gpt-4o", "claude"][i % 2];
                    json!({
                        "type": event_type,
                        "actor": {"id": format!("user_{}", (round * 7 + i) % 40), "type": "user"},
                        "context": {"ip": format!("203.0.113.{}", i % 250), "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0"},
                        "metadata": {"round": round, "i": i, "model": model},
                        "description": format!("User {} updated bot {}", i % 40, i % 9),
                    })
                })
                .collect();
            append(&store, "acme", events);
        }
        let before = list_all(&store, "acme", "order=asc", 1000);
        assert_eq!(before.len(), 6000);
        assert!(store.compact().unwrap() >= 2);
        assert_eq!(list_all(&store, "acme", "order=asc", 1000), before);
        let blocks = dir.path().join("blocks");
        let dictionaries = files(&blocks, ".dict");
        assert_eq!(
            dictionaries.len(),
            usize::from(dictionary),
            "{dictionaries:?}"
        );
        drop(store);
        let store = open_with().unwrap();
        assert_eq!(list_all(&store, "acme", "order=asc", 1000), before);
        assert_eq!(
            list_all(&store, "acme", "q=meta.model:claude", 1000).len(),
            3000
        );
        drop(store);
        let sizes: u64 = files(&blocks, ".blk")
            .iter()
            .map(|name| std::fs::metadata(blocks.join(name)).unwrap().len())
            .sum();
        if dictionary {
            // A dictionary torn by a crash before any block used it is removed at open.
            let whole = std::fs::read(blocks.join(&dictionaries[0])).unwrap();
            let torn = blocks.join("00000001.dict");
            std::fs::write(&torn, &whole[..whole.len() / 2]).unwrap();
            drop(open_with().unwrap());
            assert!(!torn.exists());
            assert_eq!(files(&blocks, ".dict"), dictionaries);
            std::fs::remove_file(blocks.join(&dictionaries[0])).unwrap();
            let error = open_with().err().expect("blocks without their dictionary");
            assert!(error.to_string().contains("dictionary"), "{error}");
        }
        sizes
    };
    let with = run(true);
    let without = run(false);
    assert!(
        with < without,
        "{with} bytes of blocks with a dictionary, {without} without"
    );
}

/// Block files keep each event's id and hash apart from the compressed text, as bytes: every events record
/// of a compacted segment has that form, and the events read back the same (ids, hashes that still verify,
/// changes with their diff, escapes and non-ASCII text), before and after a reopen.
#[test]
fn blocks_keep_ids_and_hashes_as_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let open_with = || {
        let options = on_demand(dir.path(), 256 << 10);
        EmbeddedStore::open(options)
    };
    let store = open_with().unwrap();
    for tenant in ["acme", "globex"] {
        store.create_tenant(tenant, tenant).unwrap();
    }
    for round in 0..12 {
        for tenant in ["acme", "globex"] {
            let events = (0..60)
                .map(|i| {
                    json!({
                        "action": "UPDATED",
                        "actor": {"id": format!("u_{i}"), "name": "Zoë \"Z\" Ångström"},
                        "entity": {"type": "story", "id": format!("st_{}", i % 7)},
                        "changes": {"before": {"name": "Hello\nWorld", "n": round}, "after": {"name": "Good Morning ☀", "n": i}},
                        "metadata": {"round": round, "note": "tab\there, \u{1} and a } brace"},
                    })
                })
                .collect();
            append(&store, tenant, events);
        }
    }
    let before: Vec<Vec<Event>> = ["acme", "globex"]
        .iter()
        .map(|tenant| list_all(&store, tenant, "order=asc", 1000))
        .collect();
    assert_eq!(before[0].len(), 720);
    assert!(store.compact().unwrap() >= 2);
    let blocks = dir.path().join("blocks");
    let mut records = 0;
    for name in files(&blocks, ".blk") {
        let segment: u32 = name.trim_end_matches(".blk").parse().unwrap();
        logbook_store::compact::read(
            &logbook_store::io::RealFs,
            &blocks,
            segment,
            |_, payload| {
                assert!(
                    payload.starts_with(logbook_store::columns::MAGIC),
                    "{name}: a block without columns"
                );
                records += 1;
                Ok(())
            },
        )
        .unwrap();
    }
    assert!(records >= 4, "{records} blocks");
    let check = |store: &EmbeddedStore| {
        for (tenant, before) in ["acme", "globex"].iter().zip(&before) {
            let after = list_all(store, tenant, "order=asc", 1000);
            assert_eq!(&after, before);
            for event in &after {
                assert_eq!(event.compute_hash(), event.hash);
            }
            let one = &before[before.len() / 2];
            assert_eq!(store.get(tenant, &one.id).unwrap().as_ref(), Some(one));
        }
    };
    check(&store);
    drop(store);
    check(&open_with().unwrap());
}

/// A field whose values are nearly all unique (request ids) is kept in index files as a table of hashes:
/// two values with the same hash (CRC32C) are both candidates for either, and the events are checked, so
/// each query still finds only its own event; questions a hash cannot answer (prefixes, ranges) are answered
/// by checking the events.
#[test]
fn values_kept_as_hashes_still_match_exactly() {
    // Two request ids with the same CRC32C, found among these (the first collision is at a fixed place).
    let mut seen = std::collections::HashMap::new();
    let (a, b) = (0u32..)
        .find_map(|n| {
            let id = format!("req_{n:08}");
            let hash = crc32c::crc32c(id.as_bytes());
            seen.insert(hash, n).map(|earlier| (earlier, n))
        })
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let options = on_demand(dir.path(), 96 << 10);
    let store = EmbeddedStore::open(options).expect("store opens");
    store.create_tenant("acme", "Acme").unwrap();
    // The pair first, so that they are in one compacted piece, among other ids.
    let ids: Vec<u32> = [a, b].into_iter().chain(10_000_000..10_000_600).collect();
    for chunk in ids.chunks(100) {
        let events = chunk
            .iter()
            .map(|n| json!({"type": "request", "context": {"request_id": format!("req_{n:08}")}, "metadata": {"pad": "r".repeat(200)}}))
            .collect();
        append(&store, "acme", events);
    }
    assert!(store.compact().unwrap() >= 2);
    for n in [a, b, 10_000_007, 10_000_599] {
        let found = list_all(
            &store,
            "acme",
            &format!("context.request_id=req_{n:08}"),
            10,
        );
        assert_eq!(found.len(), 1, "req_{n:08}");
        assert_eq!(found[0].context["request_id"], format!("req_{n:08}"));
    }
    let both = list_all(
        &store,
        "acme",
        &format!("filter[context.request_id][in]=req_{a:08},req_{b:08}"),
        10,
    );
    assert_eq!(both.len(), 2);
    let prefixed = list_all(
        &store,
        "acme",
        "filter[context.request_id][prefix]=req_100001",
        100,
    );
    assert_eq!(prefixed.len(), 100);
    assert!(list_all(&store, "acme", "context.request_id=req_nope", 10).is_empty());
    // Counting by a hashed field reads its values from the events.
    let now = now_millis();
    let request = HistogramRequest {
        interval_ms: 3_600_000,
        start: now - 3_600_000,
        end: now + 3_600_000,
        group_by: Some(Field::parse("context.request_id").unwrap()),
        top: 3,
    };
    let query = RawQuery::parse("").to_list_query(now).unwrap();
    let histogram = store.histogram("acme", &query, &request).unwrap();
    let total: u64 = histogram.buckets.iter().map(|bucket| bucket.count).sum();
    assert_eq!(total, ids.len() as u64);
    let mut names: Vec<String> = ids.iter().map(|n| format!("req_{n:08}")).collect();
    names.sort();
    names.truncate(3);
    names.push("other".into());
    assert_eq!(histogram.groups, names);
}

/// A disk on which creating a block file takes a while, as a slow or busy disk would make compaction.
struct SlowBlocks(logbook_store::io::RealFs);

impl logbook_store::io::FileSystem for SlowBlocks {
    fn create_new(
        &self,
        path: &std::path::Path,
    ) -> std::io::Result<std::sync::Arc<dyn logbook_store::io::StorageFile>> {
        if path.extension().is_some_and(|extension| extension == "blk") {
            std::thread::sleep(std::time::Duration::from_millis(60));
        }
        self.0.create_new(path)
    }
    fn open(
        &self,
        path: &std::path::Path,
    ) -> std::io::Result<std::sync::Arc<dyn logbook_store::io::StorageFile>> {
        self.0.open(path)
    }
    fn read(&self, path: &std::path::Path) -> std::io::Result<Vec<u8>> {
        self.0.read(path)
    }
    fn remove(&self, path: &std::path::Path) -> std::io::Result<()> {
        self.0.remove(path)
    }
    fn len(&self, path: &std::path::Path) -> std::io::Result<u64> {
        self.0.len(path)
    }
    fn list(&self, directory: &std::path::Path) -> std::io::Result<Vec<String>> {
        self.0.list(directory)
    }
    fn create_dir_all(&self, directory: &std::path::Path) -> std::io::Result<()> {
        self.0.create_dir_all(directory)
    }
    fn sync_directory(&self, directory: &std::path::Path) -> std::io::Result<()> {
        self.0.sync_directory(directory)
    }
}

/// A burst of ingest faster than compaction waits for it: the sealed segments waiting to be compacted (each
/// with its field index in memory) stay bounded, and every event is kept.
#[test]
fn ingest_waits_for_a_compactor_that_fell_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = StoreOptions::new(dir.path());
    options.segment_bytes = 4096;
    options.fs = std::sync::Arc::new(SlowBlocks(logbook_store::io::RealFs));
    let store = EmbeddedStore::open(options).expect("store opens");
    store.create_tenant("acme", "Acme").unwrap();
    let wal_dir = dir.path().join("wal");
    let mut most = 0;
    for round in 0..60 {
        // About two segments per request.
        let events = (0..12)
            .map(|i| json!({"type": "burst", "metadata": {"round": round, "i": i, "pad": "p".repeat(600)}}))
            .collect();
        append(&store, "acme", events);
        most = most.max(files(&wal_dir, ".wal").len());
    }
    // The writer waits before a group while more than 3 sealed segments wait; a group adds up to 3 more, and
    // one segment is being written.
    assert!(most <= 3 + 3 + 1, "{most} WAL segments at once");
    assert_eq!(list_all(&store, "acme", "order=asc", 1000).len(), 60 * 12);
}

/// An index file that can no longer be read while the store is open (here cut short under it) changes speed
/// only: its pieces are planned as unknown and their events checked one by one.
#[test]
fn an_index_file_lost_while_open_still_gives_every_match() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_compacting_on_demand(dir.path()).expect("store opens");
    store.create_tenant("acme", "Acme").unwrap();
    for round in 0..40 {
        let events = (0..5)
            .map(|i| json!({"type": if (round + i) % 3 == 0 { "hit" } else { "miss" }, "metadata": {"round": round, "pad": "q".repeat(200)}}))
            .collect();
        append(&store, "acme", events);
    }
    let before: Vec<u64> = list_all(&store, "acme", "type=hit&order=asc", 7)
        .iter()
        .map(|event| event.seq)
        .collect();
    assert!(store.compact().unwrap() > 2);
    let blocks = dir.path().join("blocks");
    for name in files(&blocks, ".idx") {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(blocks.join(name))
            .unwrap();
        file.set_len(20).unwrap();
    }
    let after: Vec<u64> = list_all(&store, "acme", "type=hit&order=asc", 7)
        .iter()
        .map(|event| event.seq)
        .collect();
    assert_eq!(after, before);
    let hits = (0..40)
        .flat_map(|round| (0..5).map(move |i| (round + i) % 3))
        .filter(|&remainder| remainder == 0)
        .count();
    assert_eq!(before.len(), hits);
}

/// Listings plan the parts nearest their start first and widen the window until the page is full: pages
/// must be the same as from planning every part at once, in both orders, across compacted pieces and
/// in-memory parts, with parts of disjoint times and parts whose times overlap.
#[test]
fn listings_that_plan_the_nearest_parts_first_find_every_match_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let options = on_demand(dir.path(), 8 << 10);
    let store = EmbeddedStore::open(options).expect("store opens");
    store.create_tenant("acme", "Acme").unwrap();
    let base = now_millis() - 86_400_000;
    let event = |i: i64, created_at: i64| {
        let channel = if i % 37 == 0 { "slack" } else { "web" };
        json!({"type": "message", "created_at": created_at, "description": format!("message {i}"),
               "metadata": {"channel": channel, "n": i}})
    };
    // In time order, with a few late events (older times, written last) so that later parts overlap.
    for chunk in (0..400i64).collect::<Vec<_>>().chunks(20) {
        append(
            &store,
            "acme",
            chunk.iter().map(|&i| event(i, base + i * 1000)).collect(),
        );
    }
    assert!(store.compact().unwrap() >= 3);
    for chunk in (400..600i64).collect::<Vec<_>>().chunks(20) {
        append(
            &store,
            "acme",
            chunk.iter().map(|&i| event(i, base + i * 1000)).collect(),
        );
    }
    append(
        &store,
        "acme",
        [0, 74, 555]
            .iter()
            .map(|&i| event(37 * 1000 + i, base + i * 1000 + 1))
            .collect(),
    );
    // Another tenant written out of time order: every part spans nearly the whole range.
    store.create_tenant("globex", "Globex").unwrap();
    for chunk in (0..300i64).collect::<Vec<_>>().chunks(20) {
        let events = chunk
            .iter()
            .map(|&i| event(i, base + (i * 7919 % 300) * 1000))
            .collect();
        append(&store, "globex", events);
    }
    for (tenant, count) in [("acme", 603), ("globex", 300)] {
        let all = list_all(&store, tenant, "order=asc", 1000);
        assert_eq!(all.len(), count);
        for (query, keep) in [
            (
                "meta.channel=slack",
                &(|e: &Event| e.metadata.as_ref().unwrap()["channel"] == "slack")
                    as &dyn Fn(&Event) -> bool,
            ),
            ("filter[metadata.n][gte]=590", &|e: &Event| {
                e.metadata.as_ref().unwrap()["n"].as_i64().unwrap() >= 590
            }),
            ("q=message", &|_: &Event| true),
        ] {
            for order in ["desc", "asc"] {
                let mut expected: Vec<(i64, u64)> = all
                    .iter()
                    .filter(|e| keep(e))
                    .map(|e| (e.created_at, e.seq))
                    .collect();
                expected.sort_unstable();
                if order == "desc" {
                    expected.reverse();
                }
                for limit in [1, 3, 50] {
                    let found: Vec<(i64, u64)> =
                        list_all(&store, tenant, &format!("{query}&order={order}"), limit)
                            .iter()
                            .map(|e| (e.created_at, e.seq))
                            .collect();
                    assert_eq!(
                        found, expected,
                        "{tenant}: {query} order={order} limit={limit}"
                    );
                }
            }
        }
    }
}
