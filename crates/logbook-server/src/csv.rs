//! CSV rendering of events: one row per event, flat columns, nested fields as JSON text (RFC 4180 quoting).

use logbook_core::event::Event;
use logbook_core::time::format_millis;
use serde_json::Value;

pub const COLUMNS: &[&str] = &[
    "id",
    "seq",
    "tenant",
    "type",
    "created_at",
    "received_at",
    "actor_id",
    "actor_type",
    "actor_name",
    "action",
    "entity_type",
    "entity_id",
    "entity_name",
    "outcome",
    "description",
    "resources",
    "context",
    "metadata",
    "changes",
    "hash",
];

fn field(out: &mut String, text: &str) {
    if text.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&text.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(text);
    }
}

fn json_text<T: serde::Serialize>(value: &T, empty: bool) -> String {
    if empty {
        String::new()
    } else {
        serde_json::to_string(value).unwrap_or_default()
    }
}

/// The header row and one row per event, CRLF-terminated.
pub fn render(events: &[Event]) -> String {
    let mut out = String::with_capacity(events.len() * 600 + 200);
    render_into(&mut out, events, true);
    out
}

/// Appends one row per event to `out`, after the header row if `header`.
pub fn render_into(out: &mut String, events: &[Event], header: bool) {
    if header {
        out.push_str(&COLUMNS.join(","));
        out.push_str("\r\n");
    }
    for event in events {
        let actor = event.actor.as_ref();
        let entity = event.entity.as_ref();
        let cells: [String; 20] = [
            event.id.clone(),
            event.seq.to_string(),
            event.tenant.clone(),
            event.event_type.clone(),
            format_millis(event.created_at),
            format_millis(event.received_at),
            actor.map(|a| a.id.clone()).unwrap_or_default(),
            actor.and_then(|a| a.actor_type.clone()).unwrap_or_default(),
            actor.and_then(|a| a.name.clone()).unwrap_or_default(),
            event.action.clone().unwrap_or_default(),
            entity.map(|e| e.entity_type.clone()).unwrap_or_default(),
            entity.and_then(|e| e.id.clone()).unwrap_or_default(),
            entity.and_then(|e| e.name.clone()).unwrap_or_default(),
            event.outcome.as_str().to_string(),
            event.description.clone().unwrap_or_default(),
            json_text(&event.resources, event.resources.is_empty()),
            json_text(&event.context, event.context.is_empty()),
            json_text(
                &event.metadata.clone().unwrap_or(Value::Null),
                event.metadata.is_none(),
            ),
            json_text(&event.changes, event.changes.is_none()),
            event.hash.clone(),
        ];
        for (position, cell) in cells.iter().enumerate() {
            if position > 0 {
                out.push(',');
            }
            field(out, cell);
        }
        out.push_str("\r\n");
    }
}
