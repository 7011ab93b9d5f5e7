//! The one IMGAPI client against a real daemon: how it reads error bodies,
//! names transport failures, and pages through ListImages.

use imgstore::http::client::{Client, ClientError};
use imgstore::imgapi::ImageState;
use serde_json::json;

use crate::common::bytes;
use crate::daemon::*;

#[test]
fn an_error_answer_is_read_as_code_message_and_fields() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let c = Client::new(&d.url, None).unwrap().as_account(Some(ALICE));
    let err = c
        .create_image(&json!({"name": "bad*name", "version": "1", "type": "zone-dataset"}))
        .unwrap_err();
    match &err {
        ClientError::Api { status, body, .. } => {
            assert_eq!(*status, 422);
            assert_eq!(body.code, "ValidationFailed");
            let fields: Vec<&str> = body.errors.iter().map(|e| e.field.as_str()).collect();
            assert_eq!(fields, ["name", "os"]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.code(), Some("ValidationFailed"));
    // The fields' messages are part of what the error says.
    let text = err.to_string();
    assert!(text.contains("name must match"), "{text}");
    let missing = c
        .get_image("00000000-0000-4000-8000-000000000000")
        .unwrap_err();
    assert_eq!(
        (missing.status(), missing.code()),
        (Some(404), Some("ResourceNotFound"))
    );
}

#[test]
fn transport_failures_and_bad_urls_say_what_happened() {
    let e = Client::new("http://127.0.0.1:9", None)
        .unwrap()
        .ping()
        .unwrap_err();
    assert!(matches!(e, ClientError::Transport { .. }), "{e:?}");
    let text = e.to_string().to_lowercase();
    assert!(text.contains("refused"), "{text}");
    for bad in ["us-east-1", "ftp://example.com", "http://"] {
        let e = Client::new(bad, None).unwrap_err();
        assert!(matches!(e, ClientError::BadUrl { .. }), "{bad}: {e:?}");
        assert!(e.to_string().contains(bad), "{e}");
    }
}

#[test]
fn list_all_images_follows_the_marker_past_a_page() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let c = Client::new(&d.url, None).unwrap();
    let n = imgstore::http::client::LIST_PAGE + 5;
    for i in 0..n {
        c.as_account(Some(ALICE))
            .create_image(&json!({
                "name": "svc",
                "version": format!("1.0.{i}"),
                "type": "zone-dataset",
                "os": "smartos"
            }))
            .unwrap();
    }
    // One page stops at the cap; the whole listing has every image once.
    assert_eq!(
        c.list_images(&[("state", "all")]).unwrap().len(),
        imgstore::http::client::LIST_PAGE
    );
    let all = c.list_all_images(&[("state", "all")]).unwrap();
    assert_eq!(all.len(), n);
    let mut uuids: Vec<uuid::Uuid> = all.iter().map(|i| i.uuid).collect();
    uuids.sort();
    uuids.dedup();
    assert_eq!(uuids.len(), n);
    // The file routes go through it too.
    let u = d.image(ALICE, "f", json!({}), &bytes(10_000, 3), true);
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut c.file_stream(&u).unwrap(), &mut body).unwrap();
    assert_eq!(body, bytes(10_000, 3));
}

#[test]
fn answers_are_read_into_their_wire_types() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let c = Client::new(&d.url, None).unwrap();
    assert!(c.ping().unwrap().imgstore.is_some());
    let u = d.image(ALICE, "typed", json!({}), &bytes(5_000, 4), true);
    let alice = c.as_account(Some(ALICE));
    let m = alice.get_image(&u).unwrap();
    assert_eq!((m.name.as_str(), m.state), ("typed", ImageState::Active));
    let f = m.file().unwrap();
    assert_eq!((f.size, f.stor.as_deref()), (5_000, None));
    let l = alice.lineage(&u).unwrap();
    assert_eq!((l.uuid, l.usage.logical_bytes), (m.uuid, 5_000));
    assert!(l.origin_chain.is_empty() && l.source.is_none());
    let s = alice.settings(ALICE).unwrap();
    assert!(s.image_share_trusted_accounts.is_empty());
    let state = c.state().unwrap();
    assert!(state.store.files >= 1);
    assert!(state.store.disk.is_some_and(|d| d.size_bytes > 0));
    let verify = c.verify(true, false).unwrap();
    assert!(verify.report.is_clean() && verify.damaged_images.is_empty());
    assert!(c.gc(Some(1.0)).unwrap().done.failed.is_empty());
    assert!(c.image_jobs(&u).unwrap().is_empty());
}
