//! Any cursor text decodes or is refused without panicking; so does any payload sealed with the secret (the
//! MAC is then valid, so the payload parser itself is exercised).
#![no_main]

use libfuzzer_sys::fuzz_target;
use logbook_core::cursor::Cursor;

const SECRET: &[u8] = b"fuzzing-secret-fuzzing-secret-32";

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Cursor::decode(text, SECRET);
    }
    let sealed = logbook_core::signed::seal(SECRET, data);
    if let Ok(cursor) = Cursor::decode(&sealed, SECRET) {
        assert_eq!(
            Cursor::decode(&cursor.encode(SECRET), SECRET).ok(),
            Some(cursor)
        );
    }
});
