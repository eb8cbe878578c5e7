//! The write-ahead log: the source of truth of the embedded engine.
//!
//! The log is a sequence of segment files `wal/00000001.wal`, `wal/00000002.wal`, ... Each starts with a
//! 16-byte header and holds records back to back:
//!
//! ```text
//! segment:  "LOGBOOKW" (8) | format version u32 LE (=1) | segment number u32 LE
//! record:   payload length u32 LE | CRC32C u32 LE of (kind ‖ payload) | kind u8 | payload
//! ```
//!
//! One record is written per ingest request, so a request is all-or-nothing even across a crash. The writer
//! appends the records of every request that is waiting (group commit), calls `fdatasync`, and only then are
//! the requests acknowledged. A failed write or sync poisons the writer: every later append fails until the
//! store is reopened, because the kernel may have dropped the unsynced pages.
//!
//! Recovery reads every segment in order. In the last segment, a record that is incomplete or fails its CRC
//! with no valid record after it is a torn tail from a crash: it was never acknowledged, and the file is
//! truncated before it. Any other bad record is corruption, reported with the file and offset.

use crate::error::{Result, StoreError};
use crate::io::{FileSystem, StorageFile};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const MAGIC: &[u8; 8] = b"LOGBOOKW";
pub const FORMAT_VERSION: u32 = 1;
pub const SEGMENT_HEADER_BYTES: u64 = 16;
pub const RECORD_HEADER_BYTES: usize = 9;
/// Largest payload accepted on read; larger lengths are garbage.
pub const MAX_RECORD_BYTES: u32 = 1 << 30;

/// Kinds of record.
pub const KIND_EVENTS: u8 = 1;

/// Where a record starts: in WAL segment `segment`, or (`compacted`) in the block file that replaced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordPosition {
    pub segment: u32,
    pub offset: u64,
    pub compacted: bool,
}

pub fn segment_path(directory: &Path, segment: u32) -> PathBuf {
    directory.join(format!("{segment:08}.wal"))
}

/// Appends to the newest segment.
pub struct WalWriter {
    fs: Arc<dyn FileSystem>,
    directory: PathBuf,
    file: Arc<dyn StorageFile>,
    segment: u32,
    length: u64,
    segment_limit: u64,
    poisoned: Option<String>,
}

pub(crate) fn frame(kind: u8, payload: &[u8], out: &mut Vec<u8>) {
    let mut crc = crc32c::crc32c(&[kind]);
    crc = crc32c::crc32c_append(crc, payload);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
}

impl WalWriter {
    /// Opens the writer after recovery; `last` is the last segment and its valid length. An empty log starts
    /// at segment `first` (past any compacted segment).
    pub fn open(
        fs: Arc<dyn FileSystem>,
        directory: &Path,
        last: Option<(u32, u64)>,
        first: u32,
        segment_limit: u64,
    ) -> Result<WalWriter> {
        match last {
            Some((segment, length)) => {
                let path = segment_path(directory, segment);
                let file = fs
                    .open(&path)
                    .map_err(|e| StoreError::io(format!("failed to open {}", path.display()), e))?;
                Ok(WalWriter {
                    fs,
                    directory: directory.to_path_buf(),
                    file,
                    segment,
                    length,
                    segment_limit,
                    poisoned: None,
                })
            }
            None => {
                let (file, length) = create_segment(fs.as_ref(), directory, first)?;
                Ok(WalWriter {
                    fs,
                    directory: directory.to_path_buf(),
                    file,
                    segment: first,
                    length,
                    segment_limit,
                    poisoned: None,
                })
            }
        }
    }

    pub fn check_poisoned(&self) -> Result<()> {
        match &self.poisoned {
            Some(reason) => Err(StoreError::Poisoned(reason.clone())),
            None => Ok(()),
        }
    }

    /// Appends records (not yet durable) and returns where each starts. Rolls to a new segment first when
    /// the current one is full. On error the writer is poisoned.
    pub fn append<P: AsRef<[u8]>>(&mut self, payloads: &[(u8, P)]) -> Result<Vec<RecordPosition>> {
        self.check_poisoned()?;
        if self.length >= self.segment_limit {
            self.roll()?;
        }
        let mut buffer = Vec::with_capacity(
            payloads
                .iter()
                .map(|(_, p)| p.as_ref().len() + RECORD_HEADER_BYTES)
                .sum(),
        );
        let mut positions = Vec::with_capacity(payloads.len());
        for (kind, payload) in payloads {
            positions.push(RecordPosition {
                segment: self.segment,
                offset: self.length + buffer.len() as u64,
                compacted: false,
            });
            frame(*kind, payload.as_ref(), &mut buffer);
        }
        if let Err(error) = self.file.write_all_at(&buffer, self.length) {
            let error = StoreError::io(
                format!(
                    "failed to write {}",
                    segment_path(&self.directory, self.segment).display()
                ),
                error,
            );
            // Undo the partial write so that a later reopen does not see garbage; nothing was acknowledged.
            let _ = self.file.set_len(self.length);
            if !matches!(error, StoreError::NoSpace) {
                self.poisoned = Some(error.to_string());
            }
            return Err(error);
        }
        self.length += buffer.len() as u64;
        Ok(positions)
    }

    /// Makes everything appended durable. A failure poisons the writer.
    pub fn sync(&mut self) -> Result<()> {
        self.check_poisoned()?;
        if let Err(error) = self.file.sync_data() {
            let reason = format!(
                "fdatasync of {} failed: {error}",
                segment_path(&self.directory, self.segment).display()
            );
            self.poisoned = Some(reason.clone());
            return Err(StoreError::Poisoned(reason));
        }
        Ok(())
    }

    fn roll(&mut self) -> Result<()> {
        self.sync()?;
        let (file, length) = create_segment(self.fs.as_ref(), &self.directory, self.segment + 1)?;
        self.file = file;
        self.segment += 1;
        self.length = length;
        Ok(())
    }

    pub fn segment(&self) -> u32 {
        self.segment
    }
}

fn create_segment(
    fs: &dyn FileSystem,
    directory: &Path,
    segment: u32,
) -> Result<(Arc<dyn StorageFile>, u64)> {
    let path = segment_path(directory, segment);
    let file = fs
        .create_new(&path)
        .map_err(|e| StoreError::io(format!("failed to create {}", path.display()), e))?;
    let mut header = Vec::with_capacity(SEGMENT_HEADER_BYTES as usize);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    header.extend_from_slice(&segment.to_le_bytes());
    let written = file
        .write_all_at(&header, 0)
        .map_err(|e| StoreError::io(format!("failed to write {}", path.display()), e))
        .and_then(|()| {
            file.sync_data()
                .map_err(|e| StoreError::io(format!("failed to sync {}", path.display()), e))
        })
        .and_then(|()| sync_directory(fs, directory));
    if let Err(error) = written {
        // Leave no half-made segment behind, so that a later roll (say, once space is freed) can create it.
        let _ = fs.remove(&path);
        return Err(error);
    }
    Ok((file, SEGMENT_HEADER_BYTES))
}

pub fn sync_directory(fs: &dyn FileSystem, directory: &Path) -> Result<()> {
    fs.sync_directory(directory).map_err(|e| {
        StoreError::io(
            format!("failed to sync directory {}", directory.display()),
            e,
        )
    })
}

/// The segment numbers present, in order.
pub fn list_segments(fs: &dyn FileSystem, directory: &Path) -> Result<Vec<u32>> {
    list_numbered(fs, directory, ".wal")
}

/// The numbers of the files `NNNNNNNN<suffix>` in `directory`, in order.
pub(crate) fn list_numbered(
    fs: &dyn FileSystem,
    directory: &Path,
    suffix: &str,
) -> Result<Vec<u32>> {
    let mut segments = Vec::new();
    let names = fs
        .list(directory)
        .map_err(|e| StoreError::io(format!("failed to read {}", directory.display()), e))?;
    for name in names {
        if let Some(number) = name
            .strip_suffix(suffix)
            .and_then(|stem| stem.parse::<u32>().ok())
        {
            segments.push(number);
        }
    }
    segments.sort_unstable();
    Ok(segments)
}

/// A valid frame of a segment or block file.
pub(crate) struct Frame<'a> {
    pub offset: usize,
    pub kind: u8,
    pub payload: &'a [u8],
    /// Where the next frame starts.
    pub next: usize,
}

/// The frames of a segment or block file after its 16-byte header, in order. Iteration ends at the end of the
/// bytes, or with `Err((offset, reason))` at the first invalid frame.
pub(crate) fn frames(
    bytes: &[u8],
) -> impl Iterator<Item = std::result::Result<Frame<'_>, (usize, String)>> {
    let mut offset = SEGMENT_HEADER_BYTES as usize;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || offset >= bytes.len() {
            return None;
        }
        match check_frame(bytes, offset) {
            FrameCheck::Valid {
                kind,
                payload,
                next,
            } => {
                let frame = Frame {
                    offset,
                    kind,
                    payload,
                    next,
                };
                offset = next;
                Some(Ok(frame))
            }
            FrameCheck::Invalid(reason) => {
                failed = true;
                Some(Err((offset, reason)))
            }
        }
    })
}

/// Outcome of parsing the frame at one offset.
pub(crate) enum FrameCheck<'a> {
    Valid {
        kind: u8,
        payload: &'a [u8],
        next: usize,
    },
    Invalid(String),
}

pub(crate) fn check_frame(bytes: &[u8], offset: usize) -> FrameCheck<'_> {
    let Some(header) = bytes.get(offset..offset + RECORD_HEADER_BYTES) else {
        return FrameCheck::Invalid("record header runs past the end of the file".into());
    };
    let length = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let kind = header[8];
    if length > MAX_RECORD_BYTES {
        return FrameCheck::Invalid(format!("record length {length} is impossible"));
    }
    let start = offset + RECORD_HEADER_BYTES;
    let Some(payload) = bytes.get(start..start + length as usize) else {
        return FrameCheck::Invalid("record runs past the end of the file".into());
    };
    let actual = crc32c::crc32c_append(crc32c::crc32c(&[kind]), payload);
    if actual != crc {
        return FrameCheck::Invalid(format!(
            "checksum mismatch (stored {crc:08x}, computed {actual:08x})"
        ));
    }
    FrameCheck::Valid {
        kind,
        payload,
        next: start + length as usize,
    }
}

/// Reads every record of every segment in order, calling `visit` for each, and repairs a torn tail.
/// Returns the last segment and its valid length, or `None` for an empty log.
pub fn recover(
    fs: &dyn FileSystem,
    directory: &Path,
    mut visit: impl FnMut(RecordPosition, u8, &[u8]) -> Result<()>,
) -> Result<Option<(u32, u64)>> {
    let segments = list_segments(fs, directory)?;
    let mut last = None;
    for (index, &segment) in segments.iter().enumerate() {
        let is_last_segment = index + 1 == segments.len();
        let path = segment_path(directory, segment);
        let bytes = fs
            .read(&path)
            .map_err(|e| StoreError::io(format!("failed to read {}", path.display()), e))?;
        let header_ok = bytes.len() >= SEGMENT_HEADER_BYTES as usize
            && &bytes[0..8] == MAGIC
            && u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")) == segment;
        if !header_ok {
            if is_last_segment && bytes.len() < SEGMENT_HEADER_BYTES as usize {
                // Crash while creating the segment: recreate it empty.
                tracing::warn!(file = %path.display(), "rewriting a segment whose header was torn by a crash");
                fs.remove(&path).map_err(|e| {
                    StoreError::io(format!("failed to remove {}", path.display()), e)
                })?;
                let (_, length) = create_segment(fs, directory, segment)?;
                last = Some((segment, length));
                continue;
            }
            return Err(StoreError::Corruption {
                file: path,
                offset: 0,
                reason: "not a Logbook WAL segment header".into(),
            });
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if version != FORMAT_VERSION {
            return Err(StoreError::Corruption {
                file: path,
                offset: 8,
                reason: format!("format version {version} is not supported by this Logbook (expects {FORMAT_VERSION})"),
            });
        }
        let mut end = SEGMENT_HEADER_BYTES as usize;
        for frame in frames(&bytes) {
            match frame {
                Ok(frame) => {
                    visit(
                        RecordPosition {
                            segment,
                            offset: frame.offset as u64,
                            compacted: false,
                        },
                        frame.kind,
                        frame.payload,
                    )?;
                    end = frame.next;
                }
                Err((offset, reason)) => {
                    end = offset;
                    let valid_later = (offset + 1..bytes.len()).any(|candidate| {
                        matches!(check_frame(&bytes, candidate), FrameCheck::Valid { .. })
                    });
                    if !is_last_segment || valid_later {
                        return Err(StoreError::Corruption {
                            file: path,
                            offset: offset as u64,
                            reason,
                        });
                    }
                    tracing::warn!(file = %path.display(), offset, reason, "truncating a torn tail left by a crash");
                    let file = fs.open(&path).map_err(|e| {
                        StoreError::io(format!("failed to open {}", path.display()), e)
                    })?;
                    file.set_len(offset as u64).map_err(|e| {
                        StoreError::io(format!("failed to truncate {}", path.display()), e)
                    })?;
                    file.sync_data().map_err(|e| {
                        StoreError::io(format!("failed to sync {}", path.display()), e)
                    })?;
                }
            }
        }
        last = Some((segment, end.min(bytes.len()) as u64));
    }
    Ok(last)
}

/// Reads one record's payload at a known position (written and synced earlier).
pub fn read_record(file: &dyn StorageFile, path: &Path, offset: u64) -> Result<(u8, Vec<u8>)> {
    let mut header = [0u8; RECORD_HEADER_BYTES];
    file.read_exact_at(&mut header, offset)
        .map_err(|e| StoreError::io(format!("failed to read {}", path.display()), e))?;
    let length = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let kind = header[8];
    if length > MAX_RECORD_BYTES {
        return Err(StoreError::Corruption {
            file: path.to_path_buf(),
            offset,
            reason: format!("record length {length} is impossible"),
        });
    }
    let mut payload = vec![0u8; length as usize];
    file.read_exact_at(&mut payload, offset + RECORD_HEADER_BYTES as u64)
        .map_err(|e| StoreError::io(format!("failed to read {}", path.display()), e))?;
    if crc32c::crc32c_append(crc32c::crc32c(&[kind]), &payload) != crc {
        return Err(StoreError::Corruption {
            file: path.to_path_buf(),
            offset,
            reason: "checksum mismatch".into(),
        });
    }
    Ok((kind, payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::RealFs;
    use std::fs;

    fn open_writer(directory: &Path, last: Option<(u32, u64)>, limit: u64) -> WalWriter {
        WalWriter::open(Arc::new(RealFs), directory, last, 1, limit).unwrap()
    }

    /// A log holding the records "first" and "second", synced.
    fn write_first_and_second(directory: &Path) {
        let mut writer = open_writer(directory, None, 1 << 20);
        writer
            .append(&[
                (KIND_EVENTS, b"first".to_vec()),
                (KIND_EVENTS, b"second".to_vec()),
            ])
            .unwrap();
        writer.sync().unwrap();
    }

    fn records(directory: &Path) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        recover(&RealFs, directory, |_, _, payload| {
            out.push(payload.to_vec());
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn appends_survive_reopen_and_roll_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = open_writer(dir.path(), None, 64);
        for index in 0..10u8 {
            writer.append(&[(KIND_EVENTS, vec![index; 20])]).unwrap();
            writer.sync().unwrap();
        }
        assert!(list_segments(&RealFs, dir.path()).unwrap().len() > 1);
        let got = records(dir.path()).unwrap();
        assert_eq!(got, (0..10u8).map(|i| vec![i; 20]).collect::<Vec<_>>());
    }

    #[test]
    fn torn_tail_is_truncated_and_appending_continues() {
        let dir = tempfile::tempdir().unwrap();
        write_first_and_second(dir.path());
        let path = segment_path(dir.path(), 1);
        let full = fs::metadata(&path).unwrap().len();
        // Every possible tear inside the second record loses only that record.
        for cut in (full - 14 + 1)..full {
            let copy = tempfile::tempdir().unwrap();
            let bytes = fs::read(&path).unwrap();
            fs::write(segment_path(copy.path(), 1), &bytes[..cut as usize]).unwrap();
            assert_eq!(
                records(copy.path()).unwrap(),
                vec![b"first".to_vec()],
                "cut at {cut}"
            );
            let last = recover(&RealFs, copy.path(), |_, _, _| Ok(())).unwrap();
            let mut writer = open_writer(copy.path(), last, 1 << 20);
            writer.append(&[(KIND_EVENTS, b"third".to_vec())]).unwrap();
            writer.sync().unwrap();
            assert_eq!(
                records(copy.path()).unwrap(),
                vec![b"first".to_vec(), b"third".to_vec()]
            );
        }
    }

    #[test]
    fn corruption_before_valid_records_names_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        write_first_and_second(dir.path());
        let path = segment_path(dir.path(), 1);
        let mut bytes = fs::read(&path).unwrap();
        bytes[SEGMENT_HEADER_BYTES as usize + RECORD_HEADER_BYTES + 1] ^= 0xff; // flip a bit in "first"
        fs::write(&path, &bytes).unwrap();
        match records(dir.path()) {
            Err(StoreError::Corruption { file, offset, .. }) => {
                assert_eq!(file, path);
                assert_eq!(offset, SEGMENT_HEADER_BYTES);
            }
            other => panic!("expected corruption, got {other:?}"),
        }
    }

    #[test]
    fn unknown_format_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        open_writer(dir.path(), None, 1 << 20);
        let path = segment_path(dir.path(), 1);
        let mut bytes = fs::read(&path).unwrap();
        bytes[8] = 99;
        fs::write(&path, &bytes).unwrap();
        let error = records(dir.path()).unwrap_err().to_string();
        assert!(error.contains("format version 99"), "{error}");
    }
}
