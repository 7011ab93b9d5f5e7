//! Usage tooling (reference 9.6, RFD 113's third bullet): where an image
//! comes from, what derives from it, and what it costs in stored bytes.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::manifest::{Image, ImageState, ProvenanceKind};
use super::share::MAX_ORIGIN_DEPTH;
use super::{ApiResult, Imgapi, time};

/// `GET /images/:uuid/lineage` (not part of the manifest: a real IMGAPI
/// importing from us would refuse the extra fields).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Lineage {
    pub uuid: Uuid,
    /// Base-most first.
    pub origin_chain: Vec<LineageImage>,
    pub derived: Vec<Derived>,
    /// Where it was cloned or copied from (`null` for neither).
    pub source: Option<LineageSource>,
    pub usage: Usage,
}

/// An image of a lineage: named, or only said to be there (`hidden`: the
/// caller may not see it) or gone (`missing`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LineageImage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ImageState>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub hidden: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub missing: bool,
}

impl LineageImage {
    fn of(i: &Image) -> Self {
        LineageImage {
            uuid: Some(i.uuid),
            name: Some(i.name.clone()),
            version: Some(i.version.clone()),
            owner: Some(i.owner),
            state: Some(i.state()),
            ..LineageImage::default()
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// An image derived from this one, and how.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Derived {
    #[serde(flatten)]
    pub image: LineageImage,
    /// The image it derives from, when the caller may see that one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Uuid>,
    pub relation: Relation,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Relation {
    /// Its origin (transitively).
    Incremental,
    Clone,
}

impl Relation {
    pub const fn as_str(self) -> &'static str {
        match self {
            Relation::Incremental => "incremental",
            Relation::Clone => "clone",
        }
    }
}

/// Where an image was cloned or copied from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LineageSource {
    pub how: ProvenanceKind,
    pub uuid: Uuid,
    pub owner: Uuid,
    pub datacenter: String,
    pub at: String,
}

/// What an image's file costs.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Usage {
    pub logical_bytes: u64,
    pub stored_bytes: u64,
    pub unique_bytes: u64,
    pub shared_bytes: u64,
    /// Absent for an image without a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_references: Option<u64>,
}

impl Imgapi {
    /// Where an image comes from, what derives from it (as far as `account`
    /// may see), and what it costs in stored bytes.
    pub fn lineage(&self, uuid: &Uuid, account: Option<&Uuid>) -> ApiResult<Lineage> {
        let img = self.get_visible(uuid, account)?;
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
                        LineageImage::of(&origin)
                    } else {
                        LineageImage {
                            hidden: true,
                            ..LineageImage::default()
                        }
                    });
                }
                None if Some(o) == img.origin => {
                    chain.push(LineageImage {
                        uuid: Some(o),
                        missing: true,
                        ..LineageImage::default()
                    });
                    break;
                }
                None => {
                    chain.push(LineageImage {
                        missing: true,
                        ..LineageImage::default()
                    });
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
                // A clone derives from its source; a copy from another
                // datacenter keeps its source's uuid, so it is that image
                // here, never something derived from it (nor from itself).
                let cloned = i.uuid != u
                    && i.provenance
                        .as_ref()
                        .is_some_and(|p| p.how == ProvenanceKind::Clone && p.source_uuid == u);
                if (child || cloned) && seen.insert(i.uuid) {
                    frontier.push(i.uuid);
                    if Imgapi::can_see(i, account) {
                        let from_seen = u == img.uuid
                            || all
                                .iter()
                                .any(|x| x.uuid == u && Imgapi::can_see(x, account));
                        derived.push(Derived {
                            image: LineageImage::of(i),
                            from: from_seen.then_some(u),
                            relation: if child {
                                Relation::Incremental
                            } else {
                                Relation::Clone
                            },
                        });
                    }
                }
            }
        }
        let source = img.provenance.as_ref().map(|p| LineageSource {
            how: p.how,
            uuid: p.source_uuid,
            owner: p.source_owner,
            datacenter: p.datacenter.clone(),
            at: time::iso8601(p.at_ms),
        });
        let usage = self.usage(&img, &all, account)?;
        Ok(Lineage {
            uuid: img.uuid,
            origin_chain: chain,
            derived,
            source,
            usage,
        })
    }

    /// What an image's file costs in stored bytes, and how much of it it
    /// shares. For an account, sharing counts only images it may see, so
    /// the figures tell nothing about what others store (uploading the same
    /// bytes must not reveal that someone has them); operators get the
    /// store-wide figures.
    fn usage(&self, img: &Image, all: &[Image], account: Option<&Uuid>) -> ApiResult<Usage> {
        let Some(f) = img.files.first() else {
            return Ok(Usage::default());
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
        Ok(Usage {
            logical_bytes: size,
            stored_bytes: stored,
            unique_bytes: unique,
            shared_bytes: shared,
            file_references: Some(refs),
        })
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn named(n: u128, state: ImageState) -> LineageImage {
        LineageImage {
            uuid: Some(Uuid::from_u128(n)),
            name: Some(format!("img{n}")),
            version: Some("1.0".into()),
            owner: Some(Uuid::from_u128(9)),
            state: Some(state),
            ..LineageImage::default()
        }
    }

    /// The shape the route built by hand before it had a type, key for key.
    #[test]
    fn a_lineage_serialises_as_the_route_always_answered() {
        let u = Uuid::from_u128;
        let l = Lineage {
            uuid: u(1),
            origin_chain: vec![
                LineageImage {
                    missing: true,
                    ..LineageImage::default()
                },
                LineageImage {
                    hidden: true,
                    ..LineageImage::default()
                },
                named(2, ImageState::Active),
            ],
            derived: vec![
                Derived {
                    image: named(3, ImageState::Unactivated),
                    from: Some(u(1)),
                    relation: Relation::Clone,
                },
                Derived {
                    image: named(4, ImageState::Active),
                    from: None,
                    relation: Relation::Incremental,
                },
            ],
            source: Some(LineageSource {
                how: ProvenanceKind::Copy,
                uuid: u(5),
                owner: u(9),
                datacenter: "east".into(),
                at: "2026-01-01T00:00:00.000Z".into(),
            }),
            usage: Usage {
                logical_bytes: 10,
                stored_bytes: 4,
                unique_bytes: 0,
                shared_bytes: 4,
                file_references: Some(2),
            },
        };
        let brief = |n: u128, state: &str| json!({"uuid": u(n), "name": format!("img{n}"), "version": "1.0", "owner": u(9), "state": state});
        let mut clone = brief(3, "unactivated");
        let mut child = brief(4, "active");
        if let (Some(c), Some(d)) = (clone.as_object_mut(), child.as_object_mut()) {
            c.insert("from".into(), json!(u(1)));
            c.insert("relation".into(), json!("clone"));
            d.insert("relation".into(), json!("incremental"));
        }
        let expected = json!({
            "uuid": u(1),
            "origin_chain": [{"missing": true}, {"hidden": true}, brief(2, "active")],
            "derived": [clone, child],
            "source": {"how": "copy", "uuid": u(5), "owner": u(9), "datacenter": "east",
                "at": "2026-01-01T00:00:00.000Z"},
            "usage": {"logical_bytes": 10, "stored_bytes": 4, "unique_bytes": 0,
                "shared_bytes": 4, "file_references": 2},
        });
        let text = serde_json::to_string_pretty(&l).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            text,
            serde_json::to_string_pretty(&expected).unwrap_or_else(|e| panic!("{e}"))
        );
        let back: Lineage = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, l);
    }

    #[test]
    fn an_image_without_a_file_costs_nothing_and_names_no_references() {
        let text = serde_json::to_string(&Usage::default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            text,
            r#"{"logical_bytes":0,"stored_bytes":0,"unique_bytes":0,"shared_bytes":0}"#
        );
    }
}
