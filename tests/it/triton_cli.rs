//! The real `triton` CLI (7.17.0, installed by `tools/prereqs` into
//! `tools/compat/node_modules`) against two daemons, west and east, each
//! with its CloudAPI face; and HTTP Signature failures sent by hand.
//!
//! Accounts: alice and dave sign with Ed25519, bob with RSA, carol with
//! ECDSA P-256 (keys made by `ssh-keygen`, as users make them), and erin with an Ed25519 key made here, so that the test can sign
//! requests itself (the failure cases).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use ed25519_dalek::Signer as _;
use serde_json::{Value, json};

use crate::daemon::{ADMIN, ALICE, BOB, CAROL};
use crate::procs::{Proc, free_port, spawn};

const DAVE: &str = "dddddddd-dddd-4ddd-8ddd-dddddddddddd";
pub(crate) const ERIN: &str = "eeeeeeee-eeee-4eee-8eee-eeeeeeeeeeee";

/// A user of the CLI: login, uuid, and a HOME whose `~/.ssh` holds the key.
struct User {
    login: &'static str,
    home: PathBuf,
    fingerprint: String,
    public: String,
}

fn keygen(dir: &Path, login: &'static str, args: &[&str]) -> User {
    let home = dir.join(format!("home-{login}"));
    let ssh = home.join(".ssh");
    std::fs::create_dir_all(&ssh).unwrap();
    let key = ssh.join("id_key");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-N", "", "-C", login])
        .args(args)
        .arg("-f")
        .arg(&key)
        .status()
        .expect("ssh-keygen runs (tools/prereqs installs openssh-client)");
    assert!(st.success());
    let out = Command::new("ssh-keygen")
        .args(["-l", "-E", "md5", "-f"])
        .arg(key.with_extension("pub"))
        .output()
        .unwrap();
    let line = String::from_utf8(out.stdout).unwrap();
    let fingerprint = line
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.strip_prefix("MD5:"))
        .unwrap()
        .to_string();
    let public = std::fs::read_to_string(key.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string();
    User {
        login,
        home,
        fingerprint,
        public,
    }
}

/// erin's key, made here: the test signs with it.
pub(crate) fn erin_key() -> (ed25519_dalek::SigningKey, String, String) {
    let sk = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let public = ssh_key::PublicKey::from(ssh_key::public::KeyData::Ed25519(
        ssh_key::public::Ed25519PublicKey(sk.verifying_key().to_bytes()),
    ));
    let fp = imgstore::cloudapi::auth::md5_fingerprint(&public).unwrap();
    (sk, public.to_openssh().unwrap(), fp)
}

struct Dc {
    imgapi: String,
    cloudapi: String,
    _proc: Proc,
}

/// Starts `imgstore serve` with a config; `flag_listen` passes the
/// CloudAPI address with `--cloudapi-listen` instead of the config.
fn start_dc(dir: &Path, name: &str, config: &Value, cloudapi_port: u16, flag: bool) -> Dc {
    let port = config["listen"]
        .as_str()
        .and_then(|l| l.rsplit(':').next())
        .unwrap()
        .to_string();
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(config).unwrap()).unwrap();
    let (imgapi, cloudapi) = (
        format!("http://127.0.0.1:{port}"),
        format!("http://127.0.0.1:{cloudapi_port}"),
    );
    let mut args = vec![
        "serve".to_string(),
        "--config".into(),
        path.display().to_string(),
    ];
    if flag {
        args.extend([
            "--cloudapi-listen".into(),
            format!("127.0.0.1:{cloudapi_port}"),
        ]);
    }
    let proc = spawn(
        &args,
        &[format!("{cloudapi}/--ping"), format!("{imgapi}/ping")],
    );
    Dc {
        imgapi,
        cloudapi,
        _proc: proc,
    }
}

/// One datacenter, west, with a CloudAPI face for `users`; `datacenters`
/// makes the ListDatacenters map from the face's own URL.
fn start_west(dir: &Path, datacenters: impl Fn(&str) -> Value, users: Value) -> Dc {
    let (wp, wc) = (free_port(), free_port());
    let face = format!("http://127.0.0.1:{wc}");
    start_dc(
        dir,
        "west",
        &json!({"datacenterName": "west", "adminUuid": ADMIN, "listen": format!("127.0.0.1:{wp}"),
            "dataDir": dir.join("west"), "reserveBytes": 1 << 20,
            "cloudapi": {"listen": format!("127.0.0.1:{wc}"), "datacenters": datacenters(&face),
                "users": users}}),
        wc,
        false,
    )
}

struct Triton {
    bin: PathBuf,
}

impl Triton {
    fn find() -> Triton {
        let bin =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/compat/node_modules/.bin/triton");
        assert!(
            bin.exists(),
            "the triton CLI is not installed: run tools/prereqs (npm ci in tools/compat)"
        );
        Triton { bin }
    }

    /// `triton ARGS` as `user` against `dc`: (exit status, stdout, stderr).
    fn run(&self, user: &User, dc: &Dc, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(&self.bin)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &user.home)
            .env("TRITON_URL", &dc.cloudapi)
            .env("TRITON_ACCOUNT", user.login)
            .env("TRITON_KEY_ID", &user.fingerprint)
            .output()
            .expect("node runs triton");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs and insists on success; stdout.
    fn ok(&self, user: &User, dc: &Dc, args: &[&str]) -> String {
        let (code, out, err) = self.run(user, dc, args);
        assert_eq!(code, 0, "triton {args:?} as {}: {out}\n{err}", user.login);
        out
    }

    /// `image list -j` as objects.
    fn list(&self, user: &User, dc: &Dc, extra: &[&str]) -> Vec<Value> {
        let mut args = vec!["image", "list", "-j"];
        args.extend_from_slice(extra);
        self.ok(user, dc, &args)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// `image list -a -H -o name,flags` as (name, flags), sorted by name.
    fn flags(&self, user: &User, dc: &Dc) -> Vec<(String, String)> {
        let mut rows: Vec<(String, String)> = self
            .ok(user, dc, &["image", "list", "-a", "-H", "-o", "name,flags"])
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                Some((w.next()?.to_string(), w.next().unwrap_or("-").to_string()))
            })
            .collect();
        rows.sort();
        rows
    }
}

/// An image through IMGAPI with a file of [`IMAGE_BYTES`] (seeded by its
/// name), activated when asked.
fn imgapi_image(url: &str, owner: &str, name: &str, extra: Value, activate: bool) -> String {
    crate::daemon::create_image(
        &reqwest::blocking::Client::new(),
        url,
        owner,
        name,
        extra,
        &image_file(name),
        activate,
    )
}

/// Bytes of the file of the image named `name`.
const IMAGE_BYTES: usize = 300_000;

fn image_file(name: &str) -> Vec<u8> {
    crate::common::bytes(IMAGE_BYTES, name.len() as u64)
}

fn imgapi_get(url: &str, uuid: &str) -> (u16, Value) {
    let r = reqwest::blocking::get(format!("{url}/images/{uuid}")).unwrap();
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

#[test]
fn triton_cli_lists_shares_clones_copies_and_deletes() {
    let triton = Triton::find();
    let dir = tempfile::tempdir().unwrap();
    let alice = keygen(dir.path(), "alice", &["-t", "ed25519"]);
    let bob = keygen(dir.path(), "bob", &["-t", "rsa", "-b", "2048"]);
    let carol = keygen(dir.path(), "carol", &["-t", "ecdsa", "-b", "256"]);
    // triton 7.17.0 cannot sign with P-384 keys ("SHA384 is not a supported
    // hash algorithm" from its http-signature); the daemon's P-384 check is
    // unit-tested in `cloudapi::auth`.
    let dave = keygen(dir.path(), "dave", &["-t", "ed25519"]);
    // bob's keys come from a file, as an operator would name
    // authorized_keys; the others are inline.
    std::fs::write(
        dir.path().join("bob.keys"),
        format!("# bob\n{}\n", bob.public),
    )
    .unwrap();
    let (wp, wc, ep, ec) = (free_port(), free_port(), free_port(), free_port());
    let users = json!([
        {"login": "alice", "uuid": ALICE, "keys": [alice.public]},
        {"login": "bob", "uuid": BOB, "keysFile": "bob.keys"},
        {"login": "carol", "uuid": CAROL, "keys": [carol.public]},
        {"login": "dave", "uuid": DAVE, "keys": [dave.public]},
    ]);
    let dcs =
        json!({"west": format!("http://127.0.0.1:{wc}"), "east": format!("http://127.0.0.1:{ec}")});
    let west = start_dc(
        dir.path(),
        "west",
        &json!({"datacenterName": "west", "adminUuid": ADMIN, "listen": format!("127.0.0.1:{wp}"),
            "dataDir": dir.path().join("west"), "reserveBytes": 1 << 20,
            "cloudapi": {"listen": format!("127.0.0.1:{wc}"), "datacenters": dcs, "users": users}}),
        wc,
        false,
    );
    let east = start_dc(
        dir.path(),
        "east",
        &json!({"datacenterName": "east", "adminUuid": ADMIN, "listen": format!("127.0.0.1:{ep}"),
            "dataDir": dir.path().join("east"), "reserveBytes": 1 << 20,
            "imgapiUrlFromDatacenter": {"west": format!("http://127.0.0.1:{wp}")},
            "cloudapi": {"datacenters": dcs, "users": users}}),
        ec,
        true,
    );

    // alice's images: an active base, an incremental one (I), a public
    // one (P), an unactivated one (X); a docker image CloudAPI hides.
    let base = imgapi_image(&west.imgapi, ALICE, "base", json!({}), true);
    imgapi_image(&west.imgapi, ALICE, "inc", json!({"origin": base}), true);
    imgapi_image(&west.imgapi, ALICE, "pub", json!({"public": true}), true);
    imgapi_image(&west.imgapi, ALICE, "draft", json!({}), false);
    imgapi_image(
        &west.imgapi,
        ALICE,
        "dock",
        json!({"type": "docker", "os": "linux"}),
        true,
    );

    // list: CloudAPI's translation, docker left out, state=all with -a.
    let listed = triton.list(&alice, &west, &[]);
    let names: Vec<&str> = listed.iter().filter_map(|i| i["name"].as_str()).collect();
    assert_eq!(names.len(), 3, "{listed:?}");
    for n in ["base", "inc", "pub"] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    let b = listed.iter().find(|i| i["name"] == "base").unwrap();
    assert_eq!(b["id"], base.as_str());
    assert!(b.get("uuid").is_none() && b.get("v").is_none());
    assert_eq!(b["files"][0]["size"], IMAGE_BYTES);
    assert_eq!(
        triton.flags(&alice, &west),
        vec![
            ("base".to_string(), "-".to_string()),
            ("draft".into(), "X".into()),
            ("inc".into(), "I".into()),
            ("pub".into(), "P".into()),
        ]
    );

    // get by name (resolved by the CLI among active images) and by uuid.
    let got: Value =
        serde_json::from_str(&triton.ok(&alice, &west, &["image", "get", "base"])).unwrap();
    assert_eq!(got["id"], base.as_str());
    let got: Value =
        serde_json::from_str(&triton.ok(&alice, &west, &["image", "get", &base])).unwrap();
    assert_eq!(got["name"], "base");

    // share with bob (a uuid) and carol (a login): + for alice, S for them.
    triton.ok(&alice, &west, &["image", "share", "base", BOB]);
    triton.ok(&alice, &west, &["image", "share", "base", "carol"]);
    let (_, m) = imgapi_get(&west.imgapi, &base);
    assert_eq!(m["acl"], json!([BOB, CAROL]));
    assert!(
        triton
            .flags(&alice, &west)
            .contains(&("base".into(), "+".into()))
    );
    for u in [&bob, &carol] {
        let seen = triton.flags(u, &west);
        assert!(
            seen.contains(&("base".into(), "S".into())),
            "{}: {seen:?}",
            u.login
        );
    }
    // dave sees only the public image.
    let seen = triton.flags(&dave, &west);
    assert_eq!(seen, vec![("pub".to_string(), "P".to_string())]);

    // bob clones it: his own image, and it stays his after an unshare.
    let cloned: Value =
        serde_json::from_str(&triton.ok(&bob, &west, &["image", "clone", "-j", "base"])).unwrap();
    let clone_id = cloned["id"].as_str().unwrap().to_string();
    assert_ne!(clone_id, base);
    assert_eq!(cloned["owner"], BOB);
    triton.ok(&alice, &west, &["image", "unshare", "base", BOB]);
    let (_, m) = imgapi_get(&west.imgapi, &base);
    assert_eq!(m["acl"], json!([CAROL]));
    let bobs: Vec<String> = triton
        .list(&bob, &west, &[])
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    assert!(
        bobs.contains(&clone_id) && !bobs.contains(&base),
        "{bobs:?}"
    );
    // carol may not change alice's image: IMGAPI's answer comes through.
    let (code, _, err) = triton.run(&carol, &west, &["image", "share", &base, DAVE]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("not the owner"), "{err}");
    assert_eq!(imgapi_get(&west.imgapi, &base).1["acl"], json!([CAROL]));

    // copy to east: the image and its file arrive, then wait finds it.
    triton.ok(&alice, &west, &["image", "copy", "base", "east"]);
    let (s, m) = imgapi_get(&east.imgapi, &base);
    assert_eq!(s, 200, "{m}");
    assert_eq!(m["state"], "active");
    let file = reqwest::blocking::get(format!("{}/images/{base}/file", east.imgapi))
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(file.to_vec(), image_file("base"));
    let waited = triton.ok(&alice, &east, &["image", "wait", &base]);
    assert!(waited.contains("active"), "{waited}");
    // a datacenter that does not exist is refused by the CLI itself.
    let (code, _, err) = triton.run(&alice, &west, &["image", "copy", "base", "north"]);
    assert_ne!(code, 0);
    assert!(err.contains("east") && err.contains("west"), "{err}");

    // delete: refused while an image derives from it; then gone.
    let (code, _, err) = triton.run(&alice, &west, &["image", "delete", "-f", "base"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("ImageHasDependentImages") || err.contains("depend"),
        "{err}"
    );
    triton.ok(&alice, &west, &["image", "delete", "-f", "inc"]);
    triton.ok(&alice, &west, &["image", "delete", "-f", "base"]);
    assert_eq!(imgapi_get(&west.imgapi, &base).0, 404);
    let (code, _, _) = triton.run(&alice, &west, &["image", "get", &base]);
    assert_ne!(code, 0);
    // east's copy is its own.
    assert_eq!(imgapi_get(&east.imgapi, &base).0, 200);
}

/// A request signed by the test: `sign_path` is what the signature
/// covers, `path` what is sent.
pub(crate) struct Signed<'a> {
    method: &'a str,
    sign_method: &'a str,
    path: &'a str,
    sign_path: &'a str,
    date: SystemTime,
    send_date: bool,
    key_id: String,
    headers: &'a str,
    version: &'a str,
}

impl<'a> Signed<'a> {
    /// A well-signed request.
    pub(crate) fn new(method: &'a str, path: &'a str, key_id: &str) -> Self {
        Signed {
            method,
            sign_method: method,
            path,
            sign_path: path,
            date: SystemTime::now(),
            send_date: true,
            key_id: key_id.to_string(),
            headers: "(request-target) date",
            version: "~9||~8",
        }
    }
}

pub(crate) fn send(base: &str, key: &ed25519_dalek::SigningKey, r: &Signed<'_>) -> (u16, Value) {
    let date = httpdate::fmt_http_date(r.date);
    let mut lines = Vec::new();
    for h in r.headers.split(' ') {
        match h {
            "(request-target)" => lines.push(format!(
                "(request-target): {} {}",
                r.sign_method.to_lowercase(),
                r.sign_path
            )),
            "date" => lines.push(format!("date: {date}")),
            other => panic!("{other}"),
        }
    }
    let sig = key.sign(lines.join("\n").as_bytes());
    let auth = format!(
        "Signature keyId=\"{}\",algorithm=\"ed25519-sha512\",headers=\"{}\",signature=\"{}\"",
        r.key_id,
        r.headers,
        base64::engine::general_purpose::STANDARD.encode(sig.to_bytes())
    );
    let http = reqwest::blocking::Client::new();
    let mut req = http
        .request(r.method.parse().unwrap(), format!("{base}{}", r.path))
        .header("authorization", auth)
        .header("accept-version", r.version);
    if r.send_date {
        req = req.header("date", date);
    }
    let resp = req.send().unwrap();
    (resp.status().as_u16(), resp.json().unwrap_or(Value::Null))
}

#[test]
fn bad_signatures_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let alice = keygen(dir.path(), "alice", &["-t", "ed25519"]);
    let (erin_sk, erin_pub, erin_fp) = erin_key();
    let west = start_west(
        dir.path(),
        |_| json!({}),
        json!([{"login": "alice", "uuid": ALICE, "keys": [alice.public]},
               {"login": "erin", "uuid": ERIN, "keys": [erin_pub]}]),
    );
    let keep = imgapi_image(&west.imgapi, ERIN, "keep", json!({}), true);
    let other = imgapi_image(&west.imgapi, ERIN, "other", json!({}), true);
    let del = format!("/erin/images/{keep}");
    let key_id = format!("/erin/keys/{erin_fp}");
    let good = || Signed::new("DELETE", &del, &key_id);
    let tampered = format!("/erin/images/{other}");
    let random_fp = "01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef".to_string();
    let cases: Vec<(&str, Signed<'_>)> = vec![
        (
            "unknown key",
            Signed {
                key_id: format!("/erin/keys/{random_fp}"),
                ..good()
            },
        ),
        (
            "wrong key",
            Signed {
                key_id: format!("/alice/keys/{}", alice.fingerprint),
                path: "/alice/images",
                sign_path: "/alice/images",
                method: "GET",
                sign_method: "GET",
                ..good()
            },
        ),
        (
            "unknown login",
            Signed {
                key_id: format!("/mallory/keys/{erin_fp}"),
                ..good()
            },
        ),
        (
            "old date",
            Signed {
                date: SystemTime::now() - Duration::from_secs(600),
                ..good()
            },
        ),
        (
            "future date",
            Signed {
                date: SystemTime::now() + Duration::from_secs(600),
                ..good()
            },
        ),
        (
            "tampered path",
            Signed {
                path: &tampered,
                ..good()
            },
        ),
        (
            "tampered method",
            Signed {
                sign_method: "GET",
                ..good()
            },
        ),
        (
            "missing date header",
            Signed {
                send_date: false,
                ..good()
            },
        ),
        (
            "request-target not signed",
            Signed {
                headers: "date",
                ..good()
            },
        ),
    ];
    let base = west.cloudapi.clone();
    for (what, case) in &cases {
        let (status, body) = send(&base, &erin_sk, case);
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(body["code"], "InvalidCredentials", "{what}: {body}");
    }
    // No Authorization at all, and a scheme that is not Signature.
    let http = reqwest::blocking::Client::new();
    for auth in [None, Some("Basic ZXJpbjpwYXNz")] {
        let mut req = http.delete(format!("{base}{del}"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(r.json::<Value>().unwrap()["code"], "InvalidCredentials");
    }
    // A good signature on another login's path: 403, nothing done.
    let alices = "/alice/images".to_string();
    let (s, body) = send(
        &base,
        &erin_sk,
        &Signed {
            method: "GET",
            sign_method: "GET",
            path: &alices,
            sign_path: &alices,
            ..good()
        },
    );
    assert_eq!(
        (s, body["code"].as_str()),
        (403, Some("NotAuthorized")),
        "{body}"
    );
    // Nothing was deleted.
    for u in [&keep, &other] {
        assert_eq!(imgapi_get(&west.imgapi, u).0, 200);
    }
    // The control: the same request signed properly deletes.
    let (s, body) = send(&base, &erin_sk, &good());
    assert_eq!(s, 204, "{body}");
    assert_eq!(imgapi_get(&west.imgapi, &keep).0, 404);
    assert_eq!(imgapi_get(&west.imgapi, &other).0, 200);
}

#[test]
fn cloudapi_config_refuses_bad_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.json");
    for (users, needle) in [
        (
            json!([{"login": "a", "uuid": ALICE, "keys": ["ssh-ed25519 notbase64"]}]),
            "key 1 of a",
        ),
        (
            json!([{"login": "a", "uuid": ALICE, "keysFile": "missing.keys"}]),
            "missing.keys",
        ),
        (
            json!([{"login": "a", "uuid": ALICE}, {"login": "a", "uuid": BOB}]),
            "twice",
        ),
        (
            json!([{"login": "a", "uuid": ALICE, "key": []}]),
            "unknown field",
        ),
    ] {
        std::fs::write(
            &path,
            serde_json::to_vec(&json!({"cloudapi": {"users": users}})).unwrap(),
        )
        .unwrap();
        let err = imgstore::daemon::DaemonConfig::from_file(&path)
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{needle}: {err}");
    }
}

#[test]
fn cloudapi_filters_translation_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (sk, public, fp) = erin_key();
    let west = start_west(
        dir.path(),
        |face| json!({"west": face, "gone": "http://127.0.0.1:9"}),
        json!([{"login": "erin", "uuid": ERIN, "keys": [public]}]),
    );
    let wc = west.cloudapi.rsplit(':').next().unwrap().to_string();
    let u = &west.imgapi;
    let web = imgapi_image(
        u,
        ERIN,
        "web",
        json!({"requirements": {"min_ram": 1024, "networks": [{"name": "net0", "description": "public"}]}}),
        true,
    );
    imgapi_image(
        u,
        ERIN,
        "db",
        json!({"os": "linux", "type": "zvol", "version": "2.0", "nic_driver": "virtio", "disk_driver": "virtio", "cpu_type": "host", "image_size": 10240}),
        true,
    );
    imgapi_image(
        u,
        ERIN,
        "ctr",
        json!({"os": "linux", "type": "docker"}),
        true,
    );
    imgapi_image(u, ERIN, "wip", json!({}), false);
    imgapi_image(u, ALICE, "shared", json!({"public": true}), true);
    imgapi_image(u, ALICE, "private", json!({}), true);
    let key_id = format!("/erin/keys/{fp}");
    let base = west.cloudapi.clone();
    let names = |path: &str| -> Vec<String> {
        let (s, body) = send(&base, &sk, &Signed::new("GET", path, &key_id));
        assert_eq!(s, 200, "{path}: {body}");
        let mut n: Vec<String> = body
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_string())
            .collect();
        n.sort();
        n
    };
    // Docker images are left out unless asked for; others' public ones
    // are listed, their private ones never.
    assert_eq!(names("/erin/images"), ["db", "shared", "web"]);
    assert_eq!(
        names("/erin/images?state=all"),
        ["db", "shared", "web", "wip"]
    );
    assert_eq!(names("/erin/images?type=docker"), ["ctr"]);
    assert_eq!(names("/erin/images?os=linux"), ["db"]);
    assert_eq!(names("/erin/images?name=web"), ["web"]);
    assert_eq!(names("/erin/images?version=2.0"), ["db"]);
    assert_eq!(names("/erin/images?public=true"), ["shared"]);
    assert_eq!(names("/erin/images?public=false"), ["db", "web"]);
    assert_eq!(names(&format!("/erin/images?owner={ALICE}")), ["shared"]);
    assert_eq!(names("/erin/images?state=unactivated"), ["wip"]);

    // GetImage: the translation; HEAD answers without a body.
    let path = format!("/erin/images/{web}");
    let (s, img) = send(&base, &sk, &Signed::new("GET", &path, &key_id));
    assert_eq!(s, 200);
    assert_eq!(img["id"], web.as_str());
    assert_eq!(
        img["requirements"],
        json!({"min_memory": 1024, "min_ram": 1024})
    );
    assert_eq!(img["files"][0]["size"], IMAGE_BYTES);
    assert!(img["files"][0].get("stor").is_none() && img.get("v").is_none());
    let (s, _) = send(&base, &sk, &Signed::new("HEAD", &path, &key_id));
    assert_eq!(s, 200);
    let (s, _) = send(&base, &sk, &Signed::new("HEAD", "/erin/images", &key_id));
    assert_eq!(s, 200);

    // The account, the datacenters, the ping, and the header every answer carries.
    let (s, acct) = send(&base, &sk, &Signed::new("GET", "/erin", &key_id));
    assert_eq!((s, acct["id"].as_str()), (200, Some(ERIN)));
    let (s, dcs) = send(
        &base,
        &sk,
        &Signed::new("GET", "/erin/datacenters", &key_id),
    );
    assert_eq!(s, 200);
    assert_eq!(dcs["west"], format!("http://127.0.0.1:{wc}"));
    let ping = reqwest::blocking::get(format!("{base}/--ping")).unwrap();
    assert_eq!(ping.headers()["triton-datacenter-name"], "west");

    // Errors, each with CloudAPI's (or IMGAPI's) code.
    let private = names(&format!("/erin/images?owner={ALICE}&state=all"));
    assert_eq!(private, ["shared"]);
    let cases: Vec<(String, &str, u16, &str)> = vec![
        (
            format!("/erin/images/{web}?action=frobnicate"),
            "POST",
            409,
            "InvalidArgument",
        ),
        (
            format!("/erin/images/{web}"),
            "POST",
            409,
            "MissingParameter",
        ),
        (
            format!("/erin/images/{web}?action=export"),
            "POST",
            501,
            "NotAvailable",
        ),
        ("/erin/images".into(), "POST", 501, "NotAvailable"),
        (
            "/erin/images?action=import-from-datacenter&id=x".into(),
            "POST",
            409,
            "MissingParameter",
        ),
        (
            "/erin/images?action=import-from-datacenter&datacenter=west&id=nope".into(),
            "POST",
            409,
            "InvalidArgument",
        ),
        (
            "/erin/images/not-a-uuid".into(),
            "GET",
            404,
            "ResourceNotFound",
        ),
        (
            format!("/erin/images/{}", uuid_like(9)),
            "GET",
            404,
            "ResourceNotFound",
        ),
        ("/erin/machines".into(), "GET", 404, "ResourceNotFound"),
        (
            "/erin/images?state=bogus".into(),
            "GET",
            422,
            "InvalidParameter",
        ),
    ];
    for (path, method, status, code) in &cases {
        let (s, body) = send(&base, &sk, &Signed::new(method, path, &key_id));
        assert_eq!(
            (s, body["code"].as_str()),
            (*status, Some(*code)),
            "{method} {path}: {body}"
        );
    }
    // Another account's private image is not found, and cannot be cloned.
    let others = format!(
        "/erin/images/{}",
        imgapi_image(u, ALICE, "p2", json!({}), true)
    );
    let (s, body) = send(&base, &sk, &Signed::new("GET", &others, &key_id));
    assert_eq!(
        (s, body["code"].as_str()),
        (404, Some("ResourceNotFound")),
        "{body}"
    );
    // A copy from a datacenter IMGAPI has no URL for is refused, naming it.
    let import = format!("/erin/images?action=import-from-datacenter&datacenter=gone&id={web}");
    let (s, body) = send(&base, &sk, &Signed::new("POST", &import, &key_id));
    assert_eq!(
        (s, body["code"].as_str()),
        (422, Some("ValidationFailed")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("\"gone\"")),
        "{body}"
    );
    // An API version this face does not speak.
    let (s, body) = send(
        &base,
        &sk,
        &Signed {
            version: "~7",
            ..Signed::new("GET", "/erin/images", &key_id)
        },
    );
    assert_eq!(
        (s, body["code"].as_str()),
        (400, Some("InvalidVersion")),
        "{body}"
    );
}

fn uuid_like(n: u8) -> String {
    format!("{:08x}-0000-4000-8000-000000000000", n)
}
