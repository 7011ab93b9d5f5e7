//! The backend seam for sealed segments: where a segment goes once it is
//! sealed, written once and then only read.
//!
//! A sealed segment is an immutable object: it is written whole, read by
//! byte ranges, listed and deleted, and nothing else. [`ObjectBackend`] is
//! exactly that, synchronous like the rest of the engine, so the readers
//! (`store/read.rs` batches adjacent records into one read of up to a few
//! MiB, and the read-ahead pool runs them on every core) issue one range
//! request per batch whatever sits behind it.
//!
//! Backends:
//! - [`LocalDir`]: objects are files under a directory (fsynced, renamed
//!   into place). Useful for a second disk or a mounted filesystem, and as
//!   the reference the conformance suite compares against.
//! - [`ObjectStoreBackend`]: any store Apache Arrow's `object_store` speaks;
//!   here S3 ([`S3Config`]) and its in-memory store for tests. The crate
//!   brings range reads, multipart uploads, retries with exponential
//!   backoff and timeouts, and it is maintained by the Arrow project for
//!   the same job (immutable files on object stores).
//!
//! Nothing here relies on conditional writes (`If-None-Match`): Garage
//! ignores them. An object is only ever written under a name that belongs
//! to one segment of one store, so a retried upload rewrites the same bytes
//! under the same name.
//!
//! [`conformance::run`] is the contract every backend must pass; the tests
//! run it against the in-memory store, [`LocalDir`] and a real SeaweedFS.

pub mod conformance;
mod local;
#[cfg(feature = "index")]
mod objects;

use std::path::Path;

pub use local::LocalDir;
#[cfg(feature = "index")]
pub use objects::{ObjectStoreBackend, S3Config};

/// Why a backend call failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The object does not exist.
    #[error("{0} does not exist")]
    NotFound(String),
    /// The object is shorter than the range asked for.
    #[error("{name} ends before byte {wanted_end} (it holds {len} bytes)")]
    Short {
        name: String,
        wanted_end: u64,
        len: u64,
    },
    /// A name that is not a plain relative object name.
    #[error("object name {0:?} is not allowed")]
    BadName(String),
    /// The backend cannot do this (conditional writes on a wrapper that
    /// does not pass them on).
    #[error("{0} is not supported by this object store")]
    Unsupported(&'static str),
    /// Anything else (network, server errors after the retries, local
    /// I/O); `source` is what failed underneath (`object_store`'s error,
    /// an `io::Error`), kept for the log.
    #[error("{what}: {source}")]
    Failed {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl BackendError {
    /// The engine's error for a failed `what`: the object store's, with
    /// this one as its source.
    pub(crate) fn into_error(self, what: impl Into<String>) -> crate::Error {
        crate::Error::remote(what, self)
    }

    pub(crate) fn failed(
        what: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        BackendError::Failed {
            what: what.into(),
            source: source.into(),
        }
    }
}

pub type BackendResult<T> = std::result::Result<T, BackendError>;

/// One stored object, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub name: String,
    pub len: u64,
}

/// A version of an object as a conditional replace names it (the S3
/// ETag; a content hash for a local directory).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version(pub String);

/// The outcome of a conditional write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Conditional {
    /// Written; the object's new version.
    Written(Version),
    /// Not written: the object exists (create-only), or changed since the
    /// version named (replace).
    Refused,
}

/// Immutable objects: written whole, read by range, listed, deleted.
///
/// Names are `/`-separated relative paths of printable ASCII without `..`
/// or empty parts ([`check_name`]). Every method may be called from many
/// threads at once.
pub trait ObjectBackend: Send + Sync {
    /// Where the objects live, for messages (`s3://bucket/prefix`, a path).
    fn describe(&self) -> String;

    /// Stores the whole of local file `path` as object `name`, replacing an
    /// object of that name. Returns only once the object is durable in the
    /// backend and holds exactly the file's bytes.
    fn put_file(&self, name: &str, path: &Path) -> BackendResult<()>;

    /// Stores `bytes` as object `name` (small objects).
    fn put_bytes(&self, name: &str, bytes: &[u8]) -> BackendResult<()>;

    /// Fills `buf` from object `name` at `offset`. A range past the end is
    /// [`BackendError::Short`], never a short buffer.
    fn read_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> BackendResult<()>;

    /// The object's length, or `None` when it does not exist.
    fn len(&self, name: &str) -> BackendResult<Option<u64>>;

    /// Every object whose name starts with `prefix` (a whole path part, as
    /// `dir/`), sorted by name.
    fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>>;

    /// Deletes object `name`; deleting a missing object succeeds.
    fn delete(&self, name: &str) -> BackendResult<()>;

    /// A small object whole, with its version; None when it is missing.
    fn get_versioned(&self, _name: &str) -> BackendResult<Option<(Vec<u8>, Version)>> {
        Err(BackendError::Unsupported("reading an object's version"))
    }

    /// Creates object `name` only if it does not exist (S3's
    /// `If-None-Match: *`): of any number of concurrent calls, at most one
    /// is [`Conditional::Written`]. Stores that ignore the header (Garage)
    /// break this promise; [`probe_conditional`] finds them.
    fn put_if_absent(&self, _name: &str, _bytes: &[u8]) -> BackendResult<Conditional> {
        Err(BackendError::Unsupported("a create-only write"))
    }

    /// Replaces object `name` only if its version is still `version`
    /// (S3's `If-Match`).
    fn put_if_version(
        &self,
        _name: &str,
        _bytes: &[u8],
        _version: &Version,
    ) -> BackendResult<Conditional> {
        Err(BackendError::Unsupported("a conditional replace"))
    }
}

/// Checks that a backend enforces conditional writes under `prefix`:
/// several concurrent create-only writes of one name yield exactly one
/// success, and a replace naming a version that is no longer current is
/// refused. What a lease needs of its store; the error names the missing
/// guarantee.
pub fn probe_conditional(b: &dyn ObjectBackend, prefix: &str) -> BackendResult<()> {
    check_prefix(prefix)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let name = format!("{prefix}imgstore-probe/cond-{}-{nanos}", std::process::id());
    let outcomes: Vec<BackendResult<Conditional>> = std::thread::scope(|s| {
        let tries: Vec<_> = (0..6u8)
            .map(|i| {
                let name = &name;
                s.spawn(move || b.put_if_absent(name, &[i]))
            })
            .collect();
        tries
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(BackendError::failed("probing", "a writer panicked")))
            })
            .collect()
    });
    let mut written = Vec::new();
    for o in outcomes {
        if let Conditional::Written(v) = o? {
            written.push(v);
        }
    }
    let result = match written.as_slice() {
        [first] => {
            let first = first.clone();
            match b.put_if_version(&name, b"next", &first)? {
                Conditional::Written(_) => match b.put_if_version(&name, b"stale", &first)? {
                    Conditional::Refused => Ok(()),
                    Conditional::Written(_) => Err(BackendError::failed(
                        format!("probing {}", b.describe()),
                        "a replace naming a stale version (If-Match) was not refused: \
                         the store does not enforce conditional replaces",
                    )),
                },
                Conditional::Refused => Err(BackendError::failed(
                    format!("probing {}", b.describe()),
                    "a replace naming the current version (If-Match) was refused",
                )),
            }
        }
        many => Err(BackendError::failed(
            format!("probing {}", b.describe()),
            format!(
                "{} of 6 concurrent create-only writes (If-None-Match: *) of one name \
                 succeeded: the store does not enforce them",
                many.len()
            ),
        )),
    };
    let _ = b.delete(&name);
    result
}

/// Checks that a backend can hold a store under `prefix` before anything
/// relies on it: the prefix can be listed (the bucket exists and the
/// credentials are good), an object written there reads back whole, and
/// it can be deleted. The error names the first step that failed. A
/// daemon refuses to start on a bucket that fails this, instead of
/// answering `/ping` and logging errors at every tier step.
pub fn probe(b: &dyn ObjectBackend, prefix: &str) -> BackendResult<()> {
    check_prefix(prefix)?;
    b.list(prefix)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let name = format!("{prefix}imgstore-probe/{}-{nanos}", std::process::id());
    let body = name.as_bytes();
    b.put_bytes(&name, body)?;
    let mut back = vec![0u8; body.len()];
    let read = b.read_at(&name, 0, &mut back);
    let deleted = b.delete(&name);
    read?;
    if back != body {
        return Err(BackendError::failed(
            format!("reading back {name}"),
            "the object read back differs from what was written",
        ));
    }
    deleted
}

/// Checks that `name` is a plain relative object name.
pub fn check_name(name: &str) -> BackendResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 512
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'\\' && b != b'%')
        && name
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..");
    if ok {
        Ok(())
    } else {
        Err(BackendError::BadName(name.to_owned()))
    }
}

/// Checks a listing prefix: empty, or a name ending in `/`.
pub(crate) fn check_prefix(prefix: &str) -> BackendResult<()> {
    match prefix.strip_suffix('/') {
        _ if prefix.is_empty() => Ok(()),
        Some(p) => check_name(p),
        None => Err(BackendError::BadName(prefix.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store that takes the conditional headers and ignores them (as
    /// Garage does): every conditional write "succeeds".
    struct Ignoring(local::LocalDir);

    impl ObjectBackend for Ignoring {
        fn describe(&self) -> String {
            "a store that ignores conditions".into()
        }
        fn put_file(&self, name: &str, path: &Path) -> BackendResult<()> {
            self.0.put_file(name, path)
        }
        fn put_bytes(&self, name: &str, bytes: &[u8]) -> BackendResult<()> {
            self.0.put_bytes(name, bytes)
        }
        fn read_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> BackendResult<()> {
            self.0.read_at(name, offset, buf)
        }
        fn len(&self, name: &str) -> BackendResult<Option<u64>> {
            self.0.len(name)
        }
        fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>> {
            self.0.list(prefix)
        }
        fn delete(&self, name: &str) -> BackendResult<()> {
            self.0.delete(name)
        }
        fn get_versioned(&self, name: &str) -> BackendResult<Option<(Vec<u8>, Version)>> {
            self.0.get_versioned(name)
        }
        fn put_if_absent(&self, name: &str, bytes: &[u8]) -> BackendResult<Conditional> {
            self.0.put_bytes(name, bytes)?;
            Ok(Conditional::Written(Version(format!("{}", bytes.len()))))
        }
        fn put_if_version(
            &self,
            name: &str,
            bytes: &[u8],
            _version: &Version,
        ) -> BackendResult<Conditional> {
            self.0.put_bytes(name, bytes)?;
            Ok(Conditional::Written(Version(format!("{}", bytes.len()))))
        }
    }

    #[test]
    fn the_probe_passes_a_store_that_enforces_conditions_and_names_what_another_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let good = local::LocalDir::new(dir.path().join("good")).unwrap();
        probe_conditional(&good, "dc1/").unwrap();
        let bad = Ignoring(local::LocalDir::new(dir.path().join("bad")).unwrap());
        let err = probe_conditional(&bad, "dc1/").unwrap_err().to_string();
        assert!(err.contains("If-None-Match"), "{err}");
        assert!(err.contains("does not enforce"), "{err}");
    }
}
