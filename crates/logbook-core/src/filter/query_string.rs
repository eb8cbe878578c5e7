//! The query string of `GET /v1/events` (and of the CLI): paging, time window, format and every filter form.
//!
//! - deep-object: `filter[<field>][<op>]=<value>`, and `filter[<field>]=<value>` for `eq`;
//! - shorthands for equality: `type`, `action`, `actor`, `entity_type`, `entity_id`, `outcome`, any field name
//!   such as `actor.type` or `entity.name`, resource keys (`bot_id=...`), metadata as `meta.<path>`,
//!   `meta[<path>]` or `metadata.<path>`; a comma-separated value means "any of";
//! - `q=`: the text syntax of [`super::q`];
//! - `since` (inclusive), `until` (exclusive), `order`, `limit` (alias `take`), `cursor`, `format`, `tenant`.
//!
//! All filters are ANDed. Parsing is two-phase so that a cursor can fix `now`: [`RawQuery::parse`] splits the
//! pairs, the caller reads the cursor, then [`RawQuery::to_list_query`] resolves relative times against the
//! `now` of the first page, which keeps a relative window (`since=1h`) stable across pages.

use super::{q, Field, Filter, Op};
use crate::error::{Error, Result};
use crate::time::{self, Millis};
use sha2::{Digest, Sha256};

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 1000;

/// Order of a listing, by `created_at` then `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    #[default]
    Desc,
    Asc,
}

impl Order {
    pub fn as_str(self) -> &'static str {
        match self {
            Order::Desc => "desc",
            Order::Asc => "asc",
        }
    }
}

/// Response formats of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Jsonl,
    Csv,
}

/// A parsed listing request.
#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    pub filter: Filter,
    /// Inclusive lower bound on `created_at`.
    pub since: Option<Millis>,
    /// Exclusive upper bound on `created_at`.
    pub until: Option<Millis>,
    pub order: Order,
    pub limit: usize,
    /// Explicit `format=`; `None` lets the `Accept` header decide.
    pub format: Option<Format>,
    /// `tenant=` (admin keys only).
    pub tenant: Option<String>,
}

const PARAMETERS: &str = "limit, take, order, cursor, since, until, format, tenant, q, filter[<field>][<op>], \
    type, action, actor, entity_type, entity_id, outcome, <resource>_id, meta.<path>, meta[<path>], metadata.<path>";

/// The decoded key/value pairs of a query string.
#[derive(Debug, Clone, Default)]
pub struct RawQuery {
    pairs: Vec<(String, String)>,
    /// The first parameter (as sent) whose percent-decoded bytes are not UTF-8; such a pair is left out.
    invalid_utf8: Option<String>,
}

/// Decodes one `application/x-www-form-urlencoded` component (`+` is a space), refusing bytes that are not
/// UTF-8 rather than replacing them.
fn decode_component(component: &str) -> Option<String> {
    let bytes: Vec<u8> = component
        .bytes()
        .map(|byte| if byte == b'+' { b' ' } else { byte })
        .collect();
    percent_encoding::percent_decode(&bytes)
        .decode_utf8()
        .ok()
        .map(|text| text.into_owned())
}

impl RawQuery {
    pub fn parse(query: &str) -> RawQuery {
        let mut pairs = Vec::new();
        let mut invalid_utf8 = None;
        for part in query.split('&').filter(|part| !part.is_empty()) {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            match (decode_component(key), decode_component(value)) {
                (Some(key), Some(value)) => pairs.push((key, value)),
                _ => {
                    invalid_utf8.get_or_insert_with(|| key.to_string());
                }
            }
        }
        RawQuery {
            pairs,
            invalid_utf8,
        }
    }

    pub fn from_pairs(pairs: Vec<(String, String)>) -> RawQuery {
        RawQuery {
            pairs,
            invalid_utf8: None,
        }
    }

    /// The last value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }

    /// A digest of the parameters that define the result set (everything but `cursor`, `limit`, `take` and
    /// `format`), stored in cursors to detect a change of parameters between pages.
    pub fn fingerprint(&self) -> String {
        let mut defining: Vec<&(String, String)> = self
            .pairs
            .iter()
            .filter(|(name, _)| !matches!(name.as_str(), "cursor" | "limit" | "take" | "format"))
            .collect();
        defining.sort();
        let mut hasher = Sha256::new();
        for (name, value) in defining {
            hasher.update(name.as_bytes());
            hasher.update([0]);
            hasher.update(value.as_bytes());
            hasher.update([0]);
        }
        hex::encode(&hasher.finalize()[..12])
    }

    /// Parses every parameter; `now` resolves relative times.
    pub fn to_list_query(&self, now: Millis) -> Result<ListQuery> {
        if let Some(key) = &self.invalid_utf8 {
            return Err(Error::invalid_filter(format!(
                "query parameter `{key}` is not valid UTF-8 once percent-decoded; encode text as UTF-8"
            )));
        }
        let mut filters = Vec::new();
        let mut query = ListQuery {
            filter: Filter::All,
            since: None,
            until: None,
            order: Order::Desc,
            limit: DEFAULT_LIMIT,
            format: None,
            tenant: None,
        };
        for (name, value) in &self.pairs {
            match name.as_str() {
                "limit" | "take" => {
                    query.limit = match value.trim().parse::<usize>() {
                        Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => limit,
                        _ => {
                            return Err(Error::invalid_filter(format!(
                            "`{name}` must be a whole number from 1 to {MAX_LIMIT}, got `{value}`"
                        )))
                        }
                    }
                }
                "order" => {
                    query.order = match value.to_ascii_lowercase().as_str() {
                        "desc" => Order::Desc,
                        "asc" => Order::Asc,
                        _ => {
                            return Err(Error::invalid_filter(format!(
                                "`order` must be `asc` or `desc`, got `{value}`"
                            )))
                        }
                    }
                }
                "since" => query.since = Some(parse_time_parameter(name, value, now)?),
                "until" => query.until = Some(parse_time_parameter(name, value, now)?),
                "format" => {
                    query.format = Some(match value.to_ascii_lowercase().as_str() {
                        "json" => Format::Json,
                        "jsonl" | "ndjson" => Format::Jsonl,
                        "csv" => Format::Csv,
                        _ => {
                            return Err(Error::invalid_filter(format!(
                                "`format` must be json, jsonl or csv, got `{value}`"
                            )))
                        }
                    })
                }
                "tenant" => query.tenant = Some(value.clone()),
                "cursor" => {}
                "q" => filters.push(q::parse(value, now)?),
                _ => filters.push(parse_filter_parameter(name, value, now)?),
            }
        }
        query.filter = Filter::and(filters);
        Ok(query)
    }
}

fn parse_time_parameter(name: &str, value: &str, now: Millis) -> Result<Millis> {
    time::parse_time(value, now)
        .map_err(|message| Error::invalid_filter(format!("`{name}`: {message}")))
}

/// One filter parameter in any of its notations.
fn parse_filter_parameter(name: &str, value: &str, now: Millis) -> Result<Filter> {
    if let Some(rest) = name.strip_prefix("filter[") {
        let (field_name, rest) = rest.split_once(']').ok_or_else(|| malformed(name))?;
        let op = if rest.is_empty() {
            Op::Eq
        } else {
            let op_name = rest
                .strip_prefix('[')
                .and_then(|inner| inner.strip_suffix(']'))
                .ok_or_else(|| malformed(name))?;
            Op::parse(op_name)?
        };
        return Field::parse(field_name)?.condition(op, value, now);
    }
    let field = if let Some(path) = name
        .strip_prefix("meta[")
        .and_then(|inner| inner.strip_suffix(']'))
    {
        Field::parse(&format!("metadata.{path}"))?
    } else {
        Field::parse(name).map_err(|_| {
            Error::invalid_filter(format!(
                "unknown query parameter `{name}`; accepted parameters are {PARAMETERS}"
            ))
        })?
    };
    let op = if value.contains(',') { Op::In } else { Op::Eq };
    field.condition(op, value, now)
}

fn malformed(name: &str) -> Error {
    Error::invalid_filter(format!(
        "malformed filter parameter `{name}`; expected filter[<field>]=<value> or filter[<field>][<op>]=<value>"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::{Condition, Operand, Predicate};

    const NOW: Millis = 1_795_341_600_000;

    fn parse(query: &str) -> Result<ListQuery> {
        RawQuery::parse(query).to_list_query(NOW)
    }

    fn condition(field: Field, predicate: Predicate) -> Filter {
        Filter::Condition(Condition { field, predicate })
    }

    fn text(value: &str) -> Operand {
        Operand::Text(value.into())
    }

    #[test]
    fn decodes_form_encoding_and_refuses_invalid_utf8() {
        let raw = RawQuery::parse("a+b=c%20d&&e=%E2%9C%93&flag&q=%EF%BF%BD");
        assert_eq!(raw.get("a b"), Some("c d"));
        assert_eq!(raw.get("e"), Some("\u{2713}"));
        assert_eq!(raw.get("flag"), Some(""));
        // A U+FFFD that the client sent is a value like any other.
        assert_eq!(raw.get("q"), Some("\u{FFFD}"));
        assert!(RawQuery::parse("type=%EF%BF%BD").to_list_query(NOW).is_ok());
        for query in ["type=%FF%FE", "meta.%C3=1", "ok=1&type=%E2%9C"] {
            let error = RawQuery::parse(query)
                .to_list_query(NOW)
                .unwrap_err()
                .to_string();
            assert!(error.contains("not valid UTF-8"), "{query}: {error}");
        }
    }

    #[test]
    fn every_notation_builds_the_same_ast() {
        let expected = condition(
            Field::Metadata("status".into()),
            Predicate::Eq(text("error")),
        );
        for query in [
            "meta.status=error",
            "meta[status]=error",
            "metadata.status=error",
            "filter[metadata.status]=error",
            "filter[meta.status][eq]=error",
            "q=meta.status:error",
        ] {
            assert_eq!(parse(query).unwrap().filter, expected, "{query}");
        }
    }

    #[test]
    fn shorthands_commas_and_paging() {
        let query =
            parse("type=a,b&action=deleted&bot_id=bot_1&limit=10&order=asc&since=1h&until=now")
                .unwrap();
        assert_eq!(query.limit, 10);
        assert_eq!(query.order, Order::Asc);
        assert_eq!(query.since, Some(NOW - 3_600_000));
        assert_eq!(query.until, Some(NOW));
        assert_eq!(
            query.filter,
            Filter::And(vec![
                condition(Field::Type, Predicate::In(vec![text("a"), text("b")])),
                condition(Field::Action, Predicate::Eq(text("DELETED"))),
                condition(
                    Field::Resource("bot_id".into()),
                    Predicate::Eq(text("bot_1"))
                ),
            ])
        );
        assert_eq!(parse("take=5").unwrap().limit, 5);
    }

    #[test]
    fn negative_operators_are_negations() {
        assert_eq!(
            parse("filter[actor.id][ne]=system").unwrap().filter,
            Filter::Not(Box::new(condition(
                Field::ActorId,
                Predicate::Eq(text("system"))
            )))
        );
        assert_eq!(
            parse("filter[created_at][gte]=2026-11-22").unwrap().filter,
            condition(
                Field::CreatedAt,
                Predicate::Gte(Operand::Number(NOW - 36_000_000))
            )
        );
    }

    #[test]
    fn errors_say_what_is_accepted() {
        let cases = [
            ("colour=red", "accepted parameters"),
            ("filter[colour]=red", "accepted fields"),
            ("filter[type][like]=x", "accepted operators"),
            ("filter[type", "malformed"),
            ("limit=0", "1 to 1000"),
            ("limit=5000", "1 to 1000"),
            ("order=up", "asc"),
            ("since=yesterday", "RFC 3339"),
            ("filter[seq][gt]=abc", "whole number"),
            ("filter[created_at][contains]=1", "text operators"),
            ("format=xml", "jsonl"),
            ("filter[type][exists]=maybe", "true or false"),
        ];
        for (query, needle) in cases {
            let error = parse(query).unwrap_err().to_string();
            assert!(error.contains(needle), "{query}: {error}");
        }
    }

    #[test]
    fn fingerprint_ignores_paging_but_not_filters() {
        let first = RawQuery::parse("type=a&limit=5&since=1h").fingerprint();
        assert_eq!(
            first,
            RawQuery::parse("since=1h&type=a&limit=9&cursor=x").fingerprint()
        );
        assert_ne!(first, RawQuery::parse("type=b&since=1h").fingerprint());
    }
}
