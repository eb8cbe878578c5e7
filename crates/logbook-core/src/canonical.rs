//! The canonical JSON form of an event, and its SHA-256 `hash`.
//!
//! The canonical form follows RFC 8785 (JSON Canonicalization Scheme): no whitespace; object members sorted by
//! the UTF-16 code units of their names; strings escaped only where JSON requires it (`\"`, `\\`, `\b`, `\f`,
//! `\n`, `\r`, `\t`, other control characters as `\u00xx`), everything else as literal UTF-8; numbers as
//! ECMAScript prints them. One deliberate deviation: an integer that fits `i64`/`u64` is printed with all of its
//! digits, even beyond 2^53, so that no two distinct integers share a hash.
//!
//! The bytes hashed for an event are the canonical form of the event exactly as the API returns it, with the
//! `hash` member removed. Anyone holding an exported event can recompute its hash with any JCS library.

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;

/// Appends the canonical form of `value` to `out`.
pub fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(number) => {
            if let Some(integer) = number.as_i64() {
                out.push_str(itoa::Buffer::new().format(integer));
            } else if let Some(unsigned) = number.as_u64() {
                out.push_str(itoa::Buffer::new().format(unsigned));
            } else {
                let float = number.as_f64().unwrap_or(0.0);
                let mut buffer = ryu_js::Buffer::new();
                out.push_str(buffer.format(float));
            }
        }
        Value::String(text) => write_canonical_str(text, out),
        Value::Array(items) => {
            out.push('[');
            for (position, item) in items.iter().enumerate() {
                if position > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(members) => write_canonical_map(members, out),
    }
}

/// Appends the canonical form of an object.
pub fn write_canonical_map(members: &serde_json::Map<String, Value>, out: &mut String) {
    out.push('{');
    let mut write_member = |position: usize, name: &str, value: &Value| {
        if position > 0 {
            out.push(',');
        }
        write_canonical_str(name, out);
        out.push(':');
        write_canonical(value, out);
    };
    // The map iterates in byte order, which is UTF-16 order whenever every name is ASCII.
    if members.keys().all(|name| name.is_ascii()) {
        for (position, (name, value)) in members.iter().enumerate() {
            write_member(position, name, value);
        }
    } else {
        let mut names: Vec<&String> = members.keys().collect();
        names.sort_by(|left, right| left.encode_utf16().cmp(right.encode_utf16()));
        for (position, name) in names.into_iter().enumerate() {
            write_member(position, name, &members[name.as_str()]);
        }
    }
    out.push('}');
}

/// Appends a canonical JSON string.
pub fn write_canonical_str(text: &str, out: &mut String) {
    out.push('"');
    // Every byte is looked at (no early exit), which the compiler turns into a vector loop: most strings
    // need no escape.
    if !text.bytes().fold(false, |escape, byte| {
        escape | (byte < 0x20) | (byte == b'"') | (byte == b'\\')
    }) {
        out.push_str(text);
        out.push('"');
        return;
    }
    for character in text.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            control if (control as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", control as u32);
            }
            other => out.push(other),
        }
    }
    out.push('"');
}

/// The canonical form as a string.
pub fn to_canonical_string(value: &Value) -> String {
    let mut out = String::with_capacity(256);
    write_canonical(value, &mut out);
    out
}

/// Hex SHA-256 of the canonical form of `value` with any top-level `hash` member left out.
pub fn event_hash(event_json: &Value) -> String {
    let canonical = match event_json {
        Value::Object(members) if members.contains_key("hash") => {
            let mut without_hash = members.clone();
            without_hash.remove("hash");
            to_canonical_string(&Value::Object(without_hash))
        }
        other => to_canonical_string(other),
    };
    hex_digest(canonical.as_bytes())
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn hex_digest(bytes: &[u8]) -> String {
    let mut hex = [0u8; 64];
    hex::encode_to_slice(Sha256::digest(bytes), &mut hex).expect("64 hex digits for 32 bytes");
    String::from_utf8(hex.to_vec()).expect("hex digits are ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_members_and_drops_whitespace() {
        let value = json!({"b": 1, "a": [true, null, "x"], "c": {"z": 1.5, "y": -0.0}});
        assert_eq!(
            to_canonical_string(&value),
            r#"{"a":[true,null,"x"],"b":1,"c":{"y":0,"z":1.5}}"#
        );
    }

    #[test]
    #[allow(clippy::excessive_precision)] // the input is the RFC 8785 test vector, digits included
    fn rfc8785_sample_numbers_and_strings() {
        let value = json!({"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
                           "string": "\u{20ac}$\u{000F}\u{000a}A'B\"\\\\\"/"});
        assert_eq!(
            to_canonical_string(&value),
            r#"{"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#
        );
    }

    #[test]
    fn integers_keep_every_digit_and_hashes_are_lower_case_hex() {
        let value = json!([i64::MIN, -1, 0, 7, i64::MAX, u64::MAX, 9007199254740993u64]);
        assert_eq!(
            to_canonical_string(&value),
            "[-9223372036854775808,-1,0,7,9223372036854775807,18446744073709551615,9007199254740993]"
        );
        assert_eq!(
            hex_digest(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn sorts_by_utf16_code_units_not_bytes() {
        // U+FB33 sorts after U+1F600 in UTF-8 bytes but before it in UTF-16 (surrogates are 0xD83D...).
        let value = json!({"\u{1F600}": 1, "\u{FB33}": 2});
        assert_eq!(
            to_canonical_string(&value),
            "{\"\u{1F600}\":1,\"\u{FB33}\":2}"
        );
    }

    #[test]
    fn hash_ignores_the_hash_member_and_nothing_else() {
        let event = json!({"id": "evt_1", "type": "a"});
        let mut with_hash = event.clone();
        with_hash["hash"] = json!("whatever");
        assert_eq!(event_hash(&event), event_hash(&with_hash));
        assert_ne!(
            event_hash(&event),
            event_hash(&json!({"id": "evt_1", "type": "b"}))
        );
    }
}
