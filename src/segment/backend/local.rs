//! Objects as files under one directory.
//!
//! A put copies into a temporary file beside the target, fsyncs it, renames
//! it over the name and fsyncs the directory: a crash leaves the old object
//! or the new one, never a torn one. Temporary files (`*.part-*`) are never
//! listed.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write as _};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{
    BackendError, BackendResult, Conditional, ObjectBackend, ObjectInfo, Version, check_name,
    check_prefix,
};

const PART: &str = ".part-";
/// A temporary file this old is what a crash left, not a put in progress.
const STALE_PART: std::time::Duration = std::time::Duration::from_secs(3600);

/// Objects stored as files under `root`.
pub struct LocalDir {
    root: PathBuf,
    /// Makes temporary names unique within this process.
    counter: AtomicU64,
}

impl LocalDir {
    /// Objects under `root`, created if missing. Temporary files of puts
    /// that a crash cut, older than an hour (a put in progress elsewhere
    /// is younger), are removed.
    pub fn new(root: impl Into<PathBuf>) -> BackendResult<Self> {
        let root = root.into();
        fs::create_dir_all(&root)
            .map_err(|e| BackendError::failed(format!("creating {}", root.display()), e))?;
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            let Ok(rd) = fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                let Ok(meta) = e.metadata() else {
                    continue;
                };
                if meta.is_dir() {
                    dirs.push(e.path());
                } else if e.file_name().to_string_lossy().contains(PART)
                    && meta
                        .modified()
                        .ok()
                        .and_then(|m| m.elapsed().ok())
                        .is_some_and(|age| age > STALE_PART)
                {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        Ok(LocalDir {
            root,
            counter: AtomicU64::new(0),
        })
    }

    fn path(&self, name: &str) -> BackendResult<PathBuf> {
        check_name(name)?;
        if name.contains(PART) {
            return Err(BackendError::BadName(name.to_owned()));
        }
        Ok(self.root.join(name))
    }

    fn write_with(
        &self,
        name: &str,
        fill: impl FnOnce(&mut File) -> std::io::Result<()>,
    ) -> BackendResult<()> {
        let target = self.path(name)?;
        let parent = target.parent().unwrap_or(&self.root).to_path_buf();
        let what = format!("writing {}", target.display());
        if !parent.exists() {
            fs::create_dir_all(&parent).map_err(|e| BackendError::failed(&what, e))?;
            // New directories are entries of their parents: durable too.
            for dir in parent.ancestors().skip(1) {
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| BackendError::failed(&what, e))?;
                if dir == self.root {
                    break;
                }
            }
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let tmp = PathBuf::from(format!(
            "{}{PART}{}-{n}",
            target.display(),
            std::process::id()
        ));
        let res = (|| {
            let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            fill(&mut f)?;
            f.sync_all()?;
            fs::rename(&tmp, &target)?;
            File::open(&parent)?.sync_all()
        })();
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res.map_err(|e| BackendError::failed(what, e))
    }
}

impl LocalDir {
    /// Holds the directory's lock for conditional replaces (flock: other
    /// processes on this directory wait too).
    fn locked<T>(&self, f: impl FnOnce() -> BackendResult<T>) -> BackendResult<T> {
        let path = self.root.join(format!("{PART}lock"));
        let what = format!("locking {}", path.display());
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| BackendError::failed(&what, e))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| BackendError::failed(&what, std::io::Error::from(e)))?;
        f()
    }

    /// A file's version: the BLAKE3 of its bytes.
    fn version_of(bytes: &[u8]) -> Version {
        Version(blake3::hash(bytes).to_hex().to_string())
    }
}

impl ObjectBackend for LocalDir {
    fn get_versioned(&self, name: &str) -> BackendResult<Option<(Vec<u8>, Version)>> {
        let path = self.path(name)?;
        match fs::read(&path) {
            Ok(bytes) => {
                let v = Self::version_of(&bytes);
                Ok(Some((bytes, v)))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(BackendError::failed(
                format!("reading {}", path.display()),
                e,
            )),
        }
    }

    fn put_if_absent(&self, name: &str, bytes: &[u8]) -> BackendResult<Conditional> {
        // Under the lock, so a create never races a replace of the name.
        self.locked(|| {
            if self.path(name)?.exists() {
                return Ok(Conditional::Refused);
            }
            self.write_with(name, |f| f.write_all(bytes))?;
            Ok(Conditional::Written(Self::version_of(bytes)))
        })
    }

    fn put_if_version(
        &self,
        name: &str,
        bytes: &[u8],
        version: &Version,
    ) -> BackendResult<Conditional> {
        self.locked(|| match self.get_versioned(name)? {
            Some((_, now)) if now == *version => {
                self.write_with(name, |f| f.write_all(bytes))?;
                Ok(Conditional::Written(Self::version_of(bytes)))
            }
            _ => Ok(Conditional::Refused),
        })
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn put_file(&self, name: &str, path: &Path) -> BackendResult<()> {
        self.write_with(name, |f| {
            let mut src = File::open(path)?;
            std::io::copy(&mut src, f)?;
            Ok(())
        })
    }

    fn put_bytes(&self, name: &str, bytes: &[u8]) -> BackendResult<()> {
        self.write_with(name, |f| f.write_all(bytes))
    }

    fn read_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> BackendResult<()> {
        let path = self.path(name)?;
        let f = File::open(&path).map_err(|e| match e.kind() {
            ErrorKind::NotFound => BackendError::NotFound(name.to_owned()),
            _ => BackendError::failed(format!("opening {}", path.display()), e),
        })?;
        f.read_exact_at(buf, offset).map_err(|e| match e.kind() {
            ErrorKind::UnexpectedEof => BackendError::Short {
                name: name.to_owned(),
                wanted_end: offset + buf.len() as u64,
                len: f.metadata().map_or(0, |m| m.len()),
            },
            _ => BackendError::failed(format!("reading {}", path.display()), e),
        })
    }

    fn len(&self, name: &str) -> BackendResult<Option<u64>> {
        let path = self.path(name)?;
        match fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(BackendError::failed(
                format!("reading {}", path.display()),
                e,
            )),
        }
    }

    fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>> {
        check_prefix(prefix)?;
        let mut out = Vec::new();
        let mut dirs = vec![self.root.join(prefix)];
        while let Some(dir) = dirs.pop() {
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(BackendError::failed(
                        format!("listing {}", dir.display()),
                        e,
                    ));
                }
            };
            for entry in rd {
                let entry = entry
                    .map_err(|e| BackendError::failed(format!("listing {}", dir.display()), e))?;
                let path = entry.path();
                let meta = entry
                    .metadata()
                    .map_err(|e| BackendError::failed(format!("reading {}", path.display()), e))?;
                if meta.is_dir() {
                    dirs.push(path);
                    continue;
                }
                let Ok(rel) = path.strip_prefix(&self.root) else {
                    continue;
                };
                let name = rel.to_string_lossy().into_owned();
                if !name.contains(PART) && check_name(&name).is_ok() {
                    out.push(ObjectInfo {
                        name,
                        len: meta.len(),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn delete(&self, name: &str) -> BackendResult<()> {
        let path = self.path(name)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(BackendError::failed(
                format!("deleting {}", path.display()),
                e,
            )),
        }
    }
}
