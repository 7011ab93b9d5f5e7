//! Sharing beyond the ACL (RFD 113 M2 and its security section): cloning a
//! shared image and its origin chain into one's own account, and trusted
//! sharers.
//!
//! A clone is metadata only: every clone's file is one more reference to the
//! same stored content, so a clone costs the same at 10 MiB as at 100 GiB.
//! The whole chain commits in one transaction: after any failure or crash
//! either every clone exists or none does.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::catalog::Facts;
use super::manifest::{Image, Provenance, ProvenanceKind};
use super::{ApiError, ApiResult, Code, FieldError, Images, Imgapi, Mode, Settings, time};

/// Deepest origin chain a clone walks (as upstream's `MAX_ORIGIN_DEPTH`).
pub const MAX_ORIGIN_DEPTH: usize = 100;

/// An origin of a clone and the caller's clone of it.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct OriginClone {
    pub source: Uuid,
    pub clone: Uuid,
}

/// What CloneImage did with the origin chain (the
/// `x-imgstore-clone-origins` header of its answer, as JSON).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CloneReport {
    /// Origins cloned along, base-most first.
    pub cloned: Vec<OriginClone>,
    /// Origins the caller's earlier clones stand in for.
    pub reused: Vec<OriginClone>,
    /// Why an earlier clone of an origin could not serve.
    pub not_reused: Vec<String>,
}

/// An account's settings.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccountSettings {
    /// Accounts whose shared images this account may provision from.
    #[serde(default)]
    pub image_share_trusted_accounts: Vec<Uuid>,
}

impl Imgapi {
    /// The origins of `img` up to and including the first operator-owned
    /// one (the base), base-most first. Errors past [`MAX_ORIGIN_DEPTH`].
    pub(super) fn origin_chain(&self, img: &Image) -> ApiResult<(Vec<Image>, Option<Image>)> {
        let mut chain: Vec<Image> = Vec::new();
        let mut next = img.origin;
        while let Some(o) = next {
            if chain.len() >= MAX_ORIGIN_DEPTH {
                return Err(ApiError::internal(format!(
                    "origin chain of image {} is deeper than {MAX_ORIGIN_DEPTH}",
                    img.uuid
                )));
            }
            let origin = self.load(&o)?.ok_or_else(|| {
                ApiError::internal(format!("origin image {o} of the chain does not exist"))
            })?;
            if self.is_operator_owned(&origin) {
                chain.reverse();
                return Ok((chain, Some(origin)));
            }
            next = origin.origin;
            chain.push(origin);
        }
        chain.reverse();
        Ok((chain, None))
    }

    /// CloneImage: clones `uuid` and its non-operator origin chain into
    /// `account`, reusing the caller's earlier clones of origins where they
    /// can serve. Returns the final clone (the one for `uuid`) and what
    /// happened to each origin.
    pub fn clone_image(
        &self,
        uuid: &Uuid,
        account: Option<&Uuid>,
    ) -> ApiResult<(Image, CloneReport)> {
        let (clone, report) = self.clone_here(uuid, account)?;
        if let Err(e) = self.in_bucket(&clone.uuid, Vec::new()) {
            // Not in the bucket: not done. The clones made go again,
            // base-most last (each names the one before as origin).
            let made = report
                .cloned
                .iter()
                .map(|c| c.clone)
                .chain(std::iter::once(clone.uuid));
            for c in made.collect::<Vec<_>>().iter().rev() {
                if let Err(undo) = self.delete(c, None) {
                    let mut e = e;
                    e.message = format!("{} (undoing clone {c}: {})", e.message, undo.message);
                    return Err(e);
                }
            }
            return Err(e);
        }
        Ok((clone, report))
    }

    /// The checks CloneImage makes of the image and the caller.
    fn clonable(&self, uuid: &Uuid, account: Option<&Uuid>) -> ApiResult<(Image, Uuid)> {
        if self.config().mode != Mode::Dc {
            return Err(ApiError::no_such_path(&format!("/images/{uuid}/clone")));
        }
        let Some(account) = account else {
            return Err(
                ApiError::new(Code::InvalidParameter, "\"account\" is required to clone")
                    .with_errors(vec![FieldError::missing("account")]),
            );
        };
        let img = self.get_visible(uuid, Some(account))?;
        if !img.activated {
            return Err(ApiError::validation(
                format!("image {uuid} is not activated"),
                vec![FieldError::invalid(
                    "active",
                    "only activated images can be cloned",
                )],
            ));
        }
        if !img.acl.contains(account) {
            return Err(ApiError::new(
                Code::ImageNotShared,
                format!("image {uuid} is not shared with account {account}"),
            ));
        }
        if img.type_ == "docker" {
            return Err(ApiError::validation(
                "docker images cannot be cloned",
                vec![FieldError::invalid(
                    "type",
                    "docker images cannot be cloned",
                )],
            ));
        }
        if img.files.len() != 1 {
            return Err(ApiError::new(
                Code::NotImplemented,
                format!(
                    "cloning an image with {} files is not supported",
                    img.files.len()
                ),
            ));
        }
        Ok((img, *account))
    }

    /// The clone chain made here: the final clone, and what became of each
    /// origin (cloned, or served by an earlier clone).
    fn clone_here(&self, uuid: &Uuid, account: Option<&Uuid>) -> ApiResult<(Image, CloneReport)> {
        let (img, account, origins, base, reuse, not_reused) = self.clone_checks(uuid, account)?;
        let now = time::now_ms();
        let published = time::iso8601(now);
        let dc = self.config().datacenter_name.clone();
        let sources: Vec<Image> = origins.into_iter().chain(std::iter::once(img)).collect();
        let last = sources.len() - 1;
        self.write(|t| {
            let mut parent = base;
            let mut made = None;
            let mut report = CloneReport {
                not_reused: not_reused.clone(),
                ..CloneReport::default()
            };
            for (i, src) in sources.iter().enumerate() {
                if let Some(Some(earlier)) = reuse.get(i) {
                    // Still there (a delete meanwhile would leave the new
                    // chain on nothing).
                    if t.get::<Images>(earlier)?.is_none() {
                        return Err(ApiError::new(
                            Code::OriginDoesNotExist,
                            format!(
                                "clone {earlier} of origin {} went away meanwhile; clone again",
                                src.uuid
                            ),
                        ));
                    }
                    report.reused.push(OriginClone {
                        source: src.uuid,
                        clone: *earlier,
                    });
                    parent = Some(*earlier);
                    continue;
                }
                // Re-read inside the transaction: a concurrent delete of the
                // source must not leave a clone pointing at released content.
                let src = t
                    .get::<Images>(&src.uuid)?
                    .ok_or_else(ApiError::image_not_found)?;
                let mut c = src.clone();
                c.uuid = Uuid::new_v4();
                c.owner = account;
                c.acl.clear();
                c.origin = parent;
                c.published_at = Some(published.clone());
                c.activated = true;
                c.placeholder_state = None;
                c.public = false;
                c.disabled = if i == last { src.disabled } else { true };
                c.provenance = Some(Provenance {
                    how: ProvenanceKind::Clone,
                    source_uuid: src.uuid,
                    source_owner: src.owner,
                    datacenter: dc.clone(),
                    at_ms: now,
                });
                for f in &c.files {
                    t.link(&f.file_id)?;
                }
                if let Some(icon) = &c.icon {
                    t.link(&icon.file_id)?;
                }
                t.put::<Images>(&c.uuid, &c)?;
                parent = Some(c.uuid);
                if i != last {
                    report.cloned.push(OriginClone {
                        source: src.uuid,
                        clone: c.uuid,
                    });
                }
                made = Some(c);
            }
            made.map(|m| (m, report))
                .ok_or_else(|| ApiError::internal("nothing to clone"))
        })
    }

    /// What CloneImage would do, checked as it checks, changing nothing
    /// (`GET /images/:uuid/clone-plan`, a dry run): the origins it would clone
    /// (`clone` nil) and those an earlier clone would serve for.
    pub fn plan_clone(&self, uuid: &Uuid, account: Option<&Uuid>) -> ApiResult<CloneReport> {
        let (_, _, origins, _, reuse, not_reused) = self.clone_checks(uuid, account)?;
        let mut plan = CloneReport {
            not_reused,
            ..CloneReport::default()
        };
        for (o, r) in origins.iter().zip(reuse) {
            match r {
                Some(clone) => plan.reused.push(OriginClone {
                    source: o.uuid,
                    clone,
                }),
                None => plan.cloned.push(OriginClone {
                    source: o.uuid,
                    clone: Uuid::nil(),
                }),
            }
        }
        Ok(plan)
    }

    /// Every check of CloneImage, and what it would do with the origins:
    /// the image, the caller, the origins (base-most first), the base, the
    /// earlier clone serving each origin, and why others could not.
    #[expect(
        clippy::type_complexity,
        reason = "one private tuple, taken apart at once"
    )]
    fn clone_checks(
        &self,
        uuid: &Uuid,
        account: Option<&Uuid>,
    ) -> ApiResult<(
        Image,
        Uuid,
        Vec<Image>,
        Option<Uuid>,
        Vec<Option<Uuid>>,
        Vec<String>,
    )> {
        let (img, account) = self.clonable(uuid, account)?;
        let (origins, base) = self.origin_chain(&img)?;
        // Upstream clones whatever sits in the chain. We refuse an origin
        // that belongs to a third account and was not shared with the
        // caller: cloning it would hand over content its owner never shared.
        for o in &origins {
            if o.owner != img.owner && !Imgapi::can_see(o, Some(&account)) {
                return Err(ApiError::new(
                    Code::ImageNotShared,
                    format!(
                        "origin image {} of image {uuid} belongs to another account and is not shared with account {account}",
                        o.uuid
                    ),
                ));
            }
        }
        let base = base.map(|b| b.uuid);
        let (reuse, not_reused) = self.reusable_clones(&account, &origins, base)?;
        Ok((img, account, origins, base, reuse, not_reused))
    }

    /// For each origin (base-most first), the caller's earlier clone of it
    /// that stands in the new chain: the longest run of origins from the
    /// base whose earlier clones form a chain of their own (each clone
    /// derives from the clone below it, the lowest from the base, each
    /// file the origin's). Also why an earlier clone above that run could
    /// not serve, one sentence each.
    fn reusable_clones(
        &self,
        account: &Uuid,
        origins: &[Image],
        base: Option<Uuid>,
    ) -> ApiResult<(Vec<Option<Uuid>>, Vec<String>)> {
        let mut reuse = vec![None; origins.len()];
        if origins.is_empty() {
            return Ok((reuse, Vec::new()));
        }
        let all = self.all()?;
        let by_uuid: std::collections::HashMap<Uuid, &Image> =
            all.iter().map(|i| (i.uuid, i)).collect();
        // The caller's clone `c` of `o`, with `o`'s file.
        let clone_of = |c: &Image, o: &Image| {
            c.owner == *account
                && c.activated
                && c.provenance
                    .as_ref()
                    .is_some_and(|p| p.how == ProvenanceKind::Clone && p.source_uuid == o.uuid)
                && c.files
                    .iter()
                    .map(|f| &f.sha1)
                    .eq(o.files.iter().map(|f| &f.sha1))
        };
        // The chain under clone `c` of origin `k`, if it is clones of
        // origins `k-1 .. 0` then the base.
        let chain_of = |c: &Image, k: usize| -> Option<Vec<Uuid>> {
            let mut chain = vec![c.uuid];
            let mut x = c;
            for o in origins.iter().take(k).rev() {
                x = by_uuid
                    .get(&x.origin?)
                    .copied()
                    .filter(|y| clone_of(y, o))?;
                chain.push(x.uuid);
            }
            (x.origin == base).then(|| chain.into_iter().rev().collect())
        };
        let mut why = Vec::new();
        for (k, origin) in origins.iter().enumerate().rev() {
            let mut candidates = all.iter().filter(|c| clone_of(c, origin)).peekable();
            let first = candidates.peek().map(|c| c.uuid);
            if let Some(chain) = candidates.find_map(|c| chain_of(c, k)) {
                for (slot, u) in reuse.iter_mut().zip(chain) {
                    *slot = Some(u);
                }
                break;
            }
            if let Some(c) = first {
                why.push(format!(
                    "your clone {c} of origin {} does not derive from your clones of the origins below it, so it cannot serve in this chain",
                    origin.uuid
                ));
            }
        }
        why.reverse();
        Ok((reuse, why))
    }

    /// An account's settings (defaults when never set).
    pub fn settings(&self, account: &Uuid) -> ApiResult<AccountSettings> {
        Ok(self.store().get::<Settings>(account)?.unwrap_or_default())
    }

    /// Replaces the settings given in `body`; only the account itself or an
    /// operator may.
    pub fn update_settings(
        &self,
        target: &Uuid,
        caller: Option<&Uuid>,
        body: &Value,
    ) -> ApiResult<AccountSettings> {
        if caller.is_some_and(|c| c != target) {
            return Err(ApiError::new(
                Code::UnauthorizedError,
                format!("account settings of {target} can only be changed by that account"),
            ));
        }
        let Some(obj) = body.as_object() else {
            return Err(ApiError::validation(
                "settings must be a JSON object",
                vec![],
            ));
        };
        let mut s = self.settings(target)?;
        for (k, v) in obj {
            match k.as_str() {
                "image_share_trusted_accounts" => {
                    let field = "image_share_trusted_accounts";
                    // A login is an account too; an unknown one fails the
                    // settings as any invalid value does.
                    let one = |x: &Value| {
                        x.as_str().map(|s| {
                            self.config().account(s).ok_or_else(|| {
                                let why = self.config().unknown_account(field, s);
                                ApiError::validation(
                                    format!("invalid settings: {why}"),
                                    vec![FieldError::invalid(field, why)],
                                )
                            })
                        })
                    };
                    let list: Option<Vec<Uuid>> = match v {
                        Value::Null => Some(Vec::new()),
                        Value::String(_) => one(v).transpose()?.map(|u| vec![u]),
                        Value::Array(a) => a
                            .iter()
                            .map(one)
                            .collect::<Option<ApiResult<_>>>()
                            .transpose()?,
                        _ => None,
                    };
                    s.image_share_trusted_accounts = list.ok_or_else(|| {
                        ApiError::validation(
                            "invalid settings: image_share_trusted_accounts",
                            vec![FieldError::invalid(
                                "image_share_trusted_accounts",
                                "must be an array of accounts (uuids or logins)",
                            )],
                        )
                    })?;
                    s.image_share_trusted_accounts.dedup();
                }
                other => {
                    return Err(ApiError::validation(
                        format!("invalid settings: {other}"),
                        vec![FieldError::not_allowed(other, "unknown setting")],
                    ));
                }
            }
        }
        self.store()
            .transaction(|t| t.put::<Settings>(target, &s))?;
        Ok(s)
    }

    /// True when `account` may provision from `img`: its own, operator and
    /// public images, and shared ones whose owner it trusts.
    pub fn provisionable(&self, img: &impl Facts, account: &Uuid, trusted: &[Uuid]) -> bool {
        img.owner() == *account
            || (img.activated()
                && (self.is_operator_owned(img)
                    || img.public()
                    || (img.shared_with(account) && trusted.contains(&img.owner()))))
    }
}
