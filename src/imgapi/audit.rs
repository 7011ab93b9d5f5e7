//! The audit of references: every reference the engine holds must be
//! explained by this layer's records, and every reference a record names
//! must exist. An image holds one reference on each of its files and on
//! its icon (a clone holds its own); an unfinished copy into an image
//! holds chunk references under the image's uuid until it completes or the
//! image is deleted. What no image explains is a leak (space GC can never
//! free); what an image names but the engine lacks is a lost file.
//!
//! `POST /state?action=verify` and `imgstore store verify` (on a daemon's
//! data dir) add these problems to the engine's own checks.

use std::collections::HashMap;

use uuid::Uuid;

use super::{ApiResult, Dependents, Images};
use crate::id::FileId;
use crate::store::{Problem, Store};

/// True for a data dir a daemon has served (its origin index was built),
/// where every reference belongs to an image.
pub fn is_imgapi_store(store: &Store) -> crate::Result<bool> {
    Ok(store.get::<Dependents>(Dependents::BUILT)?.is_some())
}

fn problem(kind: &'static str, detail: String) -> Problem {
    Problem {
        kind: kind.into(),
        detail,
        repairable: false,
        repaired: false,
    }
}

/// Problems of references between images and the engine, read under the
/// commit lock (a consistent view; writers wait meanwhile).
pub fn audit(store: &Store) -> ApiResult<Vec<Problem>> {
    store.transaction(|t| {
        let mut held: HashMap<FileId, (u64, Vec<Uuid>)> = HashMap::new();
        let mut images = HashMap::new();
        for (_, img) in t.scan_all::<Images>(&[])? {
            let ids = img.files.iter().map(|f| f.file_id);
            for id in ids.chain(img.icon.iter().map(|i| i.file_id)) {
                let h = held.entry(id).or_default();
                h.0 += 1;
                h.1.push(img.uuid);
            }
            images.insert(img.uuid, img.files.is_empty());
        }
        let mut out = Vec::new();
        for (id, refs) in t.committed_files()? {
            let by_images = held.remove(&id).map_or(0, |h| h.0);
            if by_images != refs {
                out.push(problem(
                    "unexplained_references",
                    format!("file {id} has {refs} references; images hold {by_images}"),
                ));
            }
        }
        for (id, (n, who)) in held {
            let names: Vec<String> = who.iter().take(5).map(Uuid::to_string).collect();
            out.push(problem(
                "missing_file",
                format!(
                    "file {id} is not stored but {n} image(s) name it: {}",
                    names.join(", ")
                ),
            ));
        }
        for (p, n) in t.committed_partials()? {
            let uuid = Uuid::from_bytes(p);
            match images.get(&uuid) {
                // A copy into an image without its file yet: held for
                // the copy's resumption.
                Some(true) => {}
                Some(false) => out.push(problem(
                    "orphan_transfer",
                    format!("a finished copy into image {uuid} still holds {n} chunk references"),
                )),
                None => out.push(problem(
                    "orphan_transfer",
                    format!(
                        "a copy into image {uuid}, which does not exist, holds {n} chunk references"
                    ),
                )),
            }
        }
        Ok(out)
    })
}
