//! The field index of a compacted segment, on disk: `blocks/N.idx`, beside the block file `blocks/N.blk`.
//!
//! While a WAL segment is written, each tenant's events in it are indexed in memory (an in-memory part of
//! the tenant's index, [`crate::index::MemoryPart`]). When the compactor rewrites the segment as a block
//! file it also writes these parts here, one *piece* per tenant, and the in-memory parts are dropped: only
//! the segments not compacted yet keep their field index in memory. Queries read the pieces through the page
//! cache with positioned reads (not memory-mapped, so they are not the process's memory), and at open the
//! log's compacted segments are replayed without indexing their fields again.
//!
//! Index files are then merged, eight at a time, as size-tiered LSM stores merge their runs: eight files of
//! one segment each into one of segments `F..=L` (`FFFFFFFF-LLLLLLLL.idx`), eight of those into one of 64
//! segments, and so on. In a merge, a tenant's small pieces (under `StoreOptions::merge_events`, 4,096 events) are
//! merged into one, and larger ones are copied byte for byte: a piece's offsets are relative to where it
//! was written, and its directory entry says by how much to shift them (`base`). Small pieces cost most per
//! event (at 1M demo events, ~145 bytes per event for pieces of under 64 events against ~50 for pieces of
//! over 4,096) and each is one more lookup for a query.
//!
//! ```text
//! file:      "LOGBOOKI" (8) | format version u32 LE (=6; 4 and 5 are read too) | first segment u32 LE | last segment u32 LE
//!            data: per piece, its postings, term chunks and records, then its section; spans inside a
//!                  piece are (offset, length), the offset shifted by the piece's base
//!            directory: varint pieces, then per piece: tenant name, first and end ordinal, oldest and
//!                       newest created_at (i64 LE), section span and length decompressed (a section is
//!                       stored as zstd, or raw when that is not shorter), flags (u8: 1, some fields
//!                       may be unindexed; 2, some are hashed), where the piece's bytes begin in the
//!                       file (varint), its base
//!                       (zigzag varint: what to add to the offsets inside it). A tenant has at most one
//!                       piece per file when it was written from memory, and may have several in a merged
//!                       file (its large pieces are copied, not merged)
//!            trailer: directory offset u64 LE | directory length u64 LE | CRC32C of every byte before it
//!                     (u32 LE) | "LOGBOOKI"
//! section:   json fields full (u8) | varint count, unindexed fields | words table | varint count, then per
//!            field: the field | varint length, record: present posting span, text kind (u8: 0 a table, 2
//!            a hashed table; 1 a hashed table of varint chunks, before version 6), text table, number table, true, false and null posting spans; the length is
//!            varint (length << 1 | apart): a record apart
//!            (over 96 bytes) is zstd (or raw, when not shorter) elsewhere, and the length is followed by its
//!            varint offset and length decompressed
//! table:     varint terms | postings span | chunks span | varint chunks, then per chunk its first key, its
//!            offset and length in the chunks span, and its length decompressed. Terms are sorted by key (text
//!            as UTF-8; a number as 8 big-endian bytes that sort as `f64::total_cmp` does). A chunk is zstd of
//!            (or the raw bytes, when not shorter) of up to 128 terms, each: varint bytes shared with the key before, the rest of the key, varint
//!            (posting length << 1 | apart), then the posting itself or, when apart (over 48 bytes), its
//!            varint offset in the postings span
//! hashed:    varint entries | chunks span | varint chunks, then per chunk its first hash, its offset and
//!            length in the chunks span. Entries are (CRC32C of the value's UTF-8, ordinal), sorted, each
//!            as its hash's delta (from the one before in the chunk, the first from the chunk's first hash)
//!            and its ordinal from the piece's first. A chunk is raw, of 256 entries or more (a hash's
//!            entries are never split): varint entries, hash delta bits (u8), ordinal bits (u8), then each
//!            entry's delta and ordinal in those many bits, least significant bit first, the last byte
//!            padded with zeros (text kind 2; before version 6, kind 1: each entry two varints, ~1.2 bytes
//!            more per entry). A field's text values are hashed when it has at least 64, for at
//!            least 9/10 of its events, of 12 bytes or more on average (unique values such as request ids:
//!            their keys were most of the table), or when a piece merged had them hashed. Equality then finds a superset that the
//!            listing checks; the values cannot be listed (ranges, prefixes, value counts check events)
//! posting:   0, varint count, ordinals as varint deltas (the first from the piece's first ordinal); or
//!            1, a roaring bitmap in its portable serialization, whichever is smaller; or 2 alone: every
//!            event of the piece; or 3, varint length, then a zstd frame of a posting of kind 0 or 1 of that
//!            length (written for postings over 48 bytes when shorter: those are apart, outside the
//!            compressed chunks; version 5)
//! field:     a tag (u8); resources, context keys and metadata paths then their key as bytes
//! ```
//!
//! Integers are LEB128 varints unless said otherwise; a byte string is a varint length and the bytes. The
//! file is written and synced before the index uses it and before the WAL segment is removed (or, for a
//! merged file, before the files it merged are removed); a file that is missing, torn, damaged or of an
//! older format is removed at open and its segments' index written again from the block files' events. A
//! merged file left beside the files it merged (a crash before they were removed) is kept, and they are
//! removed.

use crate::error::{Result, StoreError};
use crate::index::{
    finite_number, MemoryPart, OrderedNumber, TermKey, TermVisitor, Terms, MAX_JSON_FIELDS,
};
use crate::io::{FileSystem, StorageFile};
use crate::ordinals::Ordinals;
use crate::wal;
use logbook_core::filter::Field;
use lru::LruCache;
use parking_lot::Mutex;
use roaring::RoaringBitmap;
use rustc_hash::FxHashMap;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;
use zstd::bulk::Compressor;

pub const PIECE_MAGIC: &[u8; 8] = b"LOGBOOKI";
const FORMAT_VERSION: u32 = 6;
/// Versions read: version 5 added compressed postings (kind 3), version 6 packed hashed tables (text kind 2),
/// and neither changed anything else, so files of versions 4 and 5 are read as they are (and their pieces
/// copied into merged files of version 6).
const OLDEST_READ_VERSION: u32 = 4;
const HEADER_BYTES: usize = 20;
const TRAILER_BYTES: usize = 8 + 8 + 4 + 8;
/// Terms per chunk: a lookup reads and decompresses one chunk, found from the first keys kept in the section.
const CHUNK_TERMS: usize = 128;
/// zstd level of the chunks.
const CHUNK_LEVEL: i32 = 3;
/// Postings up to this size are kept in their term's chunk; larger ones (bitmaps of frequent terms) apart.
const INLINE_POSTING_BYTES: usize = 48;
/// No section, record or chunk is larger than this decompressed (a larger length is damage).
const MAX_BLOCK_BYTES: u64 = 256 << 20;
/// Field records up to this size are kept in the section; larger ones apart, read when their field is.
const INLINE_RECORD_BYTES: usize = 96;
/// Chunks, records and sections shorter than this are stored raw: zstd saves little on them, and each
/// compression and decompression has a fixed cost (building its tables) that dominates for tiny inputs, as
/// a small tenant's piece has many (a table per field).
const RAW_BLOCK_BYTES: usize = 64;
/// Postings of more ordinals than this are written as a bitmap when that is smaller.
const LIST_LIMIT: u64 = 32;

/// The segments an index file covers, first and last: `NNNNNNNN.idx` for one, `FFFFFFFF-LLLLLLLL.idx` for
/// the files merged from several.
pub type Segments = (u32, u32);

pub fn piece_path(directory: &Path, (first, last): Segments) -> PathBuf {
    if first == last {
        directory.join(format!("{first:08}.idx"))
    } else {
        directory.join(format!("{first:08}-{last:08}.idx"))
    }
}

/// The index files in `directory`, by the segments they cover, in order.
pub fn list(fs: &dyn FileSystem, directory: &Path) -> Result<Vec<Segments>> {
    let names = fs
        .list(directory)
        .map_err(|e| StoreError::io(format!("failed to read {}", directory.display()), e))?;
    let mut files: Vec<Segments> = names
        .iter()
        .filter_map(|name| {
            let stem = name.strip_suffix(".idx")?;
            match stem.split_once('-') {
                None => stem.parse().ok().map(|number| (number, number)),
                Some((first, last)) => Some((first.parse().ok()?, last.parse().ok()?))
                    .filter(|(first, last)| first < last),
            }
        })
        .collect();
    files.sort_unstable();
    Ok(files)
}

fn invalid(reason: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason.into())
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A range of the file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Span {
    offset: u64,
    len: u64,
}

impl Span {
    fn put(self, out: &mut Vec<u8>) {
        put_varint(out, self.offset);
        put_varint(out, self.len);
    }
}

/// Reads the encodings above (and those of block columns, [`crate::columns`]) from a byte slice; running out
/// is an error.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, at: 0 }
    }

    /// What is left to read.
    pub(crate) fn rest(&self) -> &'a [u8] {
        &self.bytes[self.at.min(self.bytes.len())..]
    }

    fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }

    pub(crate) fn take(&mut self, count: usize) -> io::Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(count)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| invalid("truncated data"))?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn u8(&mut self) -> io::Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn varint(&mut self) -> io::Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(invalid("a varint longer than 64 bits"))
    }

    fn u32(&mut self) -> io::Result<u32> {
        u32::try_from(self.varint()?).map_err(|_| invalid("an ordinal beyond u32"))
    }

    fn i64(&mut self) -> io::Result<i64> {
        Ok(i64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn bytes(&mut self) -> io::Result<&'a [u8]> {
        let len = usize::try_from(self.varint()?).map_err(|_| invalid("a length beyond usize"))?;
        self.take(len)
    }

    fn text(&mut self) -> io::Result<&'a str> {
        std::str::from_utf8(self.bytes()?).map_err(|_| invalid("a key that is not UTF-8"))
    }

    fn span(&mut self) -> io::Result<Span> {
        Ok(Span {
            offset: self.varint()?,
            len: self.varint()?,
        })
    }
}

/// The fields without a key, by tag. The order is part of the file format: a new keyless field moves the keyed
/// tags after it, so it needs a new format version.
const PLAIN_FIELDS: [Field; 14] = [
    Field::Id,
    Field::Seq,
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
    Field::CreatedAt,
    Field::ReceivedAt,
];
const TAG_RESOURCE: u8 = 14;
const TAG_CONTEXT: u8 = 15;
const TAG_METADATA: u8 = 16;

fn put_field(out: &mut Vec<u8>, field: &Field) {
    let (tag, key) = match field {
        Field::Resource(key) => (TAG_RESOURCE, Some(key)),
        Field::Context(key) => (TAG_CONTEXT, Some(key)),
        Field::Metadata(path) => (TAG_METADATA, Some(path)),
        plain => (
            PLAIN_FIELDS
                .iter()
                .position(|known| known == plain)
                .expect("every keyless field is listed") as u8,
            None,
        ),
    };
    out.push(tag);
    if let Some(key) = key {
        put_bytes(out, key.as_bytes());
    }
}

fn read_field(reader: &mut Reader<'_>) -> io::Result<Field> {
    let tag = reader.u8()?;
    Ok(match tag {
        TAG_RESOURCE => Field::Resource(reader.text()?.to_string()),
        TAG_CONTEXT => Field::Context(reader.text()?.to_string()),
        TAG_METADATA => Field::Metadata(reader.text()?.to_string()),
        plain => PLAIN_FIELDS
            .get(plain as usize)
            .cloned()
            .ok_or_else(|| invalid(format!("unknown field tag {plain}")))?,
    })
}

/// Writes a posting to `data`: a list of deltas, or a bitmap when it has many ordinals and is smaller.
fn put_posting(
    compressor: &mut Compressor<'static>,
    data: &mut Vec<u8>,
    ordinals: &Ordinals,
    (first, end): (u32, u32),
) -> Span {
    let offset = data.len() as u64;
    if ordinals.is_empty() {
        return Span { offset, len: 0 };
    }
    if ordinals.len() == u64::from(end - first) {
        // Every event of the piece (a field most events have, as `type`).
        data.push(2);
        return Span { offset, len: 1 };
    }
    let mut posting = vec![0u8];
    put_varint(&mut posting, ordinals.len());
    let mut previous = first;
    for ordinal in ordinals.iter() {
        put_varint(&mut posting, u64::from(ordinal - previous));
        previous = ordinal;
    }
    if ordinals.len() > LIST_LIMIT {
        let mut bitmap = ordinals.to_bitmap();
        bitmap.optimize();
        if bitmap.serialized_size() + 1 < posting.len() {
            posting.clear();
            posting.push(1);
            bitmap
                .serialize_into(&mut posting)
                .expect("writing to a vector does not fail");
        }
    }
    if posting.len() > INLINE_POSTING_BYTES {
        // A long posting apart is not in a compressed chunk: compressed on its own when that is shorter
        // (the deltas of a term on a fifth of the events take a byte each as varints, ~3 bits as zstd's
        // entropy coding has them).
        let compressed = compressor
            .compress(&posting)
            .expect("zstd compresses in memory");
        let mut length = Vec::new();
        put_varint(&mut length, posting.len() as u64);
        if 1 + length.len() + compressed.len() < posting.len() {
            data.push(3);
            data.extend_from_slice(&length);
            data.extend_from_slice(&compressed);
            return Span {
                offset,
                len: data.len() as u64 - offset,
            };
        }
    }
    data.extend_from_slice(&posting);
    Span {
        offset,
        len: posting.len() as u64,
    }
}

fn read_posting(bytes: &[u8], (first, end): (u32, u32), out: &mut RoaringBitmap) -> io::Result<()> {
    match bytes.split_first() {
        None => Ok(()),
        Some((0, rest)) => {
            let mut reader = Reader::new(rest);
            let count = reader.varint()?;
            let mut value = u64::from(first);
            let mut ordinals = Vec::with_capacity(count.min(1 << 20) as usize);
            for number in 0..count {
                let delta = reader.varint()?;
                if number > 0 && delta == 0 {
                    return Err(invalid("a posting list that does not ascend"));
                }
                value += delta;
                ordinals.push(u32::try_from(value).map_err(|_| invalid("an ordinal beyond u32"))?);
            }
            if out.is_empty() {
                out.append(ordinals)
                    .map_err(|_| invalid("a posting list that does not ascend"))?;
            } else {
                *out |= RoaringBitmap::from_sorted_iter(ordinals)
                    .map_err(|_| invalid("a posting list that does not ascend"))?;
            }
            Ok(())
        }
        Some((1, rest)) => {
            *out |= RoaringBitmap::deserialize_from(rest)?;
            Ok(())
        }
        Some((2, [])) => {
            out.insert_range(first..end);
            Ok(())
        }
        Some((3, rest)) => {
            let mut reader = Reader::new(rest);
            let length = reader.varint()?;
            let posting = decompress(reader.rest(), length)?;
            if !matches!(posting.first(), Some(0 | 1)) {
                return Err(invalid(
                    "a compressed posting of another kind than a list or a bitmap",
                ));
            }
            read_posting(&posting, (first, end), out)
        }
        Some((kind, _)) => Err(invalid(format!("unknown posting kind {kind}"))),
    }
}

/// Writes a table of terms sorted by their key bytes: out-of-line postings to `data`, then the chunks (each
/// zstd-compressed), and the table's description to `out`.
fn put_table(
    compressor: &mut Compressor<'static>,
    data: &mut Vec<u8>,
    out: &mut Vec<u8>,
    terms: &[(&[u8], &Ordinals)],
    range: (u32, u32),
) {
    let mut posting = Vec::new();
    let mut chunks = Vec::with_capacity(terms.len().div_ceil(CHUNK_TERMS));
    let postings_start = data.len() as u64;
    for chunk in terms.chunks(CHUNK_TERMS) {
        let mut raw = Vec::new();
        let mut previous: &[u8] = &[];
        for &(key, ordinals) in chunk {
            let shared = key.iter().zip(previous).take_while(|(a, b)| a == b).count();
            put_varint(&mut raw, shared as u64);
            put_bytes(&mut raw, &key[shared..]);
            previous = key;
            posting.clear();
            put_posting(compressor, &mut posting, ordinals, range);
            if posting.len() <= INLINE_POSTING_BYTES {
                put_varint(&mut raw, (posting.len() as u64) << 1);
                raw.extend_from_slice(&posting);
            } else {
                put_varint(&mut raw, ((posting.len() as u64) << 1) | 1);
                put_varint(&mut raw, data.len() as u64 - postings_start);
                data.extend_from_slice(&posting);
            }
        }
        chunks.push((chunk[0].0, raw));
    }
    let postings = Span {
        offset: postings_start,
        len: data.len() as u64 - postings_start,
    };
    let chunks_start = data.len() as u64;
    let mut directory = Vec::new();
    for (first_key, raw) in &chunks {
        let chunk_offset = data.len() as u64 - chunks_start;
        let compressed = compress(compressor, raw);
        data.extend_from_slice(&compressed);
        put_bytes(&mut directory, first_key);
        put_varint(&mut directory, chunk_offset);
        put_varint(&mut directory, compressed.len() as u64);
        put_varint(&mut directory, raw.len() as u64);
    }
    put_varint(out, terms.len() as u64);
    postings.put(out);
    Span {
        offset: chunks_start,
        len: data.len() as u64 - chunks_start,
    }
    .put(out);
    put_varint(out, chunks.len() as u64);
    out.extend_from_slice(&directory);
}

/// zstd of `raw`, or `raw` itself when that is not longer (the reader tells them apart by the length: a stored
/// chunk or section as long as its raw form is raw).
fn compress(compressor: &mut Compressor<'static>, raw: &[u8]) -> Vec<u8> {
    if raw.len() < RAW_BLOCK_BYTES {
        return raw.to_vec();
    }
    let compressed = compressor.compress(raw).expect("zstd compresses in memory");
    if compressed.len() < raw.len() {
        compressed
    } else {
        raw.to_vec()
    }
}

/// A number's key: big-endian bytes that sort as the numbers do (`f64::total_cmp`).
fn number_key(number: f64) -> [u8; 8] {
    let bits = number.to_bits();
    let ordered = if bits >> 63 == 1 {
        !bits
    } else {
        bits | 1 << 63
    };
    ordered.to_be_bytes()
}

fn number_of(key: &[u8]) -> io::Result<f64> {
    let ordered = u64::from_be_bytes(
        key.try_into()
            .map_err(|_| invalid("a number key that is not 8 bytes"))?,
    );
    let bits = if ordered >> 63 == 1 {
        ordered & !(1 << 63)
    } else {
        !ordered
    };
    Ok(f64::from_bits(bits))
}

/// One field's postings as the writer takes them, terms sorted by key.
struct FieldInput<'a> {
    field: &'a Field,
    present: &'a Ordinals,
    text: Vec<(&'a [u8], &'a Ordinals)>,
    /// (hash, ordinal) of text values known only by their hash (from hashed tables merged): the field's
    /// table is then hashed too.
    hashed: &'a [(u32, u32)],
    numbers: Vec<([u8; 8], &'a Ordinals)>,
    specials: [&'a Ordinals; 3],
}

impl FieldInput<'_> {
    /// Whether the field's text values are written as a hashed table: when some are only known by their
    /// hash, or when nearly every event has its own value and the values are long (request ids): the keys
    /// would be most of the table (13 of the 49 bytes per event of the 1M benchmark's large pieces were
    /// request ids) and only equality is asked of such values. Short ids (`c_3508`) cost about as much
    /// either way (a hash and an ordinal are ~5 bytes), so they keep their table and their ranges.
    fn hashed(&self) -> bool {
        !self.hashed.is_empty()
            || (self.text.len() >= HASHED_MIN_TERMS
                && self.text.len() as u64 * 10 >= self.present.len() * 9
                && self.text.iter().map(|(key, _)| key.len()).sum::<usize>()
                    >= HASHED_MIN_BYTES * self.text.len())
    }
}

/// A field's text values are hashed when it has at least this many in a piece, for at least 9/10 of its
/// events...
const HASHED_MIN_TERMS: usize = 64;
/// ... and they are at least this long on average.
const HASHED_MIN_BYTES: usize = 12;
/// ... in chunks of this many (hash, ordinal) entries (more when a hash's entries would be split).
const HASHED_CHUNK_ENTRIES: usize = 256;
/// A field record's text kinds of hashed tables: chunks of varints (index files of version 5 and before),
/// or packed (version 6).
const HASHED_VARINTS: u8 = 1;
const HASHED_PACKED: u8 = 2;
/// Flags of a piece's directory entry: some fields may be unindexed; some are hashed.
const FLAG_UNINDEXED: u8 = 1;
const FLAG_HASHED: u8 = 2;

/// The hash of a text value in a hashed table (CRC32C: fixed by the format, and fast).
fn value_hash(key: &[u8]) -> u32 {
    crc32c::crc32c(key)
}

/// Writes a hashed table of `entries` ((hash, ordinal), sorted): the entries to `data` in packed chunks
/// (each entry its hash's step from the one before and its ordinal from the piece's first, in as many bits
/// as the chunk's largest needs), the table's description to `out`.
fn put_hashed(
    data: &mut Vec<u8>,
    out: &mut Vec<u8>,
    entries: &[(u32, u32)],
    (first, _): (u32, u32),
) {
    put_varint(out, entries.len() as u64);
    let start = data.len();
    let mut directory = Vec::new();
    let mut chunks = 0u64;
    let mut at = 0;
    while at < entries.len() {
        let chunk_offset = data.len() - start;
        let first_hash = entries[at].0;
        let mut previous = first_hash;
        let begin = at;
        while at < entries.len() && (at - begin < HASHED_CHUNK_ENTRIES || entries[at].0 == previous)
        {
            previous = entries[at].0;
            at += 1;
        }
        let chunk = &entries[begin..at];
        let mut steps = Vec::with_capacity(chunk.len());
        let mut previous = first_hash;
        for &(hash, ordinal) in chunk {
            steps.push((hash - previous, ordinal - first));
            previous = hash;
        }
        let width = |value: u32| (32 - value.leading_zeros()) as u8;
        let hash_bits = steps
            .iter()
            .map(|&(step, _)| width(step))
            .max()
            .unwrap_or(0);
        let ordinal_bits = steps
            .iter()
            .map(|&(_, ordinal)| width(ordinal))
            .max()
            .unwrap_or(0);
        put_varint(data, chunk.len() as u64);
        data.push(hash_bits);
        data.push(ordinal_bits);
        let mut bits = BitWriter::new(data);
        for (step, ordinal) in steps {
            bits.put(step, hash_bits);
            bits.put(ordinal, ordinal_bits);
        }
        bits.finish();
        put_varint(&mut directory, u64::from(first_hash));
        put_varint(&mut directory, chunk_offset as u64);
        put_varint(&mut directory, (data.len() - start - chunk_offset) as u64);
        chunks += 1;
    }
    Span {
        offset: start as u64,
        len: (data.len() - start) as u64,
    }
    .put(out);
    put_varint(out, chunks);
    out.extend_from_slice(&directory);
}

/// Writes values of up to 32 bits each, least significant bit first, into bytes.
struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    pending: u64,
    count: u32,
}

impl<'a> BitWriter<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        BitWriter {
            out,
            pending: 0,
            count: 0,
        }
    }

    fn put(&mut self, value: u32, bits: u8) {
        debug_assert!(bits <= 32 && (bits == 32 || value >> bits == 0));
        self.pending |= u64::from(value) << self.count;
        self.count += u32::from(bits);
        while self.count >= 8 {
            self.out.push(self.pending as u8);
            self.pending >>= 8;
            self.count -= 8;
        }
    }

    fn finish(self) {
        if self.count > 0 {
            self.out.push(self.pending as u8);
        }
    }
}

/// Reads what [`BitWriter`] wrote.
struct BitReader<'a> {
    bytes: &'a [u8],
    at: usize,
    pending: u64,
    count: u32,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        BitReader {
            bytes,
            at: 0,
            pending: 0,
            count: 0,
        }
    }

    fn take(&mut self, bits: u8) -> io::Result<u32> {
        let bits = u32::from(bits);
        while self.count < bits {
            let byte = *self
                .bytes
                .get(self.at)
                .ok_or_else(|| invalid("a packed chunk cut short"))?;
            self.pending |= u64::from(byte) << self.count;
            self.at += 1;
            self.count += 8;
        }
        let value = (self.pending & ((1u64 << bits) - 1)) as u32;
        self.pending >>= bits;
        self.count -= bits;
        Ok(value)
    }

    /// Whether every byte was read (what is left of the last is padding).
    fn done(&self) -> bool {
        self.at == self.bytes.len()
    }
}

/// What a piece's directory entry says besides its section.
struct PieceHead<'a> {
    tenant: &'a str,
    first: u32,
    end: u32,
    times: (i64, i64),
}

/// Builds an index file: from tenants' in-memory parts (a compacted segment's), or from the pieces of other
/// index files, copied or merged (see [`PieceWriter::merge`]).
/// The file is written in pieces of about this size (between a tenant's piece and the next), so that a
/// merged file does not have to fit in memory.
const FLUSH_BYTES: usize = 1 << 20;

pub struct PieceWriter {
    /// One compression context for the file: making one per chunk cost more than compressing it.
    compressor: Compressor<'static>,
    file: Arc<dyn StorageFile>,
    /// The bytes not written yet; they start at `flushed` in the file. A piece's offsets are written
    /// relative to where its buffer starts (its `base` says where that is).
    data: Vec<u8>,
    flushed: u64,
    /// CRC32C of the bytes written.
    crc: u32,
    directory: Vec<u8>,
    tenants: u64,
}

impl PieceWriter {
    fn new((first, last): Segments, file: Arc<dyn StorageFile>) -> Self {
        let mut data = Vec::with_capacity(FLUSH_BYTES * 2);
        data.extend_from_slice(PIECE_MAGIC);
        data.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        data.extend_from_slice(&first.to_le_bytes());
        data.extend_from_slice(&last.to_le_bytes());
        PieceWriter {
            compressor: Compressor::new(CHUNK_LEVEL).expect("a zstd level in range"),
            file,
            data,
            flushed: 0,
            crc: 0,
            directory: Vec::new(),
            tenants: 0,
        }
    }

    /// Writes the buffer once it is large, after a piece.
    fn flush_when_full(&mut self) -> io::Result<()> {
        if self.data.len() >= FLUSH_BYTES {
            self.file.write_all_at(&self.data, self.flushed)?;
            self.crc = crc32c::crc32c_append(self.crc, &self.data);
            self.flushed += self.data.len() as u64;
            self.data.clear();
        }
        Ok(())
    }

    /// Adds a tenant's part of the segment.
    pub(crate) fn add(&mut self, tenant: &str, part: &MemoryPart) -> io::Result<()> {
        let fields = &part.fields;
        let words = sorted(&fields.words);
        let inputs: Vec<FieldInput<'_>> = fields
            .fields
            .iter()
            .map(|index| FieldInput {
                field: &index.field,
                present: &index.present,
                text: sorted(&index.terms.text),
                hashed: &[],
                // Kept in numeric order, which the keys' byte order follows.
                numbers: index
                    .terms
                    .numbers
                    .iter()
                    .map(|(number, ordinals)| (number_key(number.0), ordinals))
                    .collect(),
                specials: [&index.terms.trues, &index.terms.falses, &index.terms.nulls],
            })
            .collect();
        let head = PieceHead {
            tenant,
            first: part.first,
            end: part.end,
            times: part.times,
        };
        let json_full = fields.json_fields >= MAX_JSON_FIELDS;
        self.put(
            head,
            json_full,
            fields.unindexed.iter().collect(),
            &words,
            &inputs,
        )
    }

    /// Writes one piece: its postings, chunks and records, then its section, and its directory entry.
    fn put(
        &mut self,
        head: PieceHead<'_>,
        json_full: bool,
        mut unindexed: Vec<&Field>,
        words: &[(&[u8], &Ordinals)],
        fields: &[FieldInput<'_>],
    ) -> io::Result<()> {
        let range = (head.first, head.end);
        let start = self.flushed + self.data.len() as u64;
        let data = &mut self.data;
        let compressor = &mut self.compressor;
        let mut section = Vec::new();
        section.push(u8::from(json_full));
        unindexed.sort_unstable_by_key(|field| field.name());
        put_varint(&mut section, unindexed.len() as u64);
        for field in &unindexed {
            put_field(&mut section, field);
        }
        put_table(compressor, data, &mut section, words, range);
        put_varint(&mut section, fields.len() as u64);
        let mut any_hashed = false;
        for input in fields {
            let mut record = Vec::new();
            put_posting(compressor, data, input.present, range).put(&mut record);
            if input.hashed() {
                any_hashed = true;
                record.push(HASHED_PACKED);
                let mut entries: Vec<(u32, u32)> = input.hashed.to_vec();
                for (key, ordinals) in &input.text {
                    let hash = value_hash(key);
                    entries.extend(ordinals.iter().map(|ordinal| (hash, ordinal)));
                }
                entries.sort_unstable();
                entries.dedup();
                put_hashed(data, &mut record, &entries, range);
            } else {
                record.push(0);
                put_table(compressor, data, &mut record, &input.text, range);
            }
            let numbers: Vec<(&[u8], &Ordinals)> = input
                .numbers
                .iter()
                .map(|(key, ordinals)| (&key[..], *ordinals))
                .collect();
            put_table(compressor, data, &mut record, &numbers, range);
            for special in input.specials {
                put_posting(compressor, data, special, range).put(&mut record);
            }
            put_field(&mut section, input.field);
            if record.len() <= INLINE_RECORD_BYTES {
                put_varint(&mut section, (record.len() as u64) << 1);
                section.extend_from_slice(&record);
            } else {
                // A large record (a field with many terms has a long chunk directory) is read only when
                // its field is asked for.
                let stored = compress(compressor, &record);
                put_varint(&mut section, ((stored.len() as u64) << 1) | 1);
                put_varint(&mut section, data.len() as u64);
                put_varint(&mut section, record.len() as u64);
                data.extend_from_slice(&stored);
            }
        }
        let stored = compress(compressor, &section);
        let section_span = Span {
            offset: data.len() as u64,
            len: stored.len() as u64,
        };
        data.extend_from_slice(&stored);
        let entry = Entry {
            head,
            section: section_span,
            section_raw: section.len() as u64,
            flags: if json_full || !unindexed.is_empty() {
                FLAG_UNINDEXED
            } else {
                0
            } | if any_hashed { FLAG_HASHED } else { 0 },
            start,
            base: self.flushed as i64,
        };
        entry.put(&mut self.directory);
        self.tenants += 1;
        self.flush_when_full()
    }

    /// Copies a piece of another index file as it is: its bytes, and its directory entry with the offsets
    /// inside it shifted by where the bytes now are.
    pub(crate) fn copy(&mut self, tenant: &str, piece: &TenantPiece) -> io::Result<()> {
        let bytes = piece.file.read(Span {
            offset: piece.start,
            len: piece.stored_end() - piece.start,
        })?;
        let at = self.flushed + self.data.len() as u64;
        self.data.extend_from_slice(&bytes);
        let entry = Entry {
            head: PieceHead {
                tenant,
                first: piece.first,
                end: piece.end,
                times: piece.times,
            },
            section: piece.section,
            section_raw: piece.section_raw,
            flags: piece.flags,
            start: at,
            base: piece.base + (at as i64 - piece.start as i64),
        };
        entry.put(&mut self.directory);
        self.tenants += 1;
        self.flush_when_full()
    }

    /// Merges consecutive pieces of one tenant (from index files of consecutive segments) into one piece:
    /// small pieces cost more per event (their tables, chunk directories and field records are made for few
    /// terms each) and each is one more lookup for a query.
    pub(crate) fn merge(&mut self, tenant: &str, pieces: &[&TenantPiece]) -> io::Result<()> {
        let mut merged = Merged::default();
        for window in pieces.windows(2) {
            if window[0].end != window[1].first {
                return Err(invalid(format!(
                    "pieces of tenant {tenant} to merge are not consecutive: ..{} then {}..",
                    window[0].end, window[1].first
                )));
            }
        }
        for piece in pieces {
            merged.add(&piece.detached()?.load()?)?;
        }
        let (Some(first), Some(last)) = (pieces.first(), pieces.last()) else {
            return Ok(());
        };
        let times = pieces
            .iter()
            .fold((i64::MAX, i64::MIN), |(oldest, newest), piece| {
                (oldest.min(piece.times.0), newest.max(piece.times.1))
            });
        let head = PieceHead {
            tenant,
            first: first.first,
            end: last.end,
            times,
        };
        let words = sorted(&merged.words);
        let inputs: Vec<FieldInput<'_>> = merged
            .fields
            .iter()
            .map(|field| FieldInput {
                field: &field.field,
                present: &field.present,
                text: sorted(&field.text),
                hashed: &field.hashed,
                numbers: field
                    .numbers
                    .iter()
                    .map(|(key, ordinals)| (*key, ordinals))
                    .collect(),
                specials: [&field.specials[0], &field.specials[1], &field.specials[2]],
            })
            .collect();
        let unindexed = merged.unindexed();
        self.put(
            head,
            merged.json_full,
            unindexed.iter().collect(),
            &words,
            &inputs,
        )
    }

    /// Writes the rest of the file (the directory and the trailer) and syncs it; returns its length.
    fn finish(mut self) -> io::Result<u64> {
        let directory_offset = self.flushed + self.data.len() as u64;
        let mut directory = Vec::with_capacity(self.directory.len() + 10);
        put_varint(&mut directory, self.tenants);
        directory.extend_from_slice(&self.directory);
        self.data.extend_from_slice(&directory);
        self.data.extend_from_slice(&directory_offset.to_le_bytes());
        self.data
            .extend_from_slice(&(directory.len() as u64).to_le_bytes());
        let crc = crc32c::crc32c_append(self.crc, &self.data);
        self.data.extend_from_slice(&crc.to_le_bytes());
        self.data.extend_from_slice(PIECE_MAGIC);
        self.file.write_all_at(&self.data, self.flushed)?;
        self.file.sync_data()?;
        Ok(self.flushed + self.data.len() as u64)
    }
}

/// A hashed dictionary's terms, sorted by key bytes.
fn sorted<'a, K: AsRef<[u8]> + 'a>(
    terms: impl IntoIterator<Item = (&'a K, &'a Ordinals)>,
) -> Vec<(&'a [u8], &'a Ordinals)> {
    let mut terms: Vec<(&[u8], &Ordinals)> = terms
        .into_iter()
        .map(|(key, ordinals)| (key.as_ref(), ordinals))
        .collect();
    terms.sort_unstable_by(|a, b| a.0.cmp(b.0));
    terms
}

/// A piece's directory entry.
struct Entry<'a> {
    head: PieceHead<'a>,
    section: Span,
    section_raw: u64,
    flags: u8,
    /// Where the piece's bytes begin in the file.
    start: u64,
    /// What to add to the offsets inside the piece (its section's and those its section holds) for their
    /// place in this file: 0 where the piece was written, and where it was copied to minus where from.
    base: i64,
}

impl Entry<'_> {
    fn put(&self, out: &mut Vec<u8>) {
        put_bytes(out, self.head.tenant.as_bytes());
        put_varint(out, u64::from(self.head.first));
        put_varint(out, u64::from(self.head.end));
        out.extend_from_slice(&self.head.times.0.to_le_bytes());
        out.extend_from_slice(&self.head.times.1.to_le_bytes());
        self.section.put(out);
        put_varint(out, self.section_raw);
        out.push(self.flags);
        put_varint(out, self.start);
        // Zigzag: a piece copied to an earlier place than it had shifts down.
        put_varint(out, zigzag(self.base));
    }
}

pub(crate) fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

pub(crate) fn unzigzag(value: u64) -> i64 {
    (value >> 1) as i64 ^ -((value & 1) as i64)
}

/// The postings of `key` in `terms`, added when new (without copying the key when it is not).
fn term_postings<'a>(terms: &'a mut FxHashMap<Vec<u8>, Ordinals>, key: &[u8]) -> &'a mut Ordinals {
    if !terms.contains_key(key) {
        terms.insert(key.to_vec(), Ordinals::default());
    }
    terms.get_mut(key).expect("inserted")
}

/// Whether `field` is one of those a piece stops indexing new ones of once it has `MAX_JSON_FIELDS`
/// (context keys and metadata paths).
fn json_limited(field: &Field) -> bool {
    matches!(field, Field::Metadata(_) | Field::Context(_))
}

/// One field of pieces being merged.
struct MergedField {
    field: Field,
    present: Ordinals,
    /// Hashed (a merge looks up every term of every piece; most are new), sorted when written.
    text: FxHashMap<Vec<u8>, Ordinals>,
    /// The (hash, ordinal) entries of pieces whose table of the field was hashed.
    hashed: Vec<(u32, u32)>,
    numbers: BTreeMap<[u8; 8], Ordinals>,
    specials: [Ordinals; 3],
}

/// The terms of consecutive pieces, gathered for writing as one (ordinals ascend from piece to piece, so
/// each posting is appended in order).
#[derive(Default)]
struct Merged {
    json_full: bool,
    unindexed: Vec<Field>,
    /// The fields of each piece that stopped indexing new JSON fields: a merged piece that has such a
    /// field from another piece must list it as unindexed.
    full_pieces_fields: Vec<HashSet<Field>>,
    words: FxHashMap<Vec<u8>, Ordinals>,
    fields: Vec<MergedField>,
    numbers: HashMap<Field, usize>,
}

/// Appends a posting's ordinals to `into` (each above those it holds: pieces are merged in ordinal order).
fn append_posting(bytes: &[u8], (first, end): (u32, u32), into: &mut Ordinals) -> io::Result<()> {
    match bytes.split_first() {
        Some((0, rest)) => {
            let mut reader = Reader::new(rest);
            let mut value = u64::from(first);
            for number in 0..reader.varint()? {
                let delta = reader.varint()?;
                if number > 0 && delta == 0 {
                    return Err(invalid("a posting list that does not ascend"));
                }
                value += delta;
                into.push(u32::try_from(value).map_err(|_| invalid("an ordinal beyond u32"))?);
            }
        }
        Some((2, [])) => {
            for ordinal in first..end {
                into.push(ordinal);
            }
        }
        _ => {
            let mut bitmap = RoaringBitmap::new();
            read_posting(bytes, (first, end), &mut bitmap)?;
            for ordinal in &bitmap {
                into.push(ordinal);
            }
        }
    }
    Ok(())
}

impl Merged {
    fn add(&mut self, piece: &LoadedPiece<'_>) -> io::Result<()> {
        let range = piece.piece.range();
        let posting = |bytes: &[u8], into: &mut Ordinals| append_posting(bytes, range, into);
        self.json_full |= piece.json_full;
        for field in &piece.unindexed {
            if !self.unindexed.contains(field) {
                self.unindexed.push(field.clone());
            }
        }
        piece.words()?.scan(piece.piece, |key, bytes| {
            posting(bytes, term_postings(&mut self.words, key))
        })?;
        let mut fields = HashSet::new();
        piece.each_record(|name, at| {
            let field = read_field(&mut Reader::new(name))?;
            if piece.json_full {
                fields.insert(field.clone());
            }
            let number = *self.numbers.entry(field.clone()).or_insert_with(|| {
                self.fields.push(MergedField {
                    field,
                    present: Ordinals::default(),
                    text: FxHashMap::default(),
                    hashed: Vec::new(),
                    numbers: BTreeMap::new(),
                    specials: Default::default(),
                });
                self.fields.len() - 1
            });
            let merged = &mut self.fields[number];
            let bytes = piece.open_record(at)?;
            let record = FieldRecord::read(&bytes)?;
            let read = |span: Span, into: &mut Ordinals| -> io::Result<()> {
                if span.len > 0 {
                    posting(&piece.piece.read(span)?, into)?;
                }
                Ok(())
            };
            read(record.present, &mut merged.present)?;
            for (span, into) in record.specials.into_iter().zip(&mut merged.specials) {
                read(span, into)?;
            }
            match &record.text {
                TextTable::Sorted(table) => table.scan(piece.piece, |key, bytes| {
                    posting(bytes, term_postings(&mut merged.text, key))
                })?,
                TextTable::Hashed(table) => table.each_entry(piece.piece, 0, |hash, ordinal| {
                    merged.hashed.push((hash, ordinal));
                    true
                })?,
            }
            record.numbers.scan(piece.piece, |key, bytes| {
                let key: [u8; 8] = key
                    .try_into()
                    .map_err(|_| invalid("a number key that is not 8 bytes"))?;
                posting(bytes, merged.numbers.entry(key).or_default())
            })?;
            Ok(true)
        })?;
        if piece.json_full {
            self.full_pieces_fields.push(fields);
        }
        Ok(())
    }

    /// The unindexed fields of the merged piece: those of the pieces, and the JSON fields some piece had
    /// that a piece which had stopped indexing new JSON fields did not.
    fn unindexed(&self) -> Vec<Field> {
        let mut unindexed = self.unindexed.clone();
        for merged in &self.fields {
            if json_limited(&merged.field)
                && !unindexed.contains(&merged.field)
                && self
                    .full_pieces_fields
                    .iter()
                    .any(|fields| !fields.contains(&merged.field))
            {
                unindexed.push(merged.field.clone());
            }
        }
        unindexed
    }
}

/// An open index file.
pub struct PieceFile {
    /// Unique in the process, for the block cache.
    id: u64,
    /// The file's length when it was checked: every read stays within it.
    len: u64,
    path: PathBuf,
    file: Arc<dyn StorageFile>,
    /// Whether its blocks go through the block cache: not for a piece read whole for a merge.
    cached: bool,
}

/// A piece's bytes read at once (for a merge, which reads every table of every piece merged: one read each,
/// not one per table), at its offsets in its file.
struct PieceBytes {
    bytes: Vec<u8>,
    start: u64,
}

impl StorageFile for PieceBytes {
    fn write_all_at(&self, _: &[u8], _: u64) -> io::Result<()> {
        Err(io::Error::other("a piece read into memory is not written"))
    }

    fn read_exact_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<()> {
        let range = offset
            .checked_sub(self.start)
            .and_then(|at| usize::try_from(at).ok())
            .and_then(|at| Some(at..at.checked_add(buffer.len())?))
            .filter(|range| range.end <= self.bytes.len())
            .ok_or_else(|| invalid("a read outside the piece"))?;
        buffer.copy_from_slice(&self.bytes[range]);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }

    fn set_len(&self, _: u64) -> io::Result<()> {
        Err(io::Error::other("a piece read into memory is not written"))
    }
}

/// Decompressed sections, records and chunks of index files, by file and offset, within a byte budget: a
/// query plans every piece of a tenant in its time window, and a hot tenant's pieces are read again and again.
struct BlockCache {
    blocks: LruCache<(u64, u64), Arc<[u8]>>,
    bytes: usize,
}

/// The block cache's budget.
const BLOCK_CACHE_BYTES: usize = 16 << 20;

static BLOCK_CACHE: Mutex<Option<BlockCache>> = Mutex::new(None);
static NEXT_FILE_ID: AtomicU64 = AtomicU64::new(0);

impl PieceFile {
    fn new(path: PathBuf, file: Arc<dyn StorageFile>, len: u64) -> PieceFile {
        PieceFile {
            id: NEXT_FILE_ID.fetch_add(1, AtomicOrdering::Relaxed),
            len,
            path,
            file,
            cached: true,
        }
    }

    /// A stored (compressed or raw) block, decompressed, through the block cache.
    fn read_block(&self, span: Span, raw_len: u64) -> io::Result<Arc<[u8]>> {
        if !self.cached {
            return Ok(decompress(&self.read(span)?, raw_len)?.into());
        }
        let key = (self.id, span.offset);
        if let Some(cache) = BLOCK_CACHE.lock().as_mut() {
            if let Some(block) = cache.blocks.get(&key) {
                return Ok(block.clone());
            }
        }
        let block: Arc<[u8]> = decompress(&self.read(span)?, raw_len)?.into();
        let mut cache = BLOCK_CACHE.lock();
        let cache = cache.get_or_insert_with(|| BlockCache {
            blocks: LruCache::unbounded(),
            bytes: 0,
        });
        if let Some(replaced) = cache.blocks.put(key, block.clone()) {
            cache.bytes -= replaced.len();
        }
        cache.bytes += block.len();
        while cache.bytes > BLOCK_CACHE_BYTES {
            let Some((_, evicted)) = cache.blocks.pop_lru() else {
                break;
            };
            cache.bytes -= evicted.len();
        }
        Ok(block)
    }

    fn read(&self, span: Span) -> io::Result<Vec<u8>> {
        if span
            .offset
            .checked_add(span.len)
            .is_none_or(|end| end > self.len)
        {
            return Err(invalid(format!(
                "{}: a span beyond the end of the file",
                self.path.display()
            )));
        }
        let len = usize::try_from(span.len).map_err(|_| invalid("a span beyond usize"))?;
        let mut buffer = vec![0; len];
        self.file
            .read_exact_at(&mut buffer, span.offset)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))?;
        Ok(buffer)
    }
}

/// One tenant's piece of an index file: its events of the file's segments, ordinals `first..end`.
#[derive(Clone)]
pub struct TenantPiece {
    file: Arc<PieceFile>,
    pub(crate) segments: Segments,
    pub(crate) first: u32,
    pub(crate) end: u32,
    /// The oldest and newest `created_at`.
    pub(crate) times: (i64, i64),
    section: Span,
    /// The section's length decompressed.
    section_raw: u64,
    /// [`FLAG_UNINDEXED`]: some fields may be unindexed (the section lists them); most pieces have none.
    /// [`FLAG_HASHED`]: some fields' text values are hashed.
    flags: u8,
    /// Where the piece's bytes begin in the file.
    start: u64,
    /// Added to the offsets inside the piece (see [`Entry::base`]).
    base: i64,
}

/// Checks an index file (its header, its trailer and the checksum of its bytes, read a chunk at a time) and
/// reads its directory.
fn check(file: &Arc<PieceFile>, segments: Segments) -> io::Result<Vec<(String, TenantPiece)>> {
    let len = file.len;
    if len < (HEADER_BYTES + TRAILER_BYTES) as u64 {
        return Err(invalid("shorter than a header and a trailer"));
    }
    let header = file.read(Span {
        offset: 0,
        len: HEADER_BYTES as u64,
    })?;
    let word = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    if &header[..8] != PIECE_MAGIC
        || !(OLDEST_READ_VERSION..=FORMAT_VERSION).contains(&word(8))
        || (word(12), word(16)) != segments
    {
        return Err(invalid(format!(
            "not a version {FORMAT_VERSION} index file of segments {}..={}",
            segments.0, segments.1
        )));
    }
    let trailer = file.read(Span {
        offset: len - TRAILER_BYTES as u64,
        len: TRAILER_BYTES as u64,
    })?;
    if &trailer[20..] != PIECE_MAGIC {
        return Err(invalid("no trailer (a torn write?)"));
    }
    let crc_at = len - 12;
    let mut crc = 0;
    let mut buffer = vec![0; FLUSH_BYTES.min(crc_at as usize)];
    let mut at = 0;
    while at < crc_at {
        let chunk = &mut buffer[..(crc_at - at).min(FLUSH_BYTES as u64) as usize];
        file.file.read_exact_at(chunk, at)?;
        crc = crc32c::crc32c_append(crc, chunk);
        at += chunk.len() as u64;
    }
    let stored = u32::from_le_bytes(trailer[16..20].try_into().expect("4 bytes"));
    if crc != stored {
        return Err(invalid("checksum mismatch"));
    }
    let directory = Span {
        offset: u64::from_le_bytes(trailer[..8].try_into().expect("8 bytes")),
        len: u64::from_le_bytes(trailer[8..16].try_into().expect("8 bytes")),
    };
    if directory
        .offset
        .checked_add(directory.len)
        .is_none_or(|end| directory.offset < HEADER_BYTES as u64 || end > crc_at - 16)
    {
        return Err(invalid("directory out of bounds"));
    }
    let directory = file.read(directory)?;
    let mut reader = Reader::new(&directory);
    let count = reader.varint()?;
    let mut pieces = Vec::with_capacity(count.min(1 << 16) as usize);
    for _ in 0..count {
        let tenant = reader.text()?.to_string();
        let piece = TenantPiece {
            file: file.clone(),
            segments,
            first: reader.u32()?,
            end: reader.u32()?,
            times: (reader.i64()?, reader.i64()?),
            section: reader.span()?,
            section_raw: reader.varint()?,
            flags: reader.u8()?,
            start: reader.varint()?,
            base: unzigzag(reader.varint()?),
        };
        let section = piece.shifted(piece.section).ok();
        let whole = section.is_some_and(|section| {
            piece.start >= HEADER_BYTES as u64
                && piece.start <= section.offset
                && section.offset.saturating_add(section.len) <= crc_at
        });
        if piece.first >= piece.end || !whole {
            return Err(invalid(format!(
                "a bad directory entry for tenant {tenant}"
            )));
        }
        pieces.push((tenant, piece));
    }
    Ok(pieces)
}

/// Reads the index file of `segments`, if it is there and whole. A damaged or torn one is removed (it is
/// written again from the block files).
pub fn open(
    fs: &dyn FileSystem,
    directory: &Path,
    segments: Segments,
) -> Result<Option<Vec<(String, TenantPiece)>>> {
    let path = piece_path(directory, segments);
    let opened = fs.len(&path).and_then(|len| Ok((fs.open(&path)?, len)));
    let (file, len) = match opened {
        Ok(opened) => opened,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(StoreError::io(
                format!("failed to open {}", path.display()),
                error,
            ))
        }
    };
    let file = Arc::new(PieceFile::new(path.clone(), file, len));
    match check(&file, segments) {
        Ok(pieces) => Ok(Some(pieces)),
        Err(error) => {
            tracing::warn!(file = %path.display(), %error, "removing a damaged index file (or one of an older format); it is rebuilt from the block files");
            remove(fs, directory, segments)?;
            Ok(None)
        }
    }
}

/// Removes the index file of `segments` if there is one.
pub fn remove(fs: &dyn FileSystem, directory: &Path, segments: Segments) -> Result<()> {
    let path = piece_path(directory, segments);
    match fs.remove(&path) {
        Ok(()) => wal::sync_directory(fs, directory),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(StoreError::io(
            format!("failed to remove {}", path.display()),
            error,
        )),
    }
}

/// Writes the index file of `segments` (it must not exist) with what `fill` adds to it, syncs it and its
/// directory entry, and returns its pieces. A file that could not be written whole is removed.
pub fn write(
    fs: &dyn FileSystem,
    directory: &Path,
    segments: Segments,
    fill: impl FnOnce(&mut PieceWriter) -> io::Result<()>,
) -> Result<Vec<(String, TenantPiece)>> {
    let path = piece_path(directory, segments);
    let file = fs
        .create_new(&path)
        .map_err(|e| StoreError::io(format!("failed to create {}", path.display()), e))?;
    let mut writer = PieceWriter::new(segments, file.clone());
    let written = fill(&mut writer)
        .and_then(|()| writer.finish())
        .map_err(|e| StoreError::io(format!("failed to write {}", path.display()), e))
        .and_then(|len| wal::sync_directory(fs, directory).map(|()| len))
        .and_then(|len| {
            let file = Arc::new(PieceFile::new(path.clone(), file, len));
            check(&file, segments).map_err(|error| StoreError::Corruption {
                file: path.clone(),
                offset: 0,
                reason: format!("an index file just written does not read back: {error}"),
            })
        });
    if written.is_err() {
        let _ = fs.remove(&path);
    }
    written
}

impl TenantPiece {
    fn range(&self) -> (u32, u32) {
        (self.first, self.end)
    }

    pub(crate) fn events(&self) -> u32 {
        self.end - self.first
    }

    /// Whether the piece's segments are among `segments` (first and last).
    pub(crate) fn within(&self, (first, last): Segments) -> bool {
        self.segments.0 >= first && self.segments.1 <= last
    }

    /// Where `span` (an offset inside the piece) is in the file.
    fn shifted(&self, span: Span) -> io::Result<Span> {
        let offset = i64::try_from(span.offset)
            .ok()
            .and_then(|offset| offset.checked_add(self.base))
            .and_then(|offset| u64::try_from(offset).ok())
            .ok_or_else(|| invalid("an offset outside the file"))?;
        Ok(Span {
            offset,
            len: span.len,
        })
    }

    /// The piece, read whole into memory (for a merge).
    fn detached(&self) -> io::Result<TenantPiece> {
        let bytes = self.file.read(Span {
            offset: self.start,
            len: self.stored_end() - self.start,
        })?;
        let bytes = Arc::new(PieceBytes {
            bytes,
            start: self.start,
        });
        let file = PieceFile {
            cached: false,
            ..PieceFile::new(self.file.path.clone(), bytes, self.file.len)
        };
        Ok(TenantPiece {
            file: Arc::new(file),
            ..self.clone()
        })
    }

    /// The end of the piece's bytes in the file (its section is last).
    fn stored_end(&self) -> u64 {
        self.shifted(self.section)
            .map_or(self.start, |section| section.offset + section.len)
    }

    fn read(&self, span: Span) -> io::Result<Vec<u8>> {
        self.file.read(self.shifted(span)?)
    }

    fn read_block(&self, span: Span, raw_len: u64) -> io::Result<Arc<[u8]>> {
        self.file.read_block(self.shifted(span)?, raw_len)
    }

    /// Reads the tenant's section, for planning.
    pub(crate) fn load(&self) -> io::Result<LoadedPiece<'_>> {
        let bytes = self.read_block(self.section, self.section_raw)?;
        let mut reader = Reader::new(&bytes);
        let json_full = reader.u8()? != 0;
        let mut unindexed = Vec::new();
        for _ in 0..reader.varint()? {
            unindexed.push(read_field(&mut reader)?);
        }
        let words_at = reader.at;
        Table::read(&mut reader)?;
        let fields_at = reader.at;
        Ok(LoadedPiece {
            piece: self,
            bytes,
            json_full,
            unindexed,
            words_at,
            fields_at,
        })
    }

    /// Whether some events of the piece may have `field` without the piece knowing (see
    /// [`Terms::not_indexed`]); true as well when the file cannot be read.
    pub(crate) fn may_leave_out(&self, field: &Field) -> bool {
        self.flags & FLAG_UNINDEXED != 0
            && self.load().map_or(true, |loaded| loaded.not_indexed(field))
    }

    /// Whether the piece may know `field`'s text values only by their hash (see [`Terms::hashed`]); true as
    /// well when the file cannot be read.
    pub(crate) fn may_hash(&self, field: &Field) -> bool {
        self.flags & FLAG_HASHED != 0 && self.load().map_or(true, |loaded| loaded.hashed(field))
    }
}

/// A table's description, read from a section.
struct Table<'a> {
    count: u64,
    postings: Span,
    chunks: Span,
    /// Per chunk: its first key, offset and length in `chunks`, and its length decompressed.
    directory: Vec<(&'a [u8], u64, u64, u64)>,
}

/// A term's posting, as its chunk gives it.
enum PostingAt<'a> {
    Inline(&'a [u8]),
    /// In the table's postings span.
    Apart(Span),
}

/// Calls `visit` with each term of a decompressed chunk (its whole key) and its posting, until it returns
/// false.
fn each_in_chunk(
    raw: &[u8],
    mut visit: impl FnMut(&[u8], PostingAt<'_>) -> io::Result<bool>,
) -> io::Result<()> {
    let mut reader = Reader::new(raw);
    let mut key = Vec::new();
    while !reader.done() {
        let shared = usize::try_from(reader.varint()?).map_err(|_| invalid("a bad prefix"))?;
        if shared > key.len() {
            return Err(invalid("a shared prefix longer than the key before"));
        }
        key.truncate(shared);
        key.extend_from_slice(reader.bytes()?);
        let tag = reader.varint()?;
        let len = tag >> 1;
        let posting = if tag & 1 == 0 {
            let len = usize::try_from(len).map_err(|_| invalid("a bad length"))?;
            PostingAt::Inline(reader.take(len)?)
        } else {
            PostingAt::Apart(Span {
                offset: reader.varint()?,
                len,
            })
        };
        if !visit(&key, posting)? {
            break;
        }
    }
    Ok(())
}

fn decompress(compressed: &[u8], raw_len: u64) -> io::Result<Vec<u8>> {
    if raw_len > MAX_BLOCK_BYTES {
        return Err(invalid(format!("a block of {raw_len} bytes decompressed")));
    }
    let capacity = usize::try_from(raw_len).map_err(|_| invalid("a chunk beyond usize"))?;
    if compressed.len() == capacity {
        return Ok(compressed.to_vec());
    }
    thread_local! {
        /// A decompression context per thread: making one costs more than decompressing a chunk.
        static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    let raw = DECOMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        let decompressor = match cell.as_mut() {
            Some(decompressor) => decompressor,
            None => cell.insert(zstd::bulk::Decompressor::new()?),
        };
        decompressor.decompress(compressed, capacity)
    })?;
    if raw.len() != capacity {
        return Err(invalid("a chunk of the wrong length"));
    }
    Ok(raw)
}

/// `bytes[span]`, checked.
fn slice(bytes: &[u8], span: Span) -> io::Result<&[u8]> {
    usize::try_from(span.offset)
        .ok()
        .zip(usize::try_from(span.len).ok())
        .and_then(|(offset, len)| bytes.get(offset..offset.checked_add(len)?))
        .ok_or_else(|| invalid("a span out of bounds"))
}

impl<'a> Table<'a> {
    fn read(reader: &mut Reader<'a>) -> io::Result<Table<'a>> {
        let count = reader.varint()?;
        let postings = reader.span()?;
        let chunks = reader.span()?;
        let chunk_count = reader.varint()?;
        let mut directory = Vec::with_capacity(chunk_count.min(1 << 16) as usize);
        for _ in 0..chunk_count {
            directory.push((
                reader.bytes()?,
                reader.varint()?,
                reader.varint()?,
                reader.varint()?,
            ));
        }
        Ok(Table {
            count,
            postings,
            chunks,
            directory,
        })
    }

    /// Adds the posting of the term whose key is `key`.
    fn lookup(
        &self,
        piece: &TenantPiece,
        key: &[u8],
        range: (u32, u32),
        out: &mut RoaringBitmap,
    ) -> io::Result<()> {
        let position = self
            .directory
            .partition_point(|&(chunk_key, ..)| chunk_key <= key);
        let Some(&(_, offset, len, raw_len)) =
            position.checked_sub(1).map(|at| &self.directory[at])
        else {
            return Ok(());
        };
        let raw = piece.read_block(
            Span {
                offset: self.chunks.offset + offset,
                len,
            },
            raw_len,
        )?;
        let mut found = None;
        each_in_chunk(&raw, |term, posting| {
            Ok(match term.cmp(key) {
                Ordering::Less => true,
                Ordering::Equal => {
                    found = Some(match posting {
                        PostingAt::Inline(bytes) => bytes.to_vec(),
                        PostingAt::Apart(span) => piece.read(Span {
                            offset: self.postings.offset + span.offset,
                            len: span.len,
                        })?,
                    });
                    false
                }
                Ordering::Greater => false,
            })
        })?;
        match found {
            Some(posting) => read_posting(&posting, range, out),
            None => Ok(()),
        }
    }

    /// Visits every term with its encoded posting.
    fn scan(
        &self,
        piece: &TenantPiece,
        mut visit: impl FnMut(&[u8], &[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        if self.count == 0 {
            return Ok(());
        }
        let chunks = piece.read(self.chunks)?;
        let postings = if self.postings.len > 0 {
            piece.read(self.postings)?
        } else {
            Vec::new()
        };
        for &(_, offset, len, raw_len) in &self.directory {
            let raw = decompress(slice(&chunks, Span { offset, len })?, raw_len)?;
            each_in_chunk(&raw, |term, posting| {
                let bytes = match posting {
                    PostingAt::Inline(bytes) => bytes,
                    PostingAt::Apart(span) => slice(&postings, span)?,
                };
                visit(term, bytes)?;
                Ok(true)
            })?;
        }
        Ok(())
    }
}

/// A field record's bytes: in the section, or apart (and cached).
enum Record<'a> {
    Inline(&'a [u8]),
    Apart(Arc<[u8]>),
}

impl std::ops::Deref for Record<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Record::Inline(bytes) => bytes,
            Record::Apart(bytes) => bytes,
        }
    }
}

/// One field's record.
struct FieldRecord<'a> {
    present: Span,
    text: TextTable<'a>,
    numbers: Table<'a>,
    specials: [Span; 3],
}

/// A field's text values: a table of terms, or of their hashes.
enum TextTable<'a> {
    Sorted(Table<'a>),
    Hashed(HashedTable),
}

impl<'a> FieldRecord<'a> {
    fn read(bytes: &'a [u8]) -> io::Result<FieldRecord<'a>> {
        let mut reader = Reader::new(bytes);
        Ok(FieldRecord {
            present: reader.span()?,
            text: match reader.u8()? {
                0 => TextTable::Sorted(Table::read(&mut reader)?),
                kind @ (HASHED_VARINTS | HASHED_PACKED) => {
                    TextTable::Hashed(HashedTable::read(&mut reader, kind == HASHED_PACKED)?)
                }
                kind => return Err(invalid(format!("unknown text table kind {kind}"))),
            },
            numbers: Table::read(&mut reader)?,
            specials: [reader.span()?, reader.span()?, reader.span()?],
        })
    }

    /// The text table, when it lists its values.
    fn sorted(&self) -> io::Result<&Table<'a>> {
        match &self.text {
            TextTable::Sorted(table) => Ok(table),
            TextTable::Hashed(_) => Err(invalid("a hashed table does not list its values")),
        }
    }
}

/// A hashed table's description, read from a field record.
struct HashedTable {
    /// Chunks of packed entries (kind 2), or of varints (kind 1, index files of version 5 and before).
    packed: bool,
    chunks: Span,
    /// Per chunk: its first hash, its offset and length in `chunks`.
    directory: Vec<(u32, u64, u64)>,
}

impl HashedTable {
    fn read(reader: &mut Reader<'_>, packed: bool) -> io::Result<HashedTable> {
        reader.varint()?;
        let chunks = reader.span()?;
        let count = reader.varint()?;
        let mut directory = Vec::with_capacity(count.min(1 << 16) as usize);
        for _ in 0..count {
            let hash = u32::try_from(reader.varint()?).map_err(|_| invalid("a hash beyond u32"))?;
            directory.push((hash, reader.varint()?, reader.varint()?));
        }
        Ok(HashedTable {
            packed,
            chunks,
            directory,
        })
    }

    /// Calls `visit` with the (hash, ordinal) entries of the chunks from `from` on, until it returns false.
    fn each_entry(
        &self,
        piece: &TenantPiece,
        from: usize,
        mut visit: impl FnMut(u32, u32) -> bool,
    ) -> io::Result<()> {
        let first = piece.first;
        for &(first_hash, offset, len) in self.directory.iter().skip(from) {
            let span = Span {
                offset: self.chunks.offset + offset,
                len,
            };
            let raw = piece.read_block(span, len)?;
            if !hashed_chunk(
                &raw,
                self.packed,
                first_hash,
                (first, piece.end),
                &mut visit,
            )? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Adds the events whose value may be `key` (those whose value has its hash).
    fn lookup(&self, piece: &TenantPiece, key: &[u8], out: &mut RoaringBitmap) -> io::Result<()> {
        let wanted = value_hash(key);
        let position = self.directory.partition_point(|&(hash, ..)| hash <= wanted);
        let Some(at) = position.checked_sub(1) else {
            return Ok(());
        };
        // A hash's entries are never split between chunks.
        let mut found = Vec::new();
        self.each_entry(piece, at, |hash, ordinal| {
            if hash == wanted {
                found.push(ordinal);
            }
            hash <= wanted
        })?;
        found.sort_unstable();
        found.dedup();
        *out |= RoaringBitmap::from_sorted_iter(found).expect("sorted");
        Ok(())
    }
}

/// Calls `visit` with each (hash, ordinal) entry of a hashed table's chunk (packed, or of varints), until it
/// returns false; says whether it went to the end.
fn hashed_chunk(
    raw: &[u8],
    packed: bool,
    first_hash: u32,
    (first, end): (u32, u32),
    visit: &mut impl FnMut(u32, u32) -> bool,
) -> io::Result<bool> {
    let mut reader = Reader::new(raw);
    let mut hash = first_hash;
    let mut entry = |step: u64, from_first: u64| {
        hash = u32::try_from(u64::from(hash) + step).map_err(|_| invalid("a hash beyond u32"))?;
        let ordinal = u32::try_from(u64::from(first) + from_first)
            .ok()
            .filter(|&ordinal| ordinal < end)
            .ok_or_else(|| invalid("an ordinal outside the piece"))?;
        Ok::<_, io::Error>(visit(hash, ordinal))
    };
    if !packed {
        while !reader.done() {
            if !entry(reader.varint()?, reader.varint()?)? {
                return Ok(false);
            }
        }
        return Ok(true);
    }
    let count = reader.varint()?;
    // One entry per event at most (an event has one value of the field).
    if count > u64::from(end.saturating_sub(first)) {
        return Err(invalid(
            "a packed chunk of more entries than the piece has events",
        ));
    }
    let widths = reader.take(2)?;
    let (hash_bits, ordinal_bits) = (widths[0], widths[1]);
    if hash_bits > 32 || ordinal_bits > 32 {
        return Err(invalid("a packed chunk of values over 32 bits"));
    }
    let mut bits = BitReader::new(reader.rest());
    for _ in 0..count {
        let step = bits.take(hash_bits)?;
        let from_first = bits.take(ordinal_bits)?;
        if !entry(u64::from(step), u64::from(from_first))? {
            return Ok(false);
        }
    }
    if !bits.done() {
        return Err(invalid("a packed chunk longer than its entries"));
    }
    Ok(true)
}

/// A piece's section, read for one plan.
pub(crate) struct LoadedPiece<'a> {
    piece: &'a TenantPiece,
    bytes: Arc<[u8]>,
    json_full: bool,
    unindexed: Vec<Field>,
    words_at: usize,
    fields_at: usize,
}

/// Where a field's record is: in the section, or apart (its span and length decompressed).
enum RecordAt<'a> {
    Inline(&'a [u8]),
    Apart(Span, u64),
}

impl LoadedPiece<'_> {
    /// Calls `visit` with each field (as encoded) and where its record is, until it returns false.
    fn each_record<'s>(
        &'s self,
        mut visit: impl FnMut(&'s [u8], RecordAt<'s>) -> io::Result<bool>,
    ) -> io::Result<()> {
        let mut reader = Reader::new(&self.bytes);
        reader.at = self.fields_at;
        for _ in 0..reader.varint()? {
            let start = reader.at;
            read_field(&mut reader)?;
            let name = &self.bytes[start..reader.at];
            let tag = reader.varint()?;
            let len = usize::try_from(tag >> 1).map_err(|_| invalid("a bad length"))?;
            let at = if tag & 1 == 0 {
                RecordAt::Inline(reader.take(len)?)
            } else {
                let span = Span {
                    offset: reader.varint()?,
                    len: len as u64,
                };
                RecordAt::Apart(span, reader.varint()?)
            };
            if !visit(name, at)? {
                break;
            }
        }
        Ok(())
    }

    fn open_record<'a>(&self, at: RecordAt<'a>) -> io::Result<Record<'a>> {
        Ok(match at {
            RecordAt::Inline(bytes) => Record::Inline(bytes),
            RecordAt::Apart(span, raw_len) => Record::Apart(self.piece.read_block(span, raw_len)?),
        })
    }

    /// The record of `field`, if the piece has the field.
    fn field(&self, field: &Field) -> io::Result<Option<Record<'_>>> {
        let mut wanted = Vec::new();
        put_field(&mut wanted, field);
        let mut found = None;
        self.each_record(|name, at| {
            if name == wanted {
                found = Some(at);
                return Ok(false);
            }
            Ok(true)
        })?;
        found.map(|at| self.open_record(at)).transpose()
    }

    fn words(&self) -> io::Result<Table<'_>> {
        let mut reader = Reader::new(&self.bytes);
        reader.at = self.words_at;
        Table::read(&mut reader)
    }

    fn add_posting(&self, span: Span, out: &mut RoaringBitmap) -> io::Result<()> {
        if span.len == 0 {
            return Ok(());
        }
        read_posting(&self.piece.read(span)?, self.piece.range(), out)
    }
}

impl Terms for LoadedPiece<'_> {
    fn not_indexed(&self, field: &Field) -> bool {
        self.unindexed.contains(field)
            || (self.json_full && json_limited(field) && !matches!(self.field(field), Ok(Some(_))))
    }

    fn hashed(&self, field: &Field) -> bool {
        if self.piece.flags & FLAG_HASHED == 0 {
            // Most pieces have no hashed field: their records are not read again to tell.
            return false;
        }
        match self.field(field) {
            Ok(None) => false,
            Ok(Some(bytes)) => FieldRecord::read(&bytes)
                .map_or(true, |record| matches!(record.text, TextTable::Hashed(_))),
            Err(_) => true,
        }
    }

    fn present(&self, field: &Field, out: &mut RoaringBitmap) -> io::Result<()> {
        match self.field(field)? {
            Some(bytes) => self.add_posting(FieldRecord::read(&bytes)?.present, out),
            None => Ok(()),
        }
    }

    fn equal(
        &self,
        field: &Field,
        operand: &str,
        json: bool,
        out: &mut RoaringBitmap,
    ) -> io::Result<()> {
        let Some(bytes) = self.field(field)? else {
            return Ok(());
        };
        let record = FieldRecord::read(&bytes)?;
        let piece = self.piece;
        let range = piece.range();
        match &record.text {
            TextTable::Sorted(table) => table.lookup(piece, operand.as_bytes(), range, out)?,
            TextTable::Hashed(table) => table.lookup(piece, operand.as_bytes(), out)?,
        }
        if !json {
            return Ok(());
        }
        if let Some(number) = finite_number(operand) {
            let key = number_key(OrderedNumber::new(number).0);
            record.numbers.lookup(piece, &key, range, out)?;
        }
        let special = match operand {
            "true" => record.specials[0],
            "false" => record.specials[1],
            "null" => record.specials[2],
            _ => return Ok(()),
        };
        self.add_posting(special, out)
    }

    fn each_term(&self, field: &Field, visit: &mut TermVisitor<'_>) -> io::Result<()> {
        let Some(bytes) = self.field(field)? else {
            return Ok(());
        };
        let record = FieldRecord::read(&bytes)?;
        let piece = self.piece;
        let range = piece.range();
        record.sorted()?.scan(piece, |key, posting| {
            let text = std::str::from_utf8(key).map_err(|_| invalid("a term that is not UTF-8"))?;
            visit(TermKey::Text(text), &mut |out| {
                read_posting(posting, range, out)
            })
        })?;
        record.numbers.scan(piece, |key, posting| {
            visit(TermKey::Number(number_of(key)?), &mut |out| {
                read_posting(posting, range, out)
            })
        })?;
        for (term, span) in [TermKey::True, TermKey::False, TermKey::Null]
            .into_iter()
            .zip(record.specials)
        {
            if span.len > 0 {
                visit(term, &mut |out| self.add_posting(span, out))?;
            }
        }
        Ok(())
    }

    fn words_matching(
        &self,
        keep: &dyn Fn(&str) -> bool,
        out: &mut RoaringBitmap,
    ) -> io::Result<()> {
        let range = self.piece.range();
        self.words()?.scan(self.piece, |key, posting| {
            let word = std::str::from_utf8(key).map_err(|_| invalid("a word that is not UTF-8"))?;
            if keep(word) {
                read_posting(posting, range, out)?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn compressor() -> Compressor<'static> {
        Compressor::new(CHUNK_LEVEL).unwrap()
    }

    #[test]
    fn long_postings_apart_are_compressed() {
        // A term on about a fifth of the events: a byte per ordinal as varints.
        let mut set = Ordinals::default();
        let mut state = 7u32;
        let mut ordinal = 0;
        for _ in 0..5000 {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            ordinal += 1 + (state >> 16) % 9;
            set.push(ordinal);
        }
        let range = (0, ordinal + 1);
        let mut bytes = Vec::new();
        put_posting(&mut compressor(), &mut bytes, &set, range);
        assert_eq!(bytes[0], 3);
        assert!(bytes.len() < 5000 * 3 / 4, "{} bytes", bytes.len());
        let mut out = RoaringBitmap::new();
        read_posting(&bytes, range, &mut out).unwrap();
        assert_eq!(
            out.iter().collect::<Vec<_>>(),
            set.iter().collect::<Vec<_>>()
        );
        // Damaged: cut short, a length that is not the frame's, a compressed posting inside another.
        for cut in 1..bytes.len() {
            assert!(read_posting(&bytes[..cut], range, &mut RoaringBitmap::new()).is_err());
        }
        let mut longer = vec![3];
        put_varint(&mut longer, 6000);
        longer.extend_from_slice(&bytes[3..]);
        assert!(read_posting(&longer, range, &mut RoaringBitmap::new()).is_err());
        let mut nested = vec![3];
        put_varint(&mut nested, bytes.len() as u64);
        nested.extend_from_slice(&zstd::bulk::compress(&bytes, 1).unwrap());
        assert!(read_posting(&nested, range, &mut RoaringBitmap::new()).is_err());
    }

    /// The chunks of a hashed table of `entries` (sorted), and each chunk's first hash and bytes.
    fn hashed_chunks(entries: &[(u32, u32)], range: (u32, u32)) -> Vec<(u32, Vec<u8>)> {
        let (mut data, mut out) = (Vec::new(), Vec::new());
        put_hashed(&mut data, &mut out, entries, range);
        let table = HashedTable::read(&mut Reader::new(&out), true).unwrap();
        assert_eq!(table.chunks.len as usize, data.len());
        table
            .directory
            .iter()
            .map(|&(hash, offset, len)| {
                (
                    hash,
                    data[offset as usize..(offset + len) as usize].to_vec(),
                )
            })
            .collect()
    }

    #[test]
    fn hashed_tables_read_back_packed_and_as_varints() {
        let range = (1000, 61_000);
        let mut state = 99u64;
        let mut entries: Vec<(u32, u32)> = (0..1500)
            .map(|i| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                ((state >> 32) as u32, range.0 + (i * 37) % 60_000)
            })
            .collect();
        // A hash of many entries across where a chunk would end, and the largest hash.
        entries.extend((0..300).map(|i| (0x8000_0000, range.0 + 2 * i + 1)));
        entries.push((u32::MAX, range.1 - 1));
        entries.sort_unstable();
        entries.dedup();
        let chunks = hashed_chunks(&entries, range);
        assert!(chunks.len() > 2);
        let mut read = Vec::new();
        for (first_hash, raw) in &chunks {
            assert!(hashed_chunk(raw, true, *first_hash, range, &mut |h, o| {
                read.push((h, o));
                true
            })
            .unwrap());
        }
        assert_eq!(read, entries);
        // Packed: 41 bits an entry here (hash steps of ~2^21 in 24 bits, ordinals in 16), where varints
        // take 6 bytes.
        let bytes: usize = chunks.iter().map(|(_, raw)| raw.len()).sum();
        assert!(bytes * 8 < entries.len() * 42, "{bytes} bytes");
        // The chunks of index files before version 6: each entry two varints.
        let (first_hash, raw) = &chunks[0];
        let mut varints = Vec::new();
        let mut previous = *first_hash;
        let mut expected = Vec::new();
        hashed_chunk(raw, true, *first_hash, range, &mut |hash, ordinal| {
            put_varint(&mut varints, u64::from(hash - previous));
            put_varint(&mut varints, u64::from(ordinal - range.0));
            previous = hash;
            expected.push((hash, ordinal));
            true
        })
        .unwrap();
        let mut again = Vec::new();
        hashed_chunk(&varints, false, *first_hash, range, &mut |h, o| {
            again.push((h, o));
            true
        })
        .unwrap();
        assert_eq!(again, expected);
        // Stopping early, and damage: cut short, longer, an ordinal outside the piece, too many entries.
        let mut seen = 0;
        assert!(!hashed_chunk(raw, true, *first_hash, range, &mut |_, _| {
            seen += 1;
            seen < 3
        })
        .unwrap());
        assert_eq!(seen, 3);
        let mut ignore = |_, _| true;
        for cut in 0..raw.len() {
            assert!(hashed_chunk(&raw[..cut], true, *first_hash, range, &mut ignore).is_err());
        }
        let mut longer = raw.clone();
        longer.push(0);
        assert!(hashed_chunk(&longer, true, *first_hash, range, &mut ignore).is_err());
        assert!(
            hashed_chunk(raw, true, *first_hash, (range.0, range.0 + 10), &mut ignore).is_err()
        );
        let mut many = vec![0xff, 0xff, 0x03, 0, 0];
        many.extend_from_slice(&[0; 8]);
        assert!(hashed_chunk(&many, true, 0, range, &mut ignore).is_err());
    }

    #[test]
    fn a_posting_of_every_event_of_the_piece_is_one_byte() {
        let mut set = Ordinals::default();
        for ordinal in 10..20 {
            set.push(ordinal);
        }
        let mut bytes = Vec::new();
        put_posting(&mut compressor(), &mut bytes, &set, (10, 20));
        assert_eq!(bytes, [2]);
        let mut out = RoaringBitmap::new();
        read_posting(&bytes, (10, 20), &mut out).unwrap();
        assert_eq!(out.iter().collect::<Vec<_>>(), (10..20).collect::<Vec<_>>());
        let mut appended = Ordinals::default();
        append_posting(&bytes, (10, 20), &mut appended).unwrap();
        assert_eq!(
            appended.iter().collect::<Vec<_>>(),
            (10..20).collect::<Vec<_>>()
        );
    }

    proptest! {
        #[test]
        fn bases_read_back(base in any::<i64>()) {
            prop_assert_eq!(unzigzag(zigzag(base)), base);
        }

        #[test]
        fn number_keys_sort_as_the_numbers_and_read_back(a in any::<f64>(), b in any::<f64>()) {
            prop_assert_eq!(number_key(a).cmp(&number_key(b)), a.total_cmp(&b));
            prop_assert_eq!(number_of(&number_key(a)).unwrap().to_bits(), a.to_bits());
        }

        #[test]
        fn postings_read_back_as_written(mut ordinals in prop::collection::vec(0u32..200_000, 0..400), first in 0u32..1000) {
            ordinals.sort_unstable();
            ordinals.dedup();
            let mut set = Ordinals::default();
            for &ordinal in &ordinals {
                set.push(ordinal + first);
            }
            let mut bytes = Vec::new();
            let range = (first, first + 300_000);
            let span = put_posting(&mut compressor(), &mut bytes, &set, range);
            prop_assert_eq!(span.len as usize, bytes.len());
            let mut out = RoaringBitmap::new();
            read_posting(&bytes, range, &mut out).unwrap();
            prop_assert_eq!(out.iter().collect::<Vec<_>>(), ordinals.iter().map(|o| o + first).collect::<Vec<_>>());
            // As a merge appends it.
            let mut appended = Ordinals::default();
            append_posting(&bytes, range, &mut appended).unwrap();
            prop_assert_eq!(appended.iter().collect::<Vec<_>>(), out.iter().collect::<Vec<_>>());
        }

        #[test]
        fn packed_bits_read_back(values in prop::collection::vec((any::<u32>(), 0u8..=32), 0..300)) {
            let values: Vec<(u32, u8)> = values
                .into_iter()
                .map(|(value, bits)| (if bits == 32 { value } else { value & ((1 << bits) - 1) }, bits))
                .collect();
            let mut bytes = Vec::new();
            let mut writer = BitWriter::new(&mut bytes);
            for &(value, bits) in &values {
                writer.put(value, bits);
            }
            writer.finish();
            let total: usize = values.iter().map(|&(_, bits)| usize::from(bits)).sum();
            prop_assert_eq!(bytes.len(), total.div_ceil(8));
            let mut reader = BitReader::new(&bytes);
            for &(value, bits) in &values {
                prop_assert_eq!(reader.take(bits).unwrap(), value);
            }
            prop_assert!(reader.done());
            prop_assert!(reader.take(9).is_err());
        }

        #[test]
        fn dense_postings_read_back_as_written(gaps in prop::collection::vec(1u32..12, 0..3000), first in 0u32..1000) {
            let mut set = Ordinals::default();
            let mut ordinal = first;
            for gap in &gaps {
                ordinal += gap;
                set.push(ordinal);
            }
            let range = (first, ordinal + 2);
            let mut bytes = Vec::new();
            put_posting(&mut compressor(), &mut bytes, &set, range);
            let mut out = RoaringBitmap::new();
            read_posting(&bytes, range, &mut out).unwrap();
            prop_assert_eq!(out.iter().collect::<Vec<_>>(), set.iter().collect::<Vec<_>>());
            let mut appended = Ordinals::default();
            append_posting(&bytes, range, &mut appended).unwrap();
            prop_assert_eq!(appended.iter().collect::<Vec<_>>(), set.iter().collect::<Vec<_>>());
        }
    }
}
