//! The `storage` object of the config: a remote tier for sealed segments
//! and the index, and the one validated tier configuration derived from it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use super::{ConfigError, invalid};
use crate::store::backend::{LocalDir, ObjectBackend, ObjectStoreBackend, S3Config};

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
