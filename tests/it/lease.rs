//! The writer's lease of a daemon alone (no `cluster`; real SeaweedFS,
//! real daemons): a second daemon on the same store (a data dir rebuilt
//! from the bucket beside the running one) is refused while the first
//! renews its lease, and so is an offline command that writes
//! (`imgstore store gc --config`). Failover, fencing of a stopped writer and members
//! that follow are the cluster's (`tests/it/cluster.rs`).

use std::process::Command;

use serde_json::json;

use crate::common::bytes;
use crate::daemon::{ALICE, create_image, sj};
use crate::procs::{free_port, start};
use crate::seaweed::Seaweed;

fn config(dir: &std::path::Path, name: &str, endpoint: &str) -> (std::path::PathBuf, String) {
    let port = free_port();
    let path = dir.join(format!("{name}.json"));
    let mut storage = crate::cluster::bucket_storage(endpoint);
    storage["indexPushSeconds"] = json!(0);
    std::fs::write(
        &path,
        serde_json::to_vec(&json!({
            "listen": format!("127.0.0.1:{port}"),
            "dataDir": dir.join(name),
            "storage": storage,
            // Alone (no advertiseUrl), with a short lease: renewed each
            // second, so the second daemon is refused at once.
            "cluster": {"leaseSeconds": 3}
        }))
        .unwrap(),
    )
    .unwrap();
    (path, format!("http://127.0.0.1:{port}"))
}

/// `imgstore store restore --config CONFIG`: a data dir from the bucket.
fn restore(config: &std::path::Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_imgstore"))
        .args(["store", "restore", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `imgstore serve` that is expected to be refused: its status and stderr.
fn refused(config: &std::path::Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_imgstore"))
        .args(["serve", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a second writer started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_second_daemon_alone_on_the_same_store_is_refused_while_the_first_renews() {
    let sw = Seaweed::start("images");
    let dir = tempfile::tempdir().unwrap();
    let (a_cfg, a_url) = config(dir.path(), "a", &sw.endpoint());
    let (b_cfg, _) = config(dir.path(), "b", &sw.endpoint());
    let http = reqwest::blocking::Client::new();
    let a = start(&a_cfg, &a_url);
    let data = bytes(300_000, 5);
    let uuid = create_image(&http, &a_url, ALICE, "leased", json!({}), &data, true);
    // B is the same store, rebuilt from the bucket beside the running A:
    // refused once it saw A renew.
    restore(&b_cfg);
    let err = refused(&b_cfg);
    assert!(
        err.contains("another daemon holds the writer's lease"),
        "{err}"
    );
    assert!(
        err.contains("Stop it"),
        "the operator is told what to do: {err}"
    );
    // So is an offline command that would write B's objects (GC deletes
    // in the bucket): fenced like a daemon. One that only reads runs.
    let store = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_imgstore"))
            .arg("store")
            .args(args)
            .arg("--config")
            .arg(&b_cfg)
            .output()
            .unwrap()
    };
    let gc = store(&["gc"]);
    let err = String::from_utf8_lossy(&gc.stderr);
    assert!(
        !gc.status.success(),
        "an offline GC wrote beside the daemon"
    );
    assert!(
        err.contains("another daemon holds the writer's lease"),
        "{err}"
    );
    let stats = store(&["stats"]);
    assert!(
        stats.status.success(),
        "{}",
        String::from_utf8_lossy(&stats.stderr)
    );
    // A writes on.
    let (s, img) = sj(http.get(format!("{a_url}/images/{uuid}")).send().unwrap());
    assert_eq!((s, img["state"].clone()), (200, json!("active")), "{img}");
    create_image(
        &http,
        &a_url,
        ALICE,
        "more",
        json!({}),
        &bytes(1000, 6),
        true,
    );
    drop(a);
}
