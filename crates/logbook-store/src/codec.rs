//! zstd with reused contexts. Creating a context allocates and clears its tables, which costs more than
//! compressing one record or decompressing one block; the contexts made once are kept in pools and taken
//! by whichever thread needs one.

use std::io;
use std::sync::Mutex;

use zstd::bulk::{Compressor, Decompressor};

/// Largest decompressed record or block accepted (records are bounded by the request body limit, blocks by
/// the compactor's block size; this only guards the allocation against a damaged size field).
const MAX_DECOMPRESSED: usize = 1 << 30;

static COMPRESSORS: Mutex<Vec<(i32, Compressor<'static>)>> = Mutex::new(Vec::new());
static DECOMPRESSORS: Mutex<Vec<Decompressor<'static>>> = Mutex::new(Vec::new());

fn lock<T>(pool: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while the pool was held cannot leave a context half-used: contexts are reset on each use.
    pool.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Compresses `data` into one zstd frame that records its size.
pub fn compress(data: &[u8], level: i32) -> io::Result<Vec<u8>> {
    let taken = {
        let mut pool = lock(&COMPRESSORS);
        let found = pool.iter().position(|(pooled, _)| *pooled == level);
        found.map(|position| pool.swap_remove(position))
    };
    let (level, mut compressor) = match taken {
        Some(pooled) => pooled,
        None => (level, Compressor::new(level)?),
    };
    let compressed = compressor.compress(data);
    lock(&COMPRESSORS).push((level, compressor));
    compressed
}

/// Decompresses one or more zstd frames.
pub fn decompress(data: &[u8]) -> io::Result<Vec<u8>> {
    let taken = lock(&DECOMPRESSORS).pop();
    let mut decompressor = match taken {
        Some(decompressor) => decompressor,
        None => Decompressor::new()?,
    };
    let text = match Decompressor::upper_bound(data) {
        Some(_) => decompressor.decompress(data, MAX_DECOMPRESSED),
        // A frame that does not record its size (none of ours): the streaming decoder.
        None => zstd::decode_all(data),
    };
    lock(&DECOMPRESSORS).push(decompressor);
    text
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
}
