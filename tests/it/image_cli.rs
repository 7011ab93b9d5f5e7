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
    // No default profile from the machine running the tests.
    c.env("XDG_CONFIG_HOME", "/nonexistent/xdg");
    match profile {
        Some(p) => c.env("IMGSTORE_PROFILE", p),
        None => c.env_remove("IMGSTORE_PROFILE"),
    };
    c.output().unwrap()
}

/// A command's stdout once it succeeded (the other tests of the client
/// use it too).
pub(crate) fn ok(o: &Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "stdout: {out}\nstderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// A command's stderr once it failed with status 1.
pub(crate) fn err(o: &Output) -> String {
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
    let lineage: Value = serde_json::from_str(&ok(&cli(
        &d.url,
        Some(BOB),
        None,
        &["lineage", "-j", "web"],
    )))
    .unwrap();
    assert_eq!(lineage["source"]["how"], "clone");
    let human = ok(&cli(&d.url, Some(BOB), None, &["lineage", "web"]));
    assert!(
        human.contains("clone from ") && human.contains("usage: "),
        "{human}"
    );
    // Dry runs change nothing.
    let out = ok(&a(&["share", "-n", "web@1.0.0", CAROL]));
    assert!(out.contains("would be shared with"), "{out}");
    let (_, img) = sj(d.get("/images?name=web&version=1.0.0"));
    assert!(!img.to_string().contains(CAROL), "{img}");
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
    // -j: the image, one JSON object, and no plain lines among it.
    let out = ok(&a(&["wait", "-j", "web@2.0.0"]));
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert_eq!(lines[0]["state"], "active");
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
        assert_eq!(d.file(&uuid), data);
    }
    // Copying again refreshes (the copy succeeds, the bytes stay), and an
    // unknown datacenter is an error.
    let out = ok(&cli(
        &west.url,
        Some(ALICE),
        Some(&profile),
        &["copy", "app", "--to", "east"],
    ));
    assert!(out.contains("east is already up to date"), "{out}");
    assert_eq!(east.file(&uuid), data);
    let e = err(&cli(
        &west.url,
        Some(ALICE),
        Some(&profile),
        &["copy", "app", "--to", "south"],
    ));
    assert!(e.contains("not in the profile"), "{e}");
}

#[test]
fn names_mean_ones_own_images_first_and_a_shared_origin_needs_consent() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let mine = d.image(ALICE, "my-image", json!({}), &bytes(1000, 1), true);
    // Bob's image of the same name, newer, shared with Alice.
    let theirs = d.image(
        BOB,
        "my-image",
        json!({"version": "2.0.0", "acl": [ALICE]}),
        &bytes(1000, 2),
        true,
    );
    let a = |args: &[&str]| cli(&d.url, Some(ALICE), None, args);
    let got: Value = serde_json::from_str(&ok(&a(&["get", "my-image"]))).unwrap();
    assert_eq!(
        got["uuid"],
        mine.as_str(),
        "a shared image took over the name"
    );
    // Bob's is still reachable by uuid.
    let got: Value = serde_json::from_str(&ok(&a(&["get", &theirs]))).unwrap();
    assert_eq!(got["owner"], BOB);
    // An origin shared by another account needs consent; a public one not.
    let base = d.image(BOB, "base", json!({"acl": [ALICE]}), &bytes(1000, 3), true);
    let e = err(&a(&[
        "create",
        "--name",
        "kid",
        "--version",
        "1",
        "--origin",
        "base",
    ]));
    assert!(
        e.contains("--allow-shared-origin") && e.contains(&base),
        "{e}"
    );
    ok(&a(&[
        "create",
        "--name",
        "kid",
        "--version",
        "1",
        "--origin",
        "base",
        "--allow-shared-origin",
    ]));
    d.image(
        BOB,
        "pubbase",
        json!({"public": true}),
        &bytes(1000, 4),
        true,
    );
    ok(&a(&[
        "create",
        "--name",
        "kid2",
        "--version",
        "1",
        "--origin",
        "pubbase",
    ]));
    // `get` means active images; -a looks at every state.
    d.image(ALICE, "draft", json!({}), &[], false);
    let e = err(&a(&["get", "draft"]));
    assert!(e.contains("among active images"), "{e}");
    let got: Value = serde_json::from_str(&ok(&a(&["get", "-a", "draft"]))).unwrap();
    assert_eq!(got["state"], "unactivated");
}

#[test]
fn a_closed_pipe_ends_the_listing_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    for i in 0..400 {
        let r = d.post(
            &format!("/images?account={ALICE}"),
            &json!({"name": format!("img-{i}"), "version": "1.0.0", "type": "zone-dataset",
                    "os": "smartos", "description": "x".repeat(200)}),
        );
        assert_eq!(r.status(), 200);
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_imgstore"))
        .args(["image", "list", "-j", "-a"])
        .env("IMGSTORE_URL", &d.url)
        .env("IMGSTORE_ACCOUNT", ALICE)
        .env("XDG_CONFIG_HOME", "/nonexistent/xdg")
        .env_remove("IMGSTORE_PROFILE")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // `| head -1`: read one line, close the pipe.
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    assert!(first.starts_with('{'), "{first}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn delete_takes_several_images_and_an_unknown_one_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let one = d.image(ALICE, "one", json!({}), &bytes(100, 1), true);
    let two = d.image(ALICE, "two", json!({}), &bytes(100, 2), true);
    let a = |args: &[&str]| cli(&d.url, Some(ALICE), None, args);
    let e = err(&a(&["delete", "-f", "one", "no-such-image", "two"]));
    assert!(e.contains("no-such-image"), "{e}");
    assert_eq!(d.get(&format!("/images/{one}")).status(), 200);
    let out = ok(&a(&["rm", "-f", "one", "two"]));
    assert!(out.contains(&one) && out.contains(&two), "{out}");
    assert_eq!(d.get(&format!("/images/{one}")).status(), 404);
    assert_eq!(d.get(&format!("/images/{two}")).status(), 404);
}

#[test]
fn wait_needs_an_image_and_known_states() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let uuid = d.image(ALICE, "w", json!({}), &bytes(100, 1), true);
    let none = cli(&d.url, Some(ALICE), None, &["wait"]);
    assert_eq!(none.status.code(), Some(2), "wait with no image");
    let e = err(&cli(
        &d.url,
        Some(ALICE),
        None,
        &["wait", "-s", "bogus", &uuid],
    ));
    assert!(e.contains("unknown state \"bogus\""), "{e}");
}

#[test]
fn copy_checks_every_target_first_and_goes_on_past_a_failed_one() {
    let (_s, west) = crate::xdc::source();
    let data = bytes(300_000, 5);
    let uuid = west.image(ALICE, "app", json!({}), &data, true);
    let (_e, east) = crate::xdc::dest(&west.url);
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("profile.json");
    std::fs::write(
        &profile,
        json!({"datacenters": {"west": west.url, "east": east.url,
                               "down": "http://127.0.0.1:9"}})
        .to_string(),
    )
    .unwrap();
    let run = |args: &[&str]| cli(&west.url, Some(ALICE), Some(&profile), args);
    // An unknown target: nothing starts anywhere.
    let e = err(&run(&["copy", "app", "--to", "east,mars"]));
    assert!(e.contains("mars") && e.contains("nothing copied"), "{e}");
    assert_eq!(east.get(&format!("/images/{uuid}")).status(), 404);
    // The current datacenter is not a target.
    let e = err(&run(&["copy", "app", "west"]));
    assert!(e.contains("already"), "{e}");
    // triton's `cp IMAGE DC...`: the unreachable one fails, east is copied.
    let o = run(&["cp", "app", "east", "down"]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let e = err(&o);
    assert!(out.contains("to datacenter east"), "{out}");
    assert!(e.contains("1 of 2") && e.contains("down: "), "{e}");
    assert!(e.contains("127.0.0.1:9"), "{e}");
    assert_eq!(east.file(&uuid), data);
}

#[test]
fn named_profiles_give_url_account_and_datacenters() {
    let (_s, west) = crate::xdc::source();
    let uuid = west.image(ALICE, "app", json!({}), &bytes(50_000, 8), true);
    let (_e, east) = crate::xdc::dest(&west.url);
    let xdg = tempfile::tempdir().unwrap();
    let dir = xdg.path().join("imgstore/profiles.d");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("prod.json"),
        json!({"url": west.url, "account": ALICE,
               "datacenters": {"west": west.url, "east": east.url}})
        .to_string(),
    )
    .unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_imgstore"))
            .arg("image")
            .args(args)
            .env("XDG_CONFIG_HOME", xdg.path())
            .env_remove("IMGSTORE_URL")
            .env_remove("IMGSTORE_ACCOUNT")
            .env_remove("IMGSTORE_PROFILE")
            .output()
            .unwrap()
    };
    // The profile's url and account, without --url or --account.
    let got: Value = serde_json::from_str(&ok(&run(&["--profile", "prod", "get", "app"]))).unwrap();
    assert_eq!(got["uuid"], uuid.as_str());
    // --dc talks to another of its datacenters.
    let e = err(&run(&["--profile", "prod", "--dc", "east", "get", "app"]));
    assert!(e.contains(&east.url), "{e}");
    ok(&run(&["--profile", "prod", "cp", "app", "east"]));
    let got: Value = serde_json::from_str(&ok(&run(&[
        "--profile",
        "prod",
        "--dc",
        "east",
        "get",
        "app",
    ])))
    .unwrap();
    assert_eq!(got["uuid"], uuid.as_str());
    let e = err(&run(&["--profile", "prod", "--dc", "mars", "list"]));
    assert!(e.contains("mars") && e.contains("east"), "{e}");
    // A profile named and missing is an error, never an empty profile.
    let e = err(&run(&["--profile", "nope", "list"]));
    assert!(e.contains("nope") && e.contains("profiles.d"), "{e}");
    // The `default` profile is used when none is named.
    std::fs::rename(dir.join("prod.json"), dir.join("default.json")).unwrap();
    let got: Value = serde_json::from_str(&ok(&run(&["get", "app"]))).unwrap();
    assert_eq!(got["uuid"], uuid.as_str());
}

#[test]
fn copy_progress_as_json_lines_quiet_and_dry_run() {
    let (_s, west) = crate::xdc::source();
    let data = bytes(2_000_000, 6);
    let uuid = west.image(ALICE, "app", json!({}), &data, true);
    let (_e, east) = crate::xdc::dest(&west.url);
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("profile.json");
    std::fs::write(
        &profile,
        json!({"datacenters": {"west": west.url, "east": east.url}}).to_string(),
    )
    .unwrap();
    let run = |args: &[&str]| cli(&west.url, Some(ALICE), Some(&profile), args);
    // --dry-run checks and says, copies nothing.
    let out = ok(&run(&["copy", "-n", "app", "east"]));
    assert!(
        out.contains("Would copy image") && out.contains("east"),
        "{out}"
    );
    assert_eq!(east.get(&format!("/images/{uuid}")).status(), 404);
    // -j: only JSON lines; status lines, then one summary per datacenter.
    let out = ok(&run(&["copy", "-j", "app", "east"]));
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let summary = lines.last().unwrap();
    assert_eq!(summary["message_type"], "summary", "{out}");
    assert_eq!(summary["execution"], "succeeded", "{out}");
    assert_eq!(summary["datacenter"], "east");
    assert!(
        lines
            .iter()
            .all(|l| l["message_type"] == "status" || l["message_type"] == "summary")
    );
    // -q: the result and nothing else.
    let out = ok(&run(&["copy", "-q", "app", "--to", "east"]));
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("already up to date"), "{out}");
}

#[test]
fn the_client_pages_past_a_thousand_images() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    for i in 0..1001 {
        let r = d.post(
            &format!("/images?account={ALICE}"),
            &json!({"name": "svc", "version": format!("1.0.{i}"), "type": "zone-dataset",
                    "os": "smartos"}),
        );
        assert_eq!(r.status(), 200);
    }
    let a = |args: &[&str]| cli(&d.url, Some(ALICE), None, args);
    let out = ok(&a(&["list", "-a", "-H", "-o", "version"]));
    assert_eq!(out.lines().count(), 1001);
    let got: Value = serde_json::from_str(&ok(&a(&["get", "-a", "svc@1.0.1000"]))).unwrap();
    assert_eq!(got["version"], "1.0.1000");
}

#[test]
fn json_output_on_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let file = dir.path().join("f.bin");
    std::fs::write(&file, bytes(10_000, 1)).unwrap();
    let a = |args: &[&str]| -> Value {
        let out = ok(&cli(&d.url, Some(ALICE), None, args));
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{args:?}: {out}: {e}"))
    };
    let img = a(&["-j", "create", "--name", "js", "--version", "1"]);
    let uuid = img["uuid"].as_str().unwrap().to_string();
    assert_eq!(
        a(&["upload", "-j", "js", file.to_str().unwrap()])["files"][0]["size"],
        10_000
    );
    assert_eq!(a(&["activate", "-j", "js"])["state"], "active");
    assert_eq!(
        a(&["update", "-j", "js", "description=d"])["description"],
        "d"
    );
    assert_eq!(a(&["share", "-j", "js", BOB])["acl"], json!([BOB]));
    assert_eq!(a(&["disable", "-j", "js"])["state"], "disabled");
    assert_eq!(
        a(&["delete", "-f", "-j", &uuid]),
        json!({"uuid": uuid, "deleted": true})
    );
}

#[test]
fn list_sorts_by_fields_as_triton_does() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    for (name, version) in [("b", "1"), ("a", "2"), ("c", "0"), ("a", "1")] {
        let r = d.post(
            &format!("/images?account={ALICE}"),
            &json!({"name": name, "version": version, "type": "zone-dataset", "os": "smartos"}),
        );
        assert_eq!(r.status(), 200);
    }
    let a = |args: &[&str]| ok(&cli(&d.url, Some(ALICE), None, args));
    let rows = |out: String| -> Vec<String> {
        out.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join("@"))
            .collect()
    };
    assert_eq!(
        rows(a(&[
            "list",
            "-a",
            "-H",
            "-o",
            "name,version",
            "-s",
            "name,version"
        ])),
        ["a@1", "a@2", "b@1", "c@0"]
    );
    assert_eq!(
        rows(a(&[
            "list",
            "-a",
            "-H",
            "-o",
            "name,version",
            "-s",
            "-name,version"
        ])),
        ["c@0", "b@1", "a@1", "a@2"]
    );
}

#[test]
fn download_whole_to_stdout_resumed_and_a_damaged_partial_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let data = bytes(3_000_000, 77);
    let uuid = d.image(ALICE, "dl", json!({}), &data, true);
    // Whole, to a file; then to standard output.
    let out = dir.path().join("whole.img");
    let o = cli(
        &d.url,
        Some(ALICE),
        None,
        &["download", &uuid, "-o", out.to_str().unwrap()],
    );
    assert!(ok(&o).contains("SHA-1 checked"));
    assert_eq!(std::fs::read(&out).unwrap(), data);
    // Off a terminal, no progress bar: stderr stays empty.
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = cli(&d.url, Some(ALICE), None, &["get-file", "dl", "-q"]);
    assert!(o.status.success());
    assert_eq!(o.stdout, data);
    // Resumed: the first part is there, the rest comes by Range.
    let part = dir.path().join("part.img");
    std::fs::write(&part, &data[..1_234_567]).unwrap();
    let o = cli(
        &d.url,
        Some(ALICE),
        None,
        &["download", &uuid, "-o", part.to_str().unwrap(), "-j"],
    );
    let summary: Value = serde_json::from_str(ok(&o).trim()).unwrap();
    assert_eq!(summary["resumed_from"], 1_234_567);
    assert_eq!(std::fs::read(&part).unwrap(), data);
    // A partial file that is not the file's start: refused at the end.
    let bad = dir.path().join("bad.img");
    let mut wrong = data[..1_000_000].to_vec();
    wrong[10] ^= 1;
    std::fs::write(&bad, &wrong).unwrap();
    let o = cli(
        &d.url,
        Some(ALICE),
        None,
        &["download", &uuid, "-o", bad.to_str().unwrap()],
    );
    let e = err(&o);
    assert!(e.contains("SHA-1") && e.contains("remove"), "{e}");
}

#[test]
fn an_error_says_each_thing_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    d.image(ALICE, "once", json!({}), &bytes(100, 3), true);
    let o = cli(&d.url, Some(ALICE), None, &["share", "once", "bob"]);
    let e = err(&o);
    assert_eq!(
        e.matches("\"bob\" is neither an account uuid nor a login")
            .count(),
        1,
        "{e}"
    );
}
