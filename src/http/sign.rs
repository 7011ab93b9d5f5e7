//! Signing requests as a client: what [`auth`](super::auth) checks. The
//! client (and a daemon copying from another datacenter) signs
//! `(request-target)` and `date` under `keyId="/LOGIN/keys/FINGERPRINT"`,
//! as `triton` does, with a private key from a file or from ssh-agent
//! (`SSH_AUTH_SOCK`), found by its MD5 fingerprint.
//!
//! Keys: Ed25519 (`ed25519-sha512`), RSA (`rsa-sha256`), ECDSA P-256
//! (`ecdsa-sha256`) and P-384 (`ecdsa-sha384`), ECDSA signatures as ASN.1
//! DER as `http-signature` sends them. Encrypted key files are not read:
//! load such a key into ssh-agent.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ssh_key::private::KeypairData;

use super::auth::md5_fingerprint;

/// Why a signer could not be made or could not sign.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SignError(pub String);

fn fail<T>(m: impl Into<String>) -> Result<T, SignError> {
    Err(SignError(m.into()))
}

/// How the signature is made.
enum Key {
    Ed25519(ed25519_dalek::SigningKey),
    Rsa(Box<rsa::pkcs1v15::SigningKey<rsa::sha2::Sha256>>),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    /// A key held by ssh-agent: its public blob and algorithm.
    Agent {
        socket: PathBuf,
        blob: Vec<u8>,
        algorithm: &'static str,
    },
}

/// Signs requests as one login with one key.
pub struct Signer {
    login: String,
    /// MD5 fingerprint, colon-separated lower-case hex.
    fingerprint: String,
    key: Key,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("login", &self.login)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// A fingerprint as `ssh-keygen -l -E md5` prints it or as `triton` takes
/// it: `MD5:` prefix optional, any case.
fn normal_fingerprint(fp: &str) -> String {
    fp.strip_prefix("MD5:").unwrap_or(fp).to_ascii_lowercase()
}

impl Signer {
    /// A signer with the unencrypted OpenSSH private key in `path`.
    pub fn from_key_file(login: &str, path: &Path) -> Result<Self, SignError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SignError(format!("reading {}: {e}", path.display())))?;
        let key = ssh_key::PrivateKey::from_openssh(&text).map_err(|e| {
            SignError(format!(
                "{}: not an OpenSSH private key ({e})",
                path.display()
            ))
        })?;
        if key.is_encrypted() {
            return fail(format!(
                "{} is encrypted: load it into ssh-agent instead",
                path.display()
            ));
        }
        let fingerprint = md5_fingerprint(key.public_key()).map_err(SignError)?;
        let bad = |e: ssh_key::Error| SignError(format!("{}: {e}", path.display()));
        let key = match key.key_data() {
            KeypairData::Ed25519(k) => {
                Key::Ed25519(ed25519_dalek::SigningKey::from_bytes(&k.private.to_bytes()))
            }
            KeypairData::Rsa(k) => {
                let private = rsa::RsaPrivateKey::try_from(k).map_err(bad)?;
                Key::Rsa(Box::new(rsa::pkcs1v15::SigningKey::new(private)))
            }
            KeypairData::Ecdsa(ssh_key::private::EcdsaKeypair::NistP256 { private, .. }) => {
                Key::P256(
                    p256::ecdsa::SigningKey::from_slice(private.as_slice())
                        .map_err(|e| SignError(format!("{}: {e}", path.display())))?,
                )
            }
            KeypairData::Ecdsa(ssh_key::private::EcdsaKeypair::NistP384 { private, .. }) => {
                Key::P384(
                    p384::ecdsa::SigningKey::from_slice(private.as_slice())
                        .map_err(|e| SignError(format!("{}: {e}", path.display())))?,
                )
            }
            _ => {
                return fail(format!(
                    "{}: {} keys cannot sign here",
                    path.display(),
                    key.algorithm()
                ));
            }
        };
        Ok(Signer {
            login: login.to_string(),
            fingerprint,
            key,
        })
    }

    /// A signer with the key of fingerprint `fingerprint`: from ssh-agent
    /// when `SSH_AUTH_SOCK` names one that holds it, else the private key
    /// in `~/.ssh` whose public key has that fingerprint (as `triton`
    /// finds keys).
    pub fn find(login: &str, fingerprint: &str) -> Result<Self, SignError> {
        let want = normal_fingerprint(fingerprint);
        if let Some(sock) = std::env::var_os("SSH_AUTH_SOCK").filter(|s| !s.is_empty())
            && let Ok(Some(s)) = Self::from_agent(login, &want, Path::new(&sock))
        {
            return Ok(s);
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .ok_or_else(|| SignError("HOME is unset: no ~/.ssh to look in".into()))?;
        let dir = home.join(".ssh");
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| SignError(format!("reading {}: {e}", dir.display())))?;
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "pub") {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(path.with_extension("pub")) else {
                continue;
            };
            let Ok(public) = ssh_key::PublicKey::from_openssh(text.trim()) else {
                continue;
            };
            if md5_fingerprint(&public).is_ok_and(|fp| fp == want) {
                return Self::from_key_file(login, &path);
            }
        }
        fail(format!(
            "no key with fingerprint {fingerprint} in ssh-agent or {}",
            dir.display()
        ))
    }

    /// The agent's key of fingerprint `want`, if it holds one.
    fn from_agent(login: &str, want: &str, socket: &Path) -> Result<Option<Self>, SignError> {
        for (blob, _) in agent::identities(socket)? {
            let Ok(public) = ssh_key::PublicKey::from_bytes(&blob) else {
                continue;
            };
            if md5_fingerprint(&public).ok().as_deref() != Some(want) {
                continue;
            }
            let algorithm = match public.key_data() {
                ssh_key::public::KeyData::Ed25519(_) => "ed25519-sha512",
                ssh_key::public::KeyData::Rsa(_) => "rsa-sha256",
                ssh_key::public::KeyData::Ecdsa(ssh_key::public::EcdsaPublicKey::NistP256(_)) => {
                    "ecdsa-sha256"
                }
                ssh_key::public::KeyData::Ecdsa(ssh_key::public::EcdsaPublicKey::NistP384(_)) => {
                    "ecdsa-sha384"
                }
                _ => return fail(format!("ssh-agent's key {want} cannot sign here")),
            };
            return Ok(Some(Signer {
                login: login.to_string(),
                fingerprint: want.to_string(),
                key: Key::Agent {
                    socket: socket.to_path_buf(),
                    blob,
                    algorithm,
                },
            }));
        }
        Ok(None)
    }

    /// The login this signer signs as.
    pub fn login(&self) -> &str {
        &self.login
    }

    /// The `Authorization` header for a request of `method` to `target`
    /// (path and query as sent) with the `date` header `date`.
    pub fn authorization(
        &self,
        method: &str,
        target: &str,
        date: &str,
    ) -> Result<String, SignError> {
        let message = format!(
            "(request-target): {} {target}\ndate: {date}",
            method.to_ascii_lowercase()
        );
        let (algorithm, sig) = self.sign(message.as_bytes())?;
        Ok(format!(
            "Signature keyId=\"/{}/keys/{}\",algorithm=\"{algorithm}\",headers=\"(request-target) date\",signature=\"{}\"",
            self.login,
            self.fingerprint,
            base64::engine::general_purpose::STANDARD.encode(sig)
        ))
    }

    fn sign(&self, msg: &[u8]) -> Result<(&'static str, Vec<u8>), SignError> {
        use rsa::signature::{SignatureEncoding as _, Signer as _};
        Ok(match &self.key {
            Key::Ed25519(k) => ("ed25519-sha512", k.sign(msg).to_bytes().to_vec()),
            Key::Rsa(k) => ("rsa-sha256", k.sign(msg).to_vec()),
            Key::P256(k) => {
                let s: p256::ecdsa::Signature = k.sign(msg);
                ("ecdsa-sha256", s.to_der().as_bytes().to_vec())
            }
            Key::P384(k) => {
                let s: p384::ecdsa::Signature = k.sign(msg);
                ("ecdsa-sha384", s.to_der().as_bytes().to_vec())
            }
            Key::Agent {
                socket,
                blob,
                algorithm,
            } => (algorithm, agent::sign(socket, blob, msg, algorithm)?),
        })
    }
}

/// The few messages of the ssh-agent protocol a signer needs
/// (draft-miller-ssh-agent): list the identities, sign with one.
mod agent {
    use super::*;

    const REQUEST_IDENTITIES: u8 = 11;
    const IDENTITIES_ANSWER: u8 = 12;
    const SIGN_REQUEST: u8 = 13;
    const SIGN_RESPONSE: u8 = 14;
    /// Flag of a sign request: an RSA signature with SHA-256.
    const RSA_SHA2_256: u32 = 2;

    fn put_string(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(&(s.len() as u32).to_be_bytes());
        out.extend_from_slice(s);
    }

    /// A message's body, read from a cursor.
    struct Reader<'a>(&'a [u8]);

    impl<'a> Reader<'a> {
        fn u32(&mut self) -> Result<u32, SignError> {
            let (head, rest) = self
                .0
                .split_first_chunk::<4>()
                .ok_or_else(|| SignError("ssh-agent: a short answer".into()))?;
            self.0 = rest;
            Ok(u32::from_be_bytes(*head))
        }
        fn string(&mut self) -> Result<&'a [u8], SignError> {
            let n = self.u32()? as usize;
            if n > self.0.len() {
                return fail("ssh-agent: a short answer");
            }
            let (s, rest) = self.0.split_at(n);
            self.0 = rest;
            Ok(s)
        }
    }

    /// One request, one answer (type and body).
    fn exchange(socket: &Path, body: &[u8]) -> Result<(u8, Vec<u8>), SignError> {
        let io = |e: std::io::Error| SignError(format!("ssh-agent {}: {e}", socket.display()));
        let mut s = std::os::unix::net::UnixStream::connect(socket).map_err(io)?;
        let mut msg = Vec::with_capacity(body.len() + 4);
        put_string(&mut msg, body);
        s.write_all(&msg).map_err(io)?;
        let mut len = [0u8; 4];
        s.read_exact(&mut len).map_err(io)?;
        let n = u32::from_be_bytes(len) as usize;
        if n == 0 || n > 1 << 20 {
            return fail("ssh-agent: a malformed answer");
        }
        let mut answer = vec![0u8; n];
        s.read_exact(&mut answer).map_err(io)?;
        let kind = answer.first().copied().unwrap_or_default();
        Ok((kind, answer.get(1..).unwrap_or_default().to_vec()))
    }

    /// The agent's keys: public key blob and comment.
    pub(super) fn identities(socket: &Path) -> Result<Vec<(Vec<u8>, String)>, SignError> {
        let (kind, body) = exchange(socket, &[REQUEST_IDENTITIES])?;
        if kind != IDENTITIES_ANSWER {
            return fail("ssh-agent refused to list its keys");
        }
        let mut r = Reader(&body);
        let n = r.u32()?;
        let mut out = Vec::new();
        for _ in 0..n.min(1024) {
            let blob = r.string()?.to_vec();
            let comment = String::from_utf8_lossy(r.string()?).into_owned();
            out.push((blob, comment));
        }
        Ok(out)
    }

    /// `msg` signed by the agent's key `blob`; the raw signature (ECDSA's
    /// as DER).
    pub(super) fn sign(
        socket: &Path,
        blob: &[u8],
        msg: &[u8],
        algorithm: &str,
    ) -> Result<Vec<u8>, SignError> {
        let mut body = vec![SIGN_REQUEST];
        put_string(&mut body, blob);
        put_string(&mut body, msg);
        let flags = if algorithm == "rsa-sha256" {
            RSA_SHA2_256
        } else {
            0
        };
        body.extend_from_slice(&flags.to_be_bytes());
        let (kind, answer) = exchange(socket, &body)?;
        if kind != SIGN_RESPONSE {
            return fail("ssh-agent refused to sign");
        }
        let mut r = Reader(&answer);
        let mut sig = Reader(r.string()?);
        let _format = sig.string()?;
        let raw = sig.string()?;
        if !algorithm.starts_with("ecdsa") {
            return Ok(raw.to_vec());
        }
        // ECDSA: (mpint r, mpint s) as DER.
        let mut rs = Reader(raw);
        let (r_int, s_int) = (rs.string()?, rs.string()?);
        let der = |parts: &[&[u8]]| -> Vec<u8> {
            let mut seq = Vec::new();
            for p in parts {
                seq.push(0x02);
                seq.push(p.len() as u8);
                seq.extend_from_slice(p);
            }
            let mut out = vec![0x30, seq.len() as u8];
            out.extend(seq);
            out
        };
        Ok(der(&[r_int, s_int]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn a_signature_from_a_key_file_checks_out_with_the_servers_verifier() {
        let dir = tempfile::tempdir().unwrap();
        let sk = ed25519_dalek::SigningKey::from_bytes(&[11u8; 32]);
        let keypair = ssh_key::private::Ed25519Keypair::from(&sk);
        let private = ssh_key::PrivateKey::new(KeypairData::Ed25519(keypair), "ops@test").unwrap();
        let path = dir.path().join("id_ed25519");
        std::fs::write(&path, private.to_openssh(ssh_key::LineEnding::LF).unwrap()).unwrap();
        let signer = Signer::from_key_file("ops", &path).unwrap();
        let date = httpdate::fmt_http_date(SystemTime::now());
        let auth = signer
            .authorization("GET", "/images?state=all", &date)
            .unwrap();
        let mut ring = super::super::auth::KeyRing::default();
        ring.add(
            "ops",
            uuid::Uuid::nil(),
            &[private.public_key().to_openssh().unwrap()],
        )
        .unwrap();
        let mut h = axum::http::HeaderMap::new();
        h.insert("date", date.parse().unwrap());
        h.insert("authorization", auth.parse().unwrap());
        let who = ring
            .authenticate(
                &axum::http::Method::GET,
                "/images?state=all",
                &h,
                SystemTime::now(),
            )
            .unwrap();
        assert_eq!(who.login, "ops");
        assert!(
            ring.authenticate(&axum::http::Method::GET, "/images", &h, SystemTime::now())
                .is_err()
        );
    }
}
