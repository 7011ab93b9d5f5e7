//! Image manifests: the stored form, validation (imgmanifest's rules, section
//! 3 of the reference) and the strict v2 serialisation.
//!
//! The stored form keeps what the API never shows (`activated`, each file's
//! engine id and MD5, the icon object, provenance); [`Image::manifest`] emits
//! only manifest fields, because a real IMGAPI importing from us rejects
//! anything else.

#[cfg(test)]
mod golden;
mod rules;
pub mod upgrade;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::error::ApiResult;
use crate::id::FileId;
pub use rules::{COMPRESSIONS, OSES, TYPES};

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
    /// The engine's file id (BLAKE3 of the content, stored as hex).
    pub file_id: FileId,
}

/// A stored icon (the API shows only `icon: true`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Icon {
    pub sha1: String,
    pub size: u64,
    pub content_md5: String,
    pub content_type: String,
    pub mtime_ms: u64,
    pub file_id: FileId,
}

/// An image's state (reference section 4): computed from `activated` and
/// `disabled`, except for placeholders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageState {
    Active,
    Unactivated,
    Disabled,
    Creating,
    Failed,
}

impl ImageState {
    /// The state an image's stored facts mean: a placeholder's own, else
    /// `unactivated` until activated, then `active` or `disabled`.
    pub const fn of(placeholder: Option<Placeholder>, activated: bool, disabled: bool) -> Self {
        if let Some(p) = placeholder {
            return p.state();
        }
        match (activated, disabled) {
            (false, _) => ImageState::Unactivated,
            (true, false) => ImageState::Active,
            (true, true) => ImageState::Disabled,
        }
    }

    pub const ALL: [ImageState; 5] = [
        ImageState::Active,
        ImageState::Unactivated,
        ImageState::Disabled,
        ImageState::Creating,
        ImageState::Failed,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ImageState::Active => "active",
            ImageState::Unactivated => "unactivated",
            ImageState::Disabled => "disabled",
            ImageState::Creating => "creating",
            ImageState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

impl std::fmt::Display for ImageState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The states an operator may force on a placeholder image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Placeholder {
    Creating,
    Failed,
}

impl Placeholder {
    pub const fn state(self) -> ImageState {
        match self {
            Placeholder::Creating => ImageState::Creating,
            Placeholder::Failed => ImageState::Failed,
        }
    }
}

/// How an image came to be here from another one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProvenanceKind {
    /// Cloned from an image shared with its owner (links, no copy).
    Clone,
    /// Copied from another datacenter.
    Copy,
}

impl ProvenanceKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            ProvenanceKind::Clone => "clone",
            ProvenanceKind::Copy => "copy",
        }
    }
}

/// Where stored files live, as `files[].stor` shows it.
pub const STOR_LOCAL: &str = "local";

/// Where an image came from, when it was cloned or copied (not a manifest
/// field: served by the lineage endpoint).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Provenance {
    pub how: ProvenanceKind,
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
    /// Set for placeholders; otherwise the state is computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placeholder_state: Option<Placeholder>,
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
    pub fn state(&self) -> ImageState {
        ImageState::of(self.placeholder_state, self.activated, self.disabled)
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
        if self.state() == ImageState::Failed
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
        let f = rules::validate(m)?;
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
        assert_eq!(err.code, crate::imgapi::Code::ValidationFailed);
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
