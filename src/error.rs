//! The public error type.
//!
//! Policy: callers branch on a small set of semantic variants; the details
//! (which segment, which offset, what was expected and what was found) are in
//! the message. Corruption is always reported with its location and is never
//! turned into wrong bytes or a panic.

use std::io;
use std::path::PathBuf;

use crate::id::{FileId, ParseIdError, SegmentId};

/// A result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where stored data was found damaged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    pub segment: SegmentId,
    pub offset: u64,
    pub detail: String,
}

impl std::fmt::Display for Corruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "segment {} at offset {}: {}",
            self.segment, self.offset, self.detail
        )
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No file with this id is stored (or its last reference went).
    #[error("file {0} not found")]
    FileNotFound(FileId),

    /// Stored bytes fail their checksums or do not decode.
    #[error("corrupt data in {0}")]
    Corrupt(Corruption),

    /// The index and the segments disagree in a way that loses data (an
    /// indexed chunk whose record or segment is gone, a chunk list that ends
    /// early). Never used for anything a caller or a peer did.
    #[error("inconsistent store: {0}")]
    Inconsistent(String),

    /// A record of a table (the engine's or a layer's) does not decode: the
    /// index itself is damaged.
    #[error("undecodable {table} record under key {key}: {detail}")]
    BadRecord {
        table: &'static str,
        key: String,
        detail: String,
    },

    /// A long background task gave way to a shutdown; the message says
    /// what it was doing. It left nothing half done: what it wrote so far
    /// is garbage that GC reclaims, and the next run starts it again.
    #[error("stopped: {0}")]
    Stopped(String),

    /// Another process holds the data directory.
    #[error("data directory {} is in use by another process{}", path.display(), holder.as_deref().map(|h| format!(" ({h})")).unwrap_or_default())]
    Locked {
        path: PathBuf,
        holder: Option<String>,
    },

    /// The directory exists but is not an imgstore data directory.
    #[error("{} is not an imgstore data directory: {reason}", path.display())]
    NotAStore { path: PathBuf, reason: String },

    /// A format version this build cannot read.
    #[error("{what} has format version {found}; this build reads version {supported}")]
    UnsupportedVersion {
        what: String,
        found: u32,
        supported: u32,
    },

    /// An operating-system I/O error (disk full, EIO, permissions ...).
    #[error("I/O error while {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },

    /// A write or fsync of chunk data failed earlier; the store accepts no
    /// more writes until it is reopened (what reached the disk is unknown
    /// until recovery looks).
    #[error("store refuses writes after an earlier I/O failure ({0}); reopen it to recover")]
    WritesFailed(String),

    /// RocksDB reported an error.
    #[error("index error: {0}")]
    Index(#[source] Box<dyn std::error::Error + Send + Sync>),

    /// The caller passed something unusable (a range outside a file, a
    /// malformed id, impossible parameters).
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// The other side of a transfer sent something wrong (a damaged or
    /// unrequested record, a list that does not add up) or failed to answer.
    /// Nothing it sent was kept unless it was verified.
    #[error("copy source: {detail}")]
    Source {
        detail: String,
        #[source]
        cause: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// A bug: an internal invariant failed (a worker thread panicked).
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<ParseIdError> for Error {
    fn from(e: ParseIdError) -> Self {
        Error::InvalidInput(e.to_string())
    }
}

impl Error {
    /// An I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Damage found at a place in a segment.
    pub fn corrupt(segment: SegmentId, offset: u64, detail: impl Into<String>) -> Self {
        Error::Corrupt(Corruption {
            segment,
            offset,
            detail: detail.into(),
        })
    }

    /// A copy source's fault, with what it was doing.
    pub fn bad_source(detail: impl Into<String>) -> Self {
        Error::Source {
            detail: detail.into(),
            cause: None,
        }
    }

    /// A copy source's fault caused by `cause` (a transport error).
    pub fn source_failed(
        detail: impl Into<String>,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Source {
            detail: detail.into(),
            cause: Some(Box::new(cause)),
        }
    }

    /// True when the error comes from the disk being full.
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::Io { source, .. } => source.raw_os_error() == Some(28),
            _ => false,
        }
    }
}
