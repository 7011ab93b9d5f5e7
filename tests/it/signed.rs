//! The IMGAPI port with `"authType": "signature"`: every request but
//! `GET /ping` carries an HTTP Signature by a configured key, as upstream
//! IMGAPI checks them (sdc-clients' bare-login form) and as imgstore's own
//! client signs (`/LOGIN/keys/FINGERPRINT`, method and path signed too).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use ed25519_dalek::Signer as _;
use serde_json::{Value, json};

use crate::daemon::{ALICE, Daemon, sj};

fn key(seed: u8) -> (ed25519_dalek::SigningKey, String, String) {
    let sk = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let public = ssh_key::PublicKey::from(ssh_key::public::KeyData::Ed25519(
        ssh_key::public::Ed25519PublicKey(sk.verifying_key().to_bytes()),
    ));
    let fp = imgstore::http::auth::md5_fingerprint(&public).unwrap();
    (sk, public.to_openssh().unwrap(), fp)
}

/// `method path` signed by `sk` under `key_id`, over `headers` (`date`
/// alone, as sdc-clients, or `(request-target) date`).
fn signed(
    d: &Daemon,
    method: &str,
    path: &str,
    sk: &ed25519_dalek::SigningKey,
    key_id: &str,
    headers: &str,
    date: SystemTime,
) -> (u16, Value) {
    let date = httpdate::fmt_http_date(date);
    let lines: Vec<String> = headers
        .split(' ')
        .map(|h| match h {
            "(request-target)" => {
                format!("(request-target): {} {path}", method.to_ascii_lowercase())
            }
            _ => format!("date: {date}"),
        })
        .collect();
    let sig = base64::engine::general_purpose::STANDARD
        .encode(sk.sign(lines.join("\n").as_bytes()).to_bytes());
    let r = d
        .client
        .request(method.parse().unwrap(), format!("{}{path}", d.url))
        .header("date", date)
        .header(
            "authorization",
            format!(
                "Signature keyId=\"{key_id}\",algorithm=\"ed25519-sha512\",headers=\"{headers}\",signature=\"{sig}\""
            ),
        )
        .send()
        .unwrap();
    sj(r)
}

fn with_keys(dir: &std::path::Path, keys: BTreeMap<String, Vec<String>>) -> Daemon {
    let keys_dir = dir.join("authkeys");
    std::fs::create_dir_all(&keys_dir).unwrap();
    Daemon::start_with(&dir.join("data"), move |c| {
        c.auth = Some(imgstore::http::auth::KeySources {
            inline: keys,
            dir: Some(keys_dir),
        })
    })
}

#[test]
fn every_request_but_ping_must_be_signed_by_a_configured_key() {
    let dir = tempfile::tempdir().unwrap();
    let (ops, ops_pub, ops_fp) = key(1);
    let (mallory, _, mallory_fp) = key(2);
    let d = with_keys(dir.path(), BTreeMap::from([("ops".into(), vec![ops_pub])]));
    let now = SystemTime::now();
    assert_eq!(d.get("/ping").status(), 200, "ping stays open");
    // Unsigned: refused before anything runs, as a JSON error.
    for path in ["/images", "/state", &format!("/images?account={ALICE}")] {
        let (s, body) = sj(d.get(path));
        assert_eq!(s, 401, "{path}: {body}");
        assert_eq!(body["code"], "InvalidCredentials");
    }
    let (s, body) = sj(d.post(
        "/images?account=aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa",
        &json!({"name": "x", "version": "1", "type": "other", "os": "other"}),
    ));
    assert_eq!(s, 401, "{body}");
    // imgstore's own form and upstream's both pass.
    let strict = format!("/ops/keys/{ops_fp}");
    let target = "(request-target) date";
    assert_eq!(
        signed(&d, "GET", "/images", &ops, &strict, target, now).0,
        200
    );
    assert_eq!(
        signed(&d, "GET", "/images", &ops, "ops", "date", now).0,
        200
    );
    // A signer is an operator; `account` still scopes the answer.
    let (s, list) = signed(
        &d,
        "GET",
        &format!("/images?account={ALICE}"),
        &ops,
        "ops",
        "date",
        now,
    );
    assert_eq!((s, list), (200, json!([])));
    // Refused, each as an unknown key is, nothing told about which logins
    // exist: another key, a login without keys, a stale date, a signature
    // of another path.
    let cases = [
        (
            "mallory's key",
            signed(&d, "GET", "/images", &mallory, "ops", "date", now),
        ),
        (
            "unknown login",
            signed(
                &d,
                "GET",
                "/images",
                &mallory,
                &format!("/mallory/keys/{mallory_fp}"),
                target,
                now,
            ),
        ),
        (
            "old date",
            signed(
                &d,
                "GET",
                "/images",
                &ops,
                "ops",
                "date",
                now - Duration::from_secs(600),
            ),
        ),
    ];
    for (what, (s, body)) in cases {
        assert_eq!(s, 401, "{what}: {body}");
        assert_eq!(body["code"], "InvalidCredentials", "{what}");
    }
    let r = d
        .client
        .get(format!("{}/images", d.url))
        .header("authorization", format!("Signature keyId=\"{strict}\",algorithm=\"ed25519-sha512\",headers=\"{target}\",signature=\"AAAA\""))
        .header("date", httpdate::fmt_http_date(now))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[test]
fn keys_added_to_the_keys_dir_count_after_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let (ops, ops_pub, _) = key(3);
    let (late, late_pub, _) = key(4);
    let d = with_keys(dir.path(), BTreeMap::from([("ops".into(), vec![ops_pub])]));
    let now = SystemTime::now();
    assert_eq!(
        signed(&d, "GET", "/images", &late, "late", "date", now).0,
        401
    );
    std::fs::write(
        dir.path().join("authkeys/late.keys"),
        format!("# a comment\n{late_pub}\n"),
    )
    .unwrap();
    let (s, body) = signed(&d, "POST", "/authkeys/reload", &ops, "ops", "date", now);
    assert_eq!((s, body), (200, json!({})));
    assert_eq!(
        signed(&d, "GET", "/images", &late, "late", "date", now).0,
        200
    );
    // A key file that does not load leaves the keys in use.
    std::fs::write(
        dir.path().join("authkeys/broken.keys"),
        "ssh-ed25519 not-a-key\n",
    )
    .unwrap();
    let (s, body) = signed(&d, "POST", "/authkeys/reload", &ops, "ops", "date", now);
    assert_eq!(s, 500, "{body}");
    assert_eq!(
        signed(&d, "GET", "/images", &late, "late", "date", now).0,
        200
    );
}

#[test]
fn sdc_clients_works_against_a_daemon_that_requires_signatures() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let compat = root.join("tools/compat");
    assert!(
        compat.join("node_modules/sdc-clients").is_dir(),
        "sdc-clients is not installed: run tools/prereqs (npm ci in tools/compat)"
    );
    let dir = tempfile::tempdir().unwrap();
    let keyfile = dir.path().join("ops_key");
    let st = Command::new("ssh-keygen")
        .args([
            "-q", "-N", "", "-t", "rsa", "-b", "2048", "-C", "ops", "-m", "PEM", "-f",
        ])
        .arg(&keyfile)
        .status()
        .expect("ssh-keygen runs (tools/prereqs installs openssh-client)");
    assert!(st.success());
    let public = std::fs::read_to_string(keyfile.with_extension("pub")).unwrap();
    let d = with_keys(
        dir.path(),
        BTreeMap::from([("ops".into(), vec![public.trim().to_string()])]),
    );
    let run = |signed: bool| {
        let mut cmd = Command::new("node");
        cmd.arg("--test")
            .arg("--test-reporter=spec")
            .arg(compat.join("sdc-clients.test.js"))
            .env("IMGAPI_URL", &d.url)
            .current_dir(&compat);
        if signed {
            cmd.env("IMGAPI_SIGN_USER", "ops")
                .env("IMGAPI_SIGN_KEY", &keyfile);
        }
        let out = cmd.output().expect("node runs");
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, text) = run(true);
    assert!(ok, "sdc-clients with signatures failed:\n{text}");
    assert!(text.contains("pass 3"), "{text}");
    let (ok, text) = run(false);
    assert!(!ok, "unsigned sdc-clients passed:\n{text}");
}
