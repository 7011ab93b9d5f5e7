//! `imgstore admin|account|datacenters` and `image import`, the built
//! binary against real daemons.

use std::process::{Command, Output};

use serde_json::{Value, json};

use crate::common::bytes;
use crate::daemon::*;

fn run(url: &str, account: Option<&str>, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_imgstore"));
    c.args(args)
        .env("IMGSTORE_URL", url)
        .env("XDG_CONFIG_HOME", "/nonexistent/xdg")
        .env_remove("IMGSTORE_PROFILE")
        .env_remove("IMGSTORE_ACCOUNT");
    if let Some(a) = account {
        c.env("IMGSTORE_ACCOUNT", a);
    }
    c.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn admin_stats_gc_and_verify_over_http_for_operators_only() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let uuid = d.image(ALICE, "a", json!({}), &bytes(300_000, 1), true);
    let o = run(&d.url, None, &["admin", "stats", "-j"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["store"]["files"], 1);
    // The live index's size counts its log, not only table files.
    assert!(v["store"]["index_bytes"].as_u64().unwrap() > 0, "{v}");
    let o = run(&d.url, None, &["admin", "stats"]);
    assert!(stdout(&o).contains("1 files"), "{}", stdout(&o));
    // An account is refused before anything is asked.
    let o = run(&d.url, Some(ALICE), &["admin", "stats"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("operators"), "{}", stderr(&o));
    // gc frees the deleted image's bytes.
    assert_eq!(
        d.delete(&format!("/images/{uuid}?account={ALICE}"))
            .status(),
        204
    );
    let o = run(&d.url, None, &["admin", "gc", "--threshold", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("bytes freed"), "{}", stdout(&o));
    assert_eq!(d.state.api.store().stats().unwrap().live_stored_bytes, 0);
    // verify: clean, then a leaked reference is reported with exit 1.
    d.image(ALICE, "b", json!({}), &bytes(1000, 2), true);
    let o = run(&d.url, None, &["admin", "verify"]);
    assert!(
        o.status.success() && stdout(&o).contains(": ok"),
        "{}",
        stdout(&o)
    );
    let file = d.state.api.store().files().unwrap()[0].0;
    d.state.api.store().link(&file).unwrap();
    let o = run(&d.url, None, &["admin", "verify"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("unexplained_references"),
        "{}",
        stdout(&o)
    );
    d.state.api.store().unlink(&file).unwrap();
}

#[test]
fn account_trust_and_untrust_change_the_trusted_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let o = run(&d.url, Some(ALICE), &["account", "trust", BOB, CAROL]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (_, s) = sj(d.get(&format!("/accounts/{ALICE}/settings?account={ALICE}")));
    assert_eq!(s["image_share_trusted_accounts"], json!([BOB, CAROL]));
    let o = run(&d.url, Some(ALICE), &["account", "untrust", BOB]);
    assert!(
        stdout(&o).contains(CAROL) && !stdout(&o).contains(BOB),
        "{}",
        stdout(&o)
    );
    let o = run(&d.url, Some(ALICE), &["account", "settings", "-j"]);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["image_share_trusted_accounts"], json!([CAROL]));
    let o = run(&d.url, Some(ALICE), &["account", "trust", "not-a-uuid"]);
    assert_eq!(o.status.code(), Some(1));
    let o = run(&d.url, None, &["account", "settings"]);
    assert!(stderr(&o).contains("--account"), "{}", stderr(&o));
}

#[test]
fn import_from_another_imgapi_into_several_datacenters_and_list_them() {
    let (_s, west) = crate::xdc::source();
    let data = bytes(200_000, 3);
    let uuid = west.image(ADMIN, "base", json!({"public": true}), &data, true);
    let (_e, east) = crate::xdc::dest(&west.url);
    let north_dir = tempfile::tempdir().unwrap();
    let north = Daemon::start(north_dir.path());
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("p.json");
    std::fs::write(
        &profile,
        json!({"datacenters": {"east": east.url, "north": north.url,
                               "gone": "http://127.0.0.1:9"}})
        .to_string(),
    )
    .unwrap();
    let p = profile.to_str().unwrap();
    // Into two datacenters; one unknown name stops it before anything.
    let o = run(
        &east.url,
        None,
        &[
            "image",
            "--profile",
            p,
            "import",
            "-S",
            &west.url,
            &uuid,
            "--to",
            "east,mars",
        ],
    );
    assert!(stderr(&o).contains("mars"), "{}", stderr(&o));
    assert_eq!(east.get(&format!("/images/{uuid}")).status(), 404);
    let o = run(
        &east.url,
        None,
        &[
            "image",
            "--profile",
            p,
            "import",
            "-S",
            &west.url,
            &uuid,
            "--to",
            "east,north",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    for d in [&east, &north] {
        assert_eq!(d.file(&uuid), data);
    }
    // datacenters: who answers, and exit 1 for the one that does not.
    let o = run(&east.url, None, &["datacenters", "--profile", p]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("east") && l.contains("up")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("gone") && l.contains("down")),
        "{out}"
    );
}

#[test]
fn operator_overrides_an_account_from_anywhere_and_admin_says_how() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let o = run(&d.url, Some(ALICE), &["admin", "stats"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--operator"), "{}", stderr(&o));
    let o = run(&d.url, Some(ALICE), &["admin", "stats", "--operator"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("files"), "{}", stdout(&o));
}
