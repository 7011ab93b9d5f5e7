//! `/images/:uuid/file`: AddImageFile (streamed, or `?source=` from
//! another IMGAPI) and GetImageFile (with `Content-MD5` and one `Range`).

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;

use super::{St, changed_image, set_header};
use crate::http::AppState;
use crate::http::error::{HttpError, HttpResult};
use crate::http::extract::ImageReq;
use crate::id::FileId;
use crate::imgapi::{ApiError, Code, FileParams, time};

pub(super) async fn put(
    State(st): St,
    r: ImageReq,
    headers: HeaderMap,
    body: Body,
) -> HttpResult<Response> {
    let (uuid, account) = (r.uuid, r.account);
    if let Some(source) = r.query.string("source") {
        let guid = r.query.string("dataset_guid");
        // A pull from another IMGAPI is a put too: it takes a put slot.
        let _slot = st.uploads.slot().await?;
        let img = st
            .run(move |api| api.add_file_from_source(&uuid, account.as_ref(), &source, guid))
            .await?;
        return Ok(changed_image(&img));
    }
    let params = FileParams {
        compression: r.query.string("compression"),
        sha1: r.query.string("sha1"),
        dataset_guid: r.query.string("dataset_guid"),
        storage: r.query.string("storage"),
        content_length: headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()),
        content_md5: headers
            .get("content-md5")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    };
    // Refuse before reading a byte of the body.
    let check = params.clone();
    st.run(move |api| api.check_add_file(&uuid, account.as_ref(), &check))
        .await?;
    let reader = st
        .uploads
        .admit(body.into_data_stream().map_err(std::io::Error::other))
        .await
        .map_err(|e| ApiError::upload_failed(&uuid, e))?;
    let img = st
        .run(move |api| api.add_file(&uuid, account.as_ref(), &params, reader))
        .await?;
    Ok(changed_image(&img))
}

pub(super) async fn from_url(_r: ImageReq) -> HttpResult<Response> {
    Err(ApiError::new(
        Code::NotAvailable,
        "AddImageFileFromUrl needs https, which this server does not speak; upload the file with PUT",
    )
    .into())
}

pub(super) async fn get(State(st): St, r: ImageReq, headers: HeaderMap) -> HttpResult<Response> {
    let index: usize = match r.query.get("index") {
        None => 0,
        Some(i) => i
            .parse()
            .map_err(|_| ApiError::invalid_param("index", format!("invalid index {i:?}")))?,
    };
    let (uuid, account) = (r.uuid, r.account);
    let (_, file, id) = st
        .run(move |api| api.file_for_read(&uuid, account.as_ref(), index))
        .await?;
    let size = file.size;
    let (status, offset, len) = match parse_range(headers.get(header::RANGE), size) {
        Ok(None) => (StatusCode::OK, 0, size),
        Ok(Some((s, e))) => (StatusCode::PARTIAL_CONTENT, s, e - s + 1),
        Err(()) => {
            let mut resp = HttpError::from(ApiError::new(
                Code::RequestedRangeNotSatisfiable,
                format!("range not satisfiable for a file of {size} bytes"),
            ))
            .into_response();
            set_header(
                resp.headers_mut(),
                header::CONTENT_RANGE,
                &format!("bytes */{size}"),
            );
            return Ok(resp);
        }
    };
    let body = stream_file(&st, id, offset, len).await?;
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    set_header(h, header::CONTENT_LENGTH, &len.to_string());
    set_header(h, header::ETAG, &file.sha1);
    set_header(h, header::LAST_MODIFIED, &time::http_date(file.mtime_ms));
    if status == StatusCode::OK {
        set_header(h, HeaderName::from_static("content-md5"), &file.content_md5);
    } else {
        set_header(
            h,
            header::CONTENT_RANGE,
            &format!("bytes {offset}-{}/{size}", offset + len - 1),
        );
    }
    Ok(resp)
}

/// Bytes `offset..offset+len` of a stored file as a response body: the
/// reader's blocks go out as they are, without a copy, one at a time as
/// the client takes them. The first block is read before the answer's
/// headers, so a file damaged or missing there is an error answer the
/// client can read, not a 200 that stops short.
pub(super) async fn stream_file(
    st: &AppState,
    id: FileId,
    offset: u64,
    len: u64,
) -> HttpResult<Body> {
    let reserved = st.sender.reserve().await?;
    let store = st.api.store().clone();
    let (mut reader, first) = tokio::task::spawn_blocking(move || {
        let mut reader = store.open_range(&id, offset, len)?;
        let first = reader.next_block()?;
        Ok::<_, crate::Error>((reader, first))
    })
    .await
    .map_err(|e| ApiError::internal(format!("a worker failed: {e}")))?
    .map_err(ApiError::from)?;
    let Some(first) = first else {
        return Ok(Body::empty());
    };
    Ok(st.sender.body_after(first, reserved, move || {
        reader.next_block().map_err(std::io::Error::other)
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
