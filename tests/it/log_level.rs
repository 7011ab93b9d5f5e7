//! `logLevel` and `serve -v`: which log lines the daemon writes.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::procs::free_port;

/// The log lines of a daemon started with `config` and `extra` flags that
/// answered a ping and a 404, as (level, url) pairs.
fn lines(config: serde_json::Value, extra: &[&str]) -> Vec<(u64, String)> {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = dir.path().join("c.json");
    let mut config = config;
    config["listen"] = format!("127.0.0.1:{port}").into();
    config["dataDir"] = dir
        .path()
        .join("data")
        .to_string_lossy()
        .into_owned()
        .into();
    std::fs::write(&path, config.to_string()).unwrap();
    let out = dir.path().join("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_imgstore"))
        .args(["serve", "--config", path.to_str().unwrap()])
        .args(extra)
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::blocking::Client::new();
    let start = Instant::now();
    while http.get(format!("{url}/ping")).send().is_err() {
        assert!(start.elapsed() < Duration::from_secs(60), "no answer");
        std::thread::sleep(Duration::from_millis(25));
    }
    http.get(format!("{url}/nope")).send().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|l| Some((l["level"].as_u64()?, l["url"].as_str()?.to_string())))
        .collect()
}

#[test]
fn log_level_drops_lesser_lines_and_v_brings_them_back() {
    let all = lines(serde_json::json!({}), &[]);
    assert!(all.contains(&(30, "/ping".into())), "{all:?}");
    let warn = lines(serde_json::json!({"logLevel": "warn"}), &[]);
    assert_eq!(warn, vec![(40, "/nope".to_string())]);
    let again = lines(serde_json::json!({"logLevel": "warn"}), &["-v"]);
    assert!(again.contains(&(30, "/ping".into())), "{again:?}");
    let none = lines(serde_json::json!({"logLevel": "error"}), &[]);
    assert!(none.is_empty(), "{none:?}");
}
