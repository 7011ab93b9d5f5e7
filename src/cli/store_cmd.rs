//! `imgstore store put | cat | link | unlink | gc | verify | stats`.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;

use super::emit;
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde::Serialize;

use imgstore::store::GcPlan;
use imgstore::{FileId, Store, StoreOptions};

#[derive(Args, Debug)]
pub struct StoreArgs {
    /// The data directory (default: the config's `dataDir`, else
    /// ./imgstore-data).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The daemon's config file: its `dataDir`, `segmentBytes` and
    /// `"storage"` (a store whose segments are in a bucket opens only with
    /// it; a command that writes then takes the writer's lease, as the
    /// daemon does, and is refused while another daemon holds it).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: StoreCommand,
}

#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Store a file (`-` reads standard input); creates the store if needed.
    Put { file: PathBuf },
    /// Write a stored file (or a byte range of it) to standard output.
    Cat {
        file_id: String,
        #[arg(long, default_value_t = 0)]
        offset: u64,
        #[arg(long)]
        length: Option<u64>,
    },
    /// Copy a stored file from another data directory, moving only the
    /// chunks this one lacks. Every chunk and the whole file are verified,
    /// as in a copy between datacenters; run again after an interruption,
    /// it fetches only what the first run did not store. Creates the store
    /// if needed; the file gets one reference here.
    Copy {
        /// The data directory to copy from (not in use by a daemon).
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
        file_id: String,
    },
    /// Add a reference to a stored file.
    Link { file_id: String },
    /// Drop a reference; the file goes with its last one.
    Unlink { file_id: String },
    /// Collect garbage: rewrite or delete segments past the garbage threshold.
    Gc {
        /// Only print the plan.
        #[arg(long)]
        dry_run: bool,
        /// Garbage ratio (0..1) at which a segment is rewritten.
        #[arg(long, default_value_t = imgstore::store::gc::DEFAULT_THRESHOLD)]
        threshold: f64,
    },
    /// Check every record and refcount; exit status 1 when something is wrong.
    Verify {
        /// Fix refcounts and segment accounting, and upload again the
        /// cached copy of a segment whose object in the bucket is missing
        /// or damaged.
        #[arg(long)]
        repair: bool,
        /// Also read the bucket's objects that have a cached copy and
        /// compare them with it (by default their existence and length
        /// are checked).
        #[arg(long)]
        read_data: bool,
        /// Read the records of only this share (0 to 1) of the remote
        /// segments with no local copy, picked at random; the others are
        /// checked by their objects' length. Local data is always read.
        #[arg(long, value_name = "SHARE", default_value_t = 1.0)]
        sample: f64,
    },
    /// Usage figures for the store, or for one file.
    Stats { file_id: Option<String> },
    /// Rewrite every segment with its records compressed at a denser zstd
    /// level (and its garbage dropped); prints stored bytes before and after.
    Recompress {
        /// zstd level (1-22).
        #[arg(long, default_value_t = imgstore::store::DEFAULT_RECOMPRESS_LEVEL,
              value_parser = clap::value_parser!(i32).range(1..=22))]
        level: i32,
    },
    /// Build a new data directory (`--data-dir`, which must be empty or
    /// missing) from the bucket of the config's `storage` alone: the index
    /// backup and the store's marker; segments stay in the bucket and are
    /// read from it.
    Restore {
        /// The store to restore, when several share the prefix.
        #[arg(long, value_name = "HEX")]
        store_id: Option<String>,
    },
    /// A random workload of puts, links, unlinks and GC that logs every
    /// operation before and after it; for crash testing a disk with kill -9.
    /// Never point it at a store holding data you care about.
    #[command(hide = true)]
    Soak {
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Where to log `begin`/`end` lines.
        #[arg(long)]
        log: PathBuf,
        /// Stop after this many operations (0: run until killed).
        #[arg(long, default_value_t = 0)]
        ops: u64,
    },
}

pub fn run(args: StoreArgs) -> i32 {
    let name = command_name(&args.command);
    match execute(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("imgstore store {name}: error: {e:#}");
            1
        }
    }
}

fn command_name(c: &StoreCommand) -> &'static str {
    match c {
        StoreCommand::Put { .. } => "put",
        StoreCommand::Cat { .. } => "cat",
        StoreCommand::Copy { .. } => "copy",
        StoreCommand::Link { .. } => "link",
        StoreCommand::Unlink { .. } => "unlink",
        StoreCommand::Gc { .. } => "gc",
        StoreCommand::Verify { .. } => "verify",
        StoreCommand::Stats { .. } => "stats",
        StoreCommand::Recompress { .. } => "recompress",
        StoreCommand::Restore { .. } => "restore",
        StoreCommand::Soak { .. } => "soak",
    }
}

impl StoreArgs {
    /// The daemon config named by `--config`, if any.
    fn daemon_config(&self) -> Result<Option<imgstore::daemon::DaemonConfig>> {
        self.config
            .as_deref()
            .map(imgstore::daemon::DaemonConfig::load)
            .transpose()
            .map_err(Into::into)
    }

    /// `--data-dir`, else the config's, else the default.
    fn data_dir(&self) -> Result<PathBuf> {
        Ok(match (&self.data_dir, self.daemon_config()?) {
            (Some(d), _) => d.clone(),
            (None, Some(c)) => c.data_dir,
            (None, None) => imgstore::daemon::DEFAULT_DATA_DIR.into(),
        })
    }
}

/// A store opened by a command, and the writer's lease it holds while it
/// runs when the command writes to a store in a bucket.
struct Opened {
    store: Store,
    lease: Option<imgstore::daemon::LeaseKeeper>,
}

impl std::ops::Deref for Opened {
    type Target = Store;

    fn deref(&self) -> &Store {
        &self.store
    }
}

impl Opened {
    fn close(self) -> Result<()> {
        self.store.close()?;
        drop(self.lease);
        Ok(())
    }
}

fn open(args: &StoreArgs, create: bool) -> Result<Opened> {
    let dir = args.data_dir()?;
    // Keep the space reserve the daemon made (its size is its config's).
    let reserve = std::fs::metadata(dir.join("segments").join("reserve")).map_or(0, |m| m.len());
    let config = args.daemon_config()?.map(|mut c| {
        c.data_dir = dir.clone();
        c
    });
    let base = match &config {
        Some(c) => {
            let opts = c.store_options()?;
            c.check_storage(&opts)?;
            opts
        }
        None => StoreOptions::default(),
    };
    let opts = StoreOptions {
        create,
        reserve_bytes: reserve,
        ..base
    };
    let store = Store::open_with(&dir, opts)?;
    // A command that writes takes the lease as the daemon does: it is
    // refused while another daemon writes the store's objects.
    let lease = match &config {
        Some(c) if args.command.writes() => {
            let log = imgstore::service::Logger::new("imgstore", Box::new(std::io::stderr()))
                .with_level(40);
            c.hold_lease(&store, &log)?
        }
        _ => None,
    };
    Ok(Opened { store, lease })
}

fn parse_id(s: &str) -> Result<FileId> {
    s.parse::<FileId>()
        .with_context(|| format!("{s:?} is not a file id"))
}

#[derive(Serialize)]
struct RefsOut {
    file_id: FileId,
    refs: u64,
}

#[derive(Serialize)]
struct GcOut<'a> {
    plan: &'a GcPlan,
    #[serde(skip_serializing_if = "Option::is_none")]
    done: Option<imgstore::store::GcReport>,
}

impl StoreCommand {
    /// True for a command that may change the store (and so, for a store
    /// in a bucket, its objects).
    fn writes(&self) -> bool {
        match self {
            StoreCommand::Cat { .. }
            | StoreCommand::Stats { .. }
            | StoreCommand::Restore { .. } => false,
            StoreCommand::Gc { dry_run, .. } => !dry_run,
            StoreCommand::Verify { repair, .. } => *repair,
            StoreCommand::Put { .. }
            | StoreCommand::Copy { .. }
            | StoreCommand::Link { .. }
            | StoreCommand::Unlink { .. }
            | StoreCommand::Recompress { .. }
            | StoreCommand::Soak { .. } => true,
        }
    }
}

fn execute(args: StoreArgs) -> Result<i32> {
    let json = args.json;
    match &args.command {
        StoreCommand::Put { file } => put(&args, file),
        StoreCommand::Cat {
            file_id,
            offset,
            length,
        } => cat(&args, file_id, *offset, *length),
        StoreCommand::Copy { from, file_id } => copy(&args, from, file_id),
        StoreCommand::Link { file_id } => refs(&args, file_id, true),
        StoreCommand::Unlink { file_id } => refs(&args, file_id, false),
        StoreCommand::Gc { dry_run, threshold } => gc(&args, *dry_run, *threshold),
        StoreCommand::Verify {
            repair,
            read_data,
            sample,
        } => verify(
            &args,
            imgstore::store::VerifyOptions {
                repair: *repair,
                sample: *sample,
                read_objects: *read_data,
            },
        ),
        StoreCommand::Recompress { level } => {
            let store = open(&args, false)?;
            let r = store.recompress(*level)?;
            store.close()?;
            emit(json, &r, || {
                format!(
                    "recompressed {} segments ({} records) at zstd {}: stored bytes {} -> {} (live {} -> {})",
                    r.segments,
                    r.records_rewritten,
                    r.level,
                    r.stored_bytes_before,
                    r.stored_bytes_after,
                    r.live_stored_bytes_before,
                    r.live_stored_bytes_after
                )
            })?;
            Ok(0)
        }
        StoreCommand::Restore { store_id } => {
            let Some(config) = args.daemon_config()? else {
                bail!("restore reads the bucket from the daemon's config: give --config FILE");
            };
            let Some(storage) = &config.storage else {
                bail!("the config has no \"storage\" object: there is no bucket to restore from");
            };
            let tier = storage.tier_options()?;
            let dir = args.data_dir()?;
            let r =
                imgstore::store::restore(&tier.backend, &tier.prefix, store_id.as_deref(), &dir)?;
            emit(json, &r, || {
                format!(
                    "restored store {} into {}: {} index files ({} bytes); segments are read from the bucket",
                    r.store_id,
                    r.data_dir.display(),
                    r.index_files,
                    r.index_bytes
                )
            })?;
            Ok(0)
        }
        StoreCommand::Soak { seed, log, ops } => {
            soak(&args.data_dir()?, *seed, log, *ops)?;
            Ok(0)
        }
        StoreCommand::Stats { file_id: Some(f) } => {
            let store = open(&args, false)?;
            let u = store.file_usage(&parse_id(f)?)?;
            emit(json, &u, || {
                format!(
                    "{}  {} bytes, {} refs, {} chunks: {} bytes unique ({} stored), {} bytes shared ({} stored)",
                    u.file_id,
                    u.size,
                    u.refs,
                    u.chunks,
                    u.unique_bytes,
                    u.unique_stored_bytes,
                    u.shared_bytes,
                    u.shared_stored_bytes
                )
            })?;
            Ok(0)
        }
        StoreCommand::Stats { file_id: None } => {
            let store = open(&args, false)?;
            let s = store.stats()?;
            emit(json, &s, || {
                let tier = s.tier.map_or(String::new(), |t| {
                    format!(
                        "\nlocal bytes {} ({} segments not uploaded yet), cached bytes {}, remote bytes {} ({} segments), {} retired objects waiting",
                        t.local_bytes,
                        t.local_segments,
                        t.cached_bytes,
                        t.remote_bytes,
                        t.remote_segments,
                        t.retired_segments
                    )
                });
                format!(
                    "files {} (references {})\nlogical bytes {}\nunique uncompressed bytes {}\nstored bytes {} (live {}, garbage {}) in {} segments\nindex bytes {}{tier}",
                    s.files,
                    s.file_references,
                    s.logical_bytes,
                    s.unique_uncompressed_bytes,
                    s.stored_bytes,
                    s.live_stored_bytes,
                    s.garbage_bytes,
                    s.segments,
                    s.index_bytes
                )
            })?;
            Ok(0)
        }
    }
}

fn put(args: &StoreArgs, file: &std::path::Path) -> Result<i32> {
    let store = open(args, true)?;
    let input: Box<dyn Read> = if file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?)
    };
    let r = store.put(input)?;
    store.close()?;
    emit(args.json, &r, || {
        format!(
            "{}  {} bytes  sha1 {}  {} chunks ({} new, {} bytes stored){}",
            r.file_id,
            r.size,
            r.sha1,
            r.chunk_count,
            r.new_chunks,
            r.new_stored_bytes,
            if r.existed {
                "  (already stored: reference added)"
            } else {
                ""
            }
        )
    })?;
    Ok(0)
}

fn cat(args: &StoreArgs, file_id: &str, offset: u64, length: Option<u64>) -> Result<i32> {
    let id = parse_id(file_id)?;
    let store = open(args, false)?;
    let size = store.stat(&id)?.size;
    let len = length.unwrap_or(size.saturating_sub(offset));
    let mut reader = store.open_range(&id, offset, len)?;
    // Whole blocks straight to the file descriptor: standard output's own
    // writer is line-buffered, and scanning gigabytes for newlines costs.
    let mut out = std::fs::File::from(
        std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .context("duplicating standard output")?,
    );
    while let Some(block) = reader.next_block()? {
        out.write_all(&block).context("writing standard output")?;
    }
    Ok(0)
}

/// `link` (`add`) or `unlink`.
#[derive(Serialize)]
struct CopyOut {
    #[serde(flatten)]
    put: imgstore::store::PutResult,
    progress: imgstore::transfer::ProgressReport,
}

fn copy(args: &StoreArgs, from: &std::path::Path, file_id: &str) -> Result<i32> {
    use imgstore::transfer::{Expect, LocalSource, Progress, ReceiveOptions, receive_file};
    let id = parse_id(file_id)?;
    let opts = StoreOptions {
        create: false,
        ..StoreOptions::default()
    };
    let src =
        Store::open_with(from, opts).with_context(|| format!("opening {}", from.display()))?;
    let dst = open(args, true)?;
    let source = LocalSource::new(src.clone(), id)?;
    // Named by the file: a run after an interrupted one finds the chunks
    // the first stored under this name and does not fetch them again.
    let mut partial = [0u8; 16];
    let name = blake3::Hasher::new()
        .update(b"imgstore store copy\0")
        .update(&id.0)
        .finalize();
    for (p, b) in partial.iter_mut().zip(name.as_bytes()) {
        *p = *b;
    }
    let progress = Progress::default();
    let put = receive_file(
        &dst,
        &source,
        &partial,
        &Expect::default(),
        &progress,
        &ReceiveOptions::default(),
    )?;
    dst.close()?;
    src.close()?;
    let out = CopyOut {
        put,
        progress: progress.report(),
    };
    emit(args.json, &out, || {
        let p = &out.progress;
        format!(
            "{}  {} bytes: {} chunks fetched ({} bytes, {} record bytes), {} here already",
            out.put.file_id,
            out.put.size,
            p.chunks_fetched,
            p.bytes_fetched,
            p.wire_bytes,
            p.chunks_local
        )
    })?;
    Ok(0)
}

fn refs(args: &StoreArgs, file_id: &str, add: bool) -> Result<i32> {
    let id = parse_id(file_id)?;
    let store = open(args, false)?;
    let refs = if add {
        store.link(&id)?
    } else {
        store.unlink(&id)?
    };
    store.close()?;
    emit(args.json, &RefsOut { file_id: id, refs }, || {
        format!("{id}  {refs} references")
    })?;
    Ok(0)
}

fn gc(args: &StoreArgs, dry_run: bool, threshold: f64) -> Result<i32> {
    if !(0.0..=1.0).contains(&threshold) {
        bail!("--threshold must be between 0 and 1");
    }
    let store = open(args, false)?;
    let plan = store.gc_plan(threshold)?;
    let done = if dry_run {
        None
    } else {
        Some(store.gc_execute(&plan)?)
    };
    store.close()?;
    let out = GcOut {
        plan: &plan,
        done: done.clone(),
    };
    emit(args.json, &out, || {
        let mut s = format!(
            "plan: {} segments, {} bytes reclaimable, {} bytes of garbage below the threshold",
            plan.segments.len(),
            plan.reclaimable_bytes,
            plan.garbage_left_bytes
        );
        for p in &plan.segments {
            s.push_str(&format!(
                "\n  segment {:012}: {:?}, {} live of {} bytes",
                p.segment, p.action, p.live_bytes, p.file_bytes
            ));
        }
        if let Some(d) = &done {
            s.push_str(&format!(
                "\ndone: {} segments deleted, {} rewritten, {} records copied, {} chunks dropped, {} bytes freed",
                d.segments_deleted, d.segments_rewritten, d.records_copied, d.chunks_dropped, d.bytes_freed
            ));
            for f in &d.failed {
                s.push_str(&format!(
                    "\n  segment {:012} left as it is: {}",
                    f.segment, f.error
                ));
            }
        }
        s
    })?;
    // Exit status 1 when a segment could not be collected.
    Ok(i32::from(done.is_some_and(|d| !d.failed.is_empty())))
}

/// Exit status 1 when something is wrong.
fn verify(args: &StoreArgs, opts: imgstore::store::VerifyOptions) -> Result<i32> {
    if !(0.0..=1.0).contains(&opts.sample) {
        bail!("--sample {}: a share is 0 to 1", opts.sample);
    }
    let store = open(args, false)?;
    let mut report = store.verify_with(opts)?;
    // A daemon's data dir: every reference must belong to an image.
    if imgstore::imgapi::audit::is_imgapi_store(&store).unwrap_or(false) {
        report
            .problems
            .extend(imgstore::imgapi::audit::audit(&store).map_err(|e| anyhow::anyhow!("{e}"))?);
    }
    store.close()?;
    let clean = report.is_clean();
    emit(args.json, &report, || {
        let mut s = format!(
            "{} files, {} chunks, {} segments, {} records checked, {} bytes verified: {}",
            report.files,
            report.chunks,
            report.segments,
            report.records_checked,
            report.bytes_checked,
            if report.problems.is_empty() {
                "ok"
            } else {
                "PROBLEMS"
            }
        );
        if report.remote_segments_not_read > 0 {
            s.push_str(&format!(
                "\n  {} remote segments checked by their objects' length only (--sample)",
                report.remote_segments_not_read
            ));
        }
        for p in &report.problems {
            s.push_str(&format!(
                "\n  {}: {}{}",
                p.kind,
                p.detail,
                if p.repaired {
                    " (repaired)"
                } else if p.repairable {
                    " (repairable with --repair)"
                } else {
                    ""
                }
            ));
        }
        s
    })?;
    Ok(if clean { 0 } else { 1 })
}

/// Small chunks and segments so that a short run rotates segments, shares
/// chunks between files and gives GC work.
fn soak(dir: &std::path::Path, seed: u64, log: &std::path::Path, ops: u64) -> Result<()> {
    let store = Store::open_with(
        dir,
        StoreOptions {
            chunker: imgstore::ChunkerParams::with_average(4096),
            segment_bytes: 1 << 20,
            ..StoreOptions::default()
        },
    )?;
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    // References left by earlier runs are ours to drop too, so the store
    // stays small however long the crash loop runs.
    let mut live: Vec<FileId> = Vec::new();
    for (id, refs) in store.files()? {
        live.extend(std::iter::repeat_n(id, refs as usize));
    }
    let mut n = 0u64;
    while ops == 0 || n < ops {
        n += 1;
        let mut dice = next() % 100;
        // Keep the store small so a long crash run stays linear in time.
        if live.len() > 40 && dice < 45 {
            dice = 70;
        }
        if dice < 45 || live.is_empty() {
            let data = soak_content(next(), next());
            let id = FileId(*blake3::hash(&data).as_bytes());
            log.write_all(format!("begin put {id} {}\n", data.len()).as_bytes())?;
            store.put(&data[..])?;
            log.write_all(b"end\n")?;
            live.push(id);
        } else if dice < 65 {
            let id = live[(next() % live.len() as u64) as usize];
            log.write_all(format!("begin link {id}\n").as_bytes())?;
            store.link(&id)?;
            log.write_all(b"end\n")?;
            live.push(id);
        } else if dice < 92 {
            let id = live.swap_remove((next() % live.len() as u64) as usize);
            log.write_all(format!("begin unlink {id}\n").as_bytes())?;
            store.unlink(&id)?;
            log.write_all(b"end\n")?;
        } else {
            log.write_all(b"begin gc\n")?;
            let plan = store.gc_plan(0.2)?;
            store.gc_execute(&plan)?;
            log.write_all(b"end\n")?;
        }
    }
    store.close()?;
    Ok(())
}

/// Up to ~400 KiB built from a few shared 8 KiB blocks and fresh bytes.
fn soak_content(a: u64, b: u64) -> Vec<u8> {
    let pieces = 1 + a % 48;
    let mut out = Vec::new();
    let mut s = b | 1;
    for p in 0..pieces {
        let shared = (a >> (p % 60)) & 1 == 1;
        let mut x = if shared {
            0x5eed + (b.wrapping_add(p) % 8)
        } else {
            s
        };
        for _ in 0..1024 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.extend_from_slice(&x.to_le_bytes());
        }
        s = x;
    }
    out
}
