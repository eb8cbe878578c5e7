//! Compaction: a sealed WAL segment rewritten as a block file, its events grouped by tenant.
//!
//! A WAL record holds one ingest request, and a request from the deployment admin mixes many tenants. Reading
//! one tenant's events from such records decompresses whole records for a few events each. Once the writer has
//! moved on to a later segment, the compactor rewrites the sealed segment `wal/N.wal` as `blocks/N.blk`:
//!
//! ```text
//! file:    "LOGBOOKB" (8) | format version u32 LE (=1) | segment number u32 LE
//! record:  the WAL's framing (length, CRC32C, kind, payload)
//!   kind 1 (events): zstd of a header line, then event lines — the WAL's record payload. The first record's
//!                    header lists the segment's request-level idempotency keys still in their window; each
//!                    other record holds up to BLOCK_EVENTS events of one tenant, in seq order, with their
//!                    ids, hashes, seqs, tenant and times kept apart as bytes before the zstd frame (`LBC2`,
//!                    [`columns`]) when every line allows it (`LBC1`, ids and hashes only, in files
//!                    written before and for lines of another form).
//!   kind 2 (seal):   the number of events (u64 LE); always last
//! ```
//!
//! The block file is written, synced, and its directory entry synced; then the index is pointed at it; then the
//! WAL segment is removed. A crash at any step leaves either the WAL segment (the block file, unsealed or torn,
//! is removed at the next open) or a complete block file (a WAL segment it replaced is removed at the next open).

use crate::codec::{self, Dictionary};
use crate::columns;
use crate::error::{Result, StoreError};
use crate::index::Location;
use crate::io::FileSystem;
use crate::wal::{self, RecordPosition, KIND_EVENTS};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const BLOCK_MAGIC: &[u8; 8] = b"LOGBOOKB";
pub const KIND_SEAL: u8 = 2;
/// At most this many events per block (one compressed record)...
const BLOCK_EVENTS: usize = 256;
/// ... and at most about this many bytes of JSON before compression. A read of one event decompresses its
/// whole block, so blocks stay small; an export reads them in order.
const BLOCK_BYTES: usize = 128 << 10;

pub fn block_path(directory: &Path, segment: u32) -> PathBuf {
    directory.join(format!("{segment:08}.blk"))
}

fn header(segment: u32) -> Vec<u8> {
    let mut header = Vec::with_capacity(wal::SEGMENT_HEADER_BYTES as usize);
    header.extend_from_slice(BLOCK_MAGIC);
    header.extend_from_slice(&wal::FORMAT_VERSION.to_le_bytes());
    header.extend_from_slice(&segment.to_le_bytes());
    header
}

/// Why a block file is not complete, or `None` when it is: the right header, every frame valid, a seal last.
fn incomplete(bytes: &[u8], segment: u32) -> Option<String> {
    let start = wal::SEGMENT_HEADER_BYTES as usize;
    if bytes.len() < start || bytes[..start] != header(segment)[..] {
        return Some("not a block file header for its segment".into());
    }
    let mut sealed = false;
    for frame in wal::frames(bytes) {
        match frame {
            Ok(frame) if sealed => {
                return Some(format!("bytes after the seal at offset {}", frame.offset))
            }
            Ok(frame) => sealed = frame.kind == KIND_SEAL,
            Err((offset, reason)) => return Some(format!("offset {offset}: {reason}")),
        }
    }
    (!sealed).then(|| "no seal".to_string())
}

/// Settles the data directory at open: removes block files left incomplete by a crash (their WAL segment is
/// still there) and WAL segments a complete block file replaced. Returns the compacted segments, in order.
pub fn settle(fs: &dyn FileSystem, blocks_dir: &Path, wal_dir: &Path) -> Result<Vec<u32>> {
    let segments = wal::list_segments(fs, wal_dir)?;
    let mut complete = Vec::new();
    for number in wal::list_numbered(fs, blocks_dir, ".blk")? {
        let path = block_path(blocks_dir, number);
        let bytes = fs
            .read(&path)
            .map_err(|e| StoreError::io(format!("failed to read {}", path.display()), e))?;
        let wal_path = wal::segment_path(wal_dir, number);
        match incomplete(&bytes, number) {
            None => {
                if segments.contains(&number) {
                    tracing::info!(file = %wal_path.display(), "removing a WAL segment its block file replaced");
                    fs.remove(&wal_path).map_err(|e| {
                        StoreError::io(format!("failed to remove {}", wal_path.display()), e)
                    })?;
                    wal::sync_directory(fs, wal_dir)?;
                }
                complete.push(number);
            }
            Some(reason) if segments.contains(&number) => {
                tracing::warn!(file = %path.display(), reason, "removing a block file a crash left incomplete");
                fs.remove(&path).map_err(|e| {
                    StoreError::io(format!("failed to remove {}", path.display()), e)
                })?;
                wal::sync_directory(fs, blocks_dir)?;
            }
            Some(reason) => {
                return Err(StoreError::Corruption {
                    file: path,
                    offset: 0,
                    reason: format!("{reason}, and its WAL segment is gone"),
                })
            }
        }
    }
    if let (Some(&last_block), Some(&first_wal)) =
        (complete.last(), wal::list_segments(fs, wal_dir)?.first())
    {
        if first_wal < last_block {
            return Err(StoreError::Corruption {
                file: wal::segment_path(wal_dir, first_wal),
                offset: 0,
                reason: format!(
                    "WAL segment {first_wal} is older than compacted segment {last_block}"
                ),
            });
        }
    }
    Ok(complete)
}

/// Calls `visit` with every events record of a complete block file, in order.
pub fn read(
    fs: &dyn FileSystem,
    blocks_dir: &Path,
    segment: u32,
    mut visit: impl FnMut(RecordPosition, &[u8]) -> Result<()>,
) -> Result<()> {
    let path = block_path(blocks_dir, segment);
    let bytes = fs
        .read(&path)
        .map_err(|e| StoreError::io(format!("failed to read {}", path.display()), e))?;
    for frame in wal::frames(&bytes) {
        let frame = frame.map_err(|(offset, reason)| StoreError::Corruption {
            file: path.clone(),
            offset: offset as u64,
            reason,
        })?;
        let position = RecordPosition {
            segment,
            offset: frame.offset as u64,
            compacted: true,
        };
        match frame.kind {
            KIND_EVENTS => visit(position, frame.payload)?,
            KIND_SEAL => {}
            other => {
                return Err(StoreError::Corruption {
                    file: path,
                    offset: frame.offset as u64,
                    reason: format!("unknown record kind {other}"),
                })
            }
        }
    }
    Ok(())
}

/// A block file built from one WAL segment, and where each event moves.
pub struct Compacted {
    pub bytes: Vec<u8>,
    /// Per tenant: (seq, new location), in seq order.
    pub moves: BTreeMap<String, Vec<(u64, Location)>>,
    pub events: u64,
    /// The dictionary trained on this segment's events, when asked for: the block file is compressed with
    /// it, so it must be stored before the block file.
    pub trained: Option<Dictionary>,
}

/// How blocks are compressed: zstd at `level`, or at `dictionary_level` with `dictionary` if there is one, or
/// else with one trained on the segment's events when `train` (and the segment has enough of them).
#[derive(Clone, Copy)]
pub struct Compression<'a> {
    pub level: i32,
    pub dictionary_level: i32,
    pub dictionary: Option<&'a Dictionary>,
    pub train: bool,
}

/// A dictionary is trained on a segment of at least this many events...
const TRAINING_EVENTS: usize = 1000;
/// ... from at most this many of them, taken evenly across its tenants.
const TRAINING_SAMPLES: usize = 4000;

#[derive(serde::Deserialize)]
struct EventKey<'a> {
    #[serde(borrow)]
    tenant: std::borrow::Cow<'a, str>,
    seq: u64,
}

/// The tenant and seq of a stored event line, read from its start (`{"id":"…","seq":N,"tenant":"…",` — the
/// order in which events are serialized); `None` if the line starts otherwise.
fn event_key_prefix(line: &[u8]) -> Option<(&str, u64)> {
    let rest = line.strip_prefix(b"{\"id\":\"")?;
    let rest = &rest[memchr::memchr(b'"', rest)? + 1..];
    let rest = rest.strip_prefix(b",\"seq\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let seq = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let rest = rest[digits..].strip_prefix(b",\"tenant\":\"")?;
    let tenant = std::str::from_utf8(&rest[..memchr::memchr(b'"', rest)?]).ok()?;
    (!tenant.contains('\\')).then_some((tenant, seq))
}

fn event_key(line: &[u8]) -> serde_json::Result<(String, u64)> {
    match event_key_prefix(line) {
        Some((tenant, seq)) => Ok((tenant.to_string(), seq)),
        None => {
            serde_json::from_slice::<EventKey>(line).map(|key| (key.tenant.into_owned(), key.seq))
        }
    }
}

/// Rewrites the WAL segment `segment` (its whole file, `wal_bytes`) as a block file, compressed at zstd
/// `level`, without a dictionary. `keep_request` decides which request-level idempotency headers (JSON) are
/// carried over.
pub fn build(
    segment: u32,
    wal_path: &Path,
    wal_bytes: &[u8],
    level: i32,
    keep_request: impl FnMut(&serde_json::Value) -> bool,
) -> Result<Compacted> {
    let compression = Compression {
        level,
        dictionary_level: level,
        dictionary: None,
        train: false,
    };
    build_with(segment, wal_path, wal_bytes, compression, keep_request)
}

/// [`build`], compressed as `compression` says.
pub fn build_with(
    segment: u32,
    wal_path: &Path,
    wal_bytes: &[u8],
    compression: Compression<'_>,
    mut keep_request: impl FnMut(&serde_json::Value) -> bool,
) -> Result<Compacted> {
    let corrupt = |offset: usize, reason: String| StoreError::Corruption {
        file: wal_path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    let start = wal::SEGMENT_HEADER_BYTES as usize;
    if wal_bytes.len() < start || &wal_bytes[..8] != wal::MAGIC {
        return Err(corrupt(0, "not a Logbook WAL segment header".into()));
    }
    // Every record's text (raw records borrowed from the segment, older ones decompressed), and for each tenant
    // its event lines.
    let mut texts: Vec<std::borrow::Cow<'_, [u8]>> = Vec::new();
    let mut requests: Vec<serde_json::Value> = Vec::new();
    for frame in wal::frames(wal_bytes) {
        let wal::Frame {
            offset,
            kind,
            payload,
            ..
        } = frame.map_err(|(offset, reason)| corrupt(offset, reason))?;
        if kind != KIND_EVENTS {
            return Err(corrupt(offset, format!("unknown record kind {kind}")));
        }
        let text = codec::text_of(payload)
            .map_err(|e| corrupt(offset, format!("record does not decompress: {e}")))?;
        let header_end = memchr::memchr(b'\n', &text).unwrap_or(text.len());
        let header: serde_json::Value = serde_json::from_slice(&text[..header_end])
            .map_err(|e| corrupt(offset, format!("bad record header: {e}")))?;
        if let Some(stored) = header.get("idempotency").filter(|v| !v.is_null()) {
            if keep_request(stored) {
                requests.push(stored.clone());
            }
        }
        texts.push(text);
    }
    // (record, start, end) of each event line, per tenant, in seq order.
    let mut lines: BTreeMap<String, Vec<(u64, usize, usize, usize)>> = BTreeMap::new();
    for (record, text) in texts.iter().enumerate() {
        let mut line_start = None;
        for newline in memchr::memchr_iter(b'\n', text) {
            let Some(begin) = line_start else {
                line_start = Some(newline + 1);
                continue;
            };
            line_start = Some(newline + 1);
            let (tenant, seq) = event_key(&text[begin..newline]).map_err(|e| {
                corrupt(
                    0,
                    format!("an event of record {record} does not parse: {e}"),
                )
            })?;
            let list = lines.entry(tenant).or_default();
            if let Some(&(previous, ..)) = list.last() {
                if seq != previous + 1 {
                    return Err(corrupt(0, format!("seq {seq} follows seq {previous}")));
                }
            }
            list.push((seq, record, begin, newline));
        }
    }

    let mut bytes = header(segment);
    // The blocks come to about an eighth of the raw records: reserved once rather than grown by copying.
    bytes.reserve(wal_bytes.len() / 6);
    let mut moves: BTreeMap<String, Vec<(u64, Location)>> = BTreeMap::new();
    let mut events = 0u64;
    let total: usize = lines.values().map(Vec::len).sum();
    let trained =
        if compression.dictionary.is_none() && compression.train && total >= TRAINING_EVENTS {
            let step = total.div_ceil(TRAINING_SAMPLES);
            let samples: Vec<&[u8]> = lines
                .values()
                .flatten()
                .step_by(step)
                .map(|&(_, record, begin, end)| &texts[record][begin..end])
                .collect();
            // The dictionary is for what is compressed: event lines without the members kept apart.
            let stripped: Vec<Vec<u8>> = samples
                .iter()
                .map(|&line| columns::strip_line(line))
                .collect();
            codec::train(&stripped.iter().map(Vec::as_slice).collect::<Vec<_>>())
        } else {
            None
        };
    let failed = |e| StoreError::io("failed to compress a block", e);
    let mut compressor = match compression.dictionary.or(trained.as_ref()) {
        Some(dictionary) => dictionary.compressor(compression.dictionary_level),
        None => zstd::bulk::Compressor::new(compression.level),
    }
    .map_err(failed)?;
    let mut compress = |text: &[u8]| compressor.compress(text).map_err(failed);
    if !requests.is_empty() {
        let header = serde_json::json!({"v": 1, "idempotency": null, "requests": requests});
        let mut text = serde_json::to_vec(&header).expect("a header serializes");
        text.push(b'\n');
        wal::frame(KIND_EVENTS, &compress(&text)?, &mut bytes);
    }
    // One buffer for every block's text, grown once rather than again for each block (each growth copies
    // the text so far into fresh memory).
    let mut text = Vec::with_capacity(BLOCK_BYTES + (64 << 10));
    for (tenant, list) in &lines {
        let moved = moves.entry(tenant.clone()).or_default();
        let mut remaining = &list[..];
        while !remaining.is_empty() {
            text.clear();
            text.extend_from_slice(b"{\"v\":1}\n");
            let mut taken = 0;
            for &(_, record, begin, end) in remaining {
                if taken == BLOCK_EVENTS || (taken > 0 && text.len() + end - begin > BLOCK_BYTES) {
                    break;
                }
                text.extend_from_slice(&texts[record][begin..end]);
                text.push(b'\n');
                taken += 1;
            }
            let position = RecordPosition {
                segment,
                offset: bytes.len() as u64,
                compacted: true,
            };
            // Ids, hashes, seqs, tenant and times apart as bytes when every line allows it (all that this
            // server writes).
            let payload = match columns::split(&text) {
                Some(split) => columns::payload(&split.columns, &compress(&split.stripped)?),
                None => compress(&text)?,
            };
            wal::frame(KIND_EVENTS, &payload, &mut bytes);
            for (line, &(seq, ..)) in remaining[..taken].iter().enumerate() {
                moved.push((
                    seq,
                    Location {
                        record: position,
                        line: line as u32,
                    },
                ));
            }
            events += taken as u64;
            remaining = &remaining[taken..];
        }
    }
    wal::frame(KIND_SEAL, &events.to_le_bytes(), &mut bytes);
    Ok(Compacted {
        bytes,
        moves,
        events,
        trained,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_keys_are_read_from_the_line_start_or_parsed() {
        let line = br#"{"id":"evt_01ABC","seq":42,"tenant":"t-1","type":"x"}"#;
        assert_eq!(event_key_prefix(line), Some(("t-1", 42)));
        assert_eq!(event_key(line).unwrap(), ("t-1".to_string(), 42));
        // Another field order still works, through the parser.
        let other = br#"{"tenant":"t-2","type":"x","seq":7,"id":"evt_1"}"#;
        assert_eq!(event_key_prefix(other), None);
        assert_eq!(event_key(other).unwrap(), ("t-2".to_string(), 7));
        assert!(event_key(br#"{"id":"evt_1","seq":"#).is_err());
    }

    /// The WAL segment a `compaction` fuzz seed stands for (segment 1, the seed's frames after the header),
    /// and those frames. A seed is a flag byte (not needed here), the WAL part's length (u16 LE), the WAL part.
    fn segment_of_seed(seed: &[u8]) -> (Vec<u8>, &[u8]) {
        let length = u16::from_le_bytes([seed[1], seed[2]]) as usize;
        let frames = &seed[3..3 + length];
        let mut segment = wal::MAGIC.to_vec();
        segment.extend_from_slice(&wal::FORMAT_VERSION.to_le_bytes());
        segment.extend_from_slice(&1u32.to_le_bytes());
        segment.extend_from_slice(frames);
        (segment, frames)
    }

    #[test]
    fn a_segment_is_rebuilt_per_tenant_in_seq_order() {
        // The fuzzer's seed: two records mixing tenants a, b and c (one line in another field order).
        let (segment, _) = segment_of_seed(include_bytes!("../../../fuzz/seeds/compaction/built"));
        let built = build(1, Path::new("00000001.wal"), &segment, 1, |_| true).unwrap();
        assert_eq!(built.events, 4);
        assert_eq!(incomplete(&built.bytes, 1), None);
        let seqs: Vec<(&str, Vec<u64>)> = built
            .moves
            .iter()
            .map(|(tenant, moves)| (tenant.as_str(), moves.iter().map(|m| m.0).collect()))
            .collect();
        assert_eq!(seqs, [("a", vec![1, 2]), ("b", vec![1]), ("c", vec![1])]);
        // Tenant a's two events share one block, in seq order.
        let a = &built.moves["a"];
        assert_eq!(a[0].1.record, a[1].1.record);
        assert_eq!((a[0].1.line, a[1].1.line), (0, 1));
        // A seq that skips is corruption, not a silent gap.
        let mut skipping = segment[..wal::SEGMENT_HEADER_BYTES as usize].to_vec();
        let text = b"{\"v\":1}\n{\"id\":\"evt_1\",\"seq\":1,\"tenant\":\"a\"}\n{\"id\":\"evt_2\",\"seq\":3,\"tenant\":\"a\"}\n";
        wal::frame(
            KIND_EVENTS,
            &zstd::bulk::compress(text, 1).unwrap(),
            &mut skipping,
        );
        let error = build(1, Path::new("00000001.wal"), &skipping, 1, |_| true)
            .err()
            .expect("a gap is refused");
        assert!(error.to_string().contains("seq 3 follows seq 1"), "{error}");
    }

    #[test]
    fn stored_lines_are_compacted_with_their_columns_apart_and_read_back() {
        // The fuzzer's seed of lines as the server stores them: one record of two events of tenant acme.
        let (segment, frames) =
            segment_of_seed(include_bytes!("../../../fuzz/seeds/compaction/columns"));
        // The seed's one frame: a 9-byte frame header, then the record.
        let record = &frames[9..];
        let built = build(1, Path::new("00000001.wal"), &segment, 1, |_| true).unwrap();
        assert_eq!(built.events, 2);
        let block = wal::frames(&built.bytes)
            .next()
            .expect("a block")
            .expect("a sound frame");
        assert!(block.payload.starts_with(columns::MAGIC));
        let text =
            codec::into_text(block.payload.to_vec(), &codec::Dictionaries::default()).unwrap();
        // The header line is the block's own; the event lines come back byte for byte.
        let lines = |text: &[u8]| {
            text.split(|&b| b == b'\n')
                .skip(1)
                .map(<[u8]>::to_vec)
                .collect::<Vec<_>>()
        };
        assert_eq!(lines(&text), lines(record));
    }

    #[test]
    fn a_block_file_is_complete_only_with_its_seal_last() {
        let mut bytes = header(7);
        assert_eq!(incomplete(&bytes, 7).as_deref(), Some("no seal"));
        wal::frame(KIND_EVENTS, b"payload", &mut bytes);
        assert_eq!(incomplete(&bytes, 7).as_deref(), Some("no seal"));
        wal::frame(KIND_SEAL, &1u64.to_le_bytes(), &mut bytes);
        assert_eq!(incomplete(&bytes, 7), None);
        assert!(incomplete(&bytes, 8).is_some(), "another segment's header");
        for cut in wal::SEGMENT_HEADER_BYTES as usize..bytes.len() {
            assert!(incomplete(&bytes[..cut], 7).is_some(), "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        assert!(incomplete(&flipped, 7).is_some());
    }
}
