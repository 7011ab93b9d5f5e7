//! A datacenter as a cluster on its bucket (`"cluster"` in the config):
//! several daemons share one store in one bucket prefix; exactly one, the
//! holder of the store's lease, writes; the others follow.
//!
//! # The protocol
//!
//! Everything rests on the bucket's conditional writes (probed at start:
//! a store that ignores them is refused).
//! - **The store.** The first member on an empty prefix creates the store
//!   and claims it create-only (`{prefix}CLUSTER` holds its id); every
//!   other member joins that store.
//! - **The writer.** The lease object (`store::lease`) names the writer,
//!   its epoch and where it answers. It is taken create-only or by
//!   replacing the version read, renewed every third of `leaseSeconds`.
//! - **Publications.** A write is acknowledged once published: its
//!   segments uploaded, an index backup uploaded under the writer's epoch
//!   (`index/e{epoch}/`, where no other writer writes), and the lease's
//!   pointer (`index`) moved to that backup by a conditional write of the
//!   lease. Concurrent writes share one publication
//!   ([`Store::publish`](crate::store::Store::publish)). A writer whose
//!   epoch was superseded is refused at that last step, so nothing it
//!   does after losing the lease is acknowledged or read by anyone.
//! - **Segment names.** The writer of epoch E numbers new segments from
//!   `E << 40`: two writers never create the same object.
//! - **Followers.** Each second a follower reads the lease. When its
//!   pointer moved, the follower builds a new copy of the store from that
//!   backup (only new index files are fetched; cached segment files are
//!   linked over) and serves from it, the old copy finishing the requests
//!   it had. Writes are forwarded to the writer (`http::cluster`).
//! - **Failover.** A follower that sees the lease object unchanged for
//!   `leaseSeconds` (by its own clock: no writer renewed it) takes it over
//!   (the conditional write decides between followers), from a copy of the
//!   newest publication, and starts writing: copy jobs resume, GC and the
//!   tier's steps run on it alone.
//! - **Fencing.** A writer that cannot renew stops writing before its
//!   lease runs out (`store::lease`); one that finds the lease taken
//!   becomes a follower, from a fresh copy of what was published.
//!
//! Objects are deleted only after `deleteGraceSeconds` (default an hour),
//! far longer than a lease plus a follower's lag, so a follower's copy
//! never names a segment whose object is gone.
//!
//! # On disk
//!
//! ```text
//! {dataDir}/LEASE-HOLDER    this member's holder id
//! {dataDir}/staging/        the published index backup files, kept between copies
//! {dataDir}/gen-{n}/        copy n of the store (a data directory)
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{DaemonConfig, StartError};
use crate::http::AppState;
use crate::http::server::Current;
use crate::service::cluster::{Membership, Role};
use crate::service::{Logger, Metrics, upkeep};
use crate::store::backend::Version;
use crate::store::{IndexRef, Lease, ObjectLayout, Store};

/// How often a member looks at the lease.
const TICK: Duration = Duration::from_secs(1);
/// Attempts at one copy of the newest publication before giving up (the
/// next look at the lease tries again; a start fails).
const BUILD_ATTEMPTS: u32 = 8;
/// How often a member writes its record to the bucket.
const RECORD_EVERY: Duration = Duration::from_secs(3);

/// One copy of the store this member serves, and its chores.
struct Generation {
    n: u64,
    dir: PathBuf,
    state: Arc<AppState>,
    /// The publication it was built from (None: a writer's own store).
    pointer: Option<IndexRef>,
    stop: Arc<AtomicBool>,
    rooms: Vec<JoinHandle<()>>,
}

impl Generation {
    fn store(&self) -> &Store {
        self.state.api.store()
    }

    /// Starts the chores of its role: a writer's every chore, a
    /// follower's cache upkeep.
    fn start_chores(&mut self, role: Role) {
        let service = Arc::clone(&self.state.service);
        let lists = match role {
            Role::Writer => vec![
                upkeep::chores(&service, &service.schedule),
                upkeep::lease_chores(&service),
                upkeep::publish_chores(&service),
            ],
            Role::Follower => vec![upkeep::follower_chores(&service)],
        };
        for list in lists.into_iter().filter(|l| !l.is_empty()) {
            let (service, stop) = (Arc::clone(&service), Arc::clone(&self.stop));
            self.rooms.push(std::thread::spawn(move || {
                upkeep::run(&service, list, &stop)
            }));
        }
    }

    /// Stops its chores and waits for them; its store closes when the
    /// last request that holds it ends.
    fn retire(self) {
        self.stop.store(true, Ordering::SeqCst);
        for r in self.rooms {
            let _ = r.join();
        }
    }
}

mod copies;
mod serve;

use copies::{Making, gen_number, generations};
pub use serve::serve_member;
use serve::{face_router, imgapi_router};

/// A cluster member: its current copy of the store, served through
/// [`Current`] routers that change with it.
pub struct Member {
    making: Making,
    pub membership: Arc<Membership>,
    pub imgapi: Current,
    /// The CloudAPI face's router, when the face is configured.
    pub cloudapi: Option<(Current, crate::cloudapi::Config)>,
    current: Mutex<Option<Generation>>,
    next_gen: AtomicU64,
}

impl Member {
    /// Joins the cluster: claims or finds the store, takes the lease if
    /// nobody holds it (or this data dir held it), else follows.
    pub fn start(
        cfg: &DaemonConfig,
        face: Option<crate::cloudapi::Config>,
        log: Logger,
    ) -> Result<Arc<Member>, StartError> {
        let opts = cfg.store_options()?;
        cfg.check_storage(&opts)?;
        let Some(tier) = &opts.tier else {
            return Err(StartError::Lease(
                "cluster: a cluster needs \"storage\" with a bucket (type s3)".into(),
            ));
        };
        let (backend, prefix) = (Arc::clone(&tier.backend), tier.prefix.clone());
        cfg.probe_for_lease(backend.as_ref(), &prefix, true, &log)?;
        let cluster = cfg.cluster.clone().unwrap_or_default();
        std::fs::create_dir_all(&cfg.data_dir)
            .map_err(|e| crate::Error::io(format!("creating {}", cfg.data_dir.display()), e))?;
        let holder = cfg.holder_id()?;
        let making = Making {
            cfg: cfg.clone(),
            log: log.clone(),
            metrics: Arc::new(Metrics::new()),
            auth: cfg.auth()?,
            backend,
            prefix,
            holder: holder.clone(),
            lease_seconds: cluster.lease_seconds,
            advertise: cluster.advertise_url.clone(),
        };
        let (store_id, own) = making.claim()?;
        let membership = Arc::new(
            Membership::new(holder, cluster.advertise_url.clone(), Role::Follower, 0).with_roster(
                Arc::clone(&making.backend),
                ObjectLayout::of(&making.prefix, &store_id),
            ),
        );
        let first = match own {
            Some((n, dir, store)) => making.lead_or_follow(n, dir, store, &membership)?,
            None => {
                let n = generations(&cfg.data_dir).last().map_or(1, |g| g.0 + 1);
                making.follower_generation_of(&store_id, n, None, &membership)?
            }
        };
        if membership.role() == Role::Follower
            && let Some((lease, _)) = first.store().read_lease()?
        {
            membership.follow(
                lease.epoch,
                lease.advertise.clone(),
                lease.index.is_none() || lease.index == first.pointer,
            );
        }
        let router = imgapi_router(&first.state, face.as_ref());
        let member = Arc::new(Member {
            imgapi: Current::new(router),
            cloudapi: face.map(|config| {
                let router = face_router(&first.state, &config);
                (Current::new(router), config)
            }),
            membership,
            next_gen: AtomicU64::new(first.n + 1),
            current: Mutex::new(None),
            making,
        });
        member.install(first);
        Ok(member)
    }

    /// The state requests are served from now.
    pub fn state(&self) -> Option<Arc<AppState>> {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|g| Arc::clone(&g.state))
    }

    /// Serves `g` from now on; the copy before it finishes its requests.
    fn install(&self, mut g: Generation) {
        let role = self.membership.role();
        g.start_chores(role);
        let face = self.cloudapi.as_ref().map(|(_, config)| config);
        self.imgapi.replace(imgapi_router(&g.state, face));
        if let Some((current, config)) = &self.cloudapi {
            current.replace(face_router(&g.state, config));
        }
        let old = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .replace(g);
        if let Some(old) = old {
            let dir = old.dir.clone();
            old.retire();
            self.forget_older_than(&dir);
        }
    }

    /// Removes copies older than `keep` (the one just replaced may still
    /// serve requests that began on it).
    fn forget_older_than(&self, keep: &Path) {
        let Some(keep_n) = gen_number(keep) else {
            return;
        };
        for (n, dir) in generations(&self.making.cfg.data_dir) {
            if n < keep_n {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    /// Follows, fails over and steps down, each second, until `stop`.
    pub fn run(self: &Arc<Self>, stop: &AtomicBool) {
        let mut watch = LeaseWatch::default();
        let mut recorded = Instant::now() - RECORD_EVERY;
        while !stop.load(Ordering::SeqCst) {
            if let Err(e) = self.step(&mut watch) {
                self.making
                    .log
                    .error(&format!("cluster: {}", crate::error::chain(&e)));
            }
            if recorded.elapsed() >= RECORD_EVERY {
                recorded = Instant::now();
                self.write_record();
            }
            std::thread::sleep(TICK);
        }
    }

    /// One look at the lease, and what follows from it.
    fn step(&self, watch: &mut LeaseWatch) -> crate::Result<()> {
        let (store, pointer) = {
            let cur = self
                .current
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let Some(g) = cur.as_ref() else {
                return Ok(());
            };
            (g.store().clone(), g.pointer)
        };
        match self.membership.role() {
            Role::Writer => {
                if store.is_fenced() {
                    self.making.log.log(
                        40,
                        "cluster: this daemon lost the writer's lease; it follows from now on",
                        serde_json::Map::new(),
                    );
                    // Writes go to the new writer at once; reads stay on
                    // this copy until the follower's copy is ready.
                    match store.read_lease()? {
                        Some((lease, _)) => {
                            self.membership.follow(lease.epoch, lease.advertise, false)
                        }
                        None => self.membership.follow(0, None, false),
                    }
                    self.making.metrics.cluster_stepped_down();
                    let g = self.making.follower_generation(
                        self.next_gen.fetch_add(1, Ordering::SeqCst),
                        None,
                        &self.membership,
                    )?;
                    // Writes are forwarded from the first request on.
                    if let Some((lease, _)) = g.store().read_lease()? {
                        self.membership.follow(
                            lease.epoch,
                            lease.advertise.clone(),
                            lease.index.is_none() || lease.index == g.pointer,
                        );
                    }
                    self.install(g);
                }
                Ok(())
            }
            Role::Follower => {
                let Some((lease, version)) = store.read_lease()? else {
                    return Ok(());
                };
                let unchanged_for = watch.observe(&version);
                let current = lease.index.is_none() || lease.index == pointer;
                self.membership
                    .follow(lease.epoch, lease.advertise.clone(), current);
                self.making.metrics.cluster(
                    Role::Follower,
                    lease.epoch,
                    self.membership.standing().lag_seconds,
                );
                if !current {
                    let g = self.making.follower_generation(
                        self.next_gen.fetch_add(1, Ordering::SeqCst),
                        Some(&store),
                        &self.membership,
                    )?;
                    self.install(g);
                    return Ok(());
                }
                if unchanged_for >= Duration::from_secs(lease.seconds) {
                    self.take_over(&store, &lease)?;
                }
                Ok(())
            }
        }
    }

    /// Takes the lease no writer renewed, and writes from this copy (it
    /// holds the newest publication).
    fn take_over(&self, store: &Store, old: &Lease) -> crate::Result<()> {
        let m = &self.making;
        match store.take_lease(&m.holder, m.advertise.as_deref(), m.lease_seconds)? {
            Ok(lease) => {
                m.log.log(
                    40,
                    &format!(
                        "cluster: the writer {} (epoch {}) stopped renewing its lease; this daemon writes from now on (epoch {})",
                        old.holder, old.epoch, lease.epoch
                    ),
                    serde_json::Map::new(),
                );
                self.membership.lead(lease.epoch);
                m.metrics.cluster(Role::Writer, lease.epoch, 0.0);
                m.metrics.cluster_took_over();
                // The lease renewal starts at once, with the other chores;
                // the first publication (the whole index under the new
                // epoch, which moves the pointer) is the publish chore's.
                // Pushed here, before renewals ran, a large index outlasted
                // the lease and another follower took over: the soak saw
                // such duels.
                if let Some(g) = self
                    .current
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .as_mut()
                {
                    g.start_chores(Role::Writer);
                }
                Ok(())
            }
            Err(refusal) => {
                m.log.info(&format!(
                    "cluster: another member took the lease first ({refusal:?})"
                ));
                Ok(())
            }
        }
    }

    /// Tells the others about this member (best effort).
    fn write_record(&self) {
        if let Err(e) = self.membership.write_record() {
            self.making.log.log(
                40,
                &format!("cluster: {}", crate::error::chain(&e)),
                serde_json::Map::new(),
            );
        }
    }

    /// Stops the chores and closes the store (after the listener stopped).
    pub fn close(&self) -> crate::Result<()> {
        let g = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(g) = g {
            let store = g.store().clone();
            g.retire();
            store.close()?;
        }
        Ok(())
    }
}

/// How long the lease object has stayed the same, by this member's clock.
#[derive(Default)]
struct LeaseWatch {
    seen: Option<(Version, Instant)>,
}

impl LeaseWatch {
    fn observe(&mut self, version: &Version) -> Duration {
        match &self.seen {
            Some((v, since)) if v == version => since.elapsed(),
            _ => {
                self.seen = Some((version.clone(), Instant::now()));
                Duration::ZERO
            }
        }
    }
}
