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
use crate::http::authkeys::ImgapiAuth;
use crate::http::server::Current;
use crate::service::cluster::{Membership, Role};
use crate::service::{Logger, Metrics, upkeep};
use crate::store::backend::{Conditional, ObjectBackend, Version};
use crate::store::{BucketCopy, IndexRef, Lease, ObjectLayout, Store};

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

/// What a member needs to make new copies of the store.
struct Making {
    cfg: DaemonConfig,
    log: Logger,
    metrics: Arc<Metrics>,
    auth: Option<Arc<ImgapiAuth>>,
    backend: Arc<dyn ObjectBackend>,
    prefix: String,
    holder: String,
    lease_seconds: u64,
    advertise: Option<String>,
}

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
        let router = crate::http::router(Arc::clone(&first.state));
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
        self.imgapi
            .replace(crate::http::router(Arc::clone(&g.state)));
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
                // Its first publication moves the pointer to its epoch.
                store.push_index()?;
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

impl Making {
    /// The cluster's store id, claimed by the first member on an empty
    /// prefix (create-only: of members starting at once, one wins and the
    /// others join its store), and this data dir's own newest copy when it
    /// is of that store.
    #[allow(clippy::type_complexity)]
    fn claim(&self) -> Result<(String, Option<(u64, PathBuf, Store)>), StartError> {
        let claim = ObjectLayout::cluster_claim(&self.prefix);
        let remote = |e| StartError::Store(crate::Error::remote(format!("reading {claim}"), e));
        let own = generations(&self.cfg.data_dir)
            .into_iter()
            .next_back()
            .filter(|(_, dir)| dir.join(crate::store::MARKER).exists());
        let claimed = self
            .backend
            .get_versioned(&claim)
            .map_err(remote)?
            .map(|(raw, _)| String::from_utf8_lossy(&raw).trim().to_string());
        if let Some(id) = claimed {
            let Some((n, dir)) = own else {
                return Ok((id, None));
            };
            let store = Store::open_with(&dir, self.cfg.store_options()?)?;
            let mine = store.params().store_id == id;
            return Ok((id, mine.then_some((n, dir, store))));
        }
        // An empty prefix: this member creates the store and claims it.
        let (n, dir, made) = match own {
            Some((n, dir)) => (n, dir, false),
            None => (1, gen_dir(&self.cfg.data_dir, 1), true),
        };
        let store = Store::open_with(&dir, self.cfg.store_options()?)?;
        let id = store.params().store_id.clone();
        match self
            .backend
            .put_if_absent(&claim, id.as_bytes())
            .map_err(remote)?
        {
            Conditional::Written(_) => Ok((id, Some((n, dir, store)))),
            Conditional::Refused => {
                // Another member claimed first: its store is the cluster's.
                drop(store);
                if made {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                self.claim()
            }
        }
    }

    /// This data dir's own store: its writer again if the lease is free
    /// (or was its own), else a follower from a fresh copy.
    fn lead_or_follow(
        &self,
        n: u64,
        dir: PathBuf,
        store: Store,
        membership: &Arc<Membership>,
    ) -> Result<Generation, StartError> {
        match store.take_lease(&self.holder, self.advertise.as_deref(), self.lease_seconds)? {
            Ok(lease) => {
                membership.lead(lease.epoch);
                self.metrics.cluster(Role::Writer, lease.epoch, 0.0);
                store.push_index()?;
                self.log.info(&format!(
                    "cluster: this daemon writes (epoch {}, lease {} s)",
                    lease.epoch, lease.seconds
                ));
                let state = self.cfg.state_over(
                    store,
                    self.log.clone(),
                    Arc::clone(&self.metrics),
                    self.auth.clone(),
                    Some(Arc::clone(membership)),
                )?;
                Ok(Generation {
                    n,
                    dir,
                    state,
                    pointer: None,
                    stop: Arc::new(AtomicBool::new(false)),
                    rooms: Vec::new(),
                })
            }
            Err(_) => {
                let id = store.params().store_id.clone();
                drop(store);
                self.follower_generation_of(&id, n + 1, Some(&dir), membership)
            }
        }
    }

    /// A new copy, number `n`, of the newest publication, as a follower.
    fn follower_generation(
        &self,
        n: u64,
        previous: Option<&Store>,
        membership: &Arc<Membership>,
    ) -> crate::Result<Generation> {
        let id = match previous {
            Some(s) => s.params().store_id.clone(),
            None => {
                let claim = ObjectLayout::cluster_claim(&self.prefix);
                self.backend
                    .get_versioned(&claim)
                    .map_err(|e| crate::Error::remote(format!("reading {claim}"), e))?
                    .map(|(raw, _)| String::from_utf8_lossy(&raw).trim().to_string())
                    .ok_or_else(|| crate::Error::Internal(format!("{claim} is gone")))?
            }
        };
        let from = previous.map(|s| s.dir().to_path_buf());
        self.follower_generation_of(&id, n, from.as_deref(), membership)
            .map_err(|e| match e {
                StartError::Store(e) => e,
                other => crate::Error::Internal(other.to_string()),
            })
    }

    /// Copy `n` of store `id`'s newest publication, served as a follower;
    /// cache files are linked from `cache_from` (an earlier copy).
    fn follower_generation_of(
        &self,
        id: &str,
        n: u64,
        cache_from: Option<&Path>,
        membership: &Arc<Membership>,
    ) -> Result<Generation, StartError> {
        let layout = ObjectLayout::of(&self.prefix, id);
        let dir = gen_dir(&self.cfg.data_dir, n);
        // The writer may publish (and purge an old backup's files) while
        // this copy is made: a file gone is a newer publication to copy.
        let mut attempt = 0;
        let pointer = loop {
            attempt += 1;
            match self.copy_once(&layout, &dir, cache_from) {
                Ok(pointer) => break pointer,
                Err(e) if attempt < BUILD_ATTEMPTS => {
                    self.log.info(&format!(
                        "cluster: copy {n} of the store, attempt {attempt}: {}; trying again",
                        crate::error::chain(&e)
                    ));
                    std::thread::sleep(Duration::from_millis(200 * attempt as u64));
                }
                Err(e) => return Err(e.into()),
            }
        };
        let store = Store::open_with(&dir, self.cfg.store_options()?)?;
        let state = self.cfg.state_over(
            store,
            self.log.clone(),
            Arc::clone(&self.metrics),
            self.auth.clone(),
            Some(Arc::clone(membership)),
        )?;
        // Set once the service is built: building it may commit to this
        // copy (a catalog migration), never to the bucket.
        state
            .api
            .store()
            .follow("this daemon follows the datacenter's writer".into());
        Ok(Generation {
            n,
            dir,
            state,
            pointer,
            stop: Arc::new(AtomicBool::new(false)),
            rooms: Vec::new(),
        })
    }
}

/// The CloudAPI face over one copy of the store.
fn face_router(state: &Arc<AppState>, config: &crate::cloudapi::Config) -> axum::Router {
    crate::cloudapi::router(Arc::new(crate::cloudapi::Face {
        app: Arc::clone(state),
        config: config.clone(),
    }))
}

/// Serves a cluster member: IMGAPI on `listener`, the CloudAPI face on
/// `face` when configured, each request on the copy current when it
/// arrives, until `shutdown`; the member's protocol runs beside on its
/// own thread.
pub async fn serve_member(
    listener: tokio::net::TcpListener,
    face: Option<tokio::net::TcpListener>,
    member: Arc<Member>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let supervisor = {
        let (m, stop) = (Arc::clone(&member), Arc::clone(&stop));
        std::thread::spawn(move || m.run(&stop))
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let cancelled = cancel.clone();
    tokio::spawn(async move {
        shutdown.await;
        cancelled.cancel();
    });
    let limits = member.making.cfg.limits.clone();
    let face = match (face, &member.cloudapi) {
        (Some(l), Some((current, config))) => {
            let (router, limits, tls) = (current.router(), limits.clone(), config.tls.clone());
            let stopped = cancel.clone().cancelled_owned();
            Some(tokio::spawn(async move {
                crate::http::server::serve(l, router, &limits, tls, stopped).await
            }))
        }
        _ => None,
    };
    let served = crate::http::server::serve(
        listener,
        member.imgapi.router(),
        &limits,
        member.making.cfg.tls.clone(),
        cancel.cancelled_owned(),
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let _ = tokio::task::spawn_blocking(move || supervisor.join()).await;
    if let Some(face) = face {
        face.await
            .map_err(|e| std::io::Error::other(format!("the CloudAPI face failed: {e}")))??;
    }
    served
}

impl Making {
    /// One attempt at copying the newest publication into `dir`.
    fn copy_once(
        &self,
        layout: &ObjectLayout,
        dir: &Path,
        cache_from: Option<&Path>,
    ) -> crate::Result<Option<IndexRef>> {
        // The index objects and the marker; not every segment object.
        let mut listed = self
            .backend
            .list(&layout.index_prefix())
            .map_err(|e| e.into_error(format!("listing {}", layout.index_prefix())))?;
        let marker = layout.marker();
        if let Some(len) = self
            .backend
            .len(&marker)
            .map_err(|e| e.into_error(format!("reading {marker}")))?
        {
            listed.push(crate::store::backend::ObjectInfo { name: marker, len });
        }
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .map_err(|e| crate::Error::io(format!("removing {}", dir.display()), e))?;
        }
        let copy = BucketCopy {
            backend: self.backend.as_ref(),
            layout,
            listed: &listed,
            lists_segments: false,
        };
        copy.build(&self.cfg.data_dir.join("staging"), dir, cache_from)
            .map(|(_, pointer)| pointer)
    }
}

/// `{data_dir}/gen-{n}`.
fn gen_dir(data_dir: &Path, n: u64) -> PathBuf {
    data_dir.join(format!("gen-{n}"))
}

fn gen_number(dir: &Path) -> Option<u64> {
    dir.file_name()?
        .to_str()?
        .strip_prefix("gen-")?
        .parse()
        .ok()
}

/// The copies in `data_dir`, oldest first.
fn generations(data_dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(data_dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| Some((gen_number(&e.path())?, e.path())))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}
