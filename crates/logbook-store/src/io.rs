//! The file I/O under the write-ahead log, behind a trait so that tests can swap the real file system for
//! [`SimulatedFs`]: an in-memory file system that loses power (unsynced writes vanish, or survive in part),
//! fails `fsync`, and runs out of space, on command.
//!
//! Only the WAL goes through this layer. The catalog is SQLite, which has its own durability protocol, and the
//! `LOCK` file is a real file in every case.

use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An open file: positional reads and writes, durability on request.
pub trait StorageFile: Send + Sync {
    fn write_all_at(&self, buffer: &[u8], offset: u64) -> io::Result<()>;
    fn read_exact_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<()>;
    /// Makes the file's data durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    fn set_len(&self, length: u64) -> io::Result<()>;
}

/// The operations the WAL needs from a file system.
pub trait FileSystem: Send + Sync {
    /// Creates a file that must not exist yet, open for reading and writing.
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>>;
    /// Opens an existing file for reading and writing.
    fn open(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>>;
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Reads a whole file into `buffer` (replacing what it held), reusing its capacity: the compactor reads
    /// every sealed segment into the same buffer instead of having the kernel zero a new one each time.
    fn read_into(&self, path: &Path, buffer: &mut Vec<u8>) -> io::Result<()> {
        *buffer = self.read(path)?;
        Ok(())
    }
    fn remove(&self, path: &Path) -> io::Result<()>;
    fn len(&self, path: &Path) -> io::Result<u64>;
    /// The names of the files in `directory`.
    fn list(&self, directory: &Path) -> io::Result<Vec<String>>;
    fn create_dir_all(&self, directory: &Path) -> io::Result<()>;
    /// Makes the directory's entries (created and removed files) durable.
    fn sync_directory(&self, directory: &Path) -> io::Result<()>;
}

/// The operating system's file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

impl StorageFile for File {
    fn write_all_at(&self, buffer: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buffer, offset)
    }

    fn read_exact_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buffer, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn set_len(&self, length: u64) -> io::Result<()> {
        File::set_len(self, length)
    }
}

impl FileSystem for RealFs {
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(Arc::new(file))
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        Ok(Arc::new(
            OpenOptions::new().read(true).write(true).open(path)?,
        ))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn read_into(&self, path: &Path, buffer: &mut Vec<u8>) -> io::Result<()> {
        use std::io::Read as _;
        let mut file = std::fs::File::open(path)?;
        buffer.clear();
        // Exact: the compactor reads every sealed segment into one reused buffer, and an amortized reserve
        // for a segment a little longer than the one before doubled it (85 MB for 40 MiB segments).
        buffer.reserve_exact(file.metadata()?.len() as usize);
        file.read_to_end(buffer)?;
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn len(&self, path: &Path) -> io::Result<u64> {
        Ok(std::fs::metadata(path)?.len())
    }

    fn list(&self, directory: &Path) -> io::Result<Vec<String>> {
        std::fs::read_dir(directory)?
            .map(|entry| Ok(entry?.file_name().to_string_lossy().into_owned()))
            .collect()
    }

    fn create_dir_all(&self, directory: &Path) -> io::Result<()> {
        std::fs::create_dir_all(directory)
    }

    fn sync_directory(&self, directory: &Path) -> io::Result<()> {
        File::open(directory)?.sync_all()
    }
}

/// A simulated file system in memory, for fault-injection tests. Clones share the same disk.
///
/// Model: each file has its durable bytes and its current bytes (the page cache). `sync_data` makes the
/// current bytes durable; a created or removed file is durable only after `sync_directory`. On
/// [`SimulatedFs::power_loss`] every file returns to its durable state, except that a random prefix of the bytes
/// appended since the last sync may survive, its last bytes possibly garbage (a torn write); files whose
/// creation was not made durable vanish, and files whose removal was not made durable come back. Handles opened before a power loss fail afterwards, as the process
/// that held them is gone.
#[derive(Clone, Default)]
pub struct SimulatedFs {
    state: Arc<Mutex<SimState>>,
}

#[derive(Default)]
struct SimState {
    files: HashMap<PathBuf, SimFile>,
    /// Files whose directory entry is durable.
    durable_entries: HashSet<PathBuf>,
    /// Removed files whose removal is not durable yet: they come back after a power loss.
    unlinked: HashMap<PathBuf, SimFile>,
    /// Bumped by each power loss; handles of an older generation are dead.
    generation: u64,
    /// Mutating operations until the power goes out (then every operation fails until `power_loss`).
    operations_left: Option<u64>,
    power_is_out: bool,
    fail_syncs: bool,
    /// Total bytes the disk holds; writes beyond it fail with ENOSPC.
    capacity: Option<u64>,
    operations: u64,
}

#[derive(Default, Clone)]
struct SimFile {
    current: Vec<u8>,
    durable: Vec<u8>,
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOSPC)
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("simulated I/O error: {what}"))
}

impl SimState {
    /// Counts a mutating operation; fails once the power is out.
    fn mutate(&mut self) -> io::Result<()> {
        if self.power_is_out {
            return Err(eio("the power is out"));
        }
        if let Some(left) = &mut self.operations_left {
            if *left == 0 {
                self.power_is_out = true;
                return Err(eio("the power went out"));
            }
            *left -= 1;
        }
        self.operations += 1;
        Ok(())
    }

    fn used(&self) -> u64 {
        self.files.values().map(|f| f.current.len() as u64).sum()
    }

    fn file(&mut self, path: &Path) -> io::Result<&mut SimFile> {
        self.files.get_mut(path).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} does not exist", path.display()),
            )
        })
    }
}

impl SimulatedFs {
    pub fn new() -> SimulatedFs {
        SimulatedFs::default()
    }

    /// The power goes out after `operations` more mutating operations (writes, syncs, creates, truncations).
    pub fn cut_power_after(&self, operations: u64) {
        self.state.lock().operations_left = Some(operations);
    }

    /// Mutating operations so far (to enumerate crash points).
    pub fn operations(&self) -> u64 {
        self.state.lock().operations
    }

    /// Every `fsync` fails from now on (until called with `false`).
    pub fn fail_syncs(&self, fail: bool) {
        self.state.lock().fail_syncs = fail;
    }

    /// The disk holds at most `bytes` (or is unlimited with `None`).
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.state.lock().capacity = bytes;
    }

    /// Bytes currently stored.
    pub fn used(&self) -> u64 {
        self.state.lock().used()
    }

    /// Loses power now (if it is not already out) and boots again: unsynced data is lost or torn at random
    /// (seeded), and old handles die.
    pub fn power_loss(&self, seed: u64) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut state = self.state.lock();
        let durable_entries = state.durable_entries.clone();
        state.files.retain(|path, _| durable_entries.contains(path));
        for (path, file) in std::mem::take(&mut state.unlinked) {
            if durable_entries.contains(&path) && !state.files.contains_key(&path) {
                state.files.insert(path, file);
            }
        }
        for file in state.files.values_mut() {
            let mut survivor = file.durable.clone();
            let extends = file.current.len() > file.durable.len()
                && file.current[..file.durable.len()] == file.durable[..];
            if extends {
                let tail = &file.current[file.durable.len()..];
                let kept = rng.random_range(0..=tail.len());
                survivor.extend_from_slice(&tail[..kept]);
                if kept > 0 && rng.random_bool(0.3) {
                    let garbage = rng.random_range(1..=kept.min(16));
                    let length = survivor.len();
                    for byte in &mut survivor[length - garbage..] {
                        *byte = rng.random();
                    }
                }
            } else if file.current != file.durable && rng.random_bool(0.5) {
                survivor = file.current.clone();
            }
            file.current = survivor.clone();
            file.durable = survivor;
        }
        state.generation += 1;
        state.power_is_out = false;
        state.operations_left = None;
    }

    fn handle(&self, path: &Path) -> Arc<dyn StorageFile> {
        let generation = self.state.lock().generation;
        Arc::new(SimHandle {
            fs: self.clone(),
            path: path.to_path_buf(),
            generation,
        })
    }
}

struct SimHandle {
    fs: SimulatedFs,
    path: PathBuf,
    generation: u64,
}

impl SimHandle {
    fn live<'a>(&self, state: &'a mut SimState) -> io::Result<&'a mut SimState> {
        if state.generation != self.generation {
            return Err(eio("the handle was opened before a power loss"));
        }
        Ok(state)
    }
}

impl StorageFile for SimHandle {
    fn write_all_at(&self, buffer: &[u8], offset: u64) -> io::Result<()> {
        let mut guard = self.fs.state.lock();
        let state = self.live(&mut guard)?;
        state.mutate()?;
        let end = offset as usize + buffer.len();
        let length = state.file(&self.path)?.current.len();
        let growth = end.saturating_sub(length) as u64;
        let room = state
            .capacity
            .map(|capacity| capacity.saturating_sub(state.used()));
        // Out of space: write what fits, then fail, as a real disk may.
        let (buffer, full) = match room {
            Some(room) if growth > room => {
                let fits = (buffer.len() as u64 - (growth - room)) as usize;
                (&buffer[..fits], true)
            }
            _ => (buffer, false),
        };
        let file = state.file(&self.path)?;
        let end = offset as usize + buffer.len();
        if file.current.len() < end {
            file.current.resize(end, 0);
        }
        file.current[offset as usize..end].copy_from_slice(buffer);
        if full {
            return Err(enospc());
        }
        Ok(())
    }

    fn read_exact_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<()> {
        let mut guard = self.fs.state.lock();
        let state = self.live(&mut guard)?;
        let file = state.file(&self.path)?;
        let start = offset as usize;
        let bytes = file
            .current
            .get(start..start + buffer.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"))?;
        buffer.copy_from_slice(bytes);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut guard = self.fs.state.lock();
        let state = self.live(&mut guard)?;
        state.mutate()?;
        if state.fail_syncs {
            return Err(eio("fsync failed"));
        }
        let file = state.file(&self.path)?;
        file.durable = file.current.clone();
        Ok(())
    }

    fn set_len(&self, length: u64) -> io::Result<()> {
        let mut guard = self.fs.state.lock();
        let state = self.live(&mut guard)?;
        state.mutate()?;
        state.file(&self.path)?.current.resize(length as usize, 0);
        Ok(())
    }
}

impl FileSystem for SimulatedFs {
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        {
            let mut state = self.state.lock();
            state.mutate()?;
            if state.files.contains_key(path) {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists", path.display()),
                ));
            }
            state.files.insert(path.to_path_buf(), SimFile::default());
        }
        Ok(self.handle(path))
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        if !self.state.lock().files.contains_key(path) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} does not exist", path.display()),
            ));
        }
        Ok(self.handle(path))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        Ok(self.state.lock().file(path)?.current.clone())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.mutate()?;
        let file = state.files.remove(path).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} does not exist", path.display()),
            )
        })?;
        state.unlinked.insert(path.to_path_buf(), file);
        Ok(())
    }

    fn len(&self, path: &Path) -> io::Result<u64> {
        Ok(self.state.lock().file(path)?.current.len() as u64)
    }

    fn list(&self, directory: &Path) -> io::Result<Vec<String>> {
        Ok(self
            .state
            .lock()
            .files
            .keys()
            .filter(|path| path.parent() == Some(directory))
            .filter_map(|path| {
                path.file_name()
                    .map(|name| name.to_string_lossy().into_owned())
            })
            .collect())
    }

    fn create_dir_all(&self, _directory: &Path) -> io::Result<()> {
        Ok(())
    }

    fn sync_directory(&self, directory: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.mutate()?;
        if state.fail_syncs {
            return Err(eio("fsync of a directory failed"));
        }
        let present: Vec<PathBuf> = state
            .files
            .keys()
            .filter(|path| path.parent() == Some(directory))
            .cloned()
            .collect();
        state
            .durable_entries
            .retain(|path| path.parent() != Some(directory));
        state.durable_entries.extend(present);
        state
            .unlinked
            .retain(|path, _| path.parent() != Some(directory));
        Ok(())
    }
}
