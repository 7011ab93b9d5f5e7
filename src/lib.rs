//! # imgstore
//!
//! A content-addressed, crash-safe store for VM and container image files,
//! with constant-time links. This crate is the storage engine; the IMGAPI
//! daemon and the command-line client stand on it.
//!
//! ## Layers
//!
//! Each module depends only on the ones above it in this table
//! (`tests/it/layers.rs` keeps it so, and keeps the engine's door closed:
//! nothing above `store` names the index or the segment files).
//!
//! | module | one responsibility |
//! | --- | --- |
//! | [`id`] | `ChunkId` (BLAKE3), `FileId`, `SegmentId`; whole-file SHA-1, MD5, BLAKE3 |
//! | [`error`] | the engine's semantic error type; causes travel as sources |
//! | `chunker` | content-defined chunk boundaries (FastCDC-style gear hash); [`ChunkerParams`] |
//! | [`format`](mod@format) | the on-disk and on-wire record, chunk lists; pure codecs, fuzzed; `FORMAT.md` |
//! | `segment` | segment files: append, seal, positioned reads, torn-tail recovery, every fsync of chunk data; the I/O seam ([`io`]); sealed segments behind the object backend seam ([`backend`]: local directory, S3, in-memory) with a local cache |
//! | `index` | RocksDB: chunks, files, chunk lists, segment accounting; the only `rocksdb` importer |
//! | [`store`] | the engine's one door: put, read, link/unlink, transactions generic over the caller's error, typed [`Table`]s for the layers above, gc, verify, stats, the remote tier's steps (upload, evict, delete after a grace period) |
//! | [`transfer`] | both ends of the chunk-diff copy between stores: serving, receiving (diff, verified batches, resume), byte progress |
//! | [`imgapi`] | IMGAPI rules over the store: typed codes and states, manifests, visibility, ACLs, files, icons, clones, copies and their jobs |
//! | [`service`] | one running image service below its HTTP faces: the rules plus its log, metrics, upkeep chores (GC, recompression, the tier's steps, index pushes, copy jobs resumed) and its role in a cluster |
//! | [`http`] | routes by resource, extractors, the one error mapping, the blocking bridge, request logs, the one IMGAPI client |
//! | [`cloudapi`] | CloudAPI's face for images (what the `triton` CLI calls): HTTP Signature auth, the same IMGAPI rules, CloudAPI's translation |
//! | [`daemon`] | the one validated configuration (and its reference), start-up, `serve(listener, state, shutdown)` (and the CloudAPI listener); a cluster member's protocol (one writer by lease, followers on copies of the newest publication, failover) |
//! | `cli` (binary only) | `imgstore serve`, `imgstore image ...` (the client), `imgstore store ...` (offline admin) |
//!
//! Public API is what an embedder needs: [`Store`], [`Txn`], [`Table`],
//! the ids, [`Error`], the I/O seam; `format` stays public for the fuzz
//! targets (and `segment` with the `fuzzing` feature).
//!
//! ## Example
//!
//! ```
//! # fn main() -> imgstore::Result<()> {
//! let dir = tempfile::tempdir().map_err(|e| imgstore::Error::io("making a directory", e))?;
//! let store = imgstore::Store::open(dir.path())?;
//! let put = store.put(&b"an image file"[..])?;
//! store.link(&put.file_id)?; // a clone: one key, whatever the size
//! let mut back = Vec::new();
//! std::io::Read::read_to_end(&mut store.open_file(&put.file_id)?, &mut back)
//!     .map_err(|e| imgstore::Error::io("reading", e))?;
//! assert_eq!(back, b"an image file");
//! assert_eq!(store.unlink(&put.file_id)?, 1);
//! assert!(store.verify(false)?.is_clean());
//! # Ok(()) }
//! ```
//!
//! ## Choices, and the measurements behind them
//!
//! * Chunks average 64 KiB (min 16 KiB, max 256 KiB); see `ChunkerParams`.
//!   Measured on a tar of a Debian tree (1.48 GB) and its upgrade
//!   (`benches/chunk_size.rs`): 16 KiB chunks store 3.02x and an upgrade adds
//!   11.1 % at 260 MB/s; 64 KiB 3.02-3.16x, 11.8-11.9 %, 285-316 MB/s; 256 KiB
//!   3.32x but 13.3 %; 1 MiB 3.45x but 15.5 %. 64 KiB keeps most of the dedup
//!   of small chunks at the speed of large ones.
//! * Normalisation level 1 (not 2) since 2026-11 (`benches/dedup.rs`, same
//!   data, bytes `v2` adds uncompressed / as zstd-1 records, and `v1` stored):
//!   16K/64K/256K nc 2: 233.0 / 183.6 MB, 489.8 MB; nc 1: 229.0 / 181.8,
//!   486.2; nc 0: 236.6 / 184.1, 483.5; 8K min nc 1: 228.1 / 181.6, 486.2;
//!   4K min: 227.7 / 181.4; 512K max: 229.1 / 181.8; 32K avg nc 1: 206.2 /
//!   175.5 but 494.2 and twice the chunks. Level 1 dedups and compresses
//!   better than 2 with 8 % fewer chunks; a smaller minimum adds little
//!   for more hashing.
//! * New chunks are compressed with zstd level 1 when that saves at least
//!   1/32 of their size; otherwise they are stored raw. Level 3 stores 4 %
//!   less but puts 10 % slower (285 vs 316 MB/s on the same data); both stay
//!   within 1.15x of what borg (zstd 3, 2 MiB chunks) stores.
//! * A put hashes every byte three ways (MD5 and SHA-1 for IMGAPI, BLAKE3
//!   for the ids) and cuts chunks with the gear hash rolled four bytes at a
//!   time (2.08 GiB/s on the 2-core dev VM against 1.33 byte by byte, the
//!   same cuts). MD5 cannot be split and has a thread of its own; chunks
//!   are named and compressed on one thread per core (`store/put.rs`), so
//!   with enough cores a put goes at MD5's pace (about 450 MB/s there).
//! * Cold segments can be rewritten at a denser level (`Store::recompress`,
//!   `imgstore store recompress`; default level 17), their chunks gathered
//!   into **group records** of about 1 MiB compressed as one frame
//!   (`store/pack.rs`, `FORMAT.md`): a 64 KiB chunk on its own starts its
//!   frame without context, which is where borg's 2 MiB chunks won. The
//!   table behind the choice is `benches/density.rs` (v1 of the Debian
//!   tree, against one frame per chunk at level 14): a dictionary of 112
//!   KiB 0.97, groups of 1 MiB 0.94, of 2 MiB 0.91, groups at level 17
//!   0.90 (zstd's level 14 uses weaker parameters above 256 KiB of input);
//!   groups of 2 MiB at 17 would store 3.5 % less but double the bytes one
//!   chunk's read decompresses. In the store (`benches/recompress.rs`, 2026-12-06): all of v1,
//!   485.5 MB at level 1, 366.2 MB of segments and 3.1 MB of index after
//!   recompression in 281 s (5 MB/s of input on one core), against 428.1
//!   MB for borg 1.2 with zstd,3 in the same session: 0.86x (it was 0.96x
//!   with one frame per chunk at level 14). Before groups, a quarter of v1
//!   rewritten record by record: level 9 113.8 MB (7.3 s), 14 107.1 (36.0
//!   s), 19 105.4 (117 s). The daemon does the same in the background
//!   (`recompressLevel`, default 17), one cold segment a step and at most
//!   half of a core; what it writes is marked settled so nothing is
//!   compressed twice by it (records settled before groups existed stay as
//!   they are: `imgstore store recompress` groups them). A read
//!   decompresses a group once: a reader's batches end at group boundaries
//!   and take a whole group straight into their buffer, and a group
//!   decompressed for a few of its members (a chunk the file repeats far
//!   from where it was stored) is kept store-wide for the next repeat
//!   (`store/decode.rs`, 16 MiB). In one run on 2 cores, `store cat` of v1
//!   grouped at 17 took 0.74 s (median of five) against 1.40 s for one
//!   thread of `zstd -d` on a level-3 `.zst` of it: 1.89x (1.69x before
//!   repeats were kept; 1.92x for v1 at ingest's level).
//! * A copy between stores moves a group as it is stored when one request
//!   asks for every member of it (transfer version 2, `FORMAT.md`: the
//!   chunk list's runs say where groups are, so the receiver never cuts one
//!   between requests), never a group that holds another file's chunk. v1
//!   grouped at 17 copied (`store copy`) in 2.24-2.42 s with 3.5 s of CPU
//!   and 368.7 MB stored at the destination, against 2.10-2.16 s from an
//!   ungrouped source in the same run; before, each member was compressed
//!   again for the trip (7.4 s, 13.6 s of CPU, 485.5 MB).
//! * A file's id is the BLAKE3 of its content: storing the same bytes twice
//!   adds a reference, not a copy. Links and unlinks count references on the
//!   file record, so a clone writes one key whatever the file's size; chunk
//!   refcounts change only when a file first appears or its last reference
//!   goes.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

mod chunker;
#[cfg(feature = "index")]
pub mod cloudapi;
#[cfg(feature = "index")]
pub mod daemon;
pub mod error;
pub mod format;
#[cfg(feature = "index")]
pub mod http;
pub mod id;
#[cfg(feature = "index")]
pub mod imgapi;
#[cfg(feature = "index")]
mod index;
// Segment files stay inside the engine; the fuzz targets reach the
// recovery scan through the `fuzzing` feature.
#[cfg(feature = "fuzzing")]
pub mod segment;
#[cfg(all(feature = "index", not(feature = "fuzzing")))]
mod segment;
#[cfg(feature = "index")]
pub mod service;
#[cfg(feature = "index")]
pub mod store;
#[cfg(feature = "index")]
pub mod transfer;

pub use chunker::{CHUNKER_VERSION, ChunkerParams, MAX_CHUNK_LEN};
pub use error::{Error, Result};
pub use id::{ChunkId, FileId, SegmentId};
/// Where sealed segments go: the object backend seam (local directory, S3,
/// in-memory) and its conformance suite.
#[cfg(any(feature = "index", feature = "fuzzing"))]
pub use segment::backend;
/// The I/O seam every write and fsync of chunk data passes through: the
/// real file system, and a wrapper that fails chosen operations (tests).
#[cfg(any(feature = "index", feature = "fuzzing"))]
pub use segment::io;
#[cfg(feature = "index")]
pub use store::{PutResult, Store, StoreOptions, Table, Txn};
