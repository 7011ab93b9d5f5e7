//! `imgstore profile ...` as `triton profile`, the built binary with a
//! config dir of its own, and the profiles used by the image commands.

use std::process::{Command, Output};

use serde_json::{Value, json};

use crate::daemon::{ALICE, Daemon};
use crate::image_cli::{err, ok};

fn run(xdg: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imgstore"))
        .args(args)
        .env("XDG_CONFIG_HOME", xdg)
        .env_remove("IMGSTORE_URL")
        .env_remove("IMGSTORE_ACCOUNT")
        .env_remove("IMGSTORE_PROFILE")
        .output()
        .unwrap()
}

#[test]
fn profiles_are_created_listed_shown_made_current_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_with(dir.path(), |c| {
        c.imgapi
            .logins
            .insert("alice".into(), ALICE.parse().unwrap());
    });
    let xdg = tempfile::tempdir().unwrap();
    let p = |args: &[&str]| run(xdg.path(), args);

    let out = ok(&p(&["profile", "list"]));
    assert!(out.contains("profile create"), "{out}");
    // The first profile made is the current one, and the image commands
    // use it (its account a login).
    let out = ok(&p(&[
        "profile",
        "create",
        "dev",
        "--url",
        &d.url,
        "--account",
        "alice",
        "--datacenter",
        "east=http://127.0.0.1:9/",
    ]));
    assert!(out.contains("now the current profile"), "{out}");
    let out = ok(&p(&[
        "image",
        "-j",
        "create",
        "--name",
        "a",
        "--version",
        "1",
    ]));
    let img: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(img["owner"], json!(ALICE));
    let shown: Value = serde_json::from_str(&ok(&p(&["profile", "get", "-j"]))).unwrap();
    assert_eq!(
        shown,
        json!({"url": d.url, "account": "alice",
               "datacenters": {"east": "http://127.0.0.1:9"}})
    );

    // Another profile made current; --profile still names the first.
    ok(&p(&[
        "profile",
        "create",
        "gone",
        "--url",
        "http://127.0.0.1:9",
    ]));
    ok(&p(&["profile", "set-current", "gone"]));
    let out = ok(&p(&["profile", "list"]));
    let gone = out
        .lines()
        .find(|l| l.starts_with("gone"))
        .unwrap_or_default();
    assert!(gone.contains('*'), "{out}");
    let e = err(&p(&["image", "list"]));
    assert!(e.contains("127.0.0.1:9"), "{e}");
    let out = ok(&p(&[
        "image",
        "--profile",
        "dev",
        "list",
        "-a",
        "-H",
        "-o",
        "name",
    ]));
    assert_eq!(out.trim(), "a");

    // Mistakes say what there is and change nothing.
    let e = err(&p(&["profile", "get", "nope"]));
    assert!(e.contains("\"nope\"") && e.contains("dev, gone"), "{e}");
    let e = err(&p(&["profile", "create", "dev", "--url", &d.url]));
    assert!(e.contains("-f"), "{e}");
    let e = err(&p(&["profile", "create", "a/b", "--url", &d.url]));
    assert!(e.contains("not a profile name"), "{e}");
    let e = err(&p(&["profile", "delete", "gone", "nope"]));
    assert!(e.contains("\"nope\""), "{e}");
    assert!(ok(&p(&["profile", "list"])).contains("gone"));

    // Deleting the current one leaves none current.
    ok(&p(&["profile", "delete", "gone"]));
    let out = ok(&p(&["profile", "list", "-j"]));
    let rows: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        rows,
        vec![json!({"name": "dev", "curr": false, "account": "alice", "url": d.url})]
    );
    let e = err(&p(&["profile", "get"]));
    assert!(e.contains("set-current"), "{e}");
}
