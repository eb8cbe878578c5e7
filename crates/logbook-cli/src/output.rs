//! Printing: readable tables on a terminal, JSON when piped.

use comfy_table::Table;
use serde_json::Value;
use std::io::IsTerminal;

pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    }
}

/// Events as a table: time, type, actor, action, entity, outcome, description.
pub fn events_table(events: &[Value]) -> String {
    let mut table = Table::new();
    table.set_header(vec![
        "created_at",
        "seq",
        "type",
        "actor",
        "action",
        "entity",
        "outcome",
        "description",
    ]);
    for event in events {
        let entity = match event.get("entity") {
            Some(entity) => format!(
                "{} {}",
                cell(entity.get("type")),
                cell(entity.get("name").or(entity.get("id")))
            ),
            None => String::new(),
        };
        let mut description = cell(event.get("description"));
        if description.chars().count() > 60 {
            description = description.chars().take(57).collect::<String>() + "...";
        }
        table.add_row(vec![
            cell(event.get("created_at")),
            cell(event.get("seq")),
            cell(event.get("type")),
            cell(
                event
                    .get("actor")
                    .and_then(|actor| actor.get("name").or(actor.get("id"))),
            ),
            cell(event.get("action")),
            entity,
            cell(event.get("outcome")),
            description,
        ]);
    }
    table.to_string()
}

/// Any list of flat objects as a table with the given columns.
pub fn objects_table(items: &[Value], columns: &[&str]) -> String {
    let mut table = Table::new();
    table.set_header(columns.to_vec());
    for item in items {
        table.add_row(
            columns
                .iter()
                .map(|column| cell(item.get(*column)))
                .collect::<Vec<_>>(),
        );
    }
    table.to_string()
}

/// Prints `value` as a table when on a terminal, else as pretty JSON.
pub fn print_items(value: &Value, columns: &[&str]) {
    if stdout_is_terminal() {
        let items = value
            .get("items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_else(|| vec![value.clone()]);
        println!("{}", objects_table(&items, columns));
    } else {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    }
}
