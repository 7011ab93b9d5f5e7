//! The narrow seam through which every write and fsync of chunk data passes.
//!
//! [`FsIo`] is the real file system. [`FaultyIo`] wraps it and fails chosen
//! operations with a chosen `errno` (ENOSPC, EIO ...) so tests can check that
//! a failed write or fsync gives a clean error and a store that still
//! verifies. A future object-store backend for sealed segments plugs in here.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

/// One open segment file.
pub trait SegmentFile: Send + Sync {
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes everything written so far durable (`fdatasync`).
    fn sync(&self) -> io::Result<()>;
    /// Truncates or extends the file.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// The underlying file, for reads and mmap.
    fn file(&self) -> &File;
}

/// Creates, opens and removes segment files.
pub trait SegmentIo: Send + Sync {
    /// Creates a new file; fails if it exists.
    fn create(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>>;
    /// Opens an existing file for reading and writing.
    fn open(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes a directory's entries (file creations, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct FsIo;

struct FsFile(File);

impl SegmentFile for FsFile {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }
    fn sync(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn file(&self) -> &File {
        &self.0
    }
}

impl SegmentIo for FsIo {
    fn create(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(Box::new(FsFile(f)))
    }
    fn open(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let f = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Box::new(FsFile(f)))
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// Wraps [`FsIo`] and fails writes or fsyncs on demand.
///
/// Budgets count down: `fail_writes_after(n, errno)` lets `n` more bytes be
/// written and fails the write that would pass them (a partial write first
/// writes what fits, as a full disk does); `fail_syncs_after(n, errno)` lets
/// `n` more fsyncs succeed.
#[derive(Debug)]
pub struct FaultyIo {
    write_budget: AtomicU64,
    write_errno: AtomicI32,
    sync_budget: AtomicU64,
    sync_errno: AtomicI32,
}

impl Default for FaultyIo {
    fn default() -> Self {
        Self {
            write_budget: AtomicU64::new(u64::MAX),
            write_errno: AtomicI32::new(0),
            sync_budget: AtomicU64::new(u64::MAX),
            sync_errno: AtomicI32::new(0),
        }
    }
}

/// `ENOSPC`: no space left on device.
pub const ENOSPC: i32 = 28;
/// `EIO`: input/output error.
pub const EIO: i32 = 5;

impl FaultyIo {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
    pub fn fail_writes_after(&self, bytes: u64, errno: i32) {
        self.write_errno.store(errno, Ordering::SeqCst);
        self.write_budget.store(bytes, Ordering::SeqCst);
    }
    pub fn fail_syncs_after(&self, count: u64, errno: i32) {
        self.sync_errno.store(errno, Ordering::SeqCst);
        self.sync_budget.store(count, Ordering::SeqCst);
    }
    /// Lets everything succeed again (the disk was cleaned up).
    pub fn heal(&self) {
        self.write_budget.store(u64::MAX, Ordering::SeqCst);
        self.sync_budget.store(u64::MAX, Ordering::SeqCst);
    }
}

struct FaultyFile {
    inner: FsFile,
    faults: Arc<FaultyIo>,
}

impl SegmentFile for FaultyFile {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let len = buf.len() as u64;
        let budget = self.faults.write_budget.load(Ordering::SeqCst);
        if budget == u64::MAX {
            return self.inner.write_all_at(buf, offset);
        }
        if len <= budget {
            self.faults
                .write_budget
                .store(budget - len, Ordering::SeqCst);
            return self.inner.write_all_at(buf, offset);
        }
        self.faults.write_budget.store(0, Ordering::SeqCst);
        let fits = buf.get(..budget as usize).unwrap_or_default();
        self.inner.write_all_at(fits, offset)?;
        Err(io::Error::from_raw_os_error(
            self.faults.write_errno.load(Ordering::SeqCst),
        ))
    }
    fn sync(&self) -> io::Result<()> {
        let budget = self.faults.sync_budget.load(Ordering::SeqCst);
        if budget == 0 {
            return Err(io::Error::from_raw_os_error(
                self.faults.sync_errno.load(Ordering::SeqCst),
            ));
        }
        if budget != u64::MAX {
            self.faults.sync_budget.store(budget - 1, Ordering::SeqCst);
        }
        self.inner.sync()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn file(&self) -> &File {
        self.inner.file()
    }
}

/// The seam as a shareable value, so a test can keep the `Arc<FaultyIo>`.
impl SegmentIo for Arc<FaultyIo> {
    fn create(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(Box::new(FaultyFile {
            inner: FsFile(f),
            faults: Arc::clone(self),
        }))
    }
    fn open(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let f = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Box::new(FaultyFile {
            inner: FsFile(f),
            faults: Arc::clone(self),
        }))
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let budget = self.sync_budget.load(Ordering::SeqCst);
        if budget == 0 {
            return Err(io::Error::from_raw_os_error(
                self.sync_errno.load(Ordering::SeqCst),
            ));
        }
        File::open(dir)?.sync_all()
    }
}
