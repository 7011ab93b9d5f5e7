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
    /// index itself is damaged. `source` is the decoder's error, when one
    /// said more than `detail`.
    #[error("undecodable {table} record under key {key}: {detail}")]
    BadRecord {
        table: &'static str,
        key: String,
        detail: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
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

    /// The reader a put was handed failed (a client's upload body that was
    /// cut, stalled or refused, a copy source's stream that broke): the
    /// caller's fault or its peer's, never the store's. Nothing of it was
    /// kept.
    #[error("reading the input: {0}")]
    Input(#[source] io::Error),

    /// The remote tier's object store failed (unreachable, refusing, or
    /// answering errors after the retries); `source` is the backend's error.
    #[error("object store error while {context}: {source}")]
    Remote {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The writer's lease of this store is lost (another daemon took it,
    /// or it ran out): this process writes nothing more to the store or
    /// its bucket until it is restarted.
    #[error("fenced: {0}")]
    Fenced(String),

    /// Segments waiting for the object store hold the most the local disk
    /// may (`localLimitBytes`): puts are refused until uploads catch up.
    #[error(
        "{waiting} bytes of segments wait for the object store (the limit is {limit}): \
         new uploads resume once they are uploaded"
    )]
    Backlog { waiting: u64, limit: u64 },

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

    /// An error the object store backend returned while doing `context`.
    pub fn remote(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::Remote {
            context: context.into(),
            source: source.into(),
        }
    }

    /// A damaged record of `table` under `key`, as its decoder found it.
    pub fn bad_record(
        table: &'static str,
        key: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        let source = source.into();
        Error::BadRecord {
            table,
            key: key.into(),
            detail: source.to_string(),
            source: Some(source),
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

/// An error and its causes, outermost first, joined by `: `, each cause
/// left out when the text before it already says it (many errors repeat
/// their source in their own message). What the log gets of a failure.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_names_every_cause_once() {
        let inner = io::Error::other("connection refused");
        let e = Error::remote("uploading segment 7", inner);
        // The message already holds its source: the chain does not repeat it.
        assert_eq!(
            chain(&e),
            "object store error while uploading segment 7: connection refused"
        );
        let quiet = Error::Index(Box::new(io::Error::other("disk gone")));
        assert_eq!(chain(&quiet), "index error: disk gone");
    }
}
