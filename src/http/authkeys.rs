//! The IMGAPI port's signing keys (`"authType": "signature"`): where they
//! come from (`authKeys`, `authKeysDir`), reloaded while the daemon runs
//! (`POST /authkeys/reload`), checked by [`auth`](super::auth).

use std::time::SystemTime;

use axum::http::{HeaderMap, Method};
use uuid::Uuid;

use super::auth::{AuthError, KeyRing, Principal, Scheme};

/// Why a set of keys did not load (a file unreadable, a key that does not
/// parse): a daemon must not serve with a key it ignores.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeysError(pub String);

/// The key lines of an `authorized_keys` file: blank lines and comments
/// dropped.
pub fn authorized_keys(text: &str) -> impl Iterator<Item = String> + '_ {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
}

/// Where the IMGAPI port's signing keys come from, as upstream IMGAPI
/// reads them: `authKeys` (login to public key lines) and `authKeysDir`
/// (a file `LOGIN.keys` per login, `authorized_keys` format).
#[derive(Clone, Debug, Default)]
pub struct KeySources {
    pub inline: std::collections::BTreeMap<String, Vec<String>>,
    pub dir: Option<std::path::PathBuf>,
}

impl KeySources {
    /// Every login's keys, read now. Signers of the IMGAPI port are
    /// operators: their uuid is the nil one.
    pub fn load(&self) -> Result<KeyRing, KeysError> {
        let mut lines: std::collections::BTreeMap<String, Vec<String>> = self.inline.clone();
        if let Some(dir) = &self.dir {
            let rd = std::fs::read_dir(dir)
                .map_err(|e| KeysError(format!("authKeysDir {}: {e}", dir.display())))?;
            for entry in rd {
                let path = entry
                    .map_err(|e| KeysError(format!("authKeysDir {}: {e}", dir.display())))?
                    .path();
                let Some(login) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".keys"))
                else {
                    continue;
                };
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| KeysError(format!("{}: {e}", path.display())))?;
                lines
                    .entry(login.to_string())
                    .or_default()
                    .extend(authorized_keys(&text));
            }
        }
        let mut ring = KeyRing::default();
        for (login, keys) in &lines {
            ring.add(login, Uuid::nil(), keys).map_err(KeysError)?;
        }
        Ok(ring)
    }
}

/// The IMGAPI port's signature check (`"authType": "signature"`): the
/// keys, reloadable while the daemon runs (`POST /authkeys/reload`).
pub struct ImgapiAuth {
    sources: KeySources,
    ring: std::sync::RwLock<std::sync::Arc<KeyRing>>,
}

impl ImgapiAuth {
    /// Loads the keys once; a key that does not load stops the start.
    pub fn new(sources: KeySources) -> Result<Self, KeysError> {
        let ring = sources.load()?;
        Ok(ImgapiAuth {
            sources,
            ring: std::sync::RwLock::new(std::sync::Arc::new(ring)),
        })
    }

    /// Reads the keys again; on an error the keys in use stay. Returns
    /// how many logins have keys.
    pub fn reload(&self) -> Result<usize, KeysError> {
        let ring = self.sources.load()?;
        let logins = ring.logins();
        *self.ring.write().unwrap_or_else(|p| p.into_inner()) = std::sync::Arc::new(ring);
        Ok(logins)
    }

    /// Checks a request's signature as upstream IMGAPI does (see
    /// [`Scheme::Imgapi`]).
    pub fn authenticate(
        &self,
        method: &Method,
        target: &str,
        headers: &HeaderMap,
        now: SystemTime,
    ) -> Result<Principal, AuthError> {
        let ring = std::sync::Arc::clone(&self.ring.read().unwrap_or_else(|p| p.into_inner()));
        ring.authenticate_as(Scheme::Imgapi, method, target, headers, now)
    }
}
