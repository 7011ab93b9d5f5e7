//! A copy job's whole life, in one place: created by ImportFromDatacenter
//! (or found again: attach, resume), run on its own thread, saved at each
//! step, shown in WFAPI's shape with live byte progress, and run again when
//! a restart interrupted it.
//!
//! ```text
//! import_from_datacenter ──▶ queued ──▶ running ──▶ succeeded
//!            │  (attach: the running job)   │
//!            │  (refresh: succeeded at once) └─▶ failed ──▶ (a new request resumes it)
//! daemon start: every queued or running job runs again
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::remote::{Remote, RemoteFactory};
use super::{ApiError, ApiResult, Imgapi, Jobs, time};
use crate::transfer::{Progress, ProgressReport, ReceiveOptions};

/// WFAPI's `execution` of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Execution {
    Queued,
    Running,
    Succeeded,
    Failed,
    Canceled,
}

impl Execution {
    pub const fn as_str(self) -> &'static str {
        match self {
            Execution::Queued => "queued",
            Execution::Running => "running",
            Execution::Succeeded => "succeeded",
            Execution::Failed => "failed",
            Execution::Canceled => "canceled",
        }
    }

    /// True once the job will not change any more (by itself).
    pub const fn is_final(self) -> bool {
        matches!(
            self,
            Execution::Succeeded | Execution::Failed | Execution::Canceled
        )
    }
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

impl Job {
    /// Why a job that did not succeed failed, as the error its failed step
    /// recorded ([`failed_step`]); None for a job that succeeded or runs.
    pub fn error(&self) -> Option<ApiError> {
        if self.execution == Execution::Succeeded || !self.execution.is_final() {
            return None;
        }
        let recorded = self
            .chain_results
            .iter()
            .rev()
            .find_map(|c| c.error.as_ref());
        let text = |k: &str| recorded.and_then(|e| e.get(k)).and_then(Value::as_str);
        let message = text("message").map_or_else(
            || format!("copy job {} {}", self.uuid, self.execution.as_str()),
            str::to_string,
        );
        // A code we know keeps its own status; another is a 500.
        let code = text("name").unwrap_or(super::Code::InternalError.as_str());
        Some(ApiError::passthrough(500, code, message))
    }
}

/// A job as `GET /jobs/:uuid` shows it: WFAPI's shape, with byte progress.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct JobView {
    pub uuid: Uuid,
    pub name: String,
    pub execution: Execution,
    pub params: JobParams,
    pub chain_results: Vec<ChainResult>,
    pub created_at: String,
    /// Not WFAPI's: absent from a plain workflow API.
    #[serde(default)]
    pub progress: JobProgress,
}

impl JobView {
    /// Why the job failed, as its last step recorded it.
    pub fn last_error_message(&self) -> Option<&str> {
        self.chain_results
            .last()
            .and_then(|r| r.error.as_ref())
            .and_then(|e| e.get("message"))
            .and_then(Value::as_str)
    }
}

/// A copy job's `params`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobParams {
    pub image_uuid: Uuid,
    pub account: Uuid,
    pub datacenter: String,
    pub source: String,
    pub origins: Vec<Uuid>,
    /// WFAPI's lock target, `/import-remote-UUID`.
    pub target: String,
}

/// A job's bytes so far, and the rate since it (last) started.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct JobProgress {
    #[serde(flatten)]
    pub report: ProgressReport,
    pub rate_bytes_per_s: u64,
    pub elapsed_ms: u64,
}

/// WFAPI's name of the job, and of its steps.
pub const JOB_NAME: &str = "import-remote-image";
const STEP_ORIGIN: &str = "origin_import_images";
const STEP_IMAGE: &str = "import_image";
pub const STEP_REFRESH: &str = "refresh_image";

/// A copy job, stored in its own table.
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
    pub execution: Execution,
    pub chain_results: Vec<ChainResult>,
    pub created_at: String,
    /// The progress when last saved (live while running).
    pub progress: ProgressReport,
    #[serde(default)]
    pub elapsed_ms: u64,
}

impl Job {
    pub(super) fn new(uuid: &Uuid, account: &Uuid, dc: &str, url: &str, origins: Vec<Uuid>) -> Job {
        Job {
            uuid: Uuid::new_v4(),
            name: JOB_NAME.into(),
            image_uuid: *uuid,
            account: *account,
            datacenter: dc.into(),
            source: url.into(),
            origins,
            execution: Execution::Queued,
            chain_results: Vec::new(),
            created_at: now_iso(),
            progress: ProgressReport::default(),
            elapsed_ms: 0,
        }
    }
}

pub(super) fn now_iso() -> String {
    time::iso8601(time::now_ms())
}

/// What a job tells the daemon as it goes (the daemon logs it).
pub enum JobEvent<'a> {
    Started(&'a Job),
    Ended(&'a Job),
}

/// How this service reaches other datacenters, and how it copies.
#[derive(Clone)]
pub struct Copies {
    pub remotes: Arc<dyn RemoteFactory>,
    pub receive: ReceiveOptions,
    pub events: Arc<dyn Fn(&JobEvent<'_>) + Send + Sync>,
}

/// Jobs running in this process now.
pub(super) struct CopyJobs {
    copies: Copies,
    running: Mutex<HashMap<Uuid, Arc<Running>>>,
}

struct Running {
    progress: Progress,
    started: Instant,
    /// Elapsed time of earlier attempts (a resumed job).
    before_ms: u64,
}

impl CopyJobs {
    pub(super) fn new(copies: Copies) -> Self {
        Self {
            copies,
            running: Mutex::new(HashMap::new()),
        }
    }

    /// A client for the IMGAPI at `url`.
    pub(super) fn remote(&self, url: &str) -> ApiResult<Box<dyn Remote>> {
        self.copies.remotes.remote(url)
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<Running>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn is_running(&self, job: &Uuid) -> bool {
        self.running().contains_key(job)
    }

    fn live(&self, job: &Uuid) -> Option<Arc<Running>> {
        self.running().get(job).cloned()
    }
}

/// What ImportFromDatacenter decided.
pub(super) enum Decision {
    /// Start (or resume) this job.
    Run(Job),
    /// A job already running (attach) or one that finished at once (refresh).
    Done(Job),
}

impl Imgapi {
    pub(super) fn save_job(&self, job: &Job) -> ApiResult<()> {
        self.store.transaction(|t| t.put::<Jobs>(&job.uuid, job))?;
        Ok(())
    }

    /// A job by uuid.
    pub fn job(&self, uuid: &Uuid) -> ApiResult<Option<Job>> {
        Ok(self.store.get::<Jobs>(uuid)?)
    }

    fn all_jobs(&self) -> ApiResult<Vec<Job>> {
        Ok(self
            .store
            .scan_all::<Jobs>(&[])?
            .into_iter()
            .map(|(_, j)| j)
            .collect())
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

    /// The image's job that runs in this process now, if any.
    pub(super) fn running_job_of(&self, jobs: &[Job]) -> Option<Job> {
        jobs.iter()
            .rev()
            .find(|j| self.jobs.is_running(&j.uuid))
            .cloned()
    }

    /// A job in WFAPI's shape, with live progress while it runs.
    pub fn job_view(&self, job: &Job) -> JobView {
        let (progress, elapsed_ms) = match self.jobs.live(&job.uuid) {
            Some(r) => (
                r.progress.report(),
                r.before_ms + r.started.elapsed().as_millis() as u64,
            ),
            None => (job.progress.clone(), job.elapsed_ms),
        };
        let rate = (progress.bytes_fetched * 1000)
            .checked_div(elapsed_ms)
            .unwrap_or(0);
        JobView {
            uuid: job.uuid,
            name: job.name.clone(),
            execution: job.execution,
            params: JobParams {
                image_uuid: job.image_uuid,
                account: job.account,
                datacenter: job.datacenter.clone(),
                source: job.source.clone(),
                origins: job.origins.clone(),
                target: format!("/import-remote-{}", job.image_uuid),
            },
            chain_results: job.chain_results.clone(),
            created_at: job.created_at.clone(),
            progress: JobProgress {
                report: progress,
                rate_bytes_per_s: rate,
                elapsed_ms,
            },
        }
    }

    /// ImportFromDatacenter: checks, then the job that copies (a new one,
    /// a resumed one, the running one, or a finished refresh).
    pub fn import_from_datacenter(
        &self,
        uuid: &Uuid,
        account: Option<&Uuid>,
        datacenter: Option<&str>,
    ) -> ApiResult<Job> {
        match self.decide_import(uuid, account, datacenter)? {
            Decision::Run(job) => {
                self.start_job(job.clone());
                Ok(job)
            }
            Decision::Done(job) => Ok(job),
        }
    }

    /// Runs every job a restart interrupted (daemon start).
    pub fn resume_jobs(&self) -> ApiResult<usize> {
        let jobs: Vec<Job> = self
            .all_jobs()?
            .into_iter()
            .filter(|j| !j.execution.is_final())
            .collect();
        let n = jobs.len();
        for job in jobs {
            self.start_job(job);
        }
        Ok(n)
    }

    /// Runs `job` on its own thread.
    fn start_job(&self, job: Job) {
        let api = self.clone();
        std::thread::spawn(move || api.run_job(job));
    }

    /// Runs a copy job to its end on this thread, saving it as it goes.
    pub fn run_job(&self, mut job: Job) {
        let running = Arc::new(Running {
            progress: Progress::default(),
            started: Instant::now(),
            before_ms: job.elapsed_ms,
        });
        {
            let mut map = self.jobs.running();
            if map.contains_key(&job.uuid) {
                return; // already running here
            }
            map.insert(job.uuid, Arc::clone(&running));
        }
        (self.jobs.copies.events)(&JobEvent::Started(&job));
        job.execution = Execution::Running;
        let _ = self.save_job(&job);
        let ok = match self.jobs.remote(&job.source) {
            Ok(remote) => self.run_steps(&mut job, remote.as_ref(), &running.progress),
            Err(e) => {
                job.chain_results
                    .push(failed_step(STEP_IMAGE, &job.image_uuid, &e));
                false
            }
        };
        if !ok {
            self.release_deleted(&job);
        }
        job.execution = if ok {
            Execution::Succeeded
        } else {
            Execution::Failed
        };
        job.progress = running.progress.report();
        job.elapsed_ms = running.before_ms + running.started.elapsed().as_millis() as u64;
        let _ = self.save_job(&job);
        self.jobs.running().remove(&job.uuid);
        (self.jobs.copies.events)(&JobEvent::Ended(&job));
    }

    /// A failed job keeps what it received for a resume, unless its image
    /// was deleted meanwhile: then no resume will come, and the chunks the
    /// transfer held after the delete released them are released now.
    fn release_deleted(&self, job: &Job) {
        for uuid in job.origins.iter().chain(std::iter::once(&job.image_uuid)) {
            if matches!(self.load(uuid), Ok(None)) {
                let _ = self
                    .store
                    .transaction(|t| t.release_partial(uuid.as_bytes()));
            }
        }
    }

    /// The owned origins base-most first, then the image; stops at the
    /// first failure. Returns whether every step succeeded.
    fn run_steps(&self, job: &mut Job, remote: &dyn Remote, progress: &Progress) -> bool {
        let mut steps: Vec<(Uuid, &str)> = job.origins.iter().map(|o| (*o, STEP_ORIGIN)).collect();
        steps.push((job.image_uuid, STEP_IMAGE));
        for (img, name) in steps {
            let started = now_iso();
            let r = self.copy_one(&img, job, remote, progress, &self.jobs.copies.receive);
            match r {
                Ok(()) => job.chain_results.push(ChainResult {
                    name: name.into(),
                    result: format!("copied image {img}"),
                    error: None,
                    started_at: started,
                    finished_at: now_iso(),
                }),
                Err(e) => {
                    let mut cr = failed_step(name, &img, &e);
                    cr.started_at = started;
                    job.chain_results.push(cr);
                    return false;
                }
            }
        }
        true
    }
}

fn failed_step(name: &str, img: &Uuid, e: &ApiError) -> ChainResult {
    let now = now_iso();
    ChainResult {
        name: name.into(),
        result: "failed".into(),
        error: Some(
            json!({"name": e.wire_code(), "message": format!("copy of image {img}: {}", e.message)}),
        ),
        started_at: now.clone(),
        finished_at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape the route built by hand before it had a type, key for key.
    #[test]
    fn a_job_view_serialises_as_the_route_always_answered() {
        let (job, image, account) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let report = ProgressReport {
            bytes_to_fetch: 100,
            bytes_fetched: 40,
            ..ProgressReport::default()
        };
        let step = ChainResult {
            name: STEP_IMAGE.into(),
            result: "failed".into(),
            error: Some(json!({"name": "Download", "message": "gone"})),
            started_at: "2026-01-01T00:00:00.000Z".into(),
            finished_at: "2026-01-01T00:00:01.000Z".into(),
        };
        let view = JobView {
            uuid: job,
            name: JOB_NAME.into(),
            execution: Execution::Failed,
            params: JobParams {
                image_uuid: image,
                account,
                datacenter: "east".into(),
                source: "http://east".into(),
                origins: vec![Uuid::from_u128(4)],
                target: format!("/import-remote-{image}"),
            },
            chain_results: vec![step.clone()],
            created_at: "2026-01-01T00:00:00.000Z".into(),
            progress: JobProgress {
                report: report.clone(),
                rate_bytes_per_s: 20,
                elapsed_ms: 2000,
            },
        };
        let mut p = serde_json::to_value(&report).unwrap_or_else(|e| panic!("{e}"));
        if let Some(o) = p.as_object_mut() {
            o.insert("rate_bytes_per_s".into(), json!(20));
            o.insert("elapsed_ms".into(), json!(2000));
        }
        let expected = json!({
            "uuid": job,
            "name": JOB_NAME,
            "execution": "failed",
            "params": {
                "image_uuid": image,
                "account": account,
                "datacenter": "east",
                "source": "http://east",
                "origins": [Uuid::from_u128(4)],
                "target": format!("/import-remote-{image}"),
            },
            "chain_results": [step],
            "created_at": "2026-01-01T00:00:00.000Z",
            "progress": p,
        });
        let text = serde_json::to_string_pretty(&view).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            text,
            serde_json::to_string_pretty(&expected).unwrap_or_else(|e| panic!("{e}"))
        );
        let back: JobView = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, view);
        assert_eq!(back.last_error_message(), Some("gone"));
    }
}
