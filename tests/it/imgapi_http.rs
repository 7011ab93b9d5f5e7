//! IMGAPI over real HTTP: every endpoint, the visibility matrix and the
//! error cases of the reference.

use serde_json::{Value, json};
use sha1::{Digest, Sha1};

use crate::common::{bytes, text};
use crate::daemon::*;

fn md5_b64(data: &[u8]) -> String {
    use md5::Digest as _;
    imgstore::imgapi::base64_encode(&md5::Md5::digest(data))
}

#[test]
fn ping_answers_as_imgapi_and_carries_the_common_headers() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let r = d.get("/ping");
    let h = r.headers().clone();
    let (s, body) = sj(r);
    assert_eq!(s, 200);
    assert_eq!(body["ping"], "pong");
    assert_eq!(body["imgapi"], true);
    assert!(body["pid"].is_u64());
    assert!(h.contains_key("x-request-id"));
    assert!(h.contains_key("x-response-time"));
    assert!(h["server"].to_str().unwrap().starts_with("imgstore/"));
    let body = assert_err(
        d.get("/ping?error=ValidationFailed"),
        422,
        "ValidationFailed",
    );
    assert_eq!(body["errors"], json!([]));
    assert_err(d.get("/ping?error=Bogus"), 422, "InvalidParameter");
}

#[test]
fn create_upload_activate_get_and_download_an_image() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let data = text(300_000, 1);
    let (s, img) = sj(d.post(
        &format!("/images?account={ALICE}"),
        &json!({"name": "base", "version": "1.0.0", "type": "zone-dataset", "os": "smartos",
                "description": "a base image", "tags": {"role": "db"}}),
    ));
    assert_eq!(s, 200, "{img}");
    assert_eq!(img["state"], "unactivated");
    assert_eq!(img["owner"], ALICE);
    assert_eq!(img["files"], json!([]));
    assert!(img.get("published_at").is_none());
    let uuid = img["uuid"].as_str().unwrap().to_string();

    let sha1 = hex::encode(Sha1::digest(&data));
    let (s, img) = sj(d.put_bytes(
        &format!("/images/{uuid}/file?compression=gzip&account={ALICE}&sha1={sha1}"),
        data.clone(),
    ));
    assert_eq!(s, 200, "{img}");
    assert_eq!(
        img["files"],
        json!([{"sha1": sha1, "size": 300_000, "compression": "gzip"}])
    );

    let (s, img) = sj(d.post(
        &format!("/images/{uuid}?action=activate&account={ALICE}"),
        &json!({}),
    ));
    assert_eq!(s, 200);
    assert_eq!(img["state"], "active");
    assert!(img["published_at"].as_str().unwrap().ends_with('Z'));

    let r = d.get(&format!("/images/{uuid}"));
    assert!(r.headers().contains_key("etag"));
    let etag = r.headers()["etag"].clone();
    let (_, got) = sj(r);
    for k in got.as_object().unwrap().keys() {
        assert!(
            imgstore::imgapi::manifest::ManifestField::parse(k).is_some(),
            "{k}"
        );
    }
    let r = d
        .client
        .get(format!("{}/images/{uuid}", d.url))
        .header("if-none-match", etag)
        .send()
        .unwrap();
    assert_eq!(r.status(), 304);

    let r = d.get(&format!("/images/{uuid}/file?account={ALICE}"));
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["content-length"], "300000");
    assert_eq!(h["content-md5"].to_str().unwrap(), md5_b64(&data));
    assert_eq!(h["etag"].to_str().unwrap(), sha1);
    assert!(h.contains_key("last-modified"));
    assert_eq!(r.bytes().unwrap().to_vec(), data);

    // Range requests.
    let r = d
        .client
        .get(format!("{}/images/{uuid}/file", d.url))
        .header("range", "bytes=1000-1999")
        .send()
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 1000-1999/300000");
    assert_eq!(r.bytes().unwrap().to_vec(), data[1000..2000].to_vec());
    let r = d
        .client
        .get(format!("{}/images/{uuid}/file", d.url))
        .header("range", "bytes=-10")
        .send()
        .unwrap();
    assert_eq!(
        r.bytes().unwrap().to_vec(),
        data[data.len() - 10..].to_vec()
    );
    let r = d
        .client
        .get(format!("{}/images/{uuid}/file", d.url))
        .header("range", "bytes=400000-")
        .send()
        .unwrap();
    assert_eq!(r.status(), 416);
}

#[test]
fn a_reupload_before_activation_replaces_the_file_and_releases_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let uuid = d.image(ALICE, "img", json!({}), &bytes(200_000, 1), false);
    let r = d.put_bytes(
        &format!("/images/{uuid}/file?compression=none"),
        bytes(150_000, 2),
    );
    assert_eq!(r.status(), 200);
    let store = d.state.api.store();
    let stats = store.stats().unwrap();
    assert_eq!(stats.files, 1, "{stats:?}");
    assert_eq!(stats.logical_bytes, 150_000);
    let r = d.post(&format!("/images/{uuid}?action=activate"), &json!({}));
    assert_eq!(r.status(), 200);
    assert_err(
        d.put_bytes(
            &format!("/images/{uuid}/file?compression=none"),
            bytes(10, 3),
        ),
        422,
        "ImageFilesImmutable",
    );
}

#[test]
fn upload_errors_follow_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let uuid = d.image(ALICE, "img", json!({}), &[], false);
    let body = assert_err(
        d.put_bytes(&format!("/images/{uuid}/file"), bytes(10, 1)),
        422,
        "InvalidParameter",
    );
    assert_eq!(body["errors"][0]["field"], "compression");
    assert_eq!(body["errors"][0]["code"], "Missing");
    let body = assert_err(
        d.put_bytes(
            &format!("/images/{uuid}/file?compression=lzma"),
            bytes(10, 1),
        ),
        422,
        "InvalidParameter",
    );
    assert_eq!(body["errors"][0]["code"], "Invalid");
    assert_err(
        d.put_bytes(&format!("/images/{uuid}/file?compression=none"), vec![]),
        400,
        "Download",
    );
    assert_err(
        d.put_bytes(
            &format!(
                "/images/{uuid}/file?compression=none&sha1={}",
                "0".repeat(40)
            ),
            bytes(100, 1),
        ),
        400,
        "Download",
    );
    assert_err(
        d.put_bytes(
            &format!("/images/{uuid}/file?compression=none&storage=manta&account={ALICE}"),
            bytes(100, 1),
        ),
        422,
        "InvalidParameter",
    );
    // Too large by Content-Length, refused before the body is read.
    let r = d
        .client
        .put(format!("{}/images/{uuid}/file?compression=none", d.url))
        .header("content-length", (21u64 << 30).to_string())
        .body(Vec::<u8>::new())
        .send();
    if let Ok(r) = r {
        assert!(
            r.status() == 400 || r.status().is_client_error(),
            "{}",
            r.status()
        );
    }
    // Nothing from the failed uploads stays referenced.
    assert_eq!(d.state.api.store().stats().unwrap().files, 0);
    let stranger = assert_err(
        d.put_bytes(
            &format!("/images/{uuid}/file?compression=none&account={BOB}"),
            bytes(10, 1),
        ),
        404,
        "ResourceNotFound",
    );
    assert_eq!(stranger["message"], "image not found");
}

#[test]
fn activation_rules() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let uuid = d.image(ALICE, "img", json!({}), &[], false);
    assert_err(
        d.post(&format!("/images/{uuid}?action=activate"), &json!({})),
        422,
        "NoActivationNoFile",
    );
    d.put_bytes(
        &format!("/images/{uuid}/file?compression=none"),
        bytes(100, 1),
    );
    assert_eq!(
        d.post(&format!("/images/{uuid}?action=activate"), &json!({}))
            .status(),
        200
    );
    assert_err(
        d.post(&format!("/images/{uuid}?action=activate"), &json!({})),
        422,
        "ImageAlreadyActivated",
    );
    let body = assert_err(
        d.post(&format!("/images/{uuid}"), &json!({})),
        422,
        "InvalidParameter",
    );
    assert_eq!(body["message"], "no image \"action\" was specified");
    assert_err(
        d.post(&format!("/images/{uuid}?action=explode"), &json!({})),
        422,
        "InvalidParameter",
    );
    assert_err(
        d.post(&format!("/images/{uuid}?action=export"), &json!({})),
        501,
        "NotAvailable",
    );
}

#[test]
fn enable_disable_and_the_computed_state() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let uuid = d.image(ALICE, "img", json!({}), &bytes(100, 1), true);
    let (_, img) = sj(d.post(
        &format!("/images/{uuid}?action=disable&account={ALICE}"),
        &json!({}),
    ));
    assert_eq!(
        (img["state"].as_str(), img["disabled"].as_bool()),
        (Some("disabled"), Some(true))
    );
    let (_, img) = sj(d.post(
        &format!("/images/{uuid}?action=enable&account={ALICE}"),
        &json!({}),
    ));
    assert_eq!(img["state"], "active");
    let un = d.image(ALICE, "un", json!({}), &[], false);
    let (_, img) = sj(d.post(&format!("/images/{un}?action=disable"), &json!({})));
    assert_eq!(img["state"], "unactivated");
}

#[test]
fn update_follows_the_mutable_and_operator_only_rules() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let uuid = d.image(
        ALICE,
        "img",
        json!({"tags": {"a": 1, "b": 2}, "description": "x"}),
        &bytes(100, 1),
        true,
    );
    let (s, img) = sj(d.post(
        &format!("/images/{uuid}?action=update&account={ALICE}"),
        &json!({"name": "renamed", "tags": {"c": 3}, "description": null}),
    ));
    assert_eq!(s, 200, "{img}");
    assert_eq!(img["name"], "renamed");
    assert_eq!(img["tags"], json!({"c": 3}));
    assert!(img.get("description").is_none());
    let body = assert_err(
        d.post(
            &format!("/images/{uuid}?action=update&account={ALICE}"),
            &json!({"billing_tags": ["x"]}),
        ),
        422,
        "ValidationFailed",
    );
    assert_eq!(body["errors"][0]["code"], "NotAllowed");
    assert_eq!(
        body["errors"][0]["message"],
        "Can only be updated by operators"
    );
    let body = assert_err(
        d.post(
            &format!("/images/{uuid}?action=update&account={ALICE}"),
            &json!({"type": "zvol"}),
        ),
        422,
        "ValidationFailed",
    );
    assert_eq!(body["errors"][0]["message"], "Parameter cannot be updated");
    assert_err(
        d.post(&format!("/images/{uuid}?action=update"), &json!({})),
        422,
        "ValidationFailed",
    );
    assert_err(
        d.post(
            &format!("/images/{uuid}?action=update"),
            &json!({"name": "bad*name"}),
        ),
        422,
        "ValidationFailed",
    );
    let (s, img) = sj(d.post(
        &format!("/images/{uuid}?action=update"),
        &json!({"billing_tags": ["gold"]}),
    ));
    assert_eq!((s, img["billing_tags"].clone()), (200, json!(["gold"])));
    // Conditional update.
    let r = d
        .client
        .post(format!("{}/images/{uuid}?action=update", d.url))
        .header("if-match", "\"nope\"")
        .json(&json!({"name": "x"}))
        .send()
        .unwrap();
    assert_err(r, 412, "PreconditionFailed");
}

#[test]
fn create_errors_follow_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let ok = json!({"name": "n", "version": "1", "type": "zone-dataset", "os": "smartos"});
    let with = |k: &str, v: Value| {
        let mut b = ok.clone();
        b[k] = v;
        b
    };
    let body = assert_err(
        d.post(
            &format!("/images?account={ALICE}"),
            &with("state", json!("active")),
        ),
        422,
        "ValidationFailed",
    );
    assert_eq!(body["errors"][0]["code"], "NotAllowed");
    let body = assert_err(
        d.post(
            &format!("/images?account={ALICE}"),
            &with("uuid", json!(ALICE)),
        ),
        422,
        "InvalidParameter",
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("invalid extra parameters")
    );
    assert_err(
        d.post(
            &format!("/images?account={ALICE}"),
            &with("frobnicate", json!(1)),
        ),
        422,
        "InvalidParameter",
    );
    let body = assert_err(
        d.post(
            &format!("/images?account={ALICE}"),
            &with("owner", json!(BOB)),
        ),
        422,
        "InvalidParameter",
    );
    assert_eq!(body["errors"][0]["field"], "owner");
    assert_err(
        d.post(
            &format!("/images?account={ALICE}"),
            &with("origin", json!(BOB)),
        ),
        422,
        "OriginDoesNotExist",
    );
    let body = assert_err(
        d.post(&format!("/images?account={ALICE}"), &json!({"name": "n"})),
        422,
        "ValidationFailed",
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid image data: ")
    );
    // No account and no owner: the owner is missing.
    assert_err(d.post("/images", &ok), 422, "ValidationFailed");
    let body = assert_err(
        d.post("/images?account=NOT-A-UUID", &ok),
        422,
        "InvalidParameter",
    );
    assert_eq!(
        body["errors"],
        json!([{"field": "account", "code": "Invalid"}])
    );
    // Bad JSON and a wrong content type.
    let r = d
        .client
        .post(format!("{}/images?account={ALICE}", d.url))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .unwrap();
    assert_err(r, 400, "InvalidContent");
    let r = d
        .client
        .post(format!("{}/images?account={ALICE}", d.url))
        .header("content-type", "text/plain")
        .body("name=x")
        .send()
        .unwrap();
    assert_err(r, 415, "UnsupportedMediaType");
}

#[test]
fn owners_must_exist_when_accounts_are_configured() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_with(dir.path(), |c| {
        c.imgapi.accounts = Some(vec![ALICE.parse().unwrap()]);
    });
    let ok = json!({"name": "n", "version": "1", "type": "zone-dataset", "os": "smartos"});
    assert_eq!(
        d.post(&format!("/images?account={ALICE}"), &ok).status(),
        200
    );
    assert_err(
        d.post(&format!("/images?account={BOB}"), &ok),
        422,
        "OwnerDoesNotExist",
    );
}

#[test]
fn paths_routes_and_versions_are_answered_as_restify_does() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let body = assert_err(d.get("/images/not-a-uuid"), 404, "ResourceNotFound");
    assert_eq!(body["message"], "/images/not-a-uuid does not exist");
    assert_err(d.get("/nothing/here"), 404, "ResourceNotFound");
    assert_err(
        d.client.patch(format!("{}/images", d.url)).send().unwrap(),
        405,
        "MethodNotAllowedError",
    );
    assert_err(d.get(&format!("/images/{ALICE}")), 404, "ResourceNotFound");
    let r = d
        .client
        .get(format!("{}/images", d.url))
        .header("accept-version", "~99")
        .send()
        .unwrap();
    let body = assert_err(r, 400, "InvalidVersion");
    assert_eq!(body["message"], "~99 is not supported by GET /images");
    let r = d
        .client
        .get(format!("{}/ping", d.url))
        .header("accept-version", "*")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(d.get("/state").status(), 200);
    assert_eq!(d.post("/state?action=dropcaches", &json!({})).status(), 202);
}

#[test]
fn acl_add_remove_and_validation() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let uuid = d.image(ALICE, "img", json!({}), &bytes(100, 1), true);
    let (s, img) = sj(d.post(
        &format!("/images/{uuid}/acl?account={ALICE}"),
        &json!([BOB, BOB]),
    ));
    assert_eq!((s, img["acl"].clone()), (200, json!([BOB])));
    let (_, img) = sj(d.post(
        &format!("/images/{uuid}/acl?action=add&account={ALICE}"),
        &json!([CAROL]),
    ));
    assert_eq!(img["acl"], json!([BOB, CAROL]));
    let (_, img) = sj(d.post(
        &format!("/images/{uuid}/acl?action=remove&account={ALICE}"),
        &json!([BOB, CAROL]),
    ));
    assert!(img.get("acl").is_none(), "{img}");
    assert_err(
        d.post(&format!("/images/{uuid}/acl"), &json!({"acl": BOB})),
        422,
        "InvalidParameter",
    );
    assert_err(
        d.post(&format!("/images/{uuid}/acl"), &json!(["nope"])),
        422,
        "InvalidParameter",
    );
    assert_err(
        d.post(&format!("/images/{uuid}/acl?action=zap"), &json!([BOB])),
        422,
        "InvalidParameter",
    );
    // Bob sees it once shared, but may not change it.
    d.post(&format!("/images/{uuid}/acl"), &json!([BOB]));
    assert_err(
        d.post(
            &format!("/images/{uuid}/acl?account={BOB}"),
            &json!([CAROL]),
        ),
        422,
        "NotImageOwner",
    );
    assert_err(
        d.post(
            &format!("/images/{uuid}/acl?account={CAROL}"),
            &json!([CAROL]),
        ),
        404,
        "ResourceNotFound",
    );
}

#[test]
fn delete_checks_dependents_and_releases_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let base = d.image(ALICE, "base", json!({}), &bytes(300_000, 1), true);
    let child = d.image(
        ALICE,
        "child",
        json!({"origin": base}),
        &bytes(300_000, 2),
        true,
    );
    let body = assert_err(
        d.delete(&format!("/images/{base}?account={ALICE}")),
        422,
        "ImageHasDependentImages",
    );
    assert!(body["message"].as_str().unwrap().contains(&child));
    d.post(
        &format!("/images/{child}/acl?account={ALICE}"),
        &json!([BOB]),
    );
    assert_err(
        d.delete(&format!("/images/{child}?account={BOB}")),
        422,
        "NotImageOwner",
    );
    assert_eq!(
        d.delete(&format!("/images/{child}?account={ALICE}"))
            .status(),
        204
    );
    assert_eq!(
        d.delete(&format!("/images/{base}?account={ALICE}"))
            .status(),
        204
    );
    assert_err(d.get(&format!("/images/{base}")), 404, "ResourceNotFound");
    let store = d.state.api.store();
    assert_eq!(store.stats().unwrap().files, 0);
    store.gc_execute(&store.gc_plan(0.0).unwrap()).unwrap();
    assert_eq!(store.stats().unwrap().live_stored_bytes, 0);
    assert!(store.verify(false).unwrap().is_clean());
}

#[test]
fn a_store_from_before_the_origin_index_still_refuses_deleting_an_origin() {
    use imgstore::imgapi::{Dependents, TABLES};
    use imgstore::{Store, StoreOptions};
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let base = d.image(ALICE, "base", json!({}), &bytes(1000, 1), true);
    let child = d.image(
        ALICE,
        "child",
        json!({"origin": base}),
        &bytes(1000, 2),
        true,
    );
    d.stop();
    // Empty the index, as a store written before it existed has it.
    let store = Store::open_with(
        dir.path(),
        StoreOptions {
            tables: TABLES.to_vec(),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    // The origin's entry, and the mark that the index was built.
    let entries = store.scan_all::<Dependents>(&[]).unwrap();
    assert_eq!(entries.len(), 2);
    store
        .transaction(|t| {
            for (k, ()) in &entries {
                t.delete::<Dependents>(k)?;
            }
            Ok::<_, imgstore::Error>(())
        })
        .unwrap();
    assert!(store.scan_all::<Dependents>(&[]).unwrap().is_empty());
    store.close().unwrap();
    // Opening rebuilds it from the images.
    let d = Daemon::start(dir.path());
    let body = assert_err(
        d.delete(&format!("/images/{base}?account={ALICE}")),
        422,
        "ImageHasDependentImages",
    );
    assert!(body["message"].as_str().unwrap().contains(&child));
}

#[test]
fn icons_are_stored_served_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let uuid = d.image(ALICE, "img", json!({}), &bytes(100, 1), true);
    let png = bytes(5_000, 9);
    let r = d
        .client
        .put(format!("{}/images/{uuid}/icon?account={ALICE}", d.url))
        .header("content-type", "image/png")
        .body(png.clone())
        .send()
        .unwrap();
    let (s, img) = sj(r);
    assert_eq!((s, img["icon"].clone()), (200, json!(true)));
    let r = d.get(&format!("/images/{uuid}/icon"));
    assert_eq!(r.headers()["content-type"], "image/png");
    assert_eq!(r.headers()["content-md5"].to_str().unwrap(), md5_b64(&png));
    assert_eq!(r.bytes().unwrap().to_vec(), png);
    let r = d
        .client
        .put(format!("{}/images/{uuid}/icon", d.url))
        .header("content-type", "text/plain")
        .body(b"x".to_vec())
        .send()
        .unwrap();
    assert_err(r, 400, "Upload");
    let r = d
        .client
        .put(format!("{}/images/{uuid}/icon", d.url))
        .header("content-type", "image/gif")
        .body(vec![0u8; 200 * 1024])
        .send()
        .unwrap();
    assert_err(r, 400, "Upload");
    d.post(
        &format!("/images/{uuid}/acl?account={ALICE}"),
        &json!([BOB]),
    );
    let r = d
        .client
        .delete(format!("{}/images/{uuid}/icon?account={BOB}", d.url))
        .send()
        .unwrap();
    assert_err(r, 422, "NotImageOwner");
    let (s, img) = sj(d
        .client
        .delete(format!("{}/images/{uuid}/icon?account={ALICE}", d.url))
        .send()
        .unwrap());
    assert_eq!(s, 200);
    assert!(img.get("icon").is_none());
    assert_err(
        d.get(&format!("/images/{uuid}/icon")),
        404,
        "ResourceNotFound",
    );
}

#[test]
fn admin_import_with_and_without_source() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let uuid = "11111111-2222-4333-8444-555555555555";
    let manifest = json!({"v": 2, "uuid": uuid, "owner": "00000000-0000-0000-0000-000000000000",
        "name": "imported", "version": "2.0", "type": "zvol", "os": "linux", "state": "active",
        "disabled": false, "public": true, "published_at": "2020-01-02T03:04:05.678Z",
        "nic_driver": "virtio", "disk_driver": "virtio", "cpu_type": "host", "image_size": 10240,
        "acl": [BOB], "files": [{"sha1": "x", "size": 1, "compression": "none"}]});
    assert_err(
        d.post(
            &format!("/images/{uuid}?action=import&account={ALICE}"),
            &manifest,
        ),
        403,
        "OperatorOnly",
    );
    let (s, img) = sj(d.post(&format!("/images/{uuid}?action=import"), &manifest));
    assert_eq!(s, 200, "{img}");
    assert_eq!(img["state"], "unactivated");
    assert_eq!(img["owner"], ADMIN);
    assert_eq!(img["published_at"], "2020-01-02T03:04:05.678Z");
    assert_eq!(img["acl"], json!([BOB]));
    assert_err(
        d.post(&format!("/images/{uuid}?action=import"), &manifest),
        409,
        "ImageUuidAlreadyExists",
    );
    let mut other = manifest.clone();
    other["uuid"] = json!(ALICE);
    assert_err(
        d.post(&format!("/images/{uuid}?action=import"), &other),
        422,
        "InvalidParameter",
    );
    d.put_bytes(
        &format!("/images/{uuid}/file?compression=none"),
        bytes(100_000, 4),
    );
    let (_, img) = sj(d.post(&format!("/images/{uuid}?action=activate"), &json!({})));
    assert_eq!(
        img["published_at"], "2020-01-02T03:04:05.678Z",
        "activation keeps an imported date"
    );

    // A second daemon imports it, manifest and file, from the first.
    let dir2 = tempfile::tempdir().unwrap();
    let d2 = Daemon::start(dir2.path());
    let (s, img) = sj(d2.post(
        &format!("/images/{uuid}?action=import&source={}", d.url),
        &json!({}),
    ));
    assert_eq!(s, 200, "{img}");
    let (s, img) = sj(d2.put_bytes(&format!("/images/{uuid}/file?source={}", d.url), vec![]));
    assert_eq!(s, 200, "{img}");
    assert_eq!(img["files"][0]["size"], 100_000);
    assert_eq!(
        d2.post(&format!("/images/{uuid}?action=activate"), &json!({}))
            .status(),
        200
    );
    let got = d2.file(uuid);
    assert_eq!(got, bytes(100_000, 4));
    // A missing remote image passes the remote 404 through; a dead source is 503.
    assert_err(
        d2.post(
            &format!("/images/{ALICE}?action=import&source={}", d.url),
            &json!({}),
        ),
        404,
        "ResourceNotFound",
    );
    assert_err(
        d2.post(
            &format!("/images/{BOB}?action=import&source=http://127.0.0.1:9"),
            &json!({}),
        ),
        503,
        "RemoteSourceError",
    );
}

#[test]
fn the_daemon_collects_garbage_online_by_itself_and_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_with(dir.path(), |c| {
        c.gc_interval = Some(std::time::Duration::from_millis(300))
    });
    let a = d.image(ALICE, "a", json!({}), &bytes(3_000_000, 1), true);
    let b = d.image(ALICE, "b", json!({}), &bytes(3_000_000, 2), true);
    assert_eq!(d.delete(&format!("/images/{a}")).status(), 204);
    assert_err(
        d.post(&format!("/state?action=gc&account={ALICE}"), &json!({})),
        403,
        "OperatorOnly",
    );
    let (s, r) = sj(d.post("/state?action=gc&threshold=0", &json!({})));
    assert_eq!(s, 200, "{r}");
    assert!(
        r["done"]["bytes_freed"].as_u64().unwrap() >= 2_900_000,
        "{r}"
    );
    // Deleting the other one: the background collector reclaims it alone.
    assert_eq!(d.delete(&format!("/images/{b}")).status(), 204);
    let store = d.state.api.store();
    let start = std::time::Instant::now();
    while store.stats().unwrap().live_stored_bytes > 0
        || store.stats().unwrap().stored_bytes > 100_000
    {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "{:?}",
            store.stats().unwrap()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (s, v) = sj(d.post("/state?action=verify", &json!({})));
    assert_eq!(s, 200);
    assert_eq!(v["problems"], json!([]));
    assert_err(
        d.post("/state?action=gc&threshold=2", &json!({})),
        422,
        "InvalidParameter",
    );
}

#[test]
fn a_content_md5_that_does_not_match_the_upload_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let uuid = d.image(ALICE, "md5", json!({}), &[], false);
    let data = bytes(300_000, 4);
    let put = |md5: &str| {
        d.client
            .put(format!(
                "{}/images/{uuid}/file?compression=none&account={ALICE}",
                d.url
            ))
            .header("content-type", "application/octet-stream")
            .header("content-md5", md5)
            .body(data.clone())
            .send()
            .unwrap()
    };
    let body = assert_err(put(&md5_b64(b"something else")), 400, "Download");
    assert!(
        body["message"].as_str().unwrap().contains("Content-MD5"),
        "{body}"
    );
    let (_, img) = sj(d.get(&format!("/images/{uuid}?account={ALICE}")));
    assert_eq!(img["files"], json!([]), "nothing was attached");
    let (s, img) = sj(put(&md5_b64(&data)));
    assert_eq!(s, 200, "{img}");
    assert_eq!(img["files"][0]["size"], 300_000);
    assert!(d.state.api.store().verify(false).unwrap().is_clean());
}

#[test]
fn a_date_marker_that_would_overflow_is_an_invalid_parameter() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    for m in [
        "2026-01-01T-9223372036854775808:00:00Z",
        "2026-01-01T00:00:-9223372036854775808Z",
        "-9223372036854775808-01-01T00:00:00Z",
    ] {
        let url = format!("/images?marker={}", m.replace(':', "%3A"));
        assert_err(d.get(&url), 422, "InvalidParameter");
    }
    // The daemon still answers.
    assert_eq!(d.get("/ping").status(), 200);
}

#[test]
fn verify_on_the_live_store_names_the_images_damage_touches() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let hit = d.image(ALICE, "hit", json!({}), &bytes(2_000_000, 31), true);
    d.stop();
    let seg = dir.path().join("segments/000000000001.seg");
    let mut raw = std::fs::read(&seg).unwrap();
    let at = raw.len() / 2;
    raw[at] ^= 0x08;
    std::fs::write(&seg, raw).unwrap();
    let d = Daemon::start(dir.path());
    let spare = d.image(BOB, "spare", json!({}), &bytes(100_000, 32), true);
    let (s, v) = sj(d.post("/state?action=verify", &json!({})));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["damaged_images"], json!([hit]), "{v}");
    assert_ne!(v["damaged_images"][0], spare);
}

#[test]
fn the_frameworks_own_errors_are_imgapi_error_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    // A JSON body over the route's limit.
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(3 << 20));
    let r = d
        .client
        .post(format!("{}/images?account={ALICE}", d.url))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .unwrap();
    assert_err(r, 413, "RequestEntityTooLarge");
    // A path segment that is not UTF-8.
    assert_err(d.get("/images/%FF"), 404, "ResourceNotFound");
    // A query string that does not decode as pairs of strings.
    let r = d.get("/images?account=%FF");
    let (s, body) = sj(r);
    assert!(s == 400 || s == 422, "{s} {body}");
    assert!(body["code"].is_string(), "{body}");
}

#[test]
fn an_acl_has_a_documented_limit() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let uuid = d.image(ALICE, "acl", json!({}), &bytes(100, 1), true);
    let accounts = |n: usize, from: usize| -> Vec<String> {
        (from..from + n)
            .map(|i| format!("00000000-0000-4000-8000-{i:012x}"))
            .collect()
    };
    let (s, img) = sj(d.post(
        &format!("/images/{uuid}/acl?account={ALICE}"),
        &json!(accounts(1000, 1)),
    ));
    assert_eq!(s, 200);
    assert_eq!(img["acl"].as_array().unwrap().len(), 1000);
    let body = assert_err(
        d.post(
            &format!("/images/{uuid}/acl?account={ALICE}"),
            &json!(accounts(100, 5000)),
        ),
        422,
        "InvalidParameter",
    );
    assert!(body["message"].as_str().unwrap().contains("1024"), "{body}");
    // Nothing was changed, and UpdateImage holds to the same limit.
    let (_, img) = sj(d.get(&format!("/images/{uuid}?account={ALICE}")));
    assert_eq!(img["acl"].as_array().unwrap().len(), 1000);
    assert_err(
        d.post(
            &format!("/images/{uuid}?action=update&account={ALICE}"),
            &json!({"acl": accounts(2000, 1)}),
        ),
        422,
        "ValidationFailed",
    );
    // Removing is linear and exact.
    let (s, img) = sj(d.post(
        &format!("/images/{uuid}/acl?action=remove&account={ALICE}"),
        &json!(accounts(999, 2)),
    ));
    assert_eq!(s, 200);
    assert_eq!(img["acl"], json!(accounts(1, 1)));
}

#[test]
fn verify_audits_that_images_explain_every_reference() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let base = d.image(ALICE, "base", json!({}), &bytes(200_000, 1), true);
    d.post(
        &format!("/images/{base}/acl?account={ALICE}"),
        &json!([BOB]),
    );
    let (s, clone) = sj(d.post(&format!("/images/{base}/clone?account={BOB}"), &json!({})));
    assert_eq!(s, 200, "{clone}");
    let verify = || sj(d.post("/state?action=verify", &json!({}))).1;
    let v = verify();
    assert_eq!(v["problems"], json!([]), "{v}");

    let store = d.state.api.store();
    let (_, img) = sj(d.get(&format!("/images/{base}")));
    let file: imgstore::FileId = d
        .state
        .api
        .load(&base.parse().unwrap())
        .unwrap()
        .unwrap()
        .files[0]
        .file_id;
    assert_eq!(img["files"][0]["size"], 200_000);
    // A reference no image explains: space GC could never free.
    store.link(&file).unwrap();
    // Chunks held for a copy into an image that does not exist.
    let chunk = store.chunks(&file).unwrap()[0].id;
    store.claim_present(&[7u8; 16], &[chunk]).unwrap();
    let v = verify();
    let kinds: Vec<&str> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["unexplained_references", "orphan_transfer"], "{v}");
    assert!(
        v["problems"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("has 3 references; images hold 2")
    );
    store.unlink(&file).unwrap();
    store.release_partial(&[7u8; 16]).unwrap();
    assert_eq!(verify()["problems"], json!([]));
    // The command line audits a daemon's data dir the same way.
    store.link(&file).unwrap();
    d.stop();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_imgstore"))
        .args(["store", "verify", "--json", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("unexplained_references"), "{text}");
    assert_eq!(clone["files"][0]["sha1"], img["files"][0]["sha1"]);
}

#[test]
fn request_lines_are_logged_at_info_warn_and_error_by_status() {
    let dir = tempfile::tempdir().unwrap();
    let (d, log) = Daemon::start_logged(dir.path());
    assert_eq!(d.get("/ping").status(), 200);
    assert!(d.get("/images/not-a-uuid").status().is_client_error());
    d.stop();
    let text = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    let level = |url: &str| -> u64 {
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["url"] == url)
            .and_then(|l| l["level"].as_u64())
            .unwrap_or(0)
    };
    assert_eq!(level("/ping"), 30, "{text}");
    assert_eq!(level("/images/not-a-uuid"), 40, "{text}");
}

#[test]
fn admin_import_upgrades_a_v1_dsmanifest() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let uuid = "febaa412-6417-11e0-bc56-535d219f2590";
    let dsmanifest = json!({
        "uuid": uuid, "name": "smartos", "version": "1.3.12", "os": "smartos",
        "type": "zone-dataset", "description": "Base template to build other templates on",
        "urn": "sdc:sdc:smartos:1.3.12",
        "creator_uuid": ALICE, "vendor_uuid": ALICE, "creator_name": "sdc",
        "platform_type": "smartos", "cloud_name": "sdc",
        "created_at": "2011-04-11T08:45Z", "updated_at": "2011-04-11T08:45Z",
        "published_at": "2011-04-11T08:45Z",
        "files": [{"path": "smartos-1.3.12.zfs.bz2", "sha1": "246a0f5a", "size": 47315,
                   "url": "https://datasets.example/smartos-1.3.12.zfs.bz2"}],
        "requirements": {"networks": [{"name": "net0", "description": "public"}]}
    });
    let (s, img) = sj(d.post(&format!("/images/{uuid}?action=import"), &dsmanifest));
    assert_eq!(s, 200, "{img}");
    assert_eq!(img["v"], 2);
    assert_eq!(img["owner"], ALICE);
    assert_eq!(img["public"], true);
    assert_eq!(img["state"], "unactivated");
    assert_eq!(img["published_at"], "2011-04-11T08:45:00Z", "{img}");
    for gone in ["creator_uuid", "vendor_uuid", "created_at", "platform_type"] {
        assert!(img.get(gone).is_none(), "{gone} in {img}");
    }
    // A v1 manifest restricted to an account becomes a private shared one.
    let other = "febaa412-6417-11e0-bc56-535d219f2591";
    let mut restricted = dsmanifest.clone();
    restricted["uuid"] = json!(other);
    restricted["restricted_to_uuid"] = json!(BOB);
    let (s, img) = sj(d.post(&format!("/images/{other}?action=import"), &restricted));
    assert_eq!(s, 200, "{img}");
    assert_eq!(
        (img["public"].clone(), img["acl"].clone()),
        (json!(false), json!([BOB]))
    );
    // Unknown fields are still refused in a v2 manifest.
    let mut bogus = dsmanifest.clone();
    bogus["uuid"] = json!("febaa412-6417-11e0-bc56-535d219f2592");
    bogus["v"] = json!(2);
    let r = d.post(
        "/images/febaa412-6417-11e0-bc56-535d219f2592?action=import",
        &bogus,
    );
    assert_eq!(
        (r.status().as_u16(), sj(r).1["code"].clone()),
        (422, json!("InvalidParameter"))
    );
}

#[test]
fn a_file_damaged_at_its_start_is_an_error_answer_in_the_clients_terms() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let hit = d.image(ALICE, "hit", json!({}), &bytes(2_000_000, 41), true);
    d.stop();
    // A byte of the first record's payload (after the segment's and the
    // record's headers).
    let seg = dir.path().join("segments/000000000001.seg");
    let mut raw = std::fs::read(&seg).unwrap();
    raw[48 + 56 + 100] ^= 0x08;
    std::fs::write(&seg, raw).unwrap();
    let (d, log) = Daemon::start_logged(dir.path());
    let r = d.get(&format!("/images/{hit}/file"));
    let req_id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let (s, body) = sj(r);
    // Found before the headers went: an error body, not a 200 cut short.
    assert_eq!(s, 500, "{body}");
    assert_eq!(body["code"], "InternalError");
    assert_eq!(
        body["message"],
        format!("the image's file is damaged (request {req_id})")
    );
    // Where the damage is goes to the log, not to the client.
    let text = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains(&req_id) && l.contains("\"cause\""))
        .unwrap_or_else(|| panic!("no log line with the cause: {text}"));
    assert!(line.contains("segment 000000000001"), "{line}");
}
