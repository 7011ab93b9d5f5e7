//! Any store that Apache Arrow's `object_store` speaks, behind the
//! synchronous [`ObjectBackend`]: S3 (SeaweedFS, Garage, MinIO, AWS) and an
//! in-memory store for tests.
//!
//! The backend owns a small tokio runtime of its own; each call is spawned
//! onto it and the calling thread waits for the answer. The engine's
//! callers are plain threads (the read-ahead pool, the daemon's blocking
//! pool and upkeep thread), never tokio workers, so the wait blocks nobody
//! else's tasks.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt as _;
use object_store::aws::AmazonS3Builder;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt as _, PutMode, PutOptions,
    PutPayload, RetryConfig, UpdateVersion, WriteMultipart,
};

use super::{
    BackendError, BackendResult, Conditional, ObjectBackend, ObjectInfo, Version, check_name,
    check_prefix,
};

/// Objects up to this size are one PUT; larger ones a multipart upload of
/// parts this size.
const PART_BYTES: usize = 8 << 20;
/// Parts of one multipart upload in flight at once.
const PARTS_IN_FLIGHT: usize = 4;

/// How to reach an S3 bucket (the connection part of the daemon's
/// `"storage"` object, which maps its keys here and takes the defaults
/// below for the ones it leaves out).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Config {
    /// `http://host:port` or `https://host`.
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    /// Falls back to `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// Falls back to `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: Option<String>,
    /// Seconds one request may take before it is retried.
    pub request_timeout_seconds: u64,
    /// Retries of a failed request (5xx, timeouts, broken connections),
    /// with exponential backoff from 100 ms up to 15 s.
    pub retries: usize,
}

impl S3Config {
    /// The region a bucket is in when the config names none (what
    /// SeaweedFS, MinIO and Garage accept by default).
    pub const DEFAULT_REGION: &str = "us-east-1";
    /// Seconds one request may take when the config does not say.
    pub const DEFAULT_REQUEST_TIMEOUT_SECONDS: u64 = 60;
    /// Retries of a failed request when the config does not say.
    pub const DEFAULT_RETRIES: usize = 5;
}

/// An `object_store` store behind [`ObjectBackend`].
pub struct ObjectStoreBackend {
    store: Arc<dyn ObjectStore>,
    describe: String,
    /// Taken only by `drop`.
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for ObjectStoreBackend {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside another runtime
        // (a store dropped by the daemon's async code): let it go instead.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl ObjectStoreBackend {
    /// An empty in-memory store (tests).
    pub fn memory() -> BackendResult<Self> {
        Self::new(Arc::new(InMemory::new()), "memory://".into())
    }

    /// An S3 bucket.
    pub fn s3(c: &S3Config) -> BackendResult<Self> {
        let key = c
            .access_key_id
            .clone()
            .or_else(|| std::env::var("AWS_ACCESS_KEY_ID").ok());
        let secret = c
            .secret_access_key
            .clone()
            .or_else(|| std::env::var("AWS_SECRET_ACCESS_KEY").ok());
        let (Some(key), Some(secret)) = (key, secret) else {
            return Err(BackendError::failed(
                format!("connecting to bucket {}", c.bucket),
                "no credentials: set accessKeyId and secretAccessKey, \
                 or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            ));
        };
        let timeout = Duration::from_secs(c.request_timeout_seconds.max(1));
        let store = AmazonS3Builder::new()
            .with_endpoint(&c.endpoint)
            .with_bucket_name(&c.bucket)
            .with_region(&c.region)
            .with_access_key_id(key)
            .with_secret_access_key(secret)
            .with_allow_http(c.endpoint.starts_with("http://"))
            .with_virtual_hosted_style_request(false)
            // Create-only and compare-and-swap writes (the writer's lease):
            // If-None-Match: * and If-Match: ETAG; `probe_conditional`
            // checks the store enforces them.
            .with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch)
            // The body is not hashed into the signature: every record
            // carries its own CRC and is checked against its BLAKE3 id on
            // every read, and an upload is confirmed by the object's
            // length, so SHA-256 over every byte would buy nothing but a
            // core's time during ingest (measured in benches/tier.rs).
            .with_unsigned_payload(true)
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(c.endpoint.starts_with("http://"))
                    .with_timeout(timeout)
                    .with_connect_timeout(Duration::from_secs(5)),
            )
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(15),
                    base: 2.0,
                },
                max_retries: c.retries,
                retry_timeout: timeout * (c.retries as u32 + 1),
            })
            .build()
            .map_err(|e| BackendError::failed(format!("configuring bucket {}", c.bucket), e))?;
        Self::new(
            Arc::new(store),
            format!("s3://{} at {}", c.bucket, c.endpoint),
        )
    }

    fn new(store: Arc<dyn ObjectStore>, describe: String) -> BackendResult<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("imgstore-objects")
            .enable_all()
            .build()
            .map_err(|e| BackendError::failed("starting the object store client", e))?;
        Ok(ObjectStoreBackend {
            store,
            describe,
            rt: Some(rt),
        })
    }

    /// Runs `fut` on the backend's runtime and waits for it.
    fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = BackendResult<T>> + Send + 'static,
    ) -> BackendResult<T> {
        let Some(rt) = &self.rt else {
            return Err(BackendError::failed(&self.describe, "the client stopped"));
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| BackendError::failed(&self.describe, "the client stopped"))?
    }

    fn path(name: &str) -> BackendResult<ObjectPath> {
        check_name(name)?;
        Ok(ObjectPath::from(name))
    }
}

impl ObjectStoreBackend {
    /// A conditional PUT: a refusal (the object exists, or changed) is
    /// [`Conditional::Refused`], not an error.
    fn put_mode(&self, name: &str, bytes: &[u8], mode: PutMode) -> BackendResult<Conditional> {
        let location = Self::path(name)?;
        let store = Arc::clone(&self.store);
        let what = format!("writing {name} conditionally");
        let body = PutPayload::from(bytes.to_vec());
        self.run(async move {
            let opts = PutOptions {
                mode,
                ..PutOptions::default()
            };
            match store.put_opts(&location, body, opts).await {
                Ok(r) => Ok(Conditional::Written(Version(r.e_tag.unwrap_or_default()))),
                Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. }
                    | object_store::Error::NotFound { .. },
                ) => Ok(Conditional::Refused),
                Err(e) => Err(BackendError::failed(what, e)),
            }
        })
    }
}

fn failed(what: String, name: &str, e: object_store::Error) -> BackendError {
    match e {
        object_store::Error::NotFound { .. } => BackendError::NotFound(name.to_owned()),
        e => BackendError::failed(what, e),
    }
}

impl ObjectBackend for ObjectStoreBackend {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn put_file(&self, name: &str, path: &Path) -> BackendResult<()> {
        let location = Self::path(name)?;
        let store = Arc::clone(&self.store);
        let what = format!("uploading {} to {name}", path.display());
        let file = std::fs::File::open(path).map_err(|e| BackendError::failed(&what, e))?;
        let len = file
            .metadata()
            .map_err(|e| BackendError::failed(&what, e))?
            .len();
        let name_owned = name.to_owned();
        self.run(async move {
            use std::os::unix::fs::FileExt as _;
            let read = |offset: u64, n: usize| -> BackendResult<Vec<u8>> {
                let mut buf = vec![0; n];
                file.read_exact_at(&mut buf, offset)
                    .map_err(|e| BackendError::failed(&what, e))?;
                Ok(buf)
            };
            if len <= PART_BYTES as u64 {
                let body = read(0, len as usize)?;
                store
                    .put(&location, PutPayload::from(body))
                    .await
                    .map_err(|e| failed(what.clone(), &name_owned, e))?;
            } else {
                let upload = store
                    .put_multipart(&location)
                    .await
                    .map_err(|e| failed(what.clone(), &name_owned, e))?;
                let mut w = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
                let mut offset = 0;
                while offset < len {
                    let n = (len - offset).min(PART_BYTES as u64) as usize;
                    let part = match read(offset, n) {
                        Ok(p) => p,
                        Err(e) => {
                            let _ = w.abort().await;
                            return Err(e);
                        }
                    };
                    if let Err(e) = w.wait_for_capacity(PARTS_IN_FLIGHT).await {
                        let _ = w.abort().await;
                        return Err(failed(what.clone(), &name_owned, e));
                    }
                    w.write(&part);
                    offset += n as u64;
                }
                w.finish()
                    .await
                    .map_err(|e| failed(what.clone(), &name_owned, e))?;
            }
            // Confirmed, not assumed: the object is there with every byte.
            let meta = store
                .head(&location)
                .await
                .map_err(|e| failed(what.clone(), &name_owned, e))?;
            if meta.size != len {
                return Err(BackendError::failed(
                    what,
                    format!("the store holds {} bytes of {len}", meta.size),
                ));
            }
            Ok(())
        })
    }

    fn put_bytes(&self, name: &str, bytes: &[u8]) -> BackendResult<()> {
        let location = Self::path(name)?;
        let store = Arc::clone(&self.store);
        let what = format!("uploading {name}");
        let name_owned = name.to_owned();
        let body = PutPayload::from(bytes.to_vec());
        self.run(async move {
            store
                .put(&location, body)
                .await
                .map_err(|e| failed(what, &name_owned, e))?;
            Ok(())
        })
    }

    fn read_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> BackendResult<()> {
        if buf.is_empty() {
            return match self.len(name)? {
                Some(_) => Ok(()),
                None => Err(BackendError::NotFound(name.to_owned())),
            };
        }
        let location = Self::path(name)?;
        let store = Arc::clone(&self.store);
        let end = offset + buf.len() as u64;
        let name_owned = name.to_owned();
        let got = self.run(async move {
            match store.get_range(&location, offset..end).await {
                Ok(b) => Ok(Ok(b)),
                Err(object_store::Error::NotFound { .. }) => {
                    Err(BackendError::NotFound(name_owned))
                }
                // A range past the end is an error from some servers and a
                // short body from others; the length tells which it was.
                Err(e) => match store.head(&location).await {
                    Ok(meta) if meta.size < end => Ok(Err(meta.size)),
                    _ => Err(BackendError::failed(
                        format!("reading {name_owned} at {offset}"),
                        e,
                    )),
                },
            }
        })?;
        match got {
            Ok(bytes) if bytes.len() == buf.len() => {
                buf.copy_from_slice(&bytes);
                Ok(())
            }
            Ok(bytes) => Err(BackendError::Short {
                name: name.to_owned(),
                wanted_end: end,
                len: offset + bytes.len() as u64,
            }),
            Err(len) => Err(BackendError::Short {
                name: name.to_owned(),
                wanted_end: end,
                len,
            }),
        }
    }

    fn len(&self, name: &str) -> BackendResult<Option<u64>> {
        let location = Self::path(name)?;
        let store = Arc::clone(&self.store);
        let what = format!("looking up {name}");
        self.run(async move {
            match store.head(&location).await {
                Ok(meta) => Ok(Some(meta.size)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(BackendError::failed(what, e)),
            }
        })
    }

    fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>> {
        check_prefix(prefix)?;
        let store = Arc::clone(&self.store);
        let what = format!("listing {prefix:?} in {}", self.describe);
        let prefix = prefix.trim_end_matches('/').to_owned();
        let mut out = self.run(async move {
            let p = (!prefix.is_empty()).then(|| ObjectPath::from(prefix.as_str()));
            let metas: Vec<_> = store
                .list(p.as_ref())
                .try_collect()
                .await
                .map_err(|e| BackendError::failed(what, e))?;
            Ok(metas
                .into_iter()
                .map(|m| ObjectInfo {
                    name: m.location.to_string(),
                    len: m.size,
                })
                .collect::<Vec<_>>())
        })?;
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn get_versioned(&self, name: &str) -> BackendResult<Option<(Vec<u8>, Version)>> {
        let location = Self::path(name)?;
        let store = Arc::clone(&self.store);
        let what = format!("reading {name}");
        self.run(async move {
            let got = match store.get(&location).await {
                Ok(g) => g,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(BackendError::failed(what, e)),
            };
            let version = Version(got.meta.e_tag.clone().unwrap_or_default());
            let bytes = got
                .bytes()
                .await
                .map_err(|e| BackendError::failed(what, e))?;
            Ok(Some((bytes.to_vec(), version)))
        })
    }

    fn put_if_absent(&self, name: &str, bytes: &[u8]) -> BackendResult<Conditional> {
        self.put_mode(name, bytes, PutMode::Create)
    }

    fn put_if_version(
        &self,
        name: &str,
        bytes: &[u8],
        version: &Version,
    ) -> BackendResult<Conditional> {
        let mode = PutMode::Update(UpdateVersion {
            e_tag: Some(version.0.clone()),
            version: None,
        });
        self.put_mode(name, bytes, mode)
    }

    fn delete(&self, name: &str) -> BackendResult<()> {
        let location = Self::path(name)?;
        let store = Arc::clone(&self.store);
        let what = format!("deleting {name}");
        self.run(async move {
            match store.delete(&location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(BackendError::failed(what, e)),
            }
        })
    }
}
