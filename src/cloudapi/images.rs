//! `/:login/images` and `/:login/images/:id`: each handler is one IMGAPI
//! rule called as the signed-in account, its image translated as
//! CloudAPI translates it.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::action::ImageAction;
use super::{Account, Face, St};
use crate::http::error::{HttpError, HttpResult};
use crate::http::extract::QueryPairs;
use crate::http::{json_body, json_response};
use crate::imgapi::jobs::Execution;
use crate::imgapi::list::ListQuery;
use crate::imgapi::{ApiError, Code, Image, parse_uuid};

/// An IMGAPI image as CloudAPI (9.x) shows it, by sdc-cloudapi's
/// `translate()`: `uuid` becomes `id`; requirements keep only memory
/// bounds, brand and bootrom; `files` only the first file's compression,
/// sha1 and size; internal fields (billing tags, traits, channels, v, ...)
/// are dropped; an `error` keeps its code only when it is one of
/// `imgadm create`'s.
pub fn translate(manifest: &Value) -> Value {
    let field = |k: &str| manifest.get(k).cloned().unwrap_or(Value::Null);
    let mut obj = Map::new();
    obj.insert("id".into(), field("uuid"));
    obj.insert("name".into(), field("name"));
    obj.insert("version".into(), field("version"));
    obj.insert("os".into(), field("os"));
    let mut reqs = Map::new();
    if let Some(r) = manifest.get("requirements").and_then(Value::as_object) {
        for (to, from) in [
            ("max_memory", "max_ram"),
            ("max_ram", "max_ram"),
            ("min_memory", "min_ram"),
            ("min_ram", "min_ram"),
            ("brand", "brand"),
            ("bootrom", "bootrom"),
        ] {
            if let Some(v) = r.get(from).filter(|v| truthy(v)) {
                reqs.insert(to.into(), v.clone());
            }
        }
    }
    obj.insert("requirements".into(), Value::Object(reqs));
    if let Some(t) = manifest.get("type").filter(|v| truthy(v)) {
        obj.insert("type".into(), t.clone());
    }
    if let Some(d) = manifest.get("description").filter(|v| truthy(v)) {
        obj.insert("description".into(), d.clone());
    }
    if let Some(f) = manifest
        .get("files")
        .and_then(Value::as_array)
        .and_then(|f| f.first())
    {
        let part = |k: &str| f.get(k).cloned().unwrap_or(Value::Null);
        obj.insert(
            "files".into(),
            json!([{"compression": part("compression"), "sha1": part("sha1"), "size": part("size")}]),
        );
    }
    copy_fields(manifest, &mut obj, &SHOWN);
    if let Some(e) = manifest.get("error") {
        let code = e.get("code").and_then(Value::as_str).unwrap_or_default();
        let shown = match code {
            "PrepareImageDidNotRun" | "VmHasNoOrigin" | "NotSupported" => {
                json!({"code": code, "message": e.get("message").cloned().unwrap_or(Value::Null)})
            }
            _ => json!({
                "code": "InternalError",
                "message": "an unexpected error occurred (Contact support for assistance.)"
            }),
        };
        obj.insert("error".into(), shown);
    }
    Value::Object(obj)
}

/// Fields of an image CloudAPI 7.1 and later shows as IMGAPI has them.
const SHOWN: [&str; 9] = [
    "tags",
    "homepage",
    "published_at",
    "owner",
    "public",
    "state",
    "eula",
    "acl",
    "origin",
];

/// Fields CloudAPI's UpdateImage passes on to IMGAPI.
const UPDATABLE: [&str; 7] = [
    "name",
    "version",
    "description",
    "homepage",
    "eula",
    "acl",
    "tags",
];

/// Copies the `keys` that `from` has into `to`.
fn copy_fields(from: &Value, to: &mut Map<String, Value>, keys: &[&str]) {
    for k in keys {
        if let Some(v) = from.get(*k) {
            to.insert((*k).into(), v.clone());
        }
    }
}

/// JavaScript's truthiness, for the fields `translate()` copies only when
/// truthy.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

fn image_json(img: &Image) -> Value {
    translate(&img.manifest(false))
}

/// ListImages: CloudAPI's filters passed to IMGAPI's ListImages as the
/// account (docker images left out unless a type is asked for), every page.
pub(super) async fn list(
    State(face): St,
    Account(who): Account,
    query: QueryPairs,
) -> HttpResult<Response> {
    let account = who.uuid;
    let mut pairs = vec![("account".to_string(), account.to_string())];
    for k in ["name", "os", "version", "public", "state", "owner", "type"] {
        if let Some(v) = query.get(k) {
            pairs.push((k.into(), v.into()));
        }
    }
    if query.get("type").is_none() {
        pairs.push(("type".into(), "!docker".into()));
    }
    let q = ListQuery::parse(&pairs)?;
    let images = face.app.run(move |api| api.list_all(&q)).await?;
    let body: Vec<Value> = images.iter().map(image_json).collect();
    Ok(json_response(StatusCode::OK, &Value::Array(body)))
}

/// The image of a path `id` the caller may see; anything else, a uuid or
/// not, is "not found", as CloudAPI answers.
async fn visible(face: &Face, id: &str, account: Uuid) -> HttpResult<Image> {
    let Some(uuid) = parse_uuid(id) else {
        return Err(ApiError::not_found(format!("{id} not found")).into());
    };
    face.app
        .run(move |api| api.get_visible(&uuid, Some(&account)))
        .await
}

/// GetImage.
pub(super) async fn get(
    State(face): St,
    Path((_, id)): Path<(String, String)>,
    Account(who): Account,
) -> HttpResult<Response> {
    let account = who.uuid;
    let img = visible(&face, &id, account).await?;
    Ok(json_response(StatusCode::OK, &image_json(&img)))
}

/// DeleteImage.
pub(super) async fn delete(
    State(face): St,
    Path((_, id)): Path<(String, String)>,
    Account(who): Account,
) -> HttpResult<Response> {
    let account = who.uuid;
    let uuid = visible(&face, &id, account).await?.uuid;
    face.app
        .run(move |api| api.delete(&uuid, Some(&account)))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /:login/images/:id?action=`: update (share and unshare are an
/// update of `acl`), clone; export needs Manta.
pub(super) async fn action(
    State(face): St,
    Path((_, id)): Path<(String, String)>,
    Account(who): Account,
    query: QueryPairs,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResult<Response> {
    let account = who.uuid;
    let action = query.string("action");
    let uuid = visible(&face, &id, account).await?.uuid;
    let img = match action.as_deref().map(|a| (a, ImageAction::parse(a))) {
        Some((_, Some(ImageAction::Update))) => {
            let patch = update_fields(&face, &json_body(&headers, &body)?)?;
            face.app
                .run(move |api| api.update(&uuid, Some(&account), &patch))
                .await?
        }
        Some((_, Some(ImageAction::Clone))) => {
            face.app
                .run(move |api| api.clone_image(&uuid, Some(&account)))
                .await?
        }
        Some((_, Some(ImageAction::Export))) => {
            return Err(ApiError::new(
                Code::NotAvailable,
                "ExportImage writes to Manta, which this image store does not have",
            )
            .into());
        }
        Some((a, None)) => {
            return Err(ApiError::new(
                Code::InvalidArgument,
                format!("action {a} is not a valid argument"),
            )
            .into());
        }
        None => {
            return Err(
                ApiError::new(Code::MissingParameter, "action is a required argument").into(),
            );
        }
    };
    Ok(json_response(StatusCode::OK, &image_json(&img)))
}

/// The fields UpdateImage takes from CloudAPI (others are ignored, as
/// upstream ignores them); `acl` entries may be logins of configured
/// accounts as well as uuids.
fn update_fields(face: &Face, body: &Value) -> HttpResult<Value> {
    let mut patch = Map::new();
    copy_fields(body, &mut patch, &UPDATABLE);
    if let Some(acl) = patch.get_mut("acl").and_then(Value::as_array_mut) {
        for entry in acl.iter_mut() {
            let Some(s) = entry.as_str() else { continue };
            if parse_uuid(s).is_some() {
                continue;
            }
            let Some(p) = face.config.keys.account(s) else {
                return Err(ApiError::new(
                    Code::InvalidArgument,
                    format!("acl: {s:?} is neither an account uuid nor a known login"),
                )
                .into());
            };
            *entry = json!(p.uuid);
        }
    }
    Ok(Value::Object(patch))
}

/// `POST /:login/images`: ImportImageFromDatacenter, or
/// CreateImageFromMachine (which needs a compute node).
pub(super) async fn create(
    State(face): St,
    Account(who): Account,
    query: QueryPairs,
) -> HttpResult<Response> {
    let account = who.uuid;
    match query.get("action") {
        Some("import-from-datacenter") => {}
        Some(a) => {
            return Err(ApiError::new(
                Code::InvalidArgument,
                format!("action {a} is not a valid argument"),
            )
            .into());
        }
        None => {
            return Err(ApiError::new(
                Code::NotAvailable,
                "CreateImageFromMachine needs a compute node with the machine; \
                 this image store has none",
            )
            .into());
        }
    }
    let Some(dc) = query.string("datacenter") else {
        return Err(
            ApiError::new(Code::MissingParameter, "datacenter is a required argument").into(),
        );
    };
    let id = query.string("id").unwrap_or_default();
    let Some(uuid) = parse_uuid(&id) else {
        return Err(ApiError::new(Code::InvalidArgument, format!("id {id} must be a UUID")).into());
    };
    let img = import_and_wait(&face, uuid, account, dc).await?;
    Ok(json_response(StatusCode::OK, &image_json(&img)))
}

/// How often a waiting import looks at its copy job.
const JOB_POLL: Duration = Duration::from_millis(200);

/// Starts (or joins) the copy job and answers when it is done, as
/// sdc-clients' `importImageFromDatacenterAndWait` does for CloudAPI: the
/// image on success, the job's error otherwise.
async fn import_and_wait(
    face: &Arc<Face>,
    uuid: Uuid,
    account: Uuid,
    dc: String,
) -> HttpResult<Image> {
    let job = face
        .app
        .run(move |api| api.import_from_datacenter(&uuid, Some(&account), Some(&dc)))
        .await?;
    let job_uuid = job.uuid;
    let job = loop {
        let job = face
            .app
            .run(move |api| {
                api.job(&job_uuid)?
                    .ok_or_else(|| ApiError::internal(format!("copy job {job_uuid} vanished")))
            })
            .await?;
        if job.execution.is_final() {
            break job;
        }
        tokio::time::sleep(JOB_POLL).await;
    };
    if job.execution != Execution::Succeeded {
        let error = job
            .chain_results
            .iter()
            .rev()
            .find_map(|c| c.error.as_ref());
        let message = error
            .and_then(|e| e.get("message"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("copy job {job_uuid} {}", job.execution.as_str()));
        let code = error
            .and_then(|e| e.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("InternalError");
        let status = Code::parse(code).map_or(500, Code::status);
        return Err(HttpError::from(ApiError::passthrough(
            status, code, message,
        )));
    }
    face.app
        .run(move |api| api.get_visible(&uuid, Some(&account)))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translate_keeps_cloudapi_fields_only() {
        let m = json!({
            "v": 2, "uuid": "u1", "owner": "o1", "name": "base", "version": "1.0",
            "state": "active", "disabled": false, "public": false, "os": "smartos",
            "type": "zone-dataset", "published_at": "2026-01-01T00:00:00Z",
            "description": "", "acl": ["a1"], "origin": "o2", "tags": {"k": "v"},
            "billing_tags": ["x"], "traits": {"t": true}, "channels": ["dev"],
            "requirements": {"min_ram": 512, "max_ram": 0, "brand": "joyent", "networks": []},
            "files": [{"sha1": "s", "size": 5, "compression": "gzip", "md5": "m", "stor": "local"}],
            "error": {"code": "SomethingOdd", "message": "internal detail"}
        });
        let t = translate(&m);
        assert_eq!(t["id"], "u1");
        assert!(t.get("uuid").is_none() && t.get("v").is_none());
        for dropped in [
            "billing_tags",
            "traits",
            "channels",
            "disabled",
            "description",
        ] {
            assert!(t.get(dropped).is_none(), "{dropped}");
        }
        assert_eq!(
            t["requirements"],
            json!({"min_memory": 512, "min_ram": 512, "brand": "joyent"})
        );
        assert_eq!(
            t["files"],
            json!([{"compression": "gzip", "sha1": "s", "size": 5}])
        );
        for kept in [
            "owner",
            "public",
            "state",
            "acl",
            "origin",
            "tags",
            "published_at",
            "type",
        ] {
            assert_eq!(t[kept], m[kept], "{kept}");
        }
        assert_eq!(t["error"]["code"], "InternalError");
    }
}
