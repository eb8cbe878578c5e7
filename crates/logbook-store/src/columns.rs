//! Event ids and hashes of a block kept apart from its text, as bytes.
//!
//! Every stored event line starts with its id and ends with its hash, both chosen by the server:
//! `{"id":"evt_<ULID, 26 characters>",...,"hash":"<SHA-256, 64 hex digits>"}`. Neither repeats anything, so
//! zstd can only store their characters: ~39 bytes per event for the hash, ~18 for the id, a third of a
//! compressed block (BENCHMARKS.md). As bytes they take 32 (the hash) and 10 (the id's random part) plus a
//! varint for its time part, which is the previous event's time plus a small step.
//!
//! A block payload of this form (block files only; WAL records and older blocks are read as before):
//!
//! ```text
//! "LBC1" | n u32 LE | n hashes (32 bytes each) | n random parts (10 bytes each, big-endian)
//!        | n id times (zigzag LEB128 varints, each the difference from the one before, the first from 0)
//!        | one zstd frame: the block's text with each event line's id and hash taken out
//! ```
//!
//! An event line `{"id":"evt_U",M,"hash":"H"}` is kept as `{M}`. The split is taken only when every event line
//! of the block has exactly that form and its id and hash read back as the same characters (upper-case ULID,
//! lower-case hex); otherwise the block is stored whole, as before. Joining puts the same bytes back.

use crate::piece::{put_varint, unzigzag, zigzag, Reader};
use std::io;

/// The first bytes of a payload with columns (a zstd frame starts `28 B5 2F FD`, a raw record `{`, LZ4
/// `LZ4B`).
pub const MAGIC: &[u8; 4] = b"LBC1";

const ID_PREFIX: &[u8] = b"{\"id\":\"evt_";
const ULID_CHARS: usize = 26;
const ID_END: &[u8] = b"\",";
const HASH_PREFIX: &[u8] = b",\"hash\":\"";
const HASH_HEX: usize = 64;
const HASH_END: &[u8] = b"\"}";
const HEAD: usize = ID_PREFIX.len() + ULID_CHARS + ID_END.len();
const TAIL: usize = HASH_PREFIX.len() + HASH_HEX + HASH_END.len();
const HASH_BYTES: usize = 32;
const RANDOM_BYTES: usize = 10;
/// Bytes an event line gains back when joined: its id and hash members less the `{` and `}` kept.
const RESTORED: usize = HEAD + TAIL - 2;

/// A block's text without its events' ids and hashes, and those as columns (the payload's part after the
/// magic number and before the frame).
pub struct Split {
    pub stripped: Vec<u8>,
    pub columns: Vec<u8>,
}

/// Splits a block's text (a header line, then one line per event, each ending in `\n`), or `None` when one
/// of its event lines is not of the form this module describes.
pub fn split(text: &[u8]) -> Option<Split> {
    let header_end = memchr::memchr(b'\n', text)? + 1;
    let body = &text[header_end..];
    if !body.is_empty() && !body.ends_with(b"\n") {
        return None;
    }
    let count = memchr::memchr_iter(b'\n', body).count();
    let mut stripped = Vec::with_capacity(text.len().saturating_sub(count * RESTORED));
    stripped.extend_from_slice(&text[..header_end]);
    let mut hashes = Vec::with_capacity(count * HASH_BYTES);
    let mut randoms = Vec::with_capacity(count * RANDOM_BYTES);
    let mut times = Vec::with_capacity(count * 2);
    let mut previous = 0u64;
    for line in lines(body) {
        let (id, middle, hash) = parts(line)?;
        hashes.extend_from_slice(&hash);
        randoms.extend_from_slice(&id.to_be_bytes()[16 - RANDOM_BYTES..]);
        let time = (id >> (8 * RANDOM_BYTES)) as u64;
        put_varint(&mut times, zigzag(time.wrapping_sub(previous) as i64));
        previous = time;
        stripped.push(b'{');
        stripped.extend_from_slice(middle);
        stripped.extend_from_slice(b"}\n");
    }
    let count = u32::try_from(count).ok()?;
    let mut columns = Vec::with_capacity(4 + hashes.len() + randoms.len() + times.len());
    columns.extend_from_slice(&count.to_le_bytes());
    columns.extend_from_slice(&hashes);
    columns.extend_from_slice(&randoms);
    columns.extend_from_slice(&times);
    Some(Split { stripped, columns })
}

/// One event line (without its line end) as [`split`] keeps it: without its id and hash, or as it is when it
/// is not of that form.
pub fn strip_line(line: &[u8]) -> Vec<u8> {
    match parts(line) {
        Some((_, middle, _)) => [b"{", middle, b"}"].concat(),
        None => line.to_vec(),
    }
}

/// An event line's id, the members between its id and its hash, and its hash.
fn parts(line: &[u8]) -> Option<(u128, &[u8], [u8; HASH_BYTES])> {
    if line.len() < HEAD + TAIL
        || !line.starts_with(ID_PREFIX)
        || &line[HEAD - ID_END.len()..HEAD] != ID_END
    {
        return None;
    }
    let tail = &line[line.len() - TAIL..];
    if !tail.starts_with(HASH_PREFIX) || !tail.ends_with(HASH_END) {
        return None;
    }
    let id = read_ulid(&line[ID_PREFIX.len()..HEAD - ID_END.len()])?;
    let hash = read_hash(&tail[HASH_PREFIX.len()..HASH_PREFIX.len() + HASH_HEX])?;
    Some((id, &line[HEAD..line.len() - TAIL], hash))
}

/// The payload of a split block: the magic number, its columns, then `frame` (its stripped text compressed).
pub fn payload(columns: &[u8], frame: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(MAGIC.len() + columns.len() + frame.len());
    payload.extend_from_slice(MAGIC);
    payload.extend_from_slice(columns);
    payload.extend_from_slice(frame);
    payload
}

/// The text of a payload that starts with [`MAGIC`]: its frame decompressed by `decompress`, with each event
/// line's id and hash put back. A payload that does not hold together is an `InvalidData` error.
pub fn join(
    payload: &[u8],
    decompress: impl FnOnce(&[u8]) -> io::Result<Vec<u8>>,
) -> io::Result<Vec<u8>> {
    let invalid = |reason: &str| io::Error::new(io::ErrorKind::InvalidData, reason.to_string());
    let rest = payload
        .strip_prefix(MAGIC)
        .ok_or_else(|| invalid("not a block with columns"))?;
    let mut reader = Reader::new(rest);
    let count = u32::from_le_bytes(reader.take(4)?.try_into().expect("4 bytes")) as usize;
    let hashes = reader.take(count * HASH_BYTES)?;
    let randoms = reader.take(count * RANDOM_BYTES)?;
    let mut times = Vec::with_capacity(count);
    let mut time = 0u64;
    for _ in 0..count {
        time = time.wrapping_add(unzigzag(reader.varint()?) as u64);
        if time >> 48 != 0 {
            return Err(invalid("id time beyond 48 bits"));
        }
        times.push(time);
    }
    let stripped = decompress(reader.rest())?;
    let header_end = memchr::memchr(b'\n', &stripped)
        .map(|end| end + 1)
        .ok_or_else(|| invalid("block text without its header line"))?;
    let body = &stripped[header_end..];
    if !body.is_empty() && !body.ends_with(b"\n") {
        return Err(invalid("block text does not end with a line end"));
    }
    let mut text = Vec::with_capacity(stripped.len() + count * RESTORED);
    text.extend_from_slice(&stripped[..header_end]);
    let mut lines = lines(body);
    let mut ulid = [0u8; ULID_CHARS];
    let mut hex = [0u8; HASH_HEX];
    let ids_and_hashes = times
        .iter()
        .zip(randoms.chunks_exact(RANDOM_BYTES))
        .zip(hashes.chunks_exact(HASH_BYTES));
    for ((&time, random), hash) in ids_and_hashes {
        let line = lines
            .next()
            .ok_or_else(|| invalid("fewer event lines than ids"))?;
        let middle = line
            .strip_prefix(b"{")
            .and_then(|line| line.strip_suffix(b"}"))
            .ok_or_else(|| invalid("an event line without its braces"))?;
        let mut id = [0u8; 16];
        id[..6].copy_from_slice(&time.to_be_bytes()[2..]);
        id[6..].copy_from_slice(random);
        ulid::Ulid::from_bytes(id).array_to_str(&mut ulid);
        hex::encode_to_slice(hash, &mut hex).expect("64 hex digits for 32 bytes");
        text.extend_from_slice(ID_PREFIX);
        text.extend_from_slice(&ulid);
        text.extend_from_slice(ID_END);
        text.extend_from_slice(middle);
        text.extend_from_slice(HASH_PREFIX);
        text.extend_from_slice(&hex);
        text.extend_from_slice(HASH_END);
        text.push(b'\n');
    }
    if lines.next().is_some() {
        return Err(invalid("more event lines than ids"));
    }
    Ok(text)
}

/// The lines of `body` (which ends with a line end), without their line ends. `split_inclusive` looked at
/// one byte at a time, which was most of the time of joining (profiled: an export spent 30% of its samples
/// in `join`, nearly all of it there).
fn lines(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    memchr::memchr_iter(b'\n', body).map(move |end| {
        let line = &body[start..end];
        start = end + 1;
        line
    })
}

/// A ULID's 128 bits from its 26 characters, when they are the ones it is written as.
fn read_ulid(text: &[u8]) -> Option<u128> {
    let text = std::str::from_utf8(text).ok()?;
    let ulid = ulid::Ulid::from_string(text).ok()?;
    let mut again = [0u8; ULID_CHARS];
    (ulid.array_to_str(&mut again).as_bytes() == text.as_bytes()).then_some(ulid.0)
}

/// A hash's 32 bytes from its 64 lower-case hex digits (upper case would not read back as the same
/// characters).
fn read_hash(text: &[u8]) -> Option<[u8; HASH_BYTES]> {
    if !text
        .iter()
        .all(|&c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    {
        return None;
    }
    let mut hash = [0u8; HASH_BYTES];
    hex::decode_to_slice(text, &mut hash).ok()?;
    Some(hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn line(id: &str, middle: &str, hash: &str) -> String {
        format!("{{\"id\":\"evt_{id}\",{middle},\"hash\":\"{hash}\"}}\n")
    }

    fn round_trip(text: &[u8]) -> Vec<u8> {
        let split = split(text).expect("splits");
        let payload = payload(&split.columns, &split.stripped);
        join(&payload, |frame| Ok(frame.to_vec())).expect("joins")
    }

    const HASH: &str = "8dde1159159f2311b25095b8f62152aecbf3acb4177a4099bbf6313faf846eb6";

    #[test]
    fn stored_lines_come_back_byte_for_byte() {
        let mut text = b"{\"v\":1}\n".to_vec();
        text.extend_from_slice(
            line(
                "01M98T51A7E6MVTTP2V9N67JXG",
                "\"seq\":1,\"tenant\":\"t\"",
                HASH,
            )
            .as_bytes(),
        );
        // An earlier time than the line before (ids are not ordered within a tenant's seq order).
        text.extend_from_slice(
            line(
                "01M98T519YRWH1XDFVKBTSQCZS",
                "\"seq\":2,\"metadata\":{\"a\":\"}\\n{\"}",
                HASH,
            )
            .as_bytes(),
        );
        let split = split(&text).unwrap();
        assert_eq!(
            split.stripped,
            b"{\"v\":1}\n{\"seq\":1,\"tenant\":\"t\"}\n{\"seq\":2,\"metadata\":{\"a\":\"}\\n{\"}}\n"
        );
        assert_eq!(round_trip(&text), text);
        // A block of no events, and a header alone.
        assert_eq!(round_trip(b"{\"v\":1}\n"), b"{\"v\":1}\n");
    }

    #[test]
    fn lines_of_another_form_keep_the_block_whole() {
        let good = line("01M98T51A7E6MVTTP2V9N67JXG", "\"seq\":1", HASH);
        let others = [
            // Lower-case ULID, upper-case hex, a hash one digit short, another first member, no line end.
            line("01m98t51a7e6mvttp2v9n67jxg", "\"seq\":1", HASH),
            line(
                "01M98T51A7E6MVTTP2V9N67JXG",
                "\"seq\":1",
                &HASH.to_uppercase(),
            ),
            line("01M98T51A7E6MVTTP2V9N67JXG", "\"seq\":1", &HASH[1..]),
            format!(
                "{{\"seq\":1,\"id\":\"evt_01M98T51A7E6MVTTP2V9N67JXG\",\"hash\":\"{HASH}\"}}\n"
            ),
            // A ULID beyond 128 bits (its first character above 7).
            line("81M98T51A7E6MVTTP2V9N67JXG", "\"seq\":1", HASH),
        ];
        for other in others {
            let text = format!("{{\"v\":1}}\n{good}{other}");
            assert!(split(text.as_bytes()).is_none(), "{other}");
        }
        let cut = format!("{{\"v\":1}}\n{}", good.trim_end());
        assert!(split(cut.as_bytes()).is_none());
    }

    #[test]
    fn damaged_payloads_are_errors() {
        let text = format!(
            "{{\"v\":1}}\n{}",
            line("01M98T51A7E6MVTTP2V9N67JXG", "\"seq\":1", HASH)
        );
        let split = split(text.as_bytes()).unwrap();
        let whole = payload(&split.columns, &split.stripped);
        for cut in 0..whole.len() {
            let _ = join(&whole[..cut], |frame| Ok(frame.to_vec()));
        }
        // One event line more or fewer than ids.
        let two = format!(
            "{}{{\"seq\":2}}\n",
            String::from_utf8_lossy(&split.stripped)
        );
        assert!(join(&payload(&split.columns, two.as_bytes()), |f| Ok(f.to_vec())).is_err());
        assert!(join(&payload(&split.columns, b"{\"v\":1}\n"), |f| Ok(f.to_vec())).is_err());
        // A count beyond the payload.
        let mut huge = whole.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(join(&huge, |f| Ok(f.to_vec())).is_err());
    }

    proptest! {
        #[test]
        fn any_ids_hashes_and_members_round_trip(
            events in proptest::collection::vec(
                (any::<u128>(), any::<[u8; 32]>(), "[ -~]{0,40}"), 0..20),
        ) {
            let mut text = b"{\"v\":1}\n".to_vec();
            for (id, hash, middle) in &events {
                let id = ulid::Ulid(*id).to_string();
                text.extend_from_slice(line(&id, middle, &hex::encode(hash)).as_bytes());
            }
            prop_assert_eq!(round_trip(&text), text);
        }

        #[test]
        fn any_payload_joins_or_fails_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut payload = MAGIC.to_vec();
            payload.extend_from_slice(&bytes);
            let _ = join(&payload, |frame| Ok(frame.to_vec()));
        }
    }
}
