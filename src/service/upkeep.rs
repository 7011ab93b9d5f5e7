//! The upkeep room: everything the daemon does without being asked, as a
//! list of [`Chore`]s run one after another on one thread, so that no two
//! passes over the store compete with each other or with themselves.
//!
//! | chore | every | does |
//! | --- | --- | --- |
//! | `resume-jobs` | once, at start | copy jobs a restart interrupted run again |
//! | `lease` | a third of the lease, on its own thread | renews the writer's lease; once lost the store is fenced |
//! | `publish` | 1 s, a cluster's writer, on its own thread | what was committed since the last publication reaches the bucket and the followers |
//! | `cache` | 2 s, a cluster's follower (its only chore) | cache fills placed, old cached copies evicted |
//! | `check-copies` | 5 s; at once while more wait | copied files checked whole after their copy (`imgapi::checks`) |
//! | `sweep-orphans` | once, with a tier | objects a crash left in the bucket that the index knows nothing of are deleted |
//! | `tier` | 2 s; at once after work, 10 s after a failure | uploads sealed segments, places cache fills, evicts, deletes retired objects |
//! | `index-push` | `indexPushSeconds` | backs the index up to the bucket |
//! | `gc` | `gcIntervalSeconds` | online GC: space deletes and failed uploads left comes back |
//! | `recompress` | as long as the last step took; 30 s idle | rewrites one cold segment at `recompressLevel` (at most half a core while there is work) |
//!
//! A chore handles its own errors: it logs them, counts them in the
//! metrics, and says when it wants to run again ([`Pace`]). A failing
//! chore never stops the others.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::Service;
use crate::error::chain;
use crate::store::{ColdMemo, TierReport};

/// How often the room looks for a chore that is due.
const TICK: Duration = Duration::from_millis(200);

/// When a chore runs next, as its run saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace {
    /// After its usual pause (`every`).
    Usual,
    /// At the next tick: there is more to do.
    Again,
    /// After this pause (longer after a failure, or as long as the work
    /// took, to bound its share of the CPU).
    After(Duration),
    /// Never again in this process (a chore done once).
    Done,
}

/// What one run of a chore does.
pub type Run = Box<dyn FnMut(&Service, &AtomicBool) -> Pace + Send>;

/// One thing the daemon does by itself, and how often.
pub struct Chore {
    pub name: &'static str,
    /// The usual pause between two runs.
    pub every: Duration,
    /// The pause before the first run.
    pub first: Duration,
    pub run: Run,
}

/// Background recompression: sealed segments that have gone cold are
/// rewritten at a denser zstd level than ingest's, one at a time.
#[derive(Clone, Debug)]
pub struct Recompress {
    /// zstd level; None turns the chore off (`recompressLevel: 0`).
    pub level: Option<i32>,
    /// A segment sealed at least this long ago is cold.
    pub after: Duration,
    /// Pause between steps that found nothing to do.
    pub idle: Duration,
}

/// When a sealed segment counts as cold.
pub const DEFAULT_RECOMPRESS_AFTER: Duration = Duration::from_secs(3600);

impl Default for Recompress {
    fn default() -> Self {
        Recompress {
            level: Some(crate::store::DEFAULT_RECOMPRESS_LEVEL),
            after: DEFAULT_RECOMPRESS_AFTER,
            idle: Duration::from_secs(30),
        }
    }
}

/// How often the periodic chores run (the daemon's configuration).
#[derive(Clone, Debug)]
pub struct Schedule {
    /// Online GC (`gcIntervalSeconds`; None: never).
    pub gc_every: Option<Duration>,
    pub recompress: Recompress,
    /// Index backups to the bucket (`indexPushSeconds`; None: never).
    pub index_push_every: Option<Duration>,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            gc_every: Some(Duration::from_secs(600)),
            recompress: Recompress::default(),
            index_push_every: None,
        }
    }
}

/// The chores of a service with `schedule` (the tier's only when the
/// store has a tier).
pub fn chores(service: &Service, schedule: &Schedule) -> Vec<Chore> {
    let mut list = vec![Chore {
        name: "resume-jobs",
        every: Duration::ZERO,
        first: Duration::ZERO,
        run: Box::new(resume_jobs),
    }];
    if service.api.store().has_tier() {
        list.push(Chore {
            name: "sweep-orphans",
            every: Duration::from_secs(10),
            first: Duration::ZERO,
            run: Box::new(sweep_orphans),
        });
        list.push(Chore {
            name: "tier",
            every: Duration::from_secs(2),
            first: Duration::ZERO,
            run: Box::new(tier_step),
        });
        if let Some(every) = schedule.index_push_every {
            list.push(Chore {
                name: "index-push",
                every,
                first: every,
                run: Box::new(push_index),
            });
        }
    }
    list.push(Chore {
        name: "check-copies",
        every: Duration::from_secs(5),
        first: Duration::ZERO,
        run: Box::new(check_copies),
    });
    if let Some(every) = schedule.gc_every {
        list.push(Chore {
            name: "gc",
            every,
            first: every,
            run: Box::new(|s: &Service, _: &AtomicBool| {
                // Logged and counted by `collect_garbage` itself.
                let _ = s.collect_garbage(crate::store::gc::DEFAULT_THRESHOLD);
                Pace::Usual
            }),
        });
    }
    if let Some(level) = schedule.recompress.level {
        let r = schedule.recompress.clone();
        let mut memo = ColdMemo::default();
        list.push(Chore {
            name: "recompress",
            every: r.idle,
            // What is cold already need not wait.
            first: Duration::ZERO,
            run: Box::new(move |s: &Service, stop: &AtomicBool| {
                recompress_step(s, level, &r, &mut memo, stop)
            }),
        });
    }
    list
}

/// The writer's lease renewal, a room of its own: no other chore's length
/// (a recompression step, a GC pass) may delay it past the lease. Empty
/// when the store holds no lease.
pub fn lease_chores(service: &Service) -> Vec<Chore> {
    let Some(lease) = service.api.store().lease() else {
        return Vec::new();
    };
    // Renewed every third of the lease: two renewals may fail (the bucket
    // slow or away) before it runs out.
    let every = Duration::from_secs((lease.seconds / 3).max(1));
    vec![Chore {
        name: "lease",
        every,
        first: every,
        run: Box::new(renew_lease),
    }]
}

/// A cluster writer's publications: each second, what was committed
/// since the last one (writes that did not publish themselves: copy jobs,
/// GC, the tier's steps) reaches the bucket and the followers. Nothing
/// committed: nothing is done.
pub fn publish_chores(service: &Service) -> Vec<Chore> {
    if service.cluster.is_none() || !service.api.store().has_tier() {
        return Vec::new();
    }
    vec![Chore {
        name: "publish",
        every: Duration::from_secs(1),
        first: Duration::from_secs(1),
        run: Box::new(
            |s: &Service, _: &AtomicBool| match s.api.store().publish() {
                Ok(()) => Pace::Usual,
                Err(e) => {
                    s.metrics.tier_failed();
                    s.log.error(&format!("publishing: {}", chain(&e)));
                    Pace::After(Duration::from_secs(2))
                }
            },
        ),
    }]
}

/// A cluster follower's chores: its cache of the bucket's segments kept
/// (fills placed, old copies evicted). Following itself is the
/// member's (`daemon::cluster`).
pub fn follower_chores(service: &Service) -> Vec<Chore> {
    if !service.api.store().has_tier() {
        return Vec::new();
    }
    vec![Chore {
        name: "cache",
        every: Duration::from_secs(2),
        first: Duration::from_secs(2),
        run: Box::new(
            |s: &Service, _: &AtomicBool| match s.api.store().cache_step() {
                Ok(r) => {
                    s.metrics.tier_step(&r);
                    Pace::Usual
                }
                Err(e) => {
                    s.log.error(&format!("cache: {}", chain(&e)));
                    Pace::After(Duration::from_secs(10))
                }
            },
        ),
    }]
}

/// Runs `chores` on this thread until `stop` is set: each when it is due,
/// one at a time.
pub fn run(service: &Service, mut chores: Vec<Chore>, stop: &AtomicBool) {
    let start = Instant::now();
    let mut due: Vec<Option<Duration>> = chores.iter().map(|c| Some(c.first)).collect();
    while !stop.load(Ordering::SeqCst) {
        let now = start.elapsed();
        for (chore, at) in chores.iter_mut().zip(due.iter_mut()) {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let Some(when) = *at else { continue };
            if when > now {
                continue;
            }
            let pace = (chore.run)(service, stop);
            let after = start.elapsed();
            *at = match pace {
                Pace::Usual => Some(after + chore.every),
                Pace::Again => Some(after),
                Pace::After(d) => Some(after + d),
                Pace::Done => None,
            };
        }
        std::thread::sleep(TICK);
    }
}

/// Copy jobs a restart interrupted go on by themselves.
fn resume_jobs(s: &Service, _: &AtomicBool) -> Pace {
    match s.api.resume_jobs() {
        Ok(0) => {}
        Ok(n) => s.log.info(&format!("{n} copy jobs resumed")),
        Err(e) => s
            .log
            .error(&format!("resuming copy jobs: {}", crate::error::chain(&e))),
    }
    Pace::Done
}

/// Copied files checked whole, a few at a time (each read end to end):
/// again at once while more wait.
fn check_copies(s: &Service, _: &AtomicBool) -> Pace {
    const PER_RUN: usize = 4;
    match s.api.check_copies(PER_RUN) {
        Ok(done) => {
            for c in &done {
                match c {
                    crate::imgapi::checks::Checked::Sound(image) => s
                        .log
                        .info(&format!("copy check: the file of image {image} is sound")),
                    crate::imgapi::checks::Checked::Moot(_) => {}
                    crate::imgapi::checks::Checked::Damaged { image, why } => {
                        s.metrics.copy_check_failed();
                        s.log.error(&format!(
                            "copy check: {why}; image {image} and every image holding the file are disabled"
                        ));
                    }
                }
            }
            if done.len() == PER_RUN {
                Pace::Again
            } else {
                Pace::Usual
            }
        }
        Err(e) => {
            s.log.error(&format!("copy check: {}", chain(&e)));
            Pace::After(Duration::from_secs(30))
        }
    }
}

/// The writer's lease renewed; once lost, the store is fenced and the
/// chore ends.
fn renew_lease(s: &Service, _: &AtomicBool) -> Pace {
    match s.api.store().renew_lease() {
        Ok(_) => {
            s.metrics.lease_renewal(true);
            Pace::Usual
        }
        Err(e @ crate::Error::Fenced(_)) => {
            s.metrics.tier_failed();
            s.metrics.lease_renewal(false);
            if s.cluster.is_some() {
                s.log.error(&format!(
                    "{e}: this daemon writes nothing more and follows the new writer"
                ));
            } else {
                s.log.error(&format!(
                    "{e}: this daemon writes nothing more to the store (writes answer 503); restart it to take the lease again once the other daemon is gone"
                ));
            }
            Pace::Done
        }
        Err(e) => {
            s.metrics.tier_failed();
            s.metrics.lease_renewal(false);
            s.log
                .error(&format!("renewing the writer's lease: {}", chain(&e)));
            Pace::After(Duration::from_secs(1))
        }
    }
}

/// Once per start: objects a crash orphaned in the bucket.
fn sweep_orphans(s: &Service, _: &AtomicBool) -> Pace {
    match s.api.store().sweep_orphans() {
        Ok(gone) => {
            for name in gone {
                s.log.info(&format!("tier: orphan object {name} deleted"));
            }
            Pace::Done
        }
        Err(e) => {
            s.metrics.tier_failed();
            s.log
                .error(&format!("tier: sweeping orphans: {}", chain(&e)));
            Pace::After(Duration::from_secs(10))
        }
    }
}

/// One step of the remote tier (uploads, fills, eviction, deletions): at
/// once again after work (what else waits is drained quickly), 10 s after
/// a failure (the client has retried with backoff already).
fn tier_step(s: &Service, _: &AtomicBool) -> Pace {
    match s.api.store().tier_step() {
        Ok(r) => {
            s.metrics.tier_step(&r);
            for (seg, len) in &r.uploaded {
                s.log
                    .info(&format!("tier: segment {seg} uploaded ({len} bytes)"));
            }
            if !r.evicted.is_empty() || !r.deleted.is_empty() {
                s.log.info(&format!(
                    "tier: {} cached copies evicted ({} bytes), {} retired objects deleted",
                    r.evicted.len(),
                    r.evicted.iter().map(|e| e.1).sum::<u64>(),
                    r.deleted.len()
                ));
            }
            if r == TierReport::default() {
                Pace::Usual
            } else {
                Pace::Again
            }
        }
        Err(e) => {
            s.metrics.tier_failed();
            s.log.error(&format!("tier: {}", chain(&e)));
            Pace::After(Duration::from_secs(10))
        }
    }
}

/// The index backed up to the bucket.
fn push_index(s: &Service, _: &AtomicBool) -> Pace {
    match s.api.store().push_index() {
        Ok(p) if p.uploaded > 0 => s.log.info(&format!(
            "tier: index pushed ({} files, {} bytes; {} stale objects deleted)",
            p.uploaded, p.uploaded_bytes, p.deleted
        )),
        Ok(_) => {}
        Err(e) => {
            s.metrics.tier_failed();
            s.log
                .error(&format!("tier: pushing the index: {}", chain(&e)));
        }
    }
    Pace::Usual
}

/// One step of background recompression: again after as long as this one
/// took (at most half of one core goes to it while there is work), or the
/// idle pause when there was none.
fn recompress_step(
    s: &Service,
    level: i32,
    r: &Recompress,
    memo: &mut ColdMemo,
    stop: &AtomicBool,
) -> Pace {
    let started = Instant::now();
    match s
        .api
        .store()
        .recompress_step_until(level, r.after, memo, stop)
    {
        Ok(Some(step)) => {
            s.metrics.recompressed(step.bytes_before, step.bytes_after);
            s.log.info(&format!(
                "recompress: segment {:012} rewritten at zstd {level}: {} records, {} -> {} bytes",
                step.segment, step.records_rewritten, step.bytes_before, step.bytes_after
            ));
            Pace::After(started.elapsed().max(TICK))
        }
        Ok(None) => Pace::Usual,
        Err(e @ crate::Error::Stopped(_)) => {
            s.log.info(&format!("recompress: {e} (shutting down)"));
            Pace::Usual
        }
        Err(e) => {
            s.log.error(&format!("recompress: {}", chain(&e)));
            Pace::Usual
        }
    }
}
