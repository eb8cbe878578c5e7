//! Compression of records and blocks.
//!
//! - WAL records are stored raw: the payload is the record's text, which starts with `{` (its JSON header
//!   line). The compactor rewrites them as zstd blocks soon after, so compressing them cost CPU on the write
//!   path (LZ4 was ~4% of ingest's samples, and decompressing them again in the compactor ~2%) to save disk
//!   only in the segments not compacted yet.
//! - Logs written before hold LZ4 records ([`compress_fast`], still read and kept for tests): `LZ4B`, the
//!   decompressed size (u32 LE), then one LZ4 block.
//! - Block files are zstd ([`compress`]), with reused contexts. Creating a context allocates and clears its
//!   tables, which costs more than compressing one block; the contexts made once are kept in pools and taken by
//!   whichever thread needs one. Once a store has compacted a segment of enough events, its blocks are
//!   compressed with a dictionary trained on that segment's events ([`train`], kept in the store's
//!   [`Dictionaries`]): most of a small block is what every event repeats (keys, types, user agents), which
//!   the dictionary holds once. A frame names its dictionary by id; frames without one read as before.
//!
//! - A block whose events' server-written members (id, seq, tenant, times, hash) are kept apart as bytes
//!   ([`columns`]) starts `LBC2` (`LBC1` when only its ids and hashes are, as blocks written before); its text,
//!   without them, is one zstd frame after the columns.
//!
//! [`text_of`] reads the first three and [`into_text`] all four: a zstd frame starts with its own magic number
//! (`28 B5 2F FD`), never `LZ4B`, `LBC1`, `LBC2` or `{`. Logs written before records were LZ4 hold zstd records, which are read as before.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, RwLock};

use zstd::bulk::{Compressor, Decompressor};

use crate::columns;

/// Largest decompressed record or block accepted (records are bounded by the request body limit, blocks by
/// the compactor's block size; this only guards the allocation against a damaged size field).
const MAX_DECOMPRESSED: usize = 1 << 30;

static COMPRESSORS: Mutex<Vec<(i32, Compressor<'static>)>> = Mutex::new(Vec::new());
static DECOMPRESSORS: Mutex<Vec<((), Decompressor<'static>)>> = Mutex::new(Vec::new());

fn lock<T>(pool: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while the pool was held cannot leave a context half-used: contexts are reset on each use.
    pool.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

const LZ4_MAGIC: &[u8; 4] = b"LZ4B";
const LZ4_HEADER: usize = LZ4_MAGIC.len() + 4;

/// Compresses `data` with LZ4 (see the module's documentation for the layout).
pub fn compress_fast(data: &[u8]) -> io::Result<Vec<u8>> {
    let size = u32::try_from(data.len())
        .ok()
        .filter(|&size| size as usize <= MAX_DECOMPRESSED)
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "record too large to compress")
        })?;
    let mut out = vec![0; LZ4_HEADER + lz4_flex::block::get_maximum_output_size(data.len())];
    out[..LZ4_MAGIC.len()].copy_from_slice(LZ4_MAGIC);
    out[LZ4_MAGIC.len()..LZ4_HEADER].copy_from_slice(&size.to_le_bytes());
    let written = lz4_flex::block::compress_into(data, &mut out[LZ4_HEADER..])
        .map_err(|e| io::Error::other(e.to_string()))?;
    out.truncate(LZ4_HEADER + written);
    Ok(out)
}

/// Compresses `data` into one zstd frame that records its size.
pub fn compress(data: &[u8], level: i32) -> io::Result<Vec<u8>> {
    pooled(
        &COMPRESSORS,
        level,
        || Compressor::new(level),
        |compressor| compressor.compress(data),
    )
}

/// Runs `work` on a context of `pool` made for `key` (taken from the pool, or made by `make`), then puts the
/// context back for the next caller.
fn pooled<K: PartialEq + Copy, T, R>(
    pool: &Mutex<Vec<(K, T)>>,
    key: K,
    make: impl FnOnce() -> io::Result<T>,
    work: impl FnOnce(&mut T) -> io::Result<R>,
) -> io::Result<R> {
    let taken = {
        let mut pool = lock(pool);
        let found = pool.iter().position(|(pooled, _)| *pooled == key);
        found.map(|position| pool.swap_remove(position).1)
    };
    let mut context = match taken {
        Some(context) => context,
        None => make()?,
    };
    let result = work(&mut context);
    lock(pool).push((key, context));
    result
}

/// A dictionary's size; larger ones gained nothing on the demo events (16 KiB: 140.7 → 128.7 bytes per event
/// at level 3 on three block files, 64 KiB: 127.6).
pub const DICTIONARY_BYTES: usize = 32 << 10;

/// Trains a dictionary on sample texts (event lines), or `None` when zstd finds too little to learn from.
pub fn train(samples: &[&[u8]]) -> Option<Dictionary> {
    let bytes = zstd::dict::from_samples(samples, DICTIONARY_BYTES).ok()?;
    Dictionary::new(bytes).ok()
}

/// A zstd dictionary and its id (which the frames compressed with it carry).
#[derive(Clone)]
pub struct Dictionary {
    pub id: u32,
    pub bytes: Arc<[u8]>,
}

impl Dictionary {
    /// Checks the bytes are a zstd dictionary with an id.
    pub fn new(bytes: Vec<u8>) -> io::Result<Dictionary> {
        let id = zstd::zstd_safe::get_dict_id(&bytes).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "not a zstd dictionary with an id",
            )
        })?;
        Ok(Dictionary {
            id: id.get(),
            bytes: bytes.into(),
        })
    }

    /// A compression context loaded with the dictionary, at `level`.
    pub fn compressor(&self, level: i32) -> io::Result<Compressor<'static>> {
        Compressor::with_dictionary(level, &self.bytes)
    }
}

/// The dictionaries of a store's block files, by id, with pooled decompression contexts loaded with each
/// (loading one costs about as much as decompressing a block).
#[derive(Default)]
pub struct Dictionaries {
    known: RwLock<HashMap<u32, Dictionary>>,
    pool: Mutex<Vec<(u32, Decompressor<'static>)>>,
}

impl Dictionaries {
    pub fn add(&self, dictionary: Dictionary) {
        self.known
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(dictionary.id, dictionary);
    }

    /// The dictionary with id `id`.
    fn get(&self, id: u32) -> Option<Dictionary> {
        self.known
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&id)
            .cloned()
    }

    /// Decompresses one zstd frame compressed with dictionary `id`.
    fn decompress(&self, id: u32, data: &[u8]) -> io::Result<Vec<u8>> {
        let make = || {
            let dictionary = self.get(id).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("compressed with dictionary {id:08x}, which the store does not have"),
                )
            })?;
            Decompressor::with_dictionary(&dictionary.bytes)
        };
        pooled(&self.pool, id, make, |decompressor| {
            decompressor.decompress(data, MAX_DECOMPRESSED)
        })
    }
}

/// Whether a payload is a record's text as it is (it starts with its JSON header line).
fn is_raw(data: &[u8]) -> bool {
    data.first() == Some(&b'{')
}

/// The text of a payload: borrowed when it is raw, else decompressed.
pub fn text_of(data: &[u8]) -> io::Result<Cow<'_, [u8]>> {
    if is_raw(data) {
        Ok(Cow::Borrowed(data))
    } else {
        decompress(data).map(Cow::Owned)
    }
}

/// The text of a payload read into its own buffer: the buffer itself when it is raw, else decompressed
/// (with its dictionary, from `dictionaries`, when its frame names one).
pub fn into_text(data: Vec<u8>, dictionaries: &Dictionaries) -> io::Result<Vec<u8>> {
    if is_raw(&data) {
        return Ok(data);
    }
    if columns::has_columns(&data) {
        return columns::join(&data, |frame| decompress_frame(frame, dictionaries));
    }
    decompress_frame(&data, dictionaries)
}

/// Decompresses an LZ4 payload or a zstd frame, with its dictionary when it names one.
fn decompress_frame(data: &[u8], dictionaries: &Dictionaries) -> io::Result<Vec<u8>> {
    match zstd::zstd_safe::get_dict_id_from_frame(data) {
        Some(id) if !data.starts_with(LZ4_MAGIC) => dictionaries.decompress(id.get(), data),
        _ => decompress(data),
    }
}

/// Decompresses an LZ4 payload, or one or more zstd frames (for a payload that may be raw, [`text_of`] or
/// [`into_text`]).
pub fn decompress(data: &[u8]) -> io::Result<Vec<u8>> {
    if let Some(rest) = data.strip_prefix(LZ4_MAGIC) {
        let invalid = |reason: String| io::Error::new(io::ErrorKind::InvalidData, reason);
        let (size, block) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| invalid("LZ4 payload without its size".into()))?;
        let size = u32::from_le_bytes(*size) as usize;
        if size > MAX_DECOMPRESSED {
            return Err(invalid(format!("LZ4 payload claims {size} bytes")));
        }
        let text = lz4_flex::block::decompress(block, size).map_err(|e| invalid(e.to_string()))?;
        if text.len() != size {
            return Err(invalid(format!(
                "LZ4 payload of {} bytes where {size} were recorded",
                text.len()
            )));
        }
        return Ok(text);
    }
    pooled(&DECOMPRESSORS, (), Decompressor::new, |decompressor| {
        match Decompressor::upper_bound(data) {
            Some(_) => decompressor.decompress(data, MAX_DECOMPRESSED),
            // A frame that does not record its size (none of ours): the streaming decoder.
            None => zstd::decode_all(data),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_at_each_level_and_reads_streamed_frames() {
        let text = b"{\"type\":\"bot.created\"}\n".repeat(1000);
        for level in [1, 3, 9, 1] {
            let compressed = compress(&text, level).unwrap();
            assert!(compressed.len() < text.len() / 10);
            assert_eq!(decompress(&compressed).unwrap(), text);
        }
        // Two frames, the second without its size (as a streaming encoder writes it).
        let mut frames = compress(b"first\n", 3).unwrap();
        let mut encoder = zstd::Encoder::new(Vec::new(), 3).unwrap();
        io::Write::write_all(&mut encoder, b"second\n").unwrap();
        frames.extend(encoder.finish().unwrap());
        assert_eq!(decompress(&frames).unwrap(), b"first\nsecond\n");
        assert!(decompress(b"not zstd").is_err());
    }

    #[test]
    fn lz4_round_trips_and_damage_is_an_error() {
        let text = b"{\"type\":\"bot.created\",\"n\":1}\n".repeat(1000);
        let compressed = compress_fast(&text).unwrap();
        assert!(compressed.starts_with(b"LZ4B"));
        assert!(compressed.len() < text.len() / 4);
        assert_eq!(decompress(&compressed).unwrap(), text);
        assert_eq!(decompress(&compress_fast(b"").unwrap()).unwrap(), b"");
        // A wrong size, a cut block, a size beyond the limit.
        let mut wrong_size = compressed.clone();
        wrong_size[4] ^= 1;
        assert!(decompress(&wrong_size).is_err());
        assert!(decompress(&compressed[..compressed.len() / 2]).is_err());
        let mut huge = compressed.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decompress(&huge).is_err());
        assert!(decompress(b"LZ4B").is_err());
    }

    #[test]
    fn frames_compressed_with_a_dictionary_need_it() {
        let lines: Vec<Vec<u8>> = (0..2000)
            .map(|i| {
                format!(
                    "{{\"type\":\"bot.updated\",\"actor\":{{\"id\":\"user_{}\"}},\"n\":{i}}}",
                    i % 37
                )
                .into_bytes()
            })
            .collect();
        let samples: Vec<&[u8]> = lines.iter().map(|line| &line[..]).collect();
        let dictionary = train(&samples).expect("enough samples");
        let text = lines[..20].concat();
        let compressed = dictionary.compressor(3).unwrap().compress(&text).unwrap();
        let plain = compress(&text, 3).unwrap();
        assert!(
            compressed.len() < plain.len(),
            "{} {}",
            compressed.len(),
            plain.len()
        );
        let dictionaries = Dictionaries::default();
        let missing = into_text(compressed.clone(), &dictionaries).unwrap_err();
        assert!(missing.to_string().contains("dictionary"), "{missing}");
        dictionaries.add(dictionary);
        assert_eq!(into_text(compressed, &dictionaries).unwrap(), text);
        assert_eq!(into_text(plain, &dictionaries).unwrap(), text);
        assert!(train(&samples[..3]).is_none(), "too little to learn from");
    }

    #[test]
    fn raw_text_is_read_as_it_is() {
        let text = b"{\"v\":1}\n{\"type\":\"bot.created\"}\n".to_vec();
        assert!(
            matches!(text_of(&text).unwrap(), Cow::Borrowed(borrowed) if borrowed == &text[..])
        );
        let none = Dictionaries::default();
        assert_eq!(into_text(text.clone(), &none).unwrap(), text);
        // The older forms are still told apart from it.
        assert_eq!(
            into_text(compress_fast(&text).unwrap(), &none).unwrap(),
            text
        );
        assert_eq!(text_of(&compress(&text, 3).unwrap()).unwrap(), &text[..]);
    }
}
