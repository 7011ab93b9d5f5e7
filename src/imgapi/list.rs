//! ListImages: filters, account scoping, sorting, the inclusive marker and
//! the limit (reference section 2.2).

use uuid::Uuid;

use super::error::{ApiError, ApiResult};
use super::manifest::{Image, parse_uuid};
use super::{Imgapi, time};

/// Query parameters; `tags` holds every `tag.KEY=VALUE`.
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    pub account: Option<Uuid>,
    pub owner: Option<Uuid>,
    pub state: Option<String>,
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
            if !matches!(
                s.as_str(),
                "active" | "disabled" | "unactivated" | "all" | "creating" | "failed"
            ) {
                return Err(ApiError::invalid_param(
                    "state",
                    format!("invalid state {s:?}"),
                ));
            }
            q.state = Some(s);
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
                    "InvalidParameter",
                    "provisionable=true needs an account",
                )
                .with_errors(vec![super::error::FieldError::missing("account")]));
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

impl Imgapi {
    /// ListImages.
    pub fn list(&self, q: &ListQuery) -> ApiResult<Vec<Image>> {
        // An image marker pins (published_at, uuid), so that paging also
        // works through images with equal or missing dates; a date marker
        // pins only the date. Either way the marker is inclusive.
        let marker: Option<(u64, Option<Uuid>)> = match &q.marker {
            None => None,
            Some(m) => Some(match parse_uuid(m) {
                Some(u) => self
                    .load(&u)?
                    .map(|i| (published_ms(&i), Some(u)))
                    .ok_or_else(|| {
                        ApiError::invalid_param("marker", format!("unknown marker image {m}"))
                    })?,
                None => (
                    time::parse_iso8601(m).ok_or_else(|| {
                        ApiError::invalid_param("marker", format!("invalid marker {m:?}"))
                    })?,
                    None,
                ),
            }),
        };
        let state_ok = |img: &Image, state: Option<&str>| match state.unwrap_or("active") {
            "all" => true,
            "active" => img.state() == "active",
            "disabled" => img.state() == "disabled",
            "unactivated" => img.state() == "unactivated",
            other => img.state() == other,
        };
        let other_filters = |img: &Image| {
            text_match(&q.name, &img.name)
                && text_match(&q.version, &img.version)
                && q.os.as_ref().is_none_or(|o| *o == img.os)
                && q.public.is_none_or(|p| p == img.public)
                && match q.type_.as_deref() {
                    None => true,
                    Some(t) => match t.strip_prefix('!') {
                        Some(not) => img.type_ != not,
                        None => img.type_ == t,
                    },
                }
                && q.tags.iter().all(|(k, v)| tag_match(img, k, v))
                && q.billing_tags
                    .iter()
                    .all(|b| img.billing_tags.as_ref().is_some_and(|bt| bt.contains(b)))
        };
        let state = q.state.as_deref();
        let trusted = match (&q.account, q.provisionable) {
            (Some(a), true) => Some(self.settings(a)?.image_share_trusted_accounts),
            _ => None,
        };
        let mut out: Vec<Image> = Vec::new();
        for img in self.all()? {
            let keep = match (&q.account, &q.owner) {
                (None, owner) => {
                    owner.is_none_or(|o| o == img.owner)
                        && state_ok(&img, state)
                        && other_filters(&img)
                }
                (Some(a), None) => {
                    let own = img.owner == *a && state_ok(&img, state);
                    let others_allowed = !matches!(state, Some("unactivated" | "disabled"));
                    let public = others_allowed
                        && q.public != Some(false)
                        && img.public
                        && img.activated
                        && state_ok(&img, state);
                    let shared = others_allowed
                        && q.public != Some(true)
                        && !img.public
                        && img.activated
                        && img.acl.contains(a)
                        && state_ok(&img, state);
                    (own || public || shared) && other_filters(&img)
                }
                (Some(a), Some(o)) if a == o => {
                    img.owner == *a && state_ok(&img, state) && other_filters(&img)
                }
                (Some(a), Some(o)) => {
                    let disabled_ok = match state {
                        Some("disabled") => img.disabled,
                        Some("active") | None => !img.disabled,
                        _ => true,
                    };
                    img.owner == *o
                        && img.activated
                        && disabled_ok
                        && (img.public || img.acl.contains(a))
                        && other_filters(&img)
                }
            };
            let allowed = match (&trusted, &q.account) {
                (Some(t), Some(a)) => self.provisionable(&img, a, t),
                _ => true,
            };
            if keep && allowed {
                out.push(img);
            }
        }
        out.sort_by(|a, b| {
            published_ms(a)
                .cmp(&published_ms(b))
                .then_with(|| a.uuid.cmp(&b.uuid))
        });
        if q.sort_desc {
            out.reverse();
        }
        if let Some((ms, uuid)) = marker {
            out.retain(|i| {
                let key = (published_ms(i), i.uuid);
                let ord = match uuid {
                    Some(u) => key.cmp(&(ms, u)),
                    None => published_ms(i).cmp(&ms),
                };
                if q.sort_desc {
                    ord.is_le()
                } else {
                    ord.is_ge()
                }
            });
        }
        out.truncate(q.limit.unwrap_or(MAX_LIMIT));
        Ok(out)
    }
}
