//! Copy jobs in WFAPI's shape: `GET /jobs/:uuid` (where `workflow-api`
//! points) and `GET /images/:uuid/jobs`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::{St, json_response};
use crate::http::error::HttpResult;
use crate::http::extract::ImageReq;
use crate::imgapi::ApiError;

/// `GET /jobs/:uuid`: an account sees only its own jobs; another's is
/// answered as one that does not exist.
pub(super) async fn get(State(st): St, r: ImageReq) -> HttpResult<Response> {
    let uuid = r.uuid;
    let body = st
        .run(move |api| {
            let job = api
                .job(&uuid)?
                .filter(|j| r.account.is_none_or(|a| a == j.account))
                .ok_or_else(|| ApiError::not_found(format!("job {uuid} not found")))?;
            Ok(api.job_view(&job))
        })
        .await?;
    Ok(json_response(StatusCode::OK, &body))
}

pub(super) async fn of_image(State(st): St, r: ImageReq) -> HttpResult<Response> {
    let body = st
        .run(move |api| {
            if r.account.is_some() {
                api.get_visible(&r.uuid, r.account())?;
            }
            let jobs = api.image_jobs(&r.uuid)?;
            Ok(jobs.iter().map(|j| api.job_view(j)).collect::<Vec<_>>())
        })
        .await?;
    Ok(json_response(StatusCode::OK, &body))
}
