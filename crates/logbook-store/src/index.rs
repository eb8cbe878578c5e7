//! The per-tenant search index of the embedded engine, held in memory and rebuilt from the log on open.
//!
//! Events of a tenant are numbered by ordinal `seq - 1` (seq is dense per tenant). The index keeps:
//! - `entries[ordinal]`: created_at, the id (a ULID) and where the body is in the log, in 40 bytes;
//! - `by_time`: the set of `(created_at, ordinal)` ([`TimeOrder`]), which is the listing order (`created_at`,
//!   then `seq`), and how an id is found (its ULID time is `created_at`);
//! - `fields[number]`, for every text field, resource and context key and metadata path: a `present` set
//!   (ordinals where the field exists) and a term dictionary of typed values (text hashed; numbers ordered;
//!   booleans and null apart) mapping each value to its ordinals, so that eq, in, ranges, prefix, contains
//!   and exists become set operations over postings. Queries find a field by name (`numbers`); ingest by the
//!   event's own keys (`fixed`, `resources`, `context`, `metadata` and each path's `members`);
//! - `words`: description words, narrowing full-text phrases;
//! - `hours[hour]`: the ordinals created in each hour since the epoch, and how many events of the hour have
//!   each value of the [`ROLLED_UP`] fields (type, action, outcome, actor and entity type), so that histograms
//!   with whole-hour buckets add up hours instead of visiting every event.
//!
//! Ordinals of a tenant only grow, so every posting update is an append at the end ([`Ordinals`]).
//!
//! The planner turns a [`Filter`] into [`Candidates`]: a bitmap (or "all") and whether it is exact. Fields
//! that could not be fully indexed (over-long values, too many paths, keys containing dots) are listed in
//! `unindexed` and planned as inexact; inexact candidates are re-checked with [`Filter::matches`] on the
//! stored event, so the index only ever changes speed, never results.

use crate::ordinals::Ordinals;
use crate::time_order::TimeOrder;
use crate::wal::RecordPosition;
use compact_str::CompactString;
use logbook_core::event::{event_id_value, Event};
use logbook_core::filter::eval::contains_folded;
use logbook_core::filter::query_string::Order;
use logbook_core::filter::{Field, FieldKind, Filter, Operand, Predicate};
use roaring::RoaringBitmap;
use rustc_hash::FxHashMap;
use serde_json::Value;
use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;

/// Longest value indexed as a term; longer values make their field unindexed for the tenant.
const MAX_TERM_BYTES: usize = 512;
/// Most JSON leaves indexed per event.
const MAX_LEAVES_PER_EVENT: usize = 256;
/// Most distinct metadata/context fields indexed per tenant.
const MAX_JSON_FIELDS: usize = 4096;
/// Below this many candidates, sort them by time instead of walking the time order.
const MATERIALIZE_LIMIT: u64 = 16_384;
/// The width of the `hours` slices, in milliseconds.
pub const HOUR_MS: i64 = 3_600_000;
/// The fields counted per hour and value. Each has one value per event, so a bucket's events without one of
/// the named values are its count minus theirs.
pub const ROLLED_UP: [Field; 5] = [
    Field::Type,
    Field::Action,
    Field::Outcome,
    Field::ActorType,
    Field::EntityType,
];
/// A tenant's rolled-up field with more distinct values than this is no longer counted per hour (its
/// histograms count events instead); this bounds the rollups' memory for fields used like identifiers.
const MAX_ROLLED_UP_VALUES: usize = 4096;
/// Rolled-up counts are keyed by field (the top bits) and value number.
const ROLLUP_VALUE_BITS: u32 = 28;

/// One hour of a tenant.
#[derive(Default)]
struct Hour {
    ordinals: Ordinals,
    /// (rollup key, events), sorted by key.
    counts: Vec<(u32, u32)>,
}

impl Hour {
    fn count(&mut self, key: u32) {
        match self.counts.binary_search_by_key(&key, |&(k, _)| k) {
            Ok(position) => self.counts[position].1 += 1,
            Err(position) => self.counts.insert(position, (key, 1)),
        }
    }
}

/// The values of one rolled-up field, numbered in order of first appearance.
#[derive(Default)]
struct RolledUpValues {
    numbers: FxHashMap<CompactString, u32>,
    names: Vec<Box<str>>,
    /// Too many distinct values: no longer counted.
    abandoned: bool,
}

/// Event counts per bucket and value of a rolled-up field, from [`TenantIndex::rolled_up_counts`].
pub struct ValueCounts {
    /// The field's values that have events in the window.
    pub names: Vec<String>,
    /// Bucket-major: `buckets` rows of `names.len()` counts.
    pub counts: Vec<u64>,
}

/// Where an event's JSON is: the record and the event's index within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub record: RecordPosition,
    pub line: u32,
}

/// One event in the index, 40 bytes (there is one per event, so every byte is 10 MB at 10M events): the id
/// as two halves (a `u128` would align the entry to 16 bytes), and the location unpacked, with the
/// record's `compacted` flag in the top bit of its offset.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub created_at: i64,
    id: [u64; 2],
    offset: u64,
    segment: u32,
    line: u32,
}

/// `offset`'s bit for [`RecordPosition::compacted`]; offsets in a file are far below it.
const COMPACTED: u64 = 1 << 63;

impl Entry {
    fn new(created_at: i64, id: u128, location: Location) -> Entry {
        let mut entry = Entry {
            created_at,
            id: [(id >> 64) as u64, id as u64],
            offset: 0,
            segment: 0,
            line: 0,
        };
        entry.set_location(location);
        entry
    }

    fn id(&self) -> u128 {
        (u128::from(self.id[0]) << 64) | u128::from(self.id[1])
    }

    pub fn location(&self) -> Location {
        Location {
            record: RecordPosition {
                segment: self.segment,
                offset: self.offset & !COMPACTED,
                compacted: self.offset & COMPACTED != 0,
            },
            line: self.line,
        }
    }

    fn set_location(&mut self, location: Location) {
        let record = location.record;
        assert!(record.offset < COMPACTED, "a record offset below 2^63");
        self.offset = record.offset | if record.compacted { COMPACTED } else { 0 };
        self.segment = record.segment;
        self.line = location.line;
    }
}

/// An f64 with a total order, for the term dictionary.
#[derive(Debug, Clone, Copy)]
pub struct OrderedNumber(f64);

impl OrderedNumber {
    fn new(value: f64) -> Self {
        OrderedNumber(if value == 0.0 { 0.0 } else { value })
    }
}
impl PartialEq for OrderedNumber {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for OrderedNumber {}
impl PartialOrd for OrderedNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrderedNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// A typed value to index.
#[derive(Debug, Clone, Copy)]
pub enum TermRef<'a> {
    Null,
    Bool(bool),
    Number(f64),
    Text(&'a str),
}

impl<'a> TermRef<'a> {
    fn of(value: &'a Value) -> Option<TermRef<'a>> {
        match value {
            Value::Null => Some(TermRef::Null),
            Value::Bool(flag) => Some(TermRef::Bool(*flag)),
            Value::Number(number) => Some(TermRef::Number(number.as_f64().unwrap_or(0.0))),
            Value::String(text) => Some(TermRef::Text(text)),
            Value::Array(_) | Value::Object(_) => None,
        }
    }
}

/// The term dictionary of one field. Text terms are hashed (ingest is a lookup, not a tree search); ordered
/// operations on text (ranges, prefix, contains) scan the distinct values, which is proportional to the
/// field's cardinality, not to the number of events.
#[derive(Debug, Default)]
struct FieldTerms {
    text: FxHashMap<CompactString, Ordinals>,
    numbers: BTreeMap<OrderedNumber, Ordinals>,
    trues: Ordinals,
    falses: Ordinals,
    nulls: Ordinals,
}

/// Adds `ordinal` to the posting of `text`, creating it when new.
fn add_posting(postings: &mut FxHashMap<CompactString, Ordinals>, text: &str, ordinal: u32) {
    match postings.get_mut(text) {
        Some(posting) => posting.push(ordinal),
        None => {
            postings.insert(text.into(), Ordinals::one(ordinal));
        }
    }
}

impl FieldTerms {
    fn insert(&mut self, term: TermRef<'_>, ordinal: u32) {
        match term {
            TermRef::Text(text) => add_posting(&mut self.text, text, ordinal),
            TermRef::Number(number) => self
                .numbers
                .entry(OrderedNumber::new(number))
                .or_default()
                .push(ordinal),
            TermRef::Bool(true) => self.trues.push(ordinal),
            TermRef::Bool(false) => self.falses.push(ordinal),
            TermRef::Null => self.nulls.push(ordinal),
        }
    }

    /// Events with a value equal to the operand; for JSON fields also the number, boolean or null it spells
    /// (the evaluator's `json_compare`).
    fn equal(&self, operand: &str, json: bool, out: &mut RoaringBitmap) {
        if let Some(posting) = self.text.get(operand) {
            posting.add_to(out);
        }
        if !json {
            return;
        }
        if let Some(number) = finite_number(operand) {
            if let Some(posting) = self.numbers.get(&OrderedNumber::new(number)) {
                posting.add_to(out);
            }
        }
        let special = match operand {
            "true" => &self.trues,
            "false" => &self.falses,
            "null" => &self.nulls,
            _ => return,
        };
        special.add_to(out);
    }

    /// Events with a value whose order relative to the operand is accepted: text lexicographically, numbers
    /// numerically when the operand is a number.
    fn compare(
        &self,
        operand: &str,
        json: bool,
        accept: impl Fn(Ordering) -> bool,
        out: &mut RoaringBitmap,
    ) {
        for (text, posting) in &self.text {
            if accept(text.as_str().cmp(operand)) {
                posting.add_to(out);
            }
        }
        if let (true, Some(wanted)) = (json, finite_number(operand)) {
            for (number, posting) in &self.numbers {
                if number.0.partial_cmp(&wanted).is_some_and(&accept) {
                    posting.add_to(out);
                }
            }
        }
    }

    fn text_matching(&self, keep: impl Fn(&str) -> bool, out: &mut RoaringBitmap) {
        for (text, posting) in &self.text {
            if keep(text) {
                posting.add_to(out);
            }
        }
    }
}

fn finite_number(text: &str) -> Option<f64> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|number| number.is_finite())
}

/// One field of a tenant's index.
#[derive(Debug)]
struct FieldIndex {
    field: Field,
    present: Ordinals,
    terms: FieldTerms,
    /// For a metadata path: the numbers of the paths one member below it.
    members: FxHashMap<CompactString, u32>,
}

/// Where a resource, context key or metadata member hangs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Parent {
    Resources,
    Context,
    Metadata,
    /// The metadata path with this field number.
    Path(u32),
}

/// The top-level text fields, in the order of `TenantIndex::fixed`.
const FIXED: [Field; 10] = [
    Field::Type,
    Field::Action,
    Field::ActorId,
    Field::ActorType,
    Field::ActorName,
    Field::EntityType,
    Field::EntityId,
    Field::EntityName,
    Field::Outcome,
    Field::Description,
];
const DESCRIPTION: usize = 9;
/// Where each [`ROLLED_UP`] field is in [`FIXED`].
const ROLLED_UP_IN_FIXED: [usize; ROLLED_UP.len()] = [0, 1, 8, 3, 5];

/// A superset of the matching ordinals (`None` = every event), and whether it is exactly the matches.
#[derive(Debug, Clone)]
pub struct Candidates {
    pub bitmap: Option<RoaringBitmap>,
    pub exact: bool,
}

impl Candidates {
    fn exact(bitmap: RoaringBitmap) -> Self {
        Candidates {
            bitmap: Some(bitmap),
            exact: true,
        }
    }
    fn unknown() -> Self {
        Candidates {
            bitmap: None,
            exact: false,
        }
    }
}

#[derive(Default)]
pub struct TenantIndex {
    entries: Vec<Entry>,
    by_time: TimeOrder,
    /// Per field, numbered in order of first appearance: where it is present, and its term dictionary.
    fields: Vec<FieldIndex>,
    /// The number of each field, for queries.
    numbers: FxHashMap<Field, u32>,
    /// On ingest, fields are found by the event's own keys, without building their names: the numbers of the
    /// [`FIXED`] fields, of resources, of context keys and of top-level metadata members (deeper metadata
    /// paths are in their parent's `members`).
    fixed: [Option<u32>; FIXED.len()],
    resources: FxHashMap<CompactString, u32>,
    context: FxHashMap<CompactString, u32>,
    metadata: FxHashMap<CompactString, u32>,
    unindexed: HashSet<Field>,
    words: FxHashMap<CompactString, Ordinals>,
    json_fields: usize,
    /// Per hour (`created_at` divided by [`HOUR_MS`], rounded down): its ordinals and rolled-up counts.
    hours: BTreeMap<i64, Hour>,
    /// Per field of [`ROLLED_UP`], its values.
    rolled_up: [RolledUpValues; ROLLED_UP.len()],
}

/// The words of a text, lower-cased; a word that is already lower case is not copied.
fn words_of(text: &str) -> impl Iterator<Item = Cow<'_, str>> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(|word| {
            if word.chars().any(char::is_uppercase) {
                Cow::Owned(word.to_lowercase())
            } else {
                Cow::Borrowed(word)
            }
        })
}

impl TenantIndex {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The oldest and newest `created_at`, or `None` when empty.
    pub fn created_at_span(&self) -> Option<(i64, i64)> {
        Some((self.by_time.first()?.0, self.by_time.last()?.0))
    }

    pub fn entry(&self, ordinal: u32) -> &Entry {
        &self.entries[ordinal as usize]
    }

    /// Points an event at its new place (after compaction), if it is still at `from`'s record file.
    /// Returns false when the event is not where the caller expects it.
    pub fn relocate(&mut self, ordinal: u32, from_segment: u32, to: Location) -> bool {
        match self.entries.get_mut(ordinal as usize) {
            Some(entry)
                if entry.location().record.segment == from_segment
                    && !entry.location().record.compacted =>
            {
                entry.set_location(to);
                true
            }
            _ => false,
        }
    }

    /// The ordinal of the event with this id. An id is a ULID whose time part is the event's `created_at`
    /// (1970 to 9999, so never cut off), so it is found among the events of that millisecond.
    pub fn ordinal_of_id(&self, id: &str) -> Option<u32> {
        let key = event_id_value(id)?;
        let created_at = i64::try_from(key >> 80).ok()?;
        self.by_time
            .range(
                Bound::Included((created_at, 0)),
                Bound::Included((created_at, u32::MAX)),
                false,
            )
            .map(|(_, ordinal)| ordinal)
            .find(|&ordinal| self.entries[ordinal as usize].id() == key)
    }

    fn field(&self, field: &Field) -> Option<&FieldIndex> {
        self.numbers
            .get(field)
            .map(|&number| &self.fields[number as usize])
    }

    /// Adds the next event of the tenant; `event.seq` must be `len() + 1`.
    pub fn insert(&mut self, event: &Event, location: Location) {
        debug_assert_eq!(
            event.seq as usize,
            self.entries.len() + 1,
            "seq is dense per tenant"
        );
        let ordinal = self.entries.len() as u32;
        let id = event_id_value(&event.id).unwrap_or_default();
        self.entries
            .push(Entry::new(event.created_at, id, location));
        self.by_time.insert((event.created_at, ordinal));
        let text_fields: [Option<&str>; DESCRIPTION] = [
            Some(event.event_type.as_str()),
            event.action.as_deref(),
            event.actor.as_ref().map(|a| a.id.as_str()),
            event.actor.as_ref().and_then(|a| a.actor_type.as_deref()),
            event.actor.as_ref().and_then(|a| a.name.as_deref()),
            event.entity.as_ref().map(|e| e.entity_type.as_str()),
            event.entity.as_ref().and_then(|e| e.id.as_deref()),
            event.entity.as_ref().and_then(|e| e.name.as_deref()),
            Some(event.outcome.as_str()),
        ];
        self.roll_up(event.created_at, &text_fields, ordinal);
        for (slot, value) in text_fields.into_iter().enumerate() {
            if let Some(value) = value {
                let number = self.fixed_number(slot);
                self.add_term(number, TermRef::Text(value), ordinal);
            }
        }
        for (key, value) in &event.resources {
            if let Some(number) = self.member_number(Parent::Resources, key) {
                self.add_term(number, TermRef::Text(value), ordinal);
            }
        }
        if let Some(description) = &event.description {
            let number = self.fixed_number(DESCRIPTION);
            self.fields[number as usize].present.push(ordinal);
            for word in words_of(description) {
                add_posting(&mut self.words, &word, ordinal);
            }
        }
        let mut budget = MAX_LEAVES_PER_EVENT;
        for (key, value) in &event.context {
            if let Some(number) = self.member_number(Parent::Context, key) {
                self.add_json(number, value, ordinal, &mut budget, false);
            }
        }
        if let Some(Value::Object(members)) = &event.metadata {
            self.add_members(Parent::Metadata, members, ordinal, &mut budget);
        }
    }

    /// Adds the event to its hour, and counts its values of the [`ROLLED_UP`] fields there (taken from its
    /// values of the [`FIXED`] text fields).
    fn roll_up(&mut self, created_at: i64, text_fields: &[Option<&str>], ordinal: u32) {
        let hour_number = created_at.div_euclid(HOUR_MS);
        let hour = match self.hours.last_entry() {
            Some(last) if *last.key() == hour_number => last.into_mut(),
            _ => self.hours.entry(hour_number).or_default(),
        };
        hour.ordinals.push(ordinal);
        let mut abandoned = None;
        for (slot, &fixed) in ROLLED_UP_IN_FIXED.iter().enumerate() {
            let value = text_fields[fixed];
            let (Some(value), values) = (value, &mut self.rolled_up[slot]) else {
                continue;
            };
            if values.abandoned {
                continue;
            }
            let number = match values.numbers.get(value) {
                Some(&number) => number,
                None if values.names.len() >= MAX_ROLLED_UP_VALUES => {
                    values.abandoned = true;
                    abandoned = Some(slot as u32);
                    continue;
                }
                None => {
                    let number = values.names.len() as u32;
                    values.numbers.insert(value.into(), number);
                    values.names.push(value.into());
                    number
                }
            };
            hour.count(((slot as u32) << ROLLUP_VALUE_BITS) | number);
        }
        if let Some(slot) = abandoned {
            for hour in self.hours.values_mut() {
                hour.counts
                    .retain(|&(key, _)| key >> ROLLUP_VALUE_BITS != slot);
            }
            self.rolled_up[slot as usize] = RolledUpValues {
                abandoned: true,
                ..RolledUpValues::default()
            };
        }
    }

    fn new_field(&mut self, field: Field) -> u32 {
        let number = self.fields.len() as u32;
        self.numbers.insert(field.clone(), number);
        self.fields.push(FieldIndex {
            field,
            present: Ordinals::default(),
            terms: FieldTerms::default(),
            members: FxHashMap::default(),
        });
        number
    }

    fn fixed_number(&mut self, slot: usize) -> u32 {
        match self.fixed[slot] {
            Some(number) => number,
            None => {
                let number = self.new_field(FIXED[slot].clone());
                self.fixed[slot] = Some(number);
                number
            }
        }
    }

    /// The number of a resource, context key or metadata member, numbering it when new; `None` when it
    /// would be one JSON field more than [`MAX_JSON_FIELDS`] (it is then unindexed).
    fn member_number(&mut self, parent: Parent, key: &str) -> Option<u32> {
        let known = match parent {
            Parent::Resources => &self.resources,
            Parent::Context => &self.context,
            Parent::Metadata => &self.metadata,
            Parent::Path(number) => &self.fields[number as usize].members,
        };
        if let Some(&number) = known.get(key) {
            return Some(number);
        }
        let field = match parent {
            Parent::Resources => Field::Resource(key.to_string()),
            Parent::Context => Field::Context(key.to_string()),
            Parent::Metadata => Field::Metadata(key.to_string()),
            Parent::Path(number) => self.member_path(number, key),
        };
        if parent != Parent::Resources {
            if self.json_fields >= MAX_JSON_FIELDS {
                self.unindexed.insert(field);
                return None;
            }
            self.json_fields += 1;
        }
        let number = self.new_field(field);
        let known = match parent {
            Parent::Resources => &mut self.resources,
            Parent::Context => &mut self.context,
            Parent::Metadata => &mut self.metadata,
            Parent::Path(parent) => &mut self.fields[parent as usize].members,
        };
        known.insert(key.into(), number);
        Some(number)
    }

    /// The metadata path of member `key` of the metadata path numbered `number`.
    fn member_path(&self, number: u32, key: &str) -> Field {
        let Field::Metadata(path) = &self.fields[number as usize].field else {
            unreachable!("only metadata paths have members")
        };
        Field::Metadata(format!("{path}.{key}"))
    }

    /// Whether some events may have `field` without the index knowing: it was marked unindexed, or it is a
    /// JSON field the index never numbered after the tenant reached [`MAX_JSON_FIELDS`] (a path below a refused
    /// one is not marked itself).
    fn not_indexed(&self, field: &Field) -> bool {
        self.unindexed.contains(field)
            || (matches!(field, Field::Metadata(_) | Field::Context(_))
                && self.json_fields >= MAX_JSON_FIELDS
                && !self.numbers.contains_key(field))
    }

    fn add_term(&mut self, number: u32, term: TermRef<'_>, ordinal: u32) {
        let index = &mut self.fields[number as usize];
        index.present.push(ordinal);
        if matches!(term, TermRef::Text(text) if text.len() > MAX_TERM_BYTES) {
            let field = index.field.clone();
            self.unindexed.insert(field);
        } else {
            index.terms.insert(term, ordinal);
        }
    }

    /// Indexes the members of a metadata object (the whole metadata, or the object at metadata path
    /// `parent`), each under its own path.
    fn add_members(
        &mut self,
        parent: Parent,
        members: &serde_json::Map<String, Value>,
        ordinal: u32,
        budget: &mut usize,
    ) {
        for (key, value) in members {
            if key.contains('.') || key.is_empty() {
                // `a.b` as one key cannot be told apart from a nested path: leave it to evaluation.
                let field = match parent {
                    Parent::Path(number) => self.member_path(number, key),
                    _ => Field::Metadata(key.clone()),
                };
                self.unindexed.insert(field);
                continue;
            }
            if let Some(number) = self.member_number(parent, key) {
                self.add_json(number, value, ordinal, budget, true);
            }
        }
    }

    /// Indexes one JSON value under field `number`. Metadata objects (`nested`) continue as sub-paths; context
    /// objects are only present.
    fn add_json(
        &mut self,
        number: u32,
        value: &Value,
        ordinal: u32,
        budget: &mut usize,
        nested: bool,
    ) {
        // Scalars are marked present by `add_term`; containers are present even when empty.
        if matches!(value, Value::Array(_) | Value::Object(_)) {
            self.fields[number as usize].present.push(ordinal);
        }
        self.add_json_value(number, value, ordinal, budget, nested);
    }

    /// The value (or array element) itself: scalars are terms of the field, arrays are flattened, objects
    /// continue the metadata path.
    fn add_json_value(
        &mut self,
        number: u32,
        value: &Value,
        ordinal: u32,
        budget: &mut usize,
        nested: bool,
    ) {
        match value {
            Value::Array(items) => {
                for item in items {
                    self.add_json_value(number, item, ordinal, budget, nested);
                }
            }
            Value::Object(members) => {
                if nested {
                    self.add_members(Parent::Path(number), members, ordinal, budget);
                }
            }
            scalar => {
                if *budget == 0 {
                    let field = self.fields[number as usize].field.clone();
                    self.unindexed.insert(field);
                    return;
                }
                *budget -= 1;
                let term = TermRef::of(scalar).expect("a scalar");
                self.add_term(number, term, ordinal);
            }
        }
    }

    fn all(&self) -> RoaringBitmap {
        let mut all = RoaringBitmap::new();
        all.insert_range(0..self.entries.len() as u32);
        all
    }

    /// Plans `filter` into candidates.
    pub fn plan(&self, filter: &Filter) -> Candidates {
        match filter {
            Filter::All => Candidates {
                bitmap: None,
                exact: true,
            },
            Filter::And(parts) => {
                let mut bitmap: Option<RoaringBitmap> = None;
                let mut exact = true;
                for part in parts {
                    let planned = self.plan(part);
                    exact &= planned.exact;
                    if let Some(part_bitmap) = planned.bitmap {
                        bitmap = Some(match bitmap {
                            Some(current) => current & part_bitmap,
                            None => part_bitmap,
                        });
                    }
                }
                Candidates { bitmap, exact }
            }
            Filter::Or(parts) => {
                let mut union = RoaringBitmap::new();
                let mut everything = false;
                let mut exact = true;
                for part in parts {
                    let planned = self.plan(part);
                    exact &= planned.exact;
                    match planned.bitmap {
                        Some(part_bitmap) => union |= part_bitmap,
                        None => everything = true,
                    }
                }
                Candidates {
                    bitmap: if everything { None } else { Some(union) },
                    exact,
                }
            }
            Filter::Not(inner) => {
                let planned = self.plan(inner);
                if !planned.exact {
                    return Candidates::unknown();
                }
                match planned.bitmap {
                    None => Candidates::exact(RoaringBitmap::new()),
                    Some(bitmap) => Candidates::exact(self.all() - bitmap),
                }
            }
            Filter::Text(phrase) => self.plan_words(phrase),
            Filter::Condition(condition) => {
                self.plan_condition(&condition.field, &condition.predicate)
            }
        }
    }

    /// Ordinals whose description has, for every word of `phrase`, a word containing it: a superset of the
    /// descriptions containing the phrase.
    fn plan_words(&self, phrase: &str) -> Candidates {
        let mut result: Option<RoaringBitmap> = None;
        for token in words_of(phrase) {
            let mut union = RoaringBitmap::new();
            for (word, posting) in &self.words {
                if word.contains(token.as_ref()) {
                    posting.add_to(&mut union);
                }
            }
            result = Some(match result {
                Some(current) => current & union,
                None => union,
            });
        }
        Candidates {
            bitmap: result,
            exact: false,
        }
    }

    fn plan_condition(&self, field: &Field, predicate: &Predicate) -> Candidates {
        match field {
            Field::CreatedAt | Field::ReceivedAt => return Candidates::unknown(),
            Field::Seq => return Candidates::exact(self.plan_seq(predicate)),
            Field::Id => {
                let lookup = |operand: &Operand| match operand {
                    Operand::Text(text) => self.ordinal_of_id(text),
                    Operand::Number(_) => None,
                };
                return match predicate {
                    Predicate::Eq(operand) => {
                        Candidates::exact(lookup(operand).into_iter().collect())
                    }
                    Predicate::In(operands) => {
                        Candidates::exact(operands.iter().filter_map(lookup).collect())
                    }
                    Predicate::Exists => Candidates {
                        bitmap: None,
                        exact: true,
                    },
                    _ => Candidates::unknown(),
                };
            }
            Field::Description => {
                return match predicate {
                    Predicate::Exists => Candidates::exact(
                        self.field(field)
                            .map(|index| index.present.to_bitmap())
                            .unwrap_or_default(),
                    ),
                    Predicate::Contains(needle) => self.plan_words(needle),
                    _ => Candidates::unknown(),
                }
            }
            _ => {}
        }
        if self.not_indexed(field) {
            return Candidates::unknown();
        }
        if let Predicate::Exists = predicate {
            return Candidates::exact(
                self.field(field)
                    .map(|index| index.present.to_bitmap())
                    .unwrap_or_default(),
            );
        }
        let Some(dictionary) = self.field(field).map(|index| &index.terms) else {
            return Candidates::exact(RoaringBitmap::new());
        };
        let json = field.kind() == FieldKind::Json;
        let mut result = RoaringBitmap::new();
        let text_of = |operand: &Operand| match operand {
            Operand::Text(text) => Some(text.clone()),
            Operand::Number(_) => None,
        };
        match predicate {
            Predicate::Eq(operand) => {
                if let Some(text) = text_of(operand) {
                    dictionary.equal(&text, json, &mut result);
                }
            }
            Predicate::In(operands) => {
                for text in operands.iter().filter_map(text_of) {
                    dictionary.equal(&text, json, &mut result);
                }
            }
            Predicate::Gt(operand)
            | Predicate::Gte(operand)
            | Predicate::Lt(operand)
            | Predicate::Lte(operand) => {
                if let Some(text) = text_of(operand) {
                    let accept = |ordering: Ordering| match predicate {
                        Predicate::Gt(_) => ordering == Ordering::Greater,
                        Predicate::Gte(_) => ordering != Ordering::Less,
                        Predicate::Lt(_) => ordering == Ordering::Less,
                        _ => ordering != Ordering::Greater,
                    };
                    dictionary.compare(&text, json, accept, &mut result);
                }
            }
            Predicate::Contains(needle) => {
                dictionary.text_matching(|text| contains_folded(text, needle), &mut result)
            }
            Predicate::Prefix(prefix) => {
                dictionary.text_matching(|text| text.starts_with(prefix.as_str()), &mut result)
            }
            Predicate::Exists => unreachable!("handled above"),
        }
        Candidates::exact(result)
    }

    fn plan_seq(&self, predicate: &Predicate) -> RoaringBitmap {
        let length = self.entries.len() as i64;
        // Ordinal range [low, high) for seq values [low + 1, high + 1).
        let range = |low_seq: i64, high_seq_exclusive: i64| -> RoaringBitmap {
            let low = low_seq.saturating_sub(1).clamp(0, length);
            let high = high_seq_exclusive.saturating_sub(1).clamp(0, length);
            let mut bitmap = RoaringBitmap::new();
            if low < high {
                bitmap.insert_range(low as u32..high as u32);
            }
            bitmap
        };
        let number = |operand: &Operand| match operand {
            Operand::Number(number) => *number,
            Operand::Text(_) => i64::MIN,
        };
        match predicate {
            Predicate::Eq(operand) => {
                let seq = number(operand);
                range(seq, seq.saturating_add(1))
            }
            Predicate::In(operands) => operands
                .iter()
                .map(|o| range(number(o), number(o).saturating_add(1)))
                .fold(RoaringBitmap::new(), |a, b| a | b),
            Predicate::Gt(operand) => range(number(operand).saturating_add(1), i64::MAX),
            Predicate::Gte(operand) => range(number(operand), i64::MAX),
            Predicate::Lt(operand) => range(i64::MIN, number(operand)),
            Predicate::Lte(operand) => range(i64::MIN, number(operand).saturating_add(1)),
            Predicate::Exists => self.all(),
            Predicate::Contains(_) | Predicate::Prefix(_) => RoaringBitmap::new(),
        }
    }

    /// The ordinals of each value of `field`, named as the API prints values (numbers and booleans as JSON),
    /// or `None` when the field could not be fully indexed for this tenant.
    pub fn value_postings(&self, field: &Field) -> Option<Vec<(String, RoaringBitmap)>> {
        if self.not_indexed(field)
            || matches!(field.kind(), FieldKind::Time | FieldKind::Seq)
            || *field == Field::Id
            || *field == Field::Description
        {
            return None;
        }
        let Some(index) = self.field(field) else {
            return Some(Vec::new());
        };
        let terms = &index.terms;
        let mut out = Vec::with_capacity(terms.text.len() + terms.numbers.len() + 3);
        for (text, posting) in &terms.text {
            out.push((text.to_string(), posting.to_bitmap()));
        }
        for (number, posting) in &terms.numbers {
            out.push((
                serde_json::Number::from_f64(number.0)
                    .map(|n| n.to_string())
                    .unwrap_or_default(),
                posting.to_bitmap(),
            ));
        }
        for (name, posting) in [
            ("true", &terms.trues),
            ("false", &terms.falses),
            ("null", &terms.nulls),
        ] {
            if !posting.is_empty() {
                out.push((name.to_string(), posting.to_bitmap()));
            }
        }
        Some(out)
    }

    /// The ordinals created in `[low, high]` (inclusive). Whole hours are taken as they are; only the events of
    /// a partly covered first or last hour are checked one by one.
    pub fn created_between(&self, low: i64, high: i64) -> RoaringBitmap {
        let mut out = RoaringBitmap::new();
        if low > high {
            return out;
        }
        for (&hour, Hour { ordinals, .. }) in self
            .hours
            .range(low.div_euclid(HOUR_MS)..=high.div_euclid(HOUR_MS))
        {
            if covers(low, high, hour) {
                ordinals.add_to(&mut out);
            } else {
                out |= self.partly(ordinals, low, high);
            }
        }
        out
    }

    /// How many events were created in `[low, high]` (inclusive).
    pub fn count_between(&self, low: i64, high: i64) -> u64 {
        if low > high {
            return 0;
        }
        self.hours
            .range(low.div_euclid(HOUR_MS)..=high.div_euclid(HOUR_MS))
            .map(|(&hour, Hour { ordinals, .. })| {
                if covers(low, high, hour) {
                    ordinals.len()
                } else {
                    ordinals
                        .iter()
                        .filter(|&ordinal| {
                            (low..=high).contains(&self.entries[ordinal as usize].created_at)
                        })
                        .count() as u64
                }
            })
            .sum()
    }

    /// The ordinals of a partly covered hour that were created in `[low, high]`.
    fn partly(&self, ordinals: &Ordinals, low: i64, high: i64) -> RoaringBitmap {
        RoaringBitmap::from_sorted_iter(
            ordinals.iter().filter(|&ordinal| {
                (low..=high).contains(&self.entries[ordinal as usize].created_at)
            }),
        )
        .expect("ordinals ascend")
    }

    /// Every event of the tenant created in `[low, high]`, counted per bucket (`interval` a whole number of
    /// hours, buckets starting at `first_bucket`, an hour boundary) and per value of `field`, from the hourly
    /// rollups: the work is proportional to the hours and values, not to the events. `None` when `field` is
    /// not rolled up for this tenant.
    pub fn rolled_up_counts(
        &self,
        field: &Field,
        first_bucket: i64,
        interval: i64,
        buckets: usize,
        low: i64,
        high: i64,
    ) -> Option<ValueCounts> {
        let slot = ROLLED_UP.iter().position(|rolled| rolled == field)?;
        let values = &self.rolled_up[slot];
        if values.abandoned || self.not_indexed(field) {
            return None;
        }
        let width = values.names.len();
        let mut counts = vec![0u64; buckets * width];
        let keys = (slot as u32) << ROLLUP_VALUE_BITS..((slot as u32 + 1) << ROLLUP_VALUE_BITS);
        if low <= high {
            for (
                &hour,
                Hour {
                    ordinals,
                    counts: hour_counts,
                },
            ) in self
                .hours
                .range(low.div_euclid(HOUR_MS)..=high.div_euclid(HOUR_MS))
            {
                let row = ((hour * HOUR_MS - first_bucket) / interval) as usize * width;
                if covers(low, high, hour) {
                    let start = hour_counts.partition_point(|&(key, _)| key < keys.start);
                    for &(key, count) in hour_counts[start..]
                        .iter()
                        .take_while(|(key, _)| keys.contains(key))
                    {
                        counts[row + (key - keys.start) as usize] += u64::from(count);
                    }
                } else {
                    // The events of a partly covered hour are counted with each value's posting.
                    let part = self.partly(ordinals, low, high);
                    if part.is_empty() {
                        continue;
                    }
                    let terms = &self.field(field)?.terms.text;
                    for (number, name) in values.names.iter().enumerate() {
                        counts[row + number] += match terms.get(name.as_ref()) {
                            Some(posting) => posting.intersection_len(&part),
                            None => 0,
                        };
                    }
                }
            }
        }
        // Only the values with events in the window are named.
        let present: Vec<usize> = (0..width)
            .filter(|&number| {
                counts[number..]
                    .iter()
                    .step_by(width)
                    .any(|&count| count > 0)
            })
            .collect();
        let counts = if present.len() == width {
            counts
        } else {
            counts
                .chunks_exact(width.max(1))
                .flat_map(|row| present.iter().map(|&number| row[number]))
                .collect()
        };
        Some(ValueCounts {
            names: present
                .iter()
                .map(|&number| values.names[number].to_string())
                .collect(),
            counts,
        })
    }

    /// Visits candidate ordinals in listing order within `created_at` bounds `[low, high]` (inclusive), strictly
    /// after `after` (a `(created_at, ordinal)` position in that order), until `visit` returns false.
    pub fn scan(
        &self,
        candidates: Option<&RoaringBitmap>,
        low: i64,
        high: i64,
        after: Option<(i64, u32)>,
        order: Order,
        mut visit: impl FnMut(u32) -> bool,
    ) {
        if low > high {
            return;
        }
        let mut lower = Bound::Included((low, 0u32));
        let mut upper = Bound::Included((high, u32::MAX));
        if let Some(position) = after {
            match order {
                Order::Desc => {
                    if position < bound_value(&upper) {
                        upper = Bound::Excluded(position);
                    }
                }
                Order::Asc => {
                    if position >= bound_value(&lower) {
                        lower = Bound::Excluded(position);
                    }
                }
            }
        }
        if range_is_empty(&lower, &upper) {
            return;
        }
        match candidates {
            Some(bitmap) if bitmap.len() <= MATERIALIZE_LIMIT => {
                // First walk the time order for as many steps as there are candidates: a narrow window, or
                // candidates dense in it, end the walk sooner than sorting every candidate would. Only what the
                // walk did not reach is sorted.
                let mut budget = bitmap.len();
                let mut last_walked = None;
                let mut walked_all = true;
                {
                    for key in self.by_time.range(lower, upper, order == Order::Desc) {
                        if budget == 0 {
                            walked_all = false;
                            break;
                        }
                        budget -= 1;
                        last_walked = Some(key);
                        if bitmap.contains(key.1) && !visit(key.1) {
                            return;
                        }
                    }
                }
                if walked_all {
                    return;
                }
                if let Some(key) = last_walked {
                    match order {
                        Order::Desc => upper = Bound::Excluded(key),
                        Order::Asc => lower = Bound::Excluded(key),
                    }
                }
                let in_range = |key: &(i64, u32)| {
                    (match lower {
                        Bound::Included(l) => *key >= l,
                        Bound::Excluded(l) => *key > l,
                        Bound::Unbounded => true,
                    }) && (match upper {
                        Bound::Included(u) => *key <= u,
                        Bound::Excluded(u) => *key < u,
                        Bound::Unbounded => true,
                    })
                };
                let mut keys: Vec<(i64, u32)> = bitmap
                    .iter()
                    .map(|ordinal| (self.entries[ordinal as usize].created_at, ordinal))
                    .filter(in_range)
                    .collect();
                keys.sort_unstable();
                if order == Order::Desc {
                    keys.reverse();
                }
                for (_, ordinal) in keys {
                    if !visit(ordinal) {
                        return;
                    }
                }
            }
            _ => {
                for (_, ordinal) in self.by_time.range(lower, upper, order == Order::Desc) {
                    if candidates.is_some_and(|bitmap| !bitmap.contains(ordinal)) {
                        continue;
                    }
                    if !visit(ordinal) {
                        return;
                    }
                }
            }
        }
    }
}

/// Whether `[low, high]` covers the whole of hour number `hour`.
fn covers(low: i64, high: i64, hour: i64) -> bool {
    let start = hour * HOUR_MS;
    low <= start && start + (HOUR_MS - 1) <= high
}

fn bound_value<T: Copy>(bound: &Bound<T>) -> T {
    match bound {
        Bound::Included(value) | Bound::Excluded(value) => *value,
        Bound::Unbounded => unreachable!("scan bounds are always set"),
    }
}

/// Whether a range is empty (BTreeMap::range panics on inverted ranges).
fn range_is_empty<T: Ord>(lower: &Bound<T>, upper: &Bound<T>) -> bool {
    match (lower, upper) {
        (Bound::Included(l), Bound::Included(u)) => l > u,
        (Bound::Included(l), Bound::Excluded(u)) | (Bound::Excluded(l), Bound::Included(u)) => {
            l >= u
        }
        (Bound::Excluded(l), Bound::Excluded(u)) => l >= u,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolled_up_fields_are_found_among_the_fixed_ones() {
        for (field, &fixed) in ROLLED_UP.iter().zip(&ROLLED_UP_IN_FIXED) {
            assert_eq!(&FIXED[fixed], field);
        }
    }

    #[test]
    fn an_entry_is_forty_bytes_and_keeps_its_id_and_location() {
        assert_eq!(std::mem::size_of::<Entry>(), 40);
        let id = (0x0192_3456_789a_u128 << 80) | 0xfedc_ba98_7654_3210_0123;
        for (segment, offset, compacted, line) in [
            (0, 0, false, 0),
            (7, 123_456, true, 9),
            (u32::MAX, (1 << 63) - 1, true, u32::MAX),
        ] {
            let location = Location {
                record: RecordPosition {
                    segment,
                    offset,
                    compacted,
                },
                line,
            };
            let mut entry = Entry::new(-5, id, location);
            assert_eq!(
                (entry.created_at, entry.id(), entry.location()),
                (-5, id, location)
            );
            let moved = Location {
                record: RecordPosition {
                    compacted: !compacted,
                    ..location.record
                },
                line: 1,
            };
            entry.set_location(moved);
            assert_eq!((entry.id(), entry.location()), (id, moved));
        }
    }
}
