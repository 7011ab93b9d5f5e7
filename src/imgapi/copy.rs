//! Copying one's own image from another datacenter (RFD 113 M3 and
//! decisions 9.4, 9.5, 9.7 of the reference): the synchronous checks of
//! ImportFromDatacenter, the state rules (new, resume, attach, refresh,
//! conflict), and copying one image (manifest as an import, file as a chunk
//! diff or, from a plain IMGAPI, a whole stream, then activation). Rules
//! only: the HTTP layer supplies the [`Remote`]; [`jobs`](super::jobs)
//! runs the steps.

use std::io::Read;
use std::sync::atomic::Ordering;

use uuid::Uuid;

use super::jobs::{ChainResult, Decision, Execution, Job, STEP_REFRESH, now_iso};
use super::manifest::{
    Editor, Image, ImageFile, ImageState, Manifest, ManifestField, Provenance, ProvenanceKind,
    STOR_LOCAL,
};
use super::remote::Remote;
use super::{ApiError, ApiResult, Code, FieldError, Images, Imgapi, base64_encode, time};
use crate::store::{PutResult, Txn};
use crate::transfer::{self, ChunkSource, Expect, Progress, ReceiveOptions};

/// Deepest remote origin chain walked.
const MAX_DEPTH: usize = 100;

/// What a copy would do (`plan_import`), as the dry run reports it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ImportPlan {
    pub action: PlanAction,
    /// Origins it would copy first, base-most first (`copy` only).
    pub origins: Vec<Uuid>,
}

#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum PlanAction {
    /// A new copy.
    Copy,
    /// An earlier copy from there is running: follow it.
    Attach,
    /// An earlier copy from there stopped: go on from where it stopped.
    Resume,
    /// The image is here, copied from there: only its mutable fields
    /// would be refreshed.
    UpToDate,
}

/// What the checks of an import found.
struct Checked {
    account: Uuid,
    dc: String,
    url: String,
    remote: Box<dyn Remote>,
    manifest: Manifest,
    local: Option<Image>,
}

/// A local image with the uuid of a copy, as an earlier copy.
enum Existing {
    Running(Job),
    Unfinished(Option<Job>),
    Active,
}

/// What the source's `files[0]` says the file is.
struct RemoteFile {
    size: Option<u64>,
    sha1: [u8; 20],
    compression: String,
    dataset_guid: Option<String>,
}

impl RemoteFile {
    fn of(uuid: &Uuid, manifest: &Manifest) -> ApiResult<Self> {
        let f = manifest.file().ok_or_else(|| {
            ApiError::new(Code::Download, format!("remote image {uuid} has no file"))
        })?;
        let mut sha1 = [0u8; 20];
        hex::decode_to_slice(&f.sha1, &mut sha1).map_err(|_| {
            ApiError::new(
                Code::Download,
                format!("remote image {uuid} has a malformed sha1"),
            )
        })?;
        Ok(RemoteFile {
            size: Some(f.size),
            sha1,
            compression: f.compression.clone(),
            dataset_guid: f.dataset_guid.clone(),
        })
    }
}

impl Imgapi {
    /// The synchronous part of ImportFromDatacenter (reference 5.2 and 9.4).
    pub(super) fn decide_import(
        &self,
        uuid: &Uuid,
        account: Option<&Uuid>,
        datacenter: Option<&str>,
    ) -> ApiResult<Decision> {
        let c = self.import_checks(uuid, account, datacenter)?;
        if let Some(local) = c.local {
            return self.decide_existing(uuid, &c.account, &c.dc, &c.url, &c.manifest, local);
        }
        let origins = self.origins_to_copy(uuid, &c.account, &c.manifest, c.remote.as_ref())?;
        let job = Job::new(uuid, &c.account, &c.dc, &c.url, origins);
        self.save_job(&job)?;
        Ok(Decision::Run(job))
    }

    /// What ImportFromDatacenter would do, checked as it checks (the
    /// source datacenter, the image there, a local one), changing nothing:
    /// a dry run of a copy.
    pub fn plan_import(
        &self,
        uuid: &Uuid,
        account: Option<&Uuid>,
        datacenter: Option<&str>,
    ) -> ApiResult<ImportPlan> {
        let c = self.import_checks(uuid, account, datacenter)?;
        let action = match &c.local {
            None => {
                let origins =
                    self.origins_to_copy(uuid, &c.account, &c.manifest, c.remote.as_ref())?;
                return Ok(ImportPlan {
                    action: PlanAction::Copy,
                    origins,
                });
            }
            Some(local) => match self.existing_copy(uuid, &c.dc, local)? {
                Existing::Running(_) => PlanAction::Attach,
                Existing::Unfinished(_) => PlanAction::Resume,
                Existing::Active => PlanAction::UpToDate,
            },
        };
        Ok(ImportPlan {
            action,
            origins: Vec::new(),
        })
    }

    /// The checks every import makes before it decides anything.
    fn import_checks(
        &self,
        uuid: &Uuid,
        account: Option<&Uuid>,
        datacenter: Option<&str>,
    ) -> ApiResult<Checked> {
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
        let url = self.source_url(dc)?;
        let remote = self.jobs.remote(&url)?;
        let manifest = remote.get_image(uuid, Some(account))?;
        if manifest.state != ImageState::Active {
            return Err(ApiError::validation(
                format!("Cannot import image {uuid} - image is not active."),
                vec![FieldError::invalid("state", "not active")],
            ));
        }
        if manifest.owner != *account {
            return Err(ApiError::new(
                Code::UnauthorizedError,
                format!("Cannot import image {uuid} - you are not the owner."),
            ));
        }
        // Only now look locally, so nobody can probe for local images.
        let local = self.load(uuid)?;
        Ok(Checked {
            account: *account,
            dc: dc.to_string(),
            url,
            remote,
            manifest,
            local,
        })
    }

    /// The URL copies from `dc` pull from.
    fn source_url(&self, dc: &str) -> ApiResult<String> {
        let own = &self.config().datacenter_name;
        let Some(url) = self.config().imgapi_url_from_datacenter.get(dc).cloned() else {
            let names: Vec<&str> = self
                .config()
                .imgapi_url_from_datacenter
                .keys()
                .map(String::as_str)
                .filter(|n| n != own)
                .collect();
            // Upstream's words first (clients may match them), then what
            // an operator needs: the key that names the datacenters.
            let known = if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            };
            return Err(ApiError::validation(
                format!(
                    "datacenter \"{dc}\" is not supported, valid datacenters names are: {known} \
                     (a daemon copies from the datacenters its imgapiUrlFromDatacenter config names)"
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
        Ok(url)
    }

    /// A local image with the uuid: an earlier copy from `dc` is attached
    /// to, resumed or refreshed; anything else is a conflict.
    fn decide_existing(
        &self,
        uuid: &Uuid,
        account: &Uuid,
        dc: &str,
        url: &str,
        manifest: &Manifest,
        local: Image,
    ) -> ApiResult<Decision> {
        match self.existing_copy(uuid, dc, &local)? {
            Existing::Running(j) => Ok(Decision::Done(j)), // attach
            Existing::Unfinished(last) => {
                // Failed or interrupted: resume the last job.
                let mut job = last.unwrap_or_else(|| Job::new(uuid, account, dc, url, Vec::new()));
                job.execution = Execution::Queued;
                self.save_job(&job)?;
                Ok(Decision::Run(job))
            }
            Existing::Active => self
                .refresh(uuid, account, dc, url, manifest, local)
                .map(Decision::Done),
        }
    }

    /// What a local image with the uuid is to a copy from `dc`: an earlier
    /// copy from there (running, unfinished or active), or a conflict.
    fn existing_copy(&self, uuid: &Uuid, dc: &str, local: &Image) -> ApiResult<Existing> {
        let ours = local
            .provenance
            .as_ref()
            .is_some_and(|p| p.how == ProvenanceKind::Copy && p.datacenter == dc);
        if !ours {
            return Err(ApiError::already_exists(uuid));
        }
        let jobs = self.image_jobs(uuid)?;
        if let Some(j) = self.running_job_of(&jobs) {
            return Ok(Existing::Running(j));
        }
        if !local.activated {
            return Ok(Existing::Unfinished(jobs.last().cloned()));
        }
        Ok(Existing::Active)
    }

    /// Owned origins to copy (base-most first); foreign ones must exist.
    fn origins_to_copy(
        &self,
        uuid: &Uuid,
        account: &Uuid,
        manifest: &Manifest,
        remote: &dyn Remote,
    ) -> ApiResult<Vec<Uuid>> {
        let mut origins = Vec::new();
        let mut next = manifest.origin;
        while let Some(o) = next {
            if origins.len() >= MAX_DEPTH {
                return Err(ApiError::internal(format!(
                    "origin chain of {uuid} is deeper than {MAX_DEPTH}"
                )));
            }
            let om = remote.get_image(&o, Some(account))?;
            if om.owner != *account {
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
            next = om.origin;
        }
        origins.reverse();
        Ok(origins)
    }

    /// An active earlier copy: bring its mutable fields up to date.
    fn refresh(
        &self,
        uuid: &Uuid,
        account: &Uuid,
        dc: &str,
        url: &str,
        manifest: &Manifest,
        local: Image,
    ) -> ApiResult<Job> {
        let started = now_iso();
        let mut m = local.editable_map();
        let theirs_all = manifest.to_map();
        let mut changed = Vec::new();
        // What the owner may edit, and the operator's billing tags and
        // traits: what a copy follows of its source.
        let refreshed = ManifestField::ALL
            .iter()
            .filter(|f| f.editor() == Editor::Owner)
            .chain(&[ManifestField::BillingTags, ManifestField::Traits]);
        for k in refreshed.map(|f| f.name()) {
            let theirs = theirs_all.get(k).filter(|v| !v.is_null());
            if m.get(k) != theirs {
                changed.push(k.to_string());
                match theirs {
                    Some(v) => {
                        m.insert(k.to_string(), v.clone());
                    }
                    None => {
                        m.remove(k);
                    }
                }
            }
        }
        let their_disabled = manifest.disabled;
        if their_disabled != local.disabled {
            changed.push("disabled".into());
        }
        if !changed.is_empty() {
            self.write(|t| {
                let mut img = t
                    .get::<Images>(uuid)?
                    .ok_or_else(ApiError::image_not_found)?;
                img.apply_map(&m)?;
                img.disabled = their_disabled;
                t.put::<Images>(uuid, &img)?;
                Ok::<_, ApiError>(())
            })?;
        }
        let mut job = Job::new(uuid, account, dc, url, Vec::new());
        job.execution = Execution::Succeeded;
        job.chain_results.push(ChainResult {
            name: STEP_REFRESH.into(),
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

    /// Copies one image: manifest (as an import), file (as a chunk diff),
    /// activation. Each part is skipped when an earlier attempt finished it.
    pub(super) fn copy_one(
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
            None => self.import_copied_manifest(uuid, job, &manifest)?,
        };
        if local.files.is_empty() {
            let file = RemoteFile::of(uuid, &manifest)?;
            match remote.chunk_source(uuid, Some(&job.account))? {
                Some(src) => self.receive_chunks(
                    uuid,
                    &file,
                    src.as_ref(),
                    progress,
                    (opts, Some(job.uuid)),
                )?,
                None => {
                    let stream = remote.file_stream(uuid, Some(&job.account))?;
                    self.receive_stream(uuid, &file, stream, progress)?;
                }
            }
        }
        let before = self.load(uuid)?.filter(|i| !i.activated);
        self.write(|t| {
            let mut img = t
                .get::<Images>(uuid)?
                .ok_or_else(ApiError::image_not_found)?;
            if !img.activated {
                img.activated = true;
                img.disabled = manifest.disabled;
                if img.published_at.is_none() {
                    img.published_at = Some(now_iso());
                }
                t.put::<Images>(uuid, &img)?;
            }
            Ok(())
        })?;
        // An attempt that fails here is undone to the unactivated image
        // and repeated; the parts above are then found done.
        self.in_bucket(uuid, before.into_iter().collect())
    }

    /// The source's manifest as a local, unactivated image that remembers
    /// where it was copied from.
    fn import_copied_manifest(
        &self,
        uuid: &Uuid,
        job: &Job,
        manifest: &Manifest,
    ) -> ApiResult<Image> {
        // Through the map rules, as any import: the source is another
        // server whose fields must pass our validation.
        let mut m = manifest.to_map();
        for k in ["state", "files", "icon"] {
            m.remove(k);
        }
        let mut img = Image::from_map(*uuid, &m)?;
        img.provenance = Some(Provenance {
            how: ProvenanceKind::Copy,
            source_uuid: *uuid,
            source_owner: img.owner,
            datacenter: job.datacenter.clone(),
            at_ms: time::now_ms(),
        });
        self.write(|t| {
            if t.get::<Images>(uuid)?.is_some() {
                return Err(ApiError::already_exists(uuid));
            }
            t.put::<Images>(uuid, &img)?;
            Ok(())
        })?;
        Ok(img)
    }

    /// The file as a chunk diff; the image holds it from the same
    /// transaction that commits it.
    fn receive_chunks(
        &self,
        uuid: &Uuid,
        file: &RemoteFile,
        src: &dyn ChunkSource,
        progress: &Progress,
        (opts, job): (&ReceiveOptions, Option<Uuid>),
    ) -> ApiResult<()> {
        let expect = Expect {
            size: file.size,
            sha1: Some(file.sha1),
        };
        transfer::receive_file_with(
            &self.store,
            src,
            uuid.as_bytes(),
            &expect,
            progress,
            opts,
            &mut |t: &mut Txn<'_>, put: &PutResult| {
                attach_file(t, uuid, file, put)?;
                if opts.check == transfer::FileCheck::Later {
                    Self::queue_check(t, uuid, &put.file_id, job)?;
                }
                Ok::<_, ApiError>(())
            },
        )?;
        // Committed by the transfer's own transaction.
        self.catalog.refresh(&self.store, &[*uuid])
    }

    /// The whole file from a plain IMGAPI, deduplicated locally.
    fn receive_stream(
        &self,
        uuid: &Uuid,
        file: &RemoteFile,
        stream: Box<dyn Read + Send>,
        progress: &Progress,
    ) -> ApiResult<()> {
        if let Some(s) = file.size {
            progress.total_bytes.fetch_add(s, Ordering::Relaxed);
            progress.bytes_to_fetch.fetch_add(s, Ordering::Relaxed);
        }
        let counted = Counted {
            inner: stream,
            progress,
        };
        let staged = self.store.put_staged(counted).map_err(|e| match e {
            // The stream broke: the source's fault, as upstream's Download.
            crate::Error::Input(_) => ApiError::new(
                Code::Download,
                format!("the file of image {uuid} broke off while it was read from the source"),
            )
            .caused_by(e),
            e => ApiError::from(e),
        })?;
        if file.size.is_some_and(|s| s != staged.size) || staged.sha1 != file.sha1 {
            return Err(ApiError::new(
                Code::Download,
                format!("file of image {uuid} does not match the source's size and sha1"),
            ));
        }
        self.write(|t| {
            let put = t.commit_put(&staged)?;
            attach_file(t, uuid, file, &put)
        })
    }
}

/// Makes the image hold `put` as its file.
fn attach_file(t: &mut Txn<'_>, uuid: &Uuid, file: &RemoteFile, put: &PutResult) -> ApiResult<()> {
    let mut md5 = [0u8; 16];
    hex::decode_to_slice(&put.md5, &mut md5)
        .map_err(|_| ApiError::internal(format!("malformed md5 {:?}", put.md5)))?;
    let mut img = t
        .get::<Images>(uuid)?
        .ok_or_else(ApiError::image_not_found)?;
    // Another job may have attached this file meanwhile (the same origin
    // in two chains): the image holds one reference, so release the one it
    // held before.
    for old in std::mem::take(&mut img.files) {
        t.unlink(&old.file_id)?;
    }
    img.files = vec![ImageFile {
        sha1: put.sha1.clone(),
        size: put.size,
        compression: file.compression.clone(),
        dataset_guid: file.dataset_guid.clone(),
        content_md5: base64_encode(&md5),
        mtime_ms: time::now_ms(),
        stor: STOR_LOCAL.into(),
        file_id: put.file_id,
    }];
    t.put::<Images>(uuid, &img)?;
    Ok(())
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
            .fetch_add(n as u64, Ordering::Relaxed);
        self.progress
            .wire_bytes
            .fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}
