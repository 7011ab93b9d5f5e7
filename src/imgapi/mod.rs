//! IMGAPI rules as plain functions over the store: manifests, typed states
//! and error codes, visibility and ownership, ACLs, files and icons, clones,
//! copies between datacenters and their jobs. No HTTP types here: the
//! `http` layer turns requests into these calls and [`ApiError`]s into
//! responses, and supplies the [`Remote`](remote::Remote) that reaches other
//! datacenters.
//!
//! | module | rules |
//! | --- | --- |
//! | [`error`] | [`Code`] (every error code with its status), [`ApiError`], [`FieldError`] |
//! | [`manifest`] | the stored image, its states, the strict v2 manifest, validation as a table of rules |
//! | `accounts` | the account table: logins where account uuids are expected |
//! | `images` | CreateImage, AdminImportImage, Activate, Enable/Disable, UpdateImage, ACLs, DeleteImage |
//! | `files` | AddImageFile (also from another IMGAPI), GetImageFile, icons |
//! | [`list`] | ListImages: filters, account scoping, sorting, the inclusive marker |
//! | [`share`] | CloneImage with its origin chain, trusted sharers, settings |
//! | `lineage` | where an image comes from, what derives from it, what it costs |
//! | [`remote`] | the source datacenter as a copy sees it ([`Remote`](remote::Remote)) |
//! | [`copy`] | ImportFromDatacenter: checks, state rules, copying one image |
//! | [`jobs`] | a copy job's whole life: create, run, resume after restart, attach |
//! | [`checks`] | copied files checked whole after their copy, from a queue that survives restarts |
//! | [`time`] | IMGAPI and HTTP dates |
//!
//! Every change of an image record happens inside a store transaction, so
//! an image and the file references it holds change together (after a crash
//! either both changed or neither did).

mod accounts;
pub mod audit;
pub mod catalog;
pub mod checks;
pub mod copy;
pub mod error;
mod files;
mod images;
pub mod jobs;
pub mod lineage;
pub mod list;
pub mod manifest;
pub mod remote;
pub mod share;
pub mod time;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use uuid::Uuid;

use crate::store::{CodecError, Store, Table, Txn, json_decode, json_encode};
pub use error::{ApiError, ApiResult, Code, FieldCode, FieldError};
pub use files::FileParams;
pub use images::MAX_ACL;
pub use manifest::{Icon, Image, ImageFile, ImageState, parse_uuid};

/// Largest image file IMGAPI accepts.
pub const MAX_FILE_BYTES: u64 = 20 << 30;
/// Largest icon.
pub const MAX_ICON_BYTES: u64 = 128 * 1024;

/// A table of this layer: JSON values under a uuid's 16 bytes.
macro_rules! uuid_table {
    ($(#[$doc:meta])* $name:ident, $cf:literal, $value:ty $(, index: $index:path)?) => {
        $(#[$doc])*
        pub struct $name;
        impl Table for $name {
            const NAME: &'static str = $cf;
            type Key = Uuid;
            type Value = $value;
            fn key(key: &Uuid) -> Vec<u8> {
                key.as_bytes().to_vec()
            }
            fn encode(value: &$value) -> Result<Vec<u8>, CodecError> {
                json_encode(value)
            }
            fn decode(raw: &[u8]) -> Result<$value, CodecError> {
                json_decode(raw)
            }
            $(
                const INDEXED: bool = true;
                fn index_keys(value: &$value) -> Vec<(&'static str, Vec<u8>)> {
                    $index(value)
                }
            )?
        }
    };
}

uuid_table!(
    /// Image records by uuid; indexed by origin in [`Dependents`].
    Images,
    "images",
    Image,
    index: Dependents::of
);

/// Images by origin: the key is the origin's uuid then the image's, the
/// value empty. The store keeps it with every put and delete of an image
/// ([`Table::index_keys`]); DeleteImage finds dependents here instead of
/// decoding every image under the commit lock.
pub struct Dependents;

impl Dependents {
    /// Present once the index has been built from the images (the empty
    /// key: no origin's prefix matches it).
    pub(crate) const BUILT: &'static [u8] = b"";

    fn of(img: &Image) -> Vec<(&'static str, Vec<u8>)> {
        img.origin
            .map(|o| vec![(Self::NAME, [*o.as_bytes(), *img.uuid.as_bytes()].concat())])
            .unwrap_or_default()
    }

    /// The images whose origin is `origin`, as `t` sees them.
    pub fn list(t: &Txn<'_>, origin: &Uuid) -> crate::Result<Vec<Uuid>> {
        Ok(t.scan_all::<Self>(origin.as_bytes())?
            .into_iter()
            .filter_map(|(k, ())| k.get(16..).and_then(|u| Uuid::from_slice(u).ok()))
            .collect())
    }
}

impl Table for Dependents {
    const NAME: &'static str = "image_origins";
    type Key = [u8];
    type Value = ();
    fn key(key: &[u8]) -> Vec<u8> {
        key.to_vec()
    }
    fn encode((): &()) -> Result<Vec<u8>, CodecError> {
        Ok(Vec::new())
    }
    fn decode(_: &[u8]) -> Result<(), CodecError> {
        Ok(())
    }
}
uuid_table!(
    /// Per-account settings by account uuid.
    Settings,
    "settings",
    share::AccountSettings
);
uuid_table!(
    /// Copy jobs by job uuid.
    Jobs,
    "jobs",
    jobs::Job
);
uuid_table!(
    /// Copied files waiting for their whole-file check, by image uuid.
    FileChecks,
    "file_checks",
    checks::PendingCheck
);

/// The tables this layer keeps in the store (for
/// [`StoreOptions::tables`](crate::StoreOptions)).
pub const TABLES: &[&str] = &[
    Images::NAME,
    Dependents::NAME,
    Settings::NAME,
    Jobs::NAME,
    FileChecks::NAME,
];

/// IMGAPI's `mode`: RFD 113 is about `dc`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Dc,
    Public,
    Private,
}

impl Mode {
    pub const fn as_str(self) -> &'static str {
        match self {
            Mode::Dc => "dc",
            Mode::Public => "public",
            Mode::Private => "private",
        }
    }
}

/// The IMGAPI-style configuration (the keys of IMGAPI's config file).
#[derive(Clone, Debug)]
pub struct Config {
    pub mode: Mode,
    pub datacenter_name: String,
    pub admin_uuid: Option<Uuid>,
    /// Datacenter name to the IMGAPI URL copies pull from.
    pub imgapi_url_from_datacenter: BTreeMap<String, String>,
    /// When set, owners must be one of these (or the admin); when absent,
    /// owner-existence checks are skipped, as the reference allows in dc mode.
    pub accounts: Option<Vec<Uuid>>,
    /// Login to account uuid: the `accounts` config given as logins and
    /// the CloudAPI face's users. A login is accepted wherever an account
    /// uuid is (`?account=`, `owner`, `acl`, trusted accounts).
    pub logins: BTreeMap<String, Uuid>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mode: Mode::Dc,
            datacenter_name: "local".into(),
            admin_uuid: None,
            imgapi_url_from_datacenter: BTreeMap::new(),
            accounts: None,
            logins: BTreeMap::new(),
        }
    }
}

/// The image service. Cheap to clone; every clone is the same service.
#[derive(Clone)]
pub struct Imgapi {
    store: Store,
    config: Arc<Config>,
    jobs: Arc<jobs::CopyJobs>,
    chunks: Arc<crate::transfer::ChunkServer>,
    catalog: Arc<catalog::Catalog>,
}

impl Imgapi {
    /// The service over `store` (opened with [`TABLES`]); copies between
    /// datacenters go through `copies`. Builds the catalog of images.
    pub fn new(store: Store, config: Config, copies: jobs::Copies) -> crate::Result<Self> {
        // A store written before the origin index gets it built, once.
        if store.get::<Dependents>(Dependents::BUILT)?.is_none() {
            store.transaction(|t| {
                t.rebuild_indexes::<Images>(&[Dependents::NAME])?;
                t.put::<Dependents>(Dependents::BUILT, &())
            })?;
        }
        Ok(Self {
            catalog: Arc::new(catalog::Catalog::load(&store)?),
            chunks: Arc::new(crate::transfer::ChunkServer::new(store.clone())),
            store,
            config: Arc::new(config),
            jobs: Arc::new(jobs::CopyJobs::new(copies)),
        })
    }

    /// Runs `f` in a store transaction; the images it changed are brought
    /// up to date in the catalog once it commits. Every change of an image
    /// record goes through here (or refreshes the catalog itself).
    fn write<T>(&self, f: impl FnOnce(&mut Txn<'_>) -> ApiResult<T>) -> ApiResult<T> {
        let mut changed: Vec<Uuid> = Vec::new();
        let out = self.store.transaction(|t| {
            let out = f(t)?;
            changed = t
                .pending_keys::<Images>()
                .iter()
                .filter_map(|k| Uuid::from_slice(k).ok())
                .collect();
            Ok::<_, ApiError>(out)
        })?;
        self.catalog.refresh(&self.store, &changed)?;
        Ok(out)
    }

    /// True when the catalog holds exactly what the images table holds.
    pub fn catalog_matches(&self) -> ApiResult<bool> {
        Ok(self.catalog.matches(&self.store)?)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// True for the admin uuid and the all-zero uuid.
    pub fn is_operator_owned(&self, img: &impl catalog::Facts) -> bool {
        img.owner().is_nil() || Some(img.owner()) == self.config.admin_uuid
    }

    /// The image with this uuid, whoever may see it.
    pub fn load(&self, uuid: &Uuid) -> ApiResult<Option<Image>> {
        Ok(self.store.get::<Images>(uuid)?)
    }

    /// Every image.
    pub fn all(&self) -> ApiResult<Vec<Image>> {
        Ok(self
            .store
            .scan_all::<Images>(&[])?
            .into_iter()
            .map(|(_, img)| img)
            .collect())
    }

    /// The visibility rule (reference section 1), the one place it lives:
    /// the owner sees everything; others see activated images that are
    /// public or whose ACL holds them; operators (no account) see all.
    pub fn can_see(img: &impl catalog::Facts, account: Option<&Uuid>) -> bool {
        let Some(a) = account else { return true };
        if img.owner() == *a {
            return true;
        }
        img.activated() && (img.public() || img.shared_with(a))
    }

    /// An image `account` may see; an invisible one is indistinguishable
    /// from a missing one.
    pub fn get_visible(&self, uuid: &Uuid, account: Option<&Uuid>) -> ApiResult<Image> {
        match self.load(uuid)? {
            Some(img) if Self::can_see(&img, account) => Ok(img),
            _ => Err(ApiError::image_not_found()),
        }
    }

    /// Visibility, then the owner rule for mutations.
    pub fn check_owner(img: &Image, account: Option<&Uuid>) -> ApiResult<()> {
        match account {
            Some(a) if !Self::can_see(img, Some(a)) => Err(ApiError::image_not_found()),
            Some(a) if img.owner != *a => Err(ApiError::not_owner(a, &img.uuid)),
            _ => Ok(()),
        }
    }

    /// An image the caller may change: visible, and theirs.
    pub fn get_owned(&self, uuid: &Uuid, account: Option<&Uuid>) -> ApiResult<Image> {
        let img = self.get_visible(uuid, account)?;
        Self::check_owner(&img, account)?;
        Ok(img)
    }

    fn owner_exists(&self, owner: &Uuid) -> bool {
        match &self.config.accounts {
            None => true,
            Some(list) => {
                list.contains(owner) || Some(*owner) == self.config.admin_uuid || owner.is_nil()
            }
        }
    }

    fn check_owner_exists(&self, owner: &Uuid) -> ApiResult<()> {
        if self.owner_exists(owner) {
            Ok(())
        } else {
            Err(ApiError::new(
                Code::OwnerDoesNotExist,
                format!("owner {owner} does not exist"),
            ))
        }
    }

    /// The origin must exist and, for an account, be one it may see: an
    /// origin it may not see is answered exactly as one that does not
    /// exist (no probing, and no building on others' private images).
    fn check_origin_exists(&self, img: &Image, account: Option<&Uuid>) -> ApiResult<()> {
        let Some(origin) = &img.origin else {
            return Ok(());
        };
        match self.load(origin)? {
            Some(o) if Self::can_see(&o, account) => Ok(()),
            _ => Err(ApiError::new(
                Code::OriginDoesNotExist,
                format!("origin image {origin} does not exist"),
            )),
        }
    }

    /// Loads, checks visibility and ownership, applies `f`, saves: all in
    /// one transaction.
    fn mutate(
        &self,
        uuid: &Uuid,
        account: Option<&Uuid>,
        f: impl FnOnce(&mut Txn<'_>, &mut Image) -> ApiResult<()>,
    ) -> ApiResult<Image> {
        self.write(|t| {
            let mut img = t
                .get::<Images>(uuid)?
                .ok_or_else(ApiError::image_not_found)?;
            Self::check_owner(&img, account)?;
            f(t, &mut img)?;
            t.put::<Images>(&img.uuid, &img)?;
            Ok(img)
        })
    }
}

/// Standard base64 with padding (Content-MD5).
pub fn base64_encode(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let b = [
            c.first().copied().unwrap_or(0),
            c.get(1).copied().unwrap_or(0),
            c.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sym = |i: u32| char::from(T.get(((n >> i) & 63) as usize).copied().unwrap_or(b'A'));
        out.push(sym(18));
        out.push(sym(12));
        out.push(if c.len() > 1 { sym(6) } else { '=' });
        out.push(if c.len() > 2 { sym(0) } else { '=' });
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_known_values() {
        assert_eq!(super::base64_encode(b""), "");
        assert_eq!(super::base64_encode(b"f"), "Zg==");
        assert_eq!(super::base64_encode(b"fo"), "Zm8=");
        assert_eq!(super::base64_encode(b"foo"), "Zm9v");
    }
}
