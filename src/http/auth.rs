//! HTTP Signature authentication, one implementation for both faces: the
//! CloudAPI face (every request) and the IMGAPI port with `"authType":
//! "signature"`. As CloudAPI checks it and as Joyent's `http-signature` /
//! `smartdc-auth` (what the `triton` CLI uses) signs:
//!
//! ```text
//! Authorization: Signature keyId="/LOGIN/keys/MD5-FINGERPRINT",
//!   algorithm="ed25519-sha512",headers="(request-target) date",signature="BASE64"
//! ```
//!
//! The signing string is one `name: value` line per name of `headers`, in
//! that order, joined by `\n`; `(request-target)` is the lower-case method,
//! a space and the path with its query exactly as sent. The key is found
//! by the login and fingerprint of `keyId` among the configured users'
//! public keys; `algorithm` must be the key's own (`rsa-sha256` or
//! `rsa-sha512`, `ecdsa-sha256` for P-256, `ecdsa-sha384` for P-384,
//! `ed25519-sha512`).
//!
//! On the CloudAPI face, stricter than upstream on purpose
//! ([`Scheme::Strict`]): the signed headers must include
//! `(request-target)` as well as `date`. A signature over the date alone
//! (which old clients sent and CloudAPI accepted) could be replayed against
//! any path for the five minutes of allowed clock skew; `triton` signs both.
//! The IMGAPI port also takes what upstream IMGAPI takes
//! ([`Scheme::Imgapi`]), because `sdc-clients` signs that way: `keyId` is
//! the bare login (any of its keys may have signed) and only `date` is
//! signed. Such a signature is good for any request within the skew, so
//! that port belongs behind TLS; imgstore's own client signs both headers
//! with a `/LOGIN/keys/FINGERPRINT` key id.
//!
//! The signature checks are the RustCrypto crates' (`rsa` PKCS#1 v1.5,
//! `p256`/`p384` ECDSA, `ed25519-dalek` strict verification); none of them
//! compares secret-dependent bytes in variable time, and nothing here
//! compares a signature bytewise. Every failure is one
//! [`AuthError`]: the request is answered 401 `InvalidCredentials` before
//! any handler runs.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, Method};
use base64::Engine as _;
use md5::{Digest, Md5};
use ssh_key::public::{EcdsaPublicKey, KeyData};
use uuid::Uuid;

/// Largest difference between the request's `Date` and the server's clock.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);

/// Why a request is not authenticated (the message the client reads).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AuthError(pub String);

fn fail<T>(message: impl Into<String>) -> Result<T, AuthError> {
    Err(AuthError(message.into()))
}

/// A public key that can check signatures.
enum Verifier {
    Rsa(rsa::RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl Verifier {
    fn from_ssh(key: &ssh_key::PublicKey) -> Result<Self, String> {
        let bad = |e: ssh_key::Error| format!("unusable {} key: {e}", key.algorithm());
        match key.key_data() {
            KeyData::Rsa(k) => Ok(Verifier::Rsa(rsa::RsaPublicKey::try_from(k).map_err(bad)?)),
            KeyData::Ecdsa(k @ EcdsaPublicKey::NistP256(_)) => Ok(Verifier::P256(
                p256::ecdsa::VerifyingKey::try_from(k).map_err(bad)?,
            )),
            KeyData::Ecdsa(k @ EcdsaPublicKey::NistP384(_)) => Ok(Verifier::P384(
                p384::ecdsa::VerifyingKey::try_from(k).map_err(bad)?,
            )),
            KeyData::Ed25519(k) => Ok(Verifier::Ed25519(
                ed25519_dalek::VerifyingKey::try_from(k).map_err(bad)?,
            )),
            _ => Err(format!(
                "{} keys are not supported (RSA, ECDSA P-256 and P-384, and Ed25519 are)",
                key.algorithm()
            )),
        }
    }

    /// The `algorithm` names this key signs with.
    fn algorithms(&self) -> &'static [&'static str] {
        match self {
            Verifier::Rsa(_) => &["rsa-sha256", "rsa-sha512"],
            Verifier::P256(_) => &["ecdsa-sha256"],
            Verifier::P384(_) => &["ecdsa-sha384"],
            Verifier::Ed25519(_) => &["ed25519-sha512"],
        }
    }

    /// True when `sig` is this key's signature of `msg` with `algorithm`.
    fn verify(&self, algorithm: &str, msg: &[u8], sig: &[u8]) -> bool {
        use rsa::signature::Verifier as _;
        match (self, algorithm) {
            (Verifier::Rsa(k), "rsa-sha256") => {
                let vk = rsa::pkcs1v15::VerifyingKey::<rsa::sha2::Sha256>::new(k.clone());
                rsa::pkcs1v15::Signature::try_from(sig).is_ok_and(|s| vk.verify(msg, &s).is_ok())
            }
            (Verifier::Rsa(k), "rsa-sha512") => {
                let vk = rsa::pkcs1v15::VerifyingKey::<rsa::sha2::Sha512>::new(k.clone());
                rsa::pkcs1v15::Signature::try_from(sig).is_ok_and(|s| vk.verify(msg, &s).is_ok())
            }
            // sshpk sends ECDSA signatures as ASN.1 DER; r || s is accepted too.
            (Verifier::P256(k), "ecdsa-sha256") => p256::ecdsa::Signature::from_der(sig)
                .or_else(|_| p256::ecdsa::Signature::from_slice(sig))
                .is_ok_and(|s| k.verify(msg, &s).is_ok()),
            (Verifier::P384(k), "ecdsa-sha384") => p384::ecdsa::Signature::from_der(sig)
                .or_else(|_| p384::ecdsa::Signature::from_slice(sig))
                .is_ok_and(|s| k.verify(msg, &s).is_ok()),
            (Verifier::Ed25519(k), "ed25519-sha512") => ed25519_dalek::Signature::from_slice(sig)
                .is_ok_and(|s| k.verify_strict(msg, &s).is_ok()),
            _ => false,
        }
    }
}

/// The MD5 fingerprint of an SSH public key as `keyId` carries it:
/// colon-separated lower-case hex of the MD5 of the key's wire encoding.
pub fn md5_fingerprint(key: &ssh_key::PublicKey) -> Result<String, String> {
    let blob = key
        .to_bytes()
        .map_err(|e| format!("encoding the key: {e}"))?;
    let digest = Md5::digest(&blob);
    Ok(digest
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":"))
}

/// What a face requires of a signature beyond its checking out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// The CloudAPI face: `keyId` is `/LOGIN/keys/FINGERPRINT`, and both
    /// `(request-target)` and `date` are signed.
    Strict,
    /// The IMGAPI port: also upstream IMGAPI's form, a bare login as
    /// `keyId` (any of its keys) and `date` alone signed.
    Imgapi,
}

/// An account that may sign requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub login: String,
    pub uuid: Uuid,
}

/// The configured accounts and their keys.
#[derive(Default)]
pub struct KeyRing {
    accounts: HashMap<String, Uuid>,
    /// (login, fingerprint) to the key.
    keys: HashMap<(String, String), Verifier>,
}

impl KeyRing {
    /// Adds an account with its public keys (OpenSSH `authorized_keys`
    /// lines). A key that does not parse, or of an unsupported type, is an
    /// error naming it: a daemon must not start with a key it ignores.
    pub fn add(&mut self, login: &str, uuid: Uuid, keys: &[String]) -> Result<(), String> {
        if !valid_login(login) {
            return Err(format!(
                "login {login:?} is not a valid login (a letter, then letters, digits, '_', '.', '@' or '-')"
            ));
        }
        if self.accounts.insert(login.to_string(), uuid).is_some() {
            return Err(format!("login {login:?} is configured twice"));
        }
        for (i, line) in keys.iter().enumerate() {
            let what = |e: String| format!("key {} of {login}: {e}", i + 1);
            let key = ssh_key::PublicKey::from_openssh(line.trim())
                .map_err(|e| what(format!("not an OpenSSH public key ({e})")))?;
            let verifier = Verifier::from_ssh(&key).map_err(what)?;
            let fp = md5_fingerprint(&key).map_err(what)?;
            self.keys.insert((login.to_string(), fp), verifier);
        }
        Ok(())
    }

    /// How many logins have keys.
    pub fn logins(&self) -> usize {
        self.accounts.len()
    }

    /// True when no account is configured.
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }

    /// The account of `login`.
    pub fn account(&self, login: &str) -> Option<Principal> {
        self.accounts.get(login).map(|u| Principal {
            login: login.to_string(),
            uuid: *u,
        })
    }

    /// Checks the request's signature; the account that signed it.
    pub fn authenticate(
        &self,
        method: &Method,
        target: &str,
        headers: &HeaderMap,
        now: SystemTime,
    ) -> Result<Principal, AuthError> {
        self.authenticate_as(Scheme::Strict, method, target, headers, now)
    }

    /// [`authenticate`](Self::authenticate) under `scheme`.
    pub fn authenticate_as(
        &self,
        scheme: Scheme,
        method: &Method,
        target: &str,
        headers: &HeaderMap,
        now: SystemTime,
    ) -> Result<Principal, AuthError> {
        let Some(raw) = headers.get("authorization") else {
            return fail("missing Authorization header");
        };
        let Ok(raw) = raw.to_str() else {
            return fail("Authorization header is not ASCII");
        };
        let params = parse_authorization(raw)?;
        let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let (Some(key_id), Some(signature)) = (param("keyId"), param("signature")) else {
            return fail("the Signature must have keyId and signature");
        };
        let algorithm = param("algorithm").unwrap_or_default().to_ascii_lowercase();
        let signed: Vec<String> = param("headers")
            .unwrap_or("date")
            .split_ascii_whitespace()
            .map(str::to_ascii_lowercase)
            .collect();
        if scheme == Scheme::Strict && !signed.iter().any(|h| h == "(request-target)") {
            return fail("the signed headers must include (request-target)");
        }
        let date_header = ["date", "x-date"]
            .into_iter()
            .find(|h| signed.iter().any(|s| s == h));
        let Some(date_header) = date_header else {
            return fail("the signed headers must include date");
        };
        check_date(headers, date_header, now)?;

        let (login, fingerprint) = match scheme {
            Scheme::Imgapi if valid_login(key_id) => (key_id, None),
            _ => {
                let (login, fp) = parse_key_id(key_id)?;
                (login, Some(fp))
            }
        };
        // One answer for an unknown login, an unknown key and a known key
        // named with another algorithm: someone holding a public key
        // learns nothing about which login it belongs to, or whether it
        // is one.
        let keys: Vec<&Verifier> = match &fingerprint {
            Some(fp) => self
                .keys
                .get(&(login.to_string(), fp.clone()))
                .into_iter()
                .collect(),
            // Upstream's bare login: any of its keys (a scan; the IMGAPI
            // port has a few operators' keys).
            None => self
                .keys
                .iter()
                .filter(|((l, _), _)| l == login)
                .map(|(_, key)| key)
                .collect(),
        };
        let keys: Vec<&Verifier> = keys
            .into_iter()
            .filter(|key| key.algorithms().contains(&algorithm.as_str()))
            .collect();
        let principal = self.account(login).filter(|_| !keys.is_empty());
        let Some(principal) = principal else {
            return fail(format!("no such key {key_id}"));
        };
        let message = signing_string(&signed, method, target, headers)?;
        let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(signature) else {
            return fail("the signature is not base64");
        };
        if !keys
            .iter()
            .any(|key| key.verify(&algorithm, message.as_bytes(), &sig))
        {
            return fail("the signature does not match the request");
        }
        Ok(principal)
    }
}

/// `Signature k="v",k="v"` as (name, value) pairs. Values are quoted
/// strings (a backslash escapes the next character) or bare tokens.
fn parse_authorization(raw: &str) -> Result<Vec<(String, String)>, AuthError> {
    let rest = match raw.trim().split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("signature") => rest,
        _ => return fail("the Authorization scheme must be Signature"),
    };
    let mut pairs = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        let name = name.trim().to_string();
        if name.is_empty() || name.contains([',', ' ']) {
            return fail("malformed Signature parameters");
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return fail("malformed Signature parameters: an unclosed quote");
            }
        } else {
            while let Some(c) = chars.peek().copied().filter(|c| *c != ',') {
                value.push(c);
                chars.next();
            }
            value = value.trim().to_string();
        }
        if pairs.iter().any(|(n, _): &(String, String)| *n == name) {
            return fail(format!("Signature parameter {name} given twice"));
        }
        pairs.push((name, value));
    }
    Ok(pairs)
}

/// A login as CloudAPI allows them: a letter, then letters, digits and
/// `_ . @ -` (nothing a path would need to escape).
fn valid_login(login: &str) -> bool {
    let mut chars = login.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.@-".contains(c))
}

/// `/LOGIN/keys/FINGERPRINT` as (login, lower-case fingerprint without an
/// `MD5:` prefix). Sub-user keys (`/LOGIN/users/USER/keys/FP`) are not
/// served here.
fn parse_key_id(key_id: &str) -> Result<(&str, String), AuthError> {
    let parts: Vec<&str> = key_id.split('/').collect();
    match parts.as_slice() {
        ["", login, "keys", fp] if !login.is_empty() && !fp.is_empty() => {
            let fp = fp.strip_prefix("MD5:").unwrap_or(fp);
            Ok((login, fp.to_ascii_lowercase()))
        }
        ["", _, "users", _, "keys", _] => fail("sub-user keys are not supported"),
        _ => fail(format!(
            "keyId {key_id:?} is not of the form /LOGIN/keys/FINGERPRINT"
        )),
    }
}

/// The signed date is within [`MAX_CLOCK_SKEW`] of `now` (either way:
/// a signature is good for at most twice that).
fn check_date(headers: &HeaderMap, name: &str, now: SystemTime) -> Result<(), AuthError> {
    let value = single_value(headers, name)?;
    let Ok(date) = httpdate::parse_http_date(value) else {
        return fail(format!("{name} header {value:?} is not an HTTP date"));
    };
    let skew = now
        .duration_since(date)
        .or_else(|_| date.duration_since(now))
        .unwrap_or(Duration::MAX);
    if skew > MAX_CLOCK_SKEW {
        return fail(format!(
            "{name} header {value:?} is {} s from the server's clock (at most {} s allowed)",
            skew.as_secs(),
            MAX_CLOCK_SKEW.as_secs()
        ));
    }
    Ok(())
}

/// The string the client signed: one `name: value` line per signed header.
fn signing_string(
    signed: &[String],
    method: &Method,
    target: &str,
    headers: &HeaderMap,
) -> Result<String, AuthError> {
    let mut lines = Vec::with_capacity(signed.len());
    for name in signed {
        if name == "(request-target)" {
            lines.push(format!(
                "(request-target): {} {target}",
                method.as_str().to_ascii_lowercase()
            ));
            continue;
        }
        lines.push(format!("{name}: {}", single_value(headers, name)?.trim()));
    }
    Ok(lines.join("\n"))
}

/// The one value of a signed header: absent, repeated or not ASCII is
/// refused, so that what the checks read is exactly what was signed.
fn single_value<'h>(headers: &'h HeaderMap, name: &str) -> Result<&'h str, AuthError> {
    let mut all = headers.get_all(name).iter();
    let (Some(v), None) = (all.next(), all.next()) else {
        return fail(format!("signed header {name} must appear exactly once"));
    };
    v.to_str()
        .map_err(|_| AuthError(format!("signed header {name} is not ASCII")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_parameters_parse() {
        let p = parse_authorization(
            r#"Signature keyId="/alice/keys/aa:bb",algorithm="rsa-sha256", headers="(request-target) date",signature="ab\"c""#,
        )
        .unwrap();
        assert_eq!(p[0], ("keyId".into(), "/alice/keys/aa:bb".into()));
        assert_eq!(p[2].1, "(request-target) date");
        assert_eq!(p[3].1, "ab\"c");
        for bad in [
            "Basic abc",
            r#"Signature keyId="/a/keys/b"#,
            r#"Signature keyId="a",keyId="b""#,
            "Signature =x",
        ] {
            assert!(parse_authorization(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_ids() {
        assert_eq!(
            parse_key_id("/alice/keys/a1:b2").unwrap(),
            ("alice", "a1:b2".to_string())
        );
        assert_eq!(
            parse_key_id("/alice/keys/MD5:A1:B2").unwrap(),
            ("alice", "a1:b2".to_string())
        );
        for ok in ["alice", "a.b@c-d_1"] {
            assert!(valid_login(ok), "{ok}");
        }
        for bad in ["", "1abc", "a b", "a/b", "a%2f", "é"] {
            assert!(!valid_login(bad), "{bad}");
        }
        for bad in [
            "alice/keys/x",
            "/alice/keys/",
            "//keys/x",
            "/a/users/b/keys/c",
            "/a/b/c",
        ] {
            assert!(parse_key_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn md5_fingerprint_is_openssh_s() {
        // `ssh-keygen -l -E md5 -f` of this key prints
        // MD5:30:ff:71:d2:aa:65:30:26:f4:22:ce:2d:59:80:8a:ba.
        let key = ssh_key::PublicKey::from_openssh(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIML+MNklc5bQJcfCi16g4WNFGXzWrwBPOLkowmxAq603 test",
        )
        .unwrap();
        assert_eq!(
            md5_fingerprint(&key).unwrap(),
            "30:ff:71:d2:aa:65:30:26:f4:22:ce:2d:59:80:8a:ba"
        );
    }

    /// A key ring with one key for `login`, and a request signed for it.
    fn signed_request(
        key: KeyData,
        algorithm: &str,
        sign: impl Fn(&[u8]) -> Vec<u8>,
    ) -> (KeyRing, HeaderMap) {
        let public = ssh_key::PublicKey::from(key);
        let mut ring = KeyRing::default();
        let uuid = Uuid::from_u128(7);
        ring.add("kim", uuid, &[public.to_openssh().unwrap()])
            .unwrap();
        let date = httpdate::fmt_http_date(SystemTime::now());
        let msg = format!("(request-target): get /kim/images?state=all\ndate: {date}");
        let sig = base64::engine::general_purpose::STANDARD.encode(sign(msg.as_bytes()));
        let fp = md5_fingerprint(&public).unwrap();
        let mut h = HeaderMap::new();
        h.insert("date", date.parse().unwrap());
        h.insert(
            "authorization",
            format!(
                "Signature keyId=\"/kim/keys/{fp}\",algorithm=\"{algorithm}\",\
                 headers=\"(request-target) date\",signature=\"{sig}\""
            )
            .parse()
            .unwrap(),
        );
        (ring, h)
    }

    fn check(ring: &KeyRing, h: &HeaderMap, target: &str) -> Result<Principal, AuthError> {
        ring.authenticate(&Method::GET, target, h, SystemTime::now())
    }

    #[test]
    fn ecdsa_and_ed25519_signatures_verify_and_tampering_fails() {
        use p256::ecdsa::signature::Signer as _;
        let p256 = p256::ecdsa::SigningKey::from_slice(&[3u8; 32]).unwrap();
        let p384 = p384::ecdsa::SigningKey::from_slice(&[5u8; 48]).unwrap();
        let ed = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
        type Sign = Box<dyn Fn(&[u8]) -> Vec<u8>>;
        let cases: Vec<(&str, KeyData, Sign)> = vec![
            (
                "ecdsa-sha256",
                KeyData::Ecdsa(EcdsaPublicKey::from(p256.verifying_key())),
                Box::new(move |m| {
                    let s: p256::ecdsa::Signature = p256.sign(m);
                    s.to_der().as_bytes().to_vec()
                }),
            ),
            (
                "ecdsa-sha384",
                KeyData::Ecdsa(EcdsaPublicKey::from(p384.verifying_key())),
                Box::new(move |m| {
                    let s: p384::ecdsa::Signature = p384.sign(m);
                    s.to_der().as_bytes().to_vec()
                }),
            ),
            (
                "ed25519-sha512",
                KeyData::Ed25519(ssh_key::public::Ed25519PublicKey(
                    ed.verifying_key().to_bytes(),
                )),
                Box::new(move |m| ed.sign(m).to_bytes().to_vec()),
            ),
        ];
        for (alg, key, sign) in cases {
            let (ring, h) = signed_request(key, alg, sign);
            let who = check(&ring, &h, "/kim/images?state=all").unwrap();
            assert_eq!(who.login, "kim", "{alg}");
            assert!(
                check(&ring, &h, "/kim/images?state=active").is_err(),
                "{alg}"
            );
            // The same signature under another algorithm name.
            let other = h
                .get("authorization")
                .unwrap()
                .to_str()
                .unwrap()
                .replace(alg, "rsa-sha256");
            let mut h2 = h.clone();
            h2.insert("authorization", other.parse().unwrap());
            let err = check(&ring, &h2, "/kim/images?state=all").unwrap_err();
            // Answered as an unknown key is: nothing tells the key is known.
            let fp = parse_key_id(
                &parse_authorization(h2.get("authorization").unwrap().to_str().unwrap()).unwrap()
                    [0]
                .1,
            )
            .unwrap()
            .1;
            assert_eq!(err.0, format!("no such key /kim/keys/{fp}"), "{alg}");
        }
    }

    #[test]
    fn dates_outside_the_skew_are_refused() {
        let now = SystemTime::now();
        let mut h = HeaderMap::new();
        let at = |t: SystemTime| httpdate::fmt_http_date(t).parse().unwrap();
        h.insert("date", at(now - Duration::from_secs(290)));
        assert!(check_date(&h, "date", now).is_ok());
        h.insert("date", at(now + Duration::from_secs(290)));
        assert!(check_date(&h, "date", now).is_ok());
        h.insert("date", at(now - Duration::from_secs(310)));
        assert!(check_date(&h, "date", now).is_err());
        h.insert("date", "yesterday".parse().unwrap());
        assert!(check_date(&h, "date", now).is_err());
        // Two dates: which one was signed is ambiguous.
        h.insert("date", at(now));
        h.append("date", at(now));
        assert!(check_date(&h, "date", now).is_err());
        assert!(check_date(&HeaderMap::new(), "date", now).is_err());
    }
}
