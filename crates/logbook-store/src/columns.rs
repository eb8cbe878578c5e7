//! An event's server-written members of a block kept apart from its text, as bytes.
//!
//! Every stored event line starts with members the server chose and ends with its hash:
//! `{"id":"evt_<ULID>","seq":N,"tenant":"T","type":"X","created_at":"C","received_at":"R",...,"hash":"<64 hex>"}`.
//! Of these, zstd can only store the characters of the id, the hash and the times (and a seq's digits), which
//! repeat nothing: ~39 bytes per event for the hash, ~18 for the id, ~13 for the seq, tenant and times
//! (BENCHMARKS.md). As bytes they take 32 (the hash) and 10 (the id's random part) plus small varints: the id's
//! time part is a step from the event before; `created_at` is that same time (an id's time is its event's
//! `created_at`); `received_at` is a step from the event before; the seqs of a block are consecutive; and a
//! block is one tenant's.
//!
//! A block payload of this form (block files only; WAL records and older blocks are read as before):
//!
//! ```text
//! "LBC2" | n u32 LE | n hashes (32 bytes each) | n random parts (10 bytes each, big-endian)
//!        | n id times (zigzag LEB128 varints, each the difference from the one before, the first from 0)
//!        | n received_at times (zigzag varints, each the difference from the one before, the first from
//!          its own created_at)
//!        | the first seq (varint) | 0, when every seq is the one before plus one; else 1 and n - 1 varints,
//!          each seq's difference from the one before (wrapping)
//!        | the tenant (varint length, bytes)
//!        | one zstd frame: the block's text with each event line's members above taken out
//! ```
//!
//! An event line `{"id":"evt_U","seq":N,"tenant":"T","type":"X","created_at":"C","received_at":"R",M,"hash":"H"}`
//! is kept as `{"type":"X",M}`. The split is taken only when every event line of the block has exactly that
//! form and its parts read back as the same characters (upper-case ULID, lower-case hex, a seq without leading
//! zeros, times as [`logbook_core::time::write_millis`] writes them with `C` the id's time, a tenant and type
//! without backslashes, one tenant). Otherwise a block whose lines start with their id and end with their
//! hash keeps only those two apart, under `LBC1` (the first form, which earlier block files hold):
//!
//! ```text
//! "LBC1" | n u32 LE | n hashes | n random parts | n id times | one zstd frame of lines `{M}`, each line
//!          `{"id":"evt_U",M,"hash":"H"}` without its id and hash
//! ```
//!
//! and any other block is stored whole. Joining puts the same bytes back.

use crate::piece::{put_varint, unzigzag, zigzag, Reader};
use logbook_core::time::{read_millis, write_millis};
use std::io;

/// The first bytes of a payload with the id, hash, seq, tenant and times apart (a zstd frame starts `28 B5 2F
/// FD`, a raw record `{`, LZ4 `LZ4B`).
pub const MAGIC: &[u8; 4] = b"LBC2";
/// The first bytes of a payload with only the ids and hashes apart (block files written before `LBC2`).
pub const IDS_AND_HASHES: &[u8; 4] = b"LBC1";

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
/// The members between the id and the type's value, and between the type's value and the rest.
const SEQ: &[u8] = b"\"seq\":";
const TENANT: &[u8] = b",\"tenant\":\"";
const TYPE: &[u8] = b"\",\"type\":\"";
const CREATED_AT: &[u8] = b"\",\"created_at\":\"";
const RECEIVED_AT: &[u8] = b"\",\"received_at\":\"";
const REST: &[u8] = b"\",";
const TIME_CHARS: usize = 24;
/// What a stripped line of the full form starts with.
const STRIPPED_TYPE: &[u8] = b"{\"type\":\"";

/// Whether a payload is one this module joins.
pub fn has_columns(payload: &[u8]) -> bool {
    payload.starts_with(MAGIC) || payload.starts_with(IDS_AND_HASHES)
}

/// A block's text without its events' server-written members, and those as columns (the payload's part
/// before the frame, magic number included).
pub struct Split {
    pub stripped: Vec<u8>,
    pub columns: Vec<u8>,
}

/// Splits a block's text (a header line, then one line per event, each ending in `\n`) in the full form when
/// every line allows it, else in the `LBC1` form; `None` when one of its event lines allows neither.
pub fn split(text: &[u8]) -> Option<Split> {
    let header_end = memchr::memchr(b'\n', text)? + 1;
    let body = &text[header_end..];
    if !body.is_empty() && !body.ends_with(b"\n") {
        return None;
    }
    split_full(&text[..header_end], body).or_else(|| split_ids(&text[..header_end], body))
}

/// The columns every form starts with: the count, the hashes, the random parts and the id times.
struct IdColumns {
    hashes: Vec<u8>,
    randoms: Vec<u8>,
    times: Vec<u8>,
    previous: u64,
}

impl IdColumns {
    fn new(count: usize) -> Self {
        IdColumns {
            hashes: Vec::with_capacity(count * HASH_BYTES),
            randoms: Vec::with_capacity(count * RANDOM_BYTES),
            times: Vec::with_capacity(count * 2),
            previous: 0,
        }
    }

    /// Adds an id and a hash, and returns the id's time.
    fn push(&mut self, id: u128, hash: &[u8; HASH_BYTES]) -> u64 {
        self.hashes.extend_from_slice(hash);
        self.randoms
            .extend_from_slice(&id.to_be_bytes()[16 - RANDOM_BYTES..]);
        let time = (id >> (8 * RANDOM_BYTES)) as u64;
        put_varint(
            &mut self.times,
            zigzag(time.wrapping_sub(self.previous) as i64),
        );
        self.previous = time;
        time
    }

    fn into_columns(self, magic: &[u8; 4], count: usize, more: usize) -> Option<Vec<u8>> {
        let count = u32::try_from(count).ok()?;
        let mut columns = Vec::with_capacity(
            8 + self.hashes.len() + self.randoms.len() + self.times.len() + more,
        );
        columns.extend_from_slice(magic);
        columns.extend_from_slice(&count.to_le_bytes());
        columns.extend_from_slice(&self.hashes);
        columns.extend_from_slice(&self.randoms);
        columns.extend_from_slice(&self.times);
        Some(columns)
    }
}

/// The `LBC1` form: ids and hashes apart.
fn split_ids(header: &[u8], body: &[u8]) -> Option<Split> {
    let count = memchr::memchr_iter(b'\n', body).count();
    let mut stripped =
        Vec::with_capacity((header.len() + body.len()).saturating_sub(count * RESTORED));
    stripped.extend_from_slice(header);
    let mut ids = IdColumns::new(count);
    for line in lines(body) {
        let (id, middle, hash) = parts(line)?;
        ids.push(id, &hash);
        stripped.push(b'{');
        stripped.extend_from_slice(middle);
        stripped.extend_from_slice(b"}\n");
    }
    let columns = ids.into_columns(IDS_AND_HASHES, count, 0)?;
    Some(Split { stripped, columns })
}

/// The members of an event line of the full form.
struct Members<'a> {
    seq: u64,
    tenant: &'a [u8],
    event_type: &'a [u8],
    created_at: &'a [u8],
    received_at: u64,
    rest: &'a [u8],
}

/// The full form: ids, hashes, seqs, the tenant and both times apart.
fn split_full(header: &[u8], body: &[u8]) -> Option<Split> {
    let count = memchr::memchr_iter(b'\n', body).count();
    let mut stripped = Vec::with_capacity(header.len() + body.len() / 2);
    stripped.extend_from_slice(header);
    let mut ids = IdColumns::new(count);
    let mut received = Vec::with_capacity(count * 2);
    let mut seqs = Vec::new();
    let (mut first_seq, mut previous_seq, mut consecutive) = (0u64, 0u64, true);
    let mut tenant: Option<&[u8]> = None;
    let mut previous_received = 0u64;
    for (index, line) in lines(body).enumerate() {
        let (id, middle, hash) = parts(line)?;
        let members = members(middle)?;
        let time = ids.push(id, &hash);
        if index == 0 {
            first_seq = members.seq;
            previous_received = time;
        } else {
            consecutive &= members.seq == previous_seq.wrapping_add(1);
            put_varint(&mut seqs, members.seq.wrapping_sub(previous_seq));
        }
        previous_seq = members.seq;
        match tenant {
            None => tenant = Some(members.tenant),
            Some(tenant) if tenant == members.tenant => {}
            Some(_) => return None,
        }
        // `created_at` is the id's time, as written (a time reads back only from the text written for it).
        if read_millis(members.created_at) != Some(i64::try_from(time).ok()?) {
            return None;
        }
        put_varint(
            &mut received,
            zigzag(members.received_at.wrapping_sub(previous_received) as i64),
        );
        previous_received = members.received_at;
        stripped.extend_from_slice(STRIPPED_TYPE);
        stripped.extend_from_slice(members.event_type);
        stripped.extend_from_slice(REST);
        stripped.extend_from_slice(members.rest);
        stripped.extend_from_slice(b"}\n");
    }
    let tenant = tenant.unwrap_or_default();
    let mut columns = ids.into_columns(
        MAGIC,
        count,
        received.len() + seqs.len() + tenant.len() + 16,
    )?;
    columns.extend_from_slice(&received);
    put_varint(&mut columns, first_seq);
    if consecutive {
        columns.push(0);
    } else {
        columns.push(1);
        columns.extend_from_slice(&seqs);
    }
    put_varint(&mut columns, tenant.len() as u64);
    columns.extend_from_slice(tenant);
    Some(Split { stripped, columns })
}

/// The members between an event line's id and hash, when they are of the full form.
fn members(middle: &[u8]) -> Option<Members<'_>> {
    let rest = middle.strip_prefix(SEQ)?;
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    let seq_text = &rest[..digits];
    if digits == 0 || (digits > 1 && seq_text[0] == b'0') {
        return None;
    }
    let seq: u64 = std::str::from_utf8(seq_text).ok()?.parse().ok()?;
    let rest = rest[digits..].strip_prefix(TENANT)?;
    let (tenant, rest) = quoted(rest)?;
    let rest = rest.strip_prefix(TYPE)?;
    let (event_type, rest) = quoted(rest)?;
    let rest = rest.strip_prefix(CREATED_AT)?;
    let created_at = rest.get(..TIME_CHARS)?;
    let rest = rest[TIME_CHARS..].strip_prefix(RECEIVED_AT)?;
    let received_at = read_millis(rest.get(..TIME_CHARS)?)?;
    let rest = rest[TIME_CHARS..].strip_prefix(REST)?;
    Some(Members {
        seq,
        tenant,
        event_type,
        created_at,
        received_at: u64::try_from(received_at).ok()?,
        rest,
    })
}

/// A string's characters up to its closing quote, and what follows the quote; `None` when it holds a
/// backslash (its characters are then not all its value's).
fn quoted(text: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = memchr::memchr2(b'"', b'\\', text)?;
    (text[end] == b'"').then(|| (&text[..end], &text[end..]))
}

/// One event line (without its line end) as [`split`] keeps it: without the members it takes apart, or as it
/// is when it is of neither form.
pub fn strip_line(line: &[u8]) -> Vec<u8> {
    let Some((_, middle, _)) = parts(line) else {
        return line.to_vec();
    };
    match members(middle) {
        Some(members) => [STRIPPED_TYPE, members.event_type, REST, members.rest, b"}"].concat(),
        None => [b"{", middle, b"}"].concat(),
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

/// The payload of a split block: its columns (magic number first), then `frame` (its stripped text
/// compressed).
pub fn payload(columns: &[u8], frame: &[u8]) -> Vec<u8> {
    [columns, frame].concat()
}

fn invalid(reason: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason.to_string())
}

/// The text of a payload that starts with [`MAGIC`] or [`IDS_AND_HASHES`]: its frame decompressed by
/// `decompress`, with each event line's members put back. A payload that does not hold together is an
/// `InvalidData` error.
pub fn join(
    payload: &[u8],
    decompress: impl FnOnce(&[u8]) -> io::Result<Vec<u8>>,
) -> io::Result<Vec<u8>> {
    let full = payload.starts_with(MAGIC);
    if !full && !payload.starts_with(IDS_AND_HASHES) {
        return Err(invalid("not a block with columns"));
    }
    let mut reader = Reader::new(&payload[MAGIC.len()..]);
    let count = u32::from_le_bytes(reader.take(4)?.try_into().expect("4 bytes")) as usize;
    let hashes = reader.take(
        count
            .checked_mul(HASH_BYTES)
            .ok_or_else(|| invalid("count"))?,
    )?;
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
    let full = if full {
        Some(FullColumns::read(&mut reader, &times)?)
    } else {
        None
    };
    let stripped = decompress(reader.rest())?;
    let header_end = memchr::memchr(b'\n', &stripped)
        .map(|end| end + 1)
        .ok_or_else(|| invalid("block text without its header line"))?;
    let body = &stripped[header_end..];
    if !body.is_empty() && !body.ends_with(b"\n") {
        return Err(invalid("block text does not end with a line end"));
    }
    let more = full.as_ref().map_or(0, |full| 100 + full.tenant.len());
    let mut text = Vec::with_capacity(stripped.len() + count * (RESTORED + more));
    text.extend_from_slice(&stripped[..header_end]);
    let mut lines = lines(body);
    let mut ulid = [0u8; ULID_CHARS];
    let mut hex = [0u8; HASH_HEX];
    let mut itoa = itoa::Buffer::new();
    let ids_and_hashes = times
        .iter()
        .zip(randoms.chunks_exact(RANDOM_BYTES))
        .zip(hashes.chunks_exact(HASH_BYTES))
        .enumerate();
    for (index, ((&time, random), hash)) in ids_and_hashes {
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
        match &full {
            None => text.extend_from_slice(middle),
            Some(full) => {
                // `"type":"X",M` is kept: the members taken out go around the type's value.
                let typed = line
                    .strip_prefix(STRIPPED_TYPE)
                    .ok_or_else(|| invalid("an event line without its type first"))?;
                let end = memchr::memchr(b'"', typed)
                    .filter(|&end| typed.get(end + 1) == Some(&b','))
                    .ok_or_else(|| invalid("an event line's type without its end"))?;
                let rest = &typed[end + REST.len()..typed.len() - 1];
                let mut created = [0u8; TIME_CHARS];
                let mut received = [0u8; TIME_CHARS];
                if !write_millis(time as i64, &mut created)
                    || !write_millis(full.received[index], &mut received)
                {
                    return Err(invalid("a time beyond the year 9999"));
                }
                text.extend_from_slice(SEQ);
                text.extend_from_slice(itoa.format(full.seqs[index]).as_bytes());
                text.extend_from_slice(TENANT);
                text.extend_from_slice(full.tenant);
                text.extend_from_slice(TYPE);
                text.extend_from_slice(&typed[..end]);
                text.extend_from_slice(CREATED_AT);
                text.extend_from_slice(&created);
                text.extend_from_slice(RECEIVED_AT);
                text.extend_from_slice(&received);
                text.extend_from_slice(REST);
                text.extend_from_slice(rest);
            }
        }
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

/// The columns of the full form after the id times.
struct FullColumns<'a> {
    received: Vec<i64>,
    seqs: Vec<u64>,
    tenant: &'a [u8],
}

impl<'a> FullColumns<'a> {
    fn read(reader: &mut Reader<'a>, times: &[u64]) -> io::Result<Self> {
        let mut received = Vec::with_capacity(times.len());
        let mut previous = times.first().copied().unwrap_or(0);
        for _ in times {
            previous = previous.wrapping_add(unzigzag(reader.varint()?) as u64);
            received
                .push(i64::try_from(previous).map_err(|_| invalid("a received_at beyond i64"))?);
        }
        let mut seq = reader.varint()?;
        let mut seqs = Vec::with_capacity(times.len());
        match reader.take(1)?[0] {
            0 => seqs.extend((0..times.len() as u64).map(|step| seq.wrapping_add(step))),
            1 => {
                if !times.is_empty() {
                    seqs.push(seq);
                    for _ in 1..times.len() {
                        seq = seq.wrapping_add(reader.varint()?);
                        seqs.push(seq);
                    }
                }
            }
            _ => return Err(invalid("a seq column of an unknown form")),
        }
        let length = usize::try_from(reader.varint()?).map_err(|_| invalid("a tenant's length"))?;
        let tenant = reader.take(length)?;
        Ok(FullColumns {
            received,
            seqs,
            tenant,
        })
    }
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
/// characters). One table lookup per digit: the `hex` crate's decoding, after a separate check of the
/// digits, was 1.2% of the server's samples during ingest (the compactor splits every stored line).
fn read_hash(text: &[u8]) -> Option<[u8; HASH_BYTES]> {
    const INVALID: u8 = 0xff;
    const NIBBLES: [u8; 256] = {
        let mut table = [INVALID; 256];
        let mut digit = 0;
        while digit < 10 {
            table[b'0' as usize + digit] = digit as u8;
            digit += 1;
        }
        let mut letter = 0;
        while letter < 6 {
            table[b'a' as usize + letter] = 10 + letter as u8;
            letter += 1;
        }
        table
    };
    if text.len() != 2 * HASH_BYTES {
        return None;
    }
    let mut hash = [0u8; HASH_BYTES];
    let mut invalid = 0u8;
    for (byte, pair) in hash.iter_mut().zip(text.chunks_exact(2)) {
        let (high, low) = (NIBBLES[pair[0] as usize], NIBBLES[pair[1] as usize]);
        // An invalid digit sets bit 4 or above (0xff); valid ones are at most 15.
        invalid |= high | low;
        *byte = (high << 4) | (low & 15);
    }
    (invalid < 16).then_some(hash)
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

    /// An event line of the full form: the id's time is `created_at`.
    fn full_line(
        random: u128,
        time: u64,
        seq: &str,
        tenant: &str,
        kind: &str,
        received: &str,
        rest: &str,
    ) -> String {
        let id = ulid::Ulid((u128::from(time) << 80) | (random & ((1u128 << 80) - 1))).to_string();
        let created = logbook_core::time::format_millis(time as i64);
        format!(
            "{{\"id\":\"evt_{id}\",\"seq\":{seq},\"tenant\":\"{tenant}\",\"type\":\"{kind}\",\"created_at\":\"{created}\",\"received_at\":\"{received}\",{rest},\"hash\":\"{HASH}\"}}\n"
        )
    }

    const TIME: u64 = 1_795_341_600_123;
    const RECEIVED: &str = "2026-11-22T10:00:01.000Z";
    const REST_MEMBERS: &str =
        "\"actor\":{\"id\":\"u_1\"},\"outcome\":\"success\",\"metadata\":{\"a\":\"}\\n{\"}";

    #[test]
    fn server_written_members_come_apart_and_back() {
        let mut text = b"{\"v\":1}\n".to_vec();
        for (step, seq) in [(0, "41"), (5, "42"), (3, "43")] {
            text.extend_from_slice(
                full_line(
                    7 + step,
                    TIME - step as u64,
                    seq,
                    "t_1",
                    "bot.created",
                    RECEIVED,
                    REST_MEMBERS,
                )
                .as_bytes(),
            );
        }
        let split = split(&text).unwrap();
        assert!(split.columns.starts_with(MAGIC));
        let expected = format!("{{\"type\":\"bot.created\",{REST_MEMBERS}}}\n");
        assert_eq!(
            String::from_utf8(split.stripped.clone()).unwrap(),
            format!("{{\"v\":1}}\n{expected}{expected}{expected}")
        );
        assert_eq!(round_trip(&text), text);
        // What the dictionary is trained on is what a block keeps of each line.
        let first = text.split(|&c| c == b'\n').nth(1).unwrap();
        assert_eq!(strip_line(first), expected.trim_end().as_bytes());
        // Seqs with gaps and going back, and receipt times going back.
        let mut text = b"{\"v\":1}\n".to_vec();
        for (seq, received) in [
            ("9", RECEIVED),
            ("0", "2026-11-22T09:00:00.000Z"),
            ("18446744073709551615", "1970-01-01T00:00:00.000Z"),
            ("3", "9999-12-31T23:59:59.999Z"),
        ] {
            text.extend_from_slice(
                full_line(1, TIME, seq, "t", "", received, "\"outcome\":\"success\"").as_bytes(),
            );
        }
        assert!(super::split(&text).unwrap().columns.starts_with(MAGIC));
        assert_eq!(round_trip(&text), text);
    }

    #[test]
    fn lines_of_another_form_keep_only_ids_and_hashes_apart() {
        let good = full_line(1, TIME, "1", "t", "bot.created", RECEIVED, REST_MEMBERS);
        let created = logbook_core::time::format_millis(TIME as i64);
        let others = [
            // Another tenant, a seq with a leading zero or a sign, a type or tenant with a backslash.
            full_line(2, TIME, "2", "u", "bot.created", RECEIVED, REST_MEMBERS),
            full_line(2, TIME, "02", "t", "bot.created", RECEIVED, REST_MEMBERS),
            full_line(2, TIME, "-2", "t", "bot.created", RECEIVED, REST_MEMBERS),
            full_line(2, TIME, "2", "t", "bot\\\"created", RECEIVED, REST_MEMBERS),
            full_line(2, TIME, "2", "t\\u0041", "bot.created", RECEIVED, REST_MEMBERS),
            // A receipt time that is not written as the server writes it, or does not exist.
            full_line(2, TIME, "2", "t", "bot.created", "2026-11-22T10:00:01Z", REST_MEMBERS),
            full_line(2, TIME, "2", "t", "bot.created", "2026-02-30T10:00:01.000Z", REST_MEMBERS),
            // A seq beyond u64, members in another order.
            full_line(2, TIME, "18446744073709551616", "t", "bot.created", RECEIVED, REST_MEMBERS),
            line(
                "01M98T51A7E6MVTTP2V9N67JXG",
                &format!("\"tenant\":\"t\",\"seq\":2,\"type\":\"x\",\"created_at\":\"{created}\",\"received_at\":\"{RECEIVED}\",\"outcome\":\"success\""),
                HASH,
            ),
            // A created_at other than the id's time.
            full_line(2, TIME, "2", "t", "bot.created", RECEIVED, REST_MEMBERS)
                .replace(&created, RECEIVED),
        ];
        for other in others {
            let text = format!("{{\"v\":1}}\n{good}{other}");
            let split = split(text.as_bytes()).unwrap_or_else(|| panic!("{other}"));
            assert!(split.columns.starts_with(IDS_AND_HASHES), "{other}");
            assert_eq!(round_trip(text.as_bytes()), text.as_bytes(), "{other}");
        }
    }

    #[test]
    fn damaged_full_payloads_are_errors() {
        let mut text = b"{\"v\":1}\n".to_vec();
        for seq in ["5", "7"] {
            text.extend_from_slice(
                full_line(3, TIME, seq, "t", "x", RECEIVED, REST_MEMBERS).as_bytes(),
            );
        }
        let split = split(&text).unwrap();
        let whole = payload(&split.columns, &split.stripped);
        assert_eq!(join(&whole, |f| Ok(f.to_vec())).unwrap(), text);
        for cut in 0..whole.len() {
            let _ = join(&whole[..cut], |frame| Ok(frame.to_vec()));
        }
        // A stripped line without its type first, or whose type does not end.
        for stripped in [
            "{\"v\":1}\n{\"outcome\":1}\n{\"type\":\"x\",\"a\":1}\n",
            "{\"v\":1}\n{\"type\":\"x}\n{\"type\":\"x\",\"a\":1}\n",
        ] {
            assert!(join(&payload(&split.columns, stripped.as_bytes()), |f| Ok(
                f.to_vec()
            ))
            .is_err());
        }
        // An unknown seq column form.
        let form = split.columns.len() - 4; // before the step (2) and the tenant ("t", its length first)
        assert_eq!(split.columns[form], 1);
        let mut other = whole.clone();
        other[form] = 2;
        assert!(join(&other, |f| Ok(f.to_vec())).is_err());
    }

    #[test]
    fn hashes_are_read_from_lower_case_hex_only() {
        let bytes: Vec<u8> = (0..32).map(|i| i * 8 + 3).collect();
        assert_eq!(
            read_hash(hex::encode(&bytes).as_bytes()).unwrap().to_vec(),
            bytes
        );
        assert_eq!(
            read_hash(HASH.as_bytes()).map(hex::encode).as_deref(),
            Some(HASH)
        );
        for bad in [
            HASH.to_uppercase(),
            HASH.replacen('8', "g", 1),
            HASH.replacen('8', "/", 1),
            HASH.replacen('8', ":", 1),
            HASH.replacen('8', "`", 1),
            HASH[1..].to_string(),
            format!("{HASH}0"),
        ] {
            assert_eq!(read_hash(bad.as_bytes()), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn any_full_form_lines_round_trip(
            events in proptest::collection::vec(
                (any::<u128>(), 0u64..(1 << 48), any::<u64>(), "[a-z._]{0,12}", 0i64..=logbook_core::time::MAX_MILLIS, "[ -~]{0,40}"), 0..20),
            tenant in "[a-z0-9_]{0,8}",
        ) {
            let mut text = b"{\"v\":1}\n".to_vec();
            let mut all_full = true;
            for (random, time, seq, kind, received, rest) in &events {
                all_full &= *time as i64 <= logbook_core::time::MAX_MILLIS;
                let received = logbook_core::time::format_millis(*received);
                text.extend_from_slice(full_line(*random, *time, &seq.to_string(), &tenant, kind, &received, rest).as_bytes());
            }
            let split = split(&text).expect("splits");
            prop_assert_eq!(split.columns.starts_with(MAGIC), all_full);
            prop_assert_eq!(round_trip(&text), text);
        }

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
            for magic in [MAGIC, IDS_AND_HASHES] {
                let mut payload = magic.to_vec();
                payload.extend_from_slice(&bytes);
                let _ = join(&payload, |frame| Ok(frame.to_vec()));
            }
        }
    }
}
