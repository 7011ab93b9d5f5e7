//! Copying one's own image from another datacenter (RFD 113 M3 and
//! decisions 9.4, 9.5, 9.7 of the reference): the synchronous checks of
//! ImportFromDatacenter, the state rules (new, resume, attach, refresh,
//! conflict), and the job that copies the owned origin chain and the image
//! as chunk diffs. Rules only: the HTTP layer supplies the [`Remote`].

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::manifest::{Image, ImageFile, Provenance};
use super::{ApiError, ApiResult, FieldError, Imgapi, base64_encode, load_in, save, time};
use crate::error::Error;
use crate::transfer::{self, ChunkSource, Expect, Progress, ProgressReport, ReceiveOptions};

/// Column family of jobs (key: the job's 16 bytes).
pub const CF_JOBS: &str = "jobs";
/// Deepest remote origin chain walked.
const MAX_DEPTH: usize = 100;

/// The source datacenter, as the import needs it.
pub trait Remote: Send + Sync {
    /// GetImage at the source (errors pass through unchanged).
    fn get_image(&self, uuid: &Uuid, account: Option<&Uuid>) -> ApiResult<Value>;
    /// A chunk source for the image's file, or `None` when the source is a
    /// plain IMGAPI without the chunk protocol.
    fn chunk_source(
        &self,
        uuid: &Uuid,
        account: Option<&Uuid>,
    ) -> ApiResult<Option<Box<dyn ChunkSource>>>;
    /// The whole file as a stream (the fallback for a plain IMGAPI).
    fn file_stream(&self, uuid: &Uuid, account: Option<&Uuid>) -> ApiResult<Box<dyn Read + Send>>;
}

/// Makes a [`Remote`] for a datacenter's URL.
pub trait RemoteFactory: Send + Sync {
    fn remote(&self, url: &str) -> Box<dyn Remote>;
}

/// One step of a job, as WFAPI reports it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ChainResult {
    pub name: String,
    pub result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
    pub started_at: String,
    pub finished_at: String,
}

/// A copy job, stored in its own column family.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Job {
    pub uuid: Uuid,
    pub name: String,
    pub image_uuid: Uuid,
    pub account: Uuid,
    pub datacenter: String,
    pub source: String,
    /// Origins to copy first, base-most first.
    pub origins: Vec<Uuid>,
    /// queued, running, succeeded, failed
    pub execution: String,
    pub chain_results: Vec<ChainResult>,
    pub created_at: String,
    /// The progress when last saved (live while running).
    pub progress: ProgressReport,
    #[serde(default)]
    pub elapsed_ms: u64,
}

/// Jobs that run in this process now.
#[derive(Default)]
pub struct Jobs {
    running: Mutex<HashMap<Uuid, Arc<Running>>>,
}

struct Running {
    progress: Progress,
    started: Instant,
    /// Elapsed time of earlier attempts (a resumed job).
    before_ms: u64,
}

/// What ImportFromDatacenter decided.
pub enum Decision {
    /// Start (or resume) this job on a worker.
    Run(Job),
    /// A job already running (attach) or one that finished at once (refresh).
    Done(Job),
}

fn job_key(u: &Uuid) -> [u8; 16] {
    *u.as_bytes()
}

fn now_iso() -> String {
    time::iso8601(time::now_ms())
}

fn str_field<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

impl Imgapi {
    fn save_job(&self, job: &Job) -> ApiResult<()> {
        let raw = serde_json::to_vec(job).map_err(|e| ApiError::internal(e.to_string()))?;
        self.transact(|t| {
            t.put_cf(CF_JOBS, &job_key(&job.uuid), &raw)?;
            Ok(())
        })
    }

    /// A job by uuid.
    pub fn job(&self, uuid: &Uuid) -> ApiResult<Option<Job>> {
        self.store()
            .index()
            .get_cf(CF_JOBS, &job_key(uuid))?
            .map(|raw| serde_json::from_slice(&raw).map_err(|e| ApiError::internal(e.to_string())))
            .transpose()
    }

    fn all_jobs(&self) -> ApiResult<Vec<Job>> {
        self.store()
            .index()
            .scan_cf(CF_JOBS, &[])?
            .iter()
            .map(|(_, v)| serde_json::from_slice(v).map_err(|e| ApiError::internal(e.to_string())))
            .collect()
    }

    /// The jobs of an image, oldest first.
    pub fn image_jobs(&self, image: &Uuid) -> ApiResult<Vec<Job>> {
        let mut jobs: Vec<Job> = self
            .all_jobs()?
            .into_iter()
            .filter(|j| j.image_uuid == *image)
            .collect();
        jobs.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        Ok(jobs)
    }

    /// A job in WFAPI's shape, with live progress while it runs.
    pub fn job_json(&self, job: &Job) -> Value {
        let running = self
            .jobs
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&job.uuid)
            .cloned();
        let (progress, elapsed_ms) = match &running {
            Some(r) => (
                r.progress.report(),
                r.before_ms + r.started.elapsed().as_millis() as u64,
            ),
            None => (job.progress.clone(), job.elapsed_ms),
        };
        let rate = (progress.bytes_fetched * 1000)
            .checked_div(elapsed_ms)
            .unwrap_or(0);
        let mut p = serde_json::to_value(&progress).unwrap_or_else(|_| json!({}));
        if let Some(o) = p.as_object_mut() {
            o.insert("rate_bytes_per_s".into(), json!(rate));
            o.insert("elapsed_ms".into(), json!(elapsed_ms));
        }
        json!({
            "uuid": job.uuid,
            "name": job.name,
            "execution": job.execution,
            "params": {
                "image_uuid": job.image_uuid,
                "account": job.account,
                "datacenter": job.datacenter,
                "source": job.source,
                "origins": job.origins,
                "target": format!("/import-remote-{}", job.image_uuid),
            },
            "chain_results": job.chain_results,
            "created_at": job.created_at,
            "progress": p,
        })
    }

    /// The synchronous part of ImportFromDatacenter (reference 5.2 and 9.4).
    pub fn import_from_datacenter(
        &self,
        uuid: &Uuid,
        account: Option<&Uuid>,
        datacenter: Option<&str>,
        remotes: &dyn RemoteFactory,
    ) -> ApiResult<Decision> {
        let Some(account) = account else {
            return Err(ApiError::validation(
                "\"account\" is required",
                vec![FieldError::missing("account")],
            ));
        };
        let Some(dc) = datacenter else {
            return Err(ApiError::validation(
                "\"datacenter\" is required",
                vec![FieldError::missing("datacenter")],
            ));
        };
        let own = &self.config().datacenter_name;
        let Some(url) = self.config().imgapi_url_from_datacenter.get(dc).cloned() else {
            let names: Vec<&str> = self
                .config()
                .imgapi_url_from_datacenter
                .keys()
                .map(String::as_str)
                .filter(|n| n != own)
                .collect();
            return Err(ApiError::validation(
                format!(
                    "datacenter \"{dc}\" is not supported, valid datacenters names are: {}",
                    names.join(", ")
                ),
                vec![FieldError::invalid("datacenter", "unknown datacenter")],
            ));
        };
        if dc == own {
            return Err(ApiError::validation(
                format!("cannot import into the same datacenter ({dc})"),
                vec![FieldError::invalid("datacenter", "same datacenter")],
            ));
        }
        let remote = remotes.remote(&url);
        let manifest = remote.get_image(uuid, Some(account))?;
        if str_field(&manifest, "state") != Some("active") {
            return Err(ApiError::validation(
                format!("Cannot import image {uuid} - image is not active."),
                vec![FieldError::invalid("state", "not active")],
            ));
        }
        if str_field(&manifest, "owner") != Some(account.to_string().as_str()) {
            return Err(ApiError::new(
                "UnauthorizedError",
                format!("Cannot import image {uuid} - you are not the owner."),
            ));
        }

        // Only now look locally, so nobody can probe for local images.
        if let Some(local) = self.load(uuid)? {
            let ours = local
                .provenance
                .as_ref()
                .is_some_and(|p| p.how == "copy" && p.datacenter == dc);
            if !ours {
                return Err(ApiError::new(
                    "ImageUuidAlreadyExists",
                    format!("image uuid {uuid} already exists"),
                ));
            }
            let jobs = self.image_jobs(uuid)?;
            let running = self
                .jobs
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some(j) = jobs.iter().rev().find(|j| running.contains_key(&j.uuid)) {
                return Ok(Decision::Done(j.clone())); // attach
            }
            if !local.activated {
                // Failed or interrupted: resume the last job.
                let mut job = match jobs.last() {
                    Some(j) => j.clone(),
                    None => self.new_job(uuid, account, dc, &url, Vec::new()),
                };
                job.execution = "queued".into();
                self.save_job(&job)?;
                return Ok(Decision::Run(job));
            }
            return self
                .refresh(uuid, account, dc, &url, &manifest, local)
                .map(Decision::Done);
        }

        // Owned origins to copy (base-most first); foreign ones must exist.
        let mut origins = Vec::new();
        let mut next = str_field(&manifest, "origin").and_then(super::parse_uuid);
        while let Some(o) = next {
            if origins.len() >= MAX_DEPTH {
                return Err(ApiError::internal(format!(
                    "origin chain of {uuid} is deeper than {MAX_DEPTH}"
                )));
            }
            let om = remote.get_image(&o, Some(account))?;
            if str_field(&om, "owner") != Some(account.to_string().as_str()) {
                if self.load(&o)?.is_none() {
                    return Err(ApiError::not_found(format!(
                        "origin image {o} must already exist in the datacenter (as this image is not owned by you)"
                    )));
                }
                break;
            }
            if self.load(&o)?.is_some_and(|l| l.activated) {
                break;
            }
            origins.push(o);
            next = str_field(&om, "origin").and_then(super::parse_uuid);
        }
        origins.reverse();
        let job = self.new_job(uuid, account, dc, &url, origins);
        self.save_job(&job)?;
        Ok(Decision::Run(job))
    }

    fn new_job(&self, uuid: &Uuid, account: &Uuid, dc: &str, url: &str, origins: Vec<Uuid>) -> Job {
        Job {
            uuid: Uuid::new_v4(),
            name: "import-remote-image".into(),
            image_uuid: *uuid,
            account: *account,
            datacenter: dc.into(),
            source: url.into(),
            origins,
            execution: "queued".into(),
            chain_results: Vec::new(),
            created_at: now_iso(),
            progress: ProgressReport::default(),
            elapsed_ms: 0,
        }
    }

    /// An active earlier copy: bring its mutable fields up to date.
    fn refresh(
        &self,
        uuid: &Uuid,
        account: &Uuid,
        dc: &str,
        url: &str,
        manifest: &Value,
        local: Image,
    ) -> ApiResult<Job> {
        let started = now_iso();
        let mut m = local.editable_map();
        let mut changed = Vec::new();
        for k in super::manifest::USER_MUTABLE
            .iter()
            .chain(["billing_tags", "traits"].iter())
        {
            let theirs = manifest.get(*k).filter(|v| !v.is_null());
            if m.get(*k) != theirs {
                changed.push(k.to_string());
                match theirs {
                    Some(v) => {
                        m.insert(k.to_string(), v.clone());
                    }
                    None => {
                        m.remove(*k);
                    }
                }
            }
        }
        let their_disabled = manifest
            .get("disabled")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if !changed.is_empty() || their_disabled != local.disabled {
            if their_disabled != local.disabled {
                changed.push("disabled".into());
            }
            self.transact(|t| {
                let mut img = load_in(t, uuid)?.ok_or_else(ApiError::image_not_found)?;
                img.apply_map(&m)?;
                img.disabled = their_disabled;
                save(t, &img)
            })?;
        }
        let mut job = self.new_job(uuid, account, dc, url, Vec::new());
        job.execution = "succeeded".into();
        job.chain_results.push(ChainResult {
            name: "refresh_image".into(),
            result: if changed.is_empty() {
                "unchanged".into()
            } else {
                format!("changed: {}", changed.join(", "))
            },
            error: None,
            started_at: started,
            finished_at: now_iso(),
        });
        self.save_job(&job)?;
        Ok(job)
    }

    /// Jobs a restart interrupted, to run again.
    pub fn jobs_to_resume(&self) -> ApiResult<Vec<Job>> {
        Ok(self
            .all_jobs()?
            .into_iter()
            .filter(|j| j.execution == "running" || j.execution == "queued")
            .collect())
    }

    /// Runs a copy job to its end (on the caller's thread).
    pub fn run_job(&self, job: Job, remotes: &dyn RemoteFactory, opts: &ReceiveOptions) {
        let running = Arc::new(Running {
            progress: Progress::default(),
            started: Instant::now(),
            before_ms: job.elapsed_ms,
        });
        {
            let mut map = self.jobs.running.lock().unwrap_or_else(|p| p.into_inner());
            if map.contains_key(&job.uuid) {
                return; // already running here
            }
            map.insert(job.uuid, Arc::clone(&running));
        }
        let mut job = job;
        job.execution = "running".into();
        let _ = self.save_job(&job);
        let remote = remotes.remote(&job.source);
        let mut steps: Vec<Uuid> = job.origins.clone();
        steps.push(job.image_uuid);
        let mut result: ApiResult<()> = Ok(());
        for (i, img) in steps.iter().enumerate() {
            let name = if i + 1 == steps.len() {
                "import_image"
            } else {
                "origin_import_images"
            };
            let started = now_iso();
            let r = self.copy_one(img, &job, remote.as_ref(), &running.progress, opts);
            let mut cr = ChainResult {
                name: name.into(),
                result: format!("copied image {img}"),
                error: None,
                started_at: started,
                finished_at: now_iso(),
            };
            if let Err(e) = &r {
                cr.result = "failed".into();
                cr.error = Some(
                    json!({"name": e.code, "message": format!("copy of image {img}: {}", e.message)}),
                );
            }
            job.chain_results.push(cr);
            if r.is_err() {
                result = r;
                break;
            }
        }
        job.execution = if result.is_ok() {
            "succeeded"
        } else {
            "failed"
        }
        .into();
        job.progress = running.progress.report();
        job.elapsed_ms = running.before_ms + running.started.elapsed().as_millis() as u64;
        let _ = self.save_job(&job);
        self.jobs
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&job.uuid);
    }

    /// Copies one image: manifest (as an import), file (as a chunk diff),
    /// activation. Each part is skipped when an earlier attempt finished it.
    fn copy_one(
        &self,
        uuid: &Uuid,
        job: &Job,
        remote: &dyn Remote,
        progress: &Progress,
        opts: &ReceiveOptions,
    ) -> ApiResult<()> {
        let manifest = remote.get_image(uuid, Some(&job.account))?;
        let local = match self.load(uuid)? {
            Some(l) => l,
            None => {
                let mut m = manifest.as_object().cloned().unwrap_or_default();
                for k in ["state", "files", "icon"] {
                    m.remove(k);
                }
                let mut img = Image::from_map(*uuid, &m)?;
                img.provenance = Some(Provenance {
                    how: "copy".into(),
                    source_uuid: *uuid,
                    source_owner: img.owner,
                    datacenter: job.datacenter.clone(),
                    at_ms: time::now_ms(),
                });
                self.transact(|t| {
                    if load_in(t, uuid)?.is_some() {
                        return Err(ApiError::new(
                            "ImageUuidAlreadyExists",
                            format!("image uuid {uuid} already exists"),
                        ));
                    }
                    save(t, &img)
                })?;
                img
            }
        };
        if local.files.is_empty() {
            let f = manifest
                .get("files")
                .and_then(|f| f.get(0))
                .cloned()
                .ok_or_else(|| {
                    ApiError::new("Download", format!("remote image {uuid} has no file"))
                })?;
            let size = f.get("size").and_then(Value::as_u64);
            let sha1_hex = f
                .get("sha1")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let mut sha1 = [0u8; 20];
            hex::decode_to_slice(&sha1_hex, &mut sha1).map_err(|_| {
                ApiError::new(
                    "Download",
                    format!("remote image {uuid} has a malformed sha1"),
                )
            })?;
            let compression = f
                .get("compression")
                .and_then(Value::as_str)
                .unwrap_or("none")
                .to_string();
            let dataset_guid = f
                .get("dataset_guid")
                .and_then(Value::as_str)
                .map(str::to_string);
            let attach = |t: &mut crate::store::Txn<'_>,
                          put: &crate::store::PutResult|
             -> crate::error::Result<()> {
                let mut md5 = [0u8; 16];
                hex::decode_to_slice(&put.md5, &mut md5)
                    .map_err(|_| Error::Inconsistent("md5".into()))?;
                let res: ApiResult<()> = (|| {
                    let mut img = load_in(t, uuid)?.ok_or_else(ApiError::image_not_found)?;
                    // Another job may have attached this file meanwhile (the
                    // same origin in two chains): the image holds one
                    // reference, so release the one it held before.
                    for old in std::mem::take(&mut img.files) {
                        t.unlink(&super::file_id(&old.file_id)?)?;
                    }
                    img.files = vec![ImageFile {
                        sha1: put.sha1.clone(),
                        size: put.size,
                        compression: compression.clone(),
                        dataset_guid: dataset_guid.clone(),
                        content_md5: base64_encode(&md5),
                        mtime_ms: time::now_ms(),
                        stor: "local".into(),
                        file_id: put.file_id.to_hex(),
                    }];
                    save(t, &img)
                })();
                res.map_err(|e| Error::Inconsistent(e.message))
            };
            let expect = Expect {
                size,
                sha1: Some(sha1),
            };
            match remote.chunk_source(uuid, Some(&job.account))? {
                Some(src) => {
                    let mut attach = attach;
                    transfer::receive_file_with(
                        self.store(),
                        src.as_ref(),
                        uuid.as_bytes(),
                        &expect,
                        progress,
                        opts,
                        &mut attach,
                    )
                    .map_err(|e| ApiError::new("Download", e.to_string()))?;
                }
                None => {
                    // A plain IMGAPI: stream the whole file and dedup locally.
                    let stream = remote.file_stream(uuid, Some(&job.account))?;
                    if let Some(s) = size {
                        progress
                            .total_bytes
                            .fetch_add(s, std::sync::atomic::Ordering::Relaxed);
                        progress
                            .bytes_to_fetch
                            .fetch_add(s, std::sync::atomic::Ordering::Relaxed);
                    }
                    let counted = Counted {
                        inner: stream,
                        progress,
                    };
                    let staged = self
                        .store()
                        .put_staged(counted)
                        .map_err(|e| ApiError::new("Download", e.to_string()))?;
                    if size.is_some_and(|s| s != staged.size) || staged.sha1 != sha1 {
                        return Err(ApiError::new(
                            "Download",
                            format!(
                                "file of image {uuid} does not match the source's size and sha1"
                            ),
                        ));
                    }
                    self.store().transaction(|t| {
                        let put = t.commit_put(&staged)?;
                        attach(t, &put)
                    })?;
                }
            }
        }
        self.transact(|t| {
            let mut img = load_in(t, uuid)?.ok_or_else(ApiError::image_not_found)?;
            if !img.activated {
                img.activated = true;
                img.disabled = manifest
                    .get("disabled")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                if img.published_at.is_none() {
                    img.published_at = Some(now_iso());
                }
                save(t, &img)?;
            }
            Ok(())
        })
    }
}

/// Counts streamed bytes into the progress (the fallback path).
struct Counted<'a, R> {
    inner: R,
    progress: &'a Progress,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress
            .bytes_fetched
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        self.progress
            .wire_bytes
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}
