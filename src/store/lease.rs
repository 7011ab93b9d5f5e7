//! The writer's lease: at most one daemon writes a store's objects in its
//! bucket. The lease is one small object (`ObjectLayout::lease`) holding
//! an epoch, the holder and when it was last renewed; it is taken
//! create-only (`If-None-Match: *`) or, once expired, replaced naming the
//! version read (`If-Match`), with the next epoch, and renewed the same
//! way before it expires. Whoever loses a conditional write has lost the
//! lease.
//!
//! A store that holds a lease fences itself: every write to the bucket
//! (uploads, index pushes, deletions) and every commit first checks that
//! the lease is held and, by this process's own clock, not past its
//! expiry; a writer stopped past its lease (a paused VM, SIGSTOP) finds on
//! waking that it may no longer write until a renewal says it still may
//! (the lease object still names it) or is refused (another daemon took
//! it: the store is fenced for good).
//! A fenced store refuses writes with [`Error::Fenced`] until the daemon
//! restarts.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::Store;
use crate::error::{Error, Result};
use crate::segment::backend::{Conditional, Version};
use crate::segment::lock;

/// What the lease object holds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Lease {
    /// Bumped by every new holder: a fencing token.
    pub epoch: u64,
    /// Who holds it: `host:pid:nonce`, unique per daemon start.
    pub holder: String,
    /// Where the holder answers (`cluster.advertiseUrl`), if it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    /// When it was last renewed, milliseconds since the epoch (the
    /// holder's clock).
    pub renewed_ms: u64,
    /// How long a renewal holds.
    pub seconds: u64,
    /// When the newest index backup the holder pushed was taken (seconds
    /// since the epoch): a data dir whose index is older must not take
    /// the lease over (it would publish an index without what the holder
    /// acknowledged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed_s: Option<u64>,
    /// The index backup that holds everything acknowledged: the pointer
    /// followers and restores read. Moved only by a conditional write of
    /// this object, so a writer whose epoch was superseded cannot move
    /// it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<IndexRef>,
}

/// One published index backup: the writer's epoch whose directory holds
/// it, and its backup number there (`ObjectLayout::index_epoch`).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct IndexRef {
    pub epoch: u64,
    pub backup: u32,
}

/// Segment ids of the writer of epoch E start at `E << EPOCH_ID_SHIFT`:
/// two writers (one superseded and not yet aware of it) never name a
/// segment object alike.
pub const EPOCH_ID_SHIFT: u32 = 40;

impl Lease {
    fn expired(&self, now_ms: u64) -> bool {
        now_ms
            > self
                .renewed_ms
                .saturating_add(self.seconds.saturating_mul(1000))
    }
}

/// A lease this store holds.
struct Held {
    lease: Lease,
    version: Version,
    /// When the lease runs out by this process's monotonic clock.
    until: Instant,
}

/// The lease part of a store.
#[derive(Default)]
pub(super) struct LeaseState {
    held: Mutex<Option<Held>>,
    /// Set once the lease is lost: writes are refused for good.
    fenced: Mutex<Option<String>>,
    /// Set on a follower's store (a copy of the published index that
    /// another daemon writes): every write is refused with this reason
    /// until the store takes the lease.
    following: Mutex<Option<String>>,
}

/// Why the lease was not taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Another daemon holds it and it has not run out.
    Held(Lease),
    /// The last holder pushed an index newer than this store's: this data
    /// dir would write without what that holder acknowledged.
    Stale { holder: Lease, ours: Option<u64> },
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Store {
    /// Takes the writer's lease of this store for `seconds`, as `holder`.
    /// `Ok(Err(holder))` when another daemon holds a lease that has not
    /// expired: this one must not write.
    pub fn take_lease(
        &self,
        holder: &str,
        advertise: Option<&str>,
        seconds: u64,
    ) -> Result<std::result::Result<Lease, Refusal>> {
        let Some((layout, backend)) = self.inner.segments.object_base() else {
            return Err(Error::InvalidInput("a lease needs a remote tier".into()));
        };
        let name = layout.lease();
        let remote = |e| Error::remote(format!("taking the lease {name}"), e);
        let started = Instant::now();
        let current = backend.get_versioned(&name).map_err(remote)?;
        let mut lease = Lease {
            epoch: 1,
            holder: holder.to_string(),
            advertise: advertise.map(str::to_string),
            renewed_ms: now_ms(),
            seconds,
            pushed_s: self.last_push(),
            index: None,
        };
        let body = |l: &Lease| serde_json::to_vec(l).map_err(|e| Error::Internal(e.to_string()));
        let written = match current {
            None => backend
                .put_if_absent(&name, &body(&lease)?)
                .map_err(remote)?,
            Some((raw, version)) => {
                let old: Lease = serde_json::from_slice(&raw)
                    .map_err(|e| Error::bad_record("lease", name.clone(), e))?;
                if old.holder != holder && !old.expired(now_ms()) {
                    return Ok(Err(Refusal::Held(old)));
                }
                if old.pushed_s > lease.pushed_s {
                    return Ok(Err(Refusal::Stale {
                        ours: lease.pushed_s,
                        holder: old,
                    }));
                }
                lease.epoch = old.epoch + 1;
                // The pointer stays until this holder publishes its own.
                lease.index = old.index;
                backend
                    .put_if_version(&name, &body(&lease)?, &version)
                    .map_err(remote)?
            }
        };
        match written {
            Conditional::Written(version) => {
                self.inner
                    .segments
                    .start_ids_at(lease.epoch << EPOCH_ID_SHIFT);
                *lock(&self.inner.lease.following) = None;
                *lock(&self.inner.lease.held) = Some(Held {
                    lease: lease.clone(),
                    version,
                    until: started + Duration::from_secs(seconds),
                });
                Ok(Ok(lease))
            }
            // Another daemon took it between our read and our write.
            Conditional::Refused => match backend.get_versioned(&name).map_err(remote)? {
                Some((raw, _)) => Ok(Err(Refusal::Held(
                    serde_json::from_slice(&raw)
                        .map_err(|e| Error::bad_record("lease", name.clone(), e))?,
                ))),
                None => Err(Error::remote(
                    format!("taking the lease {name}"),
                    "the lease was refused and then gone",
                )),
            },
        }
    }

    /// Renews the lease this store holds (none held: nothing to do). A
    /// renewal refused because another daemon holds the lease now fences
    /// the store: [`Error::Fenced`]. A bucket that does not answer is an
    /// error to retry: meanwhile writes wait (see `check_fence`) and, once
    /// it answers, a lease that still names this holder and epoch is
    /// renewed, even past its expiry (nobody took it).
    pub fn renew_lease(&self) -> Result<Option<Lease>> {
        let Some((layout, backend)) = self.inner.segments.object_base() else {
            return Ok(None);
        };
        let mut held = lock(&self.inner.lease.held);
        let Some(h) = held.as_mut() else {
            return Ok(None);
        };
        let name = layout.lease();
        let remote = |e| Error::remote(format!("renewing the lease {name}"), e);
        let started = Instant::now();
        let mut next = h.lease.clone();
        next.renewed_ms = now_ms();
        next.pushed_s = self.last_push();
        if let Some(published) = self.published() {
            next.index = Some(published);
        }
        let body = serde_json::to_vec(&next).map_err(|e| Error::Internal(e.to_string()))?;
        let mut written = backend
            .put_if_version(&name, &body, &h.version)
            .map_err(remote)?;
        if written == Conditional::Refused {
            // A retried request whose first attempt landed looks refused:
            // the object then still names this holder and epoch.
            let current = backend.get_versioned(&name).map_err(remote)?;
            if let Some((raw, version)) = current {
                let cur: Lease = serde_json::from_slice(&raw)
                    .map_err(|e| Error::bad_record("lease", name.clone(), e))?;
                if cur.holder == h.lease.holder && cur.epoch == h.lease.epoch {
                    written = backend
                        .put_if_version(&name, &body, &version)
                        .map_err(remote)?;
                }
            }
        }
        match written {
            Conditional::Written(version) => {
                h.version = version;
                h.until = started + Duration::from_secs(next.seconds);
                h.lease = next.clone();
                Ok(Some(next))
            }
            Conditional::Refused => {
                let why = format!(
                    "another daemon took the writer's lease (this one held epoch {})",
                    h.lease.epoch
                );
                drop(held);
                Err(self.fence(why))
            }
        }
    }

    /// Proves the lease is still this store's right before a write to the
    /// bucket that another writer's could collide with (an upload, an
    /// index push): a renewal, which fences the store when refused.
    pub(super) fn confirm_lease(&self) -> Result<()> {
        self.check_fence()?;
        self.renew_lease().map(|_| ())
    }

    /// The newest index backup this store pushed, once it is in the
    /// bucket (the lease's pointer moves to it at the next renewal).
    fn published(&self) -> Option<IndexRef> {
        self.inner.tier.as_ref().and_then(|t| *lock(&t.published))
    }

    /// The lease object as the bucket has it now, and its version: what a
    /// follower reads to learn the writer, its epoch and the newest
    /// publication.
    pub fn read_lease(&self) -> Result<Option<(Lease, Version)>> {
        let Some((layout, backend)) = self.inner.segments.object_base() else {
            return Ok(None);
        };
        let name = layout.lease();
        let Some((raw, version)) = backend
            .get_versioned(&name)
            .map_err(|e| Error::remote(format!("reading the lease {name}"), e))?
        else {
            return Ok(None);
        };
        let lease =
            serde_json::from_slice(&raw).map_err(|e| Error::bad_record("lease", name, e))?;
        Ok(Some((lease, version)))
    }

    /// Makes this store a follower's copy: every write is refused, saying
    /// `why` (who writes), until it takes the lease.
    pub fn follow(&self, why: String) {
        *lock(&self.inner.lease.following) = Some(why);
    }

    /// True while this store is a follower's copy.
    pub fn is_following(&self) -> bool {
        lock(&self.inner.lease.following).is_some()
    }

    /// When the newest index backup this store pushed was taken.
    fn last_push(&self) -> Option<u64> {
        self.inner.tier.as_ref().and_then(|t| *lock(&t.last_push))
    }

    /// The lease this store holds, if any.
    pub fn lease(&self) -> Option<Lease> {
        lock(&self.inner.lease.held)
            .as_ref()
            .map(|h| h.lease.clone())
    }

    /// Stops this store writing for good; returns the error writes get.
    fn fence(&self, why: String) -> Error {
        *lock(&self.inner.lease.held) = None;
        *lock(&self.inner.lease.fenced) = Some(why.clone());
        Error::Fenced(why)
    }

    /// Refuses a write once the lease is lost, or while it is held past
    /// its expiry by this process's clock (a writer that was stopped and
    /// woke up must not write before a renewal says it still may).
    pub(super) fn check_fence(&self) -> Result<()> {
        if let Some(why) = lock(&self.inner.lease.fenced).as_ref() {
            return Err(Error::Fenced(why.clone()));
        }
        if let Some(why) = lock(&self.inner.lease.following).as_ref() {
            return Err(Error::Fenced(why.clone()));
        }
        if let Some(h) = lock(&self.inner.lease.held).as_ref()
            && Instant::now() > h.until
        {
            return Err(Error::Fenced(format!(
                "the writer's lease (epoch {}) ran out; writes wait for its renewal",
                h.lease.epoch
            )));
        }
        Ok(())
    }

    /// True once the store has lost its lease.
    pub fn is_fenced(&self) -> bool {
        lock(&self.inner.lease.fenced).is_some()
    }
}
