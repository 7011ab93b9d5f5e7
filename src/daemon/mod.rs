//! The daemon: one validated configuration ([`config`]), start-up, and
//! `serve(listener, state, shutdown)`, which tests call with a listener
//! bound to port 0. A request walks down the layers once: `serve` →
//! `http` (routes) → `imgapi` (rules) → `store`; the upkeep chores run
//! beside it on their own thread: `serve` → `service::upkeep` → `store`.
//!
//! | module | |
//! | --- | --- |
//! | [`cluster`] | a member of a datacenter's cluster: the writer by lease, or a follower serving copies of the newest publication; failover |
//! | [`config`] | the raw config file and the validated [`DaemonConfig`] |
//! | `storage` | its `storage` object and the validated tier configuration |
//! | [`reference`] | `imgstore config reference`, from the config types' docs |

pub mod cluster;
pub mod config;
pub mod reference;
mod storage;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use crate::http::remote::HttpRemotes;
pub use crate::http::server::Limits;
use crate::http::{AppState, router};
use crate::imgapi::jobs::{Copies, Execution, JobEvent};
use crate::imgapi::{self, Imgapi};
use crate::service::upkeep::{self, Schedule};
pub use crate::service::upkeep::{DEFAULT_RECOMPRESS_AFTER, Recompress};
use crate::service::{Logger, Metrics, Service};
use crate::store::backend::BackendError;
use crate::store::{Store, StoreOptions};
pub use config::{
    DEFAULT_DATA_DIR, DEFAULT_LISTEN, DEFAULT_RESERVE_BYTES, DaemonConfig, Durability, Storage,
    StorageKind,
};

/// Why a configuration is refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{0}")]
    Read(#[source] std::io::Error),
    /// The file is not JSON of the expected shape (an unknown key, a
    /// wrong type).
    #[error("{0}")]
    Parse(#[source] serde_json::Error),
    /// A key holds a value the daemon cannot use.
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
    /// The `storage` object names a backend that cannot be set up.
    #[error("storage: {0}")]
    Backend(#[source] BackendError),
    /// The bucket does not take what a store does there (it is missing,
    /// the endpoint or the credentials are wrong).
    #[error("{what} cannot be used: {source}")]
    Unusable {
        what: String,
        #[source]
        source: BackendError,
    },
}

pub(crate) fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config file is unreadable or wrong.
    #[error("config {}: {source}", path.display())]
    Config {
        path: PathBuf,
        #[source]
        source: ConfigError,
    },
    /// The store did not open.
    #[error(transparent)]
    Store(#[from] crate::Error),
    /// The `"storage"` object is wrong or its backend unreachable.
    #[error("storage: {0}")]
    Storage(#[source] ConfigError),
    /// The signing keys did not load.
    #[error("auth keys: {0}")]
    Auth(String),
    /// Another daemon holds the writer's lease of this store.
    #[error("{0}")]
    Lease(String),
}

impl DaemonConfig {
    /// Reads a config file (see [`DaemonConfig::from_file`]) as a start
    /// error that names the file.
    pub fn load(path: &std::path::Path) -> Result<Self, StartError> {
        Self::from_file(path).map_err(|source| StartError::Config {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The async runtime the daemon runs on: its blocking pool sized by the
    /// limits (a put holds a thread of it for its whole body).
    pub fn runtime(&self) -> std::io::Result<tokio::runtime::Runtime> {
        tokio::runtime::Builder::new_multi_thread()
            .max_blocking_threads(self.limits.blocking_threads())
            .enable_all()
            .build()
    }

    /// How the daemon (and the admin commands given its config) open the
    /// store: its tables, reserve, segment size and remote tier.
    pub fn store_options(&self) -> Result<StoreOptions, StartError> {
        let tier = match &self.storage {
            None => None,
            Some(st) => Some(st.tier_options().map_err(StartError::Storage)?),
        };
        Ok(StoreOptions {
            tables: imgapi::TABLES.to_vec(),
            reserve_bytes: self.reserve_bytes,
            segment_bytes: self.segment_bytes,
            tier,
            ..StoreOptions::default()
        })
    }

    /// When the upkeep chores run.
    pub fn schedule(&self) -> Schedule {
        Schedule {
            gc_every: self.gc_interval,
            recompress: self.recompress.clone(),
            index_push_every: self
                .storage
                .as_ref()
                .filter(|st| st.index_push_seconds > 0)
                .map(|st| std::time::Duration::from_secs(st.index_push_seconds)),
        }
    }

    /// Checks the remote tier's bucket as the daemon will use it (see
    /// [`probe`](crate::store::backend::probe)): a missing bucket, a
    /// wrong endpoint or wrong credentials are found here, in one line.
    pub fn check_storage(&self, opts: &StoreOptions) -> Result<(), StartError> {
        let (Some(st), Some(tier)) = (&self.storage, &opts.tier) else {
            return Ok(());
        };
        crate::store::backend::probe(tier.backend.as_ref(), &tier.prefix).map_err(|e| {
            StartError::Storage(ConfigError::Unusable {
                what: st.describe(),
                source: e,
            })
        })
    }

    /// Opens the store and builds the service and its HTTP state.
    pub fn open(&self, log: Logger) -> Result<Arc<AppState>, StartError> {
        let opts = self.store_options()?;
        self.check_storage(&opts)?;
        let probe = opts
            .tier
            .as_ref()
            .map(|t| (Arc::clone(&t.backend), t.prefix.clone()));
        let store = Store::open_with(&self.data_dir, opts)?;
        if let Some((backend, prefix)) = probe {
            self.take_lease(&store, backend.as_ref(), &prefix, &log)?;
        }
        let metrics = Arc::new(Metrics::new());
        let auth = self.auth()?;
        self.state_over(store, log, metrics, auth, None)
    }

    /// The IMGAPI port's signature check, if `authType` asks for one.
    pub(crate) fn auth(
        &self,
    ) -> Result<Option<Arc<crate::http::authkeys::ImgapiAuth>>, StartError> {
        match &self.auth {
            None => Ok(None),
            Some(sources) => crate::http::authkeys::ImgapiAuth::new(sources.clone())
                .map(|a| Some(Arc::new(a)))
                .map_err(|e| StartError::Auth(e.0)),
        }
    }

    /// The service over an opened `store` and its HTTP state; `metrics`,
    /// `auth` and `membership` are shared by a cluster member's
    /// generations.
    pub(crate) fn state_over(
        &self,
        store: Store,
        log: Logger,
        metrics: Arc<Metrics>,
        auth: Option<Arc<crate::http::authkeys::ImgapiAuth>>,
        membership: Option<Arc<crate::service::cluster::Membership>>,
    ) -> Result<Arc<AppState>, StartError> {
        let copies = Copies {
            remotes: Arc::new(
                HttpRemotes::new(self.transfer_timeout).signed_by(self.signing_key.clone()),
            ),
            receive: self.transfer.clone(),
            events: job_events(&log, &metrics),
        };
        let api = Imgapi::new(store, self.imgapi.clone(), copies)?;
        let service = Service::new(api, log, metrics, self.schedule()).in_cluster(membership);
        Ok(Arc::new(
            AppState::new(Arc::new(service), self.limits.clone())
                .with_auth(auth)
                .with_tls(self.tls.clone()),
        ))
    }
}

impl DaemonConfig {
    /// Whether the bucket enforces conditional writes, as a lease needs:
    /// when it does not, a daemon that needs one (`required`: a cluster)
    /// does not start, and one alone runs without (and says so).
    pub(crate) fn probe_for_lease(
        &self,
        backend: &dyn crate::store::backend::ObjectBackend,
        prefix: &str,
        required: bool,
        log: &Logger,
    ) -> Result<bool, StartError> {
        let described = self
            .storage
            .as_ref()
            .map_or_else(|| backend.describe(), |s| s.describe());
        let Err(e) = probe_conditional_once(backend, prefix) else {
            return Ok(true);
        };
        if required {
            return Err(StartError::Storage(ConfigError::Unusable {
                what: format!("{described} (a cluster's lease needs conditional writes)"),
                source: e,
            }));
        }
        log.log(
            40,
            &format!(
                "no writer's lease: {described} does not enforce conditional writes ({}); \
                 a second daemon on this store could not be told apart",
                crate::error::chain(&e)
            ),
            serde_json::Map::new(),
        );
        Ok(false)
    }

    /// Takes the writer's lease of `store` for an offline command (`imgstore
    /// store gc --config ...` and the others that write) and renews it
    /// until the returned keeper is dropped: a command that uploads or
    /// deletes objects of a store in a bucket is fenced like the daemon,
    /// and refused while a daemon elsewhere (a restored copy, a cluster's
    /// writer) holds the lease. The same data dir's own daemon, stopped,
    /// leaves a lease the command takes back at once (the same holder).
    /// None: the store has no bucket, or the bucket cannot fence (warned).
    pub fn hold_lease(
        &self,
        store: &Store,
        log: &Logger,
    ) -> Result<Option<LeaseKeeper>, StartError> {
        let opts = self.store_options()?;
        let Some(tier) = opts.tier else {
            return Ok(None);
        };
        self.take_lease(store, tier.backend.as_ref(), &tier.prefix, log)?;
        let Some(lease) = store.lease() else {
            return Ok(None);
        };
        let every = std::time::Duration::from_secs((lease.seconds / 3).max(1));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (store, stopped, log) = (store.clone(), Arc::clone(&stop), log.clone());
        let thread = std::thread::spawn(move || {
            let mut last = std::time::Instant::now();
            while !stopped.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(std::time::Duration::from_millis(100));
                if last.elapsed() < every {
                    continue;
                }
                last = std::time::Instant::now();
                if let Err(e) = store.renew_lease() {
                    log.error(&format!(
                        "renewing the writer's lease: {}",
                        crate::error::chain(&e)
                    ));
                }
            }
        });
        Ok(Some(LeaseKeeper {
            stop,
            thread: Some(thread),
        }))
    }

    /// Takes the writer's lease of `store` (see `store::lease`): refused
    /// while another daemon holds it. On a bucket that does not enforce
    /// conditional writes, a daemon with `cluster` does not start and one
    /// without runs without a lease (and says so).
    fn take_lease(
        &self,
        store: &Store,
        backend: &dyn crate::store::backend::ObjectBackend,
        prefix: &str,
        log: &Logger,
    ) -> Result<(), StartError> {
        if !self.probe_for_lease(backend, prefix, false, log)? {
            return Ok(());
        }
        let described = self
            .storage
            .as_ref()
            .map_or_else(|| backend.describe(), |s| s.describe());
        let seconds = self
            .cluster
            .as_ref()
            .map_or(config::DEFAULT_LEASE_SECONDS, |c| c.lease_seconds);
        let advertise = self
            .cluster
            .as_ref()
            .and_then(|c| c.advertise_url.as_deref());
        let holder = self.holder_id()?;
        let mut first: Option<crate::store::Lease> = None;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds + 2);
        let taken = loop {
            match store.take_lease(&holder, advertise, seconds)? {
                Ok(lease) => break Ok(lease),
                // Another holder: wait it out once. A holder that renews
                // meanwhile is alive (refused); one that does not was
                // killed, and its lease is taken once it runs out.
                Err(crate::store::Refusal::Stale { holder, ours }) => {
                    return Err(StartError::Lease(format!(
                        "this data dir's index is older than the one {} (epoch {}) left in {described} \
                         (pushed at {} s, this one at {}): it would lose what that daemon acknowledged. \
                         Rebuild it from the bucket with `imgstore store restore` into an empty data dir",
                        holder.holder,
                        holder.epoch,
                        holder.pushed_s.unwrap_or_default(),
                        ours.map_or("never".to_string(), |o| format!("{o} s"))
                    )));
                }
                Err(crate::store::Refusal::Held(other)) => {
                    let renewed = first.as_ref().is_some_and(|f| {
                        f.renewed_ms != other.renewed_ms || f.holder != other.holder
                    });
                    if renewed || std::time::Instant::now() > deadline {
                        break Err(other);
                    }
                    if first.is_none() {
                        log.info(&format!(
                            "the writer's lease is held by {} (epoch {}): waiting up to {} s for it to be renewed or run out",
                            other.holder, other.epoch, other.seconds
                        ));
                    }
                    first.get_or_insert(other);
                    std::thread::sleep(std::time::Duration::from_millis(500));
                }
            }
        };
        match taken {
            Ok(lease) => {
                log.info(&format!(
                    "writer's lease taken: epoch {}, {} s, renewed every {} s",
                    lease.epoch,
                    lease.seconds,
                    (lease.seconds / 3).max(1)
                ));
                Ok(())
            }
            Err(other) => Err(StartError::Lease(format!(
                "another daemon holds the writer's lease of this store in {described}: {} \
                 (epoch {}{}), renewed within the last {} s; it writes this store's objects. \
                 Stop it, or wait for its lease to run out",
                other.holder,
                other.epoch,
                other
                    .advertise
                    .as_deref()
                    .map(|a| format!(", at {a}"))
                    .unwrap_or_default(),
                other.seconds
            ))),
        }
    }
}

/// [`probe_conditional`](crate::store::backend::probe_conditional), once a
/// day per bucket prefix: a store's guarantees do not change from one
/// start to the next, and concurrent conditional writes of one name can
/// cost a server seconds (SeaweedFS, measured: 8 ms, sometimes 3 s). A
/// passed probe leaves `imgstore-probe/conditional-ok` with its time.
fn probe_conditional_once(
    backend: &dyn crate::store::backend::ObjectBackend,
    prefix: &str,
) -> crate::store::backend::BackendResult<()> {
    const FRESH_S: u64 = 24 * 3600;
    let marker = format!("{prefix}imgstore-probe/conditional-ok");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let passed_at = backend
        .get_versioned(&marker)
        .ok()
        .flatten()
        .and_then(|(raw, _)| String::from_utf8(raw).ok()?.trim().parse::<u64>().ok());
    if passed_at.is_some_and(|t| now.saturating_sub(t) < FRESH_S) {
        return Ok(());
    }
    crate::store::backend::probe_conditional(backend, prefix)?;
    backend.put_bytes(&marker, now.to_string().as_bytes())
}

impl DaemonConfig {
    /// Who this daemon is as a lease holder: the host and an id kept in
    /// the data directory, so a restart of the same data dir (after a
    /// kill -9) takes its own lease back at once, and any other data dir
    /// (a restore, another machine) is another holder.
    pub(crate) fn holder_id(&self) -> Result<String, StartError> {
        let path = self.data_dir.join("LEASE-HOLDER");
        let id = match std::fs::read_to_string(&path) {
            Ok(id) if !id.trim().is_empty() => id.trim().to_string(),
            _ => {
                let id = uuid::Uuid::new_v4().simple().to_string();
                std::fs::write(&path, &id)
                    .map_err(|e| crate::Error::io(format!("writing {}", path.display()), e))?;
                id
            }
        };
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        Ok(format!("{host}:{id}"))
    }
}

/// What a copy job's start and end do: a log line, and at the end the
/// metrics.
fn job_events(log: &Logger, metrics: &Arc<Metrics>) -> Arc<dyn Fn(&JobEvent<'_>) + Send + Sync> {
    let (log, metrics) = (log.clone(), Arc::clone(metrics));
    Arc::new(move |e: &JobEvent<'_>| match e {
        JobEvent::Started(job) => log.info(&format!(
            "copy job {} of image {} started",
            job.uuid, job.image_uuid
        )),
        JobEvent::Ended(job) => {
            metrics.job_ended(
                job.execution == Execution::Succeeded,
                job.progress.bytes_fetched,
            );
            log.info(&format!(
                "copy job {} ended: {}",
                job.uuid,
                job.execution.as_str()
            ));
        }
    })
}

/// Serves IMGAPI on `listener` until `shutdown` completes; requests in
/// flight then get the shutdown deadline to finish (each one's changes
/// commit atomically or not at all; a cut upload is not stored).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_faces(listener, None, state, shutdown).await
}

/// [`serve`], plus the CloudAPI face on its own listener when `cloudapi`
/// is given; one shutdown stops both.
pub async fn serve_faces(
    listener: tokio::net::TcpListener,
    cloudapi: Option<(tokio::net::TcpListener, crate::cloudapi::Config)>,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stop = tokio_util::sync::CancellationToken::new();
    let cancel = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        cancel.cancel();
    });
    let face = cloudapi.map(|(listener, config)| {
        let face = Arc::new(crate::cloudapi::Face {
            app: Arc::clone(&state),
            config,
        });
        tokio::spawn(crate::cloudapi::serve(
            listener,
            face,
            stop.clone().cancelled_owned(),
        ))
    });
    let served = serve_imgapi(listener, state, stop.cancelled_owned()).await;
    if let Some(face) = face {
        face.await
            .map_err(|e| std::io::Error::other(format!("the CloudAPI face failed: {e}")))??;
    }
    served
}

/// The IMGAPI listener, with the upkeep chores on their own thread for
/// as long as it serves.
async fn serve_imgapi(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let chores = upkeep::chores(&state.service, &state.service.schedule);
    let room = {
        let (service, stop) = (Arc::clone(&state.service), Arc::clone(&stop));
        std::thread::spawn(move || upkeep::run(&service, chores, &stop))
    };
    let lease = upkeep::lease_chores(&state.service);
    let lease_room = (!lease.is_empty()).then(|| {
        let (service, stop) = (Arc::clone(&state.service), Arc::clone(&stop));
        std::thread::spawn(move || upkeep::run(&service, lease, &stop))
    });
    let limits = state.limits.clone();
    let tls = state.tls.clone();
    let app = router(state);
    let served = crate::http::server::serve(listener, app, &limits, tls, shutdown).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = tokio::task::spawn_blocking(move || {
        let _ = room.join();
        lease_room.map(std::thread::JoinHandle::join)
    })
    .await;
    served
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Renews an offline command's lease ([`DaemonConfig::hold_lease`]) until
/// dropped.
pub struct LeaseKeeper {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
