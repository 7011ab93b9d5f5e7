//! The daemon's configuration, in one place: the raw file as serde reads
//! it ([`ConfigFile`], IMGAPI-style keys, unknown keys refused) and the
//! validated [`DaemonConfig`] everything else is given. The raw types' doc
//! comments are the reference: `imgstore config reference` prints them
//! ([`reference`]), and a test fails when a key has no words.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use uuid::Uuid;

use crate::http::server::Limits;
use crate::imgapi::{self, Mode};
use crate::service::upkeep::Recompress;
use crate::store::StoreOptions;
use crate::store::backend::{BackendError, LocalDir, ObjectBackend, ObjectStoreBackend, S3Config};

/// Default data directory and listen address: `imgstore serve` needs no
/// configuration at all.
pub const DEFAULT_DATA_DIR: &str = "./imgstore-data";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Disk space the daemon holds back for compaction on a full disk.
pub const DEFAULT_RESERVE_BYTES: u64 = 64 << 20;

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

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// The daemon's config file (`imgstore serve --config FILE`): IMGAPI's own
/// keys, plus where to listen and store. Every key is optional.
#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigFile {
    /// IMGAPI's mode: `dc` (default; RFD 113's sharing, clones and copies),
    /// `public` or `private`.
    mode: Option<Mode>,
    /// This datacenter's name (default `local`); copies name their source
    /// by it, and every answer carries it in `x-server-name`.
    datacenter_name: Option<String>,
    /// The operator account: images it owns are operator images, and an
    /// import's all-zero owner becomes it.
    admin_uuid: Option<Uuid>,
    /// Datacenter name to the IMGAPI URL copies from it pull from, as
    /// IMGAPI's `IMGAPI_URL_FROM_DATACENTER` (default: none, and copies
    /// are refused).
    #[serde(default)]
    imgapi_url_from_datacenter: BTreeMap<String, String>,
    /// Address the IMGAPI port listens on (default `127.0.0.1:8080`). Anyone
    /// who reaches it is an operator: keep it on an admin network.
    listen: Option<String>,
    /// The data directory (default `./imgstore-data`).
    data_dir: Option<PathBuf>,
    /// When set, image owners must be one of these accounts (or the admin);
    /// by default owners are not checked, as IMGAPI allows in dc mode.
    accounts: Option<Vec<Uuid>>,
    /// Tuning of copies from other datacenters.
    transfer: Option<TransferFile>,
    /// Seconds between background garbage collections (default 600; 0
    /// turns them off).
    gc_interval_seconds: Option<u64>,
    /// Limits under load.
    limits: Option<LimitsFile>,
    /// Disk space held back so GC can compact on a full disk (default
    /// 67108864, 64 MiB; 0 holds none).
    reserve_bytes: Option<u64>,
    /// Size past which a segment file is sealed, 1 MiB to 4 GiB (default
    /// 268435456, 256 MiB).
    segment_bytes: Option<u64>,
    /// zstd level that segments gone cold are rewritten at in the
    /// background, one at a time, 1 to 22 (default 14; 0 turns it off;
    /// ingest writes level 1).
    recompress_level: Option<i32>,
    /// Seconds after its last write that a segment is cold (default 3600).
    recompress_after_seconds: Option<u64>,
    /// The CloudAPI face for the `triton` CLI, on a listener of its own
    /// (default: off).
    cloudapi: Option<CloudApiFile>,
    /// A remote tier: sealed segments and the index in a bucket of an S3
    /// store (default: the local disk only).
    storage: Option<Storage>,
    /// `none` (default): anyone who reaches the IMGAPI port is an
    /// operator, as in upstream IMGAPI's dc mode; keep the port on an
    /// admin network. `signature`: every request but `GET /ping` must carry
    /// an HTTP Signature by a key of `authKeys` or `authKeysDir` (signers
    /// are operators; `account` means what it always means).
    auth_type: Option<AuthType>,
    /// Login to OpenSSH public key lines that may sign requests to the
    /// IMGAPI port (`authType: signature`).
    #[serde(default)]
    auth_keys: BTreeMap<String, Vec<String>>,
    /// A directory of `LOGIN.keys` files (`authorized_keys` format), as
    /// upstream's `etc/authkeys/local`; read again by `POST
    /// /authkeys/reload`. Relative to the config file.
    auth_keys_dir: Option<PathBuf>,
}

/// `authType`.
#[derive(Clone, Copy, Debug, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthType {
    #[default]
    None,
    Signature,
}

/// `limits`: what load the daemon takes (every key optional).
#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LimitsFile {
    /// Connections open at once (default 4096); more wait in the kernel's
    /// accept queue.
    max_connections: Option<usize>,
    /// Uploads stored at once, 1 to 256 (default the core count, 2 to 8);
    /// more wait without holding a thread.
    max_uploads: Option<usize>,
    /// Bytes of response bodies produced but not yet sent, across every
    /// download (default 33554432, 32 MiB; at least 4 MiB).
    send_buffer_bytes: Option<usize>,
    /// Seconds to receive a request's headers, and to keep an idle
    /// keep-alive connection (default 30).
    header_timeout_seconds: Option<u64>,
    /// Seconds an upload body or a response may make no progress before
    /// it is cut (default 60).
    idle_timeout_seconds: Option<u64>,
    /// Seconds requests in flight get to finish on SIGINT or SIGTERM
    /// (default 30); a cut upload is not stored.
    shutdown_seconds: Option<u64>,
}

/// `transfer`: copies from other datacenters (every key optional).
#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TransferFile {
    /// Record bytes per fetch request (default 4194304, 4 MiB; at least
    /// 64 KiB).
    batch_bytes: Option<u64>,
    /// Fetch requests in flight, 1 to 16 (default 3).
    parallel: Option<usize>,
    /// Fetched chunk bytes held ahead of hashing (default 33554432, 32
    /// MiB; at least 1 MiB).
    window_bytes: Option<u64>,
    /// Attempts per batch before a copy fails (default 4).
    attempts: Option<u32>,
    /// Seconds one request to another datacenter may take (default 120).
    timeout_seconds: Option<u64>,
    /// Recompute a copied file's MD5 instead of taking the source's
    /// (default false; costs about 40 % of the receiver's CPU).
    verify_md5: Option<bool>,
}

/// `cloudapi`: the CloudAPI face for the `triton` CLI.
#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CloudApiFile {
    /// Address the face listens on (default `127.0.0.1:8443`).
    listen: Option<String>,
    /// Datacenter name to its CloudAPI URL (what ListDatacenters answers,
    /// and where `triton image copy` finds the others).
    #[serde(default)]
    datacenters: BTreeMap<String, String>,
    /// The accounts that may sign requests.
    #[serde(default)]
    users: Vec<UserFile>,
}

/// One account of the CloudAPI face: inline keys, a file of keys, or both.
#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UserFile {
    /// The login `triton` uses (`TRITON_ACCOUNT`).
    login: String,
    /// The account's uuid: the owner of its images.
    uuid: Uuid,
    /// OpenSSH public keys (`ssh-ed25519 AAAA... comment`): RSA, ECDSA
    /// P-256 and P-384, Ed25519.
    #[serde(default)]
    keys: Vec<String>,
    /// A file of such keys, `authorized_keys` format, relative to the
    /// config file.
    keys_file: Option<PathBuf>,
}

/// `storage`: a remote tier for sealed segments and the index.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Storage {
    /// `s3`, or `local` (objects as files under `path`, for a second disk
    /// or a mounted filesystem).
    #[serde(rename = "type")]
    pub kind: StorageKind,
    /// For `local`: the directory.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// For `s3`: the endpoint, `https://host` in production (uploads are
    /// confirmed by length; TLS protects their bytes).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// For `s3`: the bucket.
    #[serde(default)]
    pub bucket: Option<String>,
    /// Object name prefix ending in `/` (`dc1/`); each store adds its own
    /// id under it, so daemons and datacenters can share a bucket.
    #[serde(default)]
    pub prefix: String,
    /// For `s3`: the region (default `us-east-1`).
    #[serde(default)]
    pub region: Option<String>,
    /// For `s3`: the access key (default `AWS_ACCESS_KEY_ID`).
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// For `s3`: the secret key (default `AWS_SECRET_ACCESS_KEY`).
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// Local bytes kept as copies of remote segments (default 10737418240,
    /// 10 GiB).
    #[serde(default = "default_cache_bytes")]
    pub cache_bytes: u64,
    /// `local` (default): acknowledged writes are on the local disk,
    /// segments reach the bucket within `sealAfterSeconds` plus an upload
    /// and the index every `indexPushSeconds`. `remote`: an activation, a
    /// clone or a copy answers only once the image's segments and index
    /// are in the bucket.
    #[serde(default)]
    pub durability: Durability,
    /// Seconds between index backups to the bucket (default 300; 0
    /// never, which leaves nothing to restore from without remote
    /// durability).
    #[serde(default = "default_index_push")]
    pub index_push_seconds: u64,
    /// Uploads are refused (503 `StorageIsDown`) while segments waiting
    /// for the bucket hold this many bytes (default 0: only the disk
    /// limits them).
    #[serde(default)]
    pub local_limit_bytes: u64,
    /// Seconds a compacted segment's object outlives it (default 3600).
    #[serde(default = "default_delete_grace")]
    pub delete_grace_seconds: u64,
    /// Seconds a quiet active segment waits before it is sealed and
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

/// `storage.type`.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    S3,
    Local,
}

/// `storage.durability`.
#[derive(Clone, Copy, Debug, Default, Deserialize, JsonSchema, PartialEq, Eq)]
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
    /// The tier in one line, for the start line and errors: `s3 bucket
    /// images at http://host:8333, prefix dc1/, durability remote`.
    pub fn describe(&self) -> String {
        let durability = match self.durability {
            Durability::Local => "local",
            Durability::Remote => "remote",
        };
        let prefix = if self.prefix.is_empty() {
            "no prefix".to_string()
        } else {
            format!("prefix {}", self.prefix)
        };
        match self.kind {
            StorageKind::S3 => format!(
                "s3 bucket {} at {}, {prefix}, durability {durability}",
                self.bucket.as_deref().unwrap_or("?"),
                self.endpoint.as_deref().unwrap_or("?"),
            ),
            StorageKind::Local => format!(
                "object directory {}, {prefix}, durability {durability}",
                self.path
                    .as_deref()
                    .map_or("?".into(), |p| p.display().to_string()),
            ),
        }
    }

    /// The one validated tier configuration: the keys checked and the
    /// backend connected.
    pub fn tier_options(&self) -> Result<crate::store::TierOptions, ConfigError> {
        if !self.prefix.is_empty() {
            let p = self.prefix.strip_suffix('/').ok_or_else(|| {
                invalid(
                    "storage.prefix",
                    format!("{:?} must end in '/'", self.prefix),
                )
            })?;
            crate::store::backend::check_name(p).map_err(|_| {
                invalid(
                    "storage.prefix",
                    format!("{:?} is not a plain object path", self.prefix),
                )
            })?;
        }
        let backend: Arc<dyn ObjectBackend> = match self.kind {
            StorageKind::Local => {
                let path = self.path.as_ref().ok_or_else(|| {
                    invalid("storage.path", "storage.type \"local\" needs storage.path")
                })?;
                Arc::new(LocalDir::new(path).map_err(ConfigError::Backend)?)
            }
            StorageKind::S3 => {
                let (Some(endpoint), Some(bucket)) = (&self.endpoint, &self.bucket) else {
                    return Err(invalid(
                        "storage",
                        "storage.type \"s3\" needs storage.endpoint and storage.bucket",
                    ));
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
                Arc::new(ObjectStoreBackend::s3(&c).map_err(ConfigError::Backend)?)
            }
        };
        Ok(crate::store::TierOptions {
            backend,
            prefix: self.prefix.clone(),
            cache_bytes: self.cache_bytes,
            delete_grace: Duration::from_secs(self.delete_grace_seconds),
            seal_after: Duration::from_secs(self.seal_after_seconds),
            remote_durability: self.durability == Durability::Remote,
            local_limit_bytes: self.local_limit_bytes,
        })
    }
}

/// The daemon's validated configuration.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    pub imgapi: imgapi::Config,
    pub listen: String,
    pub data_dir: PathBuf,
    /// Copies between datacenters: batch size, parallelism, retries.
    pub transfer: crate::transfer::ReceiveOptions,
    /// Longest a single request to another datacenter may take.
    pub transfer_timeout: Duration,
    /// How often the daemon collects garbage by itself (None: never).
    pub gc_interval: Option<Duration>,
    /// Connections, uploads, send buffers, timeouts, shutdown.
    pub limits: Limits,
    /// Disk space held back so GC can run on a full disk.
    pub reserve_bytes: u64,
    /// Background recompression of cold segments.
    pub recompress: Recompress,
    /// Size past which a segment file is sealed (`segmentBytes`).
    pub segment_bytes: u64,
    /// The CloudAPI face for the `triton` CLI (off when None).
    pub cloudapi: Option<crate::cloudapi::Config>,
    /// Where sealed segments go (`"storage"`; None: the local disk only).
    pub storage: Option<Storage>,
    /// Signing keys the IMGAPI port requires (`authType: signature`; None:
    /// no signatures).
    pub auth: Option<crate::http::auth::KeySources>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            imgapi: imgapi::Config::default(),
            listen: DEFAULT_LISTEN.into(),
            data_dir: DEFAULT_DATA_DIR.into(),
            transfer: crate::transfer::ReceiveOptions::default(),
            transfer_timeout: Duration::from_secs(120),
            gc_interval: Some(Duration::from_secs(600)),
            limits: Limits::default(),
            reserve_bytes: DEFAULT_RESERVE_BYTES,
            recompress: Recompress::default(),
            segment_bytes: StoreOptions::default().segment_bytes,
            cloudapi: None,
            storage: None,
            auth: None,
        }
    }
}

impl DaemonConfig {
    /// Reads a config file; missing keys keep their defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let raw = std::fs::read(path).map_err(ConfigError::Read)?;
        let f: ConfigFile = serde_json::from_slice(&raw).map_err(ConfigError::Parse)?;
        f.validate(path.parent().unwrap_or(Path::new(".")))
    }
}

impl ConfigFile {
    /// The validated configuration; `base` is the directory relative
    /// paths in it (`keysFile`) start from.
    fn validate(self, base: &Path) -> Result<DaemonConfig, ConfigError> {
        let mut c = DaemonConfig::default();
        if let Some(m) = self.mode {
            c.imgapi.mode = m;
        }
        if let Some(d) = self.datacenter_name {
            c.imgapi.datacenter_name = d;
        }
        c.imgapi.admin_uuid = self.admin_uuid;
        c.imgapi.imgapi_url_from_datacenter = self.imgapi_url_from_datacenter;
        c.imgapi.accounts = self.accounts;
        if let Some(l) = self.listen {
            c.listen = l;
        }
        if let Some(d) = self.data_dir {
            c.data_dir = d;
        }
        if let Some(secs) = self.gc_interval_seconds {
            c.gc_interval = (secs > 0).then(|| Duration::from_secs(secs));
        }
        if let Some(r) = self.reserve_bytes {
            c.reserve_bytes = r;
        }
        match self.recompress_level {
            None => {}
            Some(0) => c.recompress.level = None,
            Some(l @ 1..=22) => c.recompress.level = Some(l),
            Some(l) => {
                return Err(invalid(
                    "recompressLevel",
                    format!("{l}: zstd levels are 1 to 22 (0 turns recompression off)"),
                ));
            }
        }
        if let Some(b) = self.segment_bytes {
            if !(1 << 20..=4 << 30).contains(&b) {
                return Err(invalid(
                    "segmentBytes",
                    format!("{b}: a segment file is 1 MiB to 4 GiB"),
                ));
            }
            c.segment_bytes = b;
        }
        if let Some(s) = self.recompress_after_seconds {
            c.recompress.after = Duration::from_secs(s);
        }
        if let Some(l) = &self.limits {
            l.apply(&mut c.limits);
        }
        if let Some(face) = self.cloudapi {
            c.cloudapi = Some(face.load(base)?);
        }
        c.storage = self.storage;
        match self.auth_type.unwrap_or_default() {
            AuthType::None if !self.auth_keys.is_empty() || self.auth_keys_dir.is_some() => {
                return Err(invalid(
                    "authType",
                    "authKeys or authKeysDir are set but authType is not \"signature\"",
                ));
            }
            AuthType::None => {}
            AuthType::Signature => {
                let sources = crate::http::auth::KeySources {
                    inline: self.auth_keys,
                    dir: self.auth_keys_dir.map(|d| base.join(d)),
                };
                // Every key must load now: a start with a key it ignores
                // would refuse its owner later.
                let ring = sources.load().map_err(|e| invalid("authKeys", e.0))?;
                if ring.is_empty() {
                    return Err(invalid(
                        "authType",
                        "\"signature\" needs keys in authKeys or authKeysDir",
                    ));
                }
                c.auth = Some(sources);
            }
        }
        if let Some(t) = self.transfer {
            t.apply(&mut c);
        }
        Ok(c)
    }
}

impl LimitsFile {
    fn apply(&self, l: &mut Limits) {
        let secs = |s: u64| Duration::from_secs(s.max(1));
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
            l.shutdown_deadline = Duration::from_secs(s);
        }
    }
}

impl TransferFile {
    fn apply(&self, c: &mut DaemonConfig) {
        if let Some(b) = self.batch_bytes {
            c.transfer.batch_bytes = b.max(64 * 1024);
        }
        if let Some(p) = self.parallel {
            c.transfer.parallel = p.clamp(1, 16);
        }
        if let Some(w) = self.window_bytes {
            c.transfer.window_bytes = w.max(1 << 20);
        }
        if let Some(a) = self.attempts {
            c.transfer.attempts = a.max(1);
        }
        if let Some(v) = self.verify_md5 {
            c.transfer.verify_md5 = v;
        }
        if let Some(s) = self.timeout_seconds {
            c.transfer_timeout = Duration::from_secs(s.max(1));
        }
    }
}

impl CloudApiFile {
    /// Loads the keys (a `keysFile` relative to `base`, the config file's
    /// directory); any key that does not load is an error.
    fn load(self, base: &Path) -> Result<crate::cloudapi::Config, ConfigError> {
        let mut keys = crate::cloudapi::KeyRing::default();
        for u in self.users {
            let mut lines = u.keys;
            if let Some(file) = u.keys_file {
                let path = base.join(file);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    invalid(
                        "cloudapi.users",
                        format!("keys of {}: {}: {e}", u.login, path.display()),
                    )
                })?;
                lines.extend(
                    text.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty() && !l.starts_with('#'))
                        .map(str::to_string),
                );
            }
            keys.add(&u.login, u.uuid, &lines)
                .map_err(|e| invalid("cloudapi.users", e))?;
        }
        for (name, url) in &self.datacenters {
            if !url.starts_with("http://") && !url.starts_with("https://") {
                return Err(invalid(
                    "cloudapi.datacenters",
                    format!("datacenter {name}: {url:?} is not an http(s) URL"),
                ));
            }
        }
        Ok(crate::cloudapi::Config {
            listen: self
                .listen
                .unwrap_or_else(|| crate::cloudapi::DEFAULT_LISTEN.into()),
            datacenters: self.datacenters,
            keys: Arc::new(keys),
        })
    }
}
