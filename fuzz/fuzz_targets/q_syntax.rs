//! Any `q=` text: the parser never panics and never recurses without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;

const NOW: i64 = 1_790_000_000_000;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = logbook_core::filter::q::parse(text, NOW);
    }
});
