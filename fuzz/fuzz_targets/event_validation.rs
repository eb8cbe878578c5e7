//! Any request body text as one event: strict parsing, validation, then building the stored event (diff,
//! canonical form, hash) never panics, a stored event's hash verifies after a JSON round trip, and the stored
//! line the writer builds with the hash (`into_event_and_json`) is byte for byte serde_json's. The one-pass
//! reading of the text (`NewEvent::from_json_text`) accepts exactly what the two steps accept, with the same
//! event.
#![no_main]

use libfuzzer_sys::fuzz_target;
use logbook_core::event::{Assigned, Limits, NewEvent};

const NOW: i64 = 1_790_000_000_000;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let one_pass = NewEvent::from_json_text(text, &Limits::default(), NOW);
    let two_steps = logbook_core::json::from_str_strict(text)
        .ok()
        .and_then(|value| NewEvent::from_json(value, text.len(), &Limits::default(), NOW).ok());
    assert_eq!(one_pass, two_steps, "both ways of reading an event agree");
    let Some(new_event) = two_steps else {
        return;
    };
    let (event, line) = new_event.into_event_and_json(Assigned {
        id: logbook_core::event::new_event_id(NOW),
        seq: 1,
        tenant: "fuzz".into(),
        received_at: NOW,
    });
    let stored = serde_json::to_string(&event).expect("an event serializes");
    assert_eq!(
        std::str::from_utf8(&line).expect("the stored line is UTF-8"),
        stored,
        "the writer's stored line is serde_json's"
    );
    let parsed: logbook_core::Event = serde_json::from_str(&stored).expect("a stored event parses");
    assert_eq!(
        parsed.compute_hash(),
        event.hash,
        "the hash survives a round trip"
    );
});
