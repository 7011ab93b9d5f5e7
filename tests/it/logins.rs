//! Logins where account uuids are expected: the built client and a daemon
//! started from a config file whose `accounts` names logins (and whose
//! CloudAPI face has users of its own).

use std::process::{Command, Output};

use serde_json::{Value, json};

use crate::common::bytes;
use crate::daemon::{ADMIN, ALICE, BOB, CAROL};
use crate::image_cli::{err, ok};
use crate::procs::{Proc, free_port, start};

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

/// A daemon whose account table is alice and bob (`accounts`) and carol
/// (a CloudAPI user).
fn daemon(dir: &std::path::Path) -> (Proc, String) {
    let port = free_port();
    let config = dir.join("config.json");
    let body = json!({
        "listen": format!("127.0.0.1:{port}"),
        "dataDir": dir.join("data"),
        "adminUuid": ADMIN,
        "accounts": {"alice": ALICE, "bob": BOB},
        "cloudapi": {
            "listen": format!("127.0.0.1:{}", free_port()),
            "users": [{"login": "carol", "uuid": CAROL}],
        },
    });
    std::fs::write(&config, body.to_string()).unwrap();
    let url = format!("http://127.0.0.1:{port}");
    (start(&config, &url), url)
}

/// `text` says `what` exactly once: one sentence per error.
fn once(text: &str, what: &str) {
    assert_eq!(text.matches(what).count(), 1, "{text}");
}

#[test]
fn logins_work_wherever_an_account_uuid_was_required() {
    let dir = tempfile::tempdir().unwrap();
    let (_d, url) = daemon(dir.path());
    let file = dir.path().join("image.bin");
    std::fs::write(&file, bytes(100_000, 3)).unwrap();
    let alice = |args: &[&str]| run(&url, Some("alice"), args);

    // --account alice, and an operator's create for bob by login.
    ok(&alice(&[
        "image",
        "create",
        "--name",
        "web",
        "--version",
        "1",
    ]));
    ok(&alice(&["image", "upload", "web", file.to_str().unwrap()]));
    ok(&alice(&["image", "activate", "web"]));
    let out = ok(&run(
        &url,
        None,
        &[
            "image",
            "create",
            "--name",
            "bobs",
            "--version",
            "1",
            "owner=bob",
            "-j",
        ],
    ));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["owner"], json!(BOB));

    // Share with a login of `accounts` and one of the CloudAPI face.
    let out = ok(&alice(&["image", "share", "web", "bob"]));
    assert!(out.contains(&format!("bob ({BOB})")), "{out}");
    ok(&alice(&["image", "share", "web", "carol"]));
    let v: Value = serde_json::from_str(&ok(&alice(&["image", "get", "web", "-j"]))).unwrap();
    assert_eq!(v["acl"], json!([BOB, CAROL]));
    let out = ok(&run(
        &url,
        Some("bob"),
        &["image", "list", "-H", "-o", "name,flags"],
    ));
    assert!(out.contains("web") && out.contains('S'), "{out}");
    ok(&alice(&["image", "unshare", "web", "carol"]));
    let out = err(&alice(&["image", "unshare", "web", "carol"]));
    assert!(out.contains("not shared with carol"), "{out}");

    // Owner filters, trusted accounts and the raw API take logins too.
    let out = ok(&run(
        &url,
        None,
        &["image", "list", "-H", "-o", "name", "owner=alice"],
    ));
    assert_eq!(out.trim(), "web");
    let out = ok(&alice(&["account", "trust", "bob", "carol"]));
    assert!(out.contains(BOB) && out.contains(CAROL), "{out}");
    let http = reqwest::blocking::Client::new();
    let r = http
        .get(format!("{url}/images?account=bob&owner=alice"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let list: Value = r.json().unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let r = http.get(format!("{url}/accounts/carol")).send().unwrap();
    let who: Value = r.json().unwrap();
    assert_eq!(who, json!({"uuid": CAROL, "login": "carol"}));

    // An empty account is the operator.
    let out = ok(&run(
        &url,
        Some(""),
        &["image", "list", "-a", "-H", "-o", "name"],
    ));
    assert!(out.contains("bobs") && out.contains("web"), "{out}");
}

#[test]
fn an_unknown_login_is_one_clear_sentence_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let (_d, url) = daemon(dir.path());
    let what = "\"dave\" is neither an account uuid nor a login this datacenter knows";
    once(&err(&run(&url, Some("dave"), &["image", "list"])), what);
    ok(&run(
        &url,
        Some("alice"),
        &["image", "create", "--name", "web", "--version", "1"],
    ));
    once(
        &err(&run(
            &url,
            Some("alice"),
            &["image", "share", "web", "dave"],
        )),
        what,
    );
    once(
        &err(&run(&url, Some("alice"), &["account", "trust", "dave"])),
        what,
    );
    once(
        &err(&run(
            &url,
            None,
            &[
                "image",
                "create",
                "--name",
                "x",
                "--version",
                "1",
                "owner=dave",
            ],
        )),
        what,
    );
    once(
        &err(&run(&url, None, &["image", "list", "owner=dave"])),
        what,
    );
    // An operator's create without an owner says how to give one.
    let e = err(&run(
        &url,
        None,
        &["image", "create", "--name", "x", "--version", "1"],
    ));
    assert!(
        e.contains("owner=ACCOUNT") && e.contains("--account"),
        "{e}"
    );
    // Over the API: the body's message names the field and the login.
    let http = reqwest::blocking::Client::new();
    let r = http
        .get(format!("{url}/images?account=dave"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 422);
    let body: Value = r.json().unwrap();
    assert_eq!(body["message"], json!(format!("account: {what}")));
}

#[test]
fn the_config_names_each_login_once_and_still_takes_a_list_of_uuids() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.json");
    let load = |v: Value| {
        std::fs::write(&path, v.to_string()).unwrap();
        imgstore::daemon::DaemonConfig::from_file(&path)
    };
    let users = json!([{"login": "alice", "uuid": BOB}]);
    let e = load(json!({"accounts": {"alice": ALICE}, "cloudapi": {"users": users}}))
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"alice\"") && e.contains(BOB), "{e}");
    let e = load(json!({"accounts": {ALICE: ALICE}}))
        .unwrap_err()
        .to_string();
    assert!(e.contains("is a uuid, not a login"), "{e}");
    let c = load(json!({"accounts": [ALICE, BOB]})).unwrap();
    assert_eq!(c.imgapi.accounts.map(|a| a.len()), Some(2));
    assert!(c.imgapi.logins.is_empty());
}
