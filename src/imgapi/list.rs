//! ListImages: filters, account scoping, sorting, the inclusive marker and
//! the limit (reference section 2.2).

use uuid::Uuid;

use super::catalog::Facts;
use super::error::{ApiError, ApiResult, Code, FieldError};
use super::manifest::{Image, ImageState, parse_uuid};
use super::{Imgapi, time};

/// ListImages' `state` filter: one state, or `all`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateFilter {
    All,
    Is(ImageState),
}

impl StateFilter {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "all" => Some(StateFilter::All),
            other => ImageState::parse(other).map(StateFilter::Is),
        }
    }
}

/// Query parameters; `tags` holds every `tag.KEY=VALUE`.
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    pub account: Option<Uuid>,
    pub owner: Option<Uuid>,
    pub state: Option<StateFilter>,
    pub name: Option<String>,
    pub version: Option<String>,
    pub public: Option<bool>,
    pub os: Option<String>,
    pub type_: Option<String>,
    pub tags: Vec<(String, String)>,
    pub billing_tags: Vec<String>,
    pub limit: Option<usize>,
    pub marker: Option<String>,
    pub sort_desc: bool,
    /// Only images `account` may provision from (RFD 113 trusted sharers):
    /// its own, operator and public ones, and shared ones from owners listed
    /// in its `image_share_trusted_accounts`.
    pub provisionable: bool,
}

/// Default and largest page.
pub const MAX_LIMIT: usize = 1000;

impl ListQuery {
    /// Parses the query string pairs (repeated keys allowed); `account`
    /// and `owner` may be logins of `accounts`' table.
    pub fn parse(pairs: &[(String, String)], accounts: &super::Config) -> ApiResult<Self> {
        let mut q = ListQuery::default();
        let one = |k: &str| {
            pairs
                .iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        if let Some(a) = one("account") {
            q.account = Some(accounts.resolve_account("account", &a)?);
        }
        if let Some(o) = one("owner") {
            q.owner = Some(accounts.resolve_account("owner", &o)?);
        }
        if let Some(s) = one("state") {
            q.state =
                Some(StateFilter::parse(&s).ok_or_else(|| {
                    ApiError::invalid_param("state", format!("invalid state {s:?}"))
                })?);
        }
        q.name = one("name");
        q.version = one("version");
        q.os = one("os");
        q.type_ = one("type");
        if let Some(p) = one("public") {
            q.public = match p.as_str() {
                "true" => Some(true),
                "false" => Some(false),
                _ => {
                    return Err(ApiError::invalid_param(
                        "public",
                        "public must be true or false",
                    ));
                }
            };
        }
        for (k, v) in pairs {
            if let Some(tag) = k.strip_prefix("tag.") {
                q.tags.push((tag.to_string(), v.clone()));
            } else if k == "billing_tag" {
                q.billing_tags.push(v.clone());
            }
        }
        if let Some(l) = one("limit") {
            let n: usize = l
                .parse()
                .map_err(|_| ApiError::invalid_param("limit", format!("invalid limit {l:?}")))?;
            q.limit = Some(n.min(MAX_LIMIT));
        }
        if let Some(m) = one("marker") {
            q.marker = Some(m);
        }
        if let Some(p) = one("provisionable") {
            q.provisionable = match p.as_str() {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(ApiError::invalid_param(
                        "provisionable",
                        "provisionable must be true or false",
                    ));
                }
            };
            if q.provisionable && q.account.is_none() {
                return Err(ApiError::new(
                    Code::InvalidParameter,
                    "provisionable=true needs an account",
                )
                .with_errors(vec![FieldError::missing("account")]));
            }
        }
        if let Some(s) = one("sort") {
            q.sort_desc = match s.as_str() {
                "published_at" | "published_at.asc" => false,
                "published_at.desc" => true,
                _ => {
                    return Err(ApiError::invalid_param(
                        "sort",
                        format!("invalid sort {s:?}"),
                    ));
                }
            };
        }
        Ok(q)
    }
}

fn text_match(filter: &Option<String>, value: &str) -> bool {
    match filter {
        None => true,
        Some(f) => match f.strip_prefix('~') {
            Some(sub) => value.contains(sub),
            None => value == f,
        },
    }
}

fn tag_match(img: &Image, key: &str, want: &str) -> bool {
    let Some(v) = img.tags.as_ref().and_then(|t| t.get(key)) else {
        return false;
    };
    match v {
        serde_json::Value::String(s) => s == want,
        // Tags are matched as "key=value" strings, so 42 matches "42".
        other => {
            let rendered = other.to_string();
            rendered == want
        }
    }
}

/// Where a page starts: an image marker pins (published_at, uuid), so that
/// paging also works through images with equal or missing dates; a date
/// marker pins only the date. Either way the marker is inclusive.
fn start_of(marker: Option<(u64, Option<Uuid>)>, desc: bool) -> Option<(u64, Uuid)> {
    let (ms, uuid) = marker?;
    Some(match uuid {
        Some(u) => (ms, u),
        None if desc => (ms, Uuid::max()),
        None => (ms, Uuid::nil()),
    })
}

impl ListQuery {
    fn state_ok(&self, img: &impl Facts) -> bool {
        match self.state {
            Some(StateFilter::All) => true,
            Some(StateFilter::Is(s)) => img.state() == s,
            None => img.state() == ImageState::Active,
        }
    }

    /// name, version, os, public and type (`!x` excludes).
    fn fields_match(&self, img: &impl Facts) -> bool {
        text_match(&self.name, img.name())
            && text_match(&self.version, img.version())
            && self.os.as_ref().is_none_or(|o| o == img.os())
            && self.public.is_none_or(|p| p == img.public())
            && match self.type_.as_deref() {
                None => true,
                Some(t) => match t.strip_prefix('!') {
                    Some(not) => img.type_() != not,
                    None => img.type_() == t,
                },
            }
    }

    /// Filters the catalog does not hold: tags and billing tags.
    fn needs_record(&self) -> bool {
        !self.tags.is_empty() || !self.billing_tags.is_empty()
    }

    fn record_matches(&self, img: &Image) -> bool {
        self.tags.iter().all(|(k, v)| tag_match(img, k, v))
            && self
                .billing_tags
                .iter()
                .all(|b| img.billing_tags.as_ref().is_some_and(|bt| bt.contains(b)))
    }

    /// Account scoping (reference 2.2): the union of the caller's own
    /// images, public ones and those shared with it, as the filters allow.
    fn in_scope(&self, img: &impl Facts) -> bool {
        match (&self.account, &self.owner) {
            (None, owner) => owner.is_none_or(|o| o == img.owner()) && self.state_ok(img),
            (Some(a), None) => {
                let own = img.owner() == *a && self.state_ok(img);
                let others_allowed = !matches!(
                    self.state,
                    Some(StateFilter::Is(
                        ImageState::Unactivated | ImageState::Disabled
                    ))
                );
                let others = others_allowed && img.activated() && self.state_ok(img);
                let public = others && self.public != Some(false) && img.public();
                let shared =
                    others && self.public != Some(true) && !img.public() && img.shared_with(a);
                own || public || shared
            }
            (Some(a), Some(o)) if a == o => img.owner() == *a && self.state_ok(img),
            (Some(a), Some(o)) => {
                // The state filter is dropped here, apart from its disabled part.
                let disabled_ok = match self.state {
                    Some(StateFilter::Is(ImageState::Disabled)) => img.disabled(),
                    Some(StateFilter::Is(ImageState::Active)) | None => !img.disabled(),
                    _ => true,
                };
                img.owner() == *o
                    && img.activated()
                    && disabled_ok
                    && (img.public() || img.shared_with(a))
            }
        }
    }
}

impl Imgapi {
    /// (published_at, uuid) of an image marker, or the date of a date one.
    fn marker(&self, q: &ListQuery) -> ApiResult<Option<(u64, Option<Uuid>)>> {
        let Some(m) = &q.marker else {
            return Ok(None);
        };
        let marker = match parse_uuid(m) {
            Some(u) => {
                // A marker the caller may not see is an unknown one.
                let pos = {
                    let cat = self.catalog.read();
                    cat.get(&u)
                        .filter(|s| Imgapi::can_see(*s, q.account.as_ref()))
                        .and_then(|_| cat.position(&u))
                };
                let (ms, _) = pos.ok_or_else(|| {
                    ApiError::invalid_param("marker", format!("unknown marker image {m}"))
                })?;
                (ms, Some(u))
            }
            None => (
                time::parse_iso8601(m).ok_or_else(|| {
                    ApiError::invalid_param("marker", format!("invalid marker {m:?}"))
                })?,
                None,
            ),
        };
        Ok(Some(marker))
    }

    /// Every image ListImages would answer over all its pages, from one
    /// walk of the catalog: what sdc-clients' `listImages` gathers page by
    /// page for CloudAPI, without a marker that could vanish between pages.
    pub fn list_all(&self, q: &ListQuery) -> ApiResult<Vec<Image>> {
        let q = ListQuery {
            limit: Some(usize::MAX),
            marker: None,
            ..q.clone()
        };
        self.list(&q)
    }

    /// ListImages: the catalog picks a page in listing order, then only
    /// the page's records are read.
    pub fn list(&self, q: &ListQuery) -> ApiResult<Vec<Image>> {
        let from = start_of(self.marker(q)?, q.sort_desc);
        let trusted = match (&q.account, q.provisionable) {
            (Some(a), true) => Some((a, self.settings(a)?.image_share_trusted_accounts)),
            _ => None,
        };
        let limit = q.limit.unwrap_or(MAX_LIMIT);
        let mut out = Vec::new();
        let candidates: Vec<Uuid> = {
            let cat = self.catalog.read();
            let wanted = cat.walk(from, q.sort_desc).filter(|s| {
                q.in_scope(*s)
                    && q.fields_match(*s)
                    && trusted
                        .as_ref()
                        .is_none_or(|(a, t)| self.provisionable(*s, a, t))
            });
            if q.needs_record() {
                wanted.map(|s| s.uuid()).collect()
            } else {
                wanted.take(limit).map(|s| s.uuid()).collect()
            }
        };
        for u in candidates {
            if out.len() >= limit {
                break;
            }
            // Deleted since the catalog was read: no longer listed.
            if let Some(img) = self.load(&u)?
                && (!q.needs_record() || q.record_matches(&img))
            {
                out.push(img);
            }
        }
        Ok(out)
    }
}
