//! `/images` and `/images/:uuid`: ListImages, CreateImage, GetImage, the
//! actions of `POST /images/:uuid`, DeleteImage.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{
    St, changed_image, etag_matches, etag_of, image_response, json_body, json_response, set_header,
};
use crate::http::error::HttpResult;
use crate::http::extract::{Caller, ImageReq};
use crate::imgapi::list::ListQuery;
use crate::imgapi::manifest::Manifest;
use crate::imgapi::{ApiError, Code, FieldCode, FieldError, Imgapi};

pub(super) async fn list(State(st): St, caller: Caller) -> HttpResult<Response> {
    let query = ListQuery::parse(&caller.query.0, st.api.config())?;
    let admin = caller.query.admin_fields();
    let images = st.run(move |api| api.list(&query)).await?;
    let body: Vec<Manifest> = images.iter().map(|i| i.manifest(admin)).collect();
    Ok(json_response(StatusCode::OK, &body))
}

pub(super) async fn get(State(st): St, r: ImageReq, headers: HeaderMap) -> HttpResult<Response> {
    let admin = r.query.admin_fields();
    let img = st
        .run(move |api| api.get_visible(&r.uuid, r.account()))
        .await?;
    Ok(image_response(&img, admin, &headers))
}

pub(super) async fn create(
    State(st): St,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResult<Response> {
    match caller.query.get("action") {
        None => {}
        Some("create-from-vm") => {
            return Err(ApiError::new(
                Code::NotAvailable,
                "creating an image from a VM is not available on this server",
            )
            .into());
        }
        Some(a) => return Err(ApiError::bad_action(a).into()),
    }
    let body = json_body(&headers, &body)?;
    let account = caller.account;
    let img = st
        .run(move |api| api.create(account.as_ref(), &body))
        .await?;
    Ok(changed_image(&img))
}

pub(super) async fn delete(State(st): St, r: ImageReq) -> HttpResult<Response> {
    st.run(move |api| api.delete(&r.uuid, r.account())).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /images/:uuid?action=...`, in upstream's dispatch order: imports
/// before the image is looked up (it is not expected to exist), then the
/// visibility rule, change-stor, the owner rule, If-Match, the rest.
pub(super) async fn action(
    State(st): St,
    r: ImageReq,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResult<Response> {
    let action = r.query.string("action");
    match action.as_deref() {
        Some("import") => return import(st, r, &headers, &body).await,
        Some("import-from-datacenter") => return import_from_datacenter(st, r, &headers).await,
        Some("plan-import-from-datacenter") => return plan_import(st, r).await,
        Some(a @ "import-remote") => {
            return Err(ApiError::new(
                Code::NotAvailable,
                format!("action {a:?} is not available on this server yet"),
            )
            .into());
        }
        _ => {}
    }
    let (uuid, account) = (r.uuid, r.account);
    let img = st
        .run(move |api| api.get_visible(&uuid, account.as_ref()))
        .await?;
    if action.as_deref() == Some("change-stor") {
        return Err(ApiError::new(Code::NotAvailable, "only local storage exists here").into());
    }
    Imgapi::check_owner(&img, account.as_ref())?;
    let current = serde_json::to_vec_pretty(&img.manifest(false)).unwrap_or_default();
    if etag_matches(headers.get(header::IF_MATCH), &etag_of(&current)) == Some(false) {
        return Err(ApiError::new(Code::PreconditionFailed, "if-match: no match").into());
    }
    let img = match action.as_deref() {
        Some("export") => {
            return Err(ApiError::new(
                Code::NotAvailable,
                "export needs Manta, which is not configured",
            )
            .into());
        }
        Some("activate") => {
            st.run(move |api| api.activate(&uuid, account.as_ref()))
                .await?
        }
        Some(a @ ("enable" | "disable")) => {
            let disabled = a == "disable";
            st.run(move |api| api.set_disabled(&uuid, account.as_ref(), disabled))
                .await?
        }
        Some("update") => {
            let body = json_body(&headers, &body)?;
            st.run(move |api| api.update(&uuid, account.as_ref(), &body))
                .await?
        }
        None => {
            return Err(
                ApiError::new(Code::InvalidParameter, "no image \"action\" was specified")
                    .with_errors(vec![FieldError::bare(
                        "action",
                        FieldCode::MissingParameter,
                    )])
                    .into(),
            );
        }
        Some(a) => return Err(ApiError::bad_action(a).into()),
    };
    Ok(changed_image(&img))
}

/// AdminImportImage, from the body or (`source`) from another IMGAPI.
async fn import(
    st: std::sync::Arc<crate::http::AppState>,
    r: ImageReq,
    headers: &HeaderMap,
    body: &Bytes,
) -> HttpResult<Response> {
    let (uuid, account) = (r.uuid, r.account);
    let img = match r.query.string("source") {
        Some(source) => {
            st.run(move |api| api.admin_import_from(&uuid, account.as_ref(), &source))
                .await?
        }
        None => {
            let manifest = json_body(headers, body)?;
            st.run(move |api| api.admin_import(&uuid, account.as_ref(), &manifest))
                .await?
        }
    };
    Ok(changed_image(&img))
}

/// ImportFromDatacenter: answers the job at once; callers poll it at this
/// very server (the `workflow-api` header).
/// `?action=plan-import-from-datacenter` (ours): what
/// import-from-datacenter would do, checked as it checks, changing nothing
/// (a dry run; a daemon without it refuses the action, never copies).
async fn plan_import(
    st: std::sync::Arc<crate::http::AppState>,
    r: ImageReq,
) -> HttpResult<Response> {
    let (uuid, account) = (r.uuid, r.account);
    let dc = r.query.string("datacenter");
    let plan = st
        .run(move |api| api.plan_import(&uuid, account.as_ref(), dc.as_deref()))
        .await?;
    Ok(json_response(StatusCode::OK, &plan))
}

async fn import_from_datacenter(
    st: std::sync::Arc<crate::http::AppState>,
    r: ImageReq,
    headers: &HeaderMap,
) -> HttpResult<Response> {
    let (uuid, account) = (r.uuid, r.account);
    let dc = r.query.string("datacenter");
    let job = st
        .run(move |api| api.import_from_datacenter(&uuid, account.as_ref(), dc.as_deref()))
        .await?;
    let mut resp = json_response(
        StatusCode::OK,
        &json!({"image_uuid": uuid, "job_uuid": job.uuid}),
    );
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    set_header(
        resp.headers_mut(),
        HeaderName::from_static("workflow-api"),
        &format!("http://{host}"),
    );
    Ok(resp)
}
