//! Block payloads with server-written members kept apart (`logbook_store::columns`): any bytes after the
//! `LBC2` or `LBC1` magic number join into a text or an error, never a panic; and any text that splits joins
//! back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use logbook_store::columns;

fuzz_target!(|data: &[u8]| {
    // Input: a flag byte, then either a payload's bytes after a magic number (bit 0 clear; bit 2 chooses
    // `LBC1` over `LBC2`) or a block's text (bit 0 set), whose event lines are made of a form `split` takes
    // when bit 1 is set (with bit 3 set: the full form, seq, tenant, type and times included).
    let Some((&flag, rest)) = data.split_first() else {
        return;
    };
    if flag & 1 == 0 {
        let magic = if flag & 4 == 0 {
            columns::MAGIC
        } else {
            columns::IDS_AND_HASHES
        };
        let mut payload = magic.to_vec();
        payload.extend_from_slice(rest);
        let _ = columns::join(&payload, |frame| Ok(frame.to_vec()));
        return;
    }
    let mut text = b"{\"v\":1}\n".to_vec();
    if flag & 2 == 0 {
        text.extend_from_slice(rest);
    } else {
        // Each chunk of up to 64 bytes becomes the members of one event line, with an id and a hash made
        // from its bytes (a chunk's line ends are dropped: lines cannot hold them); in the full form its
        // first bytes also make the seq, the type and the receipt time.
        for chunk in rest.chunks(64) {
            let value = chunk.iter().fold(0u128, |value, &byte| {
                value.rotate_left(7) ^ u128::from(byte)
            });
            // Times of the ids up to the year 9999 (the full form's created_at).
            let value = value & !(0xffffu128 << 112);
            let id = ulid::Ulid(value).to_string();
            let hash: String = (0..64)
                .map(|i| char::from(b"0123456789abcdef"[((value >> (i % 32)) & 15) as usize]))
                .collect();
            let members: Vec<u8> = chunk.iter().copied().filter(|&b| b != b'\n').collect();
            text.extend_from_slice(format!("{{\"id\":\"evt_{id}\",").as_bytes());
            if flag & 8 != 0 {
                let created = logbook_core::time::format_millis((value >> 80) as i64);
                let received =
                    logbook_core::time::format_millis((value as i64).rem_euclid(1 << 40));
                let kind: String = chunk
                    .iter()
                    .take(8)
                    .map(|&b| char::from(b'a' + b % 26))
                    .collect();
                text.extend_from_slice(
                    format!(
                        "\"seq\":{},\"tenant\":\"t\",\"type\":\"{kind}\",\"created_at\":\"{created}\",\"received_at\":\"{received}\",",
                        value as u64
                    )
                    .as_bytes(),
                );
            }
            text.extend_from_slice(&members);
            text.extend_from_slice(format!(",\"hash\":\"{hash}\"}}\n").as_bytes());
        }
    }
    if let Some(split) = columns::split(&text) {
        if flag & 10 == 10 {
            assert!(
                split.columns.starts_with(columns::MAGIC),
                "lines of the full form were not split in it"
            );
        }
        let payload = columns::payload(&split.columns, &split.stripped);
        let joined =
            columns::join(&payload, |frame| Ok(frame.to_vec())).expect("a split block joins");
        assert_eq!(joined, text);
    } else {
        assert!(flag & 2 == 0, "lines of the split form were not split");
    }
});
