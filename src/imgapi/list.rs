//! ListImages: filters, account scoping, sorting, the inclusive marker and
//! the limit (reference section 2.2).

use uuid::Uuid;

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
    /// Parses the query string pairs (repeated keys allowed).
    pub fn parse(pairs: &[(String, String)]) -> ApiResult<Self> {
        let mut q = ListQuery::default();
        let one = |k: &str| {
            pairs
                .iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        if let Some(a) = one("account") {
            q.account = Some(parse_uuid(&a).ok_or_else(|| {
                ApiError::invalid_param(
                    "account",
                    format!("invalid \"account\": {a:?} is not a UUID"),
                )
            })?);
        }
        if let Some(o) = one("owner") {
            q.owner = Some(parse_uuid(&o).ok_or_else(|| {
                ApiError::invalid_param("owner", format!("invalid \"owner\": {o:?} is not a UUID"))
            })?);
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

fn published_ms(img: &Image) -> u64 {
    img.published_at
        .as_deref()
        .and_then(time::parse_iso8601)
        .unwrap_or(0)
}

/// Where a page starts: an image marker pins (published_at, uuid), so that
/// paging also works through images with equal or missing dates; a date
/// marker pins only the date. Either way the marker is inclusive.
#[derive(Clone, Copy)]
struct Marker {
    ms: u64,
    uuid: Option<Uuid>,
}

impl Marker {
    /// True when `img` is at or after the marker in the listing's order.
    fn admits(&self, img: &Image, desc: bool) -> bool {
        let ord = match self.uuid {
            Some(u) => (published_ms(img), img.uuid).cmp(&(self.ms, u)),
            None => published_ms(img).cmp(&self.ms),
        };
        if desc { ord.is_le() } else { ord.is_ge() }
    }
}

impl ListQuery {
    fn state_ok(&self, img: &Image) -> bool {
        match self.state {
            Some(StateFilter::All) => true,
            Some(StateFilter::Is(s)) => img.state() == s,
            None => img.state() == ImageState::Active,
        }
    }

    /// name, version, os, public, type (`!x` excludes), tags, billing tags.
    fn fields_match(&self, img: &Image) -> bool {
        text_match(&self.name, &img.name)
            && text_match(&self.version, &img.version)
            && self.os.as_ref().is_none_or(|o| *o == img.os)
            && self.public.is_none_or(|p| p == img.public)
            && match self.type_.as_deref() {
                None => true,
                Some(t) => match t.strip_prefix('!') {
                    Some(not) => img.type_ != not,
                    None => img.type_ == t,
                },
            }
            && self.tags.iter().all(|(k, v)| tag_match(img, k, v))
            && self
                .billing_tags
                .iter()
                .all(|b| img.billing_tags.as_ref().is_some_and(|bt| bt.contains(b)))
    }

    /// Account scoping (reference 2.2): the union of the caller's own
    /// images, public ones and those shared with it, as the filters allow.
    fn in_scope(&self, img: &Image) -> bool {
        match (&self.account, &self.owner) {
            (None, owner) => owner.is_none_or(|o| o == img.owner) && self.state_ok(img),
            (Some(a), None) => {
                let own = img.owner == *a && self.state_ok(img);
                let others_allowed = !matches!(
                    self.state,
                    Some(StateFilter::Is(
                        ImageState::Unactivated | ImageState::Disabled
                    ))
                );
                let others = others_allowed && img.activated && self.state_ok(img);
                let public = others && self.public != Some(false) && img.public;
                let shared =
                    others && self.public != Some(true) && !img.public && img.acl.contains(a);
                own || public || shared
            }
            (Some(a), Some(o)) if a == o => img.owner == *a && self.state_ok(img),
            (Some(a), Some(o)) => {
                // The state filter is dropped here, apart from its disabled part.
                let disabled_ok = match self.state {
                    Some(StateFilter::Is(ImageState::Disabled)) => img.disabled,
                    Some(StateFilter::Is(ImageState::Active)) | None => !img.disabled,
                    _ => true,
                };
                img.owner == *o
                    && img.activated
                    && disabled_ok
                    && (img.public || img.acl.contains(a))
            }
        }
    }
}

impl Imgapi {
    fn marker(&self, q: &ListQuery) -> ApiResult<Option<Marker>> {
        let Some(m) = &q.marker else {
            return Ok(None);
        };
        let marker = match parse_uuid(m) {
            Some(u) => self
                .load(&u)?
                .map(|i| Marker {
                    ms: published_ms(&i),
                    uuid: Some(u),
                })
                .ok_or_else(|| {
                    ApiError::invalid_param("marker", format!("unknown marker image {m}"))
                })?,
            None => Marker {
                ms: time::parse_iso8601(m).ok_or_else(|| {
                    ApiError::invalid_param("marker", format!("invalid marker {m:?}"))
                })?,
                uuid: None,
            },
        };
        Ok(Some(marker))
    }

    /// ListImages.
    pub fn list(&self, q: &ListQuery) -> ApiResult<Vec<Image>> {
        let marker = self.marker(q)?;
        let trusted = match (&q.account, q.provisionable) {
            (Some(a), true) => Some((a, self.settings(a)?.image_share_trusted_accounts)),
            _ => None,
        };
        let mut out: Vec<Image> = self
            .all()?
            .into_iter()
            .filter(|img| q.in_scope(img) && q.fields_match(img))
            .filter(|img| {
                trusted
                    .as_ref()
                    .is_none_or(|(a, t)| self.provisionable(img, a, t))
            })
            .collect();
        out.sort_by(|a, b| {
            published_ms(a)
                .cmp(&published_ms(b))
                .then_with(|| a.uuid.cmp(&b.uuid))
        });
        if q.sort_desc {
            out.reverse();
        }
        if let Some(m) = marker {
            out.retain(|i| m.admits(i, q.sort_desc));
        }
        out.truncate(q.limit.unwrap_or(MAX_LIMIT));
        Ok(out)
    }
}
