//! Any request body text as one event: strict parsing, validation, then building the stored event (diff,
//! canonical form, hash) never panics, and a stored event's hash verifies after a JSON round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use logbook_core::event::{Assigned, Limits, NewEvent};

const NOW: i64 = 1_790_000_000_000;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(value) = logbook_core::json::from_str_strict(text) else {
        return;
    };
    let Ok(new_event) = NewEvent::from_json(value, text.len(), &Limits::default(), NOW) else {
        return;
    };
    let event = new_event.into_event(Assigned {
        id: logbook_core::event::new_event_id(NOW),
        seq: 1,
        tenant: "fuzz".into(),
        received_at: NOW,
    });
    let stored = serde_json::to_string(&event).expect("an event serializes");
    let parsed: logbook_core::Event = serde_json::from_str(&stored).expect("a stored event parses");
    assert_eq!(parsed.compute_hash(), event.hash, "the hash survives a round trip");
});
