//! Copied files checked after their copy. A copy from another datacenter
//! ([`FileCheck::Later`](crate::transfer::FileCheck)) commits the file
//! once every fetched chunk is checked against its id and the source's
//! chunk list agrees with the manifest: it costs what crosses the link. The
//! file's BLAKE3 (its id), SHA-1 and MD5 over every byte are checked
//! afterwards, off the copy's critical path, from a queue in the store that
//! survives restarts (the `check-copies` chore drains it, oldest first).
//! A file that is not what it claims disables every image holding it,
//! fails its copy job with the reason, and is reported (an ERROR line,
//! `/metrics`); nothing of it is served as good once found.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::jobs::{ChainResult, Execution, now_iso};
use super::{ApiResult, FileChecks, Images, Imgapi, base64_encode};
use crate::id::FileId;
use crate::store::Txn;

/// A copied image whose file waits for its check.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingCheck {
    /// The file the copy committed.
    pub file_id: FileId,
    /// The copy job that brought it.
    pub job: Option<Uuid>,
    pub queued_at: String,
}

/// What checking one copied file found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checked {
    /// Every digest matches.
    Sound(Uuid),
    /// The image is gone or holds another file now: nothing to check.
    Moot(Uuid),
    /// A digest differs: the images holding the file are disabled.
    Damaged { image: Uuid, why: String },
}

/// The check step of a copy job that a failed check adds.
const STEP_CHECK: &str = "check_file";

impl Imgapi {
    /// Queues image `image`'s file `file` for its check, in the
    /// transaction that commits it.
    pub(super) fn queue_check(
        t: &mut Txn<'_>,
        image: &Uuid,
        file: &FileId,
        job: Option<Uuid>,
    ) -> crate::Result<()> {
        let check = PendingCheck {
            file_id: *file,
            job,
            queued_at: now_iso(),
        };
        t.put::<FileChecks>(image, &check)
    }

    /// Copied files waiting for their check.
    pub fn checks_waiting(&self) -> ApiResult<u64> {
        Ok(self.store.scan_all::<FileChecks>(&[])?.len() as u64)
    }

    /// Checks up to `n` waiting copied files, oldest first. A check that
    /// cannot run (the store failed to read) stays queued and is the error.
    pub fn check_copies(&self, n: usize) -> ApiResult<Vec<Checked>> {
        let mut waiting = self.store.scan_all::<FileChecks>(&[])?;
        waiting.sort_by(|a, b| a.1.queued_at.cmp(&b.1.queued_at));
        let mut out = Vec::new();
        for (key, check) in waiting.into_iter().take(n) {
            let Ok(image) = Uuid::from_slice(&key) else {
                continue;
            };
            out.push(self.check_one(&image, &check)?);
        }
        Ok(out)
    }

    fn check_one(&self, image: &Uuid, check: &PendingCheck) -> ApiResult<Checked> {
        let holds = self
            .load(image)?
            .and_then(|img| img.files.into_iter().find(|f| f.file_id == check.file_id));
        let Some(f) = holds else {
            self.store.transaction(|t| t.delete::<FileChecks>(image))?;
            return Ok(Checked::Moot(*image));
        };
        let id = check.file_id;
        let d = self.store.file_digests(&id)?;
        let mut wrong = Vec::new();
        if d.blake3 != id.0 {
            wrong.push("its bytes do not hash to its id");
        }
        if d.size != f.size {
            wrong.push("its size differs");
        }
        if hex::encode(d.sha1) != f.sha1 {
            wrong.push("its SHA-1 differs from the manifest's");
        }
        if base64_encode(&d.md5) != f.content_md5 {
            wrong.push("its MD5 differs from the source's");
        }
        if wrong.is_empty() {
            self.store.transaction(|t| t.delete::<FileChecks>(image))?;
            return Ok(Checked::Sound(*image));
        }
        let why = format!(
            "the file copied into image {image} is not what the source said: {}",
            wrong.join(", ")
        );
        self.disable_holders(&check.file_id, &why, image, check.job)?;
        Ok(Checked::Damaged { image: *image, why })
    }

    /// Disables every image holding `file`, fails the copy job `job` with
    /// `why`, and drops the check: in one transaction.
    fn disable_holders(
        &self,
        file: &FileId,
        why: &str,
        image: &Uuid,
        job: Option<Uuid>,
    ) -> ApiResult<()> {
        let holders: Vec<Uuid> = self
            .all()?
            .into_iter()
            .filter(|i| i.files.iter().any(|f| f.file_id == *file))
            .map(|i| i.uuid)
            .collect();
        let job = match job {
            Some(j) => self.job(&j)?,
            None => None,
        };
        self.write(|t| {
            for uuid in &holders {
                if let Some(mut img) = t.get::<Images>(uuid)? {
                    img.disabled = true;
                    t.put::<Images>(uuid, &img)?;
                }
            }
            if let Some(mut j) = job {
                let now = now_iso();
                j.execution = Execution::Failed;
                j.chain_results.push(ChainResult {
                    name: STEP_CHECK.into(),
                    result: "failed".into(),
                    error: Some(serde_json::json!({"name": "Download", "message": why})),
                    started_at: now.clone(),
                    finished_at: now,
                });
                t.put::<super::Jobs>(&j.uuid, &j)?;
            }
            t.delete::<FileChecks>(image)?;
            Ok(())
        })
    }
}
