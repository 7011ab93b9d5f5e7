//! Usage tooling (reference 9.6, RFD 113's third bullet): where an image
//! comes from, what derives from it, and what it costs in stored bytes.

use serde_json::{Value, json};
use uuid::Uuid;

use super::manifest::Image;
use super::share::MAX_ORIGIN_DEPTH;
use super::{ApiResult, Imgapi, file_id, time};

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
                    chain.push(if Imgapi::can_see(&origin, account) {
                        brief(&origin)
                    } else {
                        json!({"uuid": origin.uuid})
                    });
                }
                None => {
                    chain.push(json!({"uuid": o, "missing": true}));
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
                        if let Some(o) = b.as_object_mut() {
                            o.insert("from".into(), json!(u));
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
        let mut usage =
            json!({"logical_bytes": 0, "stored_bytes": 0, "unique_bytes": 0, "shared_bytes": 0});
        if let Some(f) = img.files.first() {
            let u = self.store().file_usage(&file_id(&f.file_id)?)?;
            let stored = u.unique_stored_bytes + u.shared_stored_bytes;
            // A file linked by several images (clones) shares all its bytes.
            let (unique, shared) = if u.refs > 1 {
                (0, stored)
            } else {
                (u.unique_stored_bytes, u.shared_stored_bytes)
            };
            usage = json!({
                "logical_bytes": u.size,
                "stored_bytes": stored,
                "unique_bytes": unique,
                "shared_bytes": shared,
                "file_references": u.refs,
            });
        }
        Ok(json!({
            "uuid": img.uuid,
            "origin_chain": chain,
            "derived": derived,
            "source": source,
            "usage": usage,
        }))
    }
}
