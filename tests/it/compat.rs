//! Triton's own Node.js IMGAPI client (`sdc-clients` 13.x, installed by
//! `tools/prereqs` into `tools/compat/node_modules`) against the daemon.

use std::process::Command;

use serde_json::json;

use crate::daemon::{ALICE, Daemon};

#[test]
fn sdc_clients_works_against_imgstore_unchanged() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let compat = root.join("tools/compat");
    assert!(
        compat.join("node_modules/sdc-clients").is_dir(),
        "sdc-clients is not installed: run tools/prereqs (npm ci in tools/compat)"
    );
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let out = Command::new("node")
        .arg("--test")
        .arg("--test-reporter=spec")
        .arg(compat.join("sdc-clients.test.js"))
        .env("IMGAPI_URL", &d.url)
        .current_dir(&compat)
        .output()
        .expect("node runs");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "sdc-clients compatibility run failed:\n{text}"
    );
    assert!(text.contains("pass 3"), "{text}");
}

#[test]
fn sdc_clients_import_from_datacenter_and_wait_works_unchanged() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let compat = root.join("tools/compat");
    assert!(
        compat.join("node_modules/sdc-clients").is_dir(),
        "sdc-clients is not installed: run tools/prereqs (npm ci in tools/compat)"
    );
    let (_s, src) = crate::xdc::source();
    let uuid = src.image(
        ALICE,
        "xdc",
        json!({}),
        &crate::common::bytes(500_000, 3),
        true,
    );
    let (_d, dst) = crate::xdc::dest(&src.url);
    let out = Command::new("node")
        .arg("--test")
        .arg("--test-reporter=spec")
        .arg(compat.join("sdc-clients-xdc.test.js"))
        .env("IMGAPI_URL", &dst.url)
        .env("IMAGE_UUID", &uuid)
        .env("ACCOUNT", ALICE)
        .env("DATACENTER", "west")
        .current_dir(&compat)
        .output()
        .expect("node runs");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "sdc-clients x-DC run failed:\n{text}");
    assert!(text.contains("pass 1"), "{text}");
    let got = dst.get(&format!("/images/{uuid}/file")).bytes().unwrap();
    assert_eq!(got.to_vec(), crate::common::bytes(500_000, 3));
}
