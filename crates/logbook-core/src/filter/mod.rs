//! One filter AST for every filter syntax, and its evaluation against an event.
//!
//! Two parsers produce a [`Filter`]: [`query_string`] (deep-object `filter[field][op]=v`, shorthands such as
//! `type=a,b`, `meta.status=error`) and [`q`] (the text syntax `action:DELETED -actor.id:system "renamed"`).
//! The storage engines execute the same AST: the embedded engine narrows candidates with its index and then
//! calls [`Filter::matches`] on each candidate, so the evaluator here is the single definition of what a filter
//! means.
//!
//! Semantics, for every field:
//! - `eq`/`in` compare exactly (actions are upper-cased, outcomes lower-cased first); `ne`, `not_in` and
//!   `not_contains` are the negation of `eq`, `in` and `contains`, so they also match events without the field.
//! - `gt`/`gte`/`lt`/`lte` compare times as instants, `seq` as a number, metadata and context values as
//!   numbers when both sides are numbers, and text lexicographically otherwise.
//! - `contains` is a case-insensitive substring test; `prefix` is case-sensitive.
//! - `exists` (`true` unless the value is `false`) tests presence.
//! - Metadata paths are dotted (`metadata.order.total`); where a path meets an array every element is tried, so
//!   `metadata.tags=beta` matches `{"tags": ["alpha", "beta"]}`.

pub mod eval;
pub mod q;
pub mod query_string;

use crate::error::{Error, Result};
use crate::time::{self, Millis};

/// A filter over events of one tenant.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Matches every event.
    All,
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    Condition(Condition),
    /// Case-insensitive phrase search in `description`.
    Text(String),
}

impl Filter {
    /// Conjunction that drops `All` and flattens nested `And`s.
    pub fn and(parts: Vec<Filter>) -> Filter {
        let mut flat = Vec::new();
        for part in parts {
            match part {
                Filter::All => {}
                Filter::And(inner) => flat.extend(inner),
                other => flat.push(other),
            }
        }
        match flat.len() {
            0 => Filter::All,
            1 => flat.pop().expect("one element"),
            _ => Filter::And(flat),
        }
    }

    pub fn negate(self) -> Filter {
        match self {
            Filter::Not(inner) => *inner,
            other => Filter::Not(Box::new(other)),
        }
    }
}

/// One `field op value` test.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub field: Field,
    pub predicate: Predicate,
}

/// The positive operators; negative ones are expressed with [`Filter::Not`].
#[derive(Debug, Clone, PartialEq)]
pub enum Predicate {
    Eq(Operand),
    In(Vec<Operand>),
    Gt(Operand),
    Gte(Operand),
    Lt(Operand),
    Lte(Operand),
    /// Lower-cased needle.
    Contains(String),
    Prefix(String),
    Exists,
}

/// A comparison value: text for text, metadata and context fields; a number for times (milliseconds) and `seq`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operand {
    Text(String),
    Number(i64),
}

/// The operators of the API, as written by clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    Contains,
    NotContains,
    Prefix,
    In,
    NotIn,
    Exists,
}

pub const ACCEPTED_OPERATORS: &str =
    "eq, ne, gt, gte, lt, lte, contains, not_contains, prefix, in, not_in, exists";

impl Op {
    pub fn parse(name: &str) -> Result<Op> {
        Ok(match name {
            "eq" => Op::Eq,
            "ne" | "neq" => Op::Ne,
            "gt" => Op::Gt,
            "gte" => Op::Gte,
            "lt" => Op::Lt,
            "lte" => Op::Lte,
            "contains" => Op::Contains,
            "not_contains" => Op::NotContains,
            "prefix" | "starts_with" => Op::Prefix,
            "in" => Op::In,
            "not_in" | "nin" => Op::NotIn,
            "exists" => Op::Exists,
            other => {
                return Err(Error::invalid_filter(format!(
                    "unknown operator `{other}`; accepted operators are {ACCEPTED_OPERATORS}"
                )))
            }
        })
    }
}

/// A filterable field.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    Id,
    Seq,
    Type,
    Action,
    ActorId,
    ActorType,
    ActorName,
    EntityType,
    EntityId,
    EntityName,
    Outcome,
    Description,
    CreatedAt,
    ReceivedAt,
    Resource(String),
    Context(String),
    /// Dotted path below `metadata`.
    Metadata(String),
}

pub const ACCEPTED_FIELDS: &str = "id, seq, type, action, actor.id, actor.type, actor.name, entity.type, entity.id, \
    entity.name, outcome, description, created_at, received_at, resources.<key> (or <key>_id), context.<key>, \
    metadata.<path> (or meta.<path>)";

/// How a field's values compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// Plain strings.
    Text,
    /// Milliseconds; operands accept every time form.
    Time,
    /// The per-tenant sequence number.
    Seq,
    /// Any JSON value (metadata, context).
    Json,
}

impl Field {
    /// Parses a field name, with the aliases `actor` (actor.id), `entity_type`, `entity_id`, `entity_name`,
    /// `meta.<path>`, `resource.<key>` and bare resource keys ending in `_id`.
    pub fn parse(name: &str) -> Result<Field> {
        let field = match name {
            "id" => Field::Id,
            "seq" => Field::Seq,
            "type" => Field::Type,
            "action" => Field::Action,
            "actor" | "actor.id" | "actor_id" => Field::ActorId,
            "actor.type" | "actor_type" => Field::ActorType,
            "actor.name" | "actor_name" => Field::ActorName,
            "entity.type" | "entity_type" => Field::EntityType,
            "entity.id" | "entity_id" => Field::EntityId,
            "entity.name" | "entity_name" => Field::EntityName,
            "outcome" => Field::Outcome,
            "description" => Field::Description,
            "created_at" => Field::CreatedAt,
            "received_at" => Field::ReceivedAt,
            other => {
                if let Some(key) = other
                    .strip_prefix("resources.")
                    .or_else(|| other.strip_prefix("resource."))
                {
                    Field::Resource(checked_key(other, key)?.to_string())
                } else if let Some(key) = other.strip_prefix("context.") {
                    Field::Context(checked_key(other, key)?.to_string())
                } else if let Some(path) = other
                    .strip_prefix("metadata.")
                    .or_else(|| other.strip_prefix("meta."))
                {
                    Field::Metadata(checked_path(other, path)?.to_string())
                } else if other.ends_with("_id") && other.len() > 3 && is_key(other) {
                    Field::Resource(other.to_string())
                } else {
                    return Err(Error::invalid_filter(format!(
                        "unknown field `{other}`; accepted fields are {ACCEPTED_FIELDS}"
                    )));
                }
            }
        };
        Ok(field)
    }

    /// The canonical name, as accepted by [`Field::parse`].
    pub fn name(&self) -> String {
        match self {
            Field::Id => "id".into(),
            Field::Seq => "seq".into(),
            Field::Type => "type".into(),
            Field::Action => "action".into(),
            Field::ActorId => "actor.id".into(),
            Field::ActorType => "actor.type".into(),
            Field::ActorName => "actor.name".into(),
            Field::EntityType => "entity.type".into(),
            Field::EntityId => "entity.id".into(),
            Field::EntityName => "entity.name".into(),
            Field::Outcome => "outcome".into(),
            Field::Description => "description".into(),
            Field::CreatedAt => "created_at".into(),
            Field::ReceivedAt => "received_at".into(),
            Field::Resource(key) => format!("resources.{key}"),
            Field::Context(key) => format!("context.{key}"),
            Field::Metadata(path) => format!("metadata.{path}"),
        }
    }

    pub fn kind(&self) -> FieldKind {
        match self {
            Field::CreatedAt | Field::ReceivedAt => FieldKind::Time,
            Field::Seq => FieldKind::Seq,
            Field::Context(_) | Field::Metadata(_) => FieldKind::Json,
            _ => FieldKind::Text,
        }
    }

    /// Builds the filter for `self op value`, checking that the operator applies and the value parses.
    /// `now` resolves relative times.
    pub fn condition(self, op: Op, value: &str, now: Millis) -> Result<Filter> {
        let kind = self.kind();
        let operand = |text: &str| -> Result<Operand> { self.operand(text, now) };
        let predicate = match op {
            Op::Eq | Op::Ne => Predicate::Eq(operand(value)?),
            Op::Gt => Predicate::Gt(operand(value)?),
            Op::Gte => Predicate::Gte(operand(value)?),
            Op::Lt => Predicate::Lt(operand(value)?),
            Op::Lte => Predicate::Lte(operand(value)?),
            Op::In | Op::NotIn => {
                let values: Vec<Operand> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|part| !part.is_empty())
                    .map(operand)
                    .collect::<Result<_>>()?;
                if values.is_empty() {
                    return Err(Error::invalid_filter(format!(
                        "`{}` with `in` needs a comma-separated list of values",
                        self.name()
                    )));
                }
                Predicate::In(values)
            }
            Op::Contains | Op::NotContains | Op::Prefix => {
                if matches!(kind, FieldKind::Time | FieldKind::Seq) {
                    return Err(Error::invalid_filter(format!(
                        "`{}` does not support text operators; use eq, ne, gt, gte, lt, lte, in, not_in or exists",
                        self.name()
                    )));
                }
                if value.is_empty() {
                    return Err(Error::invalid_filter(format!(
                        "`{}` needs a non-empty value",
                        self.name()
                    )));
                }
                if op == Op::Prefix {
                    Predicate::Prefix(value.to_string())
                } else {
                    Predicate::Contains(value.to_lowercase())
                }
            }
            Op::Exists => {
                let wanted = match value.trim() {
                    "" | "true" | "1" => true,
                    "false" | "0" => false,
                    other => {
                        return Err(Error::invalid_filter(format!(
                            "`exists` takes true or false, got `{other}`"
                        )))
                    }
                };
                let exists = Filter::Condition(Condition {
                    field: self,
                    predicate: Predicate::Exists,
                });
                return Ok(if wanted { exists } else { exists.negate() });
            }
        };
        let condition = Filter::Condition(Condition {
            field: self,
            predicate,
        });
        Ok(match op {
            Op::Ne | Op::NotIn | Op::NotContains => condition.negate(),
            _ => condition,
        })
    }

    fn operand(&self, text: &str, now: Millis) -> Result<Operand> {
        match self.kind() {
            FieldKind::Time => time::parse_time(text, now)
                .map(Operand::Number)
                .map_err(|message| Error::invalid_filter(format!("`{}`: {message}", self.name()))),
            FieldKind::Seq => text
                .trim()
                .parse::<i64>()
                .map(Operand::Number)
                .map_err(|_| {
                    Error::invalid_filter(format!("`seq` takes a whole number, got `{text}`"))
                }),
            FieldKind::Text | FieldKind::Json => Ok(Operand::Text(match self {
                Field::Action => text.to_uppercase(),
                Field::Outcome => text.to_lowercase(),
                _ => text.to_string(),
            })),
        }
    }
}

fn is_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 64
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn checked_key<'a>(field: &str, key: &'a str) -> Result<&'a str> {
    if is_key(key) {
        Ok(key)
    } else {
        Err(Error::invalid_filter(format!(
            "`{field}`: a key is 1 to 64 letters, digits, `_` or `-`"
        )))
    }
}

fn checked_path<'a>(field: &str, path: &'a str) -> Result<&'a str> {
    let valid =
        !path.is_empty() && path.len() <= 512 && path.split('.').all(|segment| !segment.is_empty());
    if valid {
        Ok(path)
    } else {
        Err(Error::invalid_filter(format!(
            "`{field}`: a metadata path is dot-separated names, like metadata.order.total"
        )))
    }
}
