//! Errors of the storage layer.

use std::path::PathBuf;

/// What can go wrong in a storage engine.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A file on disk is not what this version of Logbook wrote; the file and byte offset say where.
    #[error("corrupt data in {file} at byte {offset}: {reason}")]
    Corruption {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    /// An earlier fsync failed; nothing more is written until the store is reopened.
    #[error(
        "the write-ahead log is unavailable after a failed fsync ({0}); restart Logbook to recover"
    )]
    Poisoned(String),
    /// The disk is full; nothing of the request was acknowledged.
    #[error("no space left on the device holding the data directory")]
    NoSpace,
    /// The catalog database failed.
    #[error("catalog: {0}")]
    Catalog(#[from] rusqlite::Error),
    /// A tenant, key or event does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A tenant or key already exists.
    #[error("{0}")]
    Conflict(String),
    /// The store is shutting down.
    #[error("the store is shutting down")]
    ShuttingDown,
}

impl StoreError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> StoreError {
        if source.raw_os_error() == Some(libc::ENOSPC) {
            return StoreError::NoSpace;
        }
        StoreError::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
