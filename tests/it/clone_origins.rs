//! `imgstore image clone` of an image with origins: the origins cloned
//! along are named, and the caller's earlier clones of origins serve in the
//! new chain (or the answer says why one could not).

use std::process::{Command, Output};

use serde_json::{Value, json};

use crate::common::bytes;
use crate::daemon::*;
use crate::image_cli::ok;

const DAVE: &str = "dddddddd-dddd-4ddd-8ddd-dddddddddddd";

fn cli(url: &str, account: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imgstore"))
        .arg("image")
        .args(args)
        .env("IMGSTORE_URL", url)
        .env("IMGSTORE_ACCOUNT", account)
        .env("XDG_CONFIG_HOME", "/nonexistent/xdg")
        .env_remove("IMGSTORE_PROFILE")
        .output()
        .unwrap()
}

/// The uuid a "Cloned image X to UUID (...)" first line names.
fn new_uuid(out: &str) -> String {
    out.lines()
        .next()
        .and_then(|l| l.split(" to ").nth(1))
        .and_then(|l| l.split(' ').next())
        .unwrap_or_else(|| panic!("{out}"))
        .to_string()
}

fn image(d: &Daemon, uuid: &str) -> Value {
    let (s, v) = sj(d.get(&format!("/images/{uuid}")));
    assert_eq!(s, 200, "{v}");
    v
}

/// Alice's base@1.0.0 <- mid@2.0.0 <- app@3.0.0, each shared with Bob and
/// Carol.
fn chain(d: &Daemon) -> [String; 3] {
    let mut origin = None;
    let mut out = Vec::new();
    for (i, (name, version)) in [("base", "1.0.0"), ("mid", "2.0.0"), ("app", "3.0.0")]
        .into_iter()
        .enumerate()
    {
        let mut extra = json!({"version": version});
        if let Some(o) = &origin {
            extra["origin"] = json!(o);
        }
        let u = d.image(ALICE, name, extra, &bytes(30_000, 40 + i as u64), true);
        let r = d.post(
            &format!("/images/{u}/acl?account={ALICE}"),
            &json!([BOB, CAROL]),
        );
        assert_eq!(r.status(), 200);
        origin = Some(u.clone());
        out.push(u);
    }
    [out[0].clone(), out[1].clone(), out[2].clone()]
}

#[test]
fn a_clone_keeps_the_callers_earlier_clones_of_its_origins() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let [base, mid, app] = chain(&d);
    let bob = |args: &[&str]| ok(&cli(&d.url, BOB, args));

    // base has no origin: one clone, no other line.
    let out = bob(&["clone", &base]);
    assert_eq!(out.lines().count(), 1, "{out}");
    let b1 = new_uuid(&out);
    // mid: Bob's clone of base serves as its origin.
    let out = bob(&["clone", &mid]);
    assert!(
        out.contains(&format!("Kept your clone {b1} of its origin {base}")),
        "{out}"
    );
    assert!(!out.contains("Cloned its origin"), "{out}");
    let m1 = new_uuid(&out);
    assert_eq!(image(&d, &m1)["origin"], json!(b1));
    // Another clone of base does not confuse the choice for app: the
    // clones that form a chain (b1 <- m1) serve.
    bob(&["clone", &base]);
    // -n says so first, and clones nothing.
    let (_, before) = sj(d.get(&format!("/images?owner={BOB}&state=all")));
    let out = bob(&["clone", "-n", &app]);
    assert!(
        out.contains(&format!("Would keep your clone {b1} of its origin {base}"))
            && out.contains(&format!("Would keep your clone {m1} of its origin {mid}")),
        "{out}"
    );
    let (_, after) = sj(d.get(&format!("/images?owner={BOB}&state=all")));
    assert_eq!(before, after);
    let out = bob(&["clone", &app]);
    assert!(
        out.contains(&format!("Kept your clone {b1} of its origin {base}"))
            && out.contains(&format!("Kept your clone {m1} of its origin {mid}")),
        "{out}"
    );
    let a1 = new_uuid(&out);
    assert_eq!(image(&d, &a1)["origin"], json!(m1));
    assert_eq!(image(&d, &a1)["owner"], json!(BOB));
}

#[test]
fn a_clone_names_the_origins_it_cloned_and_why_an_earlier_clone_could_not_serve() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let [base, mid, app] = chain(&d);
    let carol = |args: &[&str]| ok(&cli(&d.url, CAROL, args));

    // Carol's first clone of mid clones base along, and says so.
    let out = carol(&["clone", &mid]);
    let cloned: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("Cloned its origin"))
        .collect();
    assert_eq!(cloned.len(), 1, "{out}");
    assert!(
        cloned[0].starts_with(&format!("Cloned its origin {base} to ")),
        "{out}"
    );
    let cm = new_uuid(&out);
    let cb = image(&d, &cm)["origin"].as_str().unwrap().to_string();
    // Her clone of base goes to another account: her clone of mid no
    // longer sits on a clone of hers, so app's clone cannot use it.
    let r = d.post(
        &format!("/images/{cb}?action=update"),
        &json!({"owner": DAVE}),
    );
    assert_eq!(r.status(), 200);
    let out = carol(&["clone", "-n", &app]);
    assert!(
        out.contains(&format!("Would clone its origin {base} too"))
            && out.contains(&format!("Would clone its origin {mid} too"))
            && out.contains(&format!("Note: your clone {cm} of origin {mid}")),
        "{out}"
    );
    let out = carol(&["clone", &app]);
    assert!(
        out.contains(&format!("Cloned its origin {base} to "))
            && out.contains(&format!("Cloned its origin {mid} to ")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "Note: your clone {cm} of origin {mid} does not derive from your clones of the origins below it"
        )),
        "{out}"
    );
    // -j prints the clone alone.
    let out = carol(&["-j", "clone", &base]);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["owner"], json!(CAROL));
}
