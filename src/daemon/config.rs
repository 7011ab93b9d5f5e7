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

pub use super::storage::{Durability, Storage, StorageKind};
use super::{ConfigError, invalid};
use crate::http::server::Limits;
use crate::imgapi::{self, Mode};
use crate::service::upkeep::Recompress;
use crate::store::StoreOptions;

/// Default data directory and listen address: `imgstore serve` needs no
/// configuration at all.
pub const DEFAULT_DATA_DIR: &str = "./imgstore-data";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Disk space the daemon holds back for compaction on a full disk.
pub const DEFAULT_RESERVE_BYTES: u64 = 64 << 20;

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
    /// by default owners are not checked, as IMGAPI allows in dc mode. A
    /// list of uuids, or an object of login to uuid (`{"alice": "UUID"}`)
    /// whose logins the client and the API then take wherever an account
    /// uuid is expected (`--account`, `owner`, `acl`, trusted accounts),
    /// as they take the logins of `cloudapi.users`.
    accounts: Option<AccountsFile>,
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
    /// background, one at a time, their chunks gathered into groups of
    /// about 1 MiB, 1 to 22 (default 17; 0 turns it off; ingest writes
    /// level 1).
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
    /// TLS on the IMGAPI port (default: plain HTTP).
    tls: Option<TlsFile>,
    /// The least severe log lines written: `trace`, `debug`, `info`
    /// (default: every request and chore), `warn` (4xx answers and
    /// problems that heal), `error` (5xx answers and failures), `fatal`.
    /// Each `-v` of `imgstore serve` lowers it one step.
    log_level: Option<LogLevel>,
    /// The writer's lease in the bucket (with a `storage` tier), and the
    /// datacenter's cluster: `{"advertiseUrl", "leaseSeconds"}`. Every
    /// daemon with a tier takes the lease (default 30 s). Alone (no
    /// `advertiseUrl`), a second daemon on the same store (a restored or
    /// copied data dir) is refused at start, and one that loses its lease
    /// stops writing. With `advertiseUrl` the daemon is a member: the
    /// lease holder writes, the others follow (reads served from their
    /// copy of the newest publication, writes forwarded) and one takes
    /// over when the writer stops renewing; a bucket that does not
    /// enforce conditional writes is refused.
    cluster: Option<ClusterFile>,
    /// How this daemon signs its requests to other datacenters' IMGAPIs
    /// that require signatures (copies): `{"user": "LOGIN", "keyFile":
    /// "PATH"}`, an unencrypted OpenSSH private key relative to the config
    /// file.
    signing_key: Option<SigningKeyFile>,
}

/// `accounts`: uuids, or logins with their uuids.
#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
enum AccountsFile {
    /// Account uuids.
    Uuids(Vec<Uuid>),
    /// Login to account uuid.
    Logins(BTreeMap<String, Uuid>),
}

/// The accounts owners must be among (when listed), and login to uuid.
type AccountTable = (Option<Vec<Uuid>>, BTreeMap<String, Uuid>);

/// The account table: `accounts` (when given as logins) and the CloudAPI
/// face's users; a login named twice must name one account.
fn account_table(
    accounts: Option<AccountsFile>,
    face: Option<&CloudApiFile>,
) -> Result<AccountTable, ConfigError> {
    let (listed, mut logins) = match accounts {
        None => (None, BTreeMap::new()),
        Some(AccountsFile::Uuids(u)) => (Some(u), BTreeMap::new()),
        Some(AccountsFile::Logins(m)) => (Some(m.values().copied().collect()), m),
    };
    if let Some(l) = logins.keys().find(|l| imgapi::parse_uuid(l).is_some()) {
        return Err(invalid("accounts", format!("{l:?} is a uuid, not a login")));
    }
    // A login twice among the users is the key ring's error to give.
    let from_accounts = logins.clone();
    for u in face.map(|f| f.users.as_slice()).unwrap_or_default() {
        logins.insert(u.login.clone(), u.uuid);
        match from_accounts.get(&u.login) {
            Some(&other) if other != u.uuid => {
                return Err(invalid(
                    "cloudapi.users",
                    format!(
                        "login {:?} is account {other} in \"accounts\" but {} here",
                        u.login, u.uuid
                    ),
                ));
            }
            _ => {}
        }
    }
    Ok((listed, logins))
}

/// `cluster`.
#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ClusterFile {
    /// Where this daemon answers, as the other members should reach it
    /// (`http://10.0.0.5:8080`); kept in the lease. Set, the daemon is a
    /// member of its datacenter's cluster: it writes while it holds the
    /// lease, else follows the writer (serving reads, forwarding writes),
    /// and takes over when the writer stops renewing. Unset, the daemon
    /// runs alone and refuses to start while another holds the lease.
    advertise_url: Option<String>,
    /// How long the writer's lease holds without a renewal, 3 to 600
    /// (default 30); it is renewed every third of it.
    lease_seconds: Option<u64>,
}

/// The writer's lease of a daemon (`cluster`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    pub advertise_url: Option<String>,
    pub lease_seconds: u64,
}

impl ClusterConfig {
    /// True for a member of a cluster (it says where it answers); false
    /// for a daemon alone with a lease of its own length.
    pub fn is_member(&self) -> bool {
        self.advertise_url.is_some()
    }
}

/// How long the writer's lease holds by default.
pub const DEFAULT_LEASE_SECONDS: u64 = 30;

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            advertise_url: None,
            lease_seconds: DEFAULT_LEASE_SECONDS,
        }
    }
}

/// `signingKey`.
#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SigningKeyFile {
    /// The login the other datacenter knows this daemon's key under.
    user: String,
    /// The private key (OpenSSH format, unencrypted).
    key_file: PathBuf,
}

/// `tls`: a certificate and its key, PEM files relative to the config
/// file.
#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TlsFile {
    /// The certificate chain, leaf first (PEM).
    cert_file: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    key_file: PathBuf,
}

impl TlsFile {
    fn load(&self, base: &Path, key: &str) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
        crate::http::tls::server_config(&base.join(&self.cert_file), &base.join(&self.key_file))
            .map_err(|e| invalid(key, e.to_string()))
    }
}

/// `logLevel`: bunyan's level names.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Fatal,
}

impl LogLevel {
    /// Bunyan's number for it.
    pub fn bunyan(self) -> u8 {
        match self {
            LogLevel::Trace => 10,
            LogLevel::Debug => 20,
            LogLevel::Info => 30,
            LogLevel::Warn => 40,
            LogLevel::Error => 50,
            LogLevel::Fatal => 60,
        }
    }
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
    /// Record bytes per fetch request (default 1048576, 1 MiB; at least
    /// 64 KiB).
    batch_bytes: Option<u64>,
    /// Fetch requests in flight, 1 to 16 (default 8).
    parallel: Option<usize>,
    /// Fetched chunk bytes held ahead of hashing (default 33554432, 32
    /// MiB; at least 1 MiB).
    window_bytes: Option<u64>,
    /// Attempts per batch before a copy fails (default 4).
    attempts: Option<u32>,
    /// Seconds one request to another datacenter may take (default 120).
    timeout_seconds: Option<u64>,
    /// Recompute a copied file's MD5 instead of taking the source's
    /// (default false; costs about 40 % of the receiver's CPU). Only with
    /// `checkFile: before`.
    verify_md5: Option<bool>,
    /// When a copied file is checked whole (BLAKE3, SHA-1, MD5 over every
    /// byte): `after` (default) the copy, from a queue in the store that a
    /// background chore drains, so a copy costs what crosses the link (a
    /// mismatch disables the image and fails the job); or `before` the
    /// file is committed, reading every byte during the copy. Every
    /// fetched chunk is checked against its id either way.
    check_file: Option<CheckFile>,
}

/// `transfer.checkFile`.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum CheckFile {
    Before,
    After,
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
    /// TLS on the face's listener (default: plain HTTP).
    tls: Option<TlsFile>,
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
    pub auth: Option<crate::http::authkeys::KeySources>,
    /// TLS on the IMGAPI port (None: plain HTTP).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Signs copies' requests to other datacenters (`signingKey`).
    pub signing_key: Option<Arc<crate::http::sign::Signer>>,
    /// The writer's lease, as `cluster` sets it (None: the defaults, and a
    /// bucket without conditional writes is used without a lease).
    pub cluster: Option<ClusterConfig>,
    /// The least severe log lines written, as bunyan's number (`logLevel`;
    /// default 30, info).
    pub log_level: u8,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            imgapi: imgapi::Config::default(),
            listen: DEFAULT_LISTEN.into(),
            data_dir: DEFAULT_DATA_DIR.into(),
            transfer: crate::transfer::ReceiveOptions {
                check: crate::transfer::FileCheck::Later,
                ..crate::transfer::ReceiveOptions::default()
            },
            transfer_timeout: Duration::from_secs(120),
            gc_interval: Some(Duration::from_secs(600)),
            limits: Limits::default(),
            reserve_bytes: DEFAULT_RESERVE_BYTES,
            recompress: Recompress::default(),
            segment_bytes: StoreOptions::default().segment_bytes,
            cloudapi: None,
            storage: None,
            auth: None,
            tls: None,
            signing_key: None,
            cluster: None,
            log_level: LogLevel::Info.bunyan(),
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
        (c.imgapi.accounts, c.imgapi.logins) =
            account_table(self.accounts, self.cloudapi.as_ref())?;
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
        c.log_level = self.log_level.unwrap_or(LogLevel::Info).bunyan();
        if let Some(t) = &self.tls {
            c.tls = Some(t.load(base, "tls")?);
        }
        if let Some(cl) = &self.cluster {
            let seconds = cl.lease_seconds.unwrap_or(DEFAULT_LEASE_SECONDS);
            if !(3..=600).contains(&seconds) {
                return Err(invalid(
                    "cluster.leaseSeconds",
                    format!("{seconds}: a lease holds 3 to 600 s"),
                ));
            }
            if let Some(url) = &cl.advertise_url {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(invalid(
                        "cluster.advertiseUrl",
                        format!("{url:?}: an http:// or https:// URL the other members reach"),
                    ));
                }
                if c.storage.is_none() {
                    return Err(invalid(
                        "cluster.advertiseUrl",
                        "a cluster's members share a bucket: configure \"storage\" (type s3)",
                    ));
                }
            }
            c.cluster = Some(ClusterConfig {
                advertise_url: cl.advertise_url.clone(),
                lease_seconds: seconds,
            });
        }
        if let Some(k) = &self.signing_key {
            let signer = crate::http::sign::Signer::from_key_file(&k.user, &base.join(&k.key_file))
                .map_err(|e| invalid("signingKey", e.0))?;
            c.signing_key = Some(Arc::new(signer));
        }
        match self.auth_type.unwrap_or_default() {
            AuthType::None if !self.auth_keys.is_empty() || self.auth_keys_dir.is_some() => {
                return Err(invalid(
                    "authType",
                    "authKeys or authKeysDir are set but authType is not \"signature\"",
                ));
            }
            AuthType::None => {}
            AuthType::Signature => {
                let sources = crate::http::authkeys::KeySources {
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
        if let Some(when) = self.check_file {
            c.transfer.check = match when {
                CheckFile::Before => crate::transfer::FileCheck::Before,
                CheckFile::After => crate::transfer::FileCheck::Later,
            };
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
                lines.extend(crate::http::authkeys::authorized_keys(&text));
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
        let tls = match &self.tls {
            Some(t) => Some(t.load(base, "cloudapi.tls")?),
            None => None,
        };
        Ok(crate::cloudapi::Config {
            listen: self
                .listen
                .unwrap_or_else(|| crate::cloudapi::DEFAULT_LISTEN.into()),
            datacenters: self.datacenters,
            keys: Arc::new(keys),
            tls,
        })
    }
}
