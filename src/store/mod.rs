//! The engine's one public door: put a file (streaming), read it (whole or a
//! range), link and unlink it, collect garbage, verify, report usage.
//!
//! # Concurrency
//!
//! Puts do their heavy work (hashing, compression, appends) in parallel and
//! without locks on the index. Every read-modify-write of refcounts and
//! segment accounting happens under one *commit lock*, which also serialises
//! the index flip of a compaction. A put that decides to reuse a stored chunk
//! *pins* it (under the pin lock, atomically with the look-up) until its
//! commit; compaction never drops a pinned chunk, so a put that deduplicates
//! against a chunk while GC collects it stays correct.
//!
//! # Durability
//!
//! A put fsyncs its segment records (one fsync for all its chunks, shared
//! with concurrent puts) before the index batch that points at them, and the
//! batch is written with a synced WAL; only then is the put acknowledged.

mod decode;
mod exchange;
pub mod gc;
mod lease;
mod pack;
mod put;
mod read;
mod readahead;
mod recompress;
mod restore;
mod stats;
mod table;
mod tier;
mod txn;
mod verify;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::chunker::{CHUNKER_VERSION, ChunkerParams};
use crate::error::{Error, Result};
use crate::id::{ChunkId, FileId, SegmentId};
use crate::index::{Index, SegmentEntry};
use crate::segment::io::{FsIo, SegmentIo};
use crate::segment::{SegmentSet, lock};

pub use crate::index::{ChunkRef, FileRecord, PartialId};
/// The remote tier's backends (local directory, S3, in-memory), for the
/// layers above that configure one.
pub use crate::segment::backend;
pub use crate::segment::{Location, MARKER, ObjectLayout, TailReport};
pub use exchange::RecordStream;
pub use gc::{GcPlan, GcReport, SegmentAction, SegmentFailure, SegmentPlan};
pub use lease::{EPOCH_ID_SHIFT, IndexRef, Lease, Refusal};
pub use put::{PutResult, StagedPut};
pub use read::{BATCH_BYTES, FileReader, READAHEAD_BATCHES};
pub use readahead::READAHEAD_BUDGET;
pub use recompress::{ColdMemo, ColdStep, DEFAULT_RECOMPRESS_LEVEL, RecompressReport};
pub use restore::{BucketCopy, IndexPush, RestoreReport, restore};
pub use stats::{FileUsage, StoreSize, StoreStats};
pub use table::{CodecError, Table, json_decode, json_encode};
pub use tier::{TierOptions, TierReport, TierSizes};
pub use txn::Txn;
pub use verify::{Problem, VerifyOptions, VerifyReport};

/// Version of the data directory layout (marker file, index, segments).
pub const STORE_FORMAT_VERSION: u32 = 1;

const LOCK: &str = "LOCK";
/// Meta key: when the newest pushed index backup was taken (u64 LE,
/// seconds since the epoch).
const META_LAST_PUSH: &str = "last_index_push";
/// Meta key: when the backup that holds it was taken (u64 LE, seconds);
/// written just before each backup, so a restored index knows its age.
const META_BACKUP_TAKEN: &str = "backup_taken";

/// Seconds since the epoch, by the wall clock.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
const META_PARAMS: &str = "params";

/// How to open a data directory.
pub struct StoreOptions {
    /// Chunker parameters for a *new* store (an existing one keeps its own).
    pub chunker: ChunkerParams,
    /// zstd level for new chunks.
    pub zstd_level: i32,
    /// Size at which a segment is sealed.
    pub segment_bytes: u64,
    /// Create the store when the directory is missing or empty.
    pub create: bool,
    /// The tables of the layers above the engine (their [`Table::NAME`]s).
    pub tables: Vec<&'static str>,
    /// The segment I/O seam (tests inject faults here).
    pub io: Box<dyn SegmentIo>,
    /// Threads that read ahead for readers (0: one per core).
    pub read_threads: usize,
    /// Disk space held back for compaction on a full disk (0: none; see
    /// `segment/reserve.rs`). A daemon keeps 64 MiB.
    pub reserve_bytes: u64,
    /// A remote tier for sealed segments (`store/tier.rs`); none keeps
    /// every segment on the local disk.
    pub tier: Option<TierOptions>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            chunker: ChunkerParams::default(),
            zstd_level: 1,
            segment_bytes: 256 << 20,
            create: true,
            tables: Vec::new(),
            io: Box::new(FsIo),
            read_threads: 0,
            reserve_bytes: 0,
            tier: None,
        }
    }
}

/// The parameters fixed when a store is created, kept in the index.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoreParams {
    pub format_version: u32,
    pub store_id: String,
    pub chunker_version: u32,
    pub chunk_min: u32,
    pub chunk_avg: u32,
    pub chunk_max: u32,
    /// Normalisation level; stores made before it was a parameter used 2.
    #[serde(default = "nc_before_it_was_a_parameter")]
    pub chunk_nc: u8,
}

fn nc_before_it_was_a_parameter() -> u8 {
    2
}

impl StoreParams {
    pub fn chunker(&self) -> ChunkerParams {
        ChunkerParams {
            min: self.chunk_min,
            avg: self.chunk_avg,
            max: self.chunk_max,
            nc: self.chunk_nc,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Marker {
    imgstore_format: u32,
    store_id: String,
}

/// A store. Cheap to clone; every clone is the same store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    params: StoreParams,
    chunker: ChunkerParams,
    zstd_level: i32,
    index: Index,
    segments: SegmentSet,
    /// Serialises refcount and segment-accounting updates.
    commit: Mutex<()>,
    /// One compaction pass at a time (GC, recompression): a second waits
    /// for the first and then finds what is left.
    compacting: Mutex<()>,
    /// Chunks that in-flight puts decided to reuse.
    pins: Mutex<HashMap<ChunkId, u32>>,
    /// Workers that read ahead for every reader.
    reads: readahead::ReadPool,
    /// Groups decompressed lately for a few of their members.
    recent_groups: Arc<decode::RecentGroups>,
    /// The remote tier's policy, when there is one.
    tier: Option<tier::TierPolicy>,
    /// The writer's lease, and whether the store is fenced.
    lease: lease::LeaseState,
    tail: Option<TailReport>,
    _lock: File,
}

impl Store {
    /// Opens the store in `dir` with default options, creating it if the
    /// directory is missing or empty.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(dir, StoreOptions::default())
    }

    pub fn open_with(dir: impl AsRef<Path>, opts: StoreOptions) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        opts.chunker.validate()?;
        let marker_path = dir.join(MARKER);
        check_dir(&dir, &marker_path, opts.create)?;
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let lock_file = take_lock(&dir)?;

        let marker = if marker_path.exists() {
            read_marker(&marker_path)?
        } else {
            write_marker(&dir, &marker_path)?
        };
        if marker.imgstore_format != STORE_FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                what: format!("data directory {}", dir.display()),
                found: marker.imgstore_format,
                supported: STORE_FORMAT_VERSION,
            });
        }
        let mut store_id = [0u8; 16];
        hex::decode_to_slice(&marker.store_id, &mut store_id).map_err(|_| Error::NotAStore {
            path: dir.clone(),
            reason: format!("{MARKER} holds a malformed store id"),
        })?;

        let index = Index::open(&dir.join("index"), &opts.tables)?;
        let params = load_params(&index, &marker, &opts.chunker)?;
        let chunker = params.chunker();
        chunker.validate()?;

        let (mut segments, tail) = SegmentSet::open(
            &dir.join("segments"),
            opts.io,
            store_id,
            opts.segment_bytes,
            opts.reserve_bytes,
            |id| Ok(index.segment(id)?.map_or(0, |e| e.indexed_end)),
        )?;
        let tier = tier::open_tier(&dir, &index, &mut segments, opts.tier)?;
        // Best effort: a store on a full disk still opens, and GC or the
        // next open fills the reserve once there is room.
        let _ = segments.fill_reserve();
        Ok(Store {
            inner: Arc::new(Inner {
                dir,
                params,
                chunker,
                zstd_level: opts.zstd_level,
                index,
                segments,
                commit: Mutex::new(()),
                compacting: Mutex::new(()),
                pins: Mutex::new(HashMap::new()),
                reads: readahead::ReadPool::new(match opts.read_threads {
                    // Reads of remote segments wait on the network, not a
                    // core: a reader's whole read-ahead window goes out at
                    // once (benches/tier.rs).
                    0 if tier.is_some() => READAHEAD_BATCHES
                        .max(std::thread::available_parallelism().map_or(2, |n| n.get())),
                    0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
                    n => n,
                }),
                recent_groups: Arc::default(),
                tier,
                lease: lease::LeaseState::default(),
                tail,
                _lock: lock_file,
            }),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The parameters fixed at creation.
    pub fn params(&self) -> &StoreParams {
        &self.inner.params
    }

    /// What opening found at the end of the last segment (a torn tail is
    /// reported here after it was cut).
    pub fn recovery_report(&self) -> Option<&TailReport> {
        self.inner.tail.as_ref()
    }

    /// Decompressed bytes read ahead for readers and not yet taken.
    pub fn readahead_bytes(&self) -> u64 {
        self.inner.reads.in_flight()
    }

    /// The stored record of a file.
    pub fn stat(&self, id: &FileId) -> Result<FileRecord> {
        self.inner.index.file(id)?.ok_or(Error::FileNotFound(*id))
    }

    /// A file's chunk list in order.
    pub fn chunks(&self, id: &FileId) -> Result<Vec<ChunkRef>> {
        self.stat(id)?;
        let mut out = Vec::new();
        self.inner.index.for_each_block(id, |_, refs| {
            out.extend(refs);
            Ok(())
        })?;
        Ok(out)
    }

    /// Adds a reference to a stored file (a clone). Writes one key whatever
    /// the file's size. Returns the new reference count.
    pub fn link(&self, id: &FileId) -> Result<u64> {
        self.transaction(|t| t.link(id))
    }

    /// Drops a reference. When the last one goes, the file's chunks lose a
    /// reference each; chunks left with none become garbage for GC.
    /// Returns the remaining reference count.
    pub fn unlink(&self, id: &FileId) -> Result<u64> {
        self.transaction(|t| t.unlink(id))
    }

    /// Bytes the space reserve holds now (`segment/reserve.rs`).
    pub fn reserve_held(&self) -> u64 {
        self.inner.segments.reserve_held()
    }

    /// Flushes buffered segment data and memtables, and puts the remote
    /// segments that reads brought whole into the cache (what the tier step
    /// does in the daemon; an offline `store cat` runs none). Dropping the
    /// store without calling this loses nothing acknowledged.
    pub fn close(self) -> Result<()> {
        // Best effort, like every fill: the cache is never the only copy.
        let _ = self.inner.segments.finish_fills(1.0);
        self.inner.segments.sync_all()?;
        self.inner.index.flush()
    }
}

/// Accumulates changes to segment entries within one batch.
#[derive(Default)]
struct SegmentDeltas {
    entries: HashMap<SegmentId, SegmentEntry>,
}

impl SegmentDeltas {
    fn entry(&mut self, index: &Index, id: SegmentId) -> Result<&mut SegmentEntry> {
        Ok(match self.entries.entry(id) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(index.segment(id)?.unwrap_or_default())
            }
        })
    }

    fn add_live(&mut self, index: &Index, id: SegmentId, delta: i64) -> Result<()> {
        let e = self.entry(index, id)?;
        e.live_bytes = e.live_bytes.saturating_add_signed(delta);
        Ok(())
    }

    fn extend_indexed(&mut self, index: &Index, id: SegmentId, end: u64) -> Result<()> {
        let e = self.entry(index, id)?;
        e.indexed_end = e.indexed_end.max(end);
        Ok(())
    }

    fn write(self, b: &mut crate::index::Batch<'_>) -> Result<()> {
        for (id, e) in self.entries {
            b.put_segment(id, &e)?;
        }
        Ok(())
    }
}

/// Releases pins when a put ends, however it ends.
struct PinGuard<'a> {
    pins: &'a Mutex<HashMap<ChunkId, u32>>,
    held: Vec<ChunkId>,
}

impl Drop for PinGuard<'_> {
    fn drop(&mut self) {
        let mut p = lock(self.pins);
        for id in &self.held {
            if let Some(n) = p.get_mut(id) {
                *n -= 1;
                if *n == 0 {
                    p.remove(id);
                }
            }
        }
    }
}

/// Refuses a path that is not a data directory (or, without `create`,
/// one that does not exist yet).
fn check_dir(dir: &Path, marker_path: &Path, create: bool) -> Result<()> {
    let exists = dir.exists();
    if exists && !dir.is_dir() {
        return Err(Error::NotAStore {
            path: dir.to_path_buf(),
            reason: "not a directory".into(),
        });
    }
    let empty = !exists
        || std::fs::read_dir(dir)
            .map_err(|e| Error::io(format!("listing {}", dir.display()), e))?
            .next()
            .is_none();
    if !marker_path.exists() && !empty {
        return Err(Error::NotAStore {
            path: dir.to_path_buf(),
            reason: format!("it is not empty and has no {MARKER} file"),
        });
    }
    if empty && !create {
        return Err(Error::NotAStore {
            path: dir.to_path_buf(),
            reason: "it does not exist or is empty (create it with `imgstore store put`)".into(),
        });
    }
    Ok(())
}

/// The parameters fixed at creation: read and checked, or written now for
/// a new store.
fn load_params(index: &Index, marker: &Marker, chunker: &ChunkerParams) -> Result<StoreParams> {
    if let Some(raw) = index.get_meta(META_PARAMS)? {
        let p: StoreParams =
            serde_json::from_slice(&raw).map_err(|e| Error::bad_record("meta", META_PARAMS, e))?;
        if p.store_id != marker.store_id {
            return Err(Error::Inconsistent(format!(
                "index belongs to store {}, the directory to {}",
                p.store_id, marker.store_id
            )));
        }
        if p.format_version != STORE_FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "index".into(),
                found: p.format_version,
                supported: STORE_FORMAT_VERSION,
            });
        }
        if p.chunker_version != CHUNKER_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "chunker".into(),
                found: p.chunker_version,
                supported: CHUNKER_VERSION,
            });
        }
        return Ok(p);
    }
    let p = StoreParams {
        format_version: STORE_FORMAT_VERSION,
        store_id: marker.store_id.clone(),
        chunker_version: CHUNKER_VERSION,
        chunk_min: chunker.min,
        chunk_avg: chunker.avg,
        chunk_max: chunker.max,
        chunk_nc: chunker.nc,
    };
    let mut b = index.batch();
    let raw =
        serde_json::to_vec(&p).map_err(|e| Error::Internal(format!("encoding parameters: {e}")))?;
    b.put_meta(META_PARAMS, &raw)?;
    b.commit()?;
    Ok(p)
}

fn take_lock(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    match f.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = f.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(Error::Locked {
                path: dir.to_path_buf(),
                holder: (!holder.is_empty()).then(|| holder.to_string()),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(Error::io(format!("locking {}", path.display()), e));
        }
    }
    let _ = f.set_len(0);
    let _ = writeln!(f, "pid {}", std::process::id());
    Ok(f)
}

fn read_marker(path: &Path) -> Result<Marker> {
    let raw =
        std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    serde_json::from_slice(&raw).map_err(|e| Error::NotAStore {
        path: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        reason: format!("{MARKER} is not readable: {e}"),
    })
}

fn write_marker(dir: &Path, path: &Path) -> Result<Marker> {
    let seed = format!(
        "{}-{:?}-{}",
        std::process::id(),
        std::time::SystemTime::now(),
        dir.display()
    );
    let id = blake3::hash(seed.as_bytes());
    let marker = Marker {
        imgstore_format: STORE_FORMAT_VERSION,
        store_id: hex::encode(id.as_bytes().get(..16).unwrap_or_default()),
    };
    let body = serde_json::to_vec_pretty(&marker)
        .map_err(|e| Error::Internal(format!("encoding marker: {e}")))?;
    let tmp = dir.join(format!("{MARKER}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    Ok(marker)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
