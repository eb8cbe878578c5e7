//! The field-level delta between an audit event's `before` and `after` snapshots.
//!
//! Rules (API.md): every leaf is compared by JSON Pointer path. Objects are compared member by member, arrays
//! element by element (by position). A leaf is a scalar, an empty object or an empty array. A path present only
//! in `after` is `added`, only in `before` is `removed`, in both with different values `changed`. When a
//! container is replaced by a scalar (or an object by an array) the whole value is one `changed` entry.
//! CREATED (no `before`) therefore lists every leaf as `added`, DELETED (no `after`) every leaf as `removed`.
//! Entries come out in path order (object members sorted by name, array elements by index).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What happened at one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DiffOp {
    Added,
    Removed,
    Changed,
}

/// One entry of `changes.diff`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DiffEntry {
    /// JSON Pointer (RFC 6901) of the leaf; `""` is the whole snapshot.
    pub path: String,
    pub op: DiffOp,
    /// Absent for `added`; a JSON `null` leaf is `Some(Value::Null)`, which reads back as such.
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        deserialize_with = "present"
    )]
    #[schema(value_type = Option<Object>)]
    pub before: Option<Value>,
    /// Absent for `removed`; a JSON `null` leaf is `Some(Value::Null)`.
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        deserialize_with = "present"
    )]
    #[schema(value_type = Option<Object>)]
    pub after: Option<Value>,
}

/// A key that is present is `Some`, even when its value is `null` (serde's `Option` would read `null` as
/// `None`, and the event would then no longer match its hash). A missing key is `None` through `default`.
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// Computes the delta from `before` to `after`; either may be absent.
pub fn diff(before: Option<&Value>, after: Option<&Value>) -> Vec<DiffEntry> {
    let mut entries = Vec::new();
    let mut path = String::new();
    walk(&mut path, before, after, &mut entries);
    entries
}

fn walk(
    path: &mut String,
    before: Option<&Value>,
    after: Option<&Value>,
    out: &mut Vec<DiffEntry>,
) {
    match (before, after) {
        (None, None) => {}
        (Some(old), None) => leaves(path, old, DiffOp::Removed, out),
        (None, Some(new)) => leaves(path, new, DiffOp::Added, out),
        (Some(Value::Object(old)), Some(Value::Object(new)))
            if !old.is_empty() || !new.is_empty() =>
        {
            let mut names: Vec<&String> = old.keys().chain(new.keys()).collect();
            names.sort();
            names.dedup();
            for name in names {
                let saved_length = push_token(path, name);
                walk(path, old.get(name.as_str()), new.get(name.as_str()), out);
                path.truncate(saved_length);
            }
        }
        (Some(Value::Array(old)), Some(Value::Array(new)))
            if !old.is_empty() || !new.is_empty() =>
        {
            for index in 0..old.len().max(new.len()) {
                let saved_length = push_token(path, &index.to_string());
                walk(path, old.get(index), new.get(index), out);
                path.truncate(saved_length);
            }
        }
        (Some(old), Some(new)) => {
            if old != new {
                out.push(DiffEntry {
                    path: path.clone(),
                    op: DiffOp::Changed,
                    before: Some(old.clone()),
                    after: Some(new.clone()),
                });
            }
        }
    }
}

/// Emits every leaf under `value` with `op` (added or removed).
fn leaves(path: &mut String, value: &Value, op: DiffOp, out: &mut Vec<DiffEntry>) {
    let children: Vec<(String, &Value)> = match value {
        Value::Object(members) if !members.is_empty() => {
            let mut named: Vec<(String, &Value)> =
                members.iter().map(|(k, v)| (k.clone(), v)).collect();
            named.sort_by(|a, b| a.0.cmp(&b.0));
            named
        }
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .enumerate()
            .map(|(index, item)| (index.to_string(), item))
            .collect(),
        leaf => {
            let (before, after) = match op {
                DiffOp::Removed => (Some(leaf.clone()), None),
                _ => (None, Some(leaf.clone())),
            };
            out.push(DiffEntry {
                path: path.clone(),
                op,
                before,
                after,
            });
            return;
        }
    };
    for (token, child) in children {
        let saved_length = push_token(path, &token);
        leaves(path, child, op, out);
        path.truncate(saved_length);
    }
}

/// Appends `/token` with RFC 6901 escaping; returns the length to truncate back to.
fn push_token(path: &mut String, token: &str) -> usize {
    let saved_length = path.len();
    path.push('/');
    for character in token.chars() {
        match character {
            '~' => path.push_str("~0"),
            '/' => path.push_str("~1"),
            other => path.push(other),
        }
    }
    saved_length
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(path: &str, op: DiffOp, before: Option<Value>, after: Option<Value>) -> DiffEntry {
        DiffEntry {
            path: path.into(),
            op,
            before,
            after,
        }
    }

    #[test]
    fn created_lists_every_leaf_as_added() {
        let after =
            json!({"name": "Welcome", "settings": {"lang": "en", "tags": ["a", "b"]}, "empty": {}});
        assert_eq!(
            diff(None, Some(&after)),
            vec![
                entry("/empty", DiffOp::Added, None, Some(json!({}))),
                entry("/name", DiffOp::Added, None, Some(json!("Welcome"))),
                entry("/settings/lang", DiffOp::Added, None, Some(json!("en"))),
                entry("/settings/tags/0", DiffOp::Added, None, Some(json!("a"))),
                entry("/settings/tags/1", DiffOp::Added, None, Some(json!("b"))),
            ]
        );
    }

    #[test]
    fn deleted_lists_every_leaf_as_removed() {
        let before = json!({"name": "Old", "n": 3});
        assert_eq!(
            diff(Some(&before), None),
            vec![
                entry("/n", DiffOp::Removed, Some(json!(3)), None),
                entry("/name", DiffOp::Removed, Some(json!("Old")), None),
            ]
        );
    }

    #[test]
    fn updated_reports_nested_and_array_changes_only() {
        let before = json!({"name": "Hello World!", "is_active": true, "cfg": {"a": 1, "b": [1, 2, 3]}, "gone": 1});
        let after = json!({"name": "Good Morning 🌞", "is_active": true, "cfg": {"a": 2, "b": [1, 5]}, "new": null});
        assert_eq!(
            diff(Some(&before), Some(&after)),
            vec![
                entry("/cfg/a", DiffOp::Changed, Some(json!(1)), Some(json!(2))),
                entry("/cfg/b/1", DiffOp::Changed, Some(json!(2)), Some(json!(5))),
                entry("/cfg/b/2", DiffOp::Removed, Some(json!(3)), None),
                entry("/gone", DiffOp::Removed, Some(json!(1)), None),
                entry(
                    "/name",
                    DiffOp::Changed,
                    Some(json!("Hello World!")),
                    Some(json!("Good Morning 🌞"))
                ),
                entry("/new", DiffOp::Added, None, Some(json!(null))),
            ]
        );
    }

    #[test]
    fn container_replaced_by_scalar_is_one_change_and_tokens_are_escaped() {
        let before = json!({"a/b": {"x": 1}, "t~": 1});
        let after = json!({"a/b": "flat", "t~": 1});
        assert_eq!(
            diff(Some(&before), Some(&after)),
            vec![entry(
                "/a~1b",
                DiffOp::Changed,
                Some(json!({"x": 1})),
                Some(json!("flat"))
            )]
        );
    }

    #[test]
    fn unicode_keys_and_large_values_are_kept_whole() {
        let big_before = "é".repeat(100_000);
        let big_after = format!("{big_before}🌞");
        let long_list: Vec<u32> = (0..5_000).collect();
        let before = json!({"名前": big_before, "list": long_list});
        let mut longer = long_list.clone();
        longer.push(5_000);
        let after = json!({"名前": big_after, "list": longer});
        let entries = diff(Some(&before), Some(&after));
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[0],
            entry("/list/5000", DiffOp::Added, None, Some(json!(5_000)))
        );
        assert_eq!(entries[1].path, "/名前");
        assert_eq!(
            entries[1]
                .after
                .as_ref()
                .and_then(Value::as_str)
                .map(str::len),
            Some(200_004)
        );
    }

    #[test]
    fn identical_snapshots_have_no_diff() {
        let snapshot = json!({"a": [1, {"b": 2}], "c": {}});
        assert!(diff(Some(&snapshot), Some(&snapshot)).is_empty());
    }
}
