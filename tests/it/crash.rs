//! kill -9 at random moments: a child process (`imgstore store soak`) does
//! puts, links, unlinks and GC and logs each operation before and after it;
//! after each kill the store must open, verify, and hold every acknowledged
//! file byte for byte.
//!
//! `IMGSTORE_CRASH_TRIALS` sets the number of trials (default 50; the long
//! mode is simply a larger number).

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use imgstore::{Error, FileId};

use crate::common::*;

fn trials() -> u64 {
    std::env::var("IMGSTORE_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
}

/// Reference counts the log proves, as a range per file: an operation that
/// began but did not end may or may not have happened.
fn expected_refs(log: &str) -> HashMap<FileId, (u64, u64)> {
    let mut refs: HashMap<FileId, (u64, u64)> = HashMap::new();
    let mut pending: Option<(String, Option<FileId>)> = None;
    // An operation a kill interrupted may or may not have happened: widen
    // that file's range for good.
    let uncertain = |refs: &mut HashMap<FileId, (u64, u64)>, op: &str, id: FileId| {
        let e = refs.entry(id).or_insert((0, 0));
        match op {
            "put" | "link" => e.1 += 1,
            "unlink" => e.0 = e.0.saturating_sub(1),
            _ => {}
        }
    };
    for line in log.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["begin", op, rest @ ..] => {
                if let Some((prev, Some(id))) = pending.take() {
                    uncertain(&mut refs, &prev, id);
                }
                let id = rest.first().map(|s| s.parse::<FileId>().unwrap());
                pending = Some((op.to_string(), id));
            }
            ["end"] => {
                let (op, id) = pending.take().expect("end without begin");
                if let Some(id) = id {
                    let e = refs.entry(id).or_insert((0, 0));
                    match op.as_str() {
                        "put" | "link" => {
                            e.0 += 1;
                            e.1 += 1;
                        }
                        "unlink" => {
                            e.0 = e.0.saturating_sub(1);
                            e.1 -= 1;
                        }
                        other => panic!("unknown op {other}"),
                    }
                }
            }
            [] => {}
            other => panic!("bad log line {other:?}"),
        }
    }
    if let Some((op, Some(id))) = pending {
        uncertain(&mut refs, &op, id);
    }
    refs
}

#[test]
fn acknowledged_writes_survive_sigkill_at_random_moments() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log_path = dir.path().join("log");
    let mut seed = 0x1234_5678u64;
    let mut max_ops_seen = 0;
    for trial in 0..trials() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut child = Command::new(env!("CARGO_BIN_EXE_imgstore"))
            .args(["store", "soak", "--seed"])
            .arg(trial.to_string())
            .arg("--log")
            .arg(&log_path)
            .arg("--data-dir")
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Let it run a random while, sometimes very short (during open).
        std::thread::sleep(Duration::from_millis(seed % 400));
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("trial {trial}: soak exited early with {status}: {err}");
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        max_ops_seen = max_ops_seen.max(log.matches("end").count());
        if !data.join("IMGSTORE").exists() {
            continue; // killed before the store existed
        }
        let store = imgstore::Store::open(&data)
            .unwrap_or_else(|e| panic!("trial {trial}: reopen failed: {e}"));
        let report = store.verify(false).unwrap();
        assert!(
            report.is_clean(),
            "trial {trial}: verify: {:#?}",
            report.problems
        );
        for (id, (lo, hi)) in expected_refs(&log) {
            match store.stat(&id) {
                Ok(rec) => {
                    assert!(
                        rec.refs >= lo && rec.refs <= hi,
                        "trial {trial}: file {id} has {} refs, log says {lo}..={hi}",
                        rec.refs
                    );
                    let back = read_all(&store, &id);
                    assert_eq!(FileId(*blake3::hash(&back).as_bytes()), id);
                    assert_eq!(back.len() as u64, rec.size);
                }
                Err(Error::FileNotFound(_)) => {
                    assert_eq!(lo, 0, "trial {trial}: acknowledged file {id} is gone");
                }
                Err(e) => panic!("trial {trial}: {e}"),
            }
        }
    }
    assert!(max_ops_seen > 0, "the child never completed an operation");
}
