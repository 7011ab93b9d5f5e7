//! TLS on both listeners (`tls` and `cloudapi.tls`): the real binary with
//! a self-signed certificate, asked over https by a client that trusts it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::procs::{Proc, free_port};

/// A self-signed certificate for 127.0.0.1 and its key (openssl, which
/// `tools/prereqs` installs).
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            // A server's own certificate, not a CA's (webpki refuses a CA
            // as the end entity).
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            "extendedKeyUsage=serverAuth",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs (tools/prereqs installs it)")
        .success();
    assert!(ok, "openssl made no certificate");
    (cert, key)
}

#[test]
fn both_listeners_speak_tls_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let (imgapi, cloudapi) = (free_port(), free_port());
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        serde_json::to_vec(&json!({
            "listen": format!("127.0.0.1:{imgapi}"),
            "dataDir": dir.path().join("data"),
            "tls": {"certFile": "cert.pem", "keyFile": "key.pem"},
            "cloudapi": {
                "listen": format!("127.0.0.1:{cloudapi}"),
                "tls": {"certFile": cert, "keyFile": key},
            }
        }))
        .unwrap(),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_imgstore"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _daemon = Proc { child };
    let pem = std::fs::read(&cert).unwrap();
    let https = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let ping = format!("https://127.0.0.1:{imgapi}/ping");
    let start = Instant::now();
    while let Err(e) = https.get(&ping).send() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no https answer: {e:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = https.get(&ping).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().unwrap()["ping"], "pong");
    let face = https
        .get(format!("https://127.0.0.1:{cloudapi}/--ping"))
        .send()
        .unwrap();
    assert_eq!(face.status(), 200);
    // Plain HTTP to a TLS port gets no HTTP answer.
    let plain = reqwest::blocking::Client::new();
    for port in [imgapi, cloudapi] {
        let r = plain
            .get(format!("http://127.0.0.1:{port}/ping"))
            .timeout(Duration::from_secs(10))
            .send();
        assert!(r.is_err(), "port {port} answered plain http: {r:?}");
    }
    // A client that does not trust the certificate is refused by itself.
    assert!(reqwest::blocking::Client::new().get(&ping).send().is_err());
}

#[test]
fn a_certificate_that_does_not_load_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), "not a certificate").unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        serde_json::to_vec(&json!({
            "listen": format!("127.0.0.1:{}", free_port()),
            "dataDir": dir.path().join("data"),
            "tls": {"certFile": "cert.pem", "keyFile": "missing.pem"},
        }))
        .unwrap(),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_imgstore"))
        .args(["serve", "--check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tls:"), "{err}");
}
