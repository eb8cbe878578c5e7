//! Any bytes as WAL segments: recovery returns records or a corruption error, never panics, and after a
//! successful recovery a second recovery finds the same records (the repair is stable).
#![no_main]

use libfuzzer_sys::fuzz_target;
use logbook_store::io::{FileSystem, SimulatedFs};
use logbook_store::wal;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let fs = SimulatedFs::new();
    let directory = Path::new("/wal");
    // The input is split into up to three segments at 0xA5 bytes; a valid header is prepended
    // to the later ones half of the time so that records, not only headers, are exercised.
    for (index, part) in data.split(|&b| b == 0xA5).take(3).enumerate() {
        let segment = index as u32 + 1;
        let mut bytes = Vec::new();
        if part.first().is_some_and(|b| b & 1 == 0) {
            bytes.extend_from_slice(wal::MAGIC);
            bytes.extend_from_slice(&wal::FORMAT_VERSION.to_le_bytes());
            bytes.extend_from_slice(&segment.to_le_bytes());
        }
        bytes.extend_from_slice(part);
        let file = fs
            .create_new(&wal::segment_path(directory, segment))
            .unwrap();
        file.write_all_at(&bytes, 0).unwrap();
    }
    let mut first = Vec::new();
    let recovered = wal::recover(&fs, directory, |_, kind, payload| {
        first.push((kind, payload.to_vec()));
        Ok(())
    });
    if recovered.is_ok() {
        let mut second = Vec::new();
        wal::recover(&fs, directory, |_, kind, payload| {
            second.push((kind, payload.to_vec()));
            Ok(())
        })
        .expect("a repaired log recovers again");
        assert_eq!(first, second);
    }
});
