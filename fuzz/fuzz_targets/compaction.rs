//! Any bytes as a WAL segment and as the block file compacted from it: building a block file returns one or a
//! corruption error, settling the data directory and reading the block files it keeps never panic, and a
//! block file built from a segment that recovers reads back with the same events.
#![no_main]

use libfuzzer_sys::fuzz_target;
use logbook_store::{codec, compact};
use logbook_store::io::{FileSystem, SimulatedFs};
use logbook_store::wal;
use std::path::Path;

fn segment_header(magic: &[u8; 8], segment: u32) -> Vec<u8> {
    let mut bytes = magic.to_vec();
    bytes.extend_from_slice(&wal::FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&segment.to_le_bytes());
    bytes
}

fuzz_target!(|data: &[u8]| {
    // Input: a flag byte (bit 0: the block file comes from the input rather than from compaction), the WAL
    // part's length (u16 LE), the WAL part (records after the segment header), then the block file's records.
    let Some((&flag, rest)) = data.split_first() else {
        return;
    };
    let Some((length, rest)) = rest.split_first_chunk::<2>() else {
        return;
    };
    let split = (u16::from_le_bytes(*length) as usize).min(rest.len());
    let (wal_part, block_bytes) = rest.split_at(split);
    let block_part = (flag & 1 == 1).then_some(block_bytes);
    let fs = SimulatedFs::new();
    let wal_dir = Path::new("/data/wal");
    let blocks_dir = Path::new("/data/blocks");
    let mut wal_bytes = segment_header(wal::MAGIC, 1);
    wal_bytes.extend_from_slice(wal_part);
    let wal_path = wal::segment_path(wal_dir, 1);
    fs.create_new(&wal_path)
        .unwrap()
        .write_all_at(&wal_bytes, 0)
        .unwrap();
    // A second, later segment, so that segment 1 is not the one being written.
    fs.create_new(&wal::segment_path(wal_dir, 2))
        .unwrap()
        .write_all_at(&segment_header(wal::MAGIC, 2), 0)
        .unwrap();

    let built = compact::build(1, &wal_path, &wal_bytes, 1, |_| true);
    let block = match block_part {
        Some(part) => {
            let mut bytes = segment_header(compact::BLOCK_MAGIC, 1);
            bytes.extend_from_slice(part);
            Some(bytes)
        }
        None => built.as_ref().ok().map(|built| built.bytes.clone()),
    };
    if let Some(bytes) = &block {
        fs.create_new(&compact::block_path(blocks_dir, 1))
            .unwrap()
            .write_all_at(bytes, 0)
            .unwrap();
    }
    if let Ok(kept) = compact::settle(&fs, blocks_dir, wal_dir) {
        let mut events = 0u64;
        // Read as the store reads blocks: a block with columns (`LBC2`, `LBC1`) is not a zstd frame.
        let dictionaries = codec::Dictionaries::default();
        for segment in kept {
            let _ = compact::read(&fs, blocks_dir, segment, |_, payload| {
                if let Ok(text) = codec::into_text(payload.to_vec(), &dictionaries) {
                    events += text
                        .iter()
                        .filter(|&&b| b == b'\n')
                        .count()
                        .saturating_sub(1) as u64;
                }
                Ok(())
            });
        }
        if block_part.is_none() {
            if let Ok(built) = &built {
                assert_eq!(events, built.events, "a built block file reads back whole");
            }
        }
    }
});
