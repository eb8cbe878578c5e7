//! Evaluation of a [`Filter`] against one [`Event`]: the reference semantics every engine must agree with.

use super::{Condition, Field, FieldKind, Filter, Operand, Predicate};
use crate::event::Event;
use serde_json::Value;
use std::cmp::Ordering;

impl Filter {
    /// Whether `event` satisfies the filter.
    pub fn matches(&self, event: &Event) -> bool {
        match self {
            Filter::All => true,
            Filter::And(parts) => parts.iter().all(|part| part.matches(event)),
            Filter::Or(parts) => parts.iter().any(|part| part.matches(event)),
            Filter::Not(inner) => !inner.matches(event),
            Filter::Condition(condition) => condition.matches(event),
            Filter::Text(phrase) => event
                .description
                .as_deref()
                .is_some_and(|description| contains_folded(description, phrase)),
        }
    }
}

impl Condition {
    pub fn matches(&self, event: &Event) -> bool {
        match self.field.kind() {
            FieldKind::Time | FieldKind::Seq => {
                let value = match self.field {
                    Field::CreatedAt => event.created_at,
                    Field::ReceivedAt => event.received_at,
                    _ => i64::try_from(event.seq).unwrap_or(i64::MAX),
                };
                number_predicate(&self.predicate, value)
            }
            FieldKind::Text => match text_value(event, &self.field) {
                Some(value) => text_predicate(&self.predicate, value),
                None => false,
            },
            FieldKind::Json => {
                let mut values = Vec::new();
                json_values(event, &self.field, &mut values);
                match self.predicate {
                    Predicate::Exists => !values.is_empty(),
                    _ => values
                        .into_iter()
                        .any(|value| json_predicate(&self.predicate, value)),
                }
            }
        }
    }
}

/// The value of a text field, if the event has it.
pub fn text_value<'a>(event: &'a Event, field: &Field) -> Option<&'a str> {
    match field {
        Field::Id => Some(&event.id),
        Field::Type => Some(&event.event_type),
        Field::Action => event.action.as_deref(),
        Field::ActorId => event.actor.as_ref().map(|actor| actor.id.as_str()),
        Field::ActorType => event
            .actor
            .as_ref()
            .and_then(|actor| actor.actor_type.as_deref()),
        Field::ActorName => event.actor.as_ref().and_then(|actor| actor.name.as_deref()),
        Field::EntityType => event
            .entity
            .as_ref()
            .map(|entity| entity.entity_type.as_str()),
        Field::EntityId => event
            .entity
            .as_ref()
            .and_then(|entity| entity.id.as_deref()),
        Field::EntityName => event
            .entity
            .as_ref()
            .and_then(|entity| entity.name.as_deref()),
        Field::Outcome => Some(event.outcome.as_str()),
        Field::Description => event.description.as_deref(),
        Field::Resource(key) => event.resources.get(key).map(String::as_str),
        Field::Seq
        | Field::CreatedAt
        | Field::ReceivedAt
        | Field::Context(_)
        | Field::Metadata(_) => None,
    }
}

/// The JSON values at a metadata path or context key; arrays are expanded into their elements.
pub fn json_values<'a>(event: &'a Event, field: &Field, out: &mut Vec<&'a Value>) {
    match field {
        Field::Metadata(path) => {
            if let Some(metadata) = &event.metadata {
                let segments: Vec<&str> = path.split('.').collect();
                collect_path(metadata, &segments, out);
            }
        }
        Field::Context(key) => {
            if let Some(value) = event.context.get(key) {
                collect_path(value, &[], out);
            }
        }
        _ => {}
    }
}

fn collect_path<'a>(value: &'a Value, segments: &[&str], out: &mut Vec<&'a Value>) {
    match (segments.split_first(), value) {
        (None, Value::Array(items)) if !items.is_empty() => {
            for item in items {
                collect_path(item, segments, out);
            }
        }
        (None, leaf) => out.push(leaf),
        (Some((first, rest)), Value::Object(members)) => {
            if let Some(child) = members.get(*first) {
                collect_path(child, rest, out);
            }
        }
        (Some(_), Value::Array(items)) => {
            for item in items {
                collect_path(item, segments, out);
            }
        }
        (Some(_), _) => {}
    }
}

fn number_predicate(predicate: &Predicate, value: i64) -> bool {
    let compare = |operand: &Operand| match operand {
        Operand::Number(number) => Some(value.cmp(number)),
        Operand::Text(_) => None,
    };
    match predicate {
        Predicate::Eq(operand) => compare(operand) == Some(Ordering::Equal),
        Predicate::In(operands) => operands
            .iter()
            .any(|operand| compare(operand) == Some(Ordering::Equal)),
        Predicate::Gt(operand) => compare(operand) == Some(Ordering::Greater),
        Predicate::Gte(operand) => {
            matches!(compare(operand), Some(Ordering::Greater | Ordering::Equal))
        }
        Predicate::Lt(operand) => compare(operand) == Some(Ordering::Less),
        Predicate::Lte(operand) => {
            matches!(compare(operand), Some(Ordering::Less | Ordering::Equal))
        }
        Predicate::Exists => true,
        Predicate::Contains(_) | Predicate::Prefix(_) => false,
    }
}

fn text_predicate(predicate: &Predicate, value: &str) -> bool {
    let compare = |operand: &Operand| match operand {
        Operand::Text(text) => Some(value.cmp(text.as_str())),
        Operand::Number(_) => None,
    };
    match predicate {
        Predicate::Eq(operand) => compare(operand) == Some(Ordering::Equal),
        Predicate::In(operands) => operands
            .iter()
            .any(|operand| compare(operand) == Some(Ordering::Equal)),
        Predicate::Gt(operand) => compare(operand) == Some(Ordering::Greater),
        Predicate::Gte(operand) => {
            matches!(compare(operand), Some(Ordering::Greater | Ordering::Equal))
        }
        Predicate::Lt(operand) => compare(operand) == Some(Ordering::Less),
        Predicate::Lte(operand) => {
            matches!(compare(operand), Some(Ordering::Less | Ordering::Equal))
        }
        Predicate::Contains(needle) => contains_folded(value, needle),
        Predicate::Prefix(prefix) => value.starts_with(prefix.as_str()),
        Predicate::Exists => true,
    }
}

/// Compares a JSON value with a text operand: numbers numerically when the operand is a number, strings
/// lexicographically, booleans and null only for equality.
pub fn json_compare(value: &Value, operand: &str) -> Option<Ordering> {
    match value {
        Value::String(text) => Some(text.as_str().cmp(operand)),
        Value::Number(number) => {
            let wanted: f64 = operand
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|number| number.is_finite())?;
            number.as_f64()?.partial_cmp(&wanted)
        }
        Value::Bool(flag) => match operand {
            "true" if *flag => Some(Ordering::Equal),
            "false" if !*flag => Some(Ordering::Equal),
            _ => None,
        },
        Value::Null => (operand == "null").then_some(Ordering::Equal),
        Value::Array(_) | Value::Object(_) => None,
    }
}

fn json_predicate(predicate: &Predicate, value: &Value) -> bool {
    let compare = |operand: &Operand| match operand {
        Operand::Text(text) => json_compare(value, text),
        Operand::Number(number) => json_compare(value, &number.to_string()),
    };
    match predicate {
        Predicate::Eq(operand) => compare(operand) == Some(Ordering::Equal),
        Predicate::In(operands) => operands
            .iter()
            .any(|operand| compare(operand) == Some(Ordering::Equal)),
        Predicate::Gt(operand) => ordered(value) && compare(operand) == Some(Ordering::Greater),
        Predicate::Gte(operand) => {
            ordered(value) && matches!(compare(operand), Some(Ordering::Greater | Ordering::Equal))
        }
        Predicate::Lt(operand) => ordered(value) && compare(operand) == Some(Ordering::Less),
        Predicate::Lte(operand) => {
            ordered(value) && matches!(compare(operand), Some(Ordering::Less | Ordering::Equal))
        }
        Predicate::Contains(needle) => value
            .as_str()
            .is_some_and(|text| contains_folded(text, needle)),
        Predicate::Prefix(prefix) => value
            .as_str()
            .is_some_and(|text| text.starts_with(prefix.as_str())),
        Predicate::Exists => true,
    }
}

/// Only strings and numbers have an order.
fn ordered(value: &Value) -> bool {
    matches!(value, Value::String(_) | Value::Number(_))
}

/// Case-insensitive substring test; `needle` is already lower-case.
pub fn contains_folded(haystack: &str, needle: &str) -> bool {
    if haystack.is_ascii() && needle.is_ascii() {
        let haystack = haystack.as_bytes();
        let needle = needle.as_bytes();
        if needle.is_empty() {
            return true;
        }
        return haystack
            .windows(needle.len())
            .any(|window| window.eq_ignore_ascii_case(needle));
    }
    haystack.to_lowercase().contains(needle)
}
