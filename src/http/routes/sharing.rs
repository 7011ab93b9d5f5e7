//! Sharing: the ACL routes, CloneImage, an image's lineage, the account a
//! login names, and an account's settings (`image_share_trusted_accounts`).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::json;

use super::{St, changed_image, json_body, json_response};
use crate::http::error::{HttpError, HttpResult};
use crate::http::extract::ImageReq;
use crate::imgapi::ApiError;

/// `POST /images/:uuid/acl?action=add|remove` with a bare JSON array.
pub(super) async fn acl(
    State(st): St,
    r: ImageReq,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResult<Response> {
    let add = match r.query.get("action") {
        None | Some("add") => true,
        Some("remove") => false,
        Some(a) => return Err(ApiError::bad_action(a).into()),
    };
    let body = json_body(&headers, &body).map_err(|_| {
        HttpError::from(ApiError::invalid_param(
            "acl",
            "acl must be a JSON array of accounts (uuids or logins)",
        ))
    })?;
    let img = st
        .run(move |api| api.change_acl(&r.uuid, r.account(), &body, add))
        .await?;
    Ok(changed_image(&img))
}

/// CloneImage; what became of the origins (cloned along, or served by the
/// caller's earlier clones) rides in `x-imgstore-clone-origins` as JSON.
pub(super) async fn clone(State(st): St, r: ImageReq) -> HttpResult<Response> {
    let (img, report) = st
        .run(move |api| api.clone_image(&r.uuid, r.account()))
        .await?;
    let mut resp = changed_image(&img);
    if let Ok(v) = HeaderValue::from_str(&json!(report).to_string()) {
        resp.headers_mut()
            .insert(HeaderName::from_static(crate::http::wire::CLONE_ORIGINS), v);
    }
    Ok(resp)
}

/// `GET /images/:uuid/clone-plan` (ours): what CloneImage would do with
/// the origins, checked as it checks, changing nothing (a daemon without
/// it answers 404, never clones).
pub(super) async fn plan_clone(State(st): St, r: ImageReq) -> HttpResult<Response> {
    let plan = st
        .run(move |api| api.plan_clone(&r.uuid, r.account()))
        .await?;
    Ok(json_response(StatusCode::OK, &plan))
}

/// Origin chain, derived images, provenance and stored bytes (not part of
/// the manifest).
pub(super) async fn lineage(State(st): St, r: ImageReq) -> HttpResult<Response> {
    let body = st.run(move |api| api.lineage(&r.uuid, r.account())).await?;
    Ok(json_response(StatusCode::OK, &body))
}

/// `GET /accounts/:name` (ours, not upstream's): the account a login or a
/// uuid names in the daemon's account table, `{"uuid", "login"}`, so a
/// client may take logins where the API takes uuids.
pub(super) async fn account(State(st): St, Path(name): Path<String>) -> HttpResult<Response> {
    let c = st.api.config();
    let uuid = c
        .account(&name)
        .ok_or_else(|| ApiError::not_found(c.unknown_account("account", &name)))?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"uuid": uuid, "login": c.login_of(&uuid)}),
    ))
}

/// `GET /accounts/:uuid/settings`: the account itself or an operator.
pub(super) async fn get_settings(State(st): St, r: ImageReq) -> HttpResult<Response> {
    let target = r.uuid;
    if r.account.is_some_and(|a| a != target) {
        return Err(ApiError::no_such_path(&format!("/accounts/{target}/settings")).into());
    }
    let s = st.run(move |api| api.settings(&target)).await?;
    Ok(json_response(StatusCode::OK, &json!(s)))
}

pub(super) async fn put_settings(
    State(st): St,
    r: ImageReq,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResult<Response> {
    let body = json_body(&headers, &body)?;
    let s = st
        .run(move |api| api.update_settings(&r.uuid, r.account(), &body))
        .await?;
    Ok(json_response(StatusCode::OK, &json!(s)))
}
