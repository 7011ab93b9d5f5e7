//! Validation of manifest fields (imgmanifest's rules, reference section 3)
//! as a table: one [`Rule`] per field, checked in the table's order so the
//! `errors` of a ValidationFailed answer list fields as upstream does.
//!
//! A rule says when its field must be present and how its value is
//! checked. Once every rule passes, the map is normalised (`null` drops a
//! field, `"true"` is a boolean, a single acl uuid is a list) and read into
//! [`Fields`].

use std::collections::HashSet;

use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{ManifestField, parse_uuid};
use crate::imgapi::error::{ApiError, ApiResult, FieldError};
use crate::imgapi::time;

/// Image types IMGAPI accepts.
pub const TYPES: &[&str] = &[
    "zone-dataset",
    "lx-dataset",
    "zvol",
    "docker",
    "lxd",
    "other",
];
/// Operating systems IMGAPI accepts.
pub const OSES: &[&str] = &["smartos", "linux", "windows", "bsd", "illumos", "other"];
/// File compressions IMGAPI accepts.
pub const COMPRESSIONS: &[&str] = &["gzip", "bzip2", "xz", "none"];

/// When a field must be present.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Presence {
    Optional,
    Required,
    /// Required for `type=zvol`, refused for every other type.
    Zvol,
    /// Refused unless `type=zone-dataset`.
    ZoneDataset,
}

/// Checks `value` of `field`, pushing what is wrong.
type Check = fn(field: &str, value: &Value, errs: &mut Vec<FieldError>);

struct Rule {
    field: ManifestField,
    presence: Presence,
    check: Check,
}

const fn rule(field: ManifestField, presence: Presence, check: Check) -> Rule {
    Rule {
        field,
        presence,
        check,
    }
}

use ManifestField as F;
use Presence::{Optional, Required, ZoneDataset, Zvol};

/// Every manifest field with a rule, in upstream's order of checks.
const RULES: &[Rule] = &[
    rule(F::V, Optional, |f, v, e| {
        if v.as_u64().is_none() {
            e.push(FieldError::invalid(f, "v must be a non-negative number"));
        }
    }),
    rule(F::Uuid, Optional, uuid),
    rule(F::Owner, Required, uuid),
    rule(F::Name, Required, |f, v, e| {
        chars(f, v, 1024, b"._/ -", "/^[A-Za-z0-9._/ -]+$/", e)
    }),
    rule(F::Version, Required, |f, v, e| {
        chars(f, v, 512, b"._/+-", "/^[A-Za-z0-9._/+-]+$/", e)
    }),
    rule(F::Description, Optional, |f, v, e| {
        string(f, v, 10240, e);
    }),
    rule(F::Homepage, Optional, url),
    rule(F::Eula, Optional, url),
    rule(F::Error, Optional, |f, v, e| {
        if !v.is_object() {
            e.push(FieldError::invalid(f, "error must be an object"));
        }
    }),
    rule(F::Disabled, Optional, boolean),
    rule(F::Public, Optional, boolean),
    rule(F::PublishedAt, Optional, |f, v, e| {
        if string(f, v, 64, e).is_some_and(|p| !time::is_imgapi_date(p)) {
            e.push(FieldError::invalid(
                f,
                "published_at must be an ISO date YYYY-MM-DDTHH:MM:SS(.SSS)Z",
            ));
        }
    }),
    rule(F::Type, Required, |f, v, e| one_of(f, v, TYPES, e)),
    rule(F::Os, Required, |f, v, e| one_of(f, v, OSES, e)),
    rule(F::Origin, Optional, uuid),
    rule(F::Acl, Optional, |f, v, e| match acl(v) {
        None => e.push(FieldError::invalid(f, "acl must be an array of UUIDs")),
        Some(list) if list.len() > crate::imgapi::MAX_ACL => e.push(FieldError::invalid(
            f,
            format!("acl holds at most {} accounts", crate::imgapi::MAX_ACL),
        )),
        Some(_) => {}
    }),
    rule(F::Requirements, Optional, requirements),
    rule(F::Users, Optional, |f, v, e| {
        let ok = v.as_array().is_some_and(|a| {
            a.iter().all(|x| {
                x.as_object()
                    .is_some_and(|o| o.len() == 1 && o.get("name").is_some_and(Value::is_string))
            })
        });
        if !ok {
            e.push(FieldError::invalid(f, "users must be an array of {name}"));
        }
    }),
    rule(F::BillingTags, Optional, |f, v, e| {
        let ok = v.as_array().is_some_and(|a| {
            a.iter()
                .all(|x| x.as_str().is_some_and(|s| s.chars().count() <= 128))
        });
        if !ok {
            e.push(FieldError::invalid(
                f,
                "billing_tags must be an array of strings of at most 128 characters",
            ));
        }
    }),
    rule(F::Traits, Optional, |f, v, e| {
        let ok = v.as_object().is_some_and(|o| {
            o.values()
                .all(|v| v.is_string() || v.is_boolean() || v.is_array())
        });
        if !ok {
            e.push(FieldError::invalid(
                f,
                "traits must be an object of strings, booleans or arrays",
            ));
        }
    }),
    rule(F::Tags, Optional, |f, v, e| match v {
        Value::Object(o) => {
            if serde_json::to_vec(o).map(|v| v.len()).unwrap_or(0) > 100 * 1024 {
                e.push(FieldError::invalid(
                    f,
                    "tags must be at most 100 KiB of JSON",
                ));
            }
        }
        _ => e.push(FieldError::invalid(f, "tags must be an object")),
    }),
    rule(F::GeneratePasswords, Optional, boolean),
    rule(F::InheritedDirectories, ZoneDataset, |f, v, e| {
        let ok = v.as_array().is_some_and(|a| a.iter().all(Value::is_string));
        if !ok {
            e.push(FieldError::invalid(
                f,
                "inherited_directories must be an array of strings",
            ));
        }
    }),
    rule(F::NicDriver, Zvol, |f, v, e| {
        string(f, v, 1024, e);
    }),
    rule(F::DiskDriver, Zvol, |f, v, e| {
        string(f, v, 1024, e);
    }),
    rule(F::CpuType, Zvol, |f, v, e| {
        string(f, v, 1024, e);
    }),
    rule(F::ImageSize, Zvol, |f, v, e| {
        if v.as_u64().is_none_or(|n| n == 0) {
            e.push(FieldError::invalid(
                f,
                "image_size must be a positive integer",
            ));
        }
    }),
    rule(F::Urn, Optional, |f, v, e| {
        string(f, v, 1024, e);
    }),
    rule(F::State, Optional, |f, v, e| {
        if let Some(s) = v.as_str()
            && super::ImageState::parse(s).is_none()
        {
            e.push(FieldError::invalid(f, "invalid state"));
        }
    }),
];

/// The validated manifest fields.
#[derive(Deserialize)]
pub(super) struct Fields {
    #[serde(default = "two")]
    pub v: u64,
    pub uuid: Option<Uuid>,
    pub owner: Uuid,
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    pub homepage: Option<String>,
    pub eula: Option<String>,
    pub error: Option<Value>,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default)]
    pub public: bool,
    pub published_at: Option<String>,
    #[serde(rename = "type")]
    pub type_: String,
    pub os: String,
    pub origin: Option<Uuid>,
    #[serde(default)]
    pub acl: Vec<Uuid>,
    pub requirements: Option<Value>,
    pub users: Option<Value>,
    pub billing_tags: Option<Vec<String>>,
    pub traits: Option<Value>,
    pub tags: Option<Map<String, Value>>,
    pub generate_passwords: Option<bool>,
    pub inherited_directories: Option<Vec<String>>,
    pub nic_driver: Option<String>,
    pub disk_driver: Option<String>,
    pub cpu_type: Option<String>,
    pub image_size: Option<u64>,
    pub urn: Option<String>,
}

fn two() -> u64 {
    2
}

/// Checks every rule; on success the normalised fields.
pub(super) fn validate(m: &Map<String, Value>) -> ApiResult<Fields> {
    let type_ = m.get("type").and_then(Value::as_str);
    let mut errs: Vec<FieldError> = Vec::new();
    for r in RULES {
        let field = r.field.name();
        let value = m.get(field).filter(|v| !v.is_null());
        let before = errs.len();
        if let Some(v) = value {
            (r.check)(field, v, &mut errs);
        }
        let value_ok = errs.len() == before;
        match (r.presence, value) {
            (Required, None) => errs.push(FieldError::missing(field)),
            (Zvol, None) if type_ == Some("zvol") => errs.push(FieldError::missing(field)),
            (Zvol, Some(_)) if value_ok && type_ != Some("zvol") => errs.push(FieldError::invalid(
                field,
                format!("{field} is only valid for type zvol"),
            )),
            (ZoneDataset, Some(_)) if value_ok && type_ != Some("zone-dataset") => {
                errs.push(FieldError::invalid(
                    field,
                    format!("{field} is only valid for type zone-dataset"),
                ))
            }
            _ => {}
        }
    }
    if !errs.is_empty() {
        let mut names: Vec<String> = errs.iter().map(|e| e.field.clone()).collect();
        names.dedup();
        return Err(ApiError::validation(
            format!("invalid image data: {}", names.join(", ")),
            errs,
        ));
    }
    serde_json::from_value(Value::Object(normalise(m)))
        .map_err(|e| ApiError::internal(format!("validated manifest does not read back: {e}")))
}

/// The map as [`Fields`] reads it: only ruled fields, no `null`s, booleans
/// from their string forms, the acl as a list without repeats.
fn normalise(m: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for r in RULES {
        let Some(v) = m.get(r.field.name()).filter(|v| !v.is_null()) else {
            continue;
        };
        let v = match r.field {
            F::Disabled | F::Public | F::GeneratePasswords => Value::Bool(as_bool(v) == Some(true)),
            F::Acl => serde_json::json!(acl(v).unwrap_or_default()),
            _ => v.clone(),
        };
        out.insert(r.field.name().to_string(), v);
    }
    out
}

fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s == "true" => Some(true),
        Value::String(s) if s == "false" => Some(false),
        _ => None,
    }
}

/// A single uuid or an array of them, repeats dropped.
fn acl(v: &Value) -> Option<Vec<Uuid>> {
    match v {
        Value::String(s) => parse_uuid(s).map(|u| vec![u]),
        Value::Array(a) => {
            let mut list: Vec<Uuid> = a
                .iter()
                .map(|x| x.as_str().and_then(parse_uuid))
                .collect::<Option<_>>()?;
            let mut seen = HashSet::new();
            list.retain(|u| seen.insert(*u));
            Some(list)
        }
        _ => None,
    }
}

/// A string of at most `max` characters.
fn string<'v>(f: &str, v: &'v Value, max: usize, errs: &mut Vec<FieldError>) -> Option<&'v str> {
    match v.as_str() {
        Some(s) if s.chars().count() <= max => Some(s),
        Some(_) => {
            errs.push(FieldError::invalid(
                f,
                format!("{f} is longer than {max} characters"),
            ));
            None
        }
        None => {
            errs.push(FieldError::invalid(f, format!("{f} must be a string")));
            None
        }
    }
}

/// A non-empty string of letters, digits and `extra` bytes.
fn chars(f: &str, v: &Value, max: usize, extra: &[u8], pattern: &str, e: &mut Vec<FieldError>) {
    let ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
    };
    if string(f, v, max, e).is_some_and(|s| !ok(s)) {
        e.push(FieldError::invalid(f, format!("{f} must match {pattern}")));
    }
}

fn one_of(f: &str, v: &Value, allowed: &[&str], e: &mut Vec<FieldError>) {
    if string(f, v, 64, e).is_some_and(|s| !allowed.contains(&s)) {
        e.push(FieldError::invalid(
            f,
            format!("{f} must be one of: {}", allowed.join(", ")),
        ));
    }
}

fn uuid(f: &str, v: &Value, e: &mut Vec<FieldError>) {
    if v.as_str().and_then(parse_uuid).is_none() {
        e.push(FieldError::invalid(f, format!("{f} must be a UUID")));
    }
}

fn boolean(f: &str, v: &Value, e: &mut Vec<FieldError>) {
    if as_bool(v).is_none() {
        e.push(FieldError::invalid(f, format!("{f} must be a boolean")));
    }
}

fn url(f: &str, v: &Value, e: &mut Vec<FieldError>) {
    let is_url = |s: &str| {
        (s.starts_with("http://") || s.starts_with("https://")) && s.len() > 8 && s.len() <= 1024
    };
    if string(f, v, 1024, e).is_some_and(|s| !is_url(s)) {
        e.push(FieldError::invalid(
            f,
            format!("{f} must be an http or https URL"),
        ));
    }
}

/// `YYYYMMDDTHHMMSSZ`, year 2012 or later.
fn is_platform(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 16
        && b.get(8) == Some(&b'T')
        && b.get(15) == Some(&b'Z')
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 8 || i == 15 || c.is_ascii_digit())
        && s.get(0..4)
            .and_then(|y| y.parse::<u32>().ok())
            .is_some_and(|y| y >= 2012)
}

/// Each requirement key has its own rule; errors name `requirements.KEY`.
fn requirements(f: &str, v: &Value, errs: &mut Vec<FieldError>) {
    let Some(o) = v.as_object() else {
        errs.push(FieldError::invalid(f, "must be an object"));
        return;
    };
    for (k, val) in o {
        let field = format!("{f}.{k}");
        let ok = match k.as_str() {
            "networks" => val.as_array().is_some_and(|a| {
                a.iter().all(|n| {
                    n.as_object().is_some_and(|n| {
                        n.len() == 2
                            && n.get("name").is_some_and(Value::is_string)
                            && n.get("description").is_some_and(Value::is_string)
                    })
                })
            }),
            "brand" => val.is_string(),
            "ssh_key" => val.is_boolean(),
            "min_ram" | "max_ram" => val.as_u64().is_some(),
            "min_platform" | "max_platform" => val.as_object().is_some_and(|m| {
                !m.is_empty() && m.values().all(|p| p.as_str().is_some_and(is_platform))
            }),
            "bootrom" => {
                matches!(val.as_str(), Some("bios" | "uefi"))
                    && o.get("brand").and_then(Value::as_str) == Some("bhyve")
            }
            _ => {
                errs.push(FieldError::invalid(&field, "unsupported requirement"));
                continue;
            }
        };
        if !ok {
            errs.push(FieldError::invalid(
                &field,
                format!("invalid requirement {k}"),
            ));
        }
    }
    if let (Some(min), Some(max)) = (
        o.get("min_ram").and_then(Value::as_u64),
        o.get("max_ram").and_then(Value::as_u64),
    ) && min > max
    {
        errs.push(FieldError::invalid(
            "requirements.min_ram",
            "min_ram must be <= max_ram",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_a_client_may_send_has_one_rule() {
        // `icon` and `files` have their own endpoints; bodies never set them.
        for f in ManifestField::ALL
            .iter()
            .filter(|f| !matches!(f, F::Icon | F::Files))
        {
            let n = RULES.iter().filter(|r| r.field == *f).count();
            assert_eq!(n, 1, "{}", f.name());
        }
    }
}
