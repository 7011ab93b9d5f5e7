//! The narrow seam through which every write and fsync of chunk data passes.
//!
//! [`FsIo`] is the real file system. [`FaultyIo`] wraps it and fails chosen
//! operations with a chosen `errno` (ENOSPC, EIO ...) so tests can check that
//! a failed write or fsync gives a clean error and a store that still
//! verifies. [`PowerLossIo`] keeps apart what fsyncs made durable and turns
//! the files into what a disk would hold after a power cut
//! (`tests/it/power_loss.rs` cuts at every operation of a workload). A
//! future object-store backend for sealed segments plugs in here.

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
/// writes what fits, as a full disk does), and a removed file gives its
/// bytes back to the budget; `fail_syncs_after(n, errno)` lets
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
        // A removal frees its bytes, as on a disk: a finite write budget
        // (the free space) grows by the file's length.
        let len = std::fs::metadata(path).map_or(0, |m| m.len());
        std::fs::remove_file(path)?;
        let _ = self
            .write_budget
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| {
                (b != u64::MAX).then(|| b.saturating_add(len))
            });
        Ok(())
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

/// Simulates losing power: the file system as the disk would hold it
/// after a cut, for crash-consistency tests (the model redb's
/// crash-consistency backend uses, at the level of this seam).
///
/// Writes reach the real files at once (the page cache). What is durable
/// is tracked apart: a file's bytes up to its length at its last `sync`;
/// a created file's, or a removal's, directory entry only after
/// `sync_dir`. After [`cut_after`](Self::cut_after)'s count of operations
/// the power is off: every later write, sync, create, removal or directory
/// sync fails with EIO and makes nothing durable. [`apply`](Self::apply),
/// once the store is dropped, turns the files into what the disk would
/// hold: unsynced tails cut (a seeded part of each kept, as pages the
/// kernel wrote back on its own), files whose creation was not made
/// durable gone, removals that were not made durable undone.
///
/// RocksDB's own files do not pass through this seam; its commits are
/// synced, so everything it acknowledged stays, as on a real machine.
#[derive(Debug, Default)]
pub struct PowerLossIo {
    state: std::sync::Mutex<LossState>,
}

#[derive(Debug, Default)]
struct LossState {
    /// Operations that change state, done so far.
    ops: u64,
    /// The operation count at which the power goes off.
    cut_at: Option<u64>,
    files: std::collections::HashMap<std::path::PathBuf, Durability>,
}

#[derive(Debug, Clone, Copy)]
struct Durability {
    /// Bytes durable from the start of the file.
    len: u64,
    /// The directory entry is durable.
    entry: bool,
    /// Removed, but the removal is not durable: the bytes wait under
    /// [`removed_name`].
    removed: bool,
}

fn removed_name(path: &Path) -> std::path::PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".power-loss-removed");
    p.into()
}

fn power_off() -> io::Error {
    io::Error::from_raw_os_error(EIO)
}

impl PowerLossIo {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Cuts the power once `ops` more state-changing operations are done.
    pub fn cut_after(&self, ops: u64) {
        let mut s = self.lock();
        s.cut_at = Some(s.ops + ops);
    }

    /// State-changing operations done so far (to size a sweep of cuts).
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LossState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one operation; fails when the power is off.
    fn tick(s: &mut LossState) -> io::Result<()> {
        if s.cut_at.is_some_and(|at| s.ops >= at) {
            return Err(power_off());
        }
        s.ops += 1;
        Ok(())
    }

    fn track(s: &mut LossState, path: &Path) -> Durability {
        *s.files
            .entry(path.to_path_buf())
            .or_insert_with(|| Durability {
                // A file from before this seam saw it is durable as it is.
                len: std::fs::metadata(path).map_or(0, |m| m.len()),
                entry: true,
                removed: false,
            })
    }

    /// Makes the files what the disk holds after the cut. `seed` chooses
    /// how much of each unsynced tail survives.
    pub fn apply(&self, seed: u64) -> io::Result<()> {
        let s = self.lock();
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        for (path, d) in &s.files {
            if d.removed {
                let parked = removed_name(path);
                if d.entry {
                    std::fs::rename(&parked, path)?;
                } else {
                    std::fs::remove_file(&parked)?;
                    continue;
                }
            } else if !d.entry {
                match std::fs::remove_file(path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => continue,
                }
            }
            let now = std::fs::metadata(path)?.len();
            if now > d.len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Half the time nothing of the tail survives.
                let kept = if x.is_multiple_of(2) {
                    0
                } else {
                    (x >> 1) % (now - d.len + 1)
                };
                OpenOptions::new()
                    .write(true)
                    .open(path)?
                    .set_len(d.len + kept)?;
            }
        }
        Ok(())
    }
}

struct LossFile {
    inner: FsFile,
    path: std::path::PathBuf,
    io: Arc<PowerLossIo>,
}

impl SegmentFile for LossFile {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        PowerLossIo::tick(&mut self.io.lock())?;
        self.inner.write_all_at(buf, offset)
    }
    fn sync(&self) -> io::Result<()> {
        let mut s = self.io.lock();
        PowerLossIo::tick(&mut s)?;
        self.inner.sync()?;
        let len = self.inner.0.metadata()?.len();
        if let Some(d) = s.files.get_mut(&self.path) {
            d.len = len;
        }
        Ok(())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut s = self.io.lock();
        PowerLossIo::tick(&mut s)?;
        self.inner.set_len(len)?;
        if let Some(d) = s.files.get_mut(&self.path) {
            d.len = d.len.min(len);
        }
        Ok(())
    }
    fn file(&self) -> &File {
        self.inner.file()
    }
}

impl SegmentIo for Arc<PowerLossIo> {
    fn create(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let mut s = self.lock();
        PowerLossIo::tick(&mut s)?;
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        s.files.insert(
            path.to_path_buf(),
            Durability {
                len: 0,
                entry: false,
                removed: false,
            },
        );
        Ok(Box::new(LossFile {
            inner: FsFile(f),
            path: path.to_path_buf(),
            io: Arc::clone(self),
        }))
    }
    fn open(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let mut s = self.lock();
        if s.cut_at.is_some_and(|at| s.ops >= at) {
            return Err(power_off());
        }
        let f = OpenOptions::new().read(true).write(true).open(path)?;
        PowerLossIo::track(&mut s, path);
        Ok(Box::new(LossFile {
            inner: FsFile(f),
            path: path.to_path_buf(),
            io: Arc::clone(self),
        }))
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        PowerLossIo::tick(&mut s)?;
        let d = PowerLossIo::track(&mut s, path);
        if d.entry {
            std::fs::rename(path, removed_name(path))?;
            if let Some(d) = s.files.get_mut(path) {
                d.removed = true;
            }
        } else {
            std::fs::remove_file(path)?;
            s.files.remove(path);
        }
        Ok(())
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        PowerLossIo::tick(&mut s)?;
        File::open(dir)?.sync_all()?;
        let mut gone = Vec::new();
        for (path, d) in s.files.iter_mut() {
            if path.parent() != Some(dir) {
                continue;
            }
            if d.removed {
                gone.push(path.clone());
            } else {
                d.entry = true;
            }
        }
        for path in gone {
            std::fs::remove_file(removed_name(&path))?;
            s.files.remove(&path);
        }
        Ok(())
    }
}
