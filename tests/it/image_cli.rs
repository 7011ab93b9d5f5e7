//! `imgstore image ...` driven as a user would: the built binary against
//! real daemons.

use std::process::{Command, Output};

use serde_json::{Value, json};

use crate::common::bytes;
use crate::daemon::*;

fn cli(
    url: &str,
    account: Option<&str>,
    profile: Option<&std::path::Path>,
    args: &[&str],
) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_imgstore"));
    c.arg("image")
        .args(args)
        .env("IMGSTORE_URL", url)
        .env_remove("IMGSTORE_ACCOUNT");
    if let Some(a) = account {
        c.env("IMGSTORE_ACCOUNT", a);
    }
    match profile {
        Some(p) => c.env("IMGSTORE_PROFILE", p),
        None => c.env("IMGSTORE_PROFILE", "/nonexistent/profile.json"),
    };
    c.output().unwrap()
}

fn ok(o: &Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "stdout: {out}\nstderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

fn err(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn the_lifecycle_through_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let file = dir.path().join("image.bin");
    std::fs::write(&file, bytes(400_000, 1)).unwrap();
    let a = |args: &[&str]| cli(&d.url, Some(ALICE), None, args);

    let out = ok(&a(&[
        "create",
        "--name",
        "web",
        "--version",
        "1.0.0",
        "--os",
        "linux",
        "--type",
        "zvol",
        "nic_driver=virtio",
        "disk_driver=virtio",
        "cpu_type=host",
        "image_size=1024",
    ]));
    assert!(out.starts_with("Created image "), "{out}");
    ok(&a(&["upload", "web", file.to_str().unwrap()]));
    let out = ok(&a(&["activate", "web@1.0.0"]));
    assert!(out.contains("Activated image"), "{out}");
    // A newer version: plain names resolve to the latest.
    let v2 = d.image(
        ALICE,
        "web",
        json!({"version": "2.0.0"}),
        &bytes(1000, 2),
        true,
    );
    let got: Value = serde_json::from_str(&ok(&a(&["get", "web"]))).unwrap();
    assert_eq!(got["uuid"], v2.as_str());
    let got: Value = serde_json::from_str(&ok(&a(&["get", &v2[..8]]))).unwrap();
    assert_eq!(got["version"], "2.0.0");

    // list: node-triton's columns and flags.
    let out = ok(&a(&["list"]));
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "SHORTID", "NAME", "VERSION", "FLAGS", "OS", "TYPE", "PUBDATE"
        ]
    );
    assert_eq!(lines.count(), 2);
    let out = ok(&a(&["list", "-l", "-H"]));
    assert!(
        out.lines()
            .all(|l| l.split_whitespace().count() >= 7 && l.contains("active")),
        "{out}"
    );
    let out = ok(&a(&["list", "-o", "name,version", "-H", "version=2.0.0"]));
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["web", "2.0.0"]);
    let out = ok(&a(&["list", "--json"]));
    assert_eq!(
        out.lines()
            .filter(|l| serde_json::from_str::<Value>(l).is_ok())
            .count(),
        2
    );

    // Share: '+' for the owner, 'S' for Bob; unshare.
    let out = ok(&a(&["share", "web@1.0.0", BOB]));
    assert!(
        out.contains(&format!("Shared image web@1.0.0 with account {BOB}")),
        "{out}"
    );
    let flags = |acct: &str| {
        ok(&cli(
            &d.url,
            Some(acct),
            None,
            &["list", "-H", "-o", "version,flags", "version=1.0.0"],
        ))
    };
    assert!(flags(ALICE).contains('+'), "{}", flags(ALICE));
    assert!(flags(BOB).trim().ends_with('S'), "{}", flags(BOB));
    // Clone as Bob.
    let out = ok(&cli(&d.url, Some(BOB), None, &["clone", "web@1.0.0"]));
    assert!(out.starts_with("Cloned image web@1.0.0 to "), "{out}");
    let lineage: Value =
        serde_json::from_str(&ok(&cli(&d.url, Some(BOB), None, &["lineage", "web"]))).unwrap();
    assert_eq!(lineage["source"]["how"], "clone");
    ok(&a(&["unshare", "web@1.0.0", BOB]));
    let e = err(&a(&["unshare", "web@1.0.0", BOB]));
    assert!(e.contains("is not shared with"), "{e}");

    ok(&a(&[
        "update",
        "web@2.0.0",
        "description=new text",
        "tags={\"tier\":\"gold\"}",
    ]));
    let got: Value = serde_json::from_str(&ok(&a(&["get", "web@2.0.0"]))).unwrap();
    assert_eq!(
        (got["description"].as_str(), got["tags"]["tier"].as_str()),
        (Some("new text"), Some("gold"))
    );
    ok(&a(&["disable", "web@2.0.0"]));
    let out = ok(&a(&["list", "-a", "-H", "-o", "version,state,flags"]));
    assert!(
        out.lines()
            .any(|l| l.contains("2.0.0") && l.contains("disabled") && l.contains('X')),
        "{out}"
    );
    ok(&a(&["enable", "web@2.0.0"]));
    let out = ok(&a(&["wait", "web@2.0.0"]));
    assert!(out.contains("already active"), "{out}");
    let out = ok(&a(&["delete", "web@2.0.0"]));
    assert!(out.starts_with("Deleted image"), "{out}");
}

#[test]
fn errors_name_the_imgapi_code_or_the_url_that_failed() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let u = d.image(ALICE, "private", json!({}), &bytes(100, 1), true);
    let e = err(&cli(&d.url, Some(BOB), None, &["clone", &u]));
    assert!(
        e.starts_with("imgstore image clone: error (ResourceNotFound): "),
        "{e}"
    );
    d.post(&format!("/images/{u}/acl"), &json!([CAROL]));
    let public = d.image(ALICE, "pub", json!({"public": true}), &bytes(100, 2), true);
    let e = err(&cli(&d.url, Some(BOB), None, &["clone", &public]));
    assert!(
        e.starts_with("imgstore image clone: error (ImageNotShared): "),
        "{e}"
    );
    let e = err(&cli("http://127.0.0.1:9", Some(ALICE), None, &["list"]));
    assert!(
        e.contains("http://127.0.0.1:9") && e.starts_with("imgstore image list: error"),
        "{e}"
    );
    let e = err(&cli(&d.url, Some(ALICE), None, &["get", "no-such-image"]));
    assert!(e.contains("no image"), "{e}");
    let e = err(&cli(&d.url, None, None, &["copy", &u, "--to", "east"]));
    assert!(e.contains("needs --account"), "{e}");
}

#[test]
fn copy_to_two_datacenters_with_plain_progress_lines() {
    let (_s, west) = crate::xdc::source();
    let data = bytes(6_000_000, 5);
    let uuid = west.image(ALICE, "app", json!({}), &data, true);
    let (_e, east) = crate::xdc::dest(&west.url);
    let north_dir = tempfile::tempdir().unwrap();
    let wurl = west.url.clone();
    let north = Daemon::start_with(north_dir.path(), move |c| {
        c.imgapi.datacenter_name = "north".into();
        c.imgapi
            .imgapi_url_from_datacenter
            .insert("west".into(), wurl);
    });
    let profile = north_dir.path().join("profile.json");
    std::fs::write(
        &profile,
        json!({"datacenters": {"west": west.url, "east": east.url, "north": north.url}})
            .to_string(),
    )
    .unwrap();
    let out = ok(&cli(
        &west.url,
        Some(ALICE),
        Some(&profile),
        &["copy", "app", "--to", "all"],
    ));
    for dc in ["east", "north"] {
        assert!(
            out.contains(&format!(
                "Copied image {uuid} (app@1.0.0) to datacenter {dc}"
            )),
            "{out}"
        );
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("{dc}: ")) && l.contains("fetched")),
            "{out}"
        );
        let d = if dc == "east" { &east } else { &north };
        assert_eq!(
            d.get(&format!("/images/{uuid}/file"))
                .bytes()
                .unwrap()
                .to_vec(),
            data
        );
    }
    // Copying again refreshes, and an unknown datacenter is an error.
    ok(&cli(
        &west.url,
        Some(ALICE),
        Some(&profile),
        &["copy", "app", "--to", "east"],
    ));
    let e = err(&cli(
        &west.url,
        Some(ALICE),
        Some(&profile),
        &["copy", "app", "--to", "south"],
    ));
    assert!(e.contains("not in the profile"), "{e}");
}
