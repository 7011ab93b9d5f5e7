//! Soak: randomized kill -9 trials of two real daemons (datacenters west
//! and east) under a mixed workload: create and upload images, activate,
//! share and clone, delete, GC, and copy to east, while both recompress
//! every sealed segment in the background and keep their sealed segments
//! in a remote tier (west in a real SeaweedFS, east in a directory; a tiny
//! cache, so reads go remote and kills land in uploads, evictions and
//! object deletions). Every answer the
//! workload got is recorded; each trial kills one daemon or both at a
//! random moment of a random operation, restarts them on the same data,
//! and checks every recorded answer still holds: images that were
//! acknowledged exist with the acknowledged file (downloaded and hashed,
//! a sample each trial), deleted ones stay deleted, acknowledged copies
//! are on east, and both stores verify clean. The stores carry over from
//! trial to trial.
//!
//! `IMGSTORE_SOAK_TRIALS` (default 50, what CI runs) and
//! `IMGSTORE_SOAK_SEED` (default: from the clock, printed) set the run;
//! `tools/soak` runs it. A seed replays the same choices (operations,
//! sizes, which daemon dies and after how long); the instant a kill lands
//! within an operation still depends on timing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha1::{Digest, Sha1};

use crate::common::bytes;
use crate::daemon::{ALICE, BOB};
use crate::procs::{Proc, free_port, start};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What the recorded answers say of one image in one datacenter.
#[derive(Clone, Debug, PartialEq)]
enum Known {
    /// Exists; `file` is its file's sha1 and seed when one was
    /// acknowledged; `active` when activation was acknowledged.
    Present {
        owner: &'static str,
        file: Option<(String, u64, usize)>,
        active: bool,
    },
    /// Deletion was acknowledged.
    Deleted,
    /// An operation on it got no answer: either outcome is right.
    Unsure,
}

/// One datacenter's daemon and what it acknowledged.
struct Dc {
    name: &'static str,
    config: std::path::PathBuf,
    url: String,
    proc: Option<Proc>,
    known: BTreeMap<String, Known>,
}

impl Dc {
    fn up(&mut self) {
        if self.proc.is_none() {
            self.proc = Some(start(&self.config, &self.url));
        }
    }
    fn kill(&mut self) {
        if let Some(p) = self.proc.take() {
            p.kill();
        }
    }
}

fn sha1_hex(data: &[u8]) -> String {
    hex::encode(Sha1::digest(data))
}

/// The contents of image files: seeded, sharing a common part so that
/// files share chunks and GC has partly dead segments to rewrite.
fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut v = bytes(len / 2, 7);
    v.extend(bytes(len - len / 2, seed));
    v
}

struct Soak {
    west: Dc,
    east: Dc,
    http: reqwest::blocking::Client,
    rng: Rng,
    next_seed: u64,
    /// West's bucket (east keeps its segments in `objects` of `_dir`).
    bucket: crate::seaweed::Seaweed,
    _dir: tempfile::TempDir,
}

impl Soak {
    fn new(seed: u64) -> Soak {
        let dir = tempfile::tempdir().unwrap();
        let (wp, ep) = (free_port(), free_port());
        let (wu, eu) = (
            format!("http://127.0.0.1:{wp}"),
            format!("http://127.0.0.1:{ep}"),
        );
        // Both keep their sealed segments in a remote tier, west in a real
        // SeaweedFS, east in a directory, with a cache of 1 MiB and a grace
        // of 5 s: kills land in uploads, evictions, reads by range request,
        // compaction of remote segments and deletions of their objects.
        let bucket = crate::seaweed::Seaweed::start("soak");
        let storage = |name: &str| {
            let common = json!({"cacheBytes": 1 << 20, "sealAfterSeconds": 0,
                "deleteGraceSeconds": 5, "prefix": format!("{name}/")});
            let mut st = match name {
                // West answers an activation only once the image is in
                // the bucket: the end of the run rebuilds west from it.
                "west" => json!({"type": "s3", "endpoint": bucket.endpoint(), "bucket": "soak",
                    "accessKeyId": crate::seaweed::KEY,
                    "secretAccessKey": crate::seaweed::SECRET,
                    "requestTimeoutSeconds": 10, "retries": 2, "durability": "remote"}),
                _ => json!({"type": "local", "path": dir.path().join("objects")}),
            };
            if let (Some(st), Some(c)) = (st.as_object_mut(), common.as_object()) {
                st.extend(c.clone());
            }
            st
        };
        let write = |name: &str, port: u16, other: &str, other_url: &str| {
            let path = dir.path().join(format!("{name}.json"));
            let cfg = json!({"datacenterName": name, "listen": format!("127.0.0.1:{port}"),
                "storage": storage(name),
                "dataDir": dir.path().join(name), "gcIntervalSeconds": 0,
                // Background recompression runs all the time: every sealed
                // segment is cold at once, so kills land in its steps too.
                "recompressAfterSeconds": 0, "segmentBytes": 1 << 20,
                "imgapiUrlFromDatacenter": {other: other_url},
                "transfer": {"attempts": 2, "timeoutSeconds": 5},
                // A short writer's lease: the rebuild at the end waits for
                // the killed daemon's to run out.
                "cluster": {"leaseSeconds": 3},
                "limits": {"shutdownSeconds": 1}});
            std::fs::write(&path, cfg.to_string()).unwrap();
            path
        };
        let dc = |name, config, url| Dc {
            name,
            config,
            url,
            proc: None,
            known: BTreeMap::new(),
        };
        Soak {
            west: dc("west", write("west", wp, "east", &eu), wu.clone()),
            east: dc("east", write("east", ep, "west", &wu), eu),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            rng: Rng(seed),
            next_seed: 1,
            bucket,
            _dir: dir,
        }
    }

    /// An operation's answer: status and body, or None with no answer.
    fn call(&self, method: &str, url: String, body: Option<Vec<u8>>) -> Option<(u16, Value)> {
        let m = reqwest::Method::from_bytes(method.as_bytes()).ok()?;
        let mut b = self.http.request(m, url);
        if let Some(body) = body {
            b = b
                .header("content-type", "application/octet-stream")
                .body(body);
        }
        let r = b.send().ok()?;
        let status = r.status().as_u16();
        let text = r.text().ok()?;
        Some((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// Uuids of west's images the record says are in a given shape.
    fn west_where(&self, f: impl Fn(&Known) -> bool) -> Vec<String> {
        self.west
            .known
            .iter()
            .filter(|(_, k)| f(k))
            .map(|(u, _)| u.clone())
            .collect()
    }

    fn pick(&mut self, from: Vec<String>) -> Option<String> {
        let i = self.rng.below(from.len() as u64) as usize;
        from.get(i).cloned()
    }

    /// One random operation against the live daemons.
    fn operate(&mut self) {
        let w = self.west.url.clone();
        match self.rng.below(12) {
            0..=2 => {
                let owner = if self.rng.below(2) == 0 { ALICE } else { BOB };
                let body = json!({"name": "soak", "version": format!("1.{}", self.next_seed),
                    "type": "zone-dataset", "os": "smartos"});
                let url = format!("{w}/images?account={owner}");
                let r = self
                    .http
                    .post(url)
                    .json(&body)
                    .send()
                    .ok()
                    .and_then(|r| r.json::<Value>().ok());
                if let Some(uuid) = r.as_ref().and_then(|v| v["uuid"].as_str()) {
                    self.west.known.insert(
                        uuid.to_string(),
                        Known::Present {
                            owner,
                            file: None,
                            active: false,
                        },
                    );
                }
            }
            3..=5 => {
                let bare = self.west_where(|k| matches!(k, Known::Present { file: None, .. }));
                let Some(uuid) = self.pick(bare) else { return };
                let (seed, len) = (self.next_seed, 20_000 + self.rng.below(2_000_000) as usize);
                self.next_seed += 1;
                let data = content(seed, len);
                let sha1 = sha1_hex(&data);
                let url = format!("{w}/images/{uuid}/file?compression=none");
                let activate = self.rng.below(3) != 0;
                match self.call("PUT", url, Some(data)) {
                    Some((200, _)) => {
                        if let Some(Known::Present { file, .. }) = self.west.known.get_mut(&uuid) {
                            *file = Some((sha1, seed, len));
                        }
                    }
                    Some(_) => {}
                    None => {
                        self.west.known.insert(uuid, Known::Unsure);
                        return;
                    }
                }
                if activate {
                    match self.call("POST", format!("{w}/images/{uuid}?action=activate"), None) {
                        Some((200, _)) => {
                            if let Some(Known::Present { active, .. }) =
                                self.west.known.get_mut(&uuid)
                            {
                                *active = true;
                            }
                        }
                        Some(_) => {}
                        None => {
                            self.west.known.insert(uuid, Known::Unsure);
                        }
                    }
                }
            }
            6 | 7 => {
                // Share an active image of Alice's with Bob, who clones it.
                let shareable = self.west_where(|k| {
                    matches!(k, Known::Present { owner, active: true, file: Some(_) } if *owner == ALICE)
                });
                let Some(uuid) = self.pick(shareable) else {
                    return;
                };
                let acl = format!("{w}/images/{uuid}/acl?account={ALICE}");
                let shared = self
                    .http
                    .post(acl)
                    .json(&json!([BOB]))
                    .send()
                    .is_ok_and(|r| r.status() == 200);
                if !shared {
                    return;
                }
                let file = match self.west.known.get(&uuid) {
                    Some(Known::Present { file, .. }) => file.clone(),
                    _ => None,
                };
                let url = format!("{w}/images/{uuid}/clone?account={BOB}");
                if let Some((200, v)) = self.call("POST", url, None)
                    && let Some(c) = v["uuid"].as_str()
                {
                    let active = v["state"] == "active";
                    self.west.known.insert(
                        c.to_string(),
                        Known::Present {
                            owner: BOB,
                            file,
                            active,
                        },
                    );
                }
            }
            8 => {
                let present = self.west_where(|k| matches!(k, Known::Present { .. }));
                let Some(uuid) = self.pick(present) else {
                    return;
                };
                let owner = match self.west.known.get(&uuid) {
                    Some(Known::Present { owner, .. }) => *owner,
                    _ => return,
                };
                let url = format!("{w}/images/{uuid}?account={owner}");
                match self.call("DELETE", url, None) {
                    Some((204, _)) => {
                        self.west.known.insert(uuid, Known::Deleted);
                    }
                    Some(_) => {}
                    None => {
                        self.west.known.insert(uuid, Known::Unsure);
                    }
                }
            }
            9 => {
                let _ = self.call("POST", format!("{w}/state?action=gc&threshold=0.1"), None);
            }
            _ => self.copy_to_east(),
        }
    }

    /// Copies an active image of the record to east and waits for the job.
    fn copy_to_east(&mut self) {
        let active = self.west_where(|k| {
            matches!(
                k,
                Known::Present {
                    active: true,
                    file: Some(_),
                    ..
                }
            )
        });
        let Some(uuid) = self.pick(active) else {
            return;
        };
        let Some(Known::Present { owner, file, .. }) = self.west.known.get(&uuid).cloned() else {
            return;
        };
        let e = self.east.url.clone();
        let url = format!(
            "{e}/images/{uuid}?action=import-from-datacenter&datacenter=west&account={owner}"
        );
        let Some((200, v)) = self.call("POST", url, None) else {
            return;
        };
        let Some(job) = v["job_uuid"].as_str() else {
            return;
        };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            let j = self.call("GET", format!("{e}/jobs/{job}"), None);
            match j
                .as_ref()
                .map(|(_, v)| v["execution"].as_str().unwrap_or(""))
            {
                Some("succeeded") => {
                    self.east.known.insert(
                        uuid,
                        Known::Present {
                            owner,
                            file,
                            active: true,
                        },
                    );
                    return;
                }
                Some("failed") | None => return,
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// West's disk is lost (kill -9, its data dir left behind): a new data
    /// dir restored from the bucket alone must serve every image whose
    /// activation was acknowledged and not deleted since, byte for byte.
    /// Returns how many it checked.
    fn rebuild_west_from_its_bucket(&mut self, seed: u64) -> usize {
        self.west.kill();
        let mut cfg: Value =
            serde_json::from_slice(&std::fs::read(&self.west.config).unwrap()).unwrap();
        cfg["dataDir"] = json!(self._dir.path().join("west-restored"));
        let config = self._dir.path().join("west-restored.json");
        std::fs::write(&config, cfg.to_string()).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_imgstore"))
            .args(["store", "restore", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "soak (IMGSTORE_SOAK_SEED={seed}): restore: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let _west = start(&config, &self.west.url);
        let mut checked = 0;
        for (uuid, known) in &self.west.known {
            let Known::Present {
                file: Some((sha1, fseed, len)),
                active: true,
                ..
            } = known
            else {
                continue;
            };
            let r = self
                .http
                .get(format!("{}/images/{uuid}/file", self.west.url))
                .send()
                .unwrap();
            let status = r.status();
            let data = r.bytes().unwrap_or_default();
            assert!(
                data.len() == *len && sha1_hex(&data) == *sha1 && data == content(*fseed, *len),
                "soak (IMGSTORE_SOAK_SEED={seed}): activated image {uuid} is not whole after a restore from the bucket: {status}, {} of {len} bytes: {}",
                data.len(),
                String::from_utf8_lossy(data.get(..300.min(data.len())).unwrap_or_default())
            );
            checked += 1;
        }
        checked
    }

    /// Checks every recorded answer against a restarted datacenter.
    fn check(&mut self, trial: u64, seed: u64, west: bool) {
        let dc = if west { &self.west } else { &self.east };
        let fail = |what: String| -> ! {
            panic!(
                "soak trial {trial} (IMGSTORE_SOAK_SEED={seed}), {}: {what}",
                dc.name
            )
        };
        let mut with_files = Vec::new();
        for (uuid, known) in &dc.known {
            let got = self.call("GET", format!("{}/images/{uuid}", dc.url), None);
            match (known, got) {
                (_, None) => fail(format!("no answer for {uuid}")),
                (Known::Unsure, _) => {}
                (Known::Deleted, Some((s, v))) => {
                    if s != 404 {
                        fail(format!("deleted image {uuid} is back: {s} {v}"));
                    }
                }
                (Known::Present { file, active, .. }, Some((s, v))) => {
                    if s != 200 {
                        fail(format!("acknowledged image {uuid} is gone: {s} {v}"));
                    }
                    if *active && v["state"] != "active" {
                        fail(format!("{uuid} was activated, now {}", v["state"]));
                    }
                    if let Some((sha1, seed, len)) = file {
                        if v["files"][0]["sha1"] != *sha1 {
                            fail(format!("{uuid} file changed: {}", v["files"]));
                        }
                        with_files.push((uuid.clone(), sha1.clone(), *seed, *len));
                    }
                }
            }
        }
        // Every byte of a sample of files.
        for _ in 0..4 {
            let i = self.rng.below(with_files.len() as u64) as usize;
            let Some((uuid, sha1, seed, len)) = with_files.get(i) else {
                break;
            };
            let data = self
                .http
                .get(format!("{}/images/{uuid}/file", dc.url))
                .send()
                .and_then(|r| r.bytes())
                .unwrap_or_default();
            if data.len() != *len || sha1_hex(&data) != *sha1 || data != content(*seed, *len) {
                fail(format!("{uuid}: the file read back differs"));
            }
        }
        let verify = self.call("POST", format!("{}/state?action=verify", dc.url), None);
        match verify {
            Some((200, v))
                if v["problems"]
                    .as_array()
                    .is_some_and(|p| p.iter().all(|x| x["repaired"] == true)) => {}
            other => fail(format!("verify: {other:?}")),
        }
    }
}

#[test]
fn soak_kill_9_trials_under_a_mixed_workload() {
    let trials: u64 = std::env::var("IMGSTORE_SOAK_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let seed: u64 = std::env::var("IMGSTORE_SOAK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("soak: {trials} trials, IMGSTORE_SOAK_SEED={seed}");
    let mut s = Soak::new(seed);
    let mut ops = 0u64;
    for trial in 0..trials {
        s.west.up();
        s.east.up();
        // A few operations that finish, then one that a kill interrupts.
        for _ in 0..s.rng.below(6) {
            s.operate();
            ops += 1;
        }
        let victim = s.rng.below(3);
        let delay = Duration::from_millis(s.rng.below(40));
        let (west_pid, east_pid) = (
            s.west.proc.as_ref().map(|p| p.child.id()),
            s.east.proc.as_ref().map(|p| p.child.id()),
        );
        let killer = std::thread::spawn(move || {
            std::thread::sleep(delay);
            for (pid, hit) in [(west_pid, victim != 1), (east_pid, victim != 0)] {
                if let (Some(pid), true) = (pid, hit) {
                    let _ = std::process::Command::new("kill")
                        .args(["-9", &pid.to_string()])
                        .status();
                }
            }
        });
        s.operate();
        ops += 1;
        let _ = killer.join();
        // Reap what died, restart, check both.
        if victim != 1 {
            s.west.kill();
        }
        if victim != 0 {
            s.east.kill();
        }
        s.west.up();
        s.east.up();
        s.check(trial, seed, true);
        s.check(trial, seed, false);
    }
    // The tiers did their part: both hold segments remotely.
    use imgstore::backend::ObjectBackend as _;
    let west_objects = imgstore::backend::ObjectStoreBackend::s3(&s.bucket.config("soak"))
        .and_then(|b| b.list("west/"))
        .unwrap()
        .len();
    let east_objects = imgstore::backend::LocalDir::new(s._dir.path().join("objects"))
        .and_then(|b| b.list("east/"))
        .unwrap()
        .len();
    eprintln!("soak: west's bucket holds {west_objects} segments, east's {east_objects}");
    assert!(west_objects > 0 && east_objects > 0);
    let restored = s.rebuild_west_from_its_bucket(seed);
    eprintln!("soak: west rebuilt from its bucket alone serves all {restored} activated images");
    let count = |dc: &Dc, f: fn(&Known) -> bool| dc.known.values().filter(|k| f(k)).count();
    eprintln!(
        "soak: {trials} trials, {ops} operations; west holds {} acknowledged images ({} deleted, {} cut unanswered by a kill), east {} copies",
        count(&s.west, |k| matches!(k, Known::Present { .. })),
        count(&s.west, |k| matches!(k, Known::Deleted)),
        count(&s.west, |k| matches!(k, Known::Unsure)),
        count(&s.east, |k| matches!(k, Known::Present { .. })),
    );
}
