//! The life of an image record: CreateImage, AdminImportImage (from a body
//! or another IMGAPI), ActivateImage, Enable/DisableImage, UpdateImage, the
//! ACL routes and DeleteImage (reference sections 2.4 and 2.8 to 2.15).

use serde_json::{Map, Value};
use uuid::Uuid;

use super::manifest::{self, Editor, ManifestField, Placeholder};
use super::time;
use super::{ApiError, ApiResult, Code, Dependents, FieldError, Image, ImageState, Images, Imgapi};

/// Fields a manifest body may not hold at create (import only).
const IMPORT_ONLY: &[ManifestField] = &[
    ManifestField::Uuid,
    ManifestField::PublishedAt,
    ManifestField::Urn,
    ManifestField::Icon,
];

/// The body as a JSON object, or ValidationFailed.
fn object(body: &Value) -> ApiResult<Map<String, Value>> {
    body.as_object().cloned().ok_or_else(|| {
        ApiError::validation("invalid image data: body must be a JSON object", vec![])
    })
}

/// InvalidParameter "invalid extra parameters" for fields `allowed` refuses.
fn refuse_extra(m: &Map<String, Value>, allowed: impl Fn(&str) -> bool) -> ApiResult<()> {
    let extra: Vec<&str> = m
        .keys()
        .map(String::as_str)
        .filter(|k| !allowed(k))
        .collect();
    if extra.is_empty() {
        return Ok(());
    }
    Err(ApiError::new(
        Code::InvalidParameter,
        format!("invalid extra parameters: \"{}\"", extra.join("\", \"")),
    )
    .with_errors(
        extra
            .iter()
            .map(|n| FieldError::invalid(n, "unsupported parameter"))
            .collect(),
    ))
}

impl Imgapi {
    /// CreateImage.
    pub fn create(&self, account: Option<&Uuid>, body: &Value) -> ApiResult<Image> {
        let mut m = object(body)?;
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
        self.config().resolve_manifest(&mut m)?;
        refuse_extra(&m, |k| {
            ManifestField::parse(k).is_some_and(|f| !IMPORT_ONLY.contains(&f))
        })?;
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
        self.check_origin_exists(&img, account)?;
        self.check_owner_exists(&img.owner)?;
        self.write(|t| Ok(t.put::<Images>(&img.uuid, &img)?))?;
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
            return Err(ApiError::operator_only());
        }
        let mut m = object(body)?;
        // A DSAPI-era (v1) manifest is upgraded first, as upstream does.
        manifest::upgrade::upgrade(&mut m)?;
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
        // Imports always start unactivated, without files or icon.
        for k in ["files", "icon", "state"] {
            m.remove(k);
        }
        refuse_extra(&m, |k| ManifestField::parse(k).is_some())?;
        if m.get("owner").and_then(Value::as_str) == Some(&manifest::UNSET_OWNER.to_string())
            && let Some(admin) = self.config.admin_uuid
        {
            m.insert("owner".into(), Value::String(admin.to_string()));
        }
        let mut img = Image::from_map(*uuid, &m)?;
        self.check_origin_exists(&img, account)?;
        img.activated = false;
        self.write(|t| {
            if let Some(existing) = t.get::<Images>(uuid)?
                && existing.state() != ImageState::Creating
            {
                return Err(ApiError::already_exists(uuid));
            }
            t.put::<Images>(uuid, &img)?;
            Ok(())
        })?;
        Ok(img)
    }

    /// AdminImportImage with `source`: the manifest comes from another IMGAPI.
    pub fn admin_import_from(
        &self,
        uuid: &Uuid,
        account: Option<&Uuid>,
        source: &str,
    ) -> ApiResult<Image> {
        if account.is_some() {
            return Err(ApiError::operator_only());
        }
        let manifest = self.jobs.remote(source)?.get_image(uuid, None)?;
        self.admin_import(uuid, account, &Value::Object(manifest.to_map()))
    }

    /// ActivateImage. With remote durability the image is active only
    /// once the bucket holds it: when the publication fails the image is
    /// left as it was, the answer is 503 `StorageIsDown`, and the same
    /// request succeeds once the bucket is back.
    pub fn activate(&self, uuid: &Uuid, account: Option<&Uuid>) -> ApiResult<Image> {
        let before = self.load(uuid)?;
        let image = self.activate_here(uuid, account)?;
        self.in_bucket(uuid, before.into_iter().collect())?;
        Ok(image)
    }

    /// With remote durability (`durability: "remote"`): every segment
    /// uploaded, then the index pushed, so that a rebuild from the bucket
    /// has what was just committed (an activation, a clone, a copy); the
    /// answer waits for it, and concurrent callers share one publication.
    /// When it fails, the records in `undo` are put back as they were
    /// before the change, so the change is not done: the caller answers
    /// the error and a retry starts from the same state.
    pub(super) fn in_bucket(&self, uuid: &Uuid, undo: Vec<Image>) -> ApiResult<()> {
        if !self.store.remote_durability() {
            return Ok(());
        }
        let Err(e) = self.store.publish() else {
            return Ok(());
        };
        let mut err = ApiError::from(e);
        match self.put_back(undo) {
            Ok(()) => {
                err.message = format!(
                    "{}: image {uuid} was left as it was; retry once the object store is back",
                    err.message
                )
            }
            Err(undo) => {
                err.message = format!(
                    "{}: image {uuid} is changed here but not in the object store ({})",
                    err.message, undo.message
                )
            }
        }
        Err(err)
    }

    /// Puts image records back as they were (their files unchanged).
    pub(super) fn put_back(&self, records: Vec<Image>) -> ApiResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.write(|t| {
            for img in &records {
                t.put::<Images>(&img.uuid, img)?;
            }
            Ok(())
        })
    }

    fn activate_here(&self, uuid: &Uuid, account: Option<&Uuid>) -> ApiResult<Image> {
        self.mutate(uuid, account, |_, img| {
            if img.activated {
                return Err(ApiError::new(
                    Code::ImageAlreadyActivated,
                    format!("image {uuid} is already activated"),
                ));
            }
            if img.files.is_empty() {
                return Err(ApiError::new(
                    Code::NoActivationNoFile,
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
        let mut patch = match body.as_object() {
            Some(o) if !o.is_empty() => o.clone(),
            _ => {
                return Err(ApiError::validation(
                    "invalid image update data: no fields given",
                    vec![],
                ));
            }
        };
        self.config().resolve_manifest(&mut patch)?;
        check_update_keys(&patch, account.is_some())?;
        let before = self.load(uuid)?;
        let image = self.mutate(uuid, account, |_, img| {
            refuse_immutable_changes(&patch, img)?;
            let mut m = img.editable_map();
            for (k, v) in patch.iter().filter(|(k, _)| *k != "state") {
                if v.is_null() {
                    m.remove(k);
                } else {
                    m.insert(k.clone(), v.clone());
                }
            }
            img.apply_map(&m)?;
            self.check_owner_exists(&img.owner)?;
            if let Some(state) = patch.get("state").and_then(Value::as_str) {
                force_state(img, state)?;
            }
            if img.activated && img.published_at.is_none() {
                img.published_at = Some(time::iso8601(time::now_ms()));
            }
            Ok(())
        })?;
        // An operator's `state` is a way to an active image too, so it
        // waits for the bucket as ActivateImage does.
        if image.activated && patch.contains_key("state") {
            self.in_bucket(uuid, before.into_iter().collect())?;
        }
        Ok(image)
    }

    /// AddImageAcl / RemoveImageAcl.
    pub fn change_acl(
        &self,
        uuid: &Uuid,
        account: Option<&Uuid>,
        body: &Value,
        add: bool,
    ) -> ApiResult<Image> {
        let not_a_list = || ApiError::invalid_param("acl", "acl must be an array of accounts");
        let list: Vec<Uuid> = body
            .as_array()
            .ok_or_else(not_a_list)?
            .iter()
            .map(|x| match x.as_str() {
                Some(s) => self.config().resolve_account("acl", s),
                None => Err(not_a_list()),
            })
            .collect::<ApiResult<_>>()?;
        self.mutate(uuid, account, |_, img| {
            // Set membership, so a change is linear in the lists' sizes
            // (it runs under the commit lock).
            if add {
                let mut have: std::collections::HashSet<Uuid> = img.acl.iter().copied().collect();
                for u in list {
                    if have.insert(u) {
                        img.acl.push(u);
                    }
                }
            } else {
                let drop: std::collections::HashSet<Uuid> = list.into_iter().collect();
                img.acl.retain(|u| !drop.contains(u));
            }
            if img.acl.len() > MAX_ACL {
                return Err(acl_too_long());
            }
            Ok(())
        })
    }

    /// DeleteImage: refuses while other images name it as origin; releases
    /// its file and icon in the same transaction that removes the record.
    pub fn delete(&self, uuid: &Uuid, account: Option<&Uuid>) -> ApiResult<()> {
        self.get_owned(uuid, account)?;
        self.write(|t| {
            let img = t
                .get::<Images>(uuid)?
                .ok_or_else(ApiError::image_not_found)?;
            let dependents = Dependents::list(t, uuid)?;
            if !dependents.is_empty() {
                // Only images the caller may see are named.
                let mut named = Vec::new();
                for d in &dependents {
                    if let Some(i) = t.get::<Images>(d)?
                        && Self::can_see(&i, account)
                    {
                        named.push(i.uuid);
                    }
                }
                return Err(has_dependents(uuid, dependents.len(), &named));
            }
            for f in &img.files {
                t.unlink(&f.file_id)?;
            }
            if let Some(icon) = &img.icon {
                t.unlink(&icon.file_id)?;
            }
            // An unfinished copy into this image holds chunks: give them up.
            t.release_partial(uuid.as_bytes())?;
            t.delete::<Images>(uuid)?;
            Ok(())
        })
    }
}

/// Accounts one image may be shared with.
pub const MAX_ACL: usize = 1024;

pub(super) fn acl_too_long() -> ApiError {
    ApiError::invalid_param("acl", format!("acl holds at most {MAX_ACL} accounts"))
}

/// ImageHasDependentImages: how many, naming at most 5 of 10 or more of
/// those `named` (the ones the caller may see).
fn has_dependents(uuid: &Uuid, count: usize, named: &[Uuid]) -> ApiError {
    let shown: Vec<String> = named
        .iter()
        .take(if named.len() >= 10 { 5 } else { named.len() })
        .map(Uuid::to_string)
        .collect();
    ApiError::new(
        Code::ImageHasDependentImages,
        format!(
            "image \"{uuid}\" has {count} dependent incremental image(s): {}",
            shown.join(", ")
        ),
    )
}

/// UpdateImage's key rules: unknown keys, and operator keys from a user.
fn check_update_keys(patch: &Map<String, Value>, by_user: bool) -> ApiResult<()> {
    let mut errs = Vec::new();
    for k in patch.keys() {
        match ManifestField::parse(k).map(ManifestField::editor) {
            Some(Editor::Owner) => {}
            Some(Editor::Operator) if !by_user => {}
            Some(Editor::Operator) => errs.push(FieldError::not_allowed(
                k,
                "Can only be updated by operators",
            )),
            Some(Editor::Nobody) | None => {
                errs.push(FieldError::not_allowed(k, "Parameter cannot be updated"));
            }
        }
    }
    if errs.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    Err(ApiError::validation(
        format!("invalid image update data: {}", names.join(", ")),
        errs,
    ))
}

/// `files`, `origin` and `uuid` change only before activation, and here
/// not at all for `files` (docker digests) and `uuid`.
fn refuse_immutable_changes(patch: &Map<String, Value>, img: &Image) -> ApiResult<()> {
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
            Code::NotImplemented,
            "changing an image's uuid is not supported",
        ));
    }
    Ok(())
}

/// An operator's `state` in UpdateImage.
fn force_state(img: &mut Image, state: &str) -> ApiResult<()> {
    match ImageState::parse(state) {
        Some(ImageState::Creating) => img.placeholder_state = Some(Placeholder::Creating),
        Some(ImageState::Failed) => img.placeholder_state = Some(Placeholder::Failed),
        Some(ImageState::Active) => {
            img.placeholder_state = None;
            img.activated = true;
            img.disabled = false;
        }
        Some(ImageState::Disabled) => {
            img.placeholder_state = None;
            img.activated = true;
            img.disabled = true;
        }
        Some(ImageState::Unactivated) => {
            img.placeholder_state = None;
            img.activated = false;
        }
        None => {
            return Err(ApiError::validation(
                "invalid image update data: state",
                vec![FieldError::invalid(
                    "state",
                    format!("invalid state {state}"),
                )],
            ));
        }
    }
    Ok(())
}
