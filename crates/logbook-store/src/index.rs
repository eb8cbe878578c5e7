//! The per-tenant search index of the embedded engine, held in memory and rebuilt from the log on open.
//!
//! Events of a tenant are numbered by ordinal `seq - 1` (seq is dense per tenant). The index keeps:
//! - `entries[ordinal]`: created_at, received_at, the id (a ULID as `u128`) and where the body is in the log;
//! - `by_time`: the set of `(created_at, ordinal)`, which is the listing order (`created_at`, then `seq`);
//! - `fields[field]`, for every text field, resource and context key and metadata path: a `present` bitmap
//!   (ordinals where the field exists) and a term dictionary of typed values (text hashed; numbers ordered;
//!   booleans and null apart) mapping each value to its ordinals, so that eq, in, ranges, prefix, contains
//!   and exists become set operations over postings;
//! - `words`: description words, narrowing full-text phrases;
//! - `hours[hour]`: the ordinals created in each hour since the epoch, and how many events of the hour have
//!   each value of the [`ROLLED_UP`] fields (type, action, outcome, actor and entity type), so that histograms
//!   with whole-hour buckets add up hours instead of visiting every event.
//!
//! Ordinals of a tenant only grow, so every posting update is an append at the end.
//!
//! The planner turns a [`Filter`] into [`Candidates`]: a bitmap (or "all") and whether it is exact. Fields
//! that could not be fully indexed (over-long values, too many paths, keys containing dots) are listed in
//! `unindexed` and planned as inexact; inexact candidates are re-checked with [`Filter::matches`] on the
//! stored event, so the index only ever changes speed, never results.

use crate::wal::RecordPosition;
use logbook_core::event::{event_id_value, Event};
use logbook_core::filter::eval::contains_folded;
use logbook_core::filter::query_string::Order;
use logbook_core::filter::{Field, FieldKind, Filter, Operand, Predicate};
use roaring::RoaringBitmap;
use rustc_hash::FxHashMap;
use serde_json::Value;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
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
    ordinals: RoaringBitmap,
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
    numbers: FxHashMap<Box<str>, u32>,
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

#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub created_at: i64,
    pub received_at: i64,
    pub id: u128,
    pub location: Location,
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

/// The ordinals of one term: most terms of high-cardinality fields (request ids) hold one event, so that case
/// needs no bitmap.
#[derive(Debug, Clone)]
enum Posting {
    One(u32),
    Many(RoaringBitmap),
}

impl Posting {
    fn insert(&mut self, ordinal: u32) {
        match self {
            Posting::One(existing) if *existing == ordinal => {}
            Posting::One(existing) => {
                let mut bitmap = RoaringBitmap::new();
                bitmap.insert(*existing);
                bitmap.insert(ordinal);
                *self = Posting::Many(bitmap);
            }
            Posting::Many(bitmap) => append(bitmap, ordinal),
        }
    }

    fn add_to(&self, out: &mut RoaringBitmap) {
        match self {
            Posting::One(ordinal) => {
                out.insert(*ordinal);
            }
            Posting::Many(bitmap) => *out |= bitmap,
        }
    }
}

/// Adds an ordinal; ordinals of a tenant only grow, so this is almost always an O(1) push at the end.
fn append(bitmap: &mut RoaringBitmap, ordinal: u32) {
    if bitmap.try_push(ordinal).is_err() {
        bitmap.insert(ordinal);
    }
}

fn insert_posting(slot: &mut Option<Posting>, ordinal: u32) {
    match slot {
        Some(posting) => posting.insert(ordinal),
        None => *slot = Some(Posting::One(ordinal)),
    }
}

/// The term dictionary of one field. Text terms are hashed (ingest is a lookup, not a tree search); ordered
/// operations on text (ranges, prefix, contains) scan the distinct values, which is proportional to the
/// field's cardinality, not to the number of events.
#[derive(Debug, Default)]
struct FieldTerms {
    text: FxHashMap<Box<str>, Posting>,
    numbers: BTreeMap<OrderedNumber, Posting>,
    trues: Option<Posting>,
    falses: Option<Posting>,
    nulls: Option<Posting>,
}

impl FieldTerms {
    fn insert(&mut self, term: TermRef<'_>, ordinal: u32) {
        match term {
            TermRef::Text(text) => match self.text.get_mut(text) {
                Some(posting) => posting.insert(ordinal),
                None => {
                    self.text.insert(text.into(), Posting::One(ordinal));
                }
            },
            TermRef::Number(number) => match self.numbers.entry(OrderedNumber::new(number)) {
                std::collections::btree_map::Entry::Occupied(mut entry) => {
                    entry.get_mut().insert(ordinal)
                }
                std::collections::btree_map::Entry::Vacant(entry) => {
                    entry.insert(Posting::One(ordinal));
                }
            },
            TermRef::Bool(true) => insert_posting(&mut self.trues, ordinal),
            TermRef::Bool(false) => insert_posting(&mut self.falses, ordinal),
            TermRef::Null => insert_posting(&mut self.nulls, ordinal),
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
            _ => &None,
        };
        if let Some(posting) = special {
            posting.add_to(out);
        }
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
            if accept(text.as_ref().cmp(operand)) {
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
#[derive(Debug, Default)]
struct FieldIndex {
    present: RoaringBitmap,
    terms: FieldTerms,
}

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
    by_time: BTreeSet<(i64, u32)>,
    ids: HashMap<u128, u32>,
    /// Per field: where it is present, and its term dictionary (one lookup per indexed value).
    fields: FxHashMap<Field, FieldIndex>,
    unindexed: HashSet<Field>,
    words: FxHashMap<Box<str>, Posting>,
    json_fields: usize,
    /// Per hour (`created_at` divided by [`HOUR_MS`], rounded down): its ordinals and rolled-up counts.
    hours: BTreeMap<i64, Hour>,
    /// Per field of [`ROLLED_UP`], its values.
    rolled_up: [RolledUpValues; ROLLED_UP.len()],
}

fn words_of(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
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
                if entry.location.record.segment == from_segment
                    && !entry.location.record.compacted =>
            {
                entry.location = to;
                true
            }
            _ => false,
        }
    }

    pub fn ordinal_of_id(&self, id: &str) -> Option<u32> {
        event_id_value(id).and_then(|key| self.ids.get(&key).copied())
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
        self.entries.push(Entry {
            created_at: event.created_at,
            received_at: event.received_at,
            id,
            location,
        });
        self.by_time.insert((event.created_at, ordinal));
        self.ids.insert(id, ordinal);
        let hour_number = event.created_at.div_euclid(HOUR_MS);
        let hour = match self.hours.last_entry() {
            Some(last) if *last.key() == hour_number => last.into_mut(),
            _ => self.hours.entry(hour_number).or_default(),
        };
        append(&mut hour.ordinals, ordinal);
        let rolled_up_values = [
            Some(event.event_type.as_str()),
            event.action.as_deref(),
            Some(event.outcome.as_str()),
            event.actor.as_ref().and_then(|a| a.actor_type.as_deref()),
            event.entity.as_ref().map(|e| e.entity_type.as_str()),
        ];
        let mut abandoned = None;
        for (slot, value) in rolled_up_values.into_iter().enumerate() {
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

        let text_fields: [(Field, Option<&str>); 9] = [
            (Field::Type, Some(event.event_type.as_str())),
            (Field::Action, event.action.as_deref()),
            (Field::ActorId, event.actor.as_ref().map(|a| a.id.as_str())),
            (
                Field::ActorType,
                event.actor.as_ref().and_then(|a| a.actor_type.as_deref()),
            ),
            (
                Field::ActorName,
                event.actor.as_ref().and_then(|a| a.name.as_deref()),
            ),
            (
                Field::EntityType,
                event.entity.as_ref().map(|e| e.entity_type.as_str()),
            ),
            (
                Field::EntityId,
                event.entity.as_ref().and_then(|e| e.id.as_deref()),
            ),
            (
                Field::EntityName,
                event.entity.as_ref().and_then(|e| e.name.as_deref()),
            ),
            (Field::Outcome, Some(event.outcome.as_str())),
        ];
        for (field, value) in text_fields {
            if let Some(value) = value {
                self.add_term(&field, TermRef::Text(value), ordinal);
            }
        }
        for (key, value) in &event.resources {
            self.add_term(&Field::Resource(key.clone()), TermRef::Text(value), ordinal);
        }
        if let Some(description) = &event.description {
            self.mark_present(&Field::Description, ordinal);
            for word in words_of(description) {
                match self.words.get_mut(word.as_str()) {
                    Some(posting) => posting.insert(ordinal),
                    None => {
                        self.words
                            .insert(word.into_boxed_str(), Posting::One(ordinal));
                    }
                }
            }
        }
        let mut budget = MAX_LEAVES_PER_EVENT;
        for (key, value) in &event.context {
            self.add_json(
                Field::Context(key.clone()),
                value,
                ordinal,
                &mut budget,
                None,
            );
        }
        if let Some(Value::Object(members)) = &event.metadata {
            for (key, value) in members {
                self.add_metadata(key.clone(), value, ordinal, &mut budget);
            }
        }
    }

    fn mark_present(&mut self, field: &Field, ordinal: u32) {
        match self.fields.get_mut(field) {
            Some(index) => {
                append(&mut index.present, ordinal);
            }
            None => {
                let mut index = FieldIndex::default();
                append(&mut index.present, ordinal);
                self.fields.insert(field.clone(), index);
            }
        }
    }

    fn add_term(&mut self, field: &Field, term: TermRef<'_>, ordinal: u32) {
        let too_long = matches!(term, TermRef::Text(text) if text.len() > MAX_TERM_BYTES);
        match self.fields.get_mut(field) {
            Some(index) => {
                append(&mut index.present, ordinal);
                if !too_long {
                    index.terms.insert(term, ordinal);
                }
            }
            None => {
                let mut index = FieldIndex::default();
                append(&mut index.present, ordinal);
                if !too_long {
                    index.terms.insert(term, ordinal);
                }
                self.fields.insert(field.clone(), index);
            }
        }
        if too_long {
            self.unindexed.insert(field.clone());
        }
    }

    fn json_field_allowed(&mut self, field: &Field) -> bool {
        if self.fields.contains_key(field) {
            return true;
        }
        if self.json_fields >= MAX_JSON_FIELDS {
            self.unindexed.insert(field.clone());
            return false;
        }
        self.json_fields += 1;
        true
    }

    /// Indexes the metadata value at dotted `path` and below.
    fn add_metadata(&mut self, path: String, value: &Value, ordinal: u32, budget: &mut usize) {
        if path.split('.').any(str::is_empty) {
            return; // not addressable by any filter path
        }
        let field = Field::Metadata(path);
        let Field::Metadata(path) = &field else {
            unreachable!()
        };
        let path = path.clone();
        self.add_json(field, value, ordinal, budget, Some(&path));
    }

    /// Indexes one JSON value under `field`. With `metadata_path`, object members continue as sub-paths;
    /// without (context), objects are only present.
    fn add_json(
        &mut self,
        field: Field,
        value: &Value,
        ordinal: u32,
        budget: &mut usize,
        metadata_path: Option<&str>,
    ) {
        if !self.json_field_allowed(&field) {
            return;
        }
        // Scalars are marked present by `add_term`; containers are present even when empty.
        if matches!(value, Value::Array(_) | Value::Object(_)) {
            self.mark_present(&field, ordinal);
        }
        self.add_json_value(&field, value, ordinal, budget, metadata_path);
    }

    /// The value (or array element) itself: scalars are terms of `field`, arrays are flattened, objects
    /// continue the metadata path.
    fn add_json_value(
        &mut self,
        field: &Field,
        value: &Value,
        ordinal: u32,
        budget: &mut usize,
        metadata_path: Option<&str>,
    ) {
        match value {
            Value::Array(items) => {
                for item in items {
                    self.add_json_value(field, item, ordinal, budget, metadata_path);
                }
            }
            Value::Object(members) => {
                if let Some(path) = metadata_path {
                    for (key, child) in members {
                        if key.contains('.') || key.is_empty() {
                            // `a.b` as one key cannot be told apart from a nested path: leave it to evaluation.
                            self.unindexed
                                .insert(Field::Metadata(format!("{path}.{key}")));
                            continue;
                        }
                        self.add_metadata(format!("{path}.{key}"), child, ordinal, budget);
                    }
                }
            }
            scalar => {
                if *budget == 0 {
                    self.unindexed.insert(field.clone());
                    return;
                }
                *budget -= 1;
                let term = TermRef::of(scalar).expect("a scalar");
                self.add_term(field, term, ordinal);
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
                if word.contains(token.as_str()) {
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
                        self.fields
                            .get(field)
                            .map(|index| index.present.clone())
                            .unwrap_or_default(),
                    ),
                    Predicate::Contains(needle) => self.plan_words(needle),
                    _ => Candidates::unknown(),
                }
            }
            _ => {}
        }
        if self.unindexed.contains(field) {
            return Candidates::unknown();
        }
        if let Predicate::Exists = predicate {
            return Candidates::exact(
                self.fields
                    .get(field)
                    .map(|index| index.present.clone())
                    .unwrap_or_default(),
            );
        }
        let Some(dictionary) = self.fields.get(field).map(|index| &index.terms) else {
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
        if self.unindexed.contains(field)
            || matches!(field.kind(), FieldKind::Time | FieldKind::Seq)
            || *field == Field::Id
            || *field == Field::Description
        {
            return None;
        }
        let Some(index) = self.fields.get(field) else {
            return Some(Vec::new());
        };
        let terms = &index.terms;
        let mut out = Vec::with_capacity(terms.text.len() + terms.numbers.len() + 3);
        let bitmap_of = |posting: &Posting| {
            let mut bitmap = RoaringBitmap::new();
            posting.add_to(&mut bitmap);
            bitmap
        };
        for (text, posting) in &terms.text {
            out.push((text.to_string(), bitmap_of(posting)));
        }
        for (number, posting) in &terms.numbers {
            out.push((
                serde_json::Number::from_f64(number.0)
                    .map(|n| n.to_string())
                    .unwrap_or_default(),
                bitmap_of(posting),
            ));
        }
        for (name, posting) in [
            ("true", &terms.trues),
            ("false", &terms.falses),
            ("null", &terms.nulls),
        ] {
            if let Some(posting) = posting {
                out.push((name.to_string(), bitmap_of(posting)));
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
                out |= ordinals;
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
    fn partly(&self, ordinals: &RoaringBitmap, low: i64, high: i64) -> RoaringBitmap {
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
        if values.abandoned || self.unindexed.contains(field) {
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
                    let terms = &self.fields.get(field)?.terms.text;
                    for (number, name) in values.names.iter().enumerate() {
                        counts[row + number] += match terms.get(name) {
                            Some(Posting::One(ordinal)) => u64::from(part.contains(*ordinal)),
                            Some(Posting::Many(bitmap)) => part.intersection_len(bitmap),
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
                    let range = self.by_time.range((lower, upper));
                    let steps: Box<dyn Iterator<Item = &(i64, u32)>> = match order {
                        Order::Desc => Box::new(range.rev()),
                        Order::Asc => Box::new(range),
                    };
                    for key in steps {
                        if budget == 0 {
                            walked_all = false;
                            break;
                        }
                        budget -= 1;
                        last_walked = Some(*key);
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
                let range = self.by_time.range((lower, upper));
                let mut step = |&(_, ordinal): &(i64, u32)| -> bool {
                    if candidates.is_some_and(|bitmap| !bitmap.contains(ordinal)) {
                        return true;
                    }
                    visit(ordinal)
                };
                match order {
                    Order::Desc => {
                        for key in range.rev() {
                            if !step(key) {
                                return;
                            }
                        }
                    }
                    Order::Asc => {
                        for key in range {
                            if !step(key) {
                                return;
                            }
                        }
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
