//! The on-disk format is protected: a data directory written by format version 1 (checked in under
//! `tests/data/v1`) must open with every later version, with every event, key and idempotency key intact.
//! Regenerate only when deliberately starting a new format version: `UPDATE_COMPAT_FIXTURE=1 cargo test -p logbook-store --test compat`.

use logbook_core::event::{Limits, NewEvent};
use logbook_core::filter::query_string::RawQuery;
use logbook_store::{
    AppendRequest, EmbeddedStore, EventStore, IdempotencyKey, Principal, StoreOptions,
};
use serde_json::json;
use std::path::{Path, PathBuf};

const ADMIN: &str = "compat-admin-key";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/v1")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn write_fixture(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    let store = EmbeddedStore::open(StoreOptions::new(dir)).unwrap();
    store.ensure_admin_key(Some(ADMIN)).unwrap();
    store.create_tenant("acme", "Acme").unwrap();
    let key = store
        .create_key("acme", "fixture", &[logbook_store::Scope::Read])
        .unwrap();
    std::fs::write(dir.join("KEY"), &key.key_secret).unwrap();
    let events = (0..20)
        .map(|i| {
            let value = json!({"type": format!("fixture.{}", i % 3), "created_at": 1_795_341_600_000i64 + i * 1000,
                "actor": {"id": "u_1", "name": "Alice"}, "entity": {"type": "story", "id": format!("st_{i}")},
                "changes": {"before": {"n": i}, "after": {"n": i + 1}}, "metadata": {"i": i, "tags": ["a", "b"]},
                "idempotency_key": format!("event-{i}")});
            ("acme".to_string(), NewEvent::from_json(value, 100, &Limits::default(), 1_795_341_600_000).unwrap())
        })
        .collect();
    let idempotency = Some(IdempotencyKey {
        scope: "acme".into(),
        key: "request-1".into(),
        fingerprint: "f".into(),
    });
    store
        .append(AppendRequest {
            events,
            idempotency,
        })
        .unwrap();
    store.shutdown().unwrap();
    let _ = std::fs::remove_file(dir.join("LOCK"));
}

#[test]
fn format_version_1_data_directory_still_opens() {
    if std::env::var_os("UPDATE_COMPAT_FIXTURE").is_some() {
        write_fixture(&fixture());
    }
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture(), dir.path());
    let tenant_key = std::fs::read_to_string(dir.path().join("KEY")).expect("fixture has its key");
    let store =
        EmbeddedStore::open(StoreOptions::new(dir.path())).expect("a v1 data directory opens");
    assert_eq!(
        store.ensure_admin_key(None).unwrap(),
        None,
        "the stored admin key is kept"
    );
    assert_eq!(store.authenticate(ADMIN), Some(Principal::Admin));
    assert!(
        matches!(store.authenticate(tenant_key.trim()), Some(Principal::Tenant { tenant, .. }) if tenant == "acme")
    );

    let mut query = RawQuery::parse("order=asc&type=fixture.1")
        .to_list_query(0)
        .unwrap();
    query.limit = 100;
    let page = store.list("acme", &query, None).unwrap();
    let events: Vec<_> = page
        .items
        .iter()
        .map(|item| item.parse().unwrap())
        .collect();
    assert_eq!(events.len(), 7);
    for event in &events {
        assert_eq!(
            event.compute_hash(),
            event.hash,
            "hashes of v1 events still verify"
        );
        assert_eq!(event.changes.as_ref().unwrap().diff.len(), 1);
    }
    assert_eq!(events[0].seq, 2);
    let value = json!({"type": "after.upgrade", "idempotency_key": "after-upgrade"});
    let new_event = NewEvent::from_json(value, 60, &Limits::default(), 0).unwrap();
    let receipts = store
        .append(AppendRequest {
            events: vec![("acme".into(), new_event)],
            idempotency: None,
        })
        .unwrap()
        .receipts;
    assert_eq!(receipts[0].seq, 21, "seq continues after the v1 events");
}
