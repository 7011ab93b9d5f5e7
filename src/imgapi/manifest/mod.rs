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
mod wire;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::error::ApiResult;
use crate::id::FileId;
pub use rules::{COMPRESSIONS, OSES, TYPES};
pub use wire::{Editor, Manifest, ManifestField, ManifestFile};

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

    /// The v2 manifest: only fields of the reference, each shown as
    /// upstream shows it (`admin_fields`: with `files[].stor`).
    pub fn manifest(&self, admin_fields: bool) -> Manifest {
        let state = self.state();
        Manifest {
            v: self.v,
            uuid: self.uuid,
            owner: self.owner,
            name: self.name.clone(),
            version: self.version.clone(),
            description: self.description.clone().filter(|d| !d.is_empty()),
            homepage: self.homepage.clone(),
            eula: self.eula.clone(),
            icon: self.icon.is_some(),
            state,
            // An operator may have set one on an image that is no longer
            // failed; it means nothing there.
            error: self.error.clone().filter(|_| state == ImageState::Failed),
            disabled: self.disabled,
            public: self.public,
            published_at: self.published_at.clone(),
            type_: self.type_.clone(),
            os: self.os.clone(),
            origin: self.origin,
            files: self
                .files
                .iter()
                .map(|f| ManifestFile {
                    sha1: f.sha1.clone(),
                    size: f.size,
                    compression: f.compression.clone(),
                    dataset_guid: f.dataset_guid.clone(),
                    stor: admin_fields.then(|| f.stor.clone()),
                })
                .collect(),
            acl: self.acl.clone(),
            requirements: self.requirements.clone(),
            users: self.users.clone(),
            billing_tags: self.billing_tags.clone().unwrap_or_default(),
            traits: self
                .traits
                .as_ref()
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            tags: self.tags.clone(),
            generate_passwords: self.generate_passwords == Some(true),
            inherited_directories: self.inherited_directories.clone(),
            nic_driver: self.nic_driver.clone(),
            disk_driver: self.disk_driver.clone(),
            cpu_type: self.cpu_type.clone(),
            image_size: self.image_size,
            channels: None,
            urn: self.urn.clone(),
        }
    }

    /// The manifest fields as a map for UpdateImage to patch (`state` and
    /// `files` are handled by the caller).
    pub fn editable_map(&self) -> Map<String, Value> {
        let mut m = self.manifest(false).to_map();
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
        let m = img.manifest(false).to_map();
        let keys: Vec<&str> = m.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "v", "uuid", "owner", "name", "version", "state", "disabled", "public", "type",
                "os", "files"
            ]
        );
        for k in keys {
            assert!(ManifestField::parse(k).is_some());
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
