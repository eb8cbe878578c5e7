//! The per-tenant search index of the embedded engine, held in memory and rebuilt from the log on open.
//!
//! Events of a tenant are numbered by ordinal `seq - 1` (seq is dense per tenant). The index keeps:
//! - `entries[ordinal]`: created_at, the id's random part (its time part is `created_at`) and where the body is
//!   in the log, in 32 bytes;
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
use crate::piece::TenantPiece;
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
use std::io;
use std::ops::Bound;

/// Longest value indexed as a term; longer values make their field unindexed for the tenant.
const MAX_TERM_BYTES: usize = 512;
/// Most JSON leaves indexed per event.
const MAX_LEAVES_PER_EVENT: usize = 256;
/// Most distinct metadata/context fields indexed per tenant.
pub(crate) const MAX_JSON_FIELDS: usize = 4096;
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

/// One event in the index, 32 bytes (there is one per event, so every byte is 10 MB at 10M events). An id is
/// a ULID whose time part is the event's `created_at` (an id is only looked for among the events of its
/// millisecond, [`TenantIndex::ordinal_of_id`]), so only its 80 random bits are kept: `random` and
/// `random_low`. The location is unpacked, its offset in 39 bits (`offset` and `offset_high`, records start
/// far below 512 GiB into a file) with the record's `compacted` flag in the top bit of `offset_high`.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub created_at: i64,
    random: u64,
    offset: u32,
    segment: u32,
    line: u32,
    random_low: u16,
    offset_high: u8,
}

/// `offset_high`'s bit for [`RecordPosition::compacted`].
const COMPACTED: u8 = 1 << 7;
/// Offsets of records below this fit an entry.
const OFFSET_LIMIT: u64 = 1 << 39;

impl Entry {
    fn new(created_at: i64, id: u128, location: Location) -> Entry {
        let mut entry = Entry {
            created_at,
            random: (id >> 16) as u64,
            offset: 0,
            segment: 0,
            line: 0,
            random_low: id as u16,
            offset_high: 0,
        };
        entry.set_location(location);
        entry
    }

    /// The id's 80 random bits (the low bits of its 128).
    fn random_bits(&self) -> u128 {
        (u128::from(self.random) << 16) | u128::from(self.random_low)
    }

    /// Whether `id` (a ULID's 128 bits, its time part the millisecond looked in) is this event's.
    fn has_id(&self, id: u128) -> bool {
        self.random_bits() == id & ((1 << 80) - 1)
    }

    pub fn location(&self) -> Location {
        Location {
            record: RecordPosition {
                segment: self.segment,
                offset: (u64::from(self.offset_high & !COMPACTED) << 32) | u64::from(self.offset),
                compacted: self.offset_high & COMPACTED != 0,
            },
            line: self.line,
        }
    }

    fn set_location(&mut self, location: Location) {
        let record = location.record;
        assert!(record.offset < OFFSET_LIMIT, "a record offset below 2^39");
        self.offset = record.offset as u32;
        self.offset_high =
            (record.offset >> 32) as u8 | if record.compacted { COMPACTED } else { 0 };
        self.segment = record.segment;
        self.line = location.line;
    }
}

/// An f64 with a total order, for the term dictionary.
#[derive(Debug, Clone, Copy)]
pub struct OrderedNumber(pub(crate) f64);

impl OrderedNumber {
    pub(crate) fn new(value: f64) -> Self {
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
pub(crate) struct FieldTerms {
    pub(crate) text: FxHashMap<CompactString, Ordinals>,
    pub(crate) numbers: BTreeMap<OrderedNumber, Ordinals>,
    pub(crate) trues: Ordinals,
    pub(crate) falses: Ordinals,
    pub(crate) nulls: Ordinals,
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
}

pub(crate) fn finite_number(text: &str) -> Option<f64> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|number| number.is_finite())
}

/// One field of a tenant's index.
#[derive(Debug)]
pub(crate) struct FieldIndex {
    pub(crate) field: Field,
    pub(crate) present: Ordinals,
    pub(crate) terms: FieldTerms,
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

/// The field index of one ordinal range of a tenant: everything the planner looks up by field and value.
/// A tenant has one per WAL segment its events are in ([`MemoryPart`]) until the segment is compacted and
/// the part is written to the segment's index file ([`crate::piece`]).
#[derive(Default)]
pub(crate) struct FieldsPart {
    /// Per field, numbered in order of first appearance: where it is present, and its term dictionary.
    pub(crate) fields: Vec<FieldIndex>,
    /// The number of each field, for queries.
    numbers: FxHashMap<Field, u32>,
    /// On ingest, fields are found by the event's own keys, without building their names: the numbers of the
    /// [`FIXED`] fields, of resources, of context keys and of top-level metadata members (deeper metadata
    /// paths are in their parent's `members`).
    fixed: [Option<u32>; FIXED.len()],
    resources: FxHashMap<CompactString, u32>,
    context: FxHashMap<CompactString, u32>,
    metadata: FxHashMap<CompactString, u32>,
    pub(crate) unindexed: HashSet<Field>,
    pub(crate) words: FxHashMap<CompactString, Ordinals>,
    pub(crate) json_fields: usize,
}

/// The field index of a tenant's events in one WAL segment: ordinals `first..end`, created in `times`.
pub(crate) struct MemoryPart {
    pub(crate) segment: u32,
    pub(crate) first: u32,
    pub(crate) end: u32,
    pub(crate) times: (i64, i64),
    pub(crate) fields: FieldsPart,
}

/// A part of a tenant's field index: in memory, or in a compacted segment's index file.
enum Part {
    Memory(Box<MemoryPart>),
    Disk(TenantPiece),
}

impl Part {
    fn first(&self) -> u32 {
        match self {
            Part::Memory(part) => part.first,
            Part::Disk(piece) => piece.first,
        }
    }
    fn end(&self) -> u32 {
        match self {
            Part::Memory(part) => part.end,
            Part::Disk(piece) => piece.end,
        }
    }
    /// The segments the part's events are in, first and last.
    fn segments(&self) -> (u32, u32) {
        match self {
            Part::Memory(part) => (part.segment, part.segment),
            Part::Disk(piece) => piece.segments,
        }
    }

    /// The part's segments, for messages.
    fn segment_names(&self) -> String {
        match self.segments() {
            (first, last) if first == last => format!("segment {first}"),
            (first, last) => format!("segments {first}..={last}"),
        }
    }
    fn times(&self) -> (i64, i64) {
        match self {
            Part::Memory(part) => part.times,
            Part::Disk(piece) => piece.times,
        }
    }

    /// Runs `ask` on the part's terms: in memory, or its piece's section read from the index file.
    fn with_terms<T>(&self, ask: impl FnOnce(&dyn Terms) -> io::Result<T>) -> io::Result<T> {
        match self {
            Part::Memory(memory) => ask(&memory.fields),
            Part::Disk(piece) => ask(&piece.load()?),
        }
    }
}

#[derive(Default)]
pub struct TenantIndex {
    entries: Vec<Entry>,
    by_time: TimeOrder,
    /// The field index, in parts over consecutive ordinal ranges, in ordinal order.
    parts: Vec<Part>,
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
            .find(|&ordinal| self.entries[ordinal as usize].has_id(key))
    }

    /// Adds the next event of the tenant; `event.seq` must be `len() + 1`. Its fields go to the in-memory
    /// part of its segment, unless an index file already holds them (at open).
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
        if let Some(part) = self.part_for(ordinal, location.record.segment, event.created_at) {
            part.insert(event, text_fields, ordinal);
        }
    }

    /// The in-memory part that takes `ordinal` (the next one), started when it is the first of its segment;
    /// `None` when an attached index file already covers it.
    fn part_for(&mut self, ordinal: u32, segment: u32, created_at: i64) -> Option<&mut FieldsPart> {
        // Parts are in ordinal order: the one `ordinal` would extend is the last that starts at or before it.
        let position = self.parts.partition_point(|part| part.first() <= ordinal);
        let extends = match position.checked_sub(1).map(|before| &self.parts[before]) {
            Some(Part::Disk(piece)) if ordinal < piece.end => return None,
            Some(Part::Memory(part)) => part.segment == segment && part.end == ordinal,
            _ => false,
        };
        let at = if extends {
            position - 1
        } else {
            self.parts.insert(
                position,
                Part::Memory(Box::new(MemoryPart {
                    segment,
                    first: ordinal,
                    end: ordinal,
                    times: (created_at, created_at),
                    fields: FieldsPart::default(),
                })),
            );
            position
        };
        let Part::Memory(part) = &mut self.parts[at] else {
            unreachable!("a memory part was found or made")
        };
        part.end += 1;
        part.times = (part.times.0.min(created_at), part.times.1.max(created_at));
        Some(&mut part.fields)
    }

    /// The in-memory part of `segment`, if the tenant has events there that no index file holds yet.
    pub(crate) fn memory_part(&self, segment: u32) -> Option<&MemoryPart> {
        self.parts.iter().find_map(|part| match part {
            Part::Memory(memory) if memory.segment == segment => Some(&**memory),
            _ => None,
        })
    }

    /// Puts an index file's piece in place: instead of the in-memory part of its segment (after compaction),
    /// or, at open before the log is replayed, among the other pieces in ordinal order.
    pub(crate) fn attach(&mut self, piece: TenantPiece) -> std::result::Result<(), String> {
        let position = self
            .parts
            .partition_point(|part| part.first() < piece.first);
        match self.parts.get(position) {
            Some(Part::Memory(memory)) if (memory.segment, memory.segment) == piece.segments => {
                if (memory.first, memory.end) != (piece.first, piece.end) {
                    return Err(format!(
                        "the index file of segment {} holds ordinals {}..{}, the log {}..{}",
                        memory.segment, piece.first, piece.end, memory.first, memory.end
                    ));
                }
                self.parts[position] = Part::Disk(piece);
            }
            next => {
                let overlaps = next.is_some_and(|next| next.first() < piece.end)
                    || position
                        .checked_sub(1)
                        .is_some_and(|before| self.parts[before].end() > piece.first);
                if overlaps || piece.first >= piece.end {
                    let part = Part::Disk(piece);
                    return Err(format!(
                        "the index file of {} holds ordinals {}..{}, which overlap another part",
                        part.segment_names(),
                        part.first(),
                        part.end()
                    ));
                }
                self.parts.insert(position, Part::Disk(piece));
            }
        }
        Ok(())
    }

    /// The pieces of index files, in ordinal order.
    pub(crate) fn pieces(&self) -> impl Iterator<Item = &TenantPiece> {
        self.parts.iter().filter_map(|part| match part {
            Part::Disk(piece) => Some(piece),
            Part::Memory(_) => None,
        })
    }

    /// Puts the pieces of an index file merged from the files of `segments` in place of theirs: they must
    /// hold the same ordinals as the pieces they replace.
    pub(crate) fn replace(
        &mut self,
        segments: (u32, u32),
        pieces: Vec<TenantPiece>,
    ) -> std::result::Result<(), String> {
        let within = |part: &Part| matches!(part, Part::Disk(piece) if piece.within(segments));
        let Some(start) = self.parts.iter().position(within) else {
            return Err(format!(
                "no pieces of segments {}..={} to replace",
                segments.0, segments.1
            ));
        };
        let count = self.parts[start..]
            .iter()
            .take_while(|part| within(part))
            .count();
        let old = &self.parts[start..start + count];
        let before = (old[0].first(), old[count - 1].end());
        let after = pieces
            .first()
            .map(|p| p.first)
            .zip(pieces.last().map(|p| p.end));
        let consecutive = pieces.windows(2).all(|pair| pair[0].end == pair[1].first);
        if after != Some(before) || !consecutive {
            return Err(format!(
                "the index file of segments {}..={} holds ordinals {after:?}, its files {before:?}",
                segments.0, segments.1
            ));
        }
        self.parts
            .splice(start..start + count, pieces.into_iter().map(Part::Disk));
        Ok(())
    }

    /// After the log is replayed at open: whether every attached piece covers events that the log has in its
    /// segment, the parts cover every event, and no segment of `with_pieces` (whose events were read without
    /// their fields) has a part in memory.
    pub(crate) fn check_parts(
        &self,
        with_pieces: &HashSet<u32>,
    ) -> std::result::Result<(), String> {
        let mut next = 0;
        for part in &self.parts {
            if matches!(part, Part::Memory(_)) && with_pieces.contains(&part.segments().0) {
                return Err(format!(
                    "the index file of {} does not hold ordinals {}..{}",
                    part.segment_names(),
                    part.first(),
                    part.end()
                ));
            }
            let (first, end) = (part.first(), part.end());
            let (low, high) = part.segments();
            let in_segment = |ordinal: u32| {
                self.entries
                    .get(ordinal as usize)
                    .is_some_and(|entry| (low..=high).contains(&entry.segment))
            };
            if first != next || !in_segment(first) || !in_segment(end - 1) {
                return Err(format!(
                    "the index of {} covers ordinals {first}..{end}, which the log does not have there",
                    part.segment_names()
                ));
            }
            next = end;
        }
        if next as usize != self.entries.len() {
            return Err(format!(
                "the index covers {next} events of {}",
                self.entries.len()
            ));
        }
        Ok(())
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

    /// Plans `filter` into candidates.
    pub fn plan(&self, filter: &Filter) -> Candidates {
        self.plan_between(filter, i64::MIN, i64::MAX)
    }

    /// For a listing of the events created in `[low, high]` in `order` that plans the parts nearest its start
    /// first: where a window from that start holding the `count` nearest parts (of those with events in
    /// `[low, high]`) ends, or `None` when the window would be all of `[low, high]` or reach into all the
    /// parts.
    /// A log written in time order has parts of disjoint times, so the newest page of a filter is found in
    /// the newest parts without decoding the filter's postings in every other.
    pub fn nearest_parts_bound(
        &self,
        low: i64,
        high: i64,
        order: Order,
        count: usize,
    ) -> Option<i64> {
        let mut times: Vec<(i64, i64)> = self
            .parts
            .iter()
            .map(Part::times)
            .filter(|&(oldest, newest)| newest >= low && oldest <= high)
            .collect();
        if times.len() <= count {
            return None;
        }
        // A window that reaches into every part (parts of overlapping times, a log written out of order)
        // would plan them all, and again at each widening: the whole range at once instead.
        match order {
            Order::Desc => {
                times.sort_unstable_by_key(|&(_, newest)| std::cmp::Reverse(newest));
                let bound = times[..count].iter().map(|&(oldest, _)| oldest).min()?;
                let outside = times.iter().any(|&(_, newest)| newest < bound);
                (bound > low && outside).then_some(bound)
            }
            Order::Asc => {
                times.sort_unstable_by_key(|&(oldest, _)| oldest);
                let bound = times[..count].iter().map(|&(_, newest)| newest).max()?;
                let outside = times.iter().any(|&(oldest, _)| oldest > bound);
                (bound < high && outside).then_some(bound)
            }
        }
    }

    /// Plans `filter` for the events created in `[low, high]`. Each part of the index is planned on its own
    /// (a filter is a property of each event, and parts hold disjoint events); a part with no event in the
    /// window is not asked, and its ordinals are left out: a scan of the window never reaches them.
    pub fn plan_between(&self, filter: &Filter, low: i64, high: i64) -> Candidates {
        if matches!(filter, Filter::All) {
            return Candidates {
                bitmap: None,
                exact: true,
            };
        }
        let mut union = RoaringBitmap::new();
        let mut exact = true;
        let mut everything = true;
        for part in &self.parts {
            let (oldest, newest) = part.times();
            if newest < low || oldest > high {
                continue;
            }
            let (first, end) = (part.first(), part.end());
            let planned = part.with_terms(|terms| self.plan_part(terms, first, end, filter));
            let planned = planned.unwrap_or_else(|error| {
                tracing::warn!(%error, segments = part.segment_names(), "an index file could not be read; its events are checked one by one");
                Candidates::unknown()
            });
            exact &= planned.exact;
            match planned.bitmap {
                Some(bitmap) => {
                    everything = false;
                    union |= bitmap;
                }
                None => {
                    union.insert_range(first..end);
                }
            }
        }
        Candidates {
            bitmap: (!everything).then_some(union),
            exact,
        }
    }

    /// Plans `filter` in one part, over ordinals `first..end` (a `None` bitmap is all of them).
    fn plan_part(
        &self,
        part: &dyn Terms,
        first: u32,
        end: u32,
        filter: &Filter,
    ) -> io::Result<Candidates> {
        Ok(match filter {
            Filter::All => Candidates {
                bitmap: None,
                exact: true,
            },
            Filter::And(parts) => {
                let mut bitmap: Option<RoaringBitmap> = None;
                let mut exact = true;
                for inner in parts {
                    let planned = self.plan_part(part, first, end, inner)?;
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
                for inner in parts {
                    let planned = self.plan_part(part, first, end, inner)?;
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
                let planned = self.plan_part(part, first, end, inner)?;
                if !planned.exact {
                    return Ok(Candidates::unknown());
                }
                match planned.bitmap {
                    None => Candidates::exact(RoaringBitmap::new()),
                    Some(bitmap) => {
                        let mut all = RoaringBitmap::new();
                        all.insert_range(first..end);
                        Candidates::exact(all - bitmap)
                    }
                }
            }
            Filter::Text(phrase) => plan_words(part, phrase)?,
            Filter::Condition(condition) => {
                self.plan_condition(part, first, end, &condition.field, &condition.predicate)?
            }
        })
    }

    fn plan_condition(
        &self,
        part: &dyn Terms,
        first: u32,
        end: u32,
        field: &Field,
        predicate: &Predicate,
    ) -> io::Result<Candidates> {
        let clip = |mut bitmap: RoaringBitmap| {
            bitmap.remove_range(..first);
            bitmap.remove_range(end..);
            Candidates::exact(bitmap)
        };
        match field {
            Field::CreatedAt | Field::ReceivedAt => return Ok(Candidates::unknown()),
            Field::Seq => return Ok(clip(self.plan_seq(predicate))),
            Field::Id => {
                let lookup = |operand: &Operand| match operand {
                    Operand::Text(text) => self.ordinal_of_id(text),
                    Operand::Number(_) => None,
                };
                return Ok(match predicate {
                    Predicate::Eq(operand) => clip(lookup(operand).into_iter().collect()),
                    Predicate::In(operands) => clip(operands.iter().filter_map(lookup).collect()),
                    Predicate::Exists => Candidates {
                        bitmap: None,
                        exact: true,
                    },
                    _ => Candidates::unknown(),
                });
            }
            Field::Description => {
                return Ok(match predicate {
                    Predicate::Exists => {
                        let mut present = RoaringBitmap::new();
                        part.present(field, &mut present)?;
                        Candidates::exact(present)
                    }
                    Predicate::Contains(needle) => plan_words(part, needle)?,
                    _ => Candidates::unknown(),
                });
            }
            _ => {}
        }
        if part.not_indexed(field) {
            return Ok(Candidates::unknown());
        }
        let hashed = part.hashed(field);
        if hashed
            && !matches!(
                predicate,
                Predicate::Exists | Predicate::Eq(_) | Predicate::In(_)
            )
        {
            return Ok(Candidates::unknown());
        }
        let json = field.kind() == FieldKind::Json;
        let mut result = RoaringBitmap::new();
        let text_of = |operand: &Operand| match operand {
            Operand::Text(text) => Some(text.clone()),
            Operand::Number(_) => None,
        };
        match predicate {
            Predicate::Exists => part.present(field, &mut result)?,
            Predicate::Eq(operand) => {
                if let Some(text) = text_of(operand) {
                    part.equal(field, &text, json, &mut result)?;
                }
            }
            Predicate::In(operands) => {
                for text in operands.iter().filter_map(text_of) {
                    part.equal(field, &text, json, &mut result)?;
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
                    // Text lexicographically; numbers numerically when the operand is a number.
                    let wanted = finite_number(&text).filter(|_| json);
                    part.select(
                        field,
                        &mut |term| match term {
                            TermKey::Text(value) => accept(value.cmp(text.as_str())),
                            TermKey::Number(number) => wanted.is_some_and(|wanted| {
                                number.partial_cmp(&wanted).is_some_and(accept)
                            }),
                            _ => false,
                        },
                        &mut result,
                    )?;
                }
            }
            Predicate::Contains(needle) => part.select(
                field,
                &mut |term| matches!(term, TermKey::Text(text) if contains_folded(text, needle)),
                &mut result,
            )?,
            Predicate::Prefix(prefix) => part.select(
                field,
                &mut |term| matches!(term, TermKey::Text(text) if text.starts_with(prefix.as_str())),
                &mut result,
            )?,
        }
        Ok(Candidates {
            bitmap: Some(result),
            // Equal hashes are not equal values: the events are checked.
            exact: !hashed || matches!(predicate, Predicate::Exists),
        })
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
            Predicate::Exists => range(1, i64::MAX),
            Predicate::Contains(_) | Predicate::Prefix(_) => RoaringBitmap::new(),
        }
    }

    /// Whether some events of the tenant may have `field` without the index knowing.
    fn not_indexed(&self, field: &Field) -> bool {
        self.parts.iter().any(|part| match part {
            Part::Memory(memory) => memory.fields.not_indexed(field),
            Part::Disk(piece) => piece.may_leave_out(field),
        })
    }

    /// Whether some part knows `field`'s values only by their hash (see [`Terms::hashed`]).
    fn hashed(&self, field: &Field) -> bool {
        self.parts.iter().any(|part| match part {
            Part::Memory(_) => false,
            Part::Disk(piece) => piece.may_hash(field),
        })
    }

    /// The ordinals of each value of `field`, named as the API prints values (numbers and booleans as JSON),
    /// or `None` when the field could not be fully indexed for this tenant.
    pub fn value_postings(&self, field: &Field) -> Option<Vec<(String, RoaringBitmap)>> {
        if matches!(field.kind(), FieldKind::Time | FieldKind::Seq)
            || *field == Field::Id
            || *field == Field::Description
            || self.not_indexed(field)
            || self.hashed(field)
        {
            return None;
        }
        // Keyed by kind (text, number, the rest) and name, as the parts' dictionaries keep them apart.
        let mut merged: BTreeMap<(u8, String), RoaringBitmap> = BTreeMap::new();
        let mut visit = |term: TermKey<'_>, posting: RoaringBitmap| {
            let key = match term {
                TermKey::Text(text) => (0, text.to_string()),
                TermKey::Number(number) => (
                    1,
                    serde_json::Number::from_f64(number)
                        .map(|n| n.to_string())
                        .unwrap_or_default(),
                ),
                TermKey::True => (2, "true".to_string()),
                TermKey::False => (2, "false".to_string()),
                TermKey::Null => (2, "null".to_string()),
            };
            *merged.entry(key).or_default() |= posting;
        };
        for part in &self.parts {
            let read = part.with_terms(|terms| terms.postings(field, &mut visit));
            if let Err(error) = read {
                tracing::warn!(%error, segments = part.segment_names(), "an index file could not be read; values are counted event by event");
                return None;
            }
        }
        Some(
            merged
                .into_iter()
                .map(|((_, name), posting)| (name, posting))
                .collect(),
        )
    }

    /// The events of ordinals `low..=high` whose `field` is the text `value`, from every part over them;
    /// `None` when an index file could not be read.
    fn text_posting(
        &self,
        field: &Field,
        value: &str,
        low: u32,
        high: u32,
    ) -> Option<RoaringBitmap> {
        let mut out = RoaringBitmap::new();
        for part in &self.parts {
            if part.end() <= low || part.first() > high {
                continue;
            }
            let read = part.with_terms(|terms| terms.equal(field, value, false, &mut out));
            if let Err(error) = read {
                tracing::warn!(%error, segments = part.segment_names(), "an index file could not be read; values are counted event by event");
                return None;
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
                    let (Some(low), Some(high)) = (part.min(), part.max()) else {
                        continue;
                    };
                    for (number, name) in values.names.iter().enumerate() {
                        let posting = self.text_posting(field, name, low, high)?;
                        counts[row + number] += posting.intersection_len(&part);
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

impl FieldsPart {
    fn field(&self, field: &Field) -> Option<&FieldIndex> {
        self.numbers
            .get(field)
            .map(|&number| &self.fields[number as usize])
    }

    /// Indexes the fields of an event (its [`FIXED`] text fields given).
    fn insert(&mut self, event: &Event, text_fields: [Option<&str>; DESCRIPTION], ordinal: u32) {
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
    pub(crate) fn not_indexed(&self, field: &Field) -> bool {
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
}

/// A value of a field's dictionary, as [`Terms`] visits them.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TermKey<'a> {
    Text(&'a str),
    Number(f64),
    True,
    False,
    Null,
}

/// The visitor of [`Terms::each_term`]: a value, and what adds its posting to a bitmap.
pub(crate) type TermVisitor<'a> = dyn FnMut(TermKey<'_>, &mut dyn FnMut(&mut RoaringBitmap) -> io::Result<()>) -> io::Result<()>
    + 'a;

/// What the planner asks of one part of a tenant's field index, in memory or in an index file. Postings are
/// added to `out` as ordinals of the tenant.
pub(crate) trait Terms {
    /// Whether some events of the part may have `field` without the part knowing.
    fn not_indexed(&self, field: &Field) -> bool;
    /// Whether the part knows `field`'s text values only by their hash (an index file does, for a field
    /// whose values are nearly all unique): equality then finds a superset of the matches, and the values
    /// cannot be listed (ranges, prefixes, value counts).
    fn hashed(&self, _field: &Field) -> bool {
        false
    }
    /// The events where `field` is present.
    fn present(&self, field: &Field, out: &mut RoaringBitmap) -> io::Result<()>;
    /// Events with a value equal to the operand; for JSON fields also the number, boolean or null it spells
    /// (the evaluator's `json_compare`).
    fn equal(
        &self,
        field: &Field,
        operand: &str,
        json: bool,
        out: &mut RoaringBitmap,
    ) -> io::Result<()>;
    /// Calls `visit` with every value of `field` that has events, and a way to add its posting to a bitmap
    /// (so that postings are read only for the values kept).
    fn each_term(&self, field: &Field, visit: &mut TermVisitor<'_>) -> io::Result<()>;

    /// The events of every value `keep` accepts.
    fn select(
        &self,
        field: &Field,
        keep: &mut dyn FnMut(TermKey<'_>) -> bool,
        out: &mut RoaringBitmap,
    ) -> io::Result<()> {
        self.each_term(field, &mut |term, read| {
            if keep(term) {
                read(out)?;
            }
            Ok(())
        })
    }

    /// Every value of `field` with its (non-empty) posting.
    fn postings(
        &self,
        field: &Field,
        visit: &mut dyn FnMut(TermKey<'_>, RoaringBitmap),
    ) -> io::Result<()> {
        self.each_term(field, &mut |term, read| {
            let mut posting = RoaringBitmap::new();
            read(&mut posting)?;
            visit(term, posting);
            Ok(())
        })
    }

    /// The events whose description has a word `keep` accepts.
    fn words_matching(
        &self,
        keep: &dyn Fn(&str) -> bool,
        out: &mut RoaringBitmap,
    ) -> io::Result<()>;
}

impl Terms for FieldsPart {
    fn not_indexed(&self, field: &Field) -> bool {
        FieldsPart::not_indexed(self, field)
    }

    fn present(&self, field: &Field, out: &mut RoaringBitmap) -> io::Result<()> {
        if let Some(index) = self.field(field) {
            index.present.add_to(out);
        }
        Ok(())
    }

    fn equal(
        &self,
        field: &Field,
        operand: &str,
        json: bool,
        out: &mut RoaringBitmap,
    ) -> io::Result<()> {
        if let Some(index) = self.field(field) {
            index.terms.equal(operand, json, out);
        }
        Ok(())
    }

    fn each_term(&self, field: &Field, visit: &mut TermVisitor<'_>) -> io::Result<()> {
        let Some(index) = self.field(field) else {
            return Ok(());
        };
        let terms = &index.terms;
        for (text, posting) in &terms.text {
            visit(TermKey::Text(text), &mut |out| {
                posting.add_to(out);
                Ok(())
            })?;
        }
        for (number, posting) in &terms.numbers {
            visit(TermKey::Number(number.0), &mut |out| {
                posting.add_to(out);
                Ok(())
            })?;
        }
        for (term, posting) in [
            (TermKey::True, &terms.trues),
            (TermKey::False, &terms.falses),
            (TermKey::Null, &terms.nulls),
        ] {
            if !posting.is_empty() {
                visit(term, &mut |out| {
                    posting.add_to(out);
                    Ok(())
                })?;
            }
        }
        Ok(())
    }

    fn words_matching(
        &self,
        keep: &dyn Fn(&str) -> bool,
        out: &mut RoaringBitmap,
    ) -> io::Result<()> {
        for (word, posting) in &self.words {
            if keep(word) {
                posting.add_to(out);
            }
        }
        Ok(())
    }
}

/// Ordinals of a part whose description has, for every word of `phrase`, a word containing it: a superset of
/// the descriptions containing the phrase.
fn plan_words(part: &dyn Terms, phrase: &str) -> io::Result<Candidates> {
    let mut result: Option<RoaringBitmap> = None;
    for token in words_of(phrase) {
        let mut union = RoaringBitmap::new();
        part.words_matching(&|word| word.contains(token.as_ref()), &mut union)?;
        result = Some(match result {
            Some(current) => current & union,
            None => union,
        });
    }
    Ok(Candidates {
        bitmap: result,
        exact: false,
    })
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
    fn an_entry_is_thirty_two_bytes_and_keeps_its_id_and_location() {
        assert_eq!(std::mem::size_of::<Entry>(), 32);
        let time = 0x0192_3456_789a_u128;
        let random = 0xfedc_ba98_7654_3210_0123_u128;
        let id = (time << 80) | random;
        for (segment, offset, compacted, line) in [
            (0, 0, false, 0),
            (7, 123_456, true, 9),
            (9, (1 << 32) + 5, false, 3),
            (u32::MAX, OFFSET_LIMIT - 1, true, u32::MAX),
        ] {
            let location = Location {
                record: RecordPosition {
                    segment,
                    offset,
                    compacted,
                },
                line,
            };
            let mut entry = Entry::new(time as i64, id, location);
            assert_eq!(
                (entry.created_at, entry.location()),
                (time as i64, location)
            );
            assert!(entry.has_id(id));
            // Another random part is another event; the time part is the millisecond searched.
            assert!(!entry.has_id(id ^ 1));
            assert!(!entry.has_id(id ^ (1 << 79)));
            let moved = Location {
                record: RecordPosition {
                    compacted: !compacted,
                    ..location.record
                },
                line: 1,
            };
            entry.set_location(moved);
            assert_eq!(entry.location(), moved);
            assert!(entry.has_id(id));
        }
    }
}
