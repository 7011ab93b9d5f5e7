//! The v2 manifest as IMGAPI sends it (reference section 3): one type for
//! what the daemon answers and what the client reads, and one table of the
//! fields that says who may change each.
//!
//! Field order is the wire order, and each field's presence rule is its
//! `skip_serializing_if`: a real IMGAPI importing from us rejects any key
//! it does not know, and Etags hash these bytes.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::ImageState;

/// One entry of `files`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    pub sha1: String,
    pub size: u64,
    pub compression: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_guid: Option<String>,
    /// Where the file is stored; only with `inclAdminFields`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stor: Option<String>,
}

/// An image manifest on the wire. The payloads the spec leaves free-form
/// (`error`, `requirements`, `users`, `traits`, `tags`) stay JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub v: u64,
    pub uuid: Uuid,
    pub owner: Uuid,
    pub name: String,
    pub version: String,
    /// Absent rather than empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub homepage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eula: Option<String>,
    /// Whether the image has an icon: `true` or absent.
    #[serde(default, skip_serializing_if = "is_false")]
    pub icon: bool,
    pub state: ImageState,
    /// Only on failed images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default)]
    pub public: bool,
    /// Present once activated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_at: Option<String>,
    #[serde(rename = "type")]
    pub type_: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Uuid>,
    #[serde(default)]
    pub files: Vec<ManifestFile>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acl: Vec<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirements: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub billing_tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub traits: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Map<String, Value>>,
    /// Upstream's quirk: emitted only when true.
    #[serde(default, skip_serializing_if = "is_false")]
    pub generate_passwords: bool,
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
    /// What an upstream server with update channels adds; this server has
    /// none and never sends it, so it is not in [`ManifestField`] either.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urn: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Manifest {
    /// The manifest as a JSON object, for the map-based rules (validation
    /// of arbitrary input reads maps) and for lookups by field name.
    pub fn to_map(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    }

    /// `files[0]`, the one file of every image type but lxd.
    pub fn file(&self) -> Option<&ManifestFile> {
        self.files.first()
    }
}

/// Who may change a manifest field with UpdateImage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Editor {
    /// The image's owner (and operators).
    Owner,
    /// Operators only (some fields only before activation).
    Operator,
    /// Nobody: set by the server, or by their own endpoints.
    Nobody,
}

macro_rules! manifest_fields {
    ($($variant:ident $name:literal $editor:ident,)*) => {
        /// A manifest field, declared once with its wire name and editor.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ManifestField {
            $($variant,)*
        }

        impl ManifestField {
            /// Every field, in output order.
            pub const ALL: &[ManifestField] = &[$(ManifestField::$variant,)*];

            /// The field's key on the wire.
            pub const fn name(self) -> &'static str {
                match self {
                    $(ManifestField::$variant => $name,)*
                }
            }

            pub const fn editor(self) -> Editor {
                match self {
                    $(ManifestField::$variant => Editor::$editor,)*
                }
            }
        }
    };
}

manifest_fields! {
    V "v" Nobody,
    Uuid "uuid" Operator,
    Owner "owner" Operator,
    Name "name" Owner,
    Version "version" Owner,
    Description "description" Owner,
    Homepage "homepage" Owner,
    Eula "eula" Owner,
    Icon "icon" Nobody,
    State "state" Operator,
    Error "error" Operator,
    Disabled "disabled" Nobody,
    Public "public" Owner,
    PublishedAt "published_at" Nobody,
    Type "type" Nobody,
    Os "os" Owner,
    Origin "origin" Operator,
    Files "files" Operator,
    Acl "acl" Owner,
    Requirements "requirements" Owner,
    Users "users" Owner,
    BillingTags "billing_tags" Operator,
    Traits "traits" Operator,
    Tags "tags" Owner,
    GeneratePasswords "generate_passwords" Owner,
    InheritedDirectories "inherited_directories" Owner,
    NicDriver "nic_driver" Owner,
    DiskDriver "disk_driver" Owner,
    CpuType "cpu_type" Owner,
    ImageSize "image_size" Owner,
    Urn "urn" Nobody,
}

impl ManifestField {
    /// The field named `name`, if it is a manifest field.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|f| f.name() == name)
    }

    /// Whether UpdateImage may change it at all (by someone).
    pub const fn is_mutable(self) -> bool {
        !matches!(self.editor(), Editor::Nobody)
    }
}
