//! Usage tooling (reference 9.6, RFD 113's third bullet): where an image
//! comes from, what derives from it, and what it costs in stored bytes.

use serde_json::{Value, json};
use uuid::Uuid;

use super::manifest::Image;
use super::share::MAX_ORIGIN_DEPTH;
use super::{ApiResult, Imgapi, time};

impl Imgapi {
    /// Where an image comes from, what derives from it (as far as `account`
    /// may see), and what it costs in stored bytes.
    pub fn lineage(&self, uuid: &Uuid, account: Option<&Uuid>) -> ApiResult<Value> {
        let img = self.get_visible(uuid, account)?;
        let brief = |i: &Image| json!({"uuid": i.uuid, "name": i.name, "version": i.version, "owner": i.owner, "state": i.state()});
        // The full chain up to the root, base-most first.
        let mut chain = Vec::new();
        let mut next = img.origin;
        while let Some(o) = next {
            if chain.len() > MAX_ORIGIN_DEPTH {
                break;
            }
            match self.load(&o)? {
                Some(origin) => {
                    next = origin.origin;
                    // An origin the caller may not see is there, unnamed.
                    chain.push(if Imgapi::can_see(&origin, account) {
                        brief(&origin)
                    } else {
                        json!({"hidden": true})
                    });
                }
                None if Some(o) == img.origin => {
                    chain.push(json!({"uuid": o, "missing": true}));
                    break;
                }
                None => {
                    chain.push(json!({"missing": true}));
                    break;
                }
            }
        }
        chain.reverse();
        // Everything derived from it: incremental children (transitively)
        // and clones made from it, that the caller may see.
        let all = self.all()?;
        let mut derived = Vec::new();
        let mut frontier = vec![img.uuid];
        let mut seen = std::collections::HashSet::new();
        while let Some(u) = frontier.pop() {
            for i in &all {
                let child = i.origin == Some(u);
                let cloned = i.provenance.as_ref().is_some_and(|p| p.source_uuid == u);
                if (child || cloned) && seen.insert(i.uuid) {
                    frontier.push(i.uuid);
                    if Imgapi::can_see(i, account) {
                        let mut b = brief(i);
                        let from_seen = u == img.uuid
                            || all
                                .iter()
                                .any(|x| x.uuid == u && Imgapi::can_see(x, account));
                        if let Some(o) = b.as_object_mut() {
                            if from_seen {
                                o.insert("from".into(), json!(u));
                            }
                            o.insert(
                                "relation".into(),
                                json!(if child { "incremental" } else { "clone" }),
                            );
                        }
                        derived.push(b);
                    }
                }
            }
        }
        let source = img.provenance.as_ref().map(|p| {
            json!({
                "how": p.how,
                "uuid": p.source_uuid,
                "owner": p.source_owner,
                "datacenter": p.datacenter,
                "at": time::iso8601(p.at_ms),
            })
        });
        let usage = self.usage(&img, &all, account)?;
        Ok(json!({
            "uuid": img.uuid,
            "origin_chain": chain,
            "derived": derived,
            "source": source,
            "usage": usage,
        }))
    }

    /// What an image's file costs in stored bytes, and how much of it it
    /// shares. For an account, sharing counts only images it may see, so
    /// the figures tell nothing about what others store (uploading the same
    /// bytes must not reveal that someone has them); operators get the
    /// store-wide figures.
    fn usage(&self, img: &Image, all: &[Image], account: Option<&Uuid>) -> ApiResult<Value> {
        let Some(f) = img.files.first() else {
            return Ok(
                json!({"logical_bytes": 0, "stored_bytes": 0, "unique_bytes": 0, "shared_bytes": 0}),
            );
        };
        let fid = f.file_id;
        let (size, refs, unique, shared) = match account {
            None => {
                let u = self.store().file_usage(&fid)?;
                (u.size, u.refs, u.unique_stored_bytes, u.shared_stored_bytes)
            }
            Some(_) => self.visible_usage(img, &fid, all, account)?,
        };
        let stored = unique + shared;
        // A file linked by several images (clones) shares all its bytes.
        let (unique, shared) = if refs > 1 {
            (0, stored)
        } else {
            (unique, shared)
        };
        Ok(json!({
            "logical_bytes": size,
            "stored_bytes": stored,
            "unique_bytes": unique,
            "shared_bytes": shared,
            "file_references": refs,
        }))
    }

    /// Size, references by visible images, and stored bytes unique to the
    /// file or shared with files of other visible images.
    fn visible_usage(
        &self,
        img: &Image,
        fid: &crate::id::FileId,
        all: &[Image],
        account: Option<&Uuid>,
    ) -> ApiResult<(u64, u64, u64, u64)> {
        let list = self.store().chunk_list(fid)?;
        let mut mine: std::collections::HashMap<crate::id::ChunkId, u64> = list
            .entries
            .iter()
            .map(|e| (e.id, u64::from(e.record_len)))
            .collect();
        let mut refs = 1u64;
        let mut others = std::collections::HashSet::new();
        for other in all
            .iter()
            .filter(|o| o.uuid != img.uuid && Imgapi::can_see(*o, account))
        {
            for f in &other.files {
                if f.file_id == *fid {
                    refs += 1;
                } else {
                    others.insert(f.file_id);
                }
            }
        }
        let mut shared = 0u64;
        for other in others {
            for r in self.store().chunks(&other)? {
                if let Some(stored) = mine.remove(&r.id) {
                    shared += stored;
                }
            }
        }
        let unique = mine.values().sum();
        Ok((list.size, refs, unique, shared))
    }
}
