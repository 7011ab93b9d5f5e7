//! Copy between datacenters: two daemons on loopback, each its own data
//! dir and datacenter name.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::bytes;
use crate::daemon::*;

pub fn source() -> (tempfile::TempDir, Daemon) {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_with(dir.path(), |c| c.imgapi.datacenter_name = "west".into());
    (dir, d)
}

pub fn dest(src_url: &str) -> (tempfile::TempDir, Daemon) {
    let dir = tempfile::tempdir().unwrap();
    let url = src_url.to_string();
    let d = Daemon::start_with(dir.path(), move |c| {
        c.imgapi.datacenter_name = "east".into();
        c.imgapi
            .imgapi_url_from_datacenter
            .insert("west".into(), url);
        c.imgapi
            .imgapi_url_from_datacenter
            .insert("east".into(), "http://127.0.0.1:9".into());
        c.transfer.batch_bytes = 256 * 1024;
        c.transfer.retry_delay = Duration::from_millis(20);
    });
    (dir, d)
}

/// Starts an import and waits for its job; returns (job, response body).
pub fn import(d: &Daemon, uuid: &str, account: &str) -> (Value, Value) {
    let r = d.post(
        &format!("/images/{uuid}?action=import-from-datacenter&datacenter=west&account={account}"),
        &json!({}),
    );
    let wf = r
        .headers()
        .get("workflow-api")
        .map(|v| v.to_str().unwrap().to_string());
    let (s, body) = sj(r);
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["image_uuid"], uuid);
    let wf = wf.expect("workflow-api header");
    assert_eq!(wf.trim_end_matches('/'), d.url);
    (wait_job(d, body["job_uuid"].as_str().unwrap()), body)
}

pub fn wait_job(d: &Daemon, job: &str) -> Value {
    let start = Instant::now();
    loop {
        let (s, j) = sj(d.get(&format!("/jobs/{job}")));
        assert_eq!(s, 200, "{j}");
        if j["execution"] == "succeeded" || j["execution"] == "failed" {
            return j;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "job stuck: {j}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn get(d: &Daemon, uuid: &str) -> Value {
    let (s, img) = sj(d.get(&format!("/images/{uuid}")));
    assert_eq!(s, 200, "{img}");
    img
}

#[test]
fn a_single_image_copies_with_every_byte_verified_and_byte_progress() {
    let (_s, src) = source();
    let data = bytes(3_000_000, 1);
    let uuid = src.image(
        ALICE,
        "app",
        json!({"acl": [BOB], "tags": {"k": "v"}}),
        &data,
        true,
    );
    let (_d, dst) = dest(&src.url);
    let (job, _) = import(&dst, &uuid, ALICE);
    assert_eq!(job["execution"], "succeeded", "{job}");
    let p = &job["progress"];
    assert_eq!(p["total_bytes"], 3_000_000);
    assert_eq!(p["bytes_fetched"], p["bytes_to_fetch"]);
    assert_eq!(p["bytes_local"], 0);
    assert!(p["wire_bytes"].as_u64().unwrap() >= 3_000_000);
    let a = get(&src, &uuid);
    let b = get(&dst, &uuid);
    assert_eq!(
        a, b,
        "the copy keeps uuid, owner, published_at, acl and the rest"
    );
    let r = dst.get(&format!("/images/{uuid}/file?account={ALICE}"));
    let md5 = r.headers()["content-md5"].clone();
    assert_eq!(r.bytes().unwrap().to_vec(), data);
    let src_md5 = src.get(&format!("/images/{uuid}/file")).headers()["content-md5"].clone();
    assert_eq!(md5, src_md5, "Content-MD5 of the copy");
    let (_, jobs) = sj(dst.get(&format!("/images/{uuid}/jobs")));
    assert_eq!(jobs.as_array().unwrap().len(), 1);
    assert!(dst.state.api.store().verify(false).unwrap().is_clean());
}

#[test]
fn an_incremental_chain_copies_owned_origins_base_most_first_and_dedups() {
    let (_s, src) = source();
    let base_data = bytes(1_000_000, 1);
    let base = src.image(ADMIN, "base", json!({"public": true}), &base_data, true);
    let mut layers = Vec::new();
    let mut origin = base.clone();
    for i in 0..3u64 {
        // Each layer shares most of its content with the base.
        let mut data = base_data.clone();
        data.extend(bytes(200_000, 10 + i));
        let u = src.image(
            ALICE,
            &format!("layer{i}"),
            json!({"origin": origin}),
            &data,
            true,
        );
        origin = u.clone();
        layers.push(u);
    }
    let top = layers.last().unwrap().clone();
    let (_d, dst) = dest(&src.url);
    // The operator base must exist here first.
    let body = assert_err(
        dst.post(
            &format!("/images/{top}?action=import-from-datacenter&datacenter=west&account={ALICE}"),
            &json!({}),
        ),
        404,
        "ResourceNotFound",
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("must already exist")
    );
    let (s, _) = sj(dst.post(
        &format!("/images/{base}?action=import&source={}", src.url),
        &json!({}),
    ));
    assert_eq!(s, 200);
    dst.put_bytes(&format!("/images/{base}/file?source={}", src.url), vec![]);
    dst.post(&format!("/images/{base}?action=activate"), &json!({}));

    let (job, _) = import(&dst, &top, ALICE);
    assert_eq!(job["execution"], "succeeded", "{job}");
    assert_eq!(job["params"]["origins"], json!(layers[..2]));
    let p = &job["progress"];
    // Base content is found locally; only the new tails travel.
    assert!(p["bytes_local"].as_u64().unwrap() >= 2_700_000, "{p}");
    assert!(p["bytes_fetched"].as_u64().unwrap() <= 900_000, "{p}");
    for u in &layers {
        assert_eq!(get(&src, u), get(&dst, u));
    }
    assert!(dst.state.api.store().verify(false).unwrap().is_clean());
}

#[test]
fn a_cloned_chain_with_disabled_origins_copies() {
    let (_s, src) = source();
    let a = src.image(ALICE, "a", json!({}), &bytes(100_000, 1), true);
    let b = src.image(
        ALICE,
        "b",
        json!({"origin": a, "acl": [BOB]}),
        &bytes(100_000, 2),
        true,
    );
    let (_, clone) = sj(src.post(&format!("/images/{b}/clone?account={BOB}"), &json!({})));
    let cu = clone["uuid"].as_str().unwrap().to_string();
    let (_d, dst) = dest(&src.url);
    let (job, _) = import(&dst, &cu, BOB);
    assert_eq!(job["execution"], "succeeded", "{job}");
    let origin = get(&dst, &cu)["origin"].as_str().unwrap().to_string();
    assert_eq!(get(&dst, &origin)["state"], "disabled");
    assert_eq!(get(&src, &cu), get(&dst, &cu));
}

#[test]
fn a_recopy_refreshes_mutable_fields_and_says_what_changed() {
    let (_s, src) = source();
    let uuid = src.image(ALICE, "app", json!({}), &bytes(50_000, 1), true);
    let (_d, dst) = dest(&src.url);
    import(&dst, &uuid, ALICE);
    let (job, _) = import(&dst, &uuid, ALICE);
    assert_eq!(job["chain_results"][0]["result"], "unchanged", "{job}");
    src.post(
        &format!("/images/{uuid}?action=update&account={ALICE}"),
        &json!({"name": "renamed", "tags": {"t": 1}}),
    );
    let (job, _) = import(&dst, &uuid, ALICE);
    assert_eq!(job["execution"], "succeeded");
    assert_eq!(
        job["chain_results"][0]["result"], "changed: name, tags",
        "{job}"
    );
    assert_eq!(get(&dst, &uuid)["name"], "renamed");
}

#[test]
fn the_error_matrix_of_import_from_datacenter() {
    let (_s, src) = source();
    let mine = src.image(ALICE, "app", json!({"acl": [BOB]}), &bytes(1000, 1), true);
    let inactive = src.image(ALICE, "un", json!({}), &bytes(1000, 2), false);
    let (_d, dst) = dest(&src.url);
    let path = |u: &str, q: &str| format!("/images/{u}?action=import-from-datacenter{q}");
    assert_err(
        dst.post(&path(&mine, "&datacenter=west"), &json!({})),
        422,
        "ValidationFailed",
    );
    assert_err(
        dst.post(&path(&mine, &format!("&account={ALICE}")), &json!({})),
        422,
        "ValidationFailed",
    );
    let body = assert_err(
        dst.post(
            &path(&mine, &format!("&datacenter=north&account={ALICE}")),
            &json!({}),
        ),
        422,
        "ValidationFailed",
    );
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.contains("\"north\" is not supported") && msg.contains("west") && !msg.contains("east"),
        "{msg}"
    );
    // What to change to copy from it is named.
    assert!(msg.contains("imgapiUrlFromDatacenter"), "{msg}");
    assert_err(
        dst.post(
            &path(&mine, &format!("&datacenter=east&account={ALICE}")),
            &json!({}),
        ),
        422,
        "ValidationFailed",
    );
    // Remote 404 passes through (also for an image Carol may not see).
    assert_err(
        dst.post(
            &path(CAROL, &format!("&datacenter=west&account={ALICE}")),
            &json!({}),
        ),
        404,
        "ResourceNotFound",
    );
    assert_err(
        dst.post(
            &path(&mine, &format!("&datacenter=west&account={CAROL}")),
            &json!({}),
        ),
        404,
        "ResourceNotFound",
    );
    let body = assert_err(
        dst.post(
            &path(&inactive, &format!("&datacenter=west&account={ALICE}")),
            &json!({}),
        ),
        422,
        "ValidationFailed",
    );
    assert!(body["message"].as_str().unwrap().contains("is not active"));
    // Shared with Bob, but not his.
    assert_err(
        dst.post(
            &path(&mine, &format!("&datacenter=west&account={BOB}")),
            &json!({}),
        ),
        401,
        "UnauthorizedError",
    );
    // A local image with that uuid that is not a copy from west.
    dst.post(&format!("/images/{mine}?action=import"), &get(&src, &mine));
    assert_err(
        dst.post(
            &path(&mine, &format!("&datacenter=west&account={ALICE}")),
            &json!({}),
        ),
        409,
        "ImageUuidAlreadyExists",
    );
    assert_err(dst.get(&format!("/jobs/{ALICE}")), 404, "ResourceNotFound");
}

#[test]
fn the_source_serves_only_chunks_of_a_visible_image() {
    let (_s, src) = source();
    let a = src.image(ALICE, "a", json!({}), &bytes(100_000, 1), true);
    let b = src.image(CAROL, "b", json!({}), &bytes(100_000, 2), true);
    // Carol's chunk ids cannot be fetched through Alice's image.
    let list = src
        .client
        .get(format!(
            "{}/images/{b}/file/chunks?account={CAROL}",
            src.url
        ))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    let list = imgstore::format::decode_chunk_list(&list).unwrap();
    let body = imgstore::format::encode_id_list(&[list.entries[0].id]);
    let r = src
        .client
        .post(format!(
            "{}/images/{a}/file/chunks?account={ALICE}",
            src.url
        ))
        .body(body.clone())
        .send()
        .unwrap();
    assert_err(r, 422, "InvalidParameter");
    // Nor can Alice list or fetch Carol's image at all.
    let r = src
        .client
        .get(format!(
            "{}/images/{b}/file/chunks?account={ALICE}",
            src.url
        ))
        .send()
        .unwrap();
    assert_err(r, 404, "ResourceNotFound");
    let r = src
        .client
        .post(format!(
            "{}/images/{b}/file/chunks?account={ALICE}",
            src.url
        ))
        .body(body)
        .send()
        .unwrap();
    assert_err(r, 404, "ResourceNotFound");
    let r = src
        .client
        .post(format!("{}/images/{a}/file/chunks", src.url))
        .body(vec![1, 2, 3])
        .send()
        .unwrap();
    assert_err(r, 422, "InvalidParameter");
}

/// A daemon holding `data` as an image, served over the chunk protocol.
fn http_source(
    data: &[u8],
) -> (
    Box<dyn imgstore::transfer::ChunkSource>,
    imgstore::FileId,
    Box<dyn std::any::Any>,
) {
    use imgstore::imgapi::remote::RemoteFactory;
    let (dir, d) = source();
    let uuid = d.image(ALICE, "conf", json!({}), data, true);
    let remotes = imgstore::http::remote::HttpRemotes::new(Duration::from_secs(30));
    let u: uuid::Uuid = uuid.parse().unwrap();
    let a: uuid::Uuid = ALICE.parse().unwrap();
    let src = remotes
        .remote(&d.url)
        .unwrap()
        .chunk_source(&u, Some(&a))
        .unwrap()
        .expect("imgstore speaks the chunk protocol");
    let id = imgstore::FileId(*blake3::hash(data).as_bytes());
    (src, id, Box::new((dir, d, remotes)))
}

#[test]
fn the_http_source_passes_the_conformance_suite() {
    crate::transfer::conformance(&http_source);
}

/// A proxy in front of the source that can lie or cut connections.
pub mod proxy {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

    pub const HONEST: u8 = 0;
    /// Flips a byte deep inside every record stream (chunk fetch answers).
    pub const LIE: u8 = 1;
    /// Cuts every chunk fetch answer after `cut_after` bytes.
    pub const CUT: u8 = 2;
    /// Never answers chunk fetches (the connection stays open, silent).
    pub const STALL: u8 = 3;
    /// A plain IMGAPI as upstream's own copy uses it: GetImage and
    /// GetImageFile are forwarded, every other route (`/ping`, the chunk
    /// protocol) answers 404 as restify does.
    pub const PLAIN: u8 = 4;
    /// Swaps the first two entries of every chunk list it passes (CRC made
    /// good again): every chunk is what its id says, the file is not.
    pub const REORDER: u8 = 5;

    pub struct Proxy {
        pub url: String,
        pub mode: Arc<AtomicU8>,
        pub cut_after: Arc<AtomicU64>,
    }

    /// HTTP/1.1 with `Connection: close` forced, so each connection carries
    /// one request and its answer can be tampered with as a byte stream.
    pub fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let up = upstream.trim_start_matches("http://").to_string();
        let mode = Arc::new(AtomicU8::new(HONEST));
        let cut_after = Arc::new(AtomicU64::new(100_000));
        let (m, c) = (mode.clone(), cut_after.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { return };
                let (up, m, c) = (up.clone(), m.clone(), c.clone());
                std::thread::spawn(move || serve(client, &up, &m, &c));
            }
        });
        Proxy {
            url,
            mode,
            cut_after,
        }
    }

    fn serve(mut client: TcpStream, up: &str, mode: &AtomicU8, cut_after: &AtomicU64) {
        // Read the request head and body (Content-Length only).
        let mut req = Vec::new();
        let mut buf = [0u8; 65536];
        let head_end = loop {
            let n = match client.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            req.extend_from_slice(&buf[..n]);
            if let Some(p) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
        };
        let head = String::from_utf8_lossy(&req[..head_end]).to_string();
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap_or(0))
            })
            .unwrap_or(0);
        while req.len() < head_end + len {
            let n = match client.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            req.extend_from_slice(&buf[..n]);
        }
        let is_fetch = head.starts_with("POST ") && head.contains("/file/chunks");
        if mode.load(Ordering::SeqCst) == PLAIN && !super::plain_imgapi_route(&head) {
            let path = head.split(' ').nth(1).unwrap_or("/");
            let path = path.split('?').next().unwrap_or(path);
            let body =
                format!(r#"{{"code":"ResourceNotFound","message":"{path} does not exist"}}"#);
            let _ = client.write_all(
                format!(
                    "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
            return;
        }
        if is_fetch && mode.load(Ordering::SeqCst) == STALL {
            std::thread::sleep(std::time::Duration::from_secs(30));
            return;
        }
        let mut new_head = String::new();
        for l in head.lines() {
            if l.is_empty() || l.to_ascii_lowercase().starts_with("connection:") {
                continue;
            }
            new_head.push_str(l);
            new_head.push_str("\r\n");
        }
        new_head.push_str("Connection: close\r\n\r\n");
        let Ok(mut server) = TcpStream::connect(up) else {
            return;
        };
        let _ = server.write_all(new_head.as_bytes());
        let _ = server.write_all(&req[head_end..]);
        let mut answer = Vec::new();
        let _ = server.read_to_end(&mut answer);
        let m = mode.load(Ordering::SeqCst);
        if m == REORDER && head.starts_with("GET ") && head.contains("/file/chunks") {
            answer = super::reordered(&answer);
        }
        if is_fetch && m == LIE && answer.len() > 2000 {
            let at = answer.len() - 1000;
            answer[at] ^= 0x20;
        }
        if is_fetch && m == CUT {
            let n = (cut_after.load(Ordering::SeqCst) as usize).min(answer.len());
            let _ = client.write_all(&answer[..n]);
            return; // drop the connection mid-answer
        }
        let _ = client.write_all(&answer);
    }
}

/// `GET /images/UUID` or `GET /images/UUID/file` (with any query): all
/// that upstream IMGAPI's copy asks of a source.
pub fn plain_imgapi_route(head: &str) -> bool {
    let Some(target) = head.strip_prefix("GET ").and_then(|r| r.split(' ').next()) else {
        return false;
    };
    let path = target.split('?').next().unwrap_or(target);
    let parts: Vec<&str> = path.split('/').collect();
    matches!(parts.as_slice(), ["", "images", u] | ["", "images", u, "file"] if u.len() == 36)
}

#[test]
fn a_source_that_answers_only_get_image_and_get_image_file_is_copied_through_the_file() {
    let (_s, src) = source();
    let data = bytes(2_000_000, 7);
    let uuid = src.image(ALICE, "plain", json!({}), &data, true);
    let p = proxy::start(&src.url);
    p.mode
        .store(proxy::PLAIN, std::sync::atomic::Ordering::SeqCst);
    // What the proxy refuses is a 404, as from a server without the route.
    let ping = reqwest::blocking::get(format!("{}/ping", p.url)).unwrap();
    assert_eq!(ping.status(), 404);
    let (_d, dst) = dest_via(&p.url, 2);
    let (job, _) = import(&dst, &uuid, ALICE);
    assert_eq!(job["execution"], "succeeded", "{job}");
    // The whole file crossed (no chunk diff), and every byte arrived.
    assert_eq!(job["progress"]["bytes_fetched"], 2_000_000, "{job}");
    let r = dst.get(&format!("/images/{uuid}/file?account={ALICE}"));
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().unwrap().to_vec(), data);
    assert_eq!(get(&dst, &uuid)["state"], "active");
}

/// An HTTP answer whose chunk list has its first two entries swapped.
fn reordered(answer: &[u8]) -> Vec<u8> {
    let Some(split) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return answer.to_vec();
    };
    let (head, body) = (&answer[..split], &answer[split + 4..]);
    let Ok(mut list) = imgstore::format::decode_chunk_list(body) else {
        return answer.to_vec();
    };
    if list.entries.len() < 2 {
        return answer.to_vec();
    }
    list.entries.swap(0, 1);
    let body = imgstore::format::encode_chunk_list(&list);
    let mut out = Vec::new();
    for line in String::from_utf8_lossy(head).lines() {
        if !line.to_ascii_lowercase().starts_with("content-length:") {
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(&body);
    out
}

fn dest_via(proxy_url: &str, attempts: u32) -> (tempfile::TempDir, Daemon) {
    dest_via_with(proxy_url, attempts, Duration::from_secs(120))
}

fn dest_via_with(proxy_url: &str, attempts: u32, timeout: Duration) -> (tempfile::TempDir, Daemon) {
    let dir = tempfile::tempdir().unwrap();
    let url = proxy_url.to_string();
    let d = Daemon::start_with(dir.path(), move |c| {
        c.imgapi.datacenter_name = "east".into();
        c.imgapi
            .imgapi_url_from_datacenter
            .insert("west".into(), url);
        c.transfer.batch_bytes = 256 * 1024;
        c.transfer.attempts = attempts;
        c.transfer.retry_delay = Duration::from_millis(10);
        c.transfer_timeout = timeout;
    });
    (dir, d)
}

#[test]
fn a_lying_source_fails_the_job_cleanly_and_an_honest_retry_resumes() {
    let (_s, src) = source();
    let data = bytes(2_000_000, 7);
    let uuid = src.image(ALICE, "app", json!({}), &data, true);
    let p = proxy::start(&src.url);
    p.mode
        .store(proxy::LIE, std::sync::atomic::Ordering::SeqCst);
    let (_d, dst) = dest_via(&p.url, 2);
    let (job, _) = import(&dst, &uuid, ALICE);
    assert_eq!(job["execution"], "failed", "{job}");
    let err = job["chain_results"].as_array().unwrap().last().unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        err.contains("damaged") || err.contains("bad record"),
        "{err}"
    );
    assert_eq!(get(&dst, &uuid)["state"], "unactivated");
    assert!(dst.state.api.store().verify(false).unwrap().is_clean());
    p.mode
        .store(proxy::HONEST, std::sync::atomic::Ordering::SeqCst);
    let (job, _) = import(&dst, &uuid, ALICE);
    assert_eq!(job["execution"], "succeeded", "{job}");
    assert_eq!(dst.file(&uuid), data);
}

#[test]
fn dropped_connections_are_retried_and_the_copy_completes() {
    let (_s, src) = source();
    let data = bytes(2_000_000, 8);
    let uuid = src.image(ALICE, "app", json!({}), &data, true);
    let p = proxy::start(&src.url);
    p.mode
        .store(proxy::CUT, std::sync::atomic::Ordering::SeqCst);
    p.cut_after
        .store(150_000, std::sync::atomic::Ordering::SeqCst);
    let (_d, dst) = dest_via(&p.url, 3);
    let r = dst.post(
        &format!("/images/{uuid}?action=import-from-datacenter&datacenter=west&account={ALICE}"),
        &json!({}),
    );
    let (_, body) = sj(r);
    let job_uuid = body["job_uuid"].as_str().unwrap().to_string();
    // Let a few batches fail, then heal the link while the job retries.
    std::thread::sleep(Duration::from_millis(30));
    p.mode
        .store(proxy::HONEST, std::sync::atomic::Ordering::SeqCst);
    let job = wait_job(&dst, &job_uuid);
    if job["execution"] == "failed" {
        // Retries ran out before the link healed: the next request resumes.
        let (job, _) = import(&dst, &uuid, ALICE);
        assert_eq!(job["execution"], "succeeded", "{job}");
    }
    assert_eq!(dst.file(&uuid), data);
    assert!(dst.state.api.store().verify(false).unwrap().is_clean());
}

#[test]
fn a_stalled_source_times_out_and_the_copy_resumes_later() {
    let (_s, src) = source();
    let data = bytes(1_000_000, 9);
    let uuid = src.image(ALICE, "app", json!({}), &data, true);
    let p = proxy::start(&src.url);
    p.mode
        .store(proxy::STALL, std::sync::atomic::Ordering::SeqCst);
    let (_d, dst) = dest_via_with(&p.url, 2, Duration::from_secs(1));
    let (job, _) = import(&dst, &uuid, ALICE);
    assert_eq!(job["execution"], "failed", "{job}");
    assert!(job["progress"]["retries"].as_u64().unwrap() >= 1, "{job}");
    p.mode
        .store(proxy::HONEST, std::sync::atomic::Ordering::SeqCst);
    let (job, _) = import(&dst, &uuid, ALICE);
    assert_eq!(job["execution"], "succeeded", "{job}");
    assert_eq!(dst.file(&uuid), data);
}

#[test]
fn deleting_an_image_whose_copy_failed_gives_its_chunks_back() {
    let (_s, src) = source();
    let uuid = src.image(ALICE, "app", json!({}), &bytes(2_000_000, 11), true);
    let p = proxy::start(&src.url);
    p.mode
        .store(proxy::CUT, std::sync::atomic::Ordering::SeqCst);
    p.cut_after
        .store(200_000, std::sync::atomic::Ordering::SeqCst);
    let (_d, dst) = dest_via(&p.url, 1);
    // Some batches get through before others are cut.
    p.mode
        .store(proxy::HONEST, std::sync::atomic::Ordering::SeqCst);
    let r = dst.post(
        &format!("/images/{uuid}?action=import-from-datacenter&datacenter=west&account={ALICE}"),
        &json!({}),
    );
    let job = sj(r).1["job_uuid"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(15));
    p.mode
        .store(proxy::CUT, std::sync::atomic::Ordering::SeqCst);
    let job = wait_job(&dst, &job);
    let store = dst.state.api.store();
    if job["execution"] == "failed" {
        assert!(
            store.stats().unwrap().live_stored_bytes > 0 || job["progress"]["bytes_fetched"] == 0
        );
    }
    assert_eq!(
        dst.delete(&format!("/images/{uuid}?account={ALICE}"))
            .status(),
        204
    );
    store.gc_execute(&store.gc_plan(0.0).unwrap()).unwrap();
    assert_eq!(
        store.stats().unwrap().live_stored_bytes,
        0,
        "held chunks were released"
    );
    assert!(store.verify(false).unwrap().is_clean());
}

#[test]
fn a_job_is_seen_by_its_account_and_operators_only() {
    let (_s, src) = source();
    let uuid = src.image(ALICE, "mine", json!({}), &bytes(50_000, 1), true);
    let (_d, dst) = dest(&src.url);
    let (job, _) = import(&dst, &uuid, ALICE);
    let j = job["uuid"].as_str().unwrap();
    let (s, _) = sj(dst.get(&format!("/jobs/{j}?account={ALICE}")));
    assert_eq!(s, 200);
    let (s, _) = sj(dst.get(&format!("/jobs/{j}")));
    assert_eq!(s, 200);
    // Another account gets what a job that does not exist gets.
    let other = assert_err(
        dst.get(&format!("/jobs/{j}?account={BOB}")),
        404,
        "ResourceNotFound",
    );
    let none = assert_err(
        dst.get(&format!("/jobs/{ALICE}?account={BOB}")),
        404,
        "ResourceNotFound",
    );
    assert_eq!(
        other["message"].as_str().unwrap().replace(j, "X"),
        none["message"].as_str().unwrap().replace(ALICE, "X")
    );
    // Store-wide figures are for operators.
    assert_err(
        dst.get(&format!("/state?account={BOB}")),
        403,
        "OperatorOnly",
    );
    assert_eq!(dst.get("/state").status(), 200);
}

#[test]
fn deleting_an_image_while_its_copy_runs_releases_everything_the_copy_held() {
    let (_s, src) = source();
    let uuid = src.image(ALICE, "app", json!({}), &bytes(3_000_000, 21), true);
    let p = proxy::start(&src.url);
    p.mode
        .store(proxy::STALL, std::sync::atomic::Ordering::SeqCst);
    let (_d, dst) = dest_via_with(&p.url, 4, Duration::from_secs(1));
    let r = dst.post(
        &format!("/images/{uuid}?action=import-from-datacenter&datacenter=west&account={ALICE}"),
        &json!({}),
    );
    let job = sj(r).1["job_uuid"].as_str().unwrap().to_string();
    // The copy runs (its fetches stalled); the owner deletes the image.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        dst.delete(&format!("/images/{uuid}?account={ALICE}"))
            .status(),
        204
    );
    // The source answers again: batches arrive for an image that is gone.
    p.mode
        .store(proxy::HONEST, std::sync::atomic::Ordering::SeqCst);
    let job = wait_job(&dst, &job);
    assert_eq!(job["execution"], "failed", "{job}");
    let store = dst.state.api.store();
    assert_eq!(
        store
            .partial_len(uuid.parse::<uuid::Uuid>().unwrap().as_bytes())
            .unwrap(),
        0
    );
    store.gc_execute(&store.gc_plan(0.0).unwrap()).unwrap();
    assert_eq!(
        store.stats().unwrap().live_stored_bytes,
        0,
        "held chunks were released"
    );
    assert!(store.verify(false).unwrap().is_clean());
}

/// A copy costs what crosses the link: the file is committed once every
/// fetched chunk checks out, and checked whole afterwards. A source whose
/// chunk list puts sound chunks in the wrong order gets its copy through,
/// then the check finds the file is not what the list said: the image is
/// disabled, its job failed with the reason, the failure counted.
#[test]
fn a_copied_file_is_checked_whole_after_the_copy_and_a_wrong_one_is_disabled() {
    let (_s, src) = source();
    let data = bytes(600_000, 17);
    let good = src.image(ALICE, "good", json!({}), &data, true);
    let bad = src.image(ALICE, "bad", json!({}), &bytes(600_000, 18), true);
    let p = proxy::start(&src.url);
    let (_d, dst) = dest_via(&p.url, 2);
    let (job, _) = import(&dst, &good, ALICE);
    assert_eq!(job["execution"], "succeeded", "{job}");
    p.mode
        .store(proxy::REORDER, std::sync::atomic::Ordering::SeqCst);
    let (job, _) = import(&dst, &bad, ALICE);
    assert_eq!(
        job["execution"], "succeeded",
        "the copy itself checks chunks only: {job}"
    );
    let job_uuid = job["uuid"].as_str().unwrap().to_string();
    let start = Instant::now();
    loop {
        let metrics = dst.get("/metrics").text().unwrap();
        let waiting = metrics
            .lines()
            .find_map(|l| l.strip_prefix("imgstore_copy_checks_waiting "))
            .map(str::trim)
            .unwrap_or("?")
            .to_string();
        if waiting == "0" {
            assert!(
                metrics.contains("imgstore_copy_check_failures_total 1"),
                "{metrics}"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "checks never drained: {waiting}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(get(&dst, &good)["state"], "active");
    assert_eq!(get(&dst, &bad)["state"], "disabled");
    let (_, job) = sj(dst.get(&format!("/jobs/{job_uuid}")));
    assert_eq!(job["execution"], "failed", "{job}");
    let last = job["chain_results"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["name"], "check_file", "{job}");
    // The good copy reads back whole.
    let r = dst.get(&format!("/images/{good}/file?account={ALICE}"));
    assert_eq!(r.bytes().unwrap().to_vec(), data);
}

#[test]
fn a_copied_image_is_not_listed_as_derived_from_itself() {
    let (_s, src) = source();
    let uuid = src.image(ALICE, "lineage", json!({}), &bytes(200_000, 23), true);
    let (_d, dst) = dest(&src.url);
    let (job, _) = import(&dst, &uuid, ALICE);
    assert_eq!(job["execution"], "succeeded", "{job}");
    let (s, l) = sj(dst.get(&format!("/images/{uuid}/lineage?account={ALICE}")));
    assert_eq!(s, 200, "{l}");
    assert_eq!(l["derived"], json!([]), "{l}");
    assert_eq!(l["source"]["how"], "copy", "{l}");
}
