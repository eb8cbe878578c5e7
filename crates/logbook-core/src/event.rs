//! The event: what clients send, how it is validated, and what the server stores and returns.
//!
//! A client sends a JSON object ([`NewEvent::from_json`] validates it); the writer of a storage engine assigns
//! `id`, `seq`, `tenant` and `received_at` and calls [`NewEvent::into_event`], which computes `changes.diff` and
//! the `hash`. An [`Event`] is immutable from then on. Its JSON form (field order included) is the API's.

use crate::canonical;
use crate::diff::{diff, DiffEntry};
use crate::error::{Error, Result};
use crate::time::{self, Millis};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::ops::Range;

/// Input limits. Violations are rejected with a 400 (or 413 for size).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Largest JSON text of one event, in bytes.
    pub max_event_bytes: usize,
    /// Deepest nesting of `metadata`, `context` and the `changes` snapshots (an object directly under the field
    /// is depth 1).
    pub max_depth: usize,
    /// Most events in one ingest request.
    pub max_batch_events: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_event_bytes: 256 * 1024,
            max_depth: 32,
            max_batch_events: 10_000,
        }
    }
}

/// Who acted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Actor {
    pub id: String,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none", default)]
    pub actor_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub name: Option<String>,
}

/// What was acted upon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Entity {
    #[serde(rename = "type")]
    pub entity_type: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub name: Option<String>,
}

/// Before/after snapshots of an audited entity and the server-computed delta between them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Changes {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[schema(value_type = Option<Object>)]
    pub before: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[schema(value_type = Option<Object>)]
    pub after: Option<Value>,
    #[serde(default)]
    pub diff: Vec<DiffEntry>,
}

/// Whether the action succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    #[default]
    Success,
    Failure,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        }
    }
}

/// A stored event, exactly as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    pub id: String,
    pub seq: u64,
    pub tenant: String,
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(with = "rfc3339_millis")]
    #[schema(value_type = String, format = DateTime, example = "2026-11-22T10:00:00.123Z")]
    pub created_at: Millis,
    #[serde(with = "rfc3339_millis")]
    #[schema(value_type = String, format = DateTime)]
    pub received_at: Millis,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub actor: Option<Actor>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub action: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub entity: Option<Entity>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub resources: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Map::is_empty", default)]
    #[schema(value_type = Object)]
    pub context: Map<String, Value>,
    #[serde(default)]
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub changes: Option<Changes>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub idempotency_key: Option<String>,
    pub hash: String,
}

/// A stored event as the open reads it: `changes` is only checked to be JSON (the open parses each stored event
/// to rebuild the index; a third of the events carry before/after snapshots and their diff, which would
/// otherwise become JSON trees only to be dropped), and so are resources, context, description and metadata
/// when an index file already holds the event's fields (`R`, `C`, `D` and `M` are then `IgnoredAny`).
#[derive(Deserialize)]
struct Stored<R, C, D, M> {
    id: String,
    seq: u64,
    tenant: String,
    #[serde(rename = "type")]
    event_type: String,
    #[serde(with = "rfc3339_millis")]
    created_at: Millis,
    #[serde(with = "rfc3339_millis")]
    received_at: Millis,
    #[serde(default)]
    actor: Option<Actor>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    entity: Option<Entity>,
    #[serde(default)]
    resources: R,
    #[serde(default)]
    context: C,
    #[serde(default)]
    outcome: Outcome,
    #[serde(default)]
    description: D,
    #[serde(default)]
    metadata: M,
    #[serde(default)]
    #[allow(dead_code)]
    changes: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    idempotency_key: Option<String>,
    hash: String,
}

impl<R, C, D, M> Stored<R, C, D, M> {
    /// The event, with the four values as `values` makes them.
    fn into_event(
        self,
        values: impl FnOnce(
            R,
            C,
            D,
            M,
        ) -> (
            BTreeMap<String, String>,
            Map<String, Value>,
            Option<String>,
            Option<Value>,
        ),
    ) -> Event {
        let (resources, context, description, metadata) = values(
            self.resources,
            self.context,
            self.description,
            self.metadata,
        );
        Event {
            id: self.id,
            seq: self.seq,
            tenant: self.tenant,
            event_type: self.event_type,
            created_at: self.created_at,
            received_at: self.received_at,
            actor: self.actor,
            action: self.action,
            entity: self.entity,
            resources,
            context,
            outcome: self.outcome,
            description,
            metadata,
            changes: None,
            idempotency_key: self.idempotency_key,
            hash: self.hash,
        }
    }
}

type Ignored = serde::de::IgnoredAny;

impl Event {
    /// Parses a stored event for its place in the index only (id, seq, times, the top-level text fields, its
    /// idempotency key): resources, context, description, metadata and changes are checked to be JSON and left
    /// empty. For an open whose index files already hold the event's fields.
    pub fn from_stored_json_for_entries(text: &str) -> serde_json::Result<Event> {
        let stored: Stored<Ignored, Ignored, Ignored, Ignored> = serde_json::from_str(text)?;
        Ok(stored.into_event(|_, _, _, _| (BTreeMap::new(), Map::new(), None, None)))
    }

    /// Parses a stored event for indexing: as [`Event`]'s own parsing, except that `changes` is only checked to
    /// be JSON and is left `None`. Not for anything that returns or hashes the event.
    pub fn from_stored_json_for_index(text: &str) -> serde_json::Result<Event> {
        type ForIndex =
            Stored<BTreeMap<String, String>, Map<String, Value>, Option<String>, Option<Value>>;
        let stored: ForIndex = serde_json::from_str(text)?;
        Ok(
            stored.into_event(|resources, context, description, metadata| {
                (resources, context, description, metadata)
            }),
        )
    }

    /// Recomputes the hash from the event's other fields (see [`canonical`] for the exact bytes).
    pub fn compute_hash(&self) -> String {
        canonical::hex_digest(self.canonical_form().as_bytes())
    }

    /// The RFC 8785 canonical form of the event's API JSON without `hash`, written straight from the typed
    /// fields (no intermediate JSON tree). Members are emitted in sorted order; every key Logbook itself
    /// names, and every resource and context key (validated to ASCII), sorts the same in bytes and in UTF-16.
    /// Equal to `canonical::event_hash` of the serialized event, which a test checks.
    pub fn canonical_form(&self) -> String {
        self.canonical_parts().0
    }

    /// The event's stored JSON: byte for byte what `serde_json::to_vec(self)` writes (a test checks), with
    /// its JSON values (context, metadata, snapshots) copied from `canonical` (its [`Event::canonical_parts`])
    /// wherever `fragments` has their text. The writer serialized every event twice before, once for its hash
    /// and once to store it.
    fn stored_json(&self, canonical: &str, fragments: &Fragments) -> Vec<u8> {
        let mut out = Vec::with_capacity(canonical.len() + 160);
        let copied = |out: &mut Vec<u8>, fragment: &Option<Range<usize>>| match fragment {
            Some(range) => {
                out.extend_from_slice(&canonical.as_bytes()[range.clone()]);
                true
            }
            None => false,
        };
        let value = |out: &mut Vec<u8>, value: &Value, fragment: &Option<Range<usize>>| {
            if !copied(out, fragment) {
                serde_json::to_writer(&mut *out, value).expect("a JSON value serializes");
            }
        };
        let text = |out: &mut Vec<u8>, name: &str, text: &str| {
            out.push(b',');
            out.push(b'"');
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
            serde_json::to_writer(&mut *out, text).expect("a string serializes");
        };
        out.extend_from_slice(b"{\"id\":");
        serde_json::to_writer(&mut out, &self.id).expect("a string serializes");
        out.extend_from_slice(b",\"seq\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.seq).as_bytes());
        text(&mut out, "tenant", &self.tenant);
        text(&mut out, "type", &self.event_type);
        text(
            &mut out,
            "created_at",
            time::MillisText::new(self.created_at).as_str(),
        );
        text(
            &mut out,
            "received_at",
            time::MillisText::new(self.received_at).as_str(),
        );
        if let Some(actor) = &self.actor {
            out.extend_from_slice(b",\"actor\":");
            serde_json::to_writer(&mut out, actor).expect("an actor serializes");
        }
        if let Some(action) = &self.action {
            text(&mut out, "action", action);
        }
        if let Some(entity) = &self.entity {
            out.extend_from_slice(b",\"entity\":");
            serde_json::to_writer(&mut out, entity).expect("an entity serializes");
        }
        if !self.resources.is_empty() {
            out.extend_from_slice(b",\"resources\":");
            serde_json::to_writer(&mut out, &self.resources).expect("resources serialize");
        }
        if !self.context.is_empty() {
            out.extend_from_slice(b",\"context\":");
            if !copied(&mut out, &fragments.context) {
                serde_json::to_writer(&mut out, &self.context).expect("context serializes");
            }
        }
        text(&mut out, "outcome", self.outcome.as_str());
        if let Some(description) = &self.description {
            text(&mut out, "description", description);
        }
        if let Some(metadata) = &self.metadata {
            out.extend_from_slice(b",\"metadata\":");
            value(&mut out, metadata, &fragments.metadata);
        }
        if let Some(changes) = &self.changes {
            out.extend_from_slice(b",\"changes\":{");
            let mut first = true;
            for (name, snapshot, fragment) in [
                ("before", &changes.before, &fragments.before),
                ("after", &changes.after, &fragments.after),
            ] {
                if let Some(snapshot) = snapshot {
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    out.push(b'"');
                    out.extend_from_slice(name.as_bytes());
                    out.extend_from_slice(b"\":");
                    value(&mut out, snapshot, fragment);
                }
            }
            if !first {
                out.push(b',');
            }
            out.extend_from_slice(b"\"diff\":");
            serde_json::to_writer(&mut out, &changes.diff).expect("a diff serializes");
            out.push(b'}');
        }
        if let Some(key) = &self.idempotency_key {
            text(&mut out, "idempotency_key", key);
        }
        text(&mut out, "hash", &self.hash);
        out.push(b'}');
        out
    }

    /// The canonical form, and where its context, metadata and snapshots are in it (those whose text is also
    /// serde_json's, see [`is_plain`]).
    fn canonical_parts(&self) -> (String, Fragments) {
        let mut fragments = Fragments::default();
        let mut out = String::with_capacity(512);
        let mut members = CanonicalObject::new(&mut out);
        if let Some(action) = &self.action {
            members.string("action", action);
        }
        if let Some(actor) = &self.actor {
            members.key("actor");
            let mut inner = CanonicalObject::new(members.out());
            inner.string("id", &actor.id);
            if let Some(name) = &actor.name {
                inner.string("name", name);
            }
            if let Some(actor_type) = &actor.actor_type {
                inner.string("type", actor_type);
            }
            inner.finish();
        }
        if let Some(changes) = &self.changes {
            members.key("changes");
            let mut inner = CanonicalObject::new(members.out());
            if let Some(after) = &changes.after {
                fragments.after = Some(inner.value("after", after)).filter(|_| is_plain(after));
            }
            if let Some(before) = &changes.before {
                fragments.before = Some(inner.value("before", before)).filter(|_| is_plain(before));
            }
            inner.key("diff");
            let out = inner.out();
            out.push('[');
            for (position, entry) in changes.diff.iter().enumerate() {
                if position > 0 {
                    out.push(',');
                }
                let mut item = CanonicalObject::new(out);
                if let Some(after) = &entry.after {
                    item.value("after", after);
                }
                if let Some(before) = &entry.before {
                    item.value("before", before);
                }
                item.string(
                    "op",
                    match entry.op {
                        crate::diff::DiffOp::Added => "added",
                        crate::diff::DiffOp::Removed => "removed",
                        crate::diff::DiffOp::Changed => "changed",
                    },
                );
                item.string("path", &entry.path);
                item.finish();
            }
            inner.out().push(']');
            inner.finish();
        }
        if !self.context.is_empty() {
            members.key("context");
            let start = members.out().len();
            canonical::write_canonical_map(&self.context, members.out());
            fragments.context =
                Some(start..members.out().len()).filter(|_| is_plain_map(&self.context));
        }
        members.string(
            "created_at",
            time::MillisText::new(self.created_at).as_str(),
        );
        if let Some(description) = &self.description {
            members.string("description", description);
        }
        if let Some(entity) = &self.entity {
            members.key("entity");
            let mut inner = CanonicalObject::new(members.out());
            if let Some(id) = &entity.id {
                inner.string("id", id);
            }
            if let Some(name) = &entity.name {
                inner.string("name", name);
            }
            inner.string("type", &entity.entity_type);
            inner.finish();
        }
        members.string("id", &self.id);
        if let Some(key) = &self.idempotency_key {
            members.string("idempotency_key", key);
        }
        if let Some(metadata) = &self.metadata {
            fragments.metadata =
                Some(members.value("metadata", metadata)).filter(|_| is_plain(metadata));
        }
        members.string("outcome", self.outcome.as_str());
        members.string(
            "received_at",
            time::MillisText::new(self.received_at).as_str(),
        );
        if !self.resources.is_empty() {
            members.key("resources");
            let mut inner = CanonicalObject::new(members.out());
            for (key, value) in &self.resources {
                inner.string(key, value);
            }
            inner.finish();
        }
        members.key("seq");
        members.out().push_str(&self.seq.to_string());
        members.string("tenant", &self.tenant);
        members.string("type", &self.event_type);
        members.finish();
        (out, fragments)
    }
}

/// Where an event's JSON values are in its canonical form (byte ranges), for those whose canonical text is
/// also what serde_json writes.
#[derive(Default)]
struct Fragments {
    context: Option<Range<usize>>,
    metadata: Option<Range<usize>>,
    before: Option<Range<usize>>,
    after: Option<Range<usize>>,
}

/// Whether `value`'s canonical text is also what serde_json writes for it: every object key ASCII (both then
/// keep the map's order), every number an integer or a decimal both print alike. Both escape strings the
/// same way. Integral floats (`1.0`, serde_json; `1`, RFC 8785) and exponents differ.
fn is_plain(value: &Value) -> bool {
    match value {
        Value::Number(number) => {
            number.is_i64()
                || number.is_u64()
                || number.as_f64().is_some_and(|float| {
                    float.fract() != 0.0 && (1e-4..1e15).contains(&float.abs())
                })
        }
        Value::Array(items) => items.iter().all(is_plain),
        Value::Object(members) => is_plain_map(members),
        Value::Null | Value::Bool(_) | Value::String(_) => true,
    }
}

/// [`is_plain`] of an object.
fn is_plain_map(members: &Map<String, Value>) -> bool {
    members
        .iter()
        .all(|(key, item)| key.is_ascii() && is_plain(item))
}

/// Writes an object's members in the order given (the caller gives them sorted).
struct CanonicalObject<'a> {
    out: &'a mut String,
    empty: bool,
}

impl<'a> CanonicalObject<'a> {
    fn new(out: &'a mut String) -> Self {
        out.push('{');
        CanonicalObject { out, empty: true }
    }

    fn key(&mut self, name: &str) {
        if !self.empty {
            self.out.push(',');
        }
        self.empty = false;
        canonical::write_canonical_str(name, self.out);
        self.out.push(':');
    }

    fn string(&mut self, name: &str, value: &str) {
        self.key(name);
        canonical::write_canonical_str(value, self.out);
    }

    /// Writes a member whose value is JSON; returns where the value is in the output.
    fn value(&mut self, name: &str, value: &Value) -> Range<usize> {
        self.key(name);
        let start = self.out.len();
        canonical::write_canonical(value, self.out);
        start..self.out.len()
    }

    fn out(&mut self) -> &mut String {
        self.out
    }

    fn finish(self) {
        self.out.push('}');
    }
}

/// (De)serializes milliseconds as RFC 3339 UTC with milliseconds.
pub mod rfc3339_millis {
    use crate::time::{format_millis, parse_time, Millis};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(millis: &Millis, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_millis(*millis))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Millis, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_time(&text, 0).map_err(serde::de::Error::custom)
    }
}

/// A validated event as sent by a client, before the server assigns its identity.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Target tenant; only an admin key may name one.
    pub tenant: Option<String>,
    pub event_type: String,
    pub created_at: Option<Millis>,
    pub actor: Option<Actor>,
    pub action: Option<String>,
    pub entity: Option<Entity>,
    pub resources: BTreeMap<String, String>,
    pub context: Map<String, Value>,
    pub outcome: Outcome,
    pub description: Option<String>,
    pub metadata: Option<Value>,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub idempotency_key: Option<String>,
}

const INPUT_FIELDS: &str =
    "type, created_at, actor, action, entity, resources, context, outcome, description, \
                            metadata, changes, idempotency_key, tenant";

/// The top-level fields a client may send, in the order of `INPUT_FIELDS`.
const INPUT_FIELD_NAMES: [&str; 13] = [
    "type",
    "created_at",
    "actor",
    "action",
    "entity",
    "resources",
    "context",
    "outcome",
    "description",
    "metadata",
    "changes",
    "idempotency_key",
    "tenant",
];

/// Takes a named field out of a JSON object (nested objects) or of the event's slots (top level).
trait TakeField {
    fn take_field(&mut self, name: &str) -> Option<Value>;
}

impl TakeField for Map<String, Value> {
    fn take_field(&mut self, name: &str) -> Option<Value> {
        self.remove(name)
    }
}

/// The event object split into one slot per accepted field.
struct InputFields {
    slots: [Option<Value>; INPUT_FIELD_NAMES.len()],
}

impl InputFields {
    fn from_map(map: Map<String, Value>) -> Result<InputFields> {
        let mut slots: [Option<Value>; INPUT_FIELD_NAMES.len()] = Default::default();
        for (name, value) in map {
            match INPUT_FIELD_NAMES.iter().position(|known| *known == name) {
                Some(slot) => slots[slot] = Some(value),
                None if matches!(name.as_str(), "id" | "seq" | "received_at" | "hash") => {
                    return Err(Error::invalid_event(
                        name.clone(),
                        format!("`{name}` is assigned by the server and cannot be sent"),
                    ))
                }
                None => {
                    return Err(Error::invalid_event(
                        name.clone(),
                        format!("unknown field `{name}`; accepted fields are {INPUT_FIELDS}"),
                    ))
                }
            }
        }
        Ok(InputFields { slots })
    }

    fn is_empty(&self) -> bool {
        self.slots.iter().all(Option::is_none)
    }
}

/// The top-level object of an event's JSON text, read straight into [`InputFields`] slots: the keys are
/// matched as they are read, without building the object as a map first. Anything this does not take as
/// it comes (an unknown or repeated key, a value that is not an object) is an error, and the caller
/// parses the text the ordinary way to say what is wrong.
struct TopLevel(InputFields);

impl<'de> serde::Deserialize<'de> for TopLevel {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_map(TopLevelVisitor)
    }
}

struct TopLevelVisitor;

impl<'de> serde::de::Visitor<'de> for TopLevelVisitor {
    type Value = TopLevel;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("an event object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut access: A,
    ) -> std::result::Result<TopLevel, A::Error> {
        use serde::de::Error as _;
        let mut slots: [Option<Value>; INPUT_FIELD_NAMES.len()] = Default::default();
        while let Some(SlotOf(slot)) = access.next_key::<SlotOf>()? {
            if slots[slot].is_some() {
                return Err(A::Error::custom("a repeated field"));
            }
            let crate::json::Strict(value) = access.next_value()?;
            slots[slot] = Some(value);
        }
        Ok(TopLevel(InputFields { slots }))
    }
}

/// A top-level key as its slot in [`INPUT_FIELD_NAMES`]; any other key is an error.
struct SlotOf(usize);

impl<'de> serde::Deserialize<'de> for SlotOf {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        struct SlotVisitor;
        impl serde::de::Visitor<'_> for SlotVisitor {
            type Value = SlotOf;
            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("an event field")
            }
            fn visit_str<E: serde::de::Error>(self, key: &str) -> std::result::Result<SlotOf, E> {
                INPUT_FIELD_NAMES
                    .iter()
                    .position(|known| *known == key)
                    .map(SlotOf)
                    .ok_or_else(|| E::custom("an unknown field"))
            }
        }
        deserializer.deserialize_str(SlotVisitor)
    }
}

impl TakeField for InputFields {
    fn take_field(&mut self, name: &str) -> Option<Value> {
        let slot = INPUT_FIELD_NAMES.iter().position(|known| *known == name)?;
        self.slots[slot].take()
    }
}

/// Identity of a stored event, assigned by the writer.
#[derive(Debug, Clone)]
pub struct Assigned {
    pub id: String,
    pub seq: u64,
    pub tenant: String,
    pub received_at: Millis,
}

impl NewEvent {
    /// Validates one event given as JSON. `raw_bytes` is the size of its JSON text.
    pub fn from_json(
        value: Value,
        raw_bytes: usize,
        limits: &Limits,
        now: Millis,
    ) -> Result<NewEvent> {
        if raw_bytes > limits.max_event_bytes {
            return Err(Error::InvalidEvent {
                message: format!(
                    "event is {raw_bytes} bytes of JSON; at most {} bytes are accepted",
                    limits.max_event_bytes
                ),
                field: None,
            });
        }
        let Value::Object(fields) = value else {
            return Err(Error::InvalidEvent {
                message: format!("expected an event object, got {}", json_kind(&value)),
                field: None,
            });
        };
        // One pass over the object: each known field goes to its slot, anything else is refused.
        NewEvent::from_fields(InputFields::from_map(fields)?, limits, now)
    }

    /// Validates one event given as JSON text: what [`crate::json::from_str_strict`] and then
    /// [`NewEvent::from_json`] accept, with the same result, but without building the top-level object as a
    /// map. `None` when the text is not accepted: the caller parses it the ordinary way to learn why (the
    /// errors are theirs, so that they are the same whichever way an event is read).
    pub fn from_json_text(text: &str, limits: &Limits, now: Millis) -> Option<NewEvent> {
        if text.len() > limits.max_event_bytes {
            return None;
        }
        let TopLevel(fields) = serde_json::from_str::<TopLevel>(text).ok()?;
        NewEvent::from_fields(fields, limits, now).ok()
    }

    /// Validates an event's top-level fields, each in its slot.
    fn from_fields(mut fields: InputFields, limits: &Limits, now: Millis) -> Result<NewEvent> {
        let tenant = optional_string(&mut fields, "tenant", 64)?;
        if let Some(tenant) = &tenant {
            validate_tenant_id(tenant)
                .map_err(|message| Error::invalid_event("tenant", message))?;
        }
        let actor = match fields.take_field("actor") {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) => Some(Actor { id: checked_text("actor", id, 256)?, actor_type: None, name: None }),
            Some(Value::Object(mut actor)) => {
                let id = optional_string(&mut actor, "id", 256)?
                    .ok_or_else(|| Error::invalid_event("actor.id", "`actor.id` is required when `actor` is an object"))?;
                let actor_type = optional_string(&mut actor, "type", 64)?;
                let name = optional_string(&mut actor, "name", 1024)?;
                reject_leftovers("actor", &actor, "id, type, name")?;
                Some(Actor { id, actor_type, name })
            }
            Some(other) => {
                return Err(Error::invalid_event(
                    "actor",
                    format!("`actor` must be a string (the actor id) or an object {{id, type, name}}, got {}", json_kind(&other)),
                ))
            }
        };
        let action =
            optional_string(&mut fields, "action", 64)?.map(|action| action.to_uppercase());
        if let Some(action) = &action {
            if !action
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
            {
                return Err(Error::invalid_event(
                    "action",
                    format!(
                        "`action` `{action}` may contain only letters, digits, `_`, `.` and `-`"
                    ),
                ));
            }
        }
        let entity = match fields.take_field("entity") {
            None | Some(Value::Null) => None,
            Some(Value::Object(mut entity)) => {
                let entity_type = optional_string(&mut entity, "type", 128)?.ok_or_else(|| {
                    Error::invalid_event(
                        "entity.type",
                        "`entity.type` is required when `entity` is given",
                    )
                })?;
                validate_identifier("entity.type", &entity_type)?;
                let id = optional_string(&mut entity, "id", 256)?;
                let name = optional_string(&mut entity, "name", 1024)?;
                reject_leftovers("entity", &entity, "type, id, name")?;
                Some(Entity {
                    entity_type,
                    id,
                    name,
                })
            }
            Some(other) => {
                return Err(Error::invalid_event(
                    "entity",
                    format!(
                        "`entity` must be an object {{type, id, name}}, got {}",
                        json_kind(&other)
                    ),
                ))
            }
        };
        let event_type = match optional_string(&mut fields, "type", 256)? {
            Some(event_type) => event_type,
            None => match (&action, &entity) {
                (Some(action), Some(entity)) => {
                    format!("{}.{}", entity.entity_type, action.to_lowercase())
                }
                _ => {
                    return Err(Error::invalid_event(
                        "type",
                        "`type` is required unless both `action` and `entity.type` are given",
                    ))
                }
            },
        };
        validate_identifier("type", &event_type)?;

        let created_at = match fields.take_field("created_at") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => {
                Some(time::parse_time(&text, now).map_err(|message| Error::invalid_event("created_at", message))?)
            }
            Some(Value::Number(number)) => match number.as_i64() {
                Some(millis) if (time::MIN_MILLIS..=time::MAX_MILLIS).contains(&millis) => Some(millis),
                _ => {
                    return Err(Error::invalid_event(
                        "created_at",
                        format!("`created_at` {number} is not epoch milliseconds between the years 1970 and 9999"),
                    ))
                }
            },
            Some(other) => {
                return Err(Error::invalid_event(
                    "created_at",
                    format!("`created_at` must be an RFC 3339 string or epoch milliseconds, got {}", json_kind(&other)),
                ))
            }
        };

        let mut resources = BTreeMap::new();
        match fields.take_field("resources") {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => {
                for (key, value) in map {
                    // The path is spelled out only for an error.
                    let path = || format!("resources.{key}");
                    if !is_valid_key(&key) {
                        validate_key(&path(), &key)?;
                    }
                    let text = match value {
                        Value::String(text) if is_acceptable_text(&text, 256) => text,
                        Value::String(text) => checked_text(&path(), text, 256)?,
                        Value::Number(number) => number.to_string(),
                        other => {
                            let path = path();
                            return Err(Error::invalid_event(
                                path.clone(),
                                format!("`{path}` must be a string id, got {}", json_kind(&other)),
                            ));
                        }
                    };
                    resources.insert(key, text);
                }
            }
            Some(other) => {
                return Err(Error::invalid_event(
                    "resources",
                    format!(
                    "`resources` must be an object of ids like {{\"bot_id\": \"bot_1\"}}, got {}",
                    json_kind(&other)
                ),
                ))
            }
        }
        let context = match fields.take_field("context") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(map)) => {
                for key in map.keys() {
                    if !is_valid_key(key) {
                        validate_key(&format!("context.{key}"), key)?;
                    }
                }
                let found = 1 + map.values().map(depth).max().unwrap_or(0);
                check_found_depth("context", found, limits.max_depth)?;
                map
            }
            Some(other) => {
                return Err(Error::invalid_event(
                    "context",
                    format!(
                        "`context` must be an object like {{\"ip\": \"203.0.113.7\"}}, got {}",
                        json_kind(&other)
                    ),
                ))
            }
        };
        let outcome = match fields.take_field("outcome") {
            None | Some(Value::Null) => Outcome::Success,
            Some(Value::String(text)) if text.eq_ignore_ascii_case("success") => Outcome::Success,
            Some(Value::String(text)) if text.eq_ignore_ascii_case("failure") => Outcome::Failure,
            Some(other) => {
                return Err(Error::invalid_event(
                    "outcome",
                    format!("`outcome` must be \"success\" or \"failure\", got {other}"),
                ))
            }
        };
        let description = optional_string(&mut fields, "description", 16 * 1024)?;
        let metadata = match fields.take_field("metadata") {
            None | Some(Value::Null) => None,
            Some(value @ Value::Object(_)) => {
                check_depth("metadata", &value, limits.max_depth)?;
                Some(value)
            }
            Some(other) => {
                return Err(Error::invalid_event(
                    "metadata",
                    format!(
                        "`metadata` must be a JSON object, got {}",
                        json_kind(&other)
                    ),
                ))
            }
        };
        let (before, after) = match fields.take_field("changes") {
            None | Some(Value::Null) => (None, None),
            Some(Value::Object(mut changes)) => {
                // A client-sent diff (for example from a re-imported export) is ignored and recomputed.
                changes.remove("diff");
                let before = changes.remove("before").filter(|value| !value.is_null());
                let after = changes.remove("after").filter(|value| !value.is_null());
                reject_leftovers("changes", &changes, "before, after")?;
                for (name, snapshot) in [("changes.before", &before), ("changes.after", &after)] {
                    if let Some(snapshot) = snapshot {
                        check_depth(name, snapshot, limits.max_depth)?;
                    }
                }
                (before, after)
            }
            Some(other) => {
                return Err(Error::invalid_event(
                    "changes",
                    format!(
                        "`changes` must be an object {{before, after}}, got {}",
                        json_kind(&other)
                    ),
                ))
            }
        };
        let idempotency_key = optional_string(&mut fields, "idempotency_key", 256)?;
        debug_assert!(fields.is_empty(), "every accepted field is consumed");

        Ok(NewEvent {
            tenant,
            event_type,
            created_at,
            actor,
            action,
            entity,
            resources,
            context,
            outcome,
            description,
            metadata,
            before,
            after,
            idempotency_key,
        })
    }

    /// Builds the stored event: fills the defaults, computes the diff and the hash.
    pub fn into_event(self, assigned: Assigned) -> Event {
        let mut event = self.into_event_unhashed(assigned);
        event.hash = event.compute_hash();
        event
    }

    /// The event with its identity, diff and an empty `hash`.
    fn into_event_unhashed(self, assigned: Assigned) -> Event {
        let changes = if self.before.is_some() || self.after.is_some() {
            let diff = diff(self.before.as_ref(), self.after.as_ref());
            Some(Changes {
                before: self.before,
                after: self.after,
                diff,
            })
        } else {
            None
        };
        Event {
            id: assigned.id,
            seq: assigned.seq,
            tenant: assigned.tenant,
            event_type: self.event_type,
            created_at: self.created_at.unwrap_or(assigned.received_at),
            received_at: assigned.received_at,
            actor: self.actor,
            action: self.action,
            entity: self.entity,
            resources: self.resources,
            context: self.context,
            outcome: self.outcome,
            description: self.description,
            metadata: self.metadata,
            changes,
            idempotency_key: self.idempotency_key,
            hash: String::new(),
        }
    }

    /// [`NewEvent::into_event`], and the event's stored JSON (`serde_json::to_vec` of it), sharing the
    /// serialization of its JSON values between the hash and the stored text.
    pub fn into_event_and_json(self, assigned: Assigned) -> (Event, Vec<u8>) {
        let mut event = self.into_event_unhashed(assigned);
        let (canonical, fragments) = event.canonical_parts();
        event.hash = canonical::hex_digest(canonical.as_bytes());
        let json = event.stored_json(&canonical, &fragments);
        (event, json)
    }
}

/// A new event id: `evt_` and a ULID whose time part is `created_at`, so ids sort by creation time.
pub fn new_event_id(created_at: Millis) -> String {
    let timestamp = u64::try_from(created_at).unwrap_or(0);
    let ulid = ulid::Ulid::from_parts(timestamp, rand::random::<u128>());
    let mut text = [0; ulid::ULID_LEN];
    let mut id = String::with_capacity(4 + ulid::ULID_LEN);
    id.push_str("evt_");
    id.push_str(ulid.array_to_str(&mut text));
    id
}

/// The 128-bit value of an `evt_<ULID>` id (ids compare like these numbers), or `None` if malformed.
pub fn event_id_value(id: &str) -> Option<u128> {
    let text = id.strip_prefix("evt_")?;
    ulid::Ulid::from_string(text).ok().map(u128::from)
}

/// Tenant ids: 1 to 64 of `a-z`, `0-9`, `_`, `-`.
pub fn validate_tenant_id(id: &str) -> std::result::Result<(), String> {
    let valid = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "tenant id `{id}` must be 1 to 64 characters of a-z, 0-9, `_` and `-`"
        ))
    }
}

fn validate_identifier(field: &str, value: &str) -> Result<()> {
    let valid = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '-' | ':' | '/'));
    if valid {
        Ok(())
    } else {
        Err(Error::invalid_event(
            field,
            format!(
                "`{field}` `{value}` may contain only letters, digits, `_`, `.`, `-`, `:` and `/`"
            ),
        ))
    }
}

/// Whether `key` is a valid key of `resources` or `context` (see [`validate_key`]).
fn is_valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 64
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn validate_key(path: &str, key: &str) -> Result<()> {
    if is_valid_key(key) {
        Ok(())
    } else {
        Err(Error::invalid_event(
            path,
            format!("key `{key}` must be 1 to 64 characters of letters, digits, `_` and `-`"),
        ))
    }
}

/// Whether [`checked_text`] accepts `text` as it is: not empty, at most `max_chars` characters, no control
/// character but line feed and tab.
fn is_acceptable_text(text: &str, max_chars: usize) -> bool {
    // A text of at most `max_chars` bytes has at most as many characters; the control characters are
    // C0 (bytes below 0x20), DEL and C1 (U+0080 to U+009F, encoded after a 0xC2 byte), so a text without
    // those bytes needs no closer look.
    !text.is_empty()
        && (text.len() <= max_chars
            || (text.len() <= max_chars * 4 && text.chars().count() <= max_chars))
        && (!text
            .bytes()
            .any(|b| (b < 0x20 && b != b'\n' && b != b'\t') || b == 0x7f || b == 0xc2)
            || !text
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t'))
}

fn checked_text(field: &str, text: String, max_chars: usize) -> Result<String> {
    if is_acceptable_text(&text, max_chars) {
        return Ok(text);
    }
    if text.is_empty() {
        return Err(Error::invalid_event(
            field,
            format!("`{field}` must not be empty"),
        ));
    }
    if text.len() > max_chars * 4 || text.chars().count() > max_chars {
        return Err(Error::invalid_event(
            field,
            format!("`{field}` is longer than {max_chars} characters"),
        ));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(Error::invalid_event(
            field,
            format!("`{field}` contains a control character"),
        ));
    }
    Ok(text)
}

fn optional_string(
    fields: &mut impl TakeField,
    name: &str,
    max_chars: usize,
) -> Result<Option<String>> {
    match fields.take_field(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => checked_text(name, text, max_chars).map(Some),
        Some(other) => Err(Error::invalid_event(
            name,
            format!("`{name}` must be a string, got {}", json_kind(&other)),
        )),
    }
}

fn reject_leftovers(parent: &str, fields: &Map<String, Value>, accepted: &str) -> Result<()> {
    match fields.keys().next() {
        Some(unknown) => Err(Error::invalid_event(
            format!("{parent}.{unknown}"),
            format!("unknown field `{parent}.{unknown}`; `{parent}` accepts {accepted}"),
        )),
        None => Ok(()),
    }
}

/// How deeply a JSON value nests: 0 for a scalar, 1 for an object or array of scalars.
fn depth(value: &Value) -> usize {
    match value {
        Value::Object(members) => 1 + members.values().map(depth).max().unwrap_or(0),
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn check_depth(field: &str, value: &Value, max_depth: usize) -> Result<()> {
    check_found_depth(field, depth(value), max_depth)
}

fn check_found_depth(field: &str, found: usize, max_depth: usize) -> Result<()> {
    if found > max_depth {
        return Err(Error::invalid_event(
            field,
            format!("`{field}` is nested {found} levels deep; at most {max_depth} are accepted"),
        ));
    }
    Ok(())
}

/// "an object", "a string", ... for error messages.
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: Millis = 1_795_341_600_000;

    fn validate(value: Value) -> Result<NewEvent> {
        let bytes = value.to_string().len();
        NewEvent::from_json(value, bytes, &Limits::default(), NOW)
    }

    fn assigned() -> Assigned {
        Assigned {
            id: "evt_1".into(),
            seq: 7,
            tenant: "acme".into(),
            received_at: NOW,
        }
    }

    /// Found by the `event_validation` fuzz target: a `null` leaf in a diff read back as a missing key, so the
    /// stored JSON no longer matched its hash.
    #[test]
    fn the_hash_survives_a_json_round_trip_with_null_leaves() {
        let event = validate(json!({"action": "UPDATED", "entity": {"type": "bot", "id": "b1"},
            "changes": {"before": {"gone": null, "kept": 1, "cfg": {"x": null}}, "after": {"kept": 1, "new": null, "cfg": {"x": 2}}},
            "metadata": {"n": null}}))
        .unwrap()
        .into_event(assigned());
        assert!(event
            .changes
            .as_ref()
            .unwrap()
            .diff
            .iter()
            .any(|entry| entry.after == Some(Value::Null)));
        let text = serde_json::to_string(&event).unwrap();
        let parsed: Event = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed, event);
        assert_eq!(parsed.compute_hash(), event.hash);
        assert_eq!(serde_json::to_string(&parsed).unwrap(), text);
    }

    /// Found by fuzzing too: without serde_json's exact float parsing, `6E49` read back one ULP off, so the
    /// stored event no longer matched its hash.
    #[test]
    fn the_hash_survives_a_json_round_trip_with_awkward_floats() {
        for number in [
            "6E49",
            "1.7976931348623157e308",
            "5e-324",
            "0.1",
            "2.2250738585072014e-308",
            "123456789.12345678",
        ] {
            let text = format!(
                r#"{{"type":"t","metadata":{{"n":{number}}},"changes":{{"before":{{"n":{number}}}}}}}"#
            );
            let value: Value = crate::json::from_str_strict(&text).unwrap();
            let event = NewEvent::from_json(value, text.len(), &Limits::default(), NOW)
                .unwrap()
                .into_event(assigned());
            let parsed: Event =
                serde_json::from_str(&serde_json::to_string(&event).unwrap()).unwrap();
            assert_eq!(parsed.compute_hash(), event.hash, "{number}");
        }
    }

    #[test]
    fn type_defaults_from_entity_and_action() {
        let event =
            validate(json!({"action": "updated", "entity": {"type": "story", "id": "st_9"}}))
                .unwrap();
        assert_eq!(event.event_type, "story.updated");
        assert_eq!(event.action.as_deref(), Some("UPDATED"));
    }

    #[test]
    fn actor_string_is_the_actor_id() {
        let event = validate(json!({"type": "a", "actor": "u_42"})).unwrap();
        assert_eq!(
            event.actor,
            Some(Actor {
                id: "u_42".into(),
                actor_type: None,
                name: None
            })
        );
    }

    #[test]
    fn rejections_name_the_field() {
        let cases = [
            (json!({}), "type"),
            (json!({"type": "a", "outcome": "maybe"}), "outcome"),
            (json!({"type": "a", "metadata": [1]}), "metadata"),
            (json!({"type": "a", "seq": 5}), "seq"),
            (json!({"type": "a", "colour": "red"}), "colour"),
            (json!({"type": "a", "entity": {"id": "x"}}), "entity.type"),
            (
                json!({"type": "a", "created_at": "yesterday"}),
                "created_at",
            ),
            (
                json!({"type": "a", "resources": {"bot_id": {"x": 1}}}),
                "resources.bot_id",
            ),
            (json!({"type": "has space"}), "type"),
            (json!({"type": "a", "tenant": "Bad Tenant"}), "tenant"),
        ];
        for (input, expected_field) in cases {
            match validate(input.clone()) {
                Err(Error::InvalidEvent { field, .. }) => {
                    assert_eq!(field.as_deref(), Some(expected_field), "{input}")
                }
                other => panic!("{input} gave {other:?}"),
            }
        }
    }

    #[test]
    fn depth_and_size_limits_are_enforced() {
        let mut deep = json!(1);
        for _ in 0..40 {
            deep = json!({ "x": deep });
        }
        assert!(validate(json!({"type": "a", "metadata": deep})).is_err());
        let big = "x".repeat(300 * 1024);
        assert!(validate(json!({"type": "a", "metadata": {"big": big}})).is_err());
    }

    #[test]
    fn stored_event_has_diff_hash_and_defaults() {
        let input = json!({
            "action": "UPDATED", "entity": {"type": "story", "id": "st_9"},
            "changes": {"before": {"name": "Hello"}, "after": {"name": "Bye"}}
        });
        let event = validate(input).unwrap().into_event(assigned());
        assert_eq!(event.created_at, NOW);
        assert_eq!(event.changes.as_ref().unwrap().diff.len(), 1);
        assert_eq!(event.hash, event.compute_hash());
        assert_eq!(event.hash.len(), 64);
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["created_at"], "2026-11-22T10:00:00.000Z");
        let round_trip: Event = serde_json::from_value(json).unwrap();
        assert_eq!(round_trip, event);
    }

    #[test]
    fn the_index_parse_is_the_full_parse_without_changes() {
        let mut generator = crate::demo::DemoGenerator::new(5);
        let mut with_changes = 0;
        for i in 0..300 {
            let event = validate(generator.event(NOW - i))
                .unwrap()
                .into_event(assigned());
            with_changes += usize::from(event.changes.is_some());
            let text = serde_json::to_string(&event).unwrap();
            let for_index = Event::from_stored_json_for_index(&text).unwrap();
            let for_entries = Event::from_stored_json_for_entries(&text).unwrap();
            assert_eq!(
                for_entries,
                Event {
                    resources: BTreeMap::new(),
                    context: Map::new(),
                    description: None,
                    metadata: None,
                    ..for_index.clone()
                }
            );
            assert_eq!(
                for_index,
                Event {
                    changes: None,
                    ..event
                }
            );
        }
        assert!(with_changes > 50, "the demo events include audit events");
        // `changes` is still checked to be JSON, and the other fields are checked as before.
        let broken = r#"{"id":"x","seq":1,"tenant":"t","type":"a","created_at":"2026-11-22T10:00:00.000Z","received_at":"2026-11-22T10:00:00.000Z","changes":{"before":},"hash":"h"}"#;
        assert!(Event::from_stored_json_for_index(broken).is_err());
        assert!(Event::from_stored_json_for_entries(broken).is_err());
        let broken_metadata = r#"{"id":"x","seq":1,"tenant":"t","type":"a","created_at":"2026-11-22T10:00:00.000Z","received_at":"2026-11-22T10:00:00.000Z","metadata":{"a":[},"hash":"h"}"#;
        assert!(Event::from_stored_json_for_entries(broken_metadata).is_err());
        let no_hash = r#"{"id":"x","seq":1,"tenant":"t","type":"a","created_at":"2026-11-22T10:00:00.000Z","received_at":"2026-11-22T10:00:00.000Z"}"#;
        assert!(Event::from_stored_json_for_index(no_hash).is_err());
    }

    #[test]
    #[allow(clippy::excessive_precision)] // an RFC 8785 test number, digits included
    fn direct_canonical_form_equals_the_generic_one() {
        let mut generator = crate::demo::DemoGenerator::new(3);
        let mut inputs: Vec<Value> = (0..500).map(|i| generator.event(NOW - i)).collect();
        inputs.push(json!({"type": "x", "actor": {"id": "a", "type": "t", "name": "é \u{1F600} \"q\""}, "entity": {"type": "e"},
            "resources": {"b_id": "1", "a_id": "2"}, "context": {"z": {"\u{FB33}": 1, "\u{1F600}": 2.5}, "a": [1e30, null]},
            "metadata": {"n": 333333333.33333329, "s": "\u{0001}\t"}, "description": "line\nbreak", "idempotency_key": "k",
            "changes": {"before": {"a": [1, {"b": true}]}, "after": {"a": "flat"}}}));
        for input in inputs {
            let bytes = input.to_string().len();
            let event = NewEvent::from_json(input, bytes, &Limits::default(), NOW)
                .unwrap()
                .into_event(assigned());
            let mut generic = serde_json::to_value(&event).unwrap();
            generic.as_object_mut().unwrap().remove("hash");
            assert_eq!(
                event.canonical_form(),
                canonical::to_canonical_string(&generic)
            );
            assert_eq!(event.compute_hash(), canonical::event_hash(&generic));
        }
    }

    #[test]
    #[allow(clippy::excessive_precision)] // an RFC 8785 test number, digits included
    fn stored_json_is_what_serde_json_writes() {
        let mut generator = crate::demo::DemoGenerator::new(5);
        let mut inputs: Vec<Value> = (0..2000).map(|i| generator.event(NOW - i)).collect();
        // Numbers both forms print alike and numbers they do not, non-ASCII keys (RFC 8785 sorts them by
        // UTF-16, serde_json by bytes), escapes, and every optional member absent or present.
        let numbers = [
            json!(0.5),
            json!(1.0),
            json!(-0.0),
            json!(1e-7),
            json!(0.0001),
            json!(0.00012),
            json!(123456.789),
            json!(1e15),
            json!(1.5e15),
            json!(9007199254740993u64),
            json!(-9223372036854775808i64),
            json!(18446744073709551615u64),
            json!(1e21),
            json!(1.7976931348623157e308),
            json!(5e-324),
            json!(333333333.33333329),
            json!(0.1),
            json!(2.5),
            json!(-3.75),
        ];
        // And decimals of every magnitude, around the bounds `is_plain` draws (from a fixed LCG).
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut numbers = numbers.to_vec();
        for _ in 0..3000 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let mantissa = (state >> 11) as f64 / (1u64 << 53) as f64;
            let exponent = ((state >> 3) % 48) as i32 - 12;
            numbers.push(json!(mantissa * 10f64.powi(exponent)));
        }
        for (i, number) in numbers.iter().enumerate() {
            inputs.push(
                json!({"type": "n", "metadata": {"x": number, "nested": [number, {"y": number}]}}),
            );
            inputs.push(json!({"type": "n", "context": {"c": number}}));
            inputs.push(
                json!({"type": "n", "changes": {"before": {"v": number}, "after": {"v": i}}}),
            );
        }
        inputs.push(json!({"type": "x", "actor": {"id": "a", "type": "t", "name": "é \u{1F600} \"q\""}, "entity": {"type": "e", "name": "n"},
            "resources": {"b_id": "1", "a_id": "2"}, "context": {"z": {"\u{FB33}": 1, "\u{1F600}": 2.5}, "a": [1e30, null]},
            "metadata": {"\u{FB33}": 1, "\u{1F600}": 2, "s": "\u{0001}\t\u{7f}/\\", "é": {"b": false}}, "description": "line\nbreak",
            "idempotency_key": "k\"", "action": "deleted", "outcome": "failure",
            "changes": {"before": {"a": [1, {"b": true}]}}}));
        inputs.push(json!({"type": "x", "changes": {"after": {"a": "flat"}}}));
        inputs.push(json!({"type": "x", "metadata": {}}));
        for input in inputs {
            let bytes = input.to_string().len();
            let new = NewEvent::from_json(input.clone(), bytes, &Limits::default(), NOW).unwrap();
            let (event, json) = new.clone().into_event_and_json(assigned());
            assert_eq!(
                String::from_utf8(json).unwrap(),
                serde_json::to_string(&event).unwrap(),
                "input {input}"
            );
            let mut hashed = new.into_event(assigned());
            hashed.id.clone_from(&event.id);
            hashed.hash = hashed.compute_hash();
            assert_eq!(hashed, event);
        }
    }

    #[test]
    fn ids_sort_by_creation_time() {
        let earlier = new_event_id(NOW);
        let later = new_event_id(NOW + 1);
        assert!(earlier < later);
        assert!(earlier.starts_with("evt_") && earlier.len() == 30);
    }

    /// Both ways of reading an event's text: strict parsing then `from_json`, and `from_json_text`.
    fn both_ways(text: &str) -> (Option<NewEvent>, Option<NewEvent>) {
        let limits = Limits::default();
        let two_steps = crate::json::from_str_strict(text)
            .ok()
            .and_then(|value| NewEvent::from_json(value, text.len(), &limits, NOW).ok());
        (NewEvent::from_json_text(text, &limits, NOW), two_steps)
    }

    #[test]
    fn reading_an_event_in_one_pass_accepts_what_the_two_steps_accept() {
        let accepted = [
            r#"{"type":"bot.created","actor":{"id":"u1","type":"user"},"metadata":{"a":{"b":[1,2.5,null]}}}"#,
            r#"  {"typ\u0065":"x","created_at":"2026-01-02T03:04:05Z","resources":{"bot_id":7}}  "#,
            r#"{"action":"updated","entity":{"type":"bot","id":"b1"},"changes":{"before":{"x":1},"after":{"x":2}}}"#,
        ];
        for text in accepted {
            let (one_pass, two_steps) = both_ways(text);
            assert!(two_steps.is_some(), "{text}");
            assert_eq!(one_pass, two_steps, "{text}");
        }
        let refused = [
            r#"{"type":"x","type":"y"}"#,
            r#"{"type":"x","seq":1}"#,
            r#"{"type":"x","colour":"red"}"#,
            r#"{"type":"x","metadata":{"a":1,"a":2}}"#,
            r#"{"type":"x"} trailing"#,
            r#"["type","x"]"#,
            r#""x""#,
            r#"{"type":"x","created_at":true}"#,
            r#"{"type":7}"#,
            "{\"type\":\"x\",",
        ];
        for text in refused {
            assert_eq!(both_ways(text), (None, None), "{text}");
        }
        let mut large = String::from(r#"{"type":"x","description":""#);
        large.push_str(&"a".repeat(Limits::default().max_event_bytes));
        large.push_str(r#""}"#);
        assert_eq!(both_ways(&large), (None, None));
    }

    /// A value for `key`: mostly one it accepts, sometimes one it refuses.
    fn value_for(key: &str, pick: usize) -> &'static str {
        let valid: &[&str] = match key {
            "type" => &[r#""bot.created""#, r#""x""#],
            "created_at" => &["1790000000000", r#""2026-01-02T03:04:05Z""#, "null"],
            "actor" => &[r#""u1""#, r#"{"id":"u1","type":"user","name":"Ann"}"#],
            "action" => &[r#""updated""#],
            "entity" => &[r#"{"type":"bot","id":"b1"}"#],
            "resources" => &[r#"{"bot_id":"b1","n_id":2}"#, "{}"],
            "context" => &[r#"{"ip":"203.0.113.7","deep":{"a":[1,{"k":null}]}}"#],
            "outcome" => &[r#""failure""#, r#""SUCCESS""#],
            "description" => &[r#""Ann created bot b1""#],
            "metadata" => &[r#"{"a":{"b":[1,2.5,null,true]},"é":""}"#],
            "changes" => &[r#"{"before":{"a":1},"after":{"a":2,"b":null}}"#],
            "idempotency_key" => &[r#""k-1""#],
            "tenant" => &[r#""acme""#],
            _ => &[r#""x""#],
        };
        let invalid = [r#"{"a":{"a":1,"a":1}}"#, "true", "-1.5", "[1]", r#""""#];
        if pick % 5 == 4 {
            invalid[pick / 5 % invalid.len()]
        } else {
            valid[pick % valid.len()]
        }
    }

    proptest::proptest! {
        /// The quick test of a text agrees with the plain reading of the rule, around the length limit and
        /// with every kind of control character (C0, DEL, C1) and multi-byte characters.
        #[test]
        fn acceptable_texts_are_exactly_those_the_rule_allows(
            text in "[a\\n\\t\\x00\\x1f\\x7f\\u{80}\\u{9f}\\u{a0}\\u{e9}\\u{20ac}\\u{1f600}]{0,12}",
            max_chars in 1usize..8,
        ) {
            let rule = !text.is_empty()
                && text.chars().count() <= max_chars
                && !text.chars().any(|c| c.is_control() && c != '\n' && c != '\t');
            proptest::prop_assert_eq!(is_acceptable_text(&text, max_chars), rule, "{:?}", text);
        }
    }

    proptest::proptest! {
        /// Events of known, unknown and repeated keys, mostly with values they accept: both ways agree.
        #[test]
        fn both_ways_of_reading_an_event_agree(
            fields in proptest::collection::vec(
                (
                    proptest::sample::select(vec![
                        "type", "created_at", "actor", "action", "entity", "resources", "context", "outcome",
                        "description", "metadata", "changes", "idempotency_key", "tenant", "seq", "other",
                    ]),
                    0usize..100,
                ),
                0..8,
            ),
            type_first in proptest::bool::ANY,
        ) {
            let mut members: Vec<String> = fields
                .iter()
                .map(|(key, pick)| format!("\"{key}\":{}", value_for(key, *pick)))
                .collect();
            if type_first {
                members.insert(0, r#""type":"x.y""#.to_string());
            }
            let text = format!("{{{}}}", members.join(","));
            let (one_pass, two_steps) = both_ways(&text);
            proptest::prop_assert_eq!(one_pass, two_steps, "{}", text);
        }
    }
}
