//! `/images/:uuid/icon`: AddImageIcon, GetImageIcon, DeleteImageIcon.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::files::stream_file;
use super::{St, changed_image, set_header};
use crate::http::error::HttpResult;
use crate::http::extract::ImageReq;
use crate::imgapi::{ApiError, Code, MAX_ICON_BYTES, time};

/// How much of an icon upload is read before it is refused as too large.
const ICON_READ_LIMIT: usize = 1 << 20;

pub(super) async fn put(
    State(st): St,
    r: ImageReq,
    headers: HeaderMap,
    body: Body,
) -> HttpResult<Response> {
    let limit = MAX_ICON_BYTES as usize;
    // Read a little past the limit before refusing, so that a client that
    // sent a slightly too large icon reads our answer instead of a reset
    // connection; anything larger is cut off.
    let bytes = axum::body::to_bytes(body, ICON_READ_LIMIT)
        .await
        .map_err(|e| {
            ApiError::new(
                Code::Upload,
                format!("icon upload failed or is larger than {limit} bytes: {e}"),
            )
        })?;
    if bytes.len() > limit {
        return Err(
            ApiError::new(Code::Upload, format!("icon is larger than {limit} bytes")).into(),
        );
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(';').next().unwrap_or_default().trim().to_string());
    let sha1 = r.query.string("sha1");
    let (uuid, account) = (r.uuid, r.account);
    let img = st
        .run(move |api| {
            api.add_icon(
                &uuid,
                account.as_ref(),
                ct.as_deref(),
                sha1.as_deref(),
                &bytes,
            )
        })
        .await?;
    Ok(changed_image(&img))
}

pub(super) async fn get(State(st): St, r: ImageReq) -> HttpResult<Response> {
    let (icon, id) = st
        .run(move |api| api.icon_for_read(&r.uuid, r.account()))
        .await?;
    let body = stream_file(&st, id, 0, icon.size).await?;
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    set_header(h, header::CONTENT_TYPE, &icon.content_type);
    set_header(h, header::CONTENT_LENGTH, &icon.size.to_string());
    set_header(h, header::ETAG, &icon.sha1);
    set_header(h, HeaderName::from_static("content-md5"), &icon.content_md5);
    set_header(h, header::LAST_MODIFIED, &time::http_date(icon.mtime_ms));
    Ok(resp)
}

pub(super) async fn delete(State(st): St, r: ImageReq) -> HttpResult<Response> {
    let img = st
        .run(move |api| api.delete_icon(&r.uuid, r.account()))
        .await?;
    Ok(changed_image(&img))
}
