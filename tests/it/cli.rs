//! The admin commands, driven through the built binary.

use std::process::{Command, Output};

fn imgstore(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imgstore"))
        .arg("store")
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn put_cat_link_unlink_gc_verify_stats_work_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let file = tmp.path().join("image.bin");
    let data = crate::common::text(700_000, 3);
    std::fs::write(&file, &data).unwrap();

    let put = json(&imgstore(&dir, &["put", file.to_str().unwrap(), "--json"]));
    let id = put["file_id"].as_str().unwrap().to_string();
    assert_eq!(put["size"], 700_000);
    assert_eq!(put["sha1"].as_str().unwrap().len(), 40);

    let cat = imgstore(&dir, &["cat", &id]);
    assert!(cat.status.success());
    assert_eq!(cat.stdout, data);
    let part = imgstore(&dir, &["cat", &id, "--offset", "100", "--length", "50"]);
    assert_eq!(part.stdout, &data[100..150]);

    assert_eq!(json(&imgstore(&dir, &["link", &id, "--json"]))["refs"], 2);
    assert_eq!(json(&imgstore(&dir, &["unlink", &id, "--json"]))["refs"], 1);

    let stats = json(&imgstore(&dir, &["stats", "--json"]));
    assert_eq!(stats["logical_bytes"], 700_000);
    assert!(stats["stored_bytes"].as_u64().unwrap() < 700_000);
    let usage = json(&imgstore(&dir, &["stats", &id, "--json"]));
    assert_eq!(usage["unique_bytes"], 700_000);

    assert_eq!(json(&imgstore(&dir, &["unlink", &id, "--json"]))["refs"], 0);
    let gc = json(&imgstore(&dir, &["gc", "--threshold", "0", "--json"]));
    assert!(gc["done"]["bytes_freed"].as_u64().unwrap() > 0, "{gc}");
    let verify = json(&imgstore(&dir, &["verify", "--json"]));
    assert_eq!(verify["problems"].as_array().unwrap().len(), 0);
}

#[test]
fn copy_moves_only_the_chunks_the_destination_lacks_and_verifies_them() {
    let tmp = tempfile::tempdir().unwrap();
    let (west, east) = (tmp.path().join("west"), tmp.path().join("east"));
    let v1 = crate::common::bytes(3 << 20, 41);
    let mut v2 = v1.clone();
    v2.splice(1 << 20..1 << 20, crate::common::bytes(200_000, 42));
    let mut ids = Vec::new();
    for (name, data) in [("v1", &v1), ("v2", &v2)] {
        let file = tmp.path().join(name);
        std::fs::write(&file, data).unwrap();
        let put = json(&imgstore(&west, &["put", file.to_str().unwrap(), "--json"]));
        ids.push(put["file_id"].as_str().unwrap().to_string());
    }
    let from = west.to_str().unwrap();
    // The first copy into an empty store moves every chunk ...
    let first = json(&imgstore(
        &east,
        &["copy", "--from", from, &ids[0], "--json"],
    ));
    assert_eq!(first["file_id"], ids[0].as_str());
    assert_eq!(first["progress"]["bytes_fetched"], 3 << 20);
    // ... the update only the new ones, and reads back whole.
    let second = json(&imgstore(
        &east,
        &["copy", "--from", from, &ids[1], "--json"],
    ));
    let fetched = second["progress"]["bytes_fetched"].as_u64().unwrap();
    assert!(
        (200_000..800_000).contains(&fetched),
        "fetched {fetched} of {}",
        v2.len()
    );
    assert!(second["progress"]["chunks_local"].as_u64().unwrap() > 0);
    assert_eq!(imgstore(&east, &["cat", &ids[1]]).stdout, v2);
    assert!(imgstore(&east, &["verify"]).status.success());
    // A file the source does not hold is a clear error, and nothing lands.
    let missing = "0".repeat(64);
    let out = imgstore(&east, &["copy", "--from", from, &missing]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&missing),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_copy_killed_midway_fetches_only_the_rest_when_run_again() {
    let tmp = tempfile::tempdir().unwrap();
    let (west, east) = (tmp.path().join("west"), tmp.path().join("east"));
    let total = 64usize << 20;
    let file = tmp.path().join("image");
    std::fs::write(&file, crate::common::bytes(total, 51)).unwrap();
    let put = json(&imgstore(&west, &["put", file.to_str().unwrap(), "--json"]));
    let id = put["file_id"].as_str().unwrap().to_string();
    let stored = |dir: &std::path::Path| -> u64 {
        std::fs::read_dir(dir.join("segments"))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_imgstore"))
        .args([
            "store",
            "copy",
            "--from",
            west.to_str().unwrap(),
            &id,
            "--data-dir",
        ])
        .arg(&east)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed once half of the file is in east's segments.
    loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the copy finished before it could be killed"
        );
        if stored(&east) > (total / 2) as u64 {
            child.kill().unwrap();
            child.wait().unwrap();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let again = json(&imgstore(
        &east,
        &["copy", "--from", west.to_str().unwrap(), &id, "--json"],
    ));
    let fetched = again["progress"]["bytes_fetched"].as_u64().unwrap();
    // What the first run made durable is not fetched again: at most the
    // batches in flight at the kill (a few MiB) travel twice.
    assert!(
        fetched < (total - total / 4) as u64,
        "the second run fetched {fetched} of {total} bytes"
    );
    assert_eq!(
        again["progress"]["bytes_fetched"].as_u64().unwrap()
            + again["progress"]["bytes_local"].as_u64().unwrap(),
        total as u64
    );
    assert_eq!(imgstore(&east, &["cat", &id]).stdout.len(), total);
    assert!(imgstore(&east, &["verify"]).status.success());
}

#[test]
fn verify_exits_non_zero_on_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let file = tmp.path().join("f");
    std::fs::write(&file, crate::common::bytes(50_000, 1)).unwrap();
    json(&imgstore(&dir, &["put", file.to_str().unwrap(), "--json"]));
    let seg = dir.join("segments").join("000000000001.seg");
    let mut raw = std::fs::read(&seg).unwrap();
    let last = raw.len() - 10;
    raw[last] ^= 0xff;
    std::fs::write(&seg, raw).unwrap();
    let out = imgstore(&dir, &["verify"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("000000000001") && text.contains("PROBLEMS"),
        "{text}"
    );
}

#[test]
fn commands_on_a_missing_store_or_unknown_file_fail_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let out = imgstore(&tmp.path().join("none"), &["stats"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("imgstore store stats: error:") && err.contains("does not exist"),
        "{err}"
    );

    let dir = tmp.path().join("data");
    let file = tmp.path().join("f");
    std::fs::write(&file, b"x").unwrap();
    json(&imgstore(&dir, &["put", file.to_str().unwrap(), "--json"]));
    let out = imgstore(&dir, &["cat", &"0".repeat(64)]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    let out = imgstore(&dir, &["cat", "xyz"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a file id"));
}

#[test]
fn a_data_dir_in_use_is_refused_by_a_second_process() {
    let tmp = tempfile::tempdir().unwrap();
    let _held = crate::common::open_small(tmp.path());
    let out = imgstore(tmp.path(), &["stats"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another process"), "{err}");
}

#[test]
fn completion_scripts_and_the_man_page_come_from_the_command_definitions() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_imgstore"))
            .args(args)
            .output()
            .unwrap()
    };
    for (shell, mark) in [
        ("bash", "_imgstore()"),
        ("zsh", "#compdef imgstore"),
        ("fish", "complete -c imgstore"),
    ] {
        let o = run(&["completion", shell]);
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success() && text.contains(mark), "{shell}: {text}");
        // Every command is offered, down to the image client's.
        assert!(
            text.contains("datacenters") && text.contains("lineage"),
            "{shell}"
        );
    }
    let o = run(&["man"]);
    let page = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && page.contains(".TH imgstore"),
        "{page}"
    );
    assert!(page.contains("Exit status"), "{page}");
    // An unknown shell is a usage error.
    assert_eq!(run(&["completion", "cmd.exe"]).status.code(), Some(2));
}
