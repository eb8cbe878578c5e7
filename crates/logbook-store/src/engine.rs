//! The embedded engine: a writer thread that appends to the WAL with group commit (building and encoding
//! each group's records on all cores), an indexer thread that adds each durable group to the in-memory index
//! and only then acknowledges its requests (read-your-writes), and a cache of decompressed records.
//!
//! Record payload (raw text in the WAL, zstd in block files; see `codec`): one header line, then one line per event,
//! each the event's API JSON:
//!
//! ```text
//! {"v":1,"idempotency":{...}|null}\n
//! {"id":"evt_...","seq":1,"tenant":"acme",...}\n
//! ...
//! ```
//!
//! Invariants: an event is in the index only after its record is synced, and acknowledged only after it is in
//! the index; groups are published in the order they were written; `seq` is dense per tenant and assigned only
//! by the writer thread; a request's events share one record (all or nothing).

use crate::catalog::{Catalog, Principal};
use crate::codec::{Dictionaries, Dictionary};
use crate::compact::Compression;
use crate::error::{Result, StoreError};
use crate::index::{Location, TenantIndex, ValueCounts, HOUR_MS};
use crate::io::{FileSystem, RealFs, StorageFile};
use crate::piece::{self, Segments, TenantPiece};
use crate::wal::{self, RecordPosition, WalWriter, KIND_EVENTS};
use crate::{codec, compact};
use crate::{
    ApiKey, AppendOutcome, AppendReply, AppendRequest, Bucket, CreatedKey, CrossTenantPage,
    EventStore, Health, Histogram, HistogramRequest, IdempotencyKey, Page, PendingAppend, Position,
    RawEvent, Receipt, Scope, StoreStats, Tenant, TenantPosition,
};
use crossbeam_channel::{Receiver, Sender};
use logbook_core::event::{new_event_id, Assigned, Event, NewEvent};
use logbook_core::filter::query_string::{ListQuery, Order};
use logbook_core::filter::{Field, Filter, Operand, Predicate};
use logbook_core::time::{now_millis, Millis, MAX_MILLIS, MIN_MILLIS};
use lru::LruCache;
use parking_lot::{Condvar, Mutex, RwLock};
use rayon::prelude::*;
use roaring::RoaringBitmap;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const IDEMPOTENCY_WINDOW_MILLIS: Millis = 24 * 3_600_000;
const MAX_GROUP_REQUESTS: usize = 4096;
/// Listings of at least this many events read the next page's records ahead.
const READ_AHEAD_LIMIT: usize = 500;

/// Settings of the embedded engine.
#[derive(Clone)]
pub struct StoreOptions {
    pub data_dir: PathBuf,
    /// The file system under the write-ahead log: the real one, or a simulated one in fault-injection tests.
    pub fs: Arc<dyn FileSystem>,
    /// A WAL segment is closed and a new one started past this size.
    pub segment_bytes: u64,
    /// Decompressed records kept in memory, in bytes of JSON (at least one record is kept). 32 MiB: at 1M
    /// events the benchmark's peak RSS was 520/536 MB with 32 against 598/558 with 64 (and 732–795 with
    /// 128), its query shapes within the runs' spread (BENCHMARKS.md). A WAL record that falls out is
    /// read back raw from the page cache, without decompression.
    pub cache_bytes: usize,
    /// Compact sealed WAL segments into per-tenant block files on a background thread. Tests that need every
    /// file operation in a known order turn it off and call [`EmbeddedStore::compact`] themselves.
    pub background_compaction: bool,
    /// zstd level for block files.
    pub compaction_level: i32,
    /// zstd level for block files compressed with the store's dictionary: with it, level 1 compresses the
    /// demo events as well as level 3 (128.6 against 129.5 bytes per event) in 60% of the time, where
    /// level 3 with a dictionary took 1.8× the time of level 3 without (its matching goes through the
    /// dictionary's content).
    pub dictionary_level: i32,
    /// Remove the compacted segments' index files at open, so that they are written again from the log
    /// (`logbook reindex`).
    pub rebuild_index: bool,
    /// When index files are merged, a tenant's pieces of fewer events than this are merged into one (up to
    /// about this many events); larger ones are copied as they are.
    pub merge_events: u32,
    /// Compress block files with a zstd dictionary trained on the first compacted segment of enough events
    /// (1,000); the block files written before it are read as they are.
    pub block_dictionary: bool,
}

impl StoreOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        StoreOptions {
            data_dir: data_dir.into(),
            fs: Arc::new(RealFs),
            // Records are stored uncompressed: 40 MiB holds about as many events (~80k) as 16 MiB of LZ4
            // records did, and the fewer events a segment holds, the smaller each tenant's blocks in its block
            // file and the worse they compress (150 bytes per event at 10M with 16 MiB, 139 before).
            segment_bytes: 40 << 20,
            cache_bytes: 32 << 20,
            background_compaction: true,
            compaction_level: 3,
            dictionary_level: 1,
            rebuild_index: false,
            merge_events: 4096,
            block_dictionary: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RecordHeader {
    v: u32,
    #[serde(default)]
    idempotency: Option<StoredIdempotency>,
    /// In a block file's first record: the compacted segment's request-level keys still in their window.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    requests: Vec<StoredIdempotency>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredIdempotency {
    key: IdempotencyKey,
    receipts: Vec<Receipt>,
    at: Millis,
}

/// A decompressed record: its text and the byte range of each event line. The text is checked to be UTF-8
/// once, here, and shared with the listings that hand its lines out ([`RawEvent`]).
struct Decoded {
    text: Arc<String>,
    events: Vec<(u32, u32)>,
}

impl Decoded {
    fn new(text: Vec<u8>) -> std::result::Result<Decoded, std::string::FromUtf8Error> {
        let text = String::from_utf8(text)?;
        let mut events = Vec::new();
        let mut start = 0usize;
        let mut first = true;
        for newline in memchr::memchr_iter(b'\n', text.as_bytes()) {
            if !first {
                events.push((start as u32, newline as u32));
            }
            first = false;
            start = newline + 1;
        }
        Ok(Decoded {
            text: Arc::new(text),
            events,
        })
    }

    fn header(&self) -> &str {
        self.text.split('\n').next().unwrap_or_default()
    }

    /// The JSON of event `line` (line boundaries are newlines, so the slice is always on characters).
    fn event_text(&self, line: u32) -> Option<&str> {
        let (start, end) = *self.events.get(line as usize)?;
        self.text.get(start as usize..end as usize)
    }
}

/// A record being read: its result once read (`None` when the read failed).
type Loading = OnceLock<Option<Arc<Decoded>>>;

/// Decompressed records, least recently used first out, within a budget of bytes.
struct RecordCache {
    records: LruCache<RecordPosition, Arc<Decoded>>,
    bytes: usize,
    budget: usize,
}

impl RecordCache {
    fn get(&mut self, position: &RecordPosition) -> Option<Arc<Decoded>> {
        self.records.get(position).cloned()
    }

    fn put(&mut self, position: RecordPosition, decoded: Arc<Decoded>) {
        self.bytes += decoded.text.len();
        if let Some(replaced) = self.records.put(position, decoded) {
            self.bytes -= replaced.text.len();
        }
        while self.bytes > self.budget && self.records.len() > 1 {
            match self.records.pop_lru() {
                Some((_, evicted)) => self.bytes -= evicted.text.len(),
                None => break,
            }
        }
    }
}

/// The file a record is in: a WAL segment, or the block file that replaced it.
fn record_path(wal_dir: &Path, blocks_dir: &Path, position: RecordPosition) -> PathBuf {
    if position.compacted {
        compact::block_path(blocks_dir, position.segment)
    } else {
        wal::segment_path(wal_dir, position.segment)
    }
}

struct Shared {
    wal_dir: PathBuf,
    blocks_dir: PathBuf,
    fs: Arc<dyn FileSystem>,
    catalog: Catalog,
    tenants: RwLock<HashMap<String, Arc<RwLock<TenantIndex>>>>,
    /// Open record files, by (compacted, segment).
    files: RwLock<HashMap<(bool, u32), Arc<dyn StorageFile>>>,
    cache: Mutex<RecordCache>,
    /// Records being read, for callers that want one while another reads it.
    loading: Mutex<HashMap<RecordPosition, Arc<Loading>>>,
    events: AtomicU64,
    /// Set by the writer when the WAL is poisoned.
    write_failure: Mutex<Option<String>>,
    /// The WAL segment of the newest published record: every older segment is sealed and fully indexed.
    published_segment: AtomicU32,
    /// Wakes the compactor thread; `None` once shutting down (or without background compaction).
    compact_signal: Mutex<Option<Sender<()>>>,
    /// Wakes the merger thread (index files), as `compact_signal` the compactor.
    merge_signal: Mutex<Option<Sender<()>>>,
    /// Held while merging index files, so that only one merge runs.
    merging: Mutex<()>,
    /// Set at shutdown: a merge in progress gives up (its file is removed; the files it merged stay).
    stopping: AtomicBool,
    /// Held while compacting, so that only one compaction runs; the buffer segments are read into.
    compacting: Mutex<Vec<u8>>,
    compaction_level: i32,
    dictionary_level: i32,
    /// How far compaction is, for the writer's backpressure.
    backlog: Mutex<Backlog>,
    backlog_changed: Condvar,
    /// The index files, by the segments each covers, in order: compaction adds one at the end, a merge
    /// replaces a run of them (while `merging` is held).
    index_files: Mutex<Vec<Segments>>,
    /// See [`StoreOptions::merge_events`]: merging larger pieces would save little (their tables are already
    /// large) and cost the most.
    merge_events: u32,
    /// The dictionaries block files were compressed with, and the one new blocks are (`None` until one is
    /// trained, or without [`StoreOptions::block_dictionary`]).
    dictionaries: Arc<Dictionaries>,
    block_dictionary: Mutex<Option<Dictionary>>,
    train_dictionary: bool,
}

/// Index files are merged [`MERGE_FANOUT`] at a time, when that many consecutive ones cover about as many
/// segments each (1, 8, 64, ...), as size-tiered LSM stores merge their runs: a tenant then has a few pieces
/// per power of eight segments instead of one per segment. Each tier merges the small pieces again: at four
/// files a merge, the 1M benchmark's index files took 3.2 s of merging (53.5 MB), at eight 1.8 s (56.0 MB).
const MERGE_FANOUT: usize = 8;

/// The first run of [`MERGE_FANOUT`] consecutive index files of the same tier (segments covered, in powers of
/// the fan-out), oldest first.
fn merge_run(files: &[Segments]) -> Option<&[Segments]> {
    let tier = |(first, last): Segments| (last - first + 1).ilog(MERGE_FANOUT as u32);
    files.windows(MERGE_FANOUT).find(|run| {
        run.iter().all(|&file| tier(file) == tier(run[0]))
            && run.windows(2).all(|pair| pair[1].0 == pair[0].1 + 1)
    })
}

/// The writer waits before a group while more than this many sealed segments wait for compaction: each keeps
/// its field index in memory and its events uncompressed, so a compactor that fell behind a long burst of
/// ingest would otherwise let memory grow with the burst (as LSM stores stall writes).
const MAX_COMPACTION_BACKLOG: u32 = 3;

/// Compaction's progress.
struct Backlog {
    /// Every segment up to this one is compacted.
    compacted: u32,
    /// The last compaction failed (the writer does not wait for a compactor that cannot progress).
    failing: bool,
}

impl Shared {
    fn tenant(&self, tenant: &str) -> Option<Arc<RwLock<TenantIndex>>> {
        self.tenants.read().get(tenant).cloned()
    }

    fn path_of(&self, position: RecordPosition) -> PathBuf {
        record_path(&self.wal_dir, &self.blocks_dir, position)
    }

    fn record(&self, position: RecordPosition) -> Result<Arc<Decoded>> {
        if let Some(decoded) = self.cache.lock().get(&position) {
            return Ok(decoded);
        }
        // One reader decompresses a record; others asking for it meanwhile (a page and the read-ahead of the
        // page before it, say) wait for its result. A failed read is repeated by each caller, for its error.
        let loading = self
            .loading
            .lock()
            .entry(position)
            .or_insert_with(|| Arc::new(Loading::new()))
            .clone();
        let loaded = loading
            .get_or_init(|| {
                let decoded = self.read_record(position).ok()?;
                self.cache.lock().put(position, decoded.clone());
                Some(decoded)
            })
            .clone();
        {
            let mut waiting = self.loading.lock();
            if waiting
                .get(&position)
                .is_some_and(|current| Arc::ptr_eq(current, &loading))
            {
                waiting.remove(&position);
            }
        }
        match loaded {
            Some(decoded) => Ok(decoded),
            None => self.read_record(position),
        }
    }

    /// Reads and decompresses a record from its file (not through the cache).
    fn read_record(&self, position: RecordPosition) -> Result<Arc<Decoded>> {
        let path = self.path_of(position);
        let key = (position.compacted, position.segment);
        let file = {
            let cached = self.files.read().get(&key).cloned();
            match cached {
                Some(file) => file,
                None => {
                    let file = self.fs.open(&path).map_err(|e| {
                        StoreError::io(format!("failed to open {}", path.display()), e)
                    })?;
                    self.files.write().insert(key, file.clone());
                    file
                }
            }
        };
        let (_, payload) = wal::read_record(file.as_ref(), &path, position.offset)?;
        let text =
            codec::into_text(payload, &self.dictionaries).map_err(|e| StoreError::Corruption {
                file: path.clone(),
                offset: position.offset,
                reason: format!("record does not decompress: {e}"),
            })?;
        let decoded = Decoded::new(text).map_err(|e| StoreError::Corruption {
            file: path.clone(),
            offset: position.offset,
            reason: format!("record is not UTF-8: {e}"),
        })?;
        Ok(Arc::new(decoded))
    }

    /// Reads the records a page needs that are not in the cache, on the worker threads: a page of a large
    /// tenant spans several blocks, whose decompression is most of the time of an export. Failures are left
    /// for the caller's own read of the record to report. The caller must hold no tenant's lock: the worker
    /// threads may be waiting for one to index.
    fn warm(&self, mut missing: Vec<RecordPosition>) {
        // A page's events come in runs from the same record: one cache lookup per record, not per event.
        missing.dedup();
        missing.sort_unstable();
        missing.dedup();
        {
            let cache = self.cache.lock();
            missing.retain(|position| !cache.records.contains(position));
        }
        // Nothing or one record to read: on this thread. Handing work to the pool wakes its threads, which
        // costs more than a page served from the cache (under a loop of cached pages, the woken threads'
        // `sched_yield` was 7.5% of the server's samples).
        match missing[..] {
            [] => return,
            [position] => {
                let _ = self.record(position);
                return;
            }
            _ => {}
        }
        pool().install(|| {
            missing.par_iter().for_each(|position| {
                let _ = self.record(*position);
            })
        });
    }

    fn corrupt(&self, location: Location, reason: String) -> StoreError {
        StoreError::Corruption {
            file: self.path_of(location.record),
            offset: location.record.offset,
            reason: format!("event {}: {reason}", location.line),
        }
    }

    /// The record holding an event and the byte range of the event's JSON in it.
    fn raw(&self, location: Location) -> Result<(Arc<Decoded>, (u32, u32))> {
        let decoded = self.record(location.record)?;
        let range = self.line_range(&decoded, location)?;
        Ok((decoded, range))
    }

    /// Where the event at `location` is in its decoded record.
    fn line_range(&self, decoded: &Decoded, location: Location) -> Result<(u32, u32)> {
        decoded
            .events
            .get(location.line as usize)
            .copied()
            .ok_or_else(|| self.corrupt(location, "missing from its record".into()))
    }

    fn load(&self, location: Location) -> Result<Event> {
        let decoded = self.record(location.record)?;
        let corrupt = |reason: String| StoreError::Corruption {
            file: self.path_of(location.record),
            offset: location.record.offset,
            reason,
        };
        let text = decoded
            .event_text(location.line)
            .ok_or_else(|| corrupt(format!("record has no event {}", location.line)))?;
        serde_json::from_str(text)
            .map_err(|e| corrupt(format!("event {} does not parse: {e}", location.line)))
    }
}

impl Shared {
    fn wake_compactor(&self) {
        if let Some(signal) = self.compact_signal.lock().as_ref() {
            // A full channel already holds a wakeup.
            let _ = signal.try_send(());
        }
    }

    fn wake_merger(&self) {
        if let Some(signal) = self.merge_signal.lock().as_ref() {
            let _ = signal.try_send(());
        }
    }

    fn compact_sealed(&self) -> Result<usize> {
        let mut buffer = self.compacting.lock();
        let published = self.published_segment.load(AtomicOrdering::Relaxed);
        let mut done = 0;
        for segment in wal::list_segments(self.fs.as_ref(), &self.wal_dir)? {
            if segment >= published {
                break;
            }
            let result = self.compact_segment(segment, &mut buffer);
            let mut backlog = self.backlog.lock();
            backlog.failing = result.is_err();
            if result.is_ok() {
                backlog.compacted = backlog.compacted.max(segment);
            }
            self.backlog_changed.notify_all();
            drop(backlog);
            result?;
            done += 1;
        }
        Ok(done)
    }

    /// Rewrites one sealed, fully indexed WAL segment as a block file, points the index at it, and removes
    /// the segment. See [`compact`] for why each step is crash-safe.
    fn compact_segment(&self, segment: u32, wal_bytes: &mut Vec<u8>) -> Result<()> {
        let started = Instant::now();
        let fs = self.fs.as_ref();
        let wal_path = wal::segment_path(&self.wal_dir, segment);
        fs.read_into(&wal_path, wal_bytes)
            .map_err(|e| StoreError::io(format!("failed to read {}", wal_path.display()), e))?;
        let wal_bytes = &wal_bytes[..];
        let now = now_millis();
        let dictionary = self.block_dictionary.lock().clone();
        let compression = Compression {
            level: self.compaction_level,
            dictionary_level: self.dictionary_level,
            dictionary: dictionary.as_ref(),
            train: self.train_dictionary,
        };
        let built = compact::build_with(segment, &wal_path, wal_bytes, compression, |stored| {
            serde_json::from_value::<StoredIdempotency>(stored.clone())
                .is_ok_and(|stored| now - stored.at < IDEMPOTENCY_WINDOW_MILLIS)
        })?;
        if let Some(trained) = &built.trained {
            // Durable before the first block file that needs it.
            write_dictionary(fs, &self.blocks_dir, trained)?;
            self.dictionaries.add(trained.clone());
            *self.block_dictionary.lock() = Some(trained.clone());
            tracing::info!(
                id = format!("{:08x}", trained.id),
                bytes = trained.bytes.len(),
                "trained a dictionary for block files"
            );
        }
        // A block file already there was left by a compaction that failed before its segment was removed.
        let path = compact::block_path(&self.blocks_dir, segment);
        write_new_file(fs, &self.blocks_dir, &path, &built.bytes)?;
        // The segment's field index, from its tenants' in-memory parts, beside the block file.
        let pieces = match piece::remove(fs, &self.blocks_dir, (segment, segment))
            .and_then(|()| self.write_piece(segment, built.moves.keys()))
        {
            Ok(pieces) => pieces,
            Err(error) => {
                let _ = fs.remove(&path);
                return Err(error);
            }
        };
        // Durable: point the index at the block file and the index file, then remove the segment.
        let mut pieces: HashMap<String, TenantPiece> = pieces.into_iter().collect();
        for (tenant, moves) in &built.moves {
            let Some(index) = self.tenant(tenant) else {
                return Err(StoreError::Corruption {
                    file: wal_path,
                    offset: 0,
                    reason: format!("tenant {tenant} is not in the index"),
                });
            };
            let mut index = index.write();
            if let Some(piece) = pieces.remove(tenant) {
                attach(&mut index, piece, &self.blocks_dir)?;
            }
            for &(seq, location) in moves {
                let ordinal = (seq - 1) as u32;
                if !index.relocate(ordinal, segment, location) {
                    return Err(StoreError::Corruption {
                        file: wal_path,
                        offset: 0,
                        reason: format!("tenant {tenant} seq {seq} is not indexed in this segment"),
                    });
                }
            }
        }
        {
            // Once: a compaction tried again after removing its segment failed finds it listed.
            let mut files = self.index_files.lock();
            if files.last() != Some(&(segment, segment)) {
                files.push((segment, segment));
            }
        }
        fs.remove(&wal_path)
            .map_err(|e| StoreError::io(format!("failed to remove {}", wal_path.display()), e))?;
        wal::sync_directory(fs, &self.wal_dir)?;
        self.files.write().remove(&(false, segment));
        tracing::info!(
            segment,
            events = built.events,
            wal_bytes = wal_bytes.len(),
            block_bytes = built.bytes.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "compacted a WAL segment"
        );
        metrics::counter!("logbook_compacted_segments_total").increment(1);
        Ok(())
    }
}

impl Shared {
    /// Writes segment `segment`'s index file from the in-memory parts of `tenants` (every tenant with events
    /// there) and returns its pieces, to attach.
    fn write_piece<'a>(
        &self,
        segment: u32,
        tenants: impl Iterator<Item = &'a String>,
    ) -> Result<Vec<(String, TenantPiece)>> {
        let mut indexes = Vec::new();
        for tenant in tenants {
            match self.tenant(tenant) {
                Some(index) if index.read().memory_part(segment).is_some() => {
                    indexes.push((tenant, index))
                }
                _ => {
                    return Err(StoreError::Corruption {
                        file: wal::segment_path(&self.wal_dir, segment),
                        offset: 0,
                        reason: format!(
                            "tenant {tenant} has no index of its events in this segment"
                        ),
                    })
                }
            }
        }
        piece::write(
            self.fs.as_ref(),
            &self.blocks_dir,
            (segment, segment),
            |writer| {
                for (tenant, index) in &indexes {
                    let index = index.read();
                    let part = index.memory_part(segment).expect("checked above");
                    writer.add(tenant, part)?;
                }
                Ok(())
            },
        )
    }

    /// Merges runs of index files (see [`MERGE_FANOUT`]) until none is left (or the store is shutting down).
    /// Compaction goes on meanwhile: it only adds files after those merged.
    fn merge_index_files(&self) -> Result<usize> {
        let mut merged = 0;
        let _merging = self.merging.lock();
        while !self.stopping.load(AtomicOrdering::Relaxed) {
            let run = merge_run(&self.index_files.lock()).map(<[Segments]>::to_vec);
            let Some(run) = run else {
                break;
            };
            self.merge(&run)?;
            merged += 1;
        }
        Ok(merged)
    }

    /// Merges the index files of `run` (consecutive) into one: writes it, puts its pieces in place of theirs,
    /// then removes them. A crash before they are removed leaves both; the open keeps the merged one.
    fn merge(&self, run: &[Segments]) -> Result<()> {
        let started = Instant::now();
        let segments = (run[0].0, run[run.len() - 1].1);
        let mut plan: Vec<(String, Vec<TenantPiece>)> = Vec::new();
        // The tenants' indexes are read one by one with the map's lock released (as everywhere else that
        // takes a tenant's lock).
        let indexes: Vec<(String, Arc<RwLock<TenantIndex>>)> = self
            .tenants
            .read()
            .iter()
            .map(|(tenant, index)| (tenant.clone(), index.clone()))
            .collect();
        for (tenant, index) in indexes {
            let pieces: Vec<TenantPiece> = index
                .read()
                .pieces()
                .filter(|piece| piece.within(segments))
                .cloned()
                .collect();
            if !pieces.is_empty() {
                plan.push((tenant, pieces));
            }
        }
        plan.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let fs = self.fs.as_ref();
        piece::remove(fs, &self.blocks_dir, segments)?;
        let written = piece::write(fs, &self.blocks_dir, segments, |writer| {
            for (tenant, pieces) in &plan {
                if self.stopping.load(AtomicOrdering::Relaxed) {
                    return Err(std::io::Error::other("the store is shutting down"));
                }
                let mut group: Vec<&TenantPiece> = Vec::new();
                let mut events = 0;
                let mut write_group = |group: &mut Vec<&TenantPiece>| {
                    let written = match group[..] {
                        [] => Ok(()),
                        [piece] => writer.copy(tenant, piece),
                        _ => writer.merge(tenant, group),
                    };
                    group.clear();
                    written
                };
                for piece in pieces {
                    if piece.events() >= self.merge_events {
                        write_group(&mut group)?;
                        events = 0;
                    }
                    group.push(piece);
                    events += piece.events();
                    if events >= self.merge_events {
                        write_group(&mut group)?;
                        events = 0;
                    }
                }
                write_group(&mut group)?;
            }
            Ok(())
        })?;
        let mut by_tenant: HashMap<String, Vec<TenantPiece>> = HashMap::new();
        for (tenant, piece) in written {
            by_tenant.entry(tenant).or_default().push(piece);
        }
        let file = piece::piece_path(&self.blocks_dir, segments);
        let corrupt = |reason: String| StoreError::Corruption {
            file: file.clone(),
            offset: 0,
            reason,
        };
        for (tenant, pieces) in by_tenant {
            let index = self
                .tenant(&tenant)
                .ok_or_else(|| corrupt(format!("tenant {tenant} is not in the index")))?;
            index
                .write()
                .replace(segments, pieces)
                .map_err(|reason| corrupt(format!("tenant {tenant}: {reason}")))?;
        }
        {
            let mut files = self.index_files.lock();
            let at = files
                .iter()
                .position(|file| file == &run[0])
                .expect("the run is listed");
            files.splice(at..at + run.len(), [segments]);
        }
        for &merged in run {
            piece::remove(fs, &self.blocks_dir, merged)?;
        }
        tracing::info!(
            first_segment = segments.0,
            last_segment = segments.1,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "merged index files"
        );
        metrics::counter!("logbook_index_merges_total").increment(1);
        Ok(())
    }
}

/// The compactor thread: compacts sealed segments each time it is woken, until the store shuts down. It runs
/// at a lower CPU priority (nice 10), so that under load ingest and queries go first and compaction catches
/// up when the machine has time.
fn run_compactor(shared: Arc<Shared>, wakeups: Receiver<()>) {
    lower_priority(10);
    while wakeups.recv().is_ok() {
        match shared.compact_sealed() {
            Ok(_) => shared.wake_merger(),
            // The WAL segment stays and stays readable; the next wakeup tries again.
            Err(error) => tracing::warn!(%error, "compaction failed"),
        }
    }
}

/// Sets the calling thread's nice value (on Linux, PRIO_PROCESS with a thread id changes only that thread's).
/// A failure only leaves the default priority.
fn lower_priority(nice: i32) {
    if let Err(error) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice) {
        tracing::debug!(%error, nice, "could not lower a background thread's priority");
    }
}

/// The merger thread: merges index files each time the compactor has compacted, until the store shuts down.
/// It runs at the lowest CPU priority (nice 19): merging only makes files fewer and smaller, so it waits for
/// ingest, queries and compaction, which at nice 10 would otherwise wait for it (a merge of 8 segments'
/// files at 1M events takes ~0.9 s).
fn run_merger(shared: Arc<Shared>, wakeups: Receiver<()>) {
    lower_priority(19);
    while wakeups.recv().is_ok() {
        if let Err(error) = shared.merge_index_files() {
            // The files merged stay in use; the next wakeup tries again.
            if !shared.stopping.load(AtomicOrdering::Relaxed) {
                tracing::warn!(%error, "merging index files failed");
            }
        }
    }
}

struct WriteRequest {
    request: AppendRequest,
    reply: tokio::sync::oneshot::Sender<AppendReply>,
}

/// The embedded storage engine.
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    sender: Mutex<Option<Sender<WriteRequest>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    indexer: Mutex<Option<JoinHandle<()>>>,
    /// The compactor and merger threads.
    compactor: Mutex<Option<(JoinHandle<()>, JoinHandle<()>)>>,
    _lock: File,
}

impl EmbeddedStore {
    /// Opens (or creates) a data directory: takes its lock, opens the catalog, replays the log into the index.
    pub fn open(options: StoreOptions) -> Result<EmbeddedStore> {
        let data_dir = &options.data_dir;
        fs::create_dir_all(data_dir)
            .map_err(|e| StoreError::io(format!("failed to create {}", data_dir.display()), e))?;
        let lock_path = data_dir.join("LOCK");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::io(format!("failed to open {}", lock_path.display()), e))?;
        lock.try_lock().map_err(|_| StoreError::Io {
            context: format!(
                "the data directory {} is in use by another Logbook process",
                data_dir.display()
            ),
            source: std::io::Error::from(std::io::ErrorKind::WouldBlock),
        })?;
        let wal_dir = data_dir.join("wal");
        options
            .fs
            .create_dir_all(&wal_dir)
            .map_err(|e| StoreError::io(format!("failed to create {}", wal_dir.display()), e))?;
        let blocks_dir = data_dir.join("blocks");
        options
            .fs
            .create_dir_all(&blocks_dir)
            .map_err(|e| StoreError::io(format!("failed to create {}", blocks_dir.display()), e))?;
        let catalog = Catalog::open(&data_dir.join("catalog.sqlite"))?;

        let started = Instant::now();
        let now = now_millis();
        let dictionaries = Arc::new(Dictionaries::default());
        let block_dictionary = read_dictionaries(options.fs.as_ref(), &blocks_dir, &dictionaries)?;
        let mut recovery = Recovery {
            wal_dir: wal_dir.clone(),
            blocks_dir: blocks_dir.clone(),
            now,
            dictionaries: dictionaries.clone(),
            ..Recovery::default()
        };
        let mut pending: Vec<(RecordPosition, Vec<u8>)> = Vec::new();
        // Compacted segments first (they are older than every WAL segment), then the WAL.
        let compacted = compact::settle(options.fs.as_ref(), &blocks_dir, &wal_dir)?;
        // Each compacted segment's index file is attached before the log is replayed, so that its events'
        // fields are not indexed again; one that is missing or damaged is written again after the replay.
        // Merged files are tried first (widest first): a crash during a merge leaves the merged file beside
        // the files it merged, which then overlap it and are removed.
        let fs = options.fs.as_ref();
        let mut index_files = piece::list(fs, &blocks_dir)?;
        index_files.sort_unstable_by_key(|&(first, last)| (std::cmp::Reverse(last - first), first));
        let mut attached: Vec<Segments> = Vec::new();
        for segments in index_files {
            let overlaps = attached
                .iter()
                .any(|&(first, last)| segments.0 <= last && first <= segments.1);
            let compacted_all =
                (segments.0..=segments.1).all(|segment| compacted.contains(&segment));
            if options.rebuild_index || overlaps || !compacted_all {
                piece::remove(fs, &blocks_dir, segments)?;
                continue;
            }
            let Some(pieces) = piece::open(fs, &blocks_dir, segments)? else {
                continue;
            };
            for (tenant, piece) in pieces {
                attach(
                    recovery.tenants.entry(tenant).or_default(),
                    piece,
                    &blocks_dir,
                )?;
            }
            attached.push(segments);
            recovery.with_pieces.extend(segments.0..=segments.1);
        }
        for &segment in &compacted {
            compact::read(
                options.fs.as_ref(),
                &blocks_dir,
                segment,
                |position, payload| {
                    pending.push((position, payload.to_vec()));
                    if pending.len() >= RECOVERY_BATCH_RECORDS {
                        recovery.apply(std::mem::take(&mut pending))?;
                    }
                    Ok(())
                },
            )?;
        }
        let last = wal::recover(options.fs.as_ref(), &wal_dir, |position, kind, payload| {
            if kind != KIND_EVENTS {
                return Err(recovery.corrupt(position, format!("unknown record kind {kind}")));
            }
            pending.push((position, payload.to_vec()));
            if pending.len() >= RECOVERY_BATCH_RECORDS {
                recovery.apply(std::mem::take(&mut pending))?;
            }
            Ok(())
        })?;
        recovery.apply(pending)?;
        recovery.finish()?;
        let Recovery {
            mut tenants,
            request_keys,
            event_keys,
            events,
            with_pieces,
            ..
        } = recovery;
        for (tenant, index) in &tenants {
            index
                .check_parts(&with_pieces)
                .map_err(|reason| StoreError::Corruption {
                    file: blocks_dir.clone(),
                    offset: 0,
                    reason: format!(
                        "tenant {tenant}: {reason} (removing the .idx files has them written again)"
                    ),
                })?;
        }
        for &segment in compacted
            .iter()
            .filter(|segment| !with_pieces.contains(segment))
        {
            write_missing_piece(fs, &blocks_dir, segment, &mut tenants)?;
            attached.push((segment, segment));
        }
        attached.sort_unstable();
        tracing::info!(
            events,
            tenants = tenants.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "replayed the write-ahead log"
        );

        let first_segment = compacted.last().map_or(1, |last| last + 1);
        let wal_writer = WalWriter::open(
            options.fs.clone(),
            &wal_dir,
            last,
            first_segment,
            options.segment_bytes,
        )?;
        let seqs = tenants
            .iter()
            .map(|(tenant, index)| (tenant.clone(), index.len() as u64))
            .collect();
        let (compact_signal, compact_wakeups) = crossbeam_channel::bounded(1);
        let (merge_signal, merge_wakeups) = crossbeam_channel::bounded(1);
        let shared = Arc::new(Shared {
            wal_dir,
            blocks_dir,
            fs: options.fs.clone(),
            catalog,
            tenants: RwLock::new(
                tenants
                    .into_iter()
                    .map(|(tenant, index)| (tenant, Arc::new(RwLock::new(index))))
                    .collect(),
            ),
            files: RwLock::new(HashMap::new()),
            write_failure: Mutex::new(None),
            loading: Mutex::new(HashMap::new()),
            cache: Mutex::new(RecordCache {
                records: LruCache::unbounded(),
                bytes: 0,
                budget: options.cache_bytes,
            }),
            events: AtomicU64::new(events),
            published_segment: AtomicU32::new(last.map_or(0, |(segment, _)| segment)),
            compact_signal: Mutex::new(options.background_compaction.then_some(compact_signal)),
            merge_signal: Mutex::new(options.background_compaction.then_some(merge_signal)),
            merging: Mutex::new(()),
            stopping: AtomicBool::new(false),
            compacting: Mutex::new(Vec::new()),
            index_files: Mutex::new(attached),
            merge_events: options.merge_events,
            dictionaries,
            block_dictionary: Mutex::new(block_dictionary.filter(|_| options.block_dictionary)),
            train_dictionary: options.block_dictionary,
            compaction_level: options.compaction_level,
            dictionary_level: options.dictionary_level,
            backlog: Mutex::new(Backlog {
                compacted: first_segment - 1,
                failing: false,
            }),
            backlog_changed: Condvar::new(),
        });
        let (sender, receiver) = crossbeam_channel::unbounded();
        let (publisher, published) = crossbeam_channel::bounded(4);
        let indexer_shared = shared.clone();
        let indexer = std::thread::Builder::new()
            .name("logbook-indexer".into())
            .spawn(move || run_indexer(indexer_shared, published))
            .map_err(|e| StoreError::io("failed to start the indexer thread", e))?;
        let state = WriterState {
            wal: wal_writer,
            shared: shared.clone(),
            seqs,
            request_keys,
            event_keys,
            last_prune: now,
            publisher,
        };
        let writer = std::thread::Builder::new()
            .name("logbook-wal-writer".into())
            .spawn(move || state.run(receiver))
            .map_err(|e| StoreError::io("failed to start the writer thread", e))?;
        let compactor = if options.background_compaction {
            let compactor_shared = shared.clone();
            let thread = std::thread::Builder::new()
                .name("logbook-compactor".into())
                .spawn(move || run_compactor(compactor_shared, compact_wakeups))
                .map_err(|e| StoreError::io("failed to start the compactor thread", e))?;
            let merger_shared = shared.clone();
            let merger = std::thread::Builder::new()
                .name("logbook-merger".into())
                .spawn(move || run_merger(merger_shared, merge_wakeups))
                .map_err(|e| StoreError::io("failed to start the merger thread", e))?;
            shared.wake_compactor();
            Some((thread, merger))
        } else {
            None
        };
        Ok(EmbeddedStore {
            shared,
            sender: Mutex::new(Some(sender)),
            writer: Mutex::new(Some(writer)),
            indexer: Mutex::new(Some(indexer)),
            compactor: Mutex::new(compactor),
            _lock: lock,
        })
    }

    /// Compacts every sealed WAL segment (all but the one being written) into a block file, oldest first, and
    /// returns how many it compacted; then merges index files as the background compactor does after each
    /// segment roll.
    pub fn compact(&self) -> Result<usize> {
        let compacted = self.shared.compact_sealed()?;
        self.shared.merge_index_files()?;
        Ok(compacted)
    }

    /// The index files, by the segments each covers (first and last), oldest first.
    pub fn index_files(&self) -> Vec<(u32, u32)> {
        self.shared.index_files.lock().clone()
    }

    /// The catalog, for administration commands that run without a server.
    pub fn catalog(&self) -> &Catalog {
        &self.shared.catalog
    }

    /// Installs or generates the admin key (see [`Catalog::ensure_admin_key`]).
    pub fn ensure_admin_key(&self, configured: Option<&str>) -> Result<Option<String>> {
        self.shared.catalog.ensure_admin_key(configured)
    }

    /// Every event of every tenant in log order, for verification and export tools.
    pub fn for_each_event(&self, mut visit: impl FnMut(&Event)) -> Result<()> {
        let tenants: Vec<(String, Arc<RwLock<TenantIndex>>)> = self
            .shared
            .tenants
            .read()
            .iter()
            .map(|(t, i)| (t.clone(), i.clone()))
            .collect();
        for (_, index) in tenants {
            let index = index.read();
            for ordinal in 0..index.len() as u32 {
                visit(&self.shared.load(index.entry(ordinal).location())?);
            }
        }
        Ok(())
    }
}

fn dictionary_path(blocks_dir: &Path, id: u32) -> PathBuf {
    blocks_dir.join(format!("{id:08x}.dict"))
}

/// Stores a dictionary for block files (synced, with its directory entry): its bytes, then their CRC32C
/// (u32 LE), so that one torn by a crash before any block used it is told from a whole one.
fn write_dictionary(fs: &dyn FileSystem, blocks_dir: &Path, dictionary: &Dictionary) -> Result<()> {
    let path = dictionary_path(blocks_dir, dictionary.id);
    let mut bytes = dictionary.bytes.to_vec();
    bytes.extend_from_slice(&crc32c::crc32c(&dictionary.bytes).to_le_bytes());
    write_new_file(fs, blocks_dir, &path, &bytes)
}

/// Writes `bytes` as the file `path` in `directory` (replacing one left by a failed attempt), syncs it and
/// its directory entry; a file that could not be written whole is removed.
fn write_new_file(fs: &dyn FileSystem, directory: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    if fs.len(path).is_ok() {
        fs.remove(path)
            .map_err(|e| StoreError::io(format!("failed to remove {}", path.display()), e))?;
    }
    let file = fs
        .create_new(path)
        .map_err(|e| StoreError::io(format!("failed to create {}", path.display()), e))?;
    let written = file
        .write_all_at(bytes, 0)
        .map_err(|e| StoreError::io(format!("failed to write {}", path.display()), e))
        .and_then(|()| {
            file.sync_data()
                .map_err(|e| StoreError::io(format!("failed to sync {}", path.display()), e))
        })
        .and_then(|()| wal::sync_directory(fs, directory));
    if written.is_err() {
        let _ = fs.remove(path);
    }
    written
}

/// Reads the dictionaries of the block files into `dictionaries`; returns the last by name, for new blocks
/// (a store trains one; a second is left only by a crash between storing it and the first block using it).
fn read_dictionaries(
    fs: &dyn FileSystem,
    blocks_dir: &Path,
    dictionaries: &Dictionaries,
) -> Result<Option<Dictionary>> {
    let mut names = fs
        .list(blocks_dir)
        .map_err(|e| StoreError::io(format!("failed to read {}", blocks_dir.display()), e))?;
    names.sort_unstable();
    let mut last = None;
    for name in names.iter().filter(|name| name.ends_with(".dict")) {
        let path = blocks_dir.join(name);
        let mut bytes = fs
            .read(&path)
            .map_err(|e| StoreError::io(format!("failed to read {}", path.display()), e))?;
        let whole = bytes.len() > 4 && {
            let (content, crc) = bytes.split_at(bytes.len() - 4);
            crc32c::crc32c(content).to_le_bytes() == crc
        };
        bytes.truncate(bytes.len().saturating_sub(4));
        let dictionary = Dictionary::new(bytes)
            .ok()
            .filter(|dictionary| whole && dictionary_path(blocks_dir, dictionary.id) == path);
        let Some(dictionary) = dictionary else {
            // Blocks are written only after their dictionary is whole and synced: no block uses this one
            // (if one did, its damage shows when that block is read).
            tracing::warn!(file = %path.display(), "removing a torn dictionary file");
            fs.remove(&path)
                .map_err(|e| StoreError::io(format!("failed to remove {}", path.display()), e))?;
            wal::sync_directory(fs, blocks_dir)?;
            continue;
        };
        dictionaries.add(dictionary.clone());
        last = Some(dictionary);
    }
    Ok(last)
}

/// Records decoded together (in parallel) during recovery.
const RECOVERY_BATCH_RECORDS: usize = 64;

/// Puts an index file's piece in a tenant's index; a piece that does not fit the log is corruption of its file.
fn attach(index: &mut TenantIndex, piece: TenantPiece, blocks_dir: &Path) -> Result<()> {
    let file = piece::piece_path(blocks_dir, piece.segments);
    index
        .attach(piece)
        .map_err(|reason| StoreError::Corruption {
            file,
            offset: 0,
            reason,
        })
}

/// Writes the index file of a compacted segment that had none at open (a crash came between its block file
/// and its index file, or the data directory is older than index files) from the parts the replay built.
fn write_missing_piece(
    fs: &dyn FileSystem,
    blocks_dir: &Path,
    segment: u32,
    tenants: &mut HashMap<String, TenantIndex>,
) -> Result<()> {
    let mut names: Vec<&String> = tenants
        .iter()
        .filter(|(_, index)| index.memory_part(segment).is_some())
        .map(|(tenant, _)| tenant)
        .collect();
    names.sort_unstable();
    tracing::info!(segment, "writing a compacted segment's index file");
    let written = piece::write(fs, blocks_dir, (segment, segment), |writer| {
        for tenant in names {
            writer.add(
                tenant,
                tenants[tenant].memory_part(segment).expect("filtered"),
            )?;
        }
        Ok(())
    })?;
    for (tenant, piece) in written {
        let index = tenants
            .get_mut(&tenant)
            .expect("written from this tenant's part");
        attach(index, piece, blocks_dir)?;
    }
    Ok(())
}

/// What replaying the log builds: the index, the live idempotency keys, the event count.
#[derive(Default)]
struct Recovery {
    wal_dir: PathBuf,
    blocks_dir: PathBuf,
    now: Millis,
    tenants: HashMap<String, TenantIndex>,
    request_keys: HashMap<(String, String), StoredIdempotency>,
    event_keys: HashMap<(String, String), (Receipt, Millis)>,
    events: u64,
    /// The last batch, decoded but not yet indexed: it is indexed while the next one decodes.
    decoded: Option<Vec<DecodedRecord>>,
    /// The compacted segments whose index files are attached: their events are parsed only for their entries.
    with_pieces: HashSet<u32>,
    dictionaries: Arc<Dictionaries>,
}

/// A decompressed and parsed record.
type DecodedRecord = (RecordPosition, RecordHeader, Vec<Event>);

/// The error for a damaged record found during recovery.
fn corrupt_record(
    wal_dir: &Path,
    blocks_dir: &Path,
    position: RecordPosition,
    reason: String,
) -> StoreError {
    StoreError::Corruption {
        file: record_path(wal_dir, blocks_dir, position),
        offset: position.offset,
        reason,
    }
}

/// Decompresses and parses a batch of records on the worker threads.
fn decode_batch(
    wal_dir: &Path,
    blocks_dir: &Path,
    with_pieces: &HashSet<u32>,
    dictionaries: &Dictionaries,
    batch: Vec<(RecordPosition, Vec<u8>)>,
) -> Result<Vec<DecodedRecord>> {
    let decode = |position: RecordPosition, payload: Vec<u8>| -> Result<DecodedRecord> {
        let corrupt = |reason: String| corrupt_record(wal_dir, blocks_dir, position, reason);
        let text = codec::into_text(payload, dictionaries)
            .map_err(|e| corrupt(format!("record does not decompress: {e}")))?;
        let decoded =
            Decoded::new(text).map_err(|e| corrupt(format!("record is not UTF-8: {e}")))?;
        let header: RecordHeader = serde_json::from_str(decoded.header())
            .map_err(|e| corrupt(format!("bad record header: {e}")))?;
        let mut events = Vec::with_capacity(decoded.events.len());
        // Only the index reads these events (and drops them): `changes` is not kept, and neither are the
        // fields an index file already holds.
        let parse = if position.compacted && with_pieces.contains(&position.segment) {
            Event::from_stored_json_for_entries
        } else {
            Event::from_stored_json_for_index
        };
        for line in 0..decoded.events.len() as u32 {
            let text = decoded.event_text(line).expect("line exists");
            events.push(
                parse(text).map_err(|e| corrupt(format!("event {line} does not parse: {e}")))?,
            );
        }
        Ok((position, header, events))
    };
    pool().install(|| {
        batch
            .into_par_iter()
            .map(|(position, payload)| decode(position, payload))
            .collect()
    })
}

impl Recovery {
    fn corrupt(&self, position: RecordPosition, reason: String) -> StoreError {
        corrupt_record(&self.wal_dir, &self.blocks_dir, position, reason)
    }

    /// Decodes a batch of records while the batch before it is indexed (both on the worker threads).
    fn apply(&mut self, batch: Vec<(RecordPosition, Vec<u8>)>) -> Result<()> {
        let ready = self.decoded.take();
        let (wal_dir, blocks_dir) = (self.wal_dir.clone(), self.blocks_dir.clone());
        let with_pieces = std::mem::take(&mut self.with_pieces);
        let dictionaries = self.dictionaries.clone();
        let (decoded, indexed) = pool().install(|| {
            rayon::join(
                || decode_batch(&wal_dir, &blocks_dir, &with_pieces, &dictionaries, batch),
                || ready.map_or(Ok(()), |ready| self.index(ready)),
            )
        });
        self.with_pieces = with_pieces;
        indexed?;
        self.decoded = Some(decoded?);
        Ok(())
    }

    /// Indexes the last batch.
    fn finish(&mut self) -> Result<()> {
        match self.decoded.take() {
            Some(ready) => self.index(ready),
            None => Ok(()),
        }
    }

    /// Indexes decoded records in log order: seq checks, idempotency keys, then each tenant's share.
    fn index(&mut self, decoded: Vec<DecodedRecord>) -> Result<()> {
        // In log order: seq checks, idempotency keys, and each tenant's share of the batch.
        let mut per_tenant: HashMap<&str, Vec<(&Event, Location)>> = HashMap::new();
        for (position, header, events) in &decoded {
            for stored in header.idempotency.iter().chain(&header.requests) {
                if self.now - stored.at < IDEMPOTENCY_WINDOW_MILLIS {
                    self.request_keys.insert(
                        (stored.key.scope.clone(), stored.key.key.clone()),
                        stored.clone(),
                    );
                }
            }
            for (line, event) in events.iter().enumerate() {
                let queued = per_tenant.entry(event.tenant.as_str()).or_default();
                let indexed = self.tenants.get(&event.tenant).map_or(0, TenantIndex::len);
                let previous = (indexed + queued.len()) as u64;
                if event.seq != previous + 1 {
                    let reason = format!(
                        "tenant {} seq {} follows seq {previous}",
                        event.tenant, event.seq
                    );
                    return Err(self.corrupt(*position, reason));
                }
                queued.push((
                    event,
                    Location {
                        record: *position,
                        line: line as u32,
                    },
                ));
                if let Some(key) = &event.idempotency_key {
                    if self.now - event.received_at < IDEMPOTENCY_WINDOW_MILLIS {
                        self.event_keys.insert(
                            (event.tenant.clone(), key.clone()),
                            (receipt_of(event), event.received_at),
                        );
                    }
                }
                self.events += 1;
            }
        }
        // Then the tenants' indexes, which are independent, on every core.
        for tenant in per_tenant.keys() {
            if !self.tenants.contains_key(*tenant) {
                self.tenants
                    .insert(tenant.to_string(), TenantIndex::default());
            }
        }
        let work: Vec<(&mut TenantIndex, Vec<(&Event, Location)>)> = self
            .tenants
            .iter_mut()
            .filter_map(|(tenant, index)| Some((index, per_tenant.remove(tenant.as_str())?)))
            .collect();
        pool().install(|| {
            work.into_par_iter().for_each(|(index, events)| {
                for (event, location) in events {
                    index.insert(event, location);
                }
            })
        });
        Ok(())
    }
}

fn receipt_of(event: &Event) -> Receipt {
    Receipt {
        id: event.id.clone(),
        seq: event.seq,
        hash: event.hash.clone(),
    }
}

/// Bounds on `created_at` implied by top-level conditions of the filter, inclusive.
fn created_at_bounds(filter: &Filter) -> (i64, i64) {
    match filter {
        Filter::And(parts) => parts
            .iter()
            .map(created_at_bounds)
            .fold((MIN_MILLIS, MAX_MILLIS), |(low, high), (l, h)| {
                (low.max(l), high.min(h))
            }),
        Filter::Condition(condition) if condition.field == Field::CreatedAt => {
            match &condition.predicate {
                Predicate::Eq(Operand::Number(n)) => (*n, *n),
                Predicate::Gt(Operand::Number(n)) => (n.saturating_add(1), MAX_MILLIS),
                Predicate::Gte(Operand::Number(n)) => (*n, MAX_MILLIS),
                Predicate::Lt(Operand::Number(n)) => (MIN_MILLIS, n.saturating_sub(1)),
                Predicate::Lte(Operand::Number(n)) => (MIN_MILLIS, *n),
                _ => (MIN_MILLIS, MAX_MILLIS),
            }
        }
        _ => (MIN_MILLIS, MAX_MILLIS),
    }
}

/// Hands a rolled-up field's counts to the buckets: the `top` values with most events (ties by name), then
/// "other" (the bucket's events without one of them: each event has at most one value of a rolled-up field).
fn name_top_groups(rolled_up: ValueCounts, top: usize, buckets: &mut [Bucket]) -> Vec<String> {
    let ValueCounts { names, counts } = rolled_up;
    let width = names.len();
    let totals: Vec<u64> = (0..width)
        .map(|number| counts[number..].iter().step_by(width).sum())
        .collect();
    let mut ranked: Vec<usize> = (0..width).collect();
    ranked.sort_by(|&a, &b| {
        totals[b]
            .cmp(&totals[a])
            .then_with(|| names[a].cmp(&names[b]))
    });
    ranked.truncate(top);
    for (number, bucket) in buckets.iter_mut().enumerate() {
        let row = &counts[number * width..(number + 1) * width];
        bucket.groups = ranked.iter().map(|&value| row[value]).collect();
        let named: u64 = bucket.groups.iter().sum();
        bucket.groups.push(bucket.count - named);
    }
    let mut groups: Vec<String> = ranked.iter().map(|&value| names[value].clone()).collect();
    groups.push("other".into());
    groups
}

/// The values of a field of one event, printed as the API prints them (for grouping).
fn field_values(event: &Event, field: &Field) -> Vec<String> {
    if let Some(text) = logbook_core::filter::eval::text_value(event, field) {
        return vec![text.to_string()];
    }
    let mut values = Vec::new();
    logbook_core::filter::eval::json_values(event, field, &mut values);
    values
        .into_iter()
        .filter(|value| !value.is_object() && !value.is_array())
        .map(|value| match value {
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        })
        .collect()
}

/// Makes a per-request copy of a group-wide failure.
fn copy_error(error: &StoreError) -> StoreError {
    match error {
        StoreError::NoSpace => StoreError::NoSpace,
        StoreError::Poisoned(reason) => StoreError::Poisoned(reason.clone()),
        other => StoreError::Poisoned(other.to_string()),
    }
}

impl EmbeddedStore {
    /// Up to `wanted` events of one tenant matching `query`, strictly after `after`, in the query's order, as
    /// `(created_at, ordinal)`. Only inexact candidates are read (and checked with the evaluator).
    /// `reach`, when set, is the last `created_at` worth returning in the query's order (the cross-tenant
    /// listing already holds enough better keys).
    fn matching_keys(
        &self,
        index: &TenantIndex,
        query: &ListQuery,
        after: Option<Position>,
        wanted: usize,
        reach: Option<i64>,
    ) -> Result<Vec<(i64, u32)>> {
        let (mut low, mut high) = created_at_bounds(&query.filter);
        if let Some(since) = query.since {
            low = low.max(since);
        }
        if let Some(until) = query.until {
            high = high.min(until.saturating_sub(1));
        }
        match (reach, query.order) {
            (Some(reach), Order::Desc) => low = low.max(reach),
            (Some(reach), Order::Asc) => high = high.min(reach),
            (None, _) => {}
        }
        let after = after.map(|position| {
            (
                position.created_at,
                position.seq.saturating_sub(1).min(u32::MAX as u64) as u32,
            )
        });
        // Nothing before the cursor is visited: the parts there need not be planned.
        match (after, query.order) {
            (Some((created_at, _)), Order::Desc) => high = high.min(created_at),
            (Some((created_at, _)), Order::Asc) => low = low.max(created_at),
            (None, _) => {}
        }
        // The parts nearest the listing's start first (one, then four times as many each time the page is
        // not full): every key found in a window from the start comes before any key outside it.
        // (Without a filter nothing is planned: the whole range at once.)
        let mut count = 1;
        loop {
            let nearest = match query.filter {
                Filter::All => None,
                _ => index.nearest_parts_bound(low, high, query.order, count),
            };
            let (window_low, window_high, whole) = match nearest {
                Some(bound) if query.order == Order::Desc => (bound, high, false),
                Some(bound) => (low, bound, false),
                None => (low, high, true),
            };
            let keys = self.window_keys(index, query, after, wanted, window_low, window_high)?;
            if whole || keys.len() >= wanted {
                return Ok(keys);
            }
            count = count.saturating_mul(4);
        }
    }

    /// [`Self::matching_keys`] among the events created in `[low, high]`.
    fn window_keys(
        &self,
        index: &TenantIndex,
        query: &ListQuery,
        after: Option<(i64, u32)>,
        wanted: usize,
        low: i64,
        high: i64,
    ) -> Result<Vec<(i64, u32)>> {
        let candidates = index.plan_between(&query.filter, low, high);
        let mut keys = Vec::with_capacity(wanted.min(1024));
        let mut failure = None;
        index.scan(
            candidates.bitmap.as_ref(),
            low,
            high,
            after,
            query.order,
            |ordinal| {
                let entry = index.entry(ordinal);
                if !candidates.exact {
                    let checked = self
                        .shared
                        .raw(entry.location())
                        .and_then(|(decoded, range)| {
                            let text = &decoded.text[range.0 as usize..range.1 as usize];
                            let event: Event = serde_json::from_str(text).map_err(|e| {
                                self.shared
                                    .corrupt(entry.location(), format!("event does not parse: {e}"))
                            })?;
                            Ok(query.filter.matches(&event))
                        });
                    match checked {
                        Ok(true) => {}
                        Ok(false) => return true,
                        Err(error) => {
                            failure = Some(error);
                            return false;
                        }
                    }
                }
                keys.push((entry.created_at, ordinal));
                keys.len() < wanted
            },
        );
        match failure {
            Some(error) => Err(error),
            None => Ok(keys),
        }
    }

    /// Starts reading the records of the page after `next` on the worker threads, for a client that takes
    /// large pages (an export is one) and will most likely ask for it while it handles this one. Only when
    /// the filter is answered by the index alone: finding the next page must not cost reading events.
    fn read_ahead(&self, index: &TenantIndex, query: &ListQuery, next: Position) {
        if query.limit < READ_AHEAD_LIMIT || !index.plan(&query.filter).exact {
            return;
        }
        let Ok(keys) = self.matching_keys(index, query, Some(next), query.limit, None) else {
            return;
        };
        let positions = keys
            .iter()
            .map(|&(_, ordinal)| index.entry(ordinal).location().record)
            .collect();
        let shared = self.shared.clone();
        pool().spawn(move || shared.warm(positions));
    }

    /// One event of `index` as its stored JSON. `last` keeps the record read last: a page's events mostly
    /// share their records (a block holds a run of one tenant's events), which are then looked up once.
    fn raw_event(
        &self,
        index: &TenantIndex,
        ordinal: u32,
        last: &mut Option<(RecordPosition, Arc<Decoded>)>,
    ) -> Result<RawEvent> {
        let entry = index.entry(ordinal);
        let decoded = match last {
            Some((position, decoded)) if *position == entry.location().record => decoded,
            _ => {
                let decoded = self.shared.record(entry.location().record)?;
                &last.insert((entry.location().record, decoded)).1
            }
        };
        let range = self.shared.line_range(decoded, entry.location())?;
        let position = Position {
            created_at: entry.created_at,
            seq: u64::from(ordinal) + 1,
        };
        RawEvent::new(decoded.text.clone(), range, position).ok_or_else(|| {
            self.shared
                .corrupt(entry.location(), "event line out of its record".into())
        })
    }
}

impl EventStore for EmbeddedStore {
    fn submit(&self, request: AppendRequest) -> Result<PendingAppend> {
        let (reply, outcome) = tokio::sync::oneshot::channel();
        let sender = self.sender.lock();
        let sender = sender.as_ref().ok_or(StoreError::ShuttingDown)?;
        sender
            .send(WriteRequest { request, reply })
            .map_err(|_| StoreError::ShuttingDown)?;
        Ok(PendingAppend::new(outcome))
    }

    fn get(&self, tenant: &str, id: &str) -> Result<Option<Event>> {
        let Some(index) = self.shared.tenant(tenant) else {
            return Ok(None);
        };
        let index = index.read();
        match index.ordinal_of_id(id) {
            Some(ordinal) => Ok(Some(self.shared.load(index.entry(ordinal).location())?)),
            None => Ok(None),
        }
    }

    fn list(&self, tenant: &str, query: &ListQuery, after: Option<Position>) -> Result<Page> {
        let Some(tenant_index) = self.shared.tenant(tenant) else {
            return Ok(Page {
                items: Vec::new(),
                next: None,
            });
        };
        let index = tenant_index.read();
        let mut keys = self.matching_keys(&index, query, after, query.limit + 1, None)?;
        let has_more = keys.len() > query.limit;
        keys.truncate(query.limit);
        let records = keys
            .iter()
            .map(|&(_, ordinal)| index.entry(ordinal).location().record)
            .collect();
        // Not under the tenant's lock (see `warm`). Ordinals stay valid; a record that compaction moves
        // meanwhile is only read again from its new place.
        drop(index);
        self.shared.warm(records);
        let index = tenant_index.read();
        let mut last = None;
        let items = keys
            .iter()
            .map(|&(_, ordinal)| self.raw_event(&index, ordinal, &mut last))
            .collect::<Result<Vec<_>>>()?;
        let next = if has_more {
            items.last().map(|item| item.position)
        } else {
            None
        };
        if let Some(next) = next {
            self.read_ahead(&index, query, next);
        }
        Ok(Page { items, next })
    }

    fn list_all(
        &self,
        query: &ListQuery,
        after: Option<&TenantPosition>,
    ) -> Result<CrossTenantPage> {
        // Keys first (no event text is read for exact filters), then only the page's events.
        let mut tenants: Vec<(String, Arc<RwLock<TenantIndex>>)> = self
            .shared
            .tenants
            .read()
            .iter()
            .map(|(tenant, index)| (tenant.clone(), index.clone()))
            .collect();
        tenants.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let wanted = query.limit + 1;
        // Tenants are visited newest first (oldest first for `asc`). Once `wanted` keys are held, only keys up
        // to the worst of them can still enter the page: later tenants are scanned only that far, and a tenant
        // whose events all lie beyond it ends the walk.
        let spans: Vec<Option<(i64, i64)>> = tenants
            .iter()
            .map(|(_, index)| index.read().created_at_span())
            .collect();
        let mut visit: Vec<usize> = (0..tenants.len())
            .filter(|&number| spans[number].is_some())
            .collect();
        match query.order {
            Order::Desc => {
                visit.sort_by_key(|&number| std::cmp::Reverse(spans[number].map(|s| s.1)))
            }
            Order::Asc => visit.sort_by_key(|&number| spans[number].map(|s| s.0)),
        }
        let better = |a: &(i64, usize, u32), b: &(i64, usize, u32)| match query.order {
            Order::Asc => a.cmp(b),
            Order::Desc => b.cmp(a),
        };
        // (created_at, tenant number in name order, ordinal)
        let mut keys: Vec<(i64, usize, u32)> = Vec::new();
        let mut reach: Option<i64> = None;
        for number in visit {
            let (tenant, index) = &tenants[number];
            if let (Some(reach), Some((oldest, newest))) = (reach, spans[number]) {
                let beyond = match query.order {
                    Order::Desc => newest < reach,
                    Order::Asc => oldest > reach,
                };
                if beyond {
                    break;
                }
            }
            let resume = after.map(|after| crate::tenant_resume(tenant, after, query.order));
            let found = self.matching_keys(&index.read(), query, resume, wanted, reach)?;
            keys.extend(
                found
                    .into_iter()
                    .map(|(created_at, ordinal)| (created_at, number, ordinal)),
            );
            if keys.len() >= wanted {
                keys.sort_unstable_by(better);
                keys.truncate(wanted);
                reach = keys.last().map(|key| key.0);
            }
        }
        keys.sort_unstable_by(better);
        let has_more = keys.len() > query.limit;
        keys.truncate(query.limit);
        let records = keys
            .iter()
            .map(|&(_, number, ordinal)| tenants[number].1.read().entry(ordinal).location().record)
            .collect();
        self.shared.warm(records);
        let mut last = None;
        let items = keys
            .iter()
            .map(|&(_, number, ordinal)| {
                let (tenant, index) = &tenants[number];
                Ok((
                    tenant.clone(),
                    self.raw_event(&index.read(), ordinal, &mut last)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let next = if has_more {
            items.last().map(|(tenant, item)| TenantPosition {
                created_at: item.position.created_at,
                tenant: tenant.clone(),
                seq: item.position.seq,
            })
        } else {
            None
        };
        Ok(CrossTenantPage { items, next })
    }

    fn histogram(
        &self,
        tenant: &str,
        query: &ListQuery,
        request: &HistogramRequest,
    ) -> Result<Histogram> {
        let interval = request.interval_ms.max(1);
        let first_bucket = request.start.div_euclid(interval) * interval;
        let bucket_count = ((request.end - first_bucket).max(0) + interval - 1) / interval;
        let mut buckets: Vec<Bucket> = (0..bucket_count)
            .map(|index| Bucket {
                start: first_bucket + index * interval,
                count: 0,
                groups: Vec::new(),
            })
            .collect();
        let Some(index) = self.shared.tenant(tenant) else {
            return Ok(Histogram {
                groups: Vec::new(),
                buckets,
            });
        };
        let index = index.read();

        // The exact set of matching events in the window.
        let candidates = index.plan(&query.filter);
        let (mut low, mut high) = created_at_bounds(&query.filter);
        low = low.max(request.start);
        high = high.min(request.end.saturating_sub(1));
        if let Some(since) = query.since {
            low = low.max(since);
        }
        if let Some(until) = query.until {
            high = high.min(until.saturating_sub(1));
        }
        let whole_hours = request.interval_ms % HOUR_MS == 0;
        // The part of a bucket inside the window, inclusive.
        let clipped = |bucket: &Bucket| {
            (
                bucket.start.max(low),
                (bucket.start + (interval - 1)).min(high),
            )
        };
        if whole_hours && query.filter == Filter::All {
            // Every event of the tenant in the window: whole hours are added up from the hourly counts.
            let rolled_up = match &request.group_by {
                None => Some(None),
                Some(field) => index
                    .rolled_up_counts(field, first_bucket, interval, buckets.len(), low, high)
                    .map(Some),
            };
            if let Some(rolled_up) = rolled_up {
                for bucket in &mut buckets {
                    let (from, to) = clipped(bucket);
                    bucket.count = index.count_between(from, to);
                }
                let groups = match rolled_up {
                    None => Vec::new(),
                    Some(rolled_up) => name_top_groups(rolled_up, request.top, &mut buckets),
                };
                return Ok(Histogram { groups, buckets });
            }
        }
        let grouping = request.group_by.is_some();
        // With `group_by`: each matching event's bucket, by ordinal counted from `first` (a table small enough
        // to stay in cache, which the group counts below look up).
        let mut first = 0u32;
        let mut bucket_of: Vec<u32> = Vec::new();
        let matching = if whole_hours && candidates.exact {
            // Whole-hour buckets of an exactly indexed filter: each bucket's events are a union of hour sets,
            // so no event is visited one by one (except in a partly covered first or last hour).
            let mut matching = RoaringBitmap::new();
            let mut sets = Vec::new();
            for bucket in &mut buckets {
                let (from, to) = clipped(bucket);
                let mut set = index.created_between(from, to);
                if let Some(bitmap) = &candidates.bitmap {
                    set &= bitmap;
                }
                bucket.count = set.len();
                matching |= &set;
                if grouping {
                    sets.push(set);
                }
            }
            if let (true, Some(min), Some(max)) = (grouping, matching.min(), matching.max()) {
                first = min;
                bucket_of = vec![0; (max - min) as usize + 1];
                for (number, set) in sets.iter().enumerate() {
                    for ordinal in set {
                        bucket_of[(ordinal - first) as usize] = number as u32;
                    }
                }
            }
            matching
        } else {
            let mut placed: Vec<(u32, u32)> = Vec::new();
            let mut failure = None;
            index.scan(
                candidates.bitmap.as_ref(),
                low,
                high,
                None,
                Order::Asc,
                |ordinal| {
                    if !candidates.exact {
                        match self.shared.load(index.entry(ordinal).location()) {
                            Ok(event) if query.filter.matches(&event) => {}
                            Ok(_) => return true,
                            Err(error) => {
                                failure = Some(error);
                                return false;
                            }
                        }
                    }
                    let bucket = (index.entry(ordinal).created_at - first_bucket) / interval;
                    buckets[bucket as usize].count += 1;
                    placed.push((ordinal, bucket as u32));
                    true
                },
            );
            if let Some(error) = failure {
                return Err(error);
            }
            placed.sort_unstable();
            if let (true, Some(&(min, _)), Some(&(max, _))) =
                (grouping, placed.first(), placed.last())
            {
                first = min;
                bucket_of = vec![0; (max - min) as usize + 1];
                for &(ordinal, bucket) in &placed {
                    bucket_of[(ordinal - first) as usize] = bucket;
                }
            }
            RoaringBitmap::from_sorted_iter(placed.into_iter().map(|(ordinal, _)| ordinal))
                .expect("ordinals ascend")
        };

        let Some(field) = &request.group_by else {
            return Ok(Histogram {
                groups: Vec::new(),
                buckets,
            });
        };
        let values: Vec<(String, RoaringBitmap)> = match index.value_postings(field) {
            Some(postings) => postings
                .into_iter()
                .map(|(name, ordinals)| (name, ordinals & &matching))
                .filter(|(_, ordinals)| !ordinals.is_empty())
                .collect(),
            None => {
                // Not fully indexed: read the values from the events themselves.
                let mut by_value: HashMap<String, RoaringBitmap> = HashMap::new();
                for ordinal in &matching {
                    let event = self.shared.load(index.entry(ordinal).location())?;
                    for value in field_values(&event, field) {
                        by_value.entry(value).or_default().insert(ordinal);
                    }
                }
                by_value.into_iter().collect()
            }
        };
        let mut values = values;
        values.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| a.0.cmp(&b.0)));
        let named: Vec<(String, RoaringBitmap)> = values.into_iter().take(request.top).collect();
        let mut other = matching;
        for (_, ordinals) in &named {
            other -= ordinals;
        }
        let mut groups: Vec<String> = named.iter().map(|(name, _)| name.clone()).collect();
        groups.push("other".into());
        // Counted in one flat table (bucket-major), then handed to the buckets.
        let width = groups.len();
        let mut counts = vec![0u64; buckets.len() * width];
        for (position, ordinals) in named
            .iter()
            .map(|(_, ordinals)| ordinals)
            .chain(std::iter::once(&other))
            .enumerate()
        {
            for ordinal in ordinals {
                counts[bucket_of[(ordinal - first) as usize] as usize * width + position] += 1;
            }
        }
        for (bucket, row) in buckets.iter_mut().zip(counts.chunks_exact(width)) {
            bucket.groups = row.to_vec();
        }
        Ok(Histogram { groups, buckets })
    }

    fn stats(&self) -> StoreStats {
        let fs = self.shared.fs.as_ref();
        let wal_bytes = wal::list_segments(fs, &self.shared.wal_dir)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|segment| {
                fs.len(&wal::segment_path(&self.shared.wal_dir, segment))
                    .ok()
            })
            .sum();
        let block_bytes = wal::list_numbered(fs, &self.shared.blocks_dir, ".blk")
            .unwrap_or_default()
            .into_iter()
            .filter_map(|segment| {
                fs.len(&compact::block_path(&self.shared.blocks_dir, segment))
                    .ok()
            })
            .sum();
        let Health {
            events,
            tenants,
            write_failure,
        } = self.health();
        StoreStats {
            events,
            tenants,
            wal_bytes,
            block_bytes,
            write_failure,
        }
    }

    fn health(&self) -> Health {
        Health {
            events: self.shared.events.load(AtomicOrdering::Relaxed),
            tenants: self.shared.catalog.tenant_count() as u64,
            write_failure: self.shared.write_failure.lock().clone(),
        }
    }

    fn authenticate(&self, token: &str) -> Option<Principal> {
        self.shared.catalog.authenticate(token)
    }

    fn cursor_secret(&self) -> Vec<u8> {
        self.shared.catalog.cursor_secret().to_vec()
    }

    fn create_tenant(&self, id: &str, name: &str) -> Result<Tenant> {
        self.shared.catalog.create_tenant(id, name)
    }

    fn get_tenant(&self, id: &str) -> Option<Tenant> {
        self.shared.catalog.get_tenant(id)
    }

    fn list_tenants(&self) -> Vec<Tenant> {
        self.shared.catalog.list_tenants()
    }

    fn create_key(&self, tenant: &str, name: &str, scopes: &[Scope]) -> Result<CreatedKey> {
        self.shared.catalog.create_key(tenant, name, scopes)
    }

    fn list_keys(&self, tenant: &str) -> Result<Vec<ApiKey>> {
        self.shared.catalog.list_keys(tenant)
    }

    fn revoke_key(&self, tenant: &str, key_id: &str) -> Result<()> {
        self.shared.catalog.revoke_key(tenant, key_id)
    }

    fn shutdown(&self) -> Result<()> {
        self.sender.lock().take();
        // The writer drains its queue and exits, dropping the indexer's channel; the indexer then drains too.
        if let Some(writer) = self.writer.lock().take() {
            let _ = writer.join();
        }
        if let Some(indexer) = self.indexer.lock().take() {
            let _ = indexer.join();
        }
        self.shared.stopping.store(true, AtomicOrdering::Relaxed);
        self.shared.compact_signal.lock().take();
        self.shared.merge_signal.lock().take();
        if let Some((compactor, merger)) = self.compactor.lock().take() {
            let _ = compactor.join();
            let _ = merger.join();
        }
        Ok(())
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// State owned by the writer thread.
struct WriterState {
    wal: WalWriter,
    shared: Arc<Shared>,
    /// Last durable seq per tenant.
    seqs: FxHashMap<String, u64>,
    request_keys: HashMap<(String, String), StoredIdempotency>,
    event_keys: HashMap<(String, String), (Receipt, Millis)>,
    last_prune: Millis,
    /// Hands durable groups to the indexer thread.
    publisher: Sender<PublishBatch>,
}

/// Where a request's receipt for one input event comes from.
enum Slot {
    /// The request's own new event at this position of `Plan::Write::events`.
    New(usize),
    /// An event stored by an earlier group (per-event idempotency key).
    Existing(Receipt),
    /// An event of an earlier request of this group with the same per-event key.
    Staged { plan: usize, position: usize },
}

/// What the writer decided for one request of a group; plans and replies share their index.
enum Plan {
    Done(Result<AppendOutcome>),
    Write(Box<WritePlan>),
    /// Same request-level key as the earlier request `leader` of the group: answer with its receipts.
    Follow {
        leader: usize,
        fingerprint: String,
    },
}

struct WritePlan {
    /// New events with their identities, until built.
    pending: Vec<(NewEvent, Assigned)>,
    events: Vec<Event>,
    /// Each event's stored JSON line, written while building it (taken by encoding).
    lines: Vec<Vec<u8>>,
    slots: Vec<Slot>,
    receipts: Vec<Receipt>,
    idempotency: Option<IdempotencyKey>,
    received_at: Millis,
    /// The record's text, once encoded.
    encoded: Option<Result<Vec<u8>>>,
    record: usize,
}

impl WritePlan {
    fn stored_idempotency(&self) -> Option<StoredIdempotency> {
        self.idempotency.clone().map(|key| StoredIdempotency {
            key,
            receipts: self.receipts.clone(),
            at: self.received_at,
        })
    }
}

fn idempotency_conflict(key: &str) -> StoreError {
    StoreError::Conflict(format!(
        "Idempotency-Key `{key}` was already used with a different request body; use a new key for a new request"
    ))
}

/// The answer to a request whose key was committed earlier.
fn replay(stored: &StoredIdempotency, fingerprint: &str) -> Result<AppendOutcome> {
    if stored.key.fingerprint == fingerprint {
        Ok(AppendOutcome {
            receipts: stored.receipts.clone(),
            replayed: true,
        })
    } else {
        Err(idempotency_conflict(&stored.key.key))
    }
}

/// The plans of a group that write a record.
fn write_plans(plans: &mut [Plan]) -> Vec<&mut WritePlan> {
    plans
        .iter_mut()
        .filter_map(|plan| match plan {
            Plan::Write(write) => Some(&mut **write),
            _ => None,
        })
        .collect()
}

/// The engine's worker threads (one per core, at most four), shared by the writer, the indexer, listings and
/// recovery.
/// They live as long as the process: spawning threads per group cost the spawn and, worse, a fresh allocator
/// heap each time, whose pages the kernel zeroed again and again.
fn pool() -> &'static rayon::ThreadPool {
    static POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(4);
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|n| format!("logbook-pool-{n}"))
            .build()
            .expect("the engine's worker threads start")
    })
}

/// Runs `work` on every item, split across the worker threads when there is enough of it.
fn parallel_for_each<T: Send>(items: &mut [&mut T], weight: usize, work: impl Fn(&mut T) + Sync) {
    if weight < 256 || items.len() < 2 {
        for item in items.iter_mut() {
            work(item);
        }
        return;
    }
    pool().install(|| items.par_iter_mut().for_each(|item| work(item)));
}

impl WriterState {
    fn run(mut self, receiver: Receiver<WriteRequest>) {
        while let Ok(first) = receiver.recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP_REQUESTS {
                match receiver.try_recv() {
                    Ok(request) => group.push(request),
                    Err(_) => break,
                }
            }
            self.wait_for_compaction();
            self.commit_group(group);
        }
        if let Err(error) = self.wal.sync() {
            tracing::error!(%error, "final sync of the write-ahead log failed");
        }
    }

    fn prune(&mut self, now: Millis) {
        if now - self.last_prune < 60_000 {
            return;
        }
        self.last_prune = now;
        self.request_keys
            .retain(|_, stored| now - stored.at < IDEMPOTENCY_WINDOW_MILLIS);
        self.event_keys
            .retain(|_, (_, at)| now - *at < IDEMPOTENCY_WINDOW_MILLIS);
    }

    /// Waits while more than [`MAX_COMPACTION_BACKLOG`] sealed segments wait for the background compactor,
    /// unless there is none (shutting down, or compaction on demand) or its last compaction failed.
    fn wait_for_compaction(&self) {
        let current = self.wal.segment();
        let mut backlog = self.shared.backlog.lock();
        let started = Instant::now();
        while current.saturating_sub(backlog.compacted + 1) > MAX_COMPACTION_BACKLOG
            && !backlog.failing
            && self.shared.compact_signal.lock().is_some()
        {
            self.shared.wake_compactor();
            self.shared
                .backlog_changed
                .wait_for(&mut backlog, Duration::from_millis(100));
        }
        let waited = started.elapsed();
        if waited > Duration::from_millis(1) {
            metrics::counter!("logbook_compaction_stalls_total").increment(1);
            tracing::debug!(
                waited_ms = waited.as_millis() as u64,
                "ingest waited for compaction"
            );
        }
    }

    /// Decides every request of the group, builds and encodes the records (in parallel), appends them, syncs
    /// once, publishes to the index, acknowledges.
    fn commit_group(&mut self, group: Vec<WriteRequest>) {
        let received_at = now_millis();
        self.prune(received_at);
        let mut replies = Vec::with_capacity(group.len());
        let mut plans = Vec::with_capacity(group.len());
        let mut staged_seqs: FxHashMap<String, u64> = FxHashMap::default();
        let mut staged_request_keys: HashMap<(String, String), usize> = HashMap::new();
        let mut staged_event_keys: HashMap<(String, String), (usize, usize)> = HashMap::new();
        for WriteRequest { request, reply } in group {
            replies.push(reply);
            let plan = self.plan_request(
                request,
                received_at,
                &mut staged_seqs,
                &mut staged_request_keys,
                &mut staged_event_keys,
                plans.len(),
            );
            plans.push(plan);
        }

        // Build the events (diff, hash) in parallel; then resolve receipts; then encode in parallel.
        let weight: usize = plans
            .iter()
            .map(|plan| {
                if let Plan::Write(write) = plan {
                    write.pending.len()
                } else {
                    0
                }
            })
            .sum();
        {
            let mut writes = write_plans(&mut plans);
            parallel_for_each(&mut writes, weight, |write| {
                (write.events, write.lines) = std::mem::take(&mut write.pending)
                    .into_iter()
                    .map(|(event, assigned)| event.into_event_and_json(assigned))
                    .unzip();
            });
        }
        for index in 0..plans.len() {
            let Plan::Write(write) = &plans[index] else {
                continue;
            };
            let receipts: Vec<Receipt> = write
                .slots
                .iter()
                .map(|slot| match slot {
                    Slot::New(position) => receipt_of(&write.events[*position]),
                    Slot::Existing(receipt) => receipt.clone(),
                    Slot::Staged { plan, position } => match &plans[*plan] {
                        Plan::Write(leader) => receipt_of(&leader.events[*position]),
                        _ => unreachable!("a staged key points at a written plan"),
                    },
                })
                .collect();
            if let Plan::Write(write) = &mut plans[index] {
                write.receipts = receipts;
            }
        }
        {
            let mut writes = write_plans(&mut plans);
            parallel_for_each(&mut writes, weight, |write| {
                let lines = std::mem::take(&mut write.lines);
                write.encoded = Some(encode(lines, &write.stored_idempotency()));
            });
        }
        // A record's payload is its text, uncompressed: the compactor rewrites it as zstd blocks soon after.
        let mut texts: Vec<Option<Vec<u8>>> = Vec::new();
        for plan in plans.iter_mut() {
            let Plan::Write(write) = plan else { continue };
            match write.encoded.take().expect("every write is encoded") {
                Ok(text) => {
                    write.record = texts.len();
                    texts.push(Some(text));
                }
                Err(error) => *plan = Plan::Done(Err(error)),
            }
        }

        let appended = if texts.is_empty() {
            Ok(Vec::new())
        } else {
            let started = Instant::now();
            let records: Vec<(u8, &[u8])> = texts
                .iter()
                .map(|text| (KIND_EVENTS, text.as_deref().expect("just encoded")))
                .collect();
            let appended = self
                .wal
                .append(&records)
                .and_then(|positions| self.wal.sync().map(|()| positions));
            metrics::histogram!("logbook_wal_append_sync_seconds")
                .record(started.elapsed().as_secs_f64());
            appended
        };
        let positions = match appended {
            Ok(positions) => positions,
            Err(error) => {
                tracing::error!(%error, "write-ahead log append failed; the group is not acknowledged");
                if let Err(poisoned) = self.wal.check_poisoned() {
                    *self.shared.write_failure.lock() = Some(poisoned.to_string());
                }
                for (plan, reply) in plans.into_iter().zip(replies) {
                    let result = match plan {
                        Plan::Done(result) => result,
                        _ => Err(copy_error(&error)),
                    };
                    let _ = reply.send((result, Vec::new()));
                }
                return;
            }
        };

        // Durable. The writer's own state (seqs, idempotency keys) moves on at once; publishing to the index and
        // acknowledging happen on the indexer thread, in group order, while the writer takes the next group.
        for plan in &plans {
            let Plan::Write(write) = plan else { continue };
            for event in &write.events {
                // An event's tenant is usually known: its seq is updated without copying the name.
                match self.seqs.get_mut(&event.tenant) {
                    Some(seq) => *seq = event.seq,
                    None => {
                        self.seqs.insert(event.tenant.clone(), event.seq);
                    }
                }
                if let Some(key) = &event.idempotency_key {
                    self.event_keys.insert(
                        (event.tenant.clone(), key.clone()),
                        (receipt_of(event), event.received_at),
                    );
                }
            }
            if let Some(stored) = write.stored_idempotency() {
                self.request_keys
                    .insert((stored.key.scope.clone(), stored.key.key.clone()), stored);
            }
        }
        let batch = PublishBatch {
            plans,
            positions,
            texts,
            replies,
        };
        if let Err(crossbeam_channel::SendError(batch)) = self.publisher.send(batch) {
            publish(&self.shared, batch);
        }
    }

    /// Assigns identities to a request's events, or answers it at once (replay, error).
    fn plan_request(
        &self,
        request: AppendRequest,
        received_at: Millis,
        staged_seqs: &mut FxHashMap<String, u64>,
        staged_request_keys: &mut HashMap<(String, String), usize>,
        staged_event_keys: &mut HashMap<(String, String), (usize, usize)>,
        plan_index: usize,
    ) -> Plan {
        if let Err(error) = self.wal.check_poisoned() {
            return Plan::Done(Err(error));
        }
        if let Some(key) = &request.idempotency {
            let map_key = (key.scope.clone(), key.key.clone());
            if let Some(stored) = self
                .request_keys
                .get(&map_key)
                .filter(|stored| received_at - stored.at < IDEMPOTENCY_WINDOW_MILLIS)
            {
                return Plan::Done(replay(stored, &key.fingerprint));
            }
            if let Some(&leader) = staged_request_keys.get(&map_key) {
                return Plan::Follow {
                    leader,
                    fingerprint: key.fingerprint.clone(),
                };
            }
        }
        if let Some((tenant, _)) = request
            .events
            .iter()
            .find(|(tenant, _)| !self.shared.catalog.tenant_exists(tenant))
        {
            return Plan::Done(Err(StoreError::NotFound(format!(
                "tenant `{tenant}` does not exist"
            ))));
        }
        let mut pending = Vec::with_capacity(request.events.len());
        let mut slots = Vec::with_capacity(request.events.len());
        for (tenant, new_event) in request.events {
            let event_key = new_event
                .idempotency_key
                .as_ref()
                .map(|key| (tenant.clone(), key.clone()));
            if let Some(event_key) = &event_key {
                let earlier = self
                    .event_keys
                    .get(event_key)
                    .filter(|(_, at)| received_at - at < IDEMPOTENCY_WINDOW_MILLIS);
                if let Some((receipt, _)) = earlier {
                    slots.push(Slot::Existing(receipt.clone()));
                    continue;
                }
                if let Some(&(plan, position)) = staged_event_keys.get(event_key) {
                    slots.push(if plan == plan_index {
                        Slot::New(position)
                    } else {
                        Slot::Staged { plan, position }
                    });
                    continue;
                }
            }
            let seq = match staged_seqs.get_mut(&tenant) {
                Some(seq) => seq,
                None => staged_seqs
                    .entry(tenant.clone())
                    .or_insert_with(|| self.seqs.get(&tenant).copied().unwrap_or(0)),
            };
            *seq += 1;
            let created_at = new_event.created_at.unwrap_or(received_at);
            let assigned = Assigned {
                id: new_event_id(created_at),
                seq: *seq,
                tenant,
                received_at,
            };
            if let Some(event_key) = event_key {
                staged_event_keys.insert(event_key, (plan_index, pending.len()));
            }
            slots.push(Slot::New(pending.len()));
            pending.push((new_event, assigned));
        }
        if pending.is_empty() && request.idempotency.is_none() {
            let receipts = slots
                .into_iter()
                .map(|slot| match slot {
                    Slot::Existing(receipt) => receipt,
                    _ => unreachable!("without new events every slot is an existing receipt"),
                })
                .collect();
            return Plan::Done(Ok(AppendOutcome {
                receipts,
                replayed: false,
            }));
        }
        if let Some(key) = &request.idempotency {
            staged_request_keys.insert((key.scope.clone(), key.key.clone()), plan_index);
        }
        Plan::Write(Box::new(WritePlan {
            pending,
            events: Vec::new(),
            lines: Vec::new(),
            slots,
            receipts: Vec::new(),
            idempotency: request.idempotency,
            received_at,
            encoded: None,
            record: usize::MAX,
        }))
    }
}

/// The record's text: its header line, then one JSON line per event (`lines`, the events' stored JSON). A
/// text longer than a record may be is refused here (recovery would refuse to read it).
fn encode(lines: Vec<Vec<u8>>, idempotency: &Option<StoredIdempotency>) -> Result<Vec<u8>> {
    let header = RecordHeader {
        v: 1,
        idempotency: idempotency.clone(),
        requests: Vec::new(),
    };
    let length: usize = lines.iter().map(|line| line.len() + 1).sum();
    let mut text = Vec::with_capacity(64 + length);
    serde_json::to_writer(&mut text, &header).expect("a header serializes");
    text.push(b'\n');
    for line in lines {
        text.extend_from_slice(&line);
        text.push(b'\n');
    }
    if text.len() > wal::MAX_RECORD_BYTES as usize {
        return Err(StoreError::io(
            "failed to encode a record",
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "the request's record would take {} bytes; a record holds at most {}",
                    text.len(),
                    wal::MAX_RECORD_BYTES
                ),
            ),
        ));
    }
    Ok(text)
}

/// A durable group, handed from the writer to the indexer thread.
struct PublishBatch {
    plans: Vec<Plan>,
    positions: Vec<RecordPosition>,
    texts: Vec<Option<Vec<u8>>>,
    replies: Vec<tokio::sync::oneshot::Sender<AppendReply>>,
}

/// The indexer thread: publishes each durable group to the index and then acknowledges its requests.
fn run_indexer(shared: Arc<Shared>, receiver: Receiver<PublishBatch>) {
    while let Ok(batch) = receiver.recv() {
        publish(&shared, batch);
    }
}

/// A tenant's index and its new events, in seq order.
type TenantWork<'a> = (Arc<RwLock<TenantIndex>>, Vec<(&'a Event, Location)>);

/// Adds each tenant's events to its index. Tenants are independent, so a large group with several tenants
/// is split over the machine's cores (the indexer is otherwise the slowest stage of ingest).
fn index_in_parallel(shared: &Shared, per_tenant: HashMap<&str, Vec<(&Event, Location)>>) {
    let mut work: Vec<TenantWork> = per_tenant
        .into_iter()
        .map(|(tenant, events)| {
            let index = match shared.tenant(tenant) {
                Some(index) => index,
                None => shared
                    .tenants
                    .write()
                    .entry(tenant.to_string())
                    .or_default()
                    .clone(),
            };
            (index, events)
        })
        .collect();
    let index_one = |(index, events): &TenantWork| {
        // The lock is released between chunks, so that readers of a busy tenant wait little.
        for chunk in events.chunks(256) {
            let mut index = index.write();
            for (event, location) in chunk {
                index.insert(event, *location);
            }
        }
    };
    let total: usize = work.iter().map(|(_, events)| events.len()).sum();
    if work.len() < 2 || total < 512 {
        work.iter().for_each(index_one);
        return;
    }
    // Largest tenants first, so that the last task to finish is a small one.
    work.sort_unstable_by_key(|(_, events)| std::cmp::Reverse(events.len()));
    pool().install(|| work.par_iter().with_max_len(1).for_each(index_one));
}

/// Adds a durable group's events to the index and the record cache, then answers every request of the group.
fn publish(shared: &Shared, batch: PublishBatch) {
    let PublishBatch {
        plans,
        positions,
        mut texts,
        replies,
    } = batch;
    // Each tenant's new events, in seq order.
    let mut per_tenant: HashMap<&str, Vec<(&Event, Location)>> = HashMap::new();
    for plan in &plans {
        let Plan::Write(write) = plan else { continue };
        let position = positions[write.record];
        if position.segment > shared.published_segment.load(AtomicOrdering::Relaxed) {
            // Every earlier segment is now sealed and indexed: the compactor may rewrite it.
            shared
                .published_segment
                .store(position.segment, AtomicOrdering::Relaxed);
            shared.wake_compactor();
        }
        if let Some(text) = texts[write.record].take() {
            shared.cache.lock().put(
                position,
                Arc::new(Decoded::new(text).expect("records are written as UTF-8")),
            );
        }
        for (line, event) in write.events.iter().enumerate() {
            let location = Location {
                record: position,
                line: line as u32,
            };
            per_tenant
                .entry(event.tenant.as_str())
                .or_default()
                .push((event, location));
        }
    }
    let stored_events = per_tenant.values().map(|events| events.len() as u64).sum();
    index_in_parallel(shared, per_tenant);
    shared
        .events
        .fetch_add(stored_events, AtomicOrdering::Relaxed);
    metrics::counter!("logbook_events_stored_total").increment(stored_events);

    // Followers copy their leader's receipts first; then each written request takes its own.
    let mut results: Vec<Option<Result<AppendOutcome>>> = Vec::with_capacity(plans.len());
    for plan in &plans {
        let result = match plan {
            Plan::Done(_) | Plan::Write(_) => None,
            Plan::Follow {
                leader,
                fingerprint,
            } => Some(match &plans[*leader] {
                Plan::Write(write) => match &write.idempotency {
                    Some(key) if &key.fingerprint == fingerprint => Ok(AppendOutcome {
                        receipts: write.receipts.clone(),
                        replayed: true,
                    }),
                    Some(key) => Err(idempotency_conflict(&key.key)),
                    None => unreachable!("a leader has a request-level key"),
                },
                _ => Err(StoreError::Conflict(
                    "a concurrent request with the same Idempotency-Key failed; retry it".into(),
                )),
            }),
        };
        results.push(result);
    }
    for ((plan, result), reply) in plans.into_iter().zip(results).zip(replies) {
        let reply_with = match (plan, result) {
            (Plan::Done(result), _) => (result, Vec::new()),
            (Plan::Write(write), None) => {
                let WritePlan {
                    receipts, events, ..
                } = *write;
                let outcome = AppendOutcome {
                    receipts,
                    replayed: false,
                };
                (Ok(outcome), events)
            }
            (_, Some(result)) => (result, Vec::new()),
            (_, None) => unreachable!("every follower has a result"),
        };
        let _ = reply.send(reply_with);
    }
}
