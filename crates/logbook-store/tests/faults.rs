//! Fault injection under the write-ahead log, through [`SimulatedFs`]: a power loss at every crash point of a
//! workload, failed fsyncs, and a full disk. After each, the store must reopen holding exactly the acknowledged
//! events plus possibly whole unacknowledged requests, never a torn or corrupt event, with dense seqs.

use logbook_core::event::{Limits, NewEvent};
use logbook_core::filter::query_string::RawQuery;
use logbook_core::time::now_millis;
use logbook_store::io::SimulatedFs;
use logbook_store::{
    AppendRequest, EmbeddedStore, EventStore, Position, Receipt, StoreError, StoreOptions,
};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

fn new_event(value: Value) -> NewEvent {
    let bytes = value.to_string().len();
    NewEvent::from_json(value, bytes, &Limits::default(), now_millis()).expect("valid test event")
}

fn open(dir: &Path, fs: &SimulatedFs) -> Result<EmbeddedStore, StoreError> {
    let mut options = StoreOptions::new(dir);
    options.fs = Arc::new(fs.clone());
    options.segment_bytes = 2048; // rolls to new segments often, so crash points include segment creation
    options.cache_bytes = 2048;
    // The workload compacts at known points, so that every run has the same crash points.
    options.background_compaction = false;
    EmbeddedStore::open(options)
}

/// Request `round` of the workload: 1 to 5 events with some bulk, so records span varied sizes.
fn request(round: usize) -> AppendRequest {
    let events = (0..1 + round % 5)
        .map(|i| {
            (
                "acme".to_string(),
                new_event(json!({"type": "fault.test", "metadata": {"round": round, "i": i, "pad": "x".repeat(40 * (round % 7))}})),
            )
        })
        .collect();
    AppendRequest {
        events,
        idempotency: None,
    }
}

/// Every stored event of `acme`: (id, seq, round, hash verified).
fn stored(store: &EmbeddedStore) -> Vec<(String, u64, u64)> {
    let mut query = RawQuery::parse("order=asc")
        .to_list_query(now_millis())
        .unwrap();
    query.limit = 1000;
    let mut after: Option<Position> = None;
    let mut out = Vec::new();
    loop {
        let page = store.list("acme", &query, after).expect("list");
        for item in &page.items {
            let event = item.parse().expect("a stored event parses");
            assert_eq!(
                event.compute_hash(),
                event.hash,
                "event {} does not match its hash",
                event.id
            );
            let round = event.metadata.as_ref().unwrap()["round"].as_u64().unwrap();
            out.push((event.id.clone(), event.seq, round));
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return out,
        }
    }
}

/// Checks the reopened store against what was acknowledged; `attempted` maps each request round to the number
/// of events it carried.
fn check(
    store: &EmbeddedStore,
    acknowledged: &[(usize, Vec<Receipt>)],
    attempted: &HashMap<usize, usize>,
) {
    let events = stored(store);
    let seqs: Vec<u64> = events.iter().map(|e| e.1).collect();
    assert_eq!(
        seqs,
        (1..=events.len() as u64).collect::<Vec<_>>(),
        "seq is dense"
    );
    let ids: HashSet<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(ids.len(), events.len(), "no event twice");
    for (_, receipts) in acknowledged {
        for receipt in receipts {
            assert!(
                ids.contains(receipt.id.as_str()),
                "acknowledged {} is missing",
                receipt.id
            );
        }
    }
    // Unacknowledged requests are all or nothing.
    let mut per_round: HashMap<u64, usize> = HashMap::new();
    for event in &events {
        *per_round.entry(event.2).or_default() += 1;
    }
    for (round, count) in per_round {
        assert_eq!(
            Some(&count),
            attempted.get(&(round as usize)),
            "request {round} is stored in part"
        );
    }
}

#[test]
fn power_loss_at_every_crash_point() {
    const ROUNDS: usize = 40;
    const COMPACT_EVERY: usize = 7;
    // Count the crash points of the whole workload once.
    let total = {
        let dir = tempfile::tempdir().unwrap();
        let fs = SimulatedFs::new();
        let store = open(dir.path(), &fs).unwrap();
        store.create_tenant("acme", "Acme").unwrap();
        let mut compacted = 0;
        for round in 0..ROUNDS {
            store.append(request(round)).unwrap();
            if round % COMPACT_EVERY == COMPACT_EVERY - 1 {
                compacted += store.compact().unwrap();
            }
        }
        assert!(compacted > 3, "the workload compacts {compacted} segments");
        drop(store);
        fs.operations()
    };
    assert!(total > 100, "the workload has {total} crash points");
    for cut in 0..=total {
        let dir = tempfile::tempdir().unwrap();
        let fs = SimulatedFs::new();
        let store = open(dir.path(), &fs).unwrap();
        store.create_tenant("acme", "Acme").unwrap();
        let opened_at = fs.operations();
        fs.cut_power_after(cut.saturating_sub(opened_at));
        let mut acknowledged = Vec::new();
        let mut attempted = HashMap::new();
        for round in 0..ROUNDS {
            let request = request(round);
            attempted.insert(round, request.events.len());
            match store.append(request) {
                Ok(outcome) => acknowledged.push((round, outcome.receipts)),
                Err(_) => break,
            }
            if round % COMPACT_EVERY == COMPACT_EVERY - 1 && store.compact().is_err() {
                break;
            }
        }
        drop(store);
        fs.power_loss(cut);
        let store = open(dir.path(), &fs).unwrap_or_else(|error| {
            panic!("crash point {cut}: the store does not reopen: {error}")
        });
        check(&store, &acknowledged, &attempted);
        // Compacting what the crash left gives the same events.
        store.compact().expect("compaction after recovery");
        check(&store, &acknowledged, &attempted);
        // Appending continues with the next seq.
        let before = stored(&store).len() as u64;
        let next = store
            .append(request(ROUNDS))
            .expect("append after recovery");
        assert_eq!(next.receipts[0].seq, before + 1, "crash point {cut}");
        drop(store);
        // And that survives a second power loss after its sync.
        fs.power_loss(cut + 1_000_000);
        let store = open(dir.path(), &fs).unwrap();
        assert!(stored(&store).iter().any(|e| e.0 == next.receipts[0].id));
    }
}

#[test]
fn a_failed_fsync_poisons_the_writer_until_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let fs = SimulatedFs::new();
    let store = open(dir.path(), &fs).unwrap();
    store.create_tenant("acme", "Acme").unwrap();
    let first = store.append(request(0)).unwrap();
    fs.fail_syncs(true);
    assert!(matches!(
        store.append(request(1)),
        Err(StoreError::Poisoned(_))
    ));
    // Even with fsync working again, the writer stays poisoned: the kernel may have dropped the pages.
    fs.fail_syncs(false);
    assert!(matches!(
        store.append(request(2)),
        Err(StoreError::Poisoned(_))
    ));
    drop(store);
    fs.power_loss(7);
    let store = open(dir.path(), &fs).unwrap();
    let mut attempted = HashMap::new();
    attempted.insert(0, 1);
    attempted.insert(1, 2);
    check(&store, &[(0, first.receipts)], &attempted);
    store.append(request(3)).expect("a reopened store appends");
}

#[test]
fn a_full_disk_refuses_whole_requests_and_ingest_resumes_when_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let fs = SimulatedFs::new();
    let store = open(dir.path(), &fs).unwrap();
    store.create_tenant("acme", "Acme").unwrap();
    let mut acknowledged = vec![(0, store.append(request(0)).unwrap().receipts)];
    let mut attempted = HashMap::from([(0, 1)]);
    // Room for a few small records, not for what follows.
    fs.set_capacity(Some(fs.used() + 600));
    let mut refused = 0;
    for round in 1..30 {
        let request = request(round);
        attempted.insert(round, request.events.len());
        match store.append(request) {
            Ok(outcome) => acknowledged.push((round, outcome.receipts)),
            Err(StoreError::NoSpace) => refused += 1,
            Err(other) => panic!("expected NoSpace, got {other}"),
        }
    }
    assert!(refused > 0, "the disk filled up");
    check(&store, &acknowledged, &attempted);
    // Space is freed: ingest resumes without a restart, and seqs stay dense.
    fs.set_capacity(None);
    for round in 30..40 {
        attempted.insert(round, request(round).events.len());
        acknowledged.push((
            round,
            store
                .append(request(round))
                .expect("ingest resumes")
                .receipts,
        ));
    }
    check(&store, &acknowledged, &attempted);
    drop(store);
    fs.power_loss(3);
    let store = open(dir.path(), &fs).unwrap();
    check(&store, &acknowledged, &attempted);
}
