//! The IMGAPI routes. Each handler parses, calls `imgapi` (on the blocking
//! pool: the engine does synchronous I/O), and shapes the response.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{OriginalUri, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::{Stream, StreamExt, TryStreamExt};
use serde_json::{Value, json};
use sha1::{Digest, Sha1};
use uuid::Uuid;

use super::AppState;
use super::error::{HttpError, HttpResult};
use crate::id::FileId;
use crate::imgapi::import::RemoteFactory;
use crate::imgapi::list::ListQuery;
use crate::imgapi::{ApiError, FieldError, FileParams, Image, Imgapi, parse_uuid, time};
use crate::store::Store;

type St = State<Arc<AppState>>;
type Pairs = Query<Vec<(String, String)>>;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/ping", get(ping))
        .route("/images", get(list_images).post(create_image))
        .route(
            "/images/{uuid}",
            get(get_image).post(image_action).delete(delete_image),
        )
        .route("/images/{uuid}/file", get(get_file).put(put_file))
        .route("/images/{uuid}/file/from-url", post(file_from_url))
        .route(
            "/images/{uuid}/file/chunks",
            get(file_chunks).post(fetch_chunks),
        )
        .route("/images/{uuid}/jobs", get(image_jobs))
        .route("/jobs/{uuid}", get(get_job))
        .route(
            "/images/{uuid}/icon",
            get(get_icon).put(put_icon).delete(delete_icon),
        )
        .route("/images/{uuid}/acl", post(acl))
        .route("/images/{uuid}/clone", post(clone_image))
        .route("/images/{uuid}/lineage", get(lineage))
        .route(
            "/accounts/{uuid}/settings",
            get(get_settings).put(put_settings).post(put_settings),
        )
        .route("/state", get(get_state).post(post_state))
}

/// Unknown routes, as restify answers them.
pub async fn not_found(uri: OriginalUri) -> HttpError {
    ApiError::not_found(format!("{} does not exist", uri.path())).into()
}

pub async fn method_not_allowed(req: Request) -> HttpError {
    ApiError::new(
        "MethodNotAllowedError",
        format!("{} is not allowed", req.method()),
    )
    .into()
}

fn q(pairs: &[(String, String)], key: &str) -> Option<String> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

fn account(pairs: &[(String, String)]) -> HttpResult<Option<Uuid>> {
    match q(pairs, "account") {
        None => Ok(None),
        Some(a) => parse_uuid(&a).map(Some).ok_or_else(|| {
            ApiError::new(
                "InvalidParameter",
                format!("invalid \"account\": {a:?} is not a UUID"),
            )
            .with_errors(vec![FieldError {
                field: "account".into(),
                code: "Invalid",
                message: None,
            }])
            .into()
        }),
    }
}

fn path_uuid(raw: &str, uri: &OriginalUri) -> HttpResult<Uuid> {
    parse_uuid(raw)
        .ok_or_else(|| ApiError::not_found(format!("{} does not exist", uri.path())).into())
}

/// Runs engine work on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> HttpResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| HttpError::from(ApiError::internal(format!("worker failed: {e}"))))?
        .map_err(HttpError::from)
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec_pretty(body).unwrap_or_default();
    let mut r = (status, bytes).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn etag_of(bytes: &[u8]) -> String {
    format!("\"{}\"", hex::encode(Sha1::digest(bytes)))
}

fn etag_matches(header_value: Option<&HeaderValue>, etag: &str) -> Option<bool> {
    let v = header_value?.to_str().ok()?;
    Some(
        v.split(',')
            .map(str::trim)
            .any(|t| t == "*" || t == etag || t.trim_matches('"') == etag.trim_matches('"')),
    )
}

/// An image manifest with its Etag; honours If-None-Match.
fn image_response(img: &Image, admin: bool, headers: &HeaderMap) -> Response {
    let body = serde_json::to_vec_pretty(&img.manifest(admin)).unwrap_or_default();
    let etag = etag_of(&body);
    if etag_matches(headers.get(header::IF_NONE_MATCH), &etag) == Some(true) {
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(v) = HeaderValue::from_str(&etag) {
            r.headers_mut().insert(header::ETAG, v);
        }
        return r;
    }
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    r
}

/// A JSON request body: empty means `{}`; anything but JSON is refused.
fn json_body(headers: &HeaderMap, body: &Bytes) -> HttpResult<Value> {
    if let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        let mime = ct.split(';').next().unwrap_or_default().trim();
        if !body.is_empty() && mime != "application/json" && !mime.ends_with("+json") {
            return Err(ApiError::new(
                "UnsupportedMediaType",
                format!("content type {mime} is not supported; send application/json"),
            )
            .into());
        }
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new("InvalidContent", format!("Invalid JSON: {e}")).into())
}

fn admin_fields(pairs: &[(String, String)]) -> bool {
    q(pairs, "inclAdminFields").as_deref() == Some("true")
}

async fn ping(State(st): St, Query(pairs): Pairs) -> HttpResult<Response> {
    if let Some(name) = q(&pairs, "error") {
        const KNOWN: &[&str] = &[
            "ValidationFailed",
            "InvalidParameter",
            "ImageFilesImmutable",
            "ImageAlreadyActivated",
            "NoActivationNoFile",
            "OperatorOnly",
            "ImageUuidAlreadyExists",
            "Upload",
            "Download",
            "StorageIsDown",
            "StorageUnsupported",
            "RemoteSourceError",
            "OwnerDoesNotExist",
            "AccountDoesNotExist",
            "NotImageOwner",
            "ImageNotShared",
            "OriginDoesNotExist",
            "OriginIsNotActive",
            "ImageHasDependentImages",
            "NotAvailable",
            "NotImplemented",
            "InternalError",
            "ResourceNotFound",
            "InsufficientServerVersion",
        ];
        return Err(match name.as_str() {
            "ValidationFailed" => ApiError::validation("boom", vec![]),
            n if KNOWN.contains(&n) => ApiError::internal("boom"),
            n => ApiError::invalid_param("error", format!("unknown error name {n:?}")),
        }
        .into());
    }
    let _ = &st;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "ping": "pong",
            "version": "4.13.1",
            "imgapi": true,
            "pid": std::process::id(),
            "imgstore": env!("CARGO_PKG_VERSION"),
        }),
    ))
}

async fn list_images(State(st): St, Query(pairs): Pairs) -> HttpResult<Response> {
    let query = ListQuery::parse(&pairs)?;
    let admin = admin_fields(&pairs);
    let api = st.api.clone();
    let images = blocking(move || api.list(&query)).await?;
    let body: Vec<Value> = images.iter().map(|i| i.manifest(admin)).collect();
    Ok(json_response(StatusCode::OK, &Value::Array(body)))
}

async fn get_image(
    State(st): St,
    Path(raw): Path<String>,
    uri: OriginalUri,
    Query(pairs): Pairs,
    headers: HeaderMap,
) -> HttpResult<Response> {
    let uuid = path_uuid(&raw, &uri)?;
    let acct = account(&pairs)?;
    let api = st.api.clone();
    let img = blocking(move || api.get_visible(&uuid, acct.as_ref())).await?;
    Ok(image_response(&img, admin_fields(&pairs), &headers))
}

async fn create_image(
    State(st): St,
    Query(pairs): Pairs,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResult<Response> {
    let acct = account(&pairs)?;
    match q(&pairs, "action").as_deref() {
        None => {}
        Some("create-from-vm") => {
            return Err(ApiError::new(
                "NotAvailable",
                "creating an image from a VM is not available on this server",
            )
            .into());
        }
        Some(a) => {
            return Err(ApiError::invalid_param(
                "action",
                format!("\"{a}\" is not a valid action"),
            )
            .into());
        }
    }
    let body = json_body(&headers, &body)?;
    let api = st.api.clone();
    let img = blocking(move || api.create(acct.as_ref(), &body)).await?;
    Ok(image_response(&img, false, &HeaderMap::new()))
}

async fn image_action(
    State(st): St,
    Path(raw): Path<String>,
    uri: OriginalUri,
    Query(pairs): Pairs,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResult<Response> {
    let uuid = path_uuid(&raw, &uri)?;
    let acct = account(&pairs)?;
    let action = q(&pairs, "action");
    let api = st.api.clone();
    // Imports come before the image look-up: the image is not expected to exist.
    match action.as_deref() {
        Some("import") => {
            let manifest = match q(&pairs, "source") {
                Some(source) => {
                    if acct.is_some() {
                        return Err(ApiError::new(
                            "OperatorOnly",
                            "this endpoint is for operators only",
                        )
                        .into());
                    }
                    let remotes = Arc::clone(&st.remotes);
                    blocking(move || remotes.remote(&source).get_image(&uuid, None)).await?
                }
                None => json_body(&headers, &body)?,
            };
            let img = blocking(move || api.admin_import(&uuid, acct.as_ref(), &manifest)).await?;
            return Ok(image_response(&img, false, &HeaderMap::new()));
        }
        Some("import-from-datacenter") => {
            let dc = q(&pairs, "datacenter");
            let st2 = Arc::clone(&st);
            let decision = blocking(move || {
                st2.api.import_from_datacenter(
                    &uuid,
                    acct.as_ref(),
                    dc.as_deref(),
                    st2.remotes.as_ref(),
                )
            })
            .await?;
            let job = match decision {
                crate::imgapi::import::Decision::Run(job) => {
                    st.spawn_job(job.clone());
                    job
                }
                crate::imgapi::import::Decision::Done(job) => job,
            };
            let mut r = json_response(
                StatusCode::OK,
                &json!({"image_uuid": uuid, "job_uuid": job.uuid}),
            );
            // Callers poll the job here, at this very server.
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("127.0.0.1");
            if let Ok(v) = HeaderValue::from_str(&format!("http://{host}")) {
                r.headers_mut()
                    .insert(header::HeaderName::from_static("workflow-api"), v);
            }
            return Ok(r);
        }
        Some("import-remote") => {
            return Err(ApiError::new(
                "NotAvailable",
                format!(
                    "action {:?} is not available on this server yet",
                    action.unwrap_or_default()
                ),
            )
            .into());
        }
        _ => {}
    }
    let lookup = api.clone();
    let img = blocking(move || lookup.get_visible(&uuid, acct.as_ref())).await?;
    if action.as_deref() == Some("change-stor") {
        return Err(ApiError::new("NotAvailable", "only local storage exists here").into());
    }
    Imgapi::check_owner(&img, acct.as_ref())?;
    let current = serde_json::to_vec_pretty(&img.manifest(false)).unwrap_or_default();
    if etag_matches(headers.get(header::IF_MATCH), &etag_of(&current)) == Some(false) {
        return Err(ApiError::new("PreconditionFailed", "if-match: no match").into());
    }
    let img = match action.as_deref() {
        Some("export") => {
            return Err(ApiError::new(
                "NotAvailable",
                "export needs Manta, which is not configured",
            )
            .into());
        }
        Some("activate") => blocking(move || api.activate(&uuid, acct.as_ref())).await?,
        Some("enable") => blocking(move || api.set_disabled(&uuid, acct.as_ref(), false)).await?,
        Some("disable") => blocking(move || api.set_disabled(&uuid, acct.as_ref(), true)).await?,
        Some("update") => {
            let body = json_body(&headers, &body)?;
            blocking(move || api.update(&uuid, acct.as_ref(), &body)).await?
        }
        None => {
            return Err(
                ApiError::new("InvalidParameter", "no image \"action\" was specified")
                    .with_errors(vec![FieldError {
                        field: "action".into(),
                        code: "MissingParameter",
                        message: None,
                    }])
                    .into(),
            );
        }
        Some(a) => {
            return Err(ApiError::invalid_param(
                "action",
                format!("\"{a}\" is not a valid action"),
            )
            .into());
        }
    };
    Ok(image_response(&img, false, &HeaderMap::new()))
}

async fn delete_image(
    State(st): St,
    Path(raw): Path<String>,
    uri: OriginalUri,
    Query(pairs): Pairs,
) -> HttpResult<Response> {
    let uuid = path_uuid(&raw, &uri)?;
    let acct = account(&pairs)?;
    let api = st.api.clone();
    blocking(move || api.delete(&uuid, acct.as_ref())).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn file_params(pairs: &[(String, String)], headers: &HeaderMap) -> FileParams {
    FileParams {
        compression: q(pairs, "compression"),
        sha1: q(pairs, "sha1"),
        dataset_guid: q(pairs, "dataset_guid"),
        storage: q(pairs, "storage"),
        content_length: headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()),
    }
}

async fn put_file(
    State(st): St,
    Path(raw): Path<String>,
    uri: OriginalUri,
    Query(pairs): Pairs,
    headers: HeaderMap,
    body: Body,
) -> HttpResult<Response> {
    let uuid = path_uuid(&raw, &uri)?;
    let acct = account(&pairs)?;
    let api = st.api.clone();
    if let Some(source) = q(&pairs, "source") {
        return file_from_source(st, uuid, acct, source, &pairs).await;
    }
    let params = file_params(&pairs, &headers);
    let check = (api.clone(), params.clone());
    blocking(move || {
        check
            .0
            .check_add_file(&uuid, acct.as_ref(), &check.1)
            .map(|_| ())
    })
    .await?;
    let reader = BlockReader::spawn(body.into_data_stream().map_err(std::io::Error::other));
    let img = blocking(move || api.add_file(&uuid, acct.as_ref(), &params, reader)).await?;
    Ok(image_response(&img, false, &HeaderMap::new()))
}

/// AddImageFile with `?source=`: this server fetches the file from another
/// IMGAPI and checks it against that server's size and SHA-1.
async fn file_from_source(
    st: Arc<AppState>,
    uuid: Uuid,
    acct: Option<Uuid>,
    source: String,
    pairs: &[(String, String)],
) -> HttpResult<Response> {
    if acct.is_some() {
        return Err(ApiError::new("OperatorOnly", "file?source= is for operators only").into());
    }
    let api = st.api.clone();
    let remotes = Arc::clone(&st.remotes);
    let dataset_guid = q(pairs, "dataset_guid");
    let img = blocking(move || {
        let remote = remotes.remote(&source);
        let manifest = remote.get_image(&uuid, None)?;
        let f = manifest
            .get("files")
            .and_then(|f| f.get(0))
            .cloned()
            .ok_or_else(|| ApiError::new("Download", format!("remote image {uuid} has no file")))?;
        let text = |k: &str| f.get(k).and_then(Value::as_str).map(str::to_string);
        let params = FileParams {
            compression: text("compression"),
            sha1: text("sha1"),
            dataset_guid: text("dataset_guid").or(dataset_guid),
            storage: None,
            content_length: f.get("size").and_then(Value::as_u64),
        };
        // Check before the download starts; `add_file` checks again under
        // its transaction.
        api.check_add_file(&uuid, None, &params)?;
        api.add_file(&uuid, None, &params, remote.file_stream(&uuid, None)?)
    })
    .await?;
    Ok(image_response(&img, false, &HeaderMap::new()))
}

async fn file_from_url(Path(raw): Path<String>, uri: OriginalUri) -> HttpResult<Response> {
    path_uuid(&raw, &uri)?;
    Err(ApiError::new(
        "NotAvailable",
        "AddImageFileFromUrl needs https, which this server does not speak; upload the file with PUT",
    )
    .into())
}

/// Size of the blocks passed between the async and the blocking side.
const BLOCK: usize = 1 << 20;

/// Feeds a request body to the engine's blocking put: an async task gathers
/// the body's frames into 1 MiB blocks, and the blocking side reads those,
/// so the hand-over costs one channel operation per megabyte.
struct BlockReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
}

impl BlockReader {
    fn spawn(stream: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            let mut buf = Vec::with_capacity(BLOCK);
            while let Some(item) = stream.next().await {
                match item {
                    Ok(bytes) => {
                        buf.extend_from_slice(&bytes);
                        if buf.len() >= BLOCK {
                            let full = std::mem::replace(&mut buf, Vec::with_capacity(BLOCK));
                            if tx.send(Ok(full)).await.is_err() {
                                return; // the put gave up
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
            if !buf.is_empty() {
                let _ = tx.send(Ok(buf)).await;
            }
        });
        BlockReader {
            rx,
            cur: Vec::new(),
            pos: 0,
        }
    }
}

impl std::io::Read for BlockReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.cur.len() {
            match self.rx.blocking_recv() {
                Some(Ok(block)) => {
                    self.cur = block;
                    self.pos = 0;
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let avail = self.cur.get(self.pos..).unwrap_or_default();
        let n = avail.len().min(out.len());
        out.get_mut(..n)
            .unwrap_or_default()
            .copy_from_slice(avail.get(..n).unwrap_or_default());
        self.pos += n;
        Ok(n)
    }
}

/// Streams bytes `offset..offset+len` of a stored file.
fn stream_file(store: Store, id: FileId, offset: u64, len: u64) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut reader = match store.open_range(&id, offset, len) {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.blocking_send(Err(std::io::Error::other(e)));
                return;
            }
        };
        loop {
            let mut buf = vec![0u8; BLOCK];
            let mut filled = 0;
            while filled < buf.len() {
                match std::io::Read::read(&mut reader, buf.get_mut(filled..).unwrap_or_default()) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) => {
                        // The client sees the connection cut; it re-checks the SHA-1.
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
            if filled == 0 {
                return;
            }
            buf.truncate(filled);
            if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                return;
            }
        }
    });
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// Parses a single `bytes=` range against `size`. `Ok(None)`: serve all.
fn parse_range(h: Option<&HeaderValue>, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(v) = h.and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None); // several ranges: serve the whole file
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().map_err(|_| ())?;
            if n == 0 {
                return Err(());
            }
            (size.saturating_sub(n), size.saturating_sub(1))
        }
        (s, "") => (s.parse().map_err(|_| ())?, size.saturating_sub(1)),
        (s, e) => {
            let s: u64 = s.parse().map_err(|_| ())?;
            let e: u64 = e.parse().map_err(|_| ())?;
            (s, e.min(size.saturating_sub(1)))
        }
    };
    if start >= size || start > end {
        return Err(());
    }
    Ok(Some((start, end)))
}

async fn get_file(
    State(st): St,
    Path(raw): Path<String>,
    uri: OriginalUri,
    Query(pairs): Pairs,
    headers: HeaderMap,
) -> HttpResult<Response> {
    let uuid = path_uuid(&raw, &uri)?;
    let acct = account(&pairs)?;
    let index: usize = match q(&pairs, "index") {
        None => 0,
        Some(i) => i
            .parse()
            .map_err(|_| ApiError::invalid_param("index", format!("invalid index {i:?}")))?,
    };
    let api = st.api.clone();
    let (_, file, id) = blocking(move || api.file_for_read(&uuid, acct.as_ref(), index)).await?;
    let size = file.size;
    let range = parse_range(headers.get(header::RANGE), size);
    let (status, offset, len) = match range {
        Ok(None) => (StatusCode::OK, 0, size),
        Ok(Some((s, e))) => (StatusCode::PARTIAL_CONTENT, s, e - s + 1),
        Err(()) => {
            let mut r = HttpError::from(ApiError::new(
                "RequestedRangeNotSatisfiable",
                format!("range not satisfiable for a file of {size} bytes"),
            ))
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(r);
        }
    };
    let body = stream_file(st.api.store().clone(), id, offset, len);
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let mut set = |name: header::HeaderName, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    set(header::CONTENT_LENGTH, len.to_string());
    set(header::ETAG, file.sha1.clone());
    set(header::LAST_MODIFIED, time::http_date(file.mtime_ms));
    if status == StatusCode::OK {
        set(
            header::HeaderName::from_static("content-md5"),
            file.content_md5.clone(),
        );
    } else {
        set(
            header::CONTENT_RANGE,
            format!("bytes {offset}-{}/{size}", offset + len - 1),
        );
    }
    Ok(r)
}

async fn put_icon(
    State(st): St,
    Path(raw): Path<String>,
    uri: OriginalUri,
    Query(pairs): Pairs,
    headers: HeaderMap,
    body: Body,
) -> HttpResult<Response> {
    let uuid = path_uuid(&raw, &uri)?;
    let acct = account(&pairs)?;
    let limit = crate::imgapi::MAX_ICON_BYTES as usize;
    let bytes = axum::body::to_bytes(body, limit + 1).await.map_err(|e| {
        ApiError::new(
            "Upload",
            format!("icon upload failed or is larger than {limit} bytes: {e}"),
        )
    })?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(';').next().unwrap_or_default().trim().to_string());
    let sha1 = q(&pairs, "sha1");
    let api = st.api.clone();
    let img = blocking(move || {
        api.add_icon(&uuid, acct.as_ref(), ct.as_deref(), sha1.as_deref(), &bytes)
    })
    .await?;
    Ok(image_response(&img, false, &HeaderMap::new()))
}

async fn get_icon(
    State(st): St,
    Path(raw): Path<String>,
    uri: OriginalUri,
    Query(pairs): Pairs,
) -> HttpResult<Response> {
    let uuid = path_uuid(&raw, &uri)?;
    let acct = account(&pairs)?;
    let api = st.api.clone();
    let (icon, id) = blocking(move || api.icon_for_read(&uuid, acct.as_ref())).await?;
    let body = stream_file(st.api.store().clone(), id, 0, icon.size);
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, icon.content_type.clone()),
        (header::CONTENT_LENGTH, icon.size.to_string()),
        (header::ETAG, icon.sha1.clone()),
        (
            header::HeaderName::from_static("content-md5"),
            icon.content_md5.clone(),
        ),
        (header::LAST_MODIFIED, time::http_date(icon.mtime_ms)),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    Ok(r)
}

async fn delete_icon(
    State(st): St,
    Path(raw): Path<String>,
    uri: OriginalUri,
    Query(pairs): Pairs,
) -> HttpResult<Response> {
    let uuid = path_uuid(&raw, &uri)?;
    let acct = account(&pairs)?;
    let api = st.api.clone();
    let img = blocking(move || api.delete_icon(&uuid, acct.as_ref())).await?;
    Ok(image_response(&img, false, &HeaderMap::new()))
}

async fn acl(
    State(st): St,
    Path(raw): Path<String>,
    uri: OriginalUri,
    Query(pairs): Pairs,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResult<Response> {
    let uuid = path_uuid(&raw, &uri)?;
    let acct = account(&pairs)?;
    let add = match q(&pairs, "action").as_deref() {
        None | Some("add") => true,
        Some("remove") => false,
        Some(a) => {
            return Err(ApiError::invalid_param(
                "action",
                format!("\"{a}\" is not a valid action"),
            )
            .into());
        }
    };
    let body = json_body(&headers, &body).map_err(|_| {
        HttpError::from(ApiError::invalid_param(
            "acl",
            "acl must be a JSON array of account UUIDs",
        ))
    })?;
    let api = st.api.clone();
    let img = blocking(move || api.change_acl(&uuid, acct.as_ref(), &body, add)).await?;
    Ok(image_response(&img, false, &HeaderMap::new()))
}

async fn clone_image(
    State(st): St,
    Path(raw): Path<String>,
    uri: OriginalUri,
    Query(pairs): Pairs,
) -> HttpResult<Response> {
    let uuid = path_uuid(&raw, &uri)?;
    let acct = account(&pairs)?;
    let api = st.api.clone();
    let img = blocking(move || api.clone_image(&uuid, acct.as_ref())).await?;
    Ok(image_response(&img, false, &HeaderMap::new()))
}

/// `GET /images/:uuid/lineage`: origin chain, derived images, provenance
/// and stored bytes (not part of the manifest).
async fn lineage(
    State(st): St,
    Path(raw): Path<String>,
    uri: OriginalUri,
    Query(pairs): Pairs,
) -> HttpResult<Response> {
    let uuid = path_uuid(&raw, &uri)?;
    let acct = account(&pairs)?;
    let api = st.api.clone();
    let body = blocking(move || api.lineage(&uuid, acct.as_ref())).await?;
    Ok(json_response(StatusCode::OK, &body))
}

async fn get_settings(
    State(st): St,
    Path(raw): Path<String>,
    uri: OriginalUri,
    Query(pairs): Pairs,
) -> HttpResult<Response> {
    let target = path_uuid(&raw, &uri)?;
    let acct = account(&pairs)?;
    if acct.is_some_and(|a| a != target) {
        return Err(ApiError::not_found(format!("{} does not exist", uri.path())).into());
    }
    let api = st.api.clone();
    let s = blocking(move || api.settings(&target)).await?;
    Ok(json_response(StatusCode::OK, &json!(s)))
}

async fn put_settings(
    State(st): St,
    Path(raw): Path<String>,
    uri: OriginalUri,
    Query(pairs): Pairs,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResult<Response> {
    let target = path_uuid(&raw, &uri)?;
    let acct = account(&pairs)?;
    let body = json_body(&headers, &body)?;
    let api = st.api.clone();
    let s = blocking(move || api.update_settings(&target, acct.as_ref(), &body)).await?;
    Ok(json_response(StatusCode::OK, &json!(s)))
}

/// The chunk protocol, source side: the chunk list of an image's file.
async fn file_chunks(
    State(st): St,
    Path(raw): Path<String>,
    uri: OriginalUri,
    Query(pairs): Pairs,
) -> HttpResult<Response> {
    let uuid = path_uuid(&raw, &uri)?;
    let acct = account(&pairs)?;
    let api = st.api.clone();
    let list = blocking(move || {
        let (_, _, id) = api.file_for_read(&uuid, acct.as_ref(), 0)?;
        api.store().chunk_list(&id).map_err(ApiError::from)
    })
    .await?;
    let mut r = (StatusCode::OK, crate::format::encode_chunk_list(&list)).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-imgstore-chunk-list"),
    );
    Ok(r)
}

/// The chunk protocol, source side: the requested records as stored,
/// back to back. Only chunks of this image's file, for an account that may
/// see the image.
async fn fetch_chunks(
    State(st): St,
    Path(raw): Path<String>,
    uri: OriginalUri,
    Query(pairs): Pairs,
    body: Bytes,
) -> HttpResult<Response> {
    let uuid = path_uuid(&raw, &uri)?;
    let acct = account(&pairs)?;
    let ids = crate::format::decode_id_list(&body)
        .map_err(|e| ApiError::invalid_param("chunks", format!("bad chunk id list: {e}")))?;
    if ids.len() > 4096 {
        return Err(ApiError::invalid_param("chunks", "at most 4096 chunks per request").into());
    }
    let st2 = Arc::clone(&st);
    let allowed = blocking(move || {
        let (_, _, id) = st2.api.file_for_read(&uuid, acct.as_ref(), 0)?;
        let mut cache = st2.served.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, set)) = cache.iter().find(|(f, _)| *f == id) {
            return Ok(Arc::clone(set));
        }
        let set = Arc::new(st2.api.store().chunk_set(&id)?);
        cache.push((id, Arc::clone(&set)));
        if cache.len() > 8 {
            cache.remove(0);
        }
        Ok(set)
    })
    .await?;
    if let Some(bad) = ids.iter().find(|i| !allowed.contains(i)) {
        return Err(ApiError::invalid_param(
            "chunks",
            format!("chunk {bad} is not part of the file of image {uuid}"),
        )
        .into());
    }
    let store = st.api.store().clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut buf: Vec<u8> = Vec::with_capacity(BLOCK + 64 * 1024);
        let res = store.read_records(&allowed, &ids, &mut |_, rec| {
            buf.extend_from_slice(rec);
            if buf.len() >= BLOCK {
                let full = std::mem::replace(&mut buf, Vec::with_capacity(BLOCK + 64 * 1024));
                tx.blocking_send(Ok(Bytes::from(full)))
                    .map_err(|_| crate::error::Error::InvalidInput("receiver went away".into()))?;
            }
            Ok(())
        });
        let _ = match res {
            Ok(()) if !buf.is_empty() => tx.blocking_send(Ok(Bytes::from(buf))),
            Ok(()) => Ok(()),
            Err(e) => tx.blocking_send(Err(std::io::Error::other(e))),
        };
    });
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-imgstore-records"),
    );
    Ok(r)
}

async fn get_job(State(st): St, Path(raw): Path<String>, uri: OriginalUri) -> HttpResult<Response> {
    let uuid = path_uuid(&raw, &uri)?;
    let api = st.api.clone();
    let job = blocking(move || api.job(&uuid))
        .await?
        .ok_or_else(|| HttpError::from(ApiError::not_found(format!("job {uuid} not found"))))?;
    Ok(json_response(StatusCode::OK, &st.api.job_json(&job)))
}

async fn image_jobs(
    State(st): St,
    Path(raw): Path<String>,
    uri: OriginalUri,
    Query(pairs): Pairs,
) -> HttpResult<Response> {
    let uuid = path_uuid(&raw, &uri)?;
    let acct = account(&pairs)?;
    let api = st.api.clone();
    let jobs = blocking(move || {
        if acct.is_some() {
            api.get_visible(&uuid, acct.as_ref())?;
        }
        api.image_jobs(&uuid)
    })
    .await?;
    let body: Vec<Value> = jobs.iter().map(|j| st.api.job_json(j)).collect();
    Ok(json_response(StatusCode::OK, &Value::Array(body)))
}

async fn get_state(State(st): St) -> HttpResult<Response> {
    let api = st.api.clone();
    let stats = blocking(move || api.store().stats().map_err(ApiError::from)).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "pid": std::process::id(),
            "uptime_s": st.started.elapsed().as_secs(),
            "datacenterName": st.api.config().datacenter_name,
            "mode": st.api.config().mode,
            "store": stats,
        }),
    ))
}

/// `POST /state?action=dropcaches|gc|verify`. `gc` collects garbage now
/// (`threshold`, default 0.3) and answers the plan and what was done;
/// `verify` checks every record and refcount (writers wait meanwhile).
/// Operators only: any `account` is refused.
async fn post_state(State(st): St, Query(pairs): Pairs) -> HttpResult<Response> {
    if q(&pairs, "account").is_some() {
        return Err(ApiError::new("OperatorOnly", "this endpoint is for operators only").into());
    }
    match q(&pairs, "action").as_deref() {
        Some("dropcaches") => Ok(StatusCode::ACCEPTED.into_response()),
        Some("gc") => {
            let threshold = match q(&pairs, "threshold") {
                None => crate::store::gc::DEFAULT_THRESHOLD,
                Some(t) => t
                    .parse::<f64>()
                    .ok()
                    .filter(|t| (0.0..=1.0).contains(t))
                    .ok_or_else(|| {
                        ApiError::invalid_param("threshold", "threshold must be between 0 and 1")
                    })?,
            };
            let api = st.api.clone();
            let body = blocking(move || {
                let plan = api.store().gc_plan(threshold)?;
                let done = api.store().gc_execute(&plan)?;
                Ok(json!({"plan": plan, "done": done}))
            })
            .await?;
            Ok(json_response(StatusCode::OK, &body))
        }
        Some("verify") => {
            let api = st.api.clone();
            let report =
                blocking(move || api.store().verify(false).map_err(ApiError::from)).await?;
            Ok(json_response(StatusCode::OK, &json!(report)))
        }
        other => Err(ApiError::invalid_param(
            "action",
            format!("\"{}\" is not a valid action", other.unwrap_or_default()),
        )
        .into()),
    }
}
