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
use crate::http::error::HttpResult;
use crate::http::extract::QueryPairs;
use crate::http::{json_body, json_response};
use crate::imgapi::list::ListQuery;
use crate::imgapi::manifest::ManifestField;
use crate::imgapi::{ApiError, Code, Image, ImageState, parse_uuid};
use serde::Serialize;

/// An IMGAPI image as CloudAPI (9.x) shows it, by sdc-cloudapi's
/// `translate()`: `uuid` becomes `id`; requirements keep only memory
/// bounds, brand and bootrom; `files` only the first file's compression,
/// sha1 and size; internal fields (billing tags, traits, channels, v, ...)
/// are dropped; an `error` keeps its code only when it is one of
/// `imgadm create`'s. Serialized straight from the image it borrows (a
/// listing translates thousands; no intermediate JSON tree).
#[derive(Serialize)]
pub struct CloudImage<'a> {
    id: Uuid,
    name: &'a str,
    version: &'a str,
    os: &'a str,
    requirements: Requirements<'a>,
    #[serde(rename = "type", skip_serializing_if = "str::is_empty")]
    type_: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    files: Option<[FileSummary<'a>; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: Option<&'a Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    homepage: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    published_at: Option<&'a str>,
    owner: Uuid,
    public: bool,
    state: ImageState,
    #[serde(skip_serializing_if = "Option::is_none")]
    eula: Option<&'a str>,
    #[serde(skip_serializing_if = "<[Uuid]>::is_empty")]
    acl: &'a [Uuid],
    #[serde(skip_serializing_if = "Option::is_none")]
    origin: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Value>,
}

/// The requirements CloudAPI shows: memory bounds (under both names),
/// brand and bootrom, each only when set (JavaScript-truthy).
#[derive(Serialize, Default)]
struct Requirements<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_memory: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_ram: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    min_memory: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    min_ram: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    brand: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bootrom: Option<&'a Value>,
}

#[derive(Serialize)]
struct FileSummary<'a> {
    compression: &'a str,
    sha1: &'a str,
    size: u64,
}

impl<'a> CloudImage<'a> {
    pub fn of(img: &'a Image) -> Self {
        let req = |k: &str| {
            img.requirements
                .as_ref()
                .and_then(|r| r.get(k))
                .filter(|v| truthy(v))
        };
        let state = img.state();
        CloudImage {
            id: img.uuid,
            name: &img.name,
            version: &img.version,
            os: &img.os,
            requirements: Requirements {
                max_memory: req("max_ram"),
                max_ram: req("max_ram"),
                min_memory: req("min_ram"),
                min_ram: req("min_ram"),
                brand: req("brand"),
                bootrom: req("bootrom"),
            },
            type_: &img.type_,
            description: img.description.as_deref().filter(|d| !d.is_empty()),
            files: img.files.first().map(|f| {
                [FileSummary {
                    compression: &f.compression,
                    sha1: &f.sha1,
                    size: f.size,
                }]
            }),
            tags: img.tags.as_ref(),
            homepage: img.homepage.as_deref(),
            published_at: img.published_at.as_deref(),
            owner: img.owner,
            public: img.public,
            state,
            eula: img.eula.as_deref(),
            acl: &img.acl,
            origin: img.origin,
            // IMGAPI shows an error only on a failed image.
            error: img
                .error
                .as_ref()
                .filter(|_| state == ImageState::Failed)
                .map(shown_error),
        }
    }
}

/// An image's error as CloudAPI shows it: `imgadm create`'s codes with
/// their message, anything else as an internal error.
fn shown_error(e: &Value) -> Value {
    let code = e.get("code").and_then(Value::as_str).unwrap_or_default();
    match code {
        "PrepareImageDidNotRun" | "VmHasNoOrigin" | "NotSupported" => {
            json!({"code": code, "message": e.get("message").cloned().unwrap_or(Value::Null)})
        }
        _ => json!({
            "code": "InternalError",
            "message": "an unexpected error occurred (Contact support for assistance.)"
        }),
    }
}

/// Fields CloudAPI's UpdateImage passes on to IMGAPI (all the owner's to
/// change).
const UPDATABLE: [ManifestField; 7] = [
    ManifestField::Name,
    ManifestField::Version,
    ManifestField::Description,
    ManifestField::Homepage,
    ManifestField::Eula,
    ManifestField::Acl,
    ManifestField::Tags,
];

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

/// One image's answer.
fn image_response(img: &Image) -> Response {
    json_response(StatusCode::OK, &CloudImage::of(img))
}

/// ListImages: CloudAPI's filters passed to IMGAPI's ListImages as the
/// account (docker images left out unless a type is asked for), every page.
pub(super) async fn list(
    State(face): St,
    Account(who): Account,
    query: QueryPairs,
) -> HttpResult<Response> {
    let account = who.uuid;
    // The caller's filters are checked as IMGAPI checks its query.
    let pairs: Vec<(String, String)> =
        ["name", "os", "version", "public", "state", "owner", "type"]
            .into_iter()
            .filter_map(|k| query.get(k).map(|v| (k.to_string(), v.to_string())))
            .collect();
    let mut q = ListQuery::parse(&pairs, face.app.api.config())?;
    q.account = Some(account);
    q.type_.get_or_insert_with(|| "!docker".into());
    let images = face.app.run(move |api| api.list_all(&q)).await?;
    let body: Vec<CloudImage<'_>> = images.iter().map(CloudImage::of).collect();
    Ok(json_response(StatusCode::OK, &body))
}

/// The uuid of a path `id`; anything else is "not found", as CloudAPI
/// answers.
fn image_id(id: &str) -> HttpResult<Uuid> {
    parse_uuid(id).ok_or_else(|| ApiError::not_found(format!("{id} not found")).into())
}

/// The image of a path `id` the caller may see.
async fn visible(face: &Face, id: &str, account: Uuid) -> HttpResult<Image> {
    let uuid = image_id(id)?;
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
    Ok(image_response(&img))
}

/// DeleteImage.
pub(super) async fn delete(
    State(face): St,
    Path((_, id)): Path<(String, String)>,
    Account(who): Account,
) -> HttpResult<Response> {
    // DeleteImage's rule answers "not found" for an image the caller
    // cannot see, as it does for one that does not exist.
    let (account, uuid) = (who.uuid, image_id(&id)?);
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
    let (account, uuid) = (who.uuid, image_id(&id)?);
    let action = query.string("action");
    // UpdateImage's and CloneImage's rules look the image up as the caller
    // (not found, not the owner, not shared) themselves.
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
                .0
        }
        other => {
            // As upstream, an image the caller cannot see is "not found"
            // before its action is looked at.
            visible(&face, &id, account).await?;
            return Err(match other {
                Some((_, Some(ImageAction::Export))) => ApiError::new(
                    Code::NotAvailable,
                    "ExportImage writes to Manta, which this image store does not have",
                ),
                Some((a, _)) => invalid_action(a),
                None => ApiError::new(Code::MissingParameter, "action is a required argument"),
            }
            .into());
        }
    };
    Ok(image_response(&img))
}

/// CloudAPI's answer to an `action` it does not know (restify's
/// InvalidArgument).
fn invalid_action(action: &str) -> ApiError {
    ApiError::new(
        Code::InvalidArgument,
        format!("action {action} is not a valid argument"),
    )
}

/// The fields UpdateImage takes from CloudAPI (others are ignored, as
/// upstream ignores them); `acl` entries may be logins of configured
/// accounts as well as uuids.
fn update_fields(face: &Face, body: &Value) -> HttpResult<Value> {
    let mut patch = Map::new();
    for k in UPDATABLE.map(ManifestField::name) {
        if let Some(v) = body.get(k) {
            patch.insert(k.into(), v.clone());
        }
    }
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
        Some(a) => return Err(invalid_action(a).into()),
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
    Ok(image_response(&img))
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
    if let Some(e) = job.error() {
        return Err(e.into());
    }
    face.app
        .run(move |api| api.get_visible(&uuid, Some(&account)))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloudapi_updates_only_fields_an_owner_may_change() {
        use crate::imgapi::manifest::Editor;
        assert!(UPDATABLE.iter().all(|f| f.editor() == Editor::Owner));
    }

    #[test]
    fn translation_keeps_cloudapi_fields_only() {
        let m = json!({
            "owner": "00000000-0000-4000-8000-000000000001", "name": "base", "version": "1.0",
            "public": false, "os": "smartos", "type": "zone-dataset", "description": "",
            "acl": ["00000000-0000-4000-8000-000000000002"],
            "origin": "00000000-0000-4000-8000-000000000003", "tags": {"k": "v"},
            "billing_tags": ["x"], "traits": {"t": true},
            "requirements": {"min_ram": 512, "brand": "joyent", "ssh_key": true},
        });
        let mut img = Image::from_map(Uuid::from_u128(9), m.as_object().unwrap()).unwrap();
        img.activated = true;
        img.published_at = Some("2026-01-01T00:00:00Z".into());
        img.files = vec![crate::imgapi::ImageFile {
            sha1: "s".into(),
            size: 5,
            compression: "gzip".into(),
            dataset_guid: None,
            content_md5: String::new(),
            mtime_ms: 0,
            stor: "local".into(),
            file_id: crate::id::FileId([0; 32]),
        }];
        let full = serde_json::to_value(img.manifest(true)).unwrap();
        let t = serde_json::to_value(CloudImage::of(&img)).unwrap();
        assert_eq!(t["id"], full["uuid"]);
        for dropped in [
            "uuid",
            "v",
            "billing_tags",
            "traits",
            "disabled",
            "description",
            "error",
        ] {
            assert!(t.get(dropped).is_none(), "{dropped}: {t}");
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
            "os",
        ] {
            assert_eq!(t[kept], full[kept], "{kept}");
        }
        // An error shows only on a failed image, and only imgadm's codes.
        img.error = Some(json!({"code": "SomethingOdd", "message": "internal detail"}));
        assert!(
            serde_json::to_value(CloudImage::of(&img))
                .unwrap()
                .get("error")
                .is_none()
        );
        img.activated = false;
        img.placeholder_state = Some(crate::imgapi::manifest::Placeholder::Failed);
        let t = serde_json::to_value(CloudImage::of(&img)).unwrap();
        assert_eq!(t["error"]["code"], "InternalError");
        img.error = Some(json!({"code": "VmHasNoOrigin", "message": "no origin"}));
        let t = serde_json::to_value(CloudImage::of(&img)).unwrap();
        assert_eq!(
            t["error"],
            json!({"code": "VmHasNoOrigin", "message": "no origin"})
        );
    }
}
