//! The daemon: configuration, start-up, and `serve(listener, state,
//! shutdown)`, which tests call with a listener bound to port 0.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Deserialize;
use uuid::Uuid;

use crate::http::body::{Sender, Uploads};
use crate::http::metrics::Metrics;
use crate::http::remote::HttpRemotes;
pub use crate::http::server::Limits;
use crate::http::{AppState, Logger, router};
pub use crate::http::{DEFAULT_RECOMPRESS_AFTER, Recompress};
use crate::imgapi::jobs::{Copies, Execution, JobEvent};
use crate::imgapi::{self, Imgapi, Mode};
use crate::store::{Store, StoreOptions};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config file is unreadable or wrong.
    #[error("config {}: {detail}", path.display())]
    Config { path: PathBuf, detail: String },
    /// The store did not open.
    #[error(transparent)]
    Store(#[from] crate::Error),
    /// The `"storage"` object is wrong or its backend unreachable.
    #[error("storage: {0}")]
    Storage(String),
}

/// Default data directory and listen address: `imgstore serve` needs no
/// configuration at all.
pub const DEFAULT_DATA_DIR: &str = "./imgstore-data";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Disk space the daemon holds back for compaction on a full disk.
pub const DEFAULT_RESERVE_BYTES: u64 = 64 << 20;

/// The daemon's configuration: IMGAPI's keys plus where to listen and store.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    pub imgapi: imgapi::Config,
    pub listen: String,
    pub data_dir: PathBuf,
    /// Copies between datacenters: batch size, parallelism, retries.
    pub transfer: crate::transfer::ReceiveOptions,
    /// Longest a single request to another datacenter may take.
    pub transfer_timeout: std::time::Duration,
    /// How often the daemon collects garbage by itself (None: never).
    pub gc_interval: Option<std::time::Duration>,
    /// Connections, uploads, send buffers, timeouts, shutdown.
    pub limits: Limits,
    /// Disk space held back so GC can run on a full disk.
    pub reserve_bytes: u64,
    /// Background recompression of cold segments.
    pub recompress: Recompress,
    /// Size past which a segment file is sealed (`segmentBytes`; the
    /// engine's default, 256 MiB, unless a test or an operator wants
    /// smaller files).
    pub segment_bytes: u64,
    /// The CloudAPI face for the `triton` CLI (off when None).
    pub cloudapi: Option<crate::cloudapi::Config>,
    /// Where sealed segments go (`"storage"`; None: the local disk only).
    pub storage: Option<Storage>,
}

/// The `"storage"` object: a remote tier for sealed segments.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Storage {
    /// `"s3"`, or `"local"` (objects as files under `path`, for a second
    /// disk or a mounted filesystem).
    #[serde(rename = "type")]
    pub kind: StorageKind,
    /// For `"local"`: the directory.
    #[serde(default)]
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub bucket: Option<String>,
    /// Object name prefix (`dc1/`); each store adds its own id under it,
    /// so daemons and datacenters can share a bucket.
    #[serde(default)]
    pub prefix: String,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// Local bytes kept as copies of remote segments (default 10 GiB).
    #[serde(default = "default_cache_bytes")]
    pub cache_bytes: u64,
    /// `"local"` (the default): acknowledged writes are on the local disk,
    /// segments reach the bucket within `sealAfterSeconds` plus an upload
    /// and the index every `indexPushSeconds`. `"remote"`: an activation
    /// returns only once the image's segments and index are in the bucket.
    #[serde(default)]
    pub durability: Durability,
    /// How often the index is backed up to the bucket (default 300; 0
    /// never, which leaves nothing to restore from without remote
    /// durability).
    #[serde(default = "default_index_push")]
    pub index_push_seconds: u64,
    /// Uploads are refused (503 `StorageIsDown`) while segments waiting
    /// for the bucket hold this many bytes (default 0: only the disk
    /// limits them).
    #[serde(default)]
    pub local_limit_bytes: u64,
    /// How long a compacted segment's object outlives it (default 3600).
    #[serde(default = "default_delete_grace")]
    pub delete_grace_seconds: u64,
    /// How long a quiet active segment waits before it is sealed and
    /// uploaded (default 60).
    #[serde(default = "default_seal_after")]
    pub seal_after_seconds: u64,
    /// Seconds one S3 request may take (default 60).
    #[serde(default)]
    pub request_timeout_seconds: Option<u64>,
    /// Retries of a failed S3 request, with backoff (default 5).
    #[serde(default)]
    pub retries: Option<usize>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    S3,
    Local,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    #[default]
    Local,
    Remote,
}

fn default_cache_bytes() -> u64 {
    10 << 30
}

fn default_delete_grace() -> u64 {
    3600
}

fn default_seal_after() -> u64 {
    60
}

fn default_index_push() -> u64 {
    300
}

impl Storage {
    /// Checks the object and connects its backend.
    pub fn tier_options(&self) -> Result<crate::store::TierOptions, String> {
        use crate::store::backend::{LocalDir, ObjectBackend, ObjectStoreBackend, S3Config};
        if !self.prefix.is_empty() {
            let p = self
                .prefix
                .strip_suffix('/')
                .ok_or_else(|| format!("storage.prefix {:?} must end in '/'", self.prefix))?;
            crate::store::backend::check_name(p).map_err(|_| {
                format!(
                    "storage.prefix {:?} is not a plain object path",
                    self.prefix
                )
            })?;
        }
        let backend: std::sync::Arc<dyn ObjectBackend> = match self.kind {
            StorageKind::Local => {
                let path = self
                    .path
                    .as_ref()
                    .ok_or("storage.type \"local\" needs storage.path")?;
                std::sync::Arc::new(LocalDir::new(path).map_err(|e| e.to_string())?)
            }
            StorageKind::S3 => {
                let (Some(endpoint), Some(bucket)) = (&self.endpoint, &self.bucket) else {
                    return Err(
                        "storage.type \"s3\" needs storage.endpoint and storage.bucket".into(),
                    );
                };
                let c = S3Config {
                    endpoint: endpoint.clone(),
                    bucket: bucket.clone(),
                    region: self
                        .region
                        .clone()
                        .unwrap_or_else(|| S3Config::DEFAULT_REGION.into()),
                    access_key_id: self.access_key_id.clone(),
                    secret_access_key: self.secret_access_key.clone(),
                    request_timeout_seconds: self
                        .request_timeout_seconds
                        .unwrap_or(S3Config::DEFAULT_REQUEST_TIMEOUT_SECONDS),
                    retries: self.retries.unwrap_or(S3Config::DEFAULT_RETRIES),
                };
                std::sync::Arc::new(ObjectStoreBackend::s3(&c).map_err(|e| e.to_string())?)
            }
        };
        Ok(crate::store::TierOptions {
            backend,
            prefix: self.prefix.clone(),
            cache_bytes: self.cache_bytes,
            delete_grace: std::time::Duration::from_secs(self.delete_grace_seconds),
            seal_after: std::time::Duration::from_secs(self.seal_after_seconds),
            remote_durability: self.durability == Durability::Remote,
            local_limit_bytes: self.local_limit_bytes,
        })
    }
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            imgapi: imgapi::Config::default(),
            listen: DEFAULT_LISTEN.into(),
            data_dir: DEFAULT_DATA_DIR.into(),
            transfer: crate::transfer::ReceiveOptions::default(),
            transfer_timeout: std::time::Duration::from_secs(120),
            gc_interval: Some(std::time::Duration::from_secs(600)),
            limits: Limits::default(),
            reserve_bytes: DEFAULT_RESERVE_BYTES,
            recompress: Recompress::default(),
            segment_bytes: StoreOptions::default().segment_bytes,
            cloudapi: None,
            storage: None,
        }
    }
}

/// The JSON config file (IMGAPI-style keys).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConfigFile {
    mode: Option<Mode>,
    datacenter_name: Option<String>,
    admin_uuid: Option<Uuid>,
    #[serde(default)]
    imgapi_url_from_datacenter: BTreeMap<String, String>,
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    accounts: Option<Vec<Uuid>>,
    transfer: Option<TransferFile>,
    /// Seconds between background collections; 0 turns them off.
    gc_interval_seconds: Option<u64>,
    limits: Option<LimitsFile>,
    /// Bytes held back for GC on a full disk; 0 holds none.
    reserve_bytes: Option<u64>,
    /// Size past which a segment file is sealed (1 MiB to 4 GiB).
    segment_bytes: Option<u64>,
    /// zstd level cold segments are rewritten at; 0 turns it off.
    recompress_level: Option<i32>,
    /// Seconds after sealing that a segment is cold.
    recompress_after_seconds: Option<u64>,
    /// The CloudAPI face: listen, datacenters, users and their keys.
    cloudapi: Option<crate::cloudapi::ConfigFile>,
    /// A remote tier for sealed segments.
    storage: Option<Storage>,
}

/// Limits under load (all optional; see [`Limits`]).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LimitsFile {
    max_connections: Option<usize>,
    max_uploads: Option<usize>,
    send_buffer_bytes: Option<usize>,
    header_timeout_seconds: Option<u64>,
    idle_timeout_seconds: Option<u64>,
    shutdown_seconds: Option<u64>,
}

impl LimitsFile {
    fn apply(&self, l: &mut Limits) {
        let secs = |s: u64| std::time::Duration::from_secs(s.max(1));
        if let Some(n) = self.max_connections {
            l.max_connections = n.max(1);
        }
        if let Some(n) = self.max_uploads {
            l.max_uploads = n.clamp(1, 256);
        }
        if let Some(n) = self.send_buffer_bytes {
            l.send_buffer_bytes = n.max(4 << 20);
        }
        if let Some(s) = self.header_timeout_seconds {
            l.header_timeout = secs(s);
        }
        if let Some(s) = self.idle_timeout_seconds {
            l.idle_timeout = secs(s);
        }
        if let Some(s) = self.shutdown_seconds {
            l.shutdown_deadline = std::time::Duration::from_secs(s);
        }
    }
}

/// Tuning of copies between datacenters (all optional).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TransferFile {
    batch_bytes: Option<u64>,
    parallel: Option<usize>,
    window_bytes: Option<u64>,
    attempts: Option<u32>,
    timeout_seconds: Option<u64>,
    verify_md5: Option<bool>,
}

impl DaemonConfig {
    /// Reads a config file; missing keys keep their defaults.
    pub fn from_file(path: &Path) -> Result<Self, StartError> {
        let bad = |detail: String| StartError::Config {
            path: path.to_path_buf(),
            detail,
        };
        let raw = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let f: ConfigFile = serde_json::from_slice(&raw).map_err(|e| bad(e.to_string()))?;
        let mut c = DaemonConfig::default();
        if let Some(m) = f.mode {
            c.imgapi.mode = m;
        }
        if let Some(d) = f.datacenter_name {
            c.imgapi.datacenter_name = d;
        }
        c.imgapi.admin_uuid = f.admin_uuid;
        c.imgapi.imgapi_url_from_datacenter = f.imgapi_url_from_datacenter;
        c.imgapi.accounts = f.accounts;
        if let Some(l) = f.listen {
            c.listen = l;
        }
        if let Some(d) = f.data_dir {
            c.data_dir = d;
        }
        if let Some(secs) = f.gc_interval_seconds {
            c.gc_interval = (secs > 0).then(|| std::time::Duration::from_secs(secs));
        }
        if let Some(r) = f.reserve_bytes {
            c.reserve_bytes = r;
        }
        match f.recompress_level {
            None => {}
            Some(0) => c.recompress.level = None,
            Some(l @ 1..=22) => c.recompress.level = Some(l),
            Some(l) => {
                return Err(bad(format!(
                    "recompressLevel {l}: zstd levels are 1 to 22 (0 turns recompression off)"
                )));
            }
        }
        if let Some(b) = f.segment_bytes {
            if !(1 << 20..=4 << 30).contains(&b) {
                return Err(bad(format!(
                    "segmentBytes {b}: a segment file is 1 MiB to 4 GiB"
                )));
            }
            c.segment_bytes = b;
        }
        if let Some(s) = f.recompress_after_seconds {
            c.recompress.after = std::time::Duration::from_secs(s);
        }
        if let Some(l) = &f.limits {
            l.apply(&mut c.limits);
        }
        if let Some(face) = f.cloudapi {
            let base = path.parent().unwrap_or(Path::new("."));
            c.cloudapi = Some(face.load(base).map_err(bad)?);
        }
        if let Some(st) = f.storage {
            c.storage = Some(st);
        }
        if let Some(t) = f.transfer {
            if let Some(b) = t.batch_bytes {
                c.transfer.batch_bytes = b.max(64 * 1024);
            }
            if let Some(p) = t.parallel {
                c.transfer.parallel = p.clamp(1, 16);
            }
            if let Some(w) = t.window_bytes {
                c.transfer.window_bytes = w.max(1 << 20);
            }
            if let Some(a) = t.attempts {
                c.transfer.attempts = a.max(1);
            }
            if let Some(v) = t.verify_md5 {
                c.transfer.verify_md5 = v;
            }
            if let Some(s) = t.timeout_seconds {
                c.transfer_timeout = std::time::Duration::from_secs(s.max(1));
            }
        }
        Ok(c)
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

    /// Opens the store and builds the shared state.
    pub fn open(&self, log: Logger) -> Result<Arc<AppState>, StartError> {
        let store = Store::open_with(&self.data_dir, self.store_options()?)?;
        let job_log = log.clone();
        let metrics = Arc::new(Metrics::new());
        let job_metrics = Arc::clone(&metrics);
        let copies = Copies {
            remotes: Arc::new(HttpRemotes::new(self.transfer_timeout)),
            receive: self.transfer.clone(),
            events: Arc::new(move |e: &JobEvent<'_>| match e {
                JobEvent::Started(job) => job_log.info(&format!(
                    "copy job {} of image {} started",
                    job.uuid, job.image_uuid
                )),
                JobEvent::Ended(job) => {
                    job_metrics.job_ended(
                        job.execution == Execution::Succeeded,
                        job.progress.bytes_fetched,
                    );
                    job_log.info(&format!(
                        "copy job {} ended: {}",
                        job.uuid,
                        job.execution.as_str()
                    ));
                }
            }),
        };
        Ok(Arc::new(AppState {
            gc_interval: self.gc_interval,
            recompress: self.recompress.clone(),
            index_push: self
                .storage
                .as_ref()
                .filter(|st| st.index_push_seconds > 0)
                .map(|st| std::time::Duration::from_secs(st.index_push_seconds)),
            limits: self.limits.clone(),
            uploads: Uploads::new(
                self.limits.max_uploads,
                self.limits.idle_timeout,
                Arc::clone(&metrics),
            ),
            sender: Sender::new(self.limits.send_buffer_bytes, Arc::clone(&metrics)),
            metrics,
            api: Imgapi::new(store, self.imgapi.clone(), copies)?,
            log,
            started: Instant::now(),
        }))
    }
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

async fn serve_imgapi(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Copies a restart interrupted go on by themselves.
    if let Err(e) = state.api.resume_jobs() {
        state.log.error(&format!("resuming copy jobs: {e}"));
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let upkeep = state.gc_interval.is_some()
        || state.recompress.level.is_some()
        || state.api.store().has_tier();
    let background = upkeep.then(|| {
        let (st, stop) = (Arc::clone(&state), Arc::clone(&stop));
        std::thread::spawn(move || background(&st, &stop))
    });
    let limits = state.limits.clone();
    let app = router(state);
    let served = crate::http::server::serve(listener, app, &limits, shutdown).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    if let Some(t) = background {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    served
}

/// The daemon's own upkeep, on one thread so that its passes never
/// compete with each other: online GC (space that deletes and failed
/// uploads left behind comes back without an operator; the admin command
/// cannot open a store in use) every `gc_interval`, background
/// recompression, one cold segment per step, and the remote tier's
/// uploads, evictions and deletions.
fn background(state: &AppState, stop: &std::sync::atomic::AtomicBool) {
    let tick = std::time::Duration::from_millis(200);
    let mut memo = crate::store::ColdMemo::default();
    let mut since_gc = std::time::Duration::ZERO;
    // The first step at the first tick: what is cold already need not wait.
    let mut next_recompress = std::time::Duration::ZERO;
    let mut next_tier = std::time::Duration::ZERO;
    let mut swept = false;
    let push_every = state.index_push;
    let mut since_push = std::time::Duration::ZERO;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::sleep(tick);
        since_gc += tick;
        if state.gc_interval.is_some_and(|every| since_gc >= every) {
            since_gc = std::time::Duration::ZERO;
            let _ = crate::http::collect_garbage(
                &state.api,
                &state.metrics,
                &state.log,
                crate::store::gc::DEFAULT_THRESHOLD,
            );
        }
        since_push += tick;
        if push_every.is_some_and(|every| since_push >= every) {
            since_push = std::time::Duration::ZERO;
            match state.api.store().push_index() {
                Ok(p) if p.uploaded > 0 => state.log.info(&format!(
                    "tier: index pushed ({} files, {} bytes; {} stale objects deleted)",
                    p.uploaded, p.uploaded_bytes, p.deleted
                )),
                Ok(_) => {}
                Err(e) => {
                    state.metrics.tier_failed();
                    state.log.error(&format!("tier: pushing the index: {e}"));
                }
            }
        }
        next_tier = next_tier.saturating_sub(tick);
        if next_tier.is_zero() && state.api.store().has_tier() {
            if !swept {
                // Once per start: objects a crash orphaned.
                match state.api.store().sweep_orphans() {
                    Ok(gone) => {
                        swept = true;
                        for name in gone {
                            state
                                .log
                                .info(&format!("tier: orphan object {name} deleted"));
                        }
                    }
                    Err(e) => state.log.error(&format!("tier: sweeping orphans: {e}")),
                }
            }
            next_tier = tier_step(state);
        }
        next_recompress = next_recompress.saturating_sub(tick);
        if let Some(level) = state.recompress.level
            && next_recompress.is_zero()
        {
            next_recompress = recompress_step(state, level, &mut memo, stop);
        }
    }
}

/// One step of the remote tier (uploads, eviction, deletions); how long
/// to wait before the next: 2 s when it found nothing to do, at once
/// after work (what else waits is drained quickly), 10 s after a failure
/// (the client has retried with backoff already).
fn tier_step(state: &AppState) -> std::time::Duration {
    match state.api.store().tier_step() {
        Ok(r) => {
            state.metrics.tier_step(&r);
            for (seg, len) in &r.uploaded {
                state
                    .log
                    .info(&format!("tier: segment {seg} uploaded ({len} bytes)"));
            }
            if !r.evicted.is_empty() || !r.deleted.is_empty() {
                state.log.info(&format!(
                    "tier: {} cached copies evicted ({} bytes), {} retired objects deleted",
                    r.evicted.len(),
                    r.evicted.iter().map(|e| e.1).sum::<u64>(),
                    r.deleted.len()
                ));
            }
            if r == crate::store::TierReport::default() {
                std::time::Duration::from_secs(2)
            } else {
                std::time::Duration::ZERO
            }
        }
        Err(e) => {
            state.metrics.tier_failed();
            state.log.error(&format!("tier: {e}"));
            std::time::Duration::from_secs(10)
        }
    }
}

/// One step of background recompression; how long to wait before the
/// next: as long as this one took (at most half of one core goes to it
/// while there is work), or the idle pause when there was none.
fn recompress_step(
    state: &AppState,
    level: i32,
    memo: &mut crate::store::ColdMemo,
    stop: &std::sync::atomic::AtomicBool,
) -> std::time::Duration {
    let started = Instant::now();
    let r = &state.recompress;
    match state
        .api
        .store()
        .recompress_step_until(level, r.after, memo, stop)
    {
        Ok(Some(step)) => {
            state
                .metrics
                .recompressed(step.bytes_before, step.bytes_after);
            state.log.info(&format!(
                "recompress: segment {:012} rewritten at zstd {level}: {} records, {} -> {} bytes",
                step.segment, step.records_rewritten, step.bytes_before, step.bytes_after
            ));
            started.elapsed().max(std::time::Duration::from_millis(200))
        }
        Ok(None) => r.idle,
        Err(e @ crate::Error::Stopped(_)) => {
            state.log.info(&format!("recompress: {e} (shutting down)"));
            r.idle
        }
        Err(e) => {
            state.log.error(&format!("recompress: {e}"));
            r.idle
        }
    }
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
