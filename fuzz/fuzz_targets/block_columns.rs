//! Block payloads with ids and hashes kept apart (`logbook_store::columns`): any bytes after the `LBC1` magic
//! number join into a text or an error, never a panic; and any text that splits joins back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use logbook_store::columns;

fuzz_target!(|data: &[u8]| {
    // Input: a flag byte, then either a payload's bytes after the magic number (bit 0 clear) or a block's
    // text (bit 0 set), whose event lines are made of the form `split` takes when the flag's bit 1 is set.
    let Some((&flag, rest)) = data.split_first() else {
        return;
    };
    if flag & 1 == 0 {
        let mut payload = columns::MAGIC.to_vec();
        payload.extend_from_slice(rest);
        let _ = columns::join(&payload, |frame| Ok(frame.to_vec()));
        return;
    }
    let mut text = b"{\"v\":1}\n".to_vec();
    if flag & 2 == 0 {
        text.extend_from_slice(rest);
    } else {
        // Each chunk of up to 64 bytes becomes the members of one event line, with an id and a hash made
        // from its bytes (a chunk's line ends are dropped: lines cannot hold them).
        for chunk in rest.chunks(64) {
            let value = chunk.iter().fold(0u128, |value, &byte| {
                value.rotate_left(7) ^ u128::from(byte)
            });
            let id = ulid::Ulid(value).to_string();
            let hash: String = (0..64)
                .map(|i| char::from(b"0123456789abcdef"[((value >> (i % 32)) & 15) as usize]))
                .collect();
            let members: Vec<u8> = chunk.iter().copied().filter(|&b| b != b'\n').collect();
            text.extend_from_slice(format!("{{\"id\":\"evt_{id}\",").as_bytes());
            text.extend_from_slice(&members);
            text.extend_from_slice(format!(",\"hash\":\"{hash}\"}}\n").as_bytes());
        }
    }
    if let Some(split) = columns::split(&text) {
        let payload = columns::payload(&split.columns, &split.stripped);
        let joined =
            columns::join(&payload, |frame| Ok(frame.to_vec())).expect("a split block joins");
        assert_eq!(joined, text);
    } else {
        assert!(flag & 2 == 0, "lines of the split form were not split");
    }
});
