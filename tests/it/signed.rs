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
        c.auth = Some(imgstore::http::authkeys::KeySources {
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

/// An unencrypted OpenSSH private key file for `sk`, and its public line.
fn key_file(
    dir: &std::path::Path,
    name: &str,
    sk: &ed25519_dalek::SigningKey,
) -> (std::path::PathBuf, String) {
    let keypair = ssh_key::private::Ed25519Keypair::from(sk);
    let private =
        ssh_key::PrivateKey::new(ssh_key::private::KeypairData::Ed25519(keypair), name).unwrap();
    let path = dir.join(name);
    std::fs::write(
        &path,
        private
            .to_openssh(ssh_key::LineEnding::LF)
            .unwrap()
            .as_bytes(),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(
        path.with_extension("pub"),
        private.public_key().to_openssh().unwrap(),
    )
    .unwrap();
    (path, private.public_key().to_openssh().unwrap())
}

/// An active image made through the rules (the port requires signatures).
fn image_in(d: &Daemon, owner: &str, data: &[u8]) -> String {
    let api = &d.state.api;
    let owner: uuid::Uuid = owner.parse().unwrap();
    let body =
        json!({"name": "signed", "version": "1.0.0", "type": "zone-dataset", "os": "smartos"});
    let img = api.create(Some(&owner), &body).unwrap();
    let params = imgstore::imgapi::FileParams {
        compression: Some("none".into()),
        ..Default::default()
    };
    api.add_file(&img.uuid, Some(&owner), &params, data)
        .unwrap();
    api.activate(&img.uuid, Some(&owner)).unwrap();
    img.uuid.to_string()
}

#[test]
fn a_copy_between_two_datacenters_that_both_require_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let (ops, ops_pub, ops_fp) = key(5);
    let east_sk = ed25519_dalek::SigningKey::from_bytes(&[6u8; 32]);
    let (east_key, east_pub) = key_file(dir.path(), "east_key", &east_sk);
    let west = Daemon::start_with(&dir.path().join("west"), move |c| {
        c.imgapi.datacenter_name = "west".into();
        c.auth = Some(imgstore::http::authkeys::KeySources {
            inline: BTreeMap::from([("east".into(), vec![east_pub])]),
            dir: None,
        });
    });
    let data = crate::common::bytes(700_000, 9);
    let uuid = image_in(&west, ALICE, &data);
    let west_url = west.url.clone();
    let signer = imgstore::http::sign::Signer::from_key_file("east", &east_key).unwrap();
    let east = Daemon::start_with(&dir.path().join("east"), move |c| {
        c.imgapi.datacenter_name = "east".into();
        c.imgapi
            .imgapi_url_from_datacenter
            .insert("west".into(), west_url);
        c.auth = Some(imgstore::http::authkeys::KeySources {
            inline: BTreeMap::from([("ops".into(), vec![ops_pub])]),
            dir: None,
        });
        c.signing_key = Some(std::sync::Arc::new(signer));
    });
    let strict = format!("/ops/keys/{ops_fp}");
    let target = "(request-target) date";
    let (s, started) = signed(
        &east,
        "POST",
        &format!("/images/{uuid}?action=import-from-datacenter&datacenter=west&account={ALICE}"),
        &ops,
        &strict,
        target,
        SystemTime::now(),
    );
    assert_eq!(s, 200, "{started}");
    let job = started["job_uuid"].as_str().unwrap().to_string();
    let start = std::time::Instant::now();
    let done = loop {
        let (s, j) = signed(
            &east,
            "GET",
            &format!("/jobs/{job}"),
            &ops,
            &strict,
            target,
            SystemTime::now(),
        );
        assert_eq!(s, 200, "{j}");
        if j["execution"] == "succeeded" || j["execution"] == "failed" {
            break j;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "{j}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(done["execution"], "succeeded", "{done}");
    let copied = east
        .state
        .api
        .get_visible(&uuid.parse().unwrap(), None)
        .unwrap();
    assert_eq!(copied.files[0].size, data.len() as u64);
}

/// `imgstore` with `--user` and `--key-id`: the key found in `~/.ssh`, or
/// in ssh-agent; without them the daemon refuses the request.
#[test]
fn the_client_signs_with_a_key_from_ssh_dir_or_agent() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    let sk = ed25519_dalek::SigningKey::from_bytes(&[8u8; 32]);
    let (path, public) = key_file(&home.join(".ssh"), "id_ed25519", &sk);
    let fp =
        imgstore::http::auth::md5_fingerprint(&ssh_key::PublicKey::from_openssh(&public).unwrap())
            .unwrap();
    let d = with_keys(dir.path(), BTreeMap::from([("ops".into(), vec![public])]));
    let run = |home: &std::path::Path, agent: Option<&std::path::Path>, sign: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_imgstore"));
        cmd.args(["image", "list", "-j", "--url", &d.url])
            .env("HOME", home)
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("IMGSTORE_PROFILE");
        if sign {
            cmd.args(["--user", "ops", "--key-id", &format!("MD5:{fp}")]);
        }
        if let Some(a) = agent {
            cmd.env("SSH_AUTH_SOCK", a);
        }
        cmd.output().unwrap()
    };
    let out = run(&home, None, true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&home, None, false);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("InvalidCredentials"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The same key from ssh-agent, with no key file to find.
    let sock = dir.path().join("agent.sock");
    let agent = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn();
    let Ok(mut agent) = agent else {
        return; // no ssh-agent on this machine: the key-file path was tested
    };
    let start = std::time::Instant::now();
    while !sock.exists() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let added = Command::new("ssh-add")
        .arg(&path)
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let empty = dir.path().join("empty-home");
    std::fs::create_dir_all(&empty).unwrap();
    let out = run(&empty, Some(&sock), true);
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
