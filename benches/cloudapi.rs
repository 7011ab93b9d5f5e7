//! The CloudAPI face's cost: a signed `GET /:login/images` of 1,000
//! images against the same listing through IMGAPI
//! (`GET /images?account=UUID`), on one daemon, interleaved request by
//! request. Requests are signed before their clock starts, so the figures
//! are what the server spends: the signature check, CloudAPI's translation
//! and the larger walk (every page) on top of IMGAPI's one page.
//!
//!     cargo build && cargo bench --profile dev --bench cloudapi
//!
//! `IMGSTORE_BENCH_IMAGES=N` sets the number of images (default 1,000);
//! `IMGSTORE_BENCH_ROUNDS=N` the requests of each kind (default 300);
//! `IMGSTORE_BIN` the daemon binary (default: `imgstore` beside the bench).

use std::time::{Instant, SystemTime};

use base64::Engine as _;
use serde_json::json;

mod common;

/// Signs a message.
type Sign = Box<dyn Fn(&[u8]) -> Vec<u8>>;

/// A signer: its `authorized_keys` line, its algorithm and how it signs.
struct Key {
    name: &'static str,
    public: String,
    algorithm: &'static str,
    sign: Sign,
}

fn keys() -> Vec<Key> {
    // ed25519-dalek and p256 share the `signature` crate's Signer.
    use ed25519_dalek::Signer as _;
    let ed = ed25519_dalek::SigningKey::from_bytes(&[11u8; 32]);
    let ec = p256::ecdsa::SigningKey::from_slice(&[13u8; 32]).unwrap_or_else(|e| panic!("{e}"));
    let openssh = |k: ssh_key::public::KeyData| {
        ssh_key::PublicKey::from(k)
            .to_openssh()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    vec![
        Key {
            name: "ed25519",
            public: openssh(ssh_key::public::KeyData::Ed25519(
                ssh_key::public::Ed25519PublicKey(ed.verifying_key().to_bytes()),
            )),
            algorithm: "ed25519-sha512",
            sign: Box::new(move |m| ed.sign(m).to_bytes().to_vec()),
        },
        Key {
            name: "ecdsa-p256",
            public: openssh(ssh_key::public::KeyData::Ecdsa(
                ssh_key::public::EcdsaPublicKey::from(ec.verifying_key()),
            )),
            algorithm: "ecdsa-sha256",
            sign: Box::new(move |m| {
                let s: p256::ecdsa::Signature = ec.sign(m);
                s.to_der().as_bytes().to_vec()
            }),
        },
    ]
}

fn authorization(key: &Key, path: &str, date: &str) -> String {
    let public = ssh_key::PublicKey::from_openssh(&key.public).unwrap_or_else(|e| panic!("{e}"));
    let fp = imgstore::cloudapi::auth::md5_fingerprint(&public).unwrap_or_else(|e| panic!("{e}"));
    let msg = format!("(request-target): get {path}\ndate: {date}");
    let sig = base64::engine::general_purpose::STANDARD.encode((key.sign)(msg.as_bytes()));
    format!(
        "Signature keyId=\"/{}/keys/{fp}\",algorithm=\"{}\",headers=\"(request-target) date\",signature=\"{sig}\"",
        key.name, key.algorithm
    )
}

fn main() {
    let n = common::env_num("IMGSTORE_BENCH_IMAGES", 1000u64);
    // IMGAPI answers one page of at most 1,000; the comparison is of the
    // same images.
    assert!(
        n <= imgstore::imgapi::list::MAX_LIMIT as u64,
        "IMGSTORE_BENCH_IMAGES is at most {} (one IMGAPI page)",
        imgstore::imgapi::list::MAX_LIMIT
    );
    let rounds = common::env_num("IMGSTORE_BENCH_ROUNDS", 300usize);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data = dir.path().join("data");
    common::build_images(&data, n, 1);
    let account = common::account(0);
    let keys = keys();
    let (port, face_port) = (common::free_port(), common::free_port());
    // Each key its own login; the listing is the same account's.
    let users: Vec<_> = keys
        .iter()
        .map(|k| json!({"login": k.name, "uuid": account, "keys": [k.public]}))
        .collect();
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        serde_json::to_vec(&json!({
            "listen": format!("127.0.0.1:{port}"),
            "dataDir": data,
            "cloudapi": {"listen": format!("127.0.0.1:{face_port}"), "users": users},
        }))
        .unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let imgapi = format!("http://127.0.0.1:{port}");
    let face = format!("http://127.0.0.1:{face_port}");
    let mut child = common::spawn_daemon(
        &["serve".as_ref(), "--config".as_ref(), config.as_os_str()],
        &[format!("{face}/--ping"), format!("{imgapi}/ping")],
    );
    let http = reqwest::blocking::Client::new();

    let imgapi_list = || {
        let t = Instant::now();
        let r = http
            .get(format!("{imgapi}/images?account={account}"))
            .send()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status(), 200);
        let body = r.bytes().unwrap_or_else(|e| panic!("{e}"));
        (t.elapsed().as_secs_f64() * 1e3, body)
    };
    let face_list = |key: &Key| {
        let path = format!("/{}/images", key.name);
        let date = httpdate::fmt_http_date(SystemTime::now());
        let auth = authorization(key, &path, &date);
        let t = Instant::now();
        let r = http
            .get(format!("{face}{path}"))
            .header("date", date)
            .header("authorization", auth)
            .header("accept-version", "~9||~8")
            .send()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status(), 200);
        let body = r.bytes().unwrap_or_else(|e| panic!("{e}"));
        (t.elapsed().as_secs_f64() * 1e3, body)
    };
    // Both answer the same images.
    let (_, a) = imgapi_list();
    let (_, b) = face_list(&keys[0]);
    let count = |b: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(b)
            .ok()
            .and_then(|v| v.as_array().map(Vec::len))
            .unwrap_or(0)
    };
    assert_eq!(count(&a), count(&b));
    println!(
        "{} images listed; IMGAPI answer {} KiB, CloudAPI answer {} KiB",
        count(&a),
        a.len() / 1024,
        b.len() / 1024
    );
    // Warm both paths, then interleave.
    for _ in 0..20 {
        imgapi_list();
        for k in &keys {
            face_list(k);
        }
    }
    let mut base = Vec::new();
    let mut faces: Vec<Vec<f64>> = keys.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        base.push(imgapi_list().0);
        for (k, v) in keys.iter().zip(faces.iter_mut()) {
            v.push(face_list(k).0);
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (b50, bmean) = (common::percentile(base.clone(), 0.5), mean(&base));
    println!(
        "IMGAPI  GET /images?account=A          p50 {b50:.2} ms  p99 {:.2} ms  mean {bmean:.2} ms",
        common::percentile(base.clone(), 0.99)
    );
    for (k, v) in keys.iter().zip(&faces) {
        let (f50, fmean) = (common::percentile(v.clone(), 0.5), mean(v));
        println!(
            "CloudAPI GET /:login/images ({:10}) p50 {f50:.2} ms  p99 {:.2} ms  mean {fmean:.2} ms  \
             = {:.2}x IMGAPI at p50, {:.2}x in mean (goal <= 1.20x)",
            k.name,
            common::percentile(v.clone(), 0.99),
            f50 / b50,
            fmean / bmean
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}
