//! Image files and icons: AddImageFile (streamed into the engine, or pulled
//! from another IMGAPI), GetImageFile, and the icon routes (reference
//! sections 2.5 to 2.7).

use std::io::Read;

use uuid::Uuid;

use super::manifest::{self, STOR_LOCAL};
use super::{
    ApiError, ApiResult, Code, FieldCode, FieldError, Icon, Image, ImageFile, Imgapi,
    MAX_FILE_BYTES, MAX_ICON_BYTES, base64_encode, time,
};
use crate::id::FileId;

/// The query parameters of AddImageFile.
#[derive(Clone, Debug, Default)]
pub struct FileParams {
    pub compression: Option<String>,
    pub sha1: Option<String>,
    pub dataset_guid: Option<String>,
    pub storage: Option<String>,
    /// Content-Length, when the client sent one.
    pub content_length: Option<u64>,
    /// Content-MD5 (base64), when the client sent one: checked against
    /// what arrived.
    pub content_md5: Option<String>,
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

fn files_immutable(uuid: &Uuid) -> ApiError {
    ApiError::new(
        Code::ImageFilesImmutable,
        format!("cannot modify files on activated image {uuid}"),
    )
}

fn check_params(account: Option<&Uuid>, p: &FileParams) -> ApiResult<()> {
    match p.compression.as_deref() {
        None => {
            return Err(
                ApiError::new(Code::InvalidParameter, "missing \"compression\" param")
                    .with_errors(vec![FieldError::bare("compression", FieldCode::Missing)]),
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
                Code::InvalidParameter,
                "storage can only be set by operators",
            )
            .with_errors(vec![FieldError::not_allowed("storage", "operators only")]));
        }
        if p.storage.as_deref() != Some(STOR_LOCAL) {
            return Err(ApiError::invalid_param(
                "storage",
                "only \"local\" storage exists here",
            ));
        }
    }
    Ok(())
}

impl Imgapi {
    /// Checks that run before an upload's body is read.
    pub fn check_add_file(
        &self,
        uuid: &Uuid,
        account: Option<&Uuid>,
        p: &FileParams,
    ) -> ApiResult<Image> {
        check_params(account, p)?;
        let img = self.load(uuid)?.ok_or_else(ApiError::image_not_found)?;
        Self::check_owner(&img, account)?;
        if img.activated {
            return Err(files_immutable(uuid));
        }
        if p.content_length.is_some_and(|n| n > MAX_FILE_BYTES) {
            return Err(ApiError::new(
                Code::Upload,
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
                return Err(ApiError::new(Code::Upload, "file exceeds the maximum size"));
            }
            Err(crate::error::Error::Input(source)) => {
                return Err(ApiError::upload_failed(uuid, source));
            }
            Err(e) => return Err(e.into()),
        };
        if staged.size == 0 {
            return Err(ApiError::new(Code::Download, "image file is empty"));
        }
        if let Some(n) = p.content_length
            && n != staged.size
        {
            return Err(ApiError::new(
                Code::Download,
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
                Code::Download,
                format!(
                    "sha1 of the uploaded file ({sha1}) does not match the sha1 param ({want})"
                ),
            ));
        }
        let compression = p.compression.clone().unwrap_or_else(|| "none".into());
        let md5 = base64_encode(&staged.md5);
        if let Some(want) = &p.content_md5
            && want.trim() != md5
        {
            return Err(ApiError::new(
                Code::Download,
                format!(
                    "Content-MD5 of the uploaded file ({md5}) does not match the header ({want})"
                ),
            ));
        }
        self.mutate(uuid, account, |t, img| {
            if img.activated {
                return Err(files_immutable(uuid));
            }
            let put = t.commit_put(&staged)?;
            for old in std::mem::take(&mut img.files) {
                t.unlink(&old.file_id)?;
            }
            img.files = vec![ImageFile {
                sha1: sha1.clone(),
                size: put.size,
                compression: compression.clone(),
                dataset_guid: p.dataset_guid.clone(),
                content_md5: md5.clone(),
                mtime_ms: time::now_ms(),
                stor: STOR_LOCAL.into(),
                file_id: put.file_id,
            }];
            Ok(())
        })
    }

    /// AddImageFile with `source`: this server fetches the file from
    /// another IMGAPI and checks it against that server's size and SHA-1.
    pub fn add_file_from_source(
        &self,
        uuid: &Uuid,
        account: Option<&Uuid>,
        source: &str,
        dataset_guid: Option<String>,
    ) -> ApiResult<Image> {
        if account.is_some() {
            return Err(ApiError::new(
                Code::OperatorOnly,
                "file?source= is for operators only",
            ));
        }
        let remote = self.jobs.remote(source)?;
        let manifest = remote.get_image(uuid, None)?;
        let f = manifest.file().cloned().ok_or_else(|| {
            ApiError::new(Code::Download, format!("remote image {uuid} has no file"))
        })?;
        let params = FileParams {
            compression: Some(f.compression),
            sha1: Some(f.sha1),
            dataset_guid: f.dataset_guid.or(dataset_guid),
            storage: None,
            content_length: Some(f.size),
            content_md5: None,
        };
        // Check before the download starts; `add_file` checks again under
        // its transaction.
        self.check_add_file(uuid, None, &params)?;
        self.add_file(uuid, None, &params, remote.file_stream(uuid, None)?)
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
        let id = f.file_id;
        Ok((img, f, id))
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
                Code::Upload,
                format!(
                    "invalid icon content type \"{ct}\": must be image/jpeg, image/gif or image/png"
                ),
            ));
        }
        if body.len() as u64 > MAX_ICON_BYTES {
            return Err(ApiError::new(
                Code::Upload,
                format!("icon is larger than {MAX_ICON_BYTES} bytes"),
            ));
        }
        if body.is_empty() {
            return Err(ApiError::new(Code::Download, "icon is empty"));
        }
        let img = self.load(uuid)?.ok_or_else(ApiError::image_not_found)?;
        Self::check_owner(&img, account)?;
        let staged = self.store.put_staged(body)?;
        let got = hex::encode(staged.sha1);
        if let Some(want) = sha1
            && want != got
        {
            return Err(ApiError::new(
                Code::Download,
                format!("sha1 of the icon ({got}) does not match the sha1 param ({want})"),
            ));
        }
        let md5 = base64_encode(&staged.md5);
        self.mutate(uuid, account, |t, img| {
            let put = t.commit_put(&staged)?;
            if let Some(old) = img.icon.take() {
                t.unlink(&old.file_id)?;
            }
            img.icon = Some(Icon {
                sha1: got.clone(),
                size: put.size,
                content_md5: md5.clone(),
                content_type: ct.to_string(),
                mtime_ms: time::now_ms(),
                file_id: put.file_id,
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
        let id = icon.file_id;
        Ok((icon, id))
    }

    /// DeleteImageIcon.
    pub fn delete_icon(&self, uuid: &Uuid, account: Option<&Uuid>) -> ApiResult<Image> {
        self.mutate(uuid, account, |t, img| {
            if let Some(old) = img.icon.take() {
                t.unlink(&old.file_id)?;
            }
            Ok(())
        })
    }
}

impl Imgapi {
    /// The chunk protocol's source for an image's file, for an account
    /// that may see the image.
    pub fn chunk_source(
        &self,
        uuid: &Uuid,
        account: Option<&Uuid>,
    ) -> ApiResult<crate::transfer::LocalSource> {
        let (_, _, id) = self.file_for_read(uuid, account, 0)?;
        Ok(self.chunks.file(id)?)
    }
}

impl Imgapi {
    /// The images whose file or icon is one of `files` (what damage found
    /// by `verify` costs, in images).
    pub fn images_holding(&self, files: &[FileId]) -> ApiResult<Vec<Uuid>> {
        if files.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        self.store.scan::<super::Images>(&[], |_, img| {
            let holds = img.files.iter().any(|f| files.contains(&f.file_id))
                || img
                    .icon
                    .as_ref()
                    .is_some_and(|i| files.contains(&i.file_id));
            if holds {
                out.push(img.uuid);
            }
            std::ops::ControlFlow::Continue(())
        })?;
        Ok(out)
    }
}
