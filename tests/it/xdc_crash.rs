//! kill -9 of either datacenter's daemon (the real binaries) in the middle
//! of a copy: the copy resumes and re-fetches at most what was in flight.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::bytes;
use crate::daemon::ALICE;
use crate::procs::{free_port, start};

const BATCH: u64 = 256 * 1024;
const PARALLEL: u64 = 2;

struct Pair {
    _dir: tempfile::TempDir,
    src_cfg: std::path::PathBuf,
    dst_cfg: std::path::PathBuf,
    src_url: String,
    dst_url: String,
    http: reqwest::blocking::Client,
}

fn pair() -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let (sp, dp) = (free_port(), free_port());
    let src_url = format!("http://127.0.0.1:{sp}");
    let dst_url = format!("http://127.0.0.1:{dp}");
    let src_cfg = dir.path().join("west.json");
    let dst_cfg = dir.path().join("east.json");
    std::fs::write(
        &src_cfg,
        json!({"datacenterName": "west", "listen": format!("127.0.0.1:{sp}"),
               "dataDir": dir.path().join("west"),
               "imgapiUrlFromDatacenter": {"east": dst_url}})
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        &dst_cfg,
        json!({"datacenterName": "east", "listen": format!("127.0.0.1:{dp}"),
               "dataDir": dir.path().join("east"),
               "imgapiUrlFromDatacenter": {"west": src_url},
               "transfer": {"batchBytes": BATCH, "parallel": PARALLEL, "windowBytes": 1048576, "attempts": 2, "timeoutSeconds": 5}})
        .to_string(),
    )
    .unwrap();
    Pair {
        _dir: dir,
        src_cfg,
        dst_cfg,
        src_url,
        dst_url,
        http: reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
    }
}

impl Pair {
    fn make_image(&self, size: usize) -> String {
        crate::daemon::create_image(
            &self.http,
            &self.src_url,
            ALICE,
            "big",
            json!({"version": "1", "type": "other", "os": "other"}),
            &bytes(size, 42),
            true,
        )
    }

    fn import(&self, uuid: &str) -> String {
        let r = self
            .http
            .post(format!(
                "{}/images/{uuid}?action=import-from-datacenter&datacenter=west&account={ALICE}",
                self.dst_url
            ))
            .json(&json!({}))
            .send()
            .unwrap();
        let status = r.status();
        let body: Value = r.json().unwrap();
        assert_eq!(status, 200, "{body}");
        body["job_uuid"].as_str().unwrap().to_string()
    }

    fn job(&self, job: &str) -> Value {
        self.http
            .get(format!("{}/jobs/{job}", self.dst_url))
            .send()
            .and_then(|r| r.json())
            .unwrap_or(Value::Null)
    }

    /// Waits until the job has fetched at least `bytes`; returns its progress.
    fn wait_fetched(&self, job: &str, bytes: u64) -> Value {
        let start = Instant::now();
        loop {
            let j = self.job(job);
            if j["progress"]["bytes_fetched"].as_u64().unwrap_or(0) >= bytes {
                return j["progress"].clone();
            }
            assert!(
                j["execution"] != "succeeded",
                "copy finished before the kill: make it bigger"
            );
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no progress: {j}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn wait_done(&self, job: &str) -> Value {
        let start = Instant::now();
        loop {
            let j = self.job(job);
            if j["execution"] == "succeeded" || j["execution"] == "failed" {
                return j;
            }
            assert!(start.elapsed() < Duration::from_secs(120), "stuck: {j}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

const SIZE: usize = 48 << 20;

#[test]
fn killing_the_destination_mid_copy_resumes_by_itself_after_restart() {
    let p = pair();
    let _src = start(&p.src_cfg, &p.src_url);
    let dst = start(&p.dst_cfg, &p.dst_url);
    let uuid = p.make_image(SIZE);
    let job = p.import(&uuid);
    let before = p.wait_fetched(&job, SIZE as u64 / 3);
    drop(dst); // kill -9
    let _dst = start(&p.dst_cfg, &p.dst_url);
    let done = p.wait_done(&job);
    assert_eq!(done["execution"], "succeeded", "{done}");
    let after = &done["progress"];
    let had = before["bytes_fetched"].as_u64().unwrap();
    let kept = after["bytes_local"].as_u64().unwrap();
    // Everything verified before the kill was kept, but for the batches in flight.
    assert!(
        kept + PARALLEL * BATCH >= had,
        "kept {kept} of {had} fetched before the kill"
    );
    assert_eq!(
        after["bytes_local"].as_u64().unwrap() + after["bytes_fetched"].as_u64().unwrap(),
        SIZE as u64
    );
    let got = p
        .http
        .get(format!("{}/images/{uuid}/file", p.dst_url))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert!(got.to_vec() == bytes(SIZE, 42));
}

#[test]
fn killing_the_source_mid_copy_fails_the_job_and_the_next_request_resumes() {
    let p = pair();
    let src = start(&p.src_cfg, &p.src_url);
    let _dst = start(&p.dst_cfg, &p.dst_url);
    let uuid = p.make_image(SIZE);
    let job = p.import(&uuid);
    p.wait_fetched(&job, SIZE as u64 / 3);
    drop(src); // kill -9 the source
    let failed = p.wait_done(&job);
    assert_eq!(failed["execution"], "failed", "{failed}");
    let had = failed["progress"]["bytes_fetched"].as_u64().unwrap();
    let _src = start(&p.src_cfg, &p.src_url);
    let job2 = p.import(&uuid);
    let done = p.wait_done(&job2);
    assert_eq!(done["execution"], "succeeded", "{done}");
    let kept = done["progress"]["bytes_local"].as_u64().unwrap();
    assert!(kept + PARALLEL * BATCH >= had, "kept {kept} of {had}");
    let got = p
        .http
        .get(format!("{}/images/{uuid}/file", p.dst_url))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert!(got.to_vec() == bytes(SIZE, 42));
}
