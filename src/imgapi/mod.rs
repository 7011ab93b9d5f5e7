//! IMGAPI rules as plain functions over the store: manifests, states,
//! visibility and ownership, ACLs, files and icons. No HTTP types here; the
//! `http` layer turns requests into these calls and [`ApiError`]s into
//! responses.
//!
//! Every change of an image record happens inside a store transaction, so
//! an image and the file references it holds change together (after a crash
//! either both changed or neither did).

pub mod error;
pub mod import;
pub mod list;
pub mod manifest;
pub mod share;
pub mod time;

use std::collections::BTreeMap;
use std::io::Read;

use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::id::FileId;
use crate::store::{Store, Txn};
pub use error::{ApiError, ApiResult, FieldError};
pub use manifest::{Icon, Image, ImageFile, parse_uuid};

/// The column family that holds image records (key: the 16 uuid bytes).
pub const CF_IMAGES: &str = "images";
/// Column families this layer needs from the store.
pub const COLUMN_FAMILIES: &[&str] = &[CF_IMAGES, share::CF_SETTINGS, import::CF_JOBS];

/// Largest image file IMGAPI accepts.
pub const MAX_FILE_BYTES: u64 = 20 << 30;
/// Largest icon.
pub const MAX_ICON_BYTES: u64 = 128 * 1024;

/// The IMGAPI-style configuration (the keys of IMGAPI's config file).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    #[serde(default = "default_mode")]
    pub mode: String,
    #[serde(default = "default_dc")]
    pub datacenter_name: String,
    #[serde(default)]
    pub admin_uuid: Option<Uuid>,
    #[serde(default)]
    pub imgapi_url_from_datacenter: BTreeMap<String, String>,
    /// When set, owners must be one of these (or the admin); when absent,
    /// owner-existence checks are skipped, as the reference allows in dc mode.
    #[serde(default)]
    pub accounts: Option<Vec<Uuid>>,
}

fn default_mode() -> String {
    "dc".into()
}
fn default_dc() -> String {
    "local".into()
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mode: default_mode(),
            datacenter_name: default_dc(),
            admin_uuid: None,
            imgapi_url_from_datacenter: BTreeMap::new(),
            accounts: None,
        }
    }
}

/// The image service.
#[derive(Clone)]
pub struct Imgapi {
    store: Store,
    config: Config,
    jobs: std::sync::Arc<import::Jobs>,
}

/// The query parameters of AddImageFile.
#[derive(Clone, Debug, Default)]
pub struct FileParams {
    pub compression: Option<String>,
    pub sha1: Option<String>,
    pub dataset_guid: Option<String>,
    pub storage: Option<String>,
    /// Content-Length, when the client sent one.
    pub content_length: Option<u64>,
}

fn key(uuid: &Uuid) -> [u8; 16] {
    *uuid.as_bytes()
}

fn decode(raw: &[u8]) -> ApiResult<Image> {
    serde_json::from_slice(raw)
        .map_err(|e| ApiError::internal(format!("undecodable image record: {e}")))
}

fn save(t: &mut Txn<'_>, img: &Image) -> ApiResult<()> {
    let raw = serde_json::to_vec(img).map_err(|e| ApiError::internal(e.to_string()))?;
    t.put_cf(CF_IMAGES, &key(&img.uuid), &raw)?;
    Ok(())
}

fn load_in(t: &Txn<'_>, uuid: &Uuid) -> ApiResult<Option<Image>> {
    t.index()
        .get_cf(CF_IMAGES, &key(uuid))?
        .map(|raw| decode(&raw))
        .transpose()
}

fn file_id(f: &str) -> ApiResult<FileId> {
    f.parse::<FileId>()
        .map_err(|e| ApiError::internal(format!("bad file id in image record: {e}")))
}

/// Counts bytes and fails past a limit, so an upload without
/// Content-Length cannot exceed the 20 GiB cap either.
struct Limited<R> {
    inner: R,
    read: u64,
    limit: u64,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.limit {
            return Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                "upload exceeds the size limit",
            ));
        }
        Ok(n)
    }
}

impl Imgapi {
    pub fn new(store: Store, config: Config) -> Self {
        Self {
            store,
            config,
            jobs: std::sync::Arc::default(),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// True for the admin uuid and the all-zero uuid.
    pub fn is_operator_owned(&self, img: &Image) -> bool {
        img.owner.is_nil() || Some(img.owner) == self.config.admin_uuid
    }

    /// The image with this uuid, whoever may see it.
    pub fn load(&self, uuid: &Uuid) -> ApiResult<Option<Image>> {
        self.store
            .index()
            .get_cf(CF_IMAGES, &key(uuid))?
            .map(|raw| decode(&raw))
            .transpose()
    }

    /// Every image.
    pub fn all(&self) -> ApiResult<Vec<Image>> {
        self.store
            .index()
            .scan_cf(CF_IMAGES, &[])?
            .iter()
            .map(|(_, v)| decode(v))
            .collect()
    }

    /// The visibility rule (reference section 1), the one place it lives:
    /// the owner sees everything; others see activated images that are
    /// public or whose ACL holds them; operators (no account) see all.
    pub fn can_see(img: &Image, account: Option<&Uuid>) -> bool {
        let Some(a) = account else { return true };
        if img.owner == *a {
            return true;
        }
        img.activated && (img.public || img.acl.contains(a))
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

    fn owner_exists(&self, owner: &Uuid) -> bool {
        match &self.config.accounts {
            None => true,
            Some(list) => {
                list.contains(owner) || Some(*owner) == self.config.admin_uuid || owner.is_nil()
            }
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
        self.transact(|t| {
            let mut img = load_in(t, uuid)?.ok_or_else(ApiError::image_not_found)?;
            Self::check_owner(&img, account)?;
            f(t, &mut img)?;
            save(t, &img)?;
            Ok(img)
        })
    }

    /// Runs `f` in a transaction that commits only if `f` succeeds.
    pub fn transact<T>(&self, f: impl FnOnce(&mut Txn<'_>) -> ApiResult<T>) -> ApiResult<T> {
        let mut out = None;
        let res = self.store.transaction(|t| match f(t) {
            Ok(v) => {
                out = Some(Ok(v));
                Ok(())
            }
            Err(e) => {
                out = Some(Err(e));
                Err(crate::error::Error::InvalidInput("aborted".into()))
            }
        });
        match (res, out) {
            (_, Some(Err(e))) => Err(e),
            (Err(e), _) => Err(e.into()),
            (Ok(()), Some(Ok(v))) => Ok(v),
            (Ok(()), None) => Err(ApiError::internal("transaction produced nothing")),
        }
    }

    /// CreateImage.
    pub fn create(&self, account: Option<&Uuid>, body: &Value) -> ApiResult<Image> {
        let Some(obj) = body.as_object() else {
            return Err(ApiError::validation(
                "invalid image data: body must be a JSON object",
                vec![],
            ));
        };
        let mut m: Map<String, Value> = obj.clone();
        if m.contains_key("state") {
            return Err(ApiError::validation(
                "invalid image data: state",
                vec![FieldError::not_allowed(
                    "state",
                    "state cannot be set on create",
                )],
            ));
        }
        m.remove("files");
        let extra: Vec<&String> = m
            .keys()
            .filter(|k| {
                !manifest::MANIFEST_FIELDS.contains(&k.as_str())
                    || matches!(k.as_str(), "uuid" | "published_at" | "urn" | "icon")
            })
            .collect();
        if !extra.is_empty() {
            let names: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
            return Err(ApiError::new(
                "InvalidParameter",
                format!("invalid extra parameters: \"{}\"", names.join("\", \"")),
            )
            .with_errors(
                names
                    .iter()
                    .map(|n| FieldError::invalid(n, "unsupported parameter"))
                    .collect(),
            ));
        }
        if let Some(a) = account {
            match m.get("owner") {
                None => {
                    m.insert("owner".into(), Value::String(a.to_string()));
                }
                Some(o) if o.as_str() != Some(a.to_string().as_str()) => {
                    return Err(ApiError::invalid_param(
                        "owner",
                        "owner must match the account",
                    ));
                }
                Some(_) => {}
            }
        }
        m.entry("v").or_insert(Value::from(2));
        let img = Image::from_map(Uuid::new_v4(), &m)?;
        if let Some(origin) = &img.origin
            && self.load(origin)?.is_none()
        {
            return Err(ApiError::new(
                "OriginDoesNotExist",
                format!("origin image {origin} does not exist"),
            ));
        }
        if !self.owner_exists(&img.owner) {
            return Err(ApiError::new(
                "OwnerDoesNotExist",
                format!("owner {} does not exist", img.owner),
            ));
        }
        self.transact(|t| {
            save(t, &img)?;
            Ok(())
        })?;
        Ok(img)
    }

    /// AdminImportImage: create an unactivated image from a full manifest,
    /// keeping uuid, published_at, acl, public and disabled.
    pub fn admin_import(
        &self,
        uuid: &Uuid,
        account: Option<&Uuid>,
        body: &Value,
    ) -> ApiResult<Image> {
        if account.is_some() {
            return Err(ApiError::new(
                "OperatorOnly",
                "this endpoint is for operators only",
            ));
        }
        let Some(obj) = body.as_object() else {
            return Err(ApiError::validation(
                "invalid image data: body must be a JSON object",
                vec![],
            ));
        };
        let mut m = obj.clone();
        match m.get("uuid").and_then(Value::as_str) {
            Some(u) if u != uuid.to_string() => {
                return Err(ApiError::invalid_param(
                    "uuid",
                    format!("uuid in the body ({u}) does not match the path ({uuid})"),
                ));
            }
            _ => {}
        }
        m.insert("uuid".into(), Value::String(uuid.to_string()));
        m.remove("files");
        m.remove("icon");
        let state = m.remove("state");
        let extra: Vec<String> = m
            .keys()
            .filter(|k| !manifest::MANIFEST_FIELDS.contains(&k.as_str()))
            .cloned()
            .collect();
        if !extra.is_empty() {
            return Err(ApiError::new(
                "InvalidParameter",
                format!("invalid extra parameters: \"{}\"", extra.join("\", \"")),
            )
            .with_errors(
                extra
                    .iter()
                    .map(|n| FieldError::invalid(n, "unsupported parameter"))
                    .collect(),
            ));
        }
        if m.get("owner").and_then(Value::as_str) == Some(&manifest::UNSET_OWNER.to_string())
            && let Some(admin) = self.config.admin_uuid
        {
            m.insert("owner".into(), Value::String(admin.to_string()));
        }
        let mut img = Image::from_map(*uuid, &m)?;
        if let Some(origin) = &img.origin
            && self.load(origin)?.is_none()
        {
            return Err(ApiError::new(
                "OriginDoesNotExist",
                format!("origin image {origin} does not exist"),
            ));
        }
        let _ = state; // imports always start unactivated
        img.activated = false;
        self.transact(|t| {
            if let Some(existing) = load_in(t, uuid)?
                && existing.state() != "creating"
            {
                return Err(ApiError::new(
                    "ImageUuidAlreadyExists",
                    format!("image uuid {uuid} already exists"),
                ));
            }
            save(t, &img)?;
            Ok(())
        })?;
        Ok(img)
    }

    /// Checks that run before an upload's body is read.
    pub fn check_add_file(
        &self,
        uuid: &Uuid,
        account: Option<&Uuid>,
        p: &FileParams,
    ) -> ApiResult<Image> {
        match p.compression.as_deref() {
            None => {
                return Err(
                    ApiError::new("InvalidParameter", "missing \"compression\" param").with_errors(
                        vec![FieldError {
                            field: "compression".into(),
                            code: "Missing",
                            message: None,
                        }],
                    ),
                );
            }
            Some(c) if !manifest::COMPRESSIONS.contains(&c) => {
                return Err(ApiError::invalid_param(
                    "compression",
                    format!(
                        "invalid compression \"{c}\": must be one of {}",
                        manifest::COMPRESSIONS.join(", ")
                    ),
                ));
            }
            _ => {}
        }
        if p.storage.is_some() {
            if account.is_some() {
                return Err(ApiError::new(
                    "InvalidParameter",
                    "storage can only be set by operators",
                )
                .with_errors(vec![FieldError::not_allowed("storage", "operators only")]));
            }
            if p.storage.as_deref() != Some("local") {
                return Err(ApiError::invalid_param(
                    "storage",
                    "only \"local\" storage exists here",
                ));
            }
        }
        let img = self.load(uuid)?.ok_or_else(ApiError::image_not_found)?;
        Self::check_owner(&img, account)?;
        if img.activated {
            return Err(ApiError::new(
                "ImageFilesImmutable",
                format!("cannot modify files on activated image {uuid}"),
            ));
        }
        if p.content_length.is_some_and(|n| n > MAX_FILE_BYTES) {
            return Err(ApiError::new(
                "Upload",
                format!("file size exceeds the maximum of {MAX_FILE_BYTES} bytes"),
            ));
        }
        Ok(img)
    }

    /// AddImageFile: streams `body` into the engine, checks size and SHA-1,
    /// then in one transaction links the file to the image and releases the
    /// file it replaces.
    pub fn add_file(
        &self,
        uuid: &Uuid,
        account: Option<&Uuid>,
        p: &FileParams,
        body: impl Read,
    ) -> ApiResult<Image> {
        self.check_add_file(uuid, account, p)?;
        let mut limited = Limited {
            inner: body,
            read: 0,
            limit: MAX_FILE_BYTES,
        };
        let staged = match self.store.put_staged(&mut limited) {
            Ok(s) => s,
            Err(_) if limited.read > MAX_FILE_BYTES => {
                return Err(ApiError::new("Upload", "file exceeds the maximum size"));
            }
            Err(crate::error::Error::Io { context, source }) if context.contains("input") => {
                return Err(ApiError::new(
                    "Download",
                    format!("upload of image {uuid} failed: {source}"),
                ));
            }
            Err(e) => return Err(e.into()),
        };
        if staged.size == 0 {
            return Err(ApiError::new("Download", "image file is empty"));
        }
        if let Some(n) = p.content_length
            && n != staged.size
        {
            return Err(ApiError::new(
                "Download",
                format!(
                    "Content-Length {n} does not match the {} bytes received",
                    staged.size
                ),
            ));
        }
        let sha1 = hex::encode(staged.sha1);
        if let Some(want) = &p.sha1
            && *want != sha1
        {
            return Err(ApiError::new(
                "Download",
                format!(
                    "sha1 of the uploaded file ({sha1}) does not match the sha1 param ({want})"
                ),
            ));
        }
        let compression = p.compression.clone().unwrap_or_else(|| "none".into());
        let md5 = base64_encode(&staged.md5);
        self.mutate(uuid, account, |t, img| {
            if img.activated {
                return Err(ApiError::new(
                    "ImageFilesImmutable",
                    format!("cannot modify files on activated image {uuid}"),
                ));
            }
            let put = t.commit_put(&staged)?;
            for old in std::mem::take(&mut img.files) {
                t.unlink(&file_id(&old.file_id)?)?;
            }
            img.files = vec![ImageFile {
                sha1: sha1.clone(),
                size: put.size,
                compression: compression.clone(),
                dataset_guid: p.dataset_guid.clone(),
                content_md5: md5.clone(),
                mtime_ms: time::now_ms(),
                stor: "local".into(),
                file_id: put.file_id.to_hex(),
            }];
            Ok(())
        })
    }

    /// The file to serve for GetImageFile.
    pub fn file_for_read(
        &self,
        uuid: &Uuid,
        account: Option<&Uuid>,
        index: usize,
    ) -> ApiResult<(Image, ImageFile, FileId)> {
        let img = self.get_visible(uuid, account)?;
        let f = img.files.get(index).cloned().ok_or_else(|| {
            ApiError::not_found(format!("image {uuid} has no file at index {index}"))
        })?;
        let id = file_id(&f.file_id)?;
        Ok((img, f, id))
    }

    /// ActivateImage.
    pub fn activate(&self, uuid: &Uuid, account: Option<&Uuid>) -> ApiResult<Image> {
        self.mutate(uuid, account, |_, img| {
            if img.activated {
                return Err(ApiError::new(
                    "ImageAlreadyActivated",
                    format!("image {uuid} is already activated"),
                ));
            }
            if img.files.is_empty() {
                return Err(ApiError::new(
                    "NoActivationNoFile",
                    format!("image {uuid} cannot be activated: it has no file"),
                ));
            }
            if img.published_at.is_none() {
                img.published_at = Some(time::iso8601(time::now_ms()));
            }
            img.activated = true;
            img.placeholder_state = None;
            Ok(())
        })
    }

    /// EnableImage / DisableImage.
    pub fn set_disabled(
        &self,
        uuid: &Uuid,
        account: Option<&Uuid>,
        disabled: bool,
    ) -> ApiResult<Image> {
        self.mutate(uuid, account, |_, img| {
            img.disabled = disabled;
            Ok(())
        })
    }

    /// UpdateImage.
    pub fn update(&self, uuid: &Uuid, account: Option<&Uuid>, body: &Value) -> ApiResult<Image> {
        let patch = match body.as_object() {
            Some(o) if !o.is_empty() => o.clone(),
            _ => {
                return Err(ApiError::validation(
                    "invalid image update data: no fields given",
                    vec![],
                ));
            }
        };
        let mut errs = Vec::new();
        for k in patch.keys() {
            let user = manifest::USER_MUTABLE.contains(&k.as_str());
            let operator = manifest::OPERATOR_MUTABLE.contains(&k.as_str());
            if !user && !operator {
                errs.push(FieldError::not_allowed(k, "Parameter cannot be updated"));
            } else if operator && account.is_some() {
                errs.push(FieldError::not_allowed(
                    k,
                    "Can only be updated by operators",
                ));
            }
        }
        if !errs.is_empty() {
            let names: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
            return Err(ApiError::validation(
                format!("invalid image update data: {}", names.join(", ")),
                errs,
            ));
        }
        let owners_ok = |o: &Uuid| self.owner_exists(o);
        self.mutate(uuid, account, |_, img| {
            let mut m = img.editable_map();
            for k in ["files", "origin", "uuid"] {
                if patch.contains_key(k) && img.activated {
                    return Err(ApiError::validation(
                        format!("invalid image update data: {k}"),
                        vec![FieldError::not_allowed(
                            k,
                            "can only be changed on unactivated images",
                        )],
                    ));
                }
            }
            if patch.contains_key("files") {
                return Err(ApiError::validation(
                    "invalid image update data: files",
                    vec![FieldError::not_allowed(
                        "files",
                        "only docker digests may be updated; not supported here",
                    )],
                ));
            }
            if patch.contains_key("uuid") {
                return Err(ApiError::new(
                    "NotImplemented",
                    "changing an image's uuid is not supported",
                ));
            }
            let state = patch.get("state").cloned();
            for (k, v) in &patch {
                if k == "state" {
                    continue;
                }
                if v.is_null() {
                    m.remove(k);
                } else {
                    m.insert(k.clone(), v.clone());
                }
            }
            img.apply_map(&m)?;
            if !owners_ok(&img.owner) {
                return Err(ApiError::new(
                    "OwnerDoesNotExist",
                    format!("owner {} does not exist", img.owner),
                ));
            }
            match state.as_ref().and_then(Value::as_str) {
                None => {}
                Some(s @ ("creating" | "failed")) => img.placeholder_state = Some(s.into()),
                Some("active") => {
                    img.placeholder_state = None;
                    img.activated = true;
                    img.disabled = false;
                }
                Some("disabled") => {
                    img.placeholder_state = None;
                    img.activated = true;
                    img.disabled = true;
                }
                Some("unactivated") => {
                    img.placeholder_state = None;
                    img.activated = false;
                }
                Some(other) => {
                    return Err(ApiError::validation(
                        "invalid image update data: state",
                        vec![FieldError::invalid(
                            "state",
                            format!("invalid state {other}"),
                        )],
                    ));
                }
            }
            if img.activated && img.published_at.is_none() {
                img.published_at = Some(time::iso8601(time::now_ms()));
            }
            Ok(())
        })
    }

    /// AddImageAcl / RemoveImageAcl.
    pub fn change_acl(
        &self,
        uuid: &Uuid,
        account: Option<&Uuid>,
        body: &Value,
        add: bool,
    ) -> ApiResult<Image> {
        let list: Vec<Uuid> = body
            .as_array()
            .and_then(|a| a.iter().map(|x| x.as_str().and_then(parse_uuid)).collect())
            .ok_or_else(|| {
                ApiError::invalid_param("acl", "acl must be an array of account UUIDs")
            })?;
        self.mutate(uuid, account, |_, img| {
            if add {
                for u in list {
                    if !img.acl.contains(&u) {
                        img.acl.push(u);
                    }
                }
            } else {
                img.acl.retain(|u| !list.contains(u));
            }
            Ok(())
        })
    }

    /// DeleteImage: refuses while other images name it as origin; releases
    /// its file and icon in the same transaction that removes the record.
    pub fn delete(&self, uuid: &Uuid, account: Option<&Uuid>) -> ApiResult<()> {
        let img = self.load(uuid)?.ok_or_else(ApiError::image_not_found)?;
        Self::check_owner(&img, account)?;
        self.transact(|t| {
            let img = load_in(t, uuid)?.ok_or_else(ApiError::image_not_found)?;
            let dependents: Vec<Uuid> = t
                .index()
                .scan_cf(CF_IMAGES, &[])?
                .iter()
                .filter_map(|(_, v)| decode(v).ok())
                .filter(|i| i.origin == Some(*uuid))
                .map(|i| i.uuid)
                .collect();
            if !dependents.is_empty() {
                let shown: Vec<String> = dependents
                    .iter()
                    .take(if dependents.len() >= 10 {
                        5
                    } else {
                        dependents.len()
                    })
                    .map(Uuid::to_string)
                    .collect();
                return Err(ApiError::new(
                    "ImageHasDependentImages",
                    format!(
                        "image \"{uuid}\" has {} dependent incremental image(s): {}",
                        dependents.len(),
                        shown.join(", ")
                    ),
                ));
            }
            for f in &img.files {
                t.unlink(&file_id(&f.file_id)?)?;
            }
            if let Some(icon) = &img.icon {
                t.unlink(&file_id(&icon.file_id)?)?;
            }
            // An unfinished copy into this image holds chunks: give them up.
            t.release_partial(uuid.as_bytes())?;
            t.delete_cf(CF_IMAGES, &key(uuid))?;
            Ok(())
        })
    }

    /// AddImageIcon: the icon is stored in the engine like any file.
    pub fn add_icon(
        &self,
        uuid: &Uuid,
        account: Option<&Uuid>,
        content_type: Option<&str>,
        sha1: Option<&str>,
        body: &[u8],
    ) -> ApiResult<Image> {
        let ct = content_type.unwrap_or_default();
        if !matches!(ct, "image/jpeg" | "image/gif" | "image/png") {
            return Err(ApiError::new(
                "Upload",
                format!(
                    "invalid icon content type \"{ct}\": must be image/jpeg, image/gif or image/png"
                ),
            ));
        }
        if body.len() as u64 > MAX_ICON_BYTES {
            return Err(ApiError::new(
                "Upload",
                format!("icon is larger than {MAX_ICON_BYTES} bytes"),
            ));
        }
        if body.is_empty() {
            return Err(ApiError::new("Download", "icon is empty"));
        }
        let img = self.load(uuid)?.ok_or_else(ApiError::image_not_found)?;
        Self::check_owner(&img, account)?;
        let staged = self.store.put_staged(body)?;
        let got = hex::encode(staged.sha1);
        if let Some(want) = sha1
            && want != got
        {
            return Err(ApiError::new(
                "Download",
                format!("sha1 of the icon ({got}) does not match the sha1 param ({want})"),
            ));
        }
        let md5 = base64_encode(&staged.md5);
        let ct = ct.to_string();
        self.mutate(uuid, account, |t, img| {
            let put = t.commit_put(&staged)?;
            if let Some(old) = img.icon.take() {
                t.unlink(&file_id(&old.file_id)?)?;
            }
            img.icon = Some(Icon {
                sha1: got.clone(),
                size: put.size,
                content_md5: md5.clone(),
                content_type: ct.clone(),
                mtime_ms: time::now_ms(),
                file_id: put.file_id.to_hex(),
            });
            Ok(())
        })
    }

    /// The icon to serve for GetImageIcon.
    pub fn icon_for_read(&self, uuid: &Uuid, account: Option<&Uuid>) -> ApiResult<(Icon, FileId)> {
        let img = self.get_visible(uuid, account)?;
        let icon = img
            .icon
            .ok_or_else(|| ApiError::not_found(format!("image {uuid} has no icon")))?;
        let id = file_id(&icon.file_id)?;
        Ok((icon, id))
    }

    /// DeleteImageIcon.
    pub fn delete_icon(&self, uuid: &Uuid, account: Option<&Uuid>) -> ApiResult<Image> {
        self.mutate(uuid, account, |t, img| {
            if let Some(old) = img.icon.take() {
                t.unlink(&file_id(&old.file_id)?)?;
            }
            Ok(())
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
