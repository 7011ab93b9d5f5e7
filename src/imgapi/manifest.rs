//! Image manifests: the stored form, validation (imgmanifest's rules, section
//! 3 of the reference) and the strict v2 serialisation.
//!
//! The stored form keeps what the API never shows (`activated`, each file's
//! engine id and MD5, the icon object, provenance); [`Image::manifest`] emits
//! only manifest fields, because a real IMGAPI importing from us rejects
//! anything else.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::error::{ApiError, ApiResult, FieldError};

/// The all-zero owner that imports rewrite to the admin uuid.
pub const UNSET_OWNER: Uuid = Uuid::nil();

/// A stored image file: the manifest's `files[0]` plus what serving it needs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageFile {
    pub sha1: String,
    pub size: u64,
    pub compression: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_guid: Option<String>,
    /// Base64 MD5, for `Content-MD5`.
    pub content_md5: String,
    pub mtime_ms: u64,
    pub stor: String,
    /// The engine's file id (hex BLAKE3 of the content).
    pub file_id: String,
}

/// A stored icon (the API shows only `icon: true`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Icon {
    pub sha1: String,
    pub size: u64,
    pub content_md5: String,
    pub content_type: String,
    pub mtime_ms: u64,
    pub file_id: String,
}

/// Where an image came from, when it was cloned or copied (not a manifest
/// field: served by the lineage endpoint).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Provenance {
    /// `clone` or `copy`.
    pub how: String,
    pub source_uuid: Uuid,
    pub source_owner: Uuid,
    pub datacenter: String,
    pub at_ms: u64,
}

/// An image as stored.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Image {
    pub v: u64,
    pub uuid: Uuid,
    pub owner: Uuid,
    pub name: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub homepage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eula: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon: Option<Icon>,
    pub activated: bool,
    /// `creating` or `failed` for placeholders; otherwise the state is computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placeholder_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
    pub disabled: bool,
    pub public: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_at: Option<String>,
    #[serde(rename = "type")]
    pub type_: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Uuid>,
    #[serde(default)]
    pub files: Vec<ImageFile>,
    #[serde(default)]
    pub acl: Vec<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirements: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traits: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate_passwords: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inherited_directories: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nic_driver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_driver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
}

/// Every manifest field, in output order.
pub const MANIFEST_FIELDS: &[&str] = &[
    "v",
    "uuid",
    "owner",
    "name",
    "version",
    "description",
    "homepage",
    "eula",
    "icon",
    "state",
    "error",
    "disabled",
    "public",
    "published_at",
    "type",
    "os",
    "origin",
    "files",
    "acl",
    "requirements",
    "users",
    "billing_tags",
    "traits",
    "tags",
    "generate_passwords",
    "inherited_directories",
    "nic_driver",
    "disk_driver",
    "cpu_type",
    "image_size",
    "urn",
];

/// Keys a user may change with UpdateImage.
pub const USER_MUTABLE: &[&str] = &[
    "name",
    "version",
    "description",
    "homepage",
    "eula",
    "public",
    "os",
    "acl",
    "requirements",
    "users",
    "tags",
    "generate_passwords",
    "inherited_directories",
    "nic_driver",
    "disk_driver",
    "cpu_type",
    "image_size",
];

/// Keys only operators may change (some only before activation).
pub const OPERATOR_MUTABLE: &[&str] = &[
    "owner",
    "state",
    "error",
    "billing_tags",
    "traits",
    "files",
    "origin",
    "uuid",
];

const TYPES: &[&str] = &[
    "zone-dataset",
    "lx-dataset",
    "zvol",
    "docker",
    "lxd",
    "other",
];
const OSES: &[&str] = &["smartos", "linux", "windows", "bsd", "illumos", "other"];
const STATES: &[&str] = &["active", "unactivated", "disabled", "creating", "failed"];
pub const COMPRESSIONS: &[&str] = &["gzip", "bzip2", "xz", "none"];

/// Strict lower-case UUID, as IMGAPI's regex.
pub fn parse_uuid(s: &str) -> Option<Uuid> {
    let ok = s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        });
    if ok { Uuid::parse_str(s).ok() } else { None }
}

impl Image {
    /// `active`, `disabled`, `unactivated`, or a placeholder state.
    pub fn state(&self) -> &str {
        if let Some(s) = &self.placeholder_state {
            return s;
        }
        match (self.activated, self.disabled) {
            (false, _) => "unactivated",
            (true, false) => "active",
            (true, true) => "disabled",
        }
    }

    /// The v2 manifest: only fields of the reference, in its order.
    pub fn manifest(&self, admin_fields: bool) -> Value {
        let mut m = Map::new();
        m.insert("v".into(), json!(self.v));
        m.insert("uuid".into(), json!(self.uuid));
        m.insert("owner".into(), json!(self.owner));
        m.insert("name".into(), json!(self.name));
        m.insert("version".into(), json!(self.version));
        if let Some(d) = self.description.as_ref().filter(|d| !d.is_empty()) {
            m.insert("description".into(), json!(d));
        }
        if let Some(h) = &self.homepage {
            m.insert("homepage".into(), json!(h));
        }
        if let Some(e) = &self.eula {
            m.insert("eula".into(), json!(e));
        }
        if self.icon.is_some() {
            m.insert("icon".into(), json!(true));
        }
        m.insert("state".into(), json!(self.state()));
        if self.state() == "failed"
            && let Some(e) = &self.error
        {
            m.insert("error".into(), e.clone());
        }
        m.insert("disabled".into(), json!(self.disabled));
        m.insert("public".into(), json!(self.public));
        if let Some(p) = &self.published_at {
            m.insert("published_at".into(), json!(p));
        }
        m.insert("type".into(), json!(self.type_));
        m.insert("os".into(), json!(self.os));
        if let Some(o) = &self.origin {
            m.insert("origin".into(), json!(o));
        }
        let files: Vec<Value> = self
            .files
            .iter()
            .map(|f| {
                let mut o = Map::new();
                o.insert("sha1".into(), json!(f.sha1));
                o.insert("size".into(), json!(f.size));
                o.insert("compression".into(), json!(f.compression));
                if let Some(g) = &f.dataset_guid {
                    o.insert("dataset_guid".into(), json!(g));
                }
                if admin_fields {
                    o.insert("stor".into(), json!(f.stor));
                }
                Value::Object(o)
            })
            .collect();
        m.insert("files".into(), Value::Array(files));
        if !self.acl.is_empty() {
            m.insert("acl".into(), json!(self.acl));
        }
        if let Some(r) = &self.requirements {
            m.insert("requirements".into(), r.clone());
        }
        if let Some(u) = &self.users {
            m.insert("users".into(), u.clone());
        }
        if let Some(b) = self.billing_tags.as_ref().filter(|b| !b.is_empty()) {
            m.insert("billing_tags".into(), json!(b));
        }
        if let Some(t) = self
            .traits
            .as_ref()
            .filter(|t| t.as_object().is_some_and(|o| !o.is_empty()))
        {
            m.insert("traits".into(), t.clone());
        }
        if let Some(t) = &self.tags {
            m.insert("tags".into(), Value::Object(t.clone()));
        }
        if self.generate_passwords == Some(true) {
            m.insert("generate_passwords".into(), json!(true));
        }
        if let Some(d) = &self.inherited_directories {
            m.insert("inherited_directories".into(), json!(d));
        }
        for (k, v) in [
            ("nic_driver", &self.nic_driver),
            ("disk_driver", &self.disk_driver),
            ("cpu_type", &self.cpu_type),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), json!(v));
            }
        }
        if let Some(s) = self.image_size {
            m.insert("image_size".into(), json!(s));
        }
        if let Some(u) = &self.urn {
            m.insert("urn".into(), json!(u));
        }
        Value::Object(m)
    }

    /// The manifest fields as a map for UpdateImage to patch (`state` and
    /// `files` are handled by the caller).
    pub fn editable_map(&self) -> Map<String, Value> {
        let Value::Object(mut m) = self.manifest(false) else {
            return Map::new();
        };
        m.remove("icon");
        m.remove("files");
        m.remove("state");
        // Keep `false` so an update does not silently drop it.
        if let Some(g) = self.generate_passwords {
            m.insert("generate_passwords".into(), json!(g));
        }
        if let Some(e) = &self.error {
            m.insert("error".into(), e.clone());
        }
        if let Some(d) = &self.description {
            m.insert("description".into(), json!(d));
        }
        m
    }

    /// Replaces every manifest field with those of a validated map, keeping
    /// the internal parts (activation, files, icon, provenance).
    pub fn apply_map(&mut self, m: &Map<String, Value>) -> ApiResult<()> {
        let f = Fields::from_map(m)?;
        self.v = f.v;
        if let Some(u) = f.uuid {
            self.uuid = u;
        }
        self.owner = f.owner;
        self.name = f.name;
        self.version = f.version;
        self.description = f.description;
        self.homepage = f.homepage;
        self.eula = f.eula;
        self.error = f.error;
        self.disabled = f.disabled;
        self.public = f.public;
        self.published_at = f.published_at;
        self.type_ = f.type_;
        self.os = f.os;
        self.origin = f.origin;
        self.acl = f.acl;
        self.requirements = f.requirements;
        self.users = f.users;
        self.billing_tags = f.billing_tags;
        self.traits = f.traits;
        self.tags = f.tags;
        self.generate_passwords = f.generate_passwords;
        self.inherited_directories = f.inherited_directories;
        self.nic_driver = f.nic_driver;
        self.disk_driver = f.disk_driver;
        self.cpu_type = f.cpu_type;
        self.image_size = f.image_size;
        self.urn = f.urn;
        Ok(())
    }

    /// A new, unactivated image from a validated map.
    pub fn from_map(uuid: Uuid, m: &Map<String, Value>) -> ApiResult<Self> {
        let mut img = Image {
            v: 2,
            uuid,
            owner: Uuid::nil(),
            name: String::new(),
            version: String::new(),
            description: None,
            homepage: None,
            eula: None,
            icon: None,
            activated: false,
            placeholder_state: None,
            error: None,
            disabled: false,
            public: false,
            published_at: None,
            type_: String::new(),
            os: String::new(),
            origin: None,
            files: Vec::new(),
            acl: Vec::new(),
            requirements: None,
            users: None,
            billing_tags: None,
            traits: None,
            tags: None,
            generate_passwords: None,
            inherited_directories: None,
            nic_driver: None,
            disk_driver: None,
            cpu_type: None,
            image_size: None,
            urn: None,
            provenance: None,
        };
        img.apply_map(m)?;
        Ok(img)
    }
}

/// The validated manifest fields.
struct Fields {
    v: u64,
    uuid: Option<Uuid>,
    owner: Uuid,
    name: String,
    version: String,
    description: Option<String>,
    homepage: Option<String>,
    eula: Option<String>,
    error: Option<Value>,
    disabled: bool,
    public: bool,
    published_at: Option<String>,
    type_: String,
    os: String,
    origin: Option<Uuid>,
    acl: Vec<Uuid>,
    requirements: Option<Value>,
    users: Option<Value>,
    billing_tags: Option<Vec<String>>,
    traits: Option<Value>,
    tags: Option<Map<String, Value>>,
    generate_passwords: Option<bool>,
    inherited_directories: Option<Vec<String>>,
    nic_driver: Option<String>,
    disk_driver: Option<String>,
    cpu_type: Option<String>,
    image_size: Option<u64>,
    urn: Option<String>,
}

fn chars_ok(s: &str, extra: &[u8]) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
}

fn is_url(s: &str) -> bool {
    (s.starts_with("http://") || s.starts_with("https://")) && s.len() > 8 && s.len() <= 1024
}

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

fn check_requirements(v: &Value, errs: &mut Vec<FieldError>) {
    let Some(o) = v.as_object() else {
        errs.push(FieldError::invalid("requirements", "must be an object"));
        return;
    };
    for (k, val) in o {
        let field = format!("requirements.{k}");
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

impl Fields {
    fn from_map(m: &Map<String, Value>) -> ApiResult<Self> {
        let mut errs: Vec<FieldError> = Vec::new();
        let get = |k: &str| m.get(k).filter(|v| !v.is_null());
        let string = |k: &str, max: usize, errs: &mut Vec<FieldError>| -> Option<String> {
            let v = get(k)?;
            match v.as_str() {
                Some(s) if s.chars().count() <= max => Some(s.to_string()),
                Some(_) => {
                    errs.push(FieldError::invalid(
                        k,
                        format!("{k} is longer than {max} characters"),
                    ));
                    None
                }
                None => {
                    errs.push(FieldError::invalid(k, format!("{k} must be a string")));
                    None
                }
            }
        };
        let boolean = |k: &str, errs: &mut Vec<FieldError>| -> Option<bool> {
            match get(k)? {
                Value::Bool(b) => Some(*b),
                Value::String(s) if s == "true" => Some(true),
                Value::String(s) if s == "false" => Some(false),
                _ => {
                    errs.push(FieldError::invalid(k, format!("{k} must be a boolean")));
                    None
                }
            }
        };
        let uuid_field = |k: &str, errs: &mut Vec<FieldError>| -> Option<Uuid> {
            let v = get(k)?;
            match v.as_str().and_then(parse_uuid) {
                Some(u) => Some(u),
                None => {
                    errs.push(FieldError::invalid(k, format!("{k} must be a UUID")));
                    None
                }
            }
        };

        let v = match get("v") {
            None => 2,
            Some(x) => match x.as_u64() {
                Some(n) => n,
                None => {
                    errs.push(FieldError::invalid("v", "v must be a non-negative number"));
                    2
                }
            },
        };
        let uuid = uuid_field("uuid", &mut errs);
        let owner = match get("owner") {
            None => {
                errs.push(FieldError::missing("owner"));
                None
            }
            Some(_) => uuid_field("owner", &mut errs),
        };
        let name = string("name", 1024, &mut errs);
        match &name {
            None if get("name").is_none() => errs.push(FieldError::missing("name")),
            Some(n) if !chars_ok(n, b"._/ -") => errs.push(FieldError::invalid(
                "name",
                "name must match /^[A-Za-z0-9._/ -]+$/",
            )),
            _ => {}
        }
        let version = string("version", 512, &mut errs);
        match &version {
            None if get("version").is_none() => errs.push(FieldError::missing("version")),
            Some(n) if !chars_ok(n, b"._/+-") => errs.push(FieldError::invalid(
                "version",
                "version must match /^[A-Za-z0-9._/+-]+$/",
            )),
            _ => {}
        }
        let description = string("description", 10240, &mut errs);
        let homepage = string("homepage", 1024, &mut errs);
        if homepage.as_deref().is_some_and(|h| !is_url(h)) {
            errs.push(FieldError::invalid(
                "homepage",
                "homepage must be an http or https URL",
            ));
        }
        let eula = string("eula", 1024, &mut errs);
        if eula.as_deref().is_some_and(|h| !is_url(h)) {
            errs.push(FieldError::invalid(
                "eula",
                "eula must be an http or https URL",
            ));
        }
        let error = get("error").cloned();
        if error.as_ref().is_some_and(|e| !e.is_object()) {
            errs.push(FieldError::invalid("error", "error must be an object"));
        }
        let disabled = boolean("disabled", &mut errs).unwrap_or(false);
        let public = boolean("public", &mut errs).unwrap_or(false);
        let published_at = string("published_at", 64, &mut errs);
        if published_at
            .as_deref()
            .is_some_and(|p| !super::time::is_imgapi_date(p))
        {
            errs.push(FieldError::invalid(
                "published_at",
                "published_at must be an ISO date YYYY-MM-DDTHH:MM:SS(.SSS)Z",
            ));
        }
        let type_ = string("type", 64, &mut errs);
        match type_.as_deref() {
            None if get("type").is_none() => errs.push(FieldError::missing("type")),
            Some(t) if !TYPES.contains(&t) => errs.push(FieldError::invalid(
                "type",
                format!("type must be one of: {}", TYPES.join(", ")),
            )),
            _ => {}
        }
        let os = string("os", 64, &mut errs);
        match os.as_deref() {
            None if get("os").is_none() => errs.push(FieldError::missing("os")),
            Some(o) if !OSES.contains(&o) => errs.push(FieldError::invalid(
                "os",
                format!("os must be one of: {}", OSES.join(", ")),
            )),
            _ => {}
        }
        let origin = uuid_field("origin", &mut errs);
        let acl = match get("acl") {
            None => Vec::new(),
            Some(Value::String(s)) => match parse_uuid(s) {
                Some(u) => vec![u],
                None => {
                    errs.push(FieldError::invalid("acl", "acl must be an array of UUIDs"));
                    Vec::new()
                }
            },
            Some(Value::Array(a)) => {
                let parsed: Option<Vec<Uuid>> =
                    a.iter().map(|x| x.as_str().and_then(parse_uuid)).collect();
                match parsed {
                    Some(mut v) => {
                        let mut seen = std::collections::HashSet::new();
                        v.retain(|u| seen.insert(*u));
                        v
                    }
                    None => {
                        errs.push(FieldError::invalid("acl", "acl must be an array of UUIDs"));
                        Vec::new()
                    }
                }
            }
            Some(_) => {
                errs.push(FieldError::invalid("acl", "acl must be an array of UUIDs"));
                Vec::new()
            }
        };
        let requirements = get("requirements").cloned();
        if let Some(r) = &requirements {
            check_requirements(r, &mut errs);
        }
        let users = get("users").cloned();
        if users.as_ref().is_some_and(|u| {
            !u.as_array().is_some_and(|a| {
                a.iter().all(|x| {
                    x.as_object().is_some_and(|o| {
                        o.len() == 1 && o.get("name").is_some_and(Value::is_string)
                    })
                })
            })
        }) {
            errs.push(FieldError::invalid(
                "users",
                "users must be an array of {name}",
            ));
        }
        let billing_tags = match get("billing_tags") {
            None => None,
            Some(v) => match v.as_array().and_then(|a| {
                a.iter()
                    .map(|x| {
                        x.as_str()
                            .filter(|s| s.chars().count() <= 128)
                            .map(String::from)
                    })
                    .collect::<Option<Vec<_>>>()
            }) {
                Some(b) => Some(b),
                None => {
                    errs.push(FieldError::invalid(
                        "billing_tags",
                        "billing_tags must be an array of strings of at most 128 characters",
                    ));
                    None
                }
            },
        };
        let traits = get("traits").cloned();
        if traits.as_ref().is_some_and(|t| {
            !t.as_object().is_some_and(|o| {
                o.values()
                    .all(|v| v.is_string() || v.is_boolean() || v.is_array())
            })
        }) {
            errs.push(FieldError::invalid(
                "traits",
                "traits must be an object of strings, booleans or arrays",
            ));
        }
        let tags = match get("tags") {
            None => None,
            Some(Value::Object(o)) => {
                if serde_json::to_vec(o).map(|v| v.len()).unwrap_or(0) > 100 * 1024 {
                    errs.push(FieldError::invalid(
                        "tags",
                        "tags must be at most 100 KiB of JSON",
                    ));
                }
                Some(o.clone())
            }
            Some(_) => {
                errs.push(FieldError::invalid("tags", "tags must be an object"));
                None
            }
        };
        let generate_passwords = boolean("generate_passwords", &mut errs);
        let inherited_directories = match get("inherited_directories") {
            None => None,
            Some(v) => match v.as_array().and_then(|a| {
                a.iter()
                    .map(|x| x.as_str().map(String::from))
                    .collect::<Option<Vec<_>>>()
            }) {
                Some(d) => Some(d),
                None => {
                    errs.push(FieldError::invalid(
                        "inherited_directories",
                        "inherited_directories must be an array of strings",
                    ));
                    None
                }
            },
        };
        if inherited_directories.is_some() && type_.as_deref() != Some("zone-dataset") {
            errs.push(FieldError::invalid(
                "inherited_directories",
                "inherited_directories is only valid for type zone-dataset",
            ));
        }
        let zvol = type_.as_deref() == Some("zvol");
        let zvol_string = |k: &str, errs: &mut Vec<FieldError>| -> Option<String> {
            let v = string(k, 1024, errs);
            match (&v, zvol) {
                (None, true) if get(k).is_none() => errs.push(FieldError::missing(k)),
                (Some(_), false) => errs.push(FieldError::invalid(
                    k,
                    format!("{k} is only valid for type zvol"),
                )),
                _ => {}
            }
            v
        };
        let nic_driver = zvol_string("nic_driver", &mut errs);
        let disk_driver = zvol_string("disk_driver", &mut errs);
        let cpu_type = zvol_string("cpu_type", &mut errs);
        let image_size = match get("image_size") {
            None => {
                if zvol {
                    errs.push(FieldError::missing("image_size"));
                }
                None
            }
            Some(v) => match v.as_u64().filter(|n| *n > 0) {
                Some(n) if zvol => Some(n),
                Some(_) => {
                    errs.push(FieldError::invalid(
                        "image_size",
                        "image_size is only valid for type zvol",
                    ));
                    None
                }
                None => {
                    errs.push(FieldError::invalid(
                        "image_size",
                        "image_size must be a positive integer",
                    ));
                    None
                }
            },
        };
        let urn = string("urn", 1024, &mut errs);
        if let Some(s) = get("state").and_then(Value::as_str)
            && !STATES.contains(&s)
        {
            errs.push(FieldError::invalid("state", "invalid state"));
        }

        match (errs.is_empty(), owner, name, version, type_, os) {
            (true, Some(owner), Some(name), Some(version), Some(type_), Some(os)) => Ok(Fields {
                v,
                uuid,
                owner,
                name,
                version,
                description,
                homepage,
                eula,
                error,
                disabled,
                public,
                published_at,
                type_,
                os,
                origin,
                acl,
                requirements,
                users,
                billing_tags,
                traits,
                tags,
                generate_passwords,
                inherited_directories,
                nic_driver,
                disk_driver,
                cpu_type,
                image_size,
                urn,
            }),
            _ => {
                let mut names: Vec<String> = errs.iter().map(|e| e.field.clone()).collect();
                names.dedup();
                Err(ApiError::validation(
                    format!("invalid image data: {}", names.join(", ")),
                    errs,
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Map<String, Value> {
        json!({
            "owner": "930896af-bf8c-48d4-885c-6573a94b1853",
            "name": "base-64",
            "version": "1.0.0",
            "type": "zone-dataset",
            "os": "smartos"
        })
        .as_object()
        .cloned()
        .unwrap_or_default()
    }

    #[test]
    fn a_minimal_manifest_validates_and_serialises_strictly() {
        let img = Image::from_map(Uuid::nil(), &base()).unwrap_or_else(|e| panic!("{e}"));
        let m = img.manifest(false);
        let keys: Vec<&str> = m
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        assert_eq!(
            keys,
            [
                "v", "uuid", "owner", "name", "version", "state", "disabled", "public", "type",
                "os", "files"
            ]
        );
        for k in keys {
            assert!(MANIFEST_FIELDS.contains(&k));
        }
    }

    #[test]
    fn invalid_fields_are_listed() {
        let mut m = base();
        m.insert("name".into(), json!("bad*name"));
        m.insert("os".into(), json!("beos"));
        m.remove("version");
        m.insert("nic_driver".into(), json!("virtio"));
        let err = Image::from_map(Uuid::nil(), &m).unwrap_err();
        assert_eq!(err.code, "ValidationFailed");
        let fields: Vec<String> = err
            .errors
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, ["name", "version", "os", "nic_driver"]);
    }

    #[test]
    fn zvol_needs_its_drivers_and_size() {
        let mut m = base();
        m.insert("type".into(), json!("zvol"));
        let err = Image::from_map(Uuid::nil(), &m).unwrap_err();
        let fields: Vec<String> = err
            .errors
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            ["nic_driver", "disk_driver", "cpu_type", "image_size"]
        );
    }

    #[test]
    fn uuids_must_be_lower_case() {
        assert!(parse_uuid("930896af-bf8c-48d4-885c-6573a94b1853").is_some());
        assert!(parse_uuid("930896AF-bf8c-48d4-885c-6573a94b1853").is_none());
        assert!(parse_uuid("nope").is_none());
    }
}
