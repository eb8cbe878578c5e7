//! Any query string: parsing into a list query never panics, and a parsed filter evaluates against a full
//! audit event without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use logbook_core::event::{Assigned, Limits, NewEvent};
use logbook_core::filter::query_string::RawQuery;
use logbook_core::Event;
use std::sync::OnceLock;

const NOW: i64 = 1_790_000_000_000;

fn sample() -> &'static Event {
    static SAMPLE: OnceLock<Event> = OnceLock::new();
    SAMPLE.get_or_init(|| {
        let value = serde_json::json!({
            "type": "bot.updated", "action": "UPDATED", "outcome": "failure", "description": "Renamed the bot",
            "actor": {"id": "u_1", "name": "Alice", "type": "user"},
            "entity": {"type": "bot", "id": "bot_1", "name": "Helper"},
            "resources": {"bot_id": "bot_1", "workspace_id": "ws_1"},
            "context": {"ip": "10.0.0.1", "request_id": "r1"},
            "metadata": {"status": "error", "n": 3, "nested": {"list": [1, "two", null]}},
            "changes": {"before": {"name": "Old", "tags": ["a"]}, "after": {"name": "New", "tags": ["a", "b"]}}
        });
        let bytes = value.to_string().len();
        NewEvent::from_json(value, bytes, &Limits::default(), NOW)
            .expect("the sample is valid")
            .into_event(Assigned {
                id: logbook_core::event::new_event_id(NOW),
                seq: 7,
                tenant: "fuzz".into(),
                received_at: NOW,
            })
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(query) = RawQuery::parse(text).to_list_query(NOW) {
        let _ = query.filter.matches(sample());
    }
});
