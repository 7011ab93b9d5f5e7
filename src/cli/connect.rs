//! How the client commands reach a daemon: `--url`, `--account`,
//! `--profile NAME`, `--dc NAME`, and how its errors read.
//!
//! A profile (node-triton's, as a file) is
//! `$XDG_CONFIG_HOME/imgstore/profiles.d/NAME.json` (default
//! `~/.config/imgstore`), or a path: `{"url", "account", "datacenters":
//! {"NAME": "URL"}, "user", "keyId"}` (the last two sign requests);
//! `imgstore profile` makes and lists them. Without `--profile` the
//! current profile is used (`imgstore profile set-current`, kept in
//! `config.json` as `triton` keeps it), else the `default` profile when
//! there is one (or the older single `profile.json`); a profile that is
//! named and missing is an error.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use imgstore::http::client::{Client, ClientError};
use serde_json::Value;

/// Where the daemon is and who is asking.
#[derive(Args, Debug)]
pub struct ConnArgs {
    /// The daemon to talk to (default: the profile's `url`, else
    /// http://127.0.0.1:8080).
    #[arg(long, env = "IMGSTORE_URL", global = true)]
    pub url: Option<String>,
    /// Act as this account, a uuid or a login the daemon knows (default:
    /// the profile's `account`; none or empty: operator).
    #[arg(long, env = "IMGSTORE_ACCOUNT", global = true)]
    pub account: Option<String>,
    /// Act as operator (no account), whatever `--account`, the environment
    /// or the profile say.
    #[arg(long, global = true)]
    pub operator: bool,
    /// Profile NAME (`$XDG_CONFIG_HOME/imgstore/profiles.d/NAME.json`) or
    /// a path to one: {"url", "account", "datacenters": {"NAME": "URL"}}.
    /// Default: the current profile (`imgstore profile set-current`),
    /// else the `default` one when there is one. A profile named and
    /// missing is an error.
    #[arg(long, env = "IMGSTORE_PROFILE", global = true)]
    pub profile: Option<String>,
    /// Talk to this datacenter of the profile instead of its `url`.
    #[arg(long, global = true)]
    pub dc: Option<String>,
    /// Sign every request as this login (a daemon with `"authType":
    /// "signature"`; default: the profile's `user`).
    #[arg(long, env = "IMGSTORE_USER", global = true)]
    pub user: Option<String>,
    /// The signing key's MD5 fingerprint (`ssh-keygen -l -E md5`), found
    /// in ssh-agent or `~/.ssh` as `triton` finds it (default: the
    /// profile's `keyId`).
    #[arg(long, env = "IMGSTORE_KEY_ID", global = true)]
    pub key_id: Option<String>,
}

/// The signer of this process's requests, once `connect` has made it:
/// every client the command makes (the profile's other datacenters too)
/// signs with it.
static SIGNER: std::sync::OnceLock<Option<std::sync::Arc<imgstore::http::sign::Signer>>> =
    std::sync::OnceLock::new();

/// A profile: where the client talks, as whom, and the datacenters it
/// knows.
#[derive(Debug, Default)]
pub struct Profile {
    pub url: Option<String>,
    pub account: Option<String>,
    pub datacenters: BTreeMap<String, String>,
    /// The login and key fingerprint that sign requests.
    pub user: Option<String>,
    pub key_id: Option<String>,
}

/// The datacenters a target list names, checked against the profile's:
/// `all` is every one but `except` (the one the client talks to), else a
/// comma-separated list. Each comes with its URL. A name the profile
/// lacks is an error that lists the profile's (`then` says what did not
/// happen).
pub fn pick_datacenters(
    dcs: &BTreeMap<String, String>,
    list: &str,
    except: Option<&str>,
    then: &str,
) -> Result<Vec<(String, String)>> {
    let names: Vec<String> = if list == "all" {
        dcs.keys()
            .filter(|n| Some(n.as_str()) != except)
            .cloned()
            .collect()
    } else {
        list.split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect()
    };
    let unknown: Vec<&str> = names
        .iter()
        .filter(|n| !dcs.contains_key(*n))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        bail!("{}{then}", not_in_profile(dcs, &unknown.join(", ")));
    }
    Ok(names
        .into_iter()
        .filter_map(|n| dcs.get(&n).map(|u| (n.clone(), u.clone())))
        .collect())
}

/// "datacenter X is not in the profile (it lists: ...)".
fn not_in_profile(dcs: &BTreeMap<String, String>, what: &str) -> String {
    let known: Vec<&str> = dcs.keys().map(String::as_str).collect();
    format!(
        "error: datacenter {what} is not in the profile (it lists: {})",
        if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        }
    )
}

impl ConnArgs {
    /// The client these arguments (and the profile) describe, and the
    /// profile.
    pub fn connect(&self) -> Result<(Client, Profile)> {
        let prof = load_profile(self.profile.as_deref())?;
        let account = match self.operator {
            true => None,
            false => self.account.clone().or_else(|| prof.account.clone()),
        };
        let user = self.user.clone().or_else(|| prof.user.clone());
        let key_id = self.key_id.clone().or_else(|| prof.key_id.clone());
        let signer = match (user, key_id) {
            (Some(u), Some(k)) => Some(std::sync::Arc::new(
                imgstore::http::sign::Signer::find(&u, &k).map_err(|e| anyhow!("error: {e}"))?,
            )),
            (None, None) => None,
            (Some(_), None) => {
                bail!("error: --user needs --key-id (the signing key's fingerprint)")
            }
            (None, Some(_)) => bail!("error: --key-id needs --user (the login that signs)"),
        };
        let _ = SIGNER.set(signer);
        let c = client(&self.target_url(&prof)?, None)?;
        // An empty account is the operator; a login is the account the
        // daemon's table names, so every comparison below sees uuids.
        let account = match account.filter(|a| !a.is_empty()) {
            Some(a) => Some(account_uuid(&c, &a)?),
            None => None,
        };
        Ok((c.as_account(account.as_deref()), prof))
    }

    /// The daemon's URL: `--dc` (from the profile), `--url`, the
    /// profile's, or the local default.
    fn target_url(&self, p: &Profile) -> Result<String> {
        if let Some(dc) = &self.dc {
            return p
                .datacenters
                .get(dc)
                .cloned()
                .ok_or_else(|| anyhow!(not_in_profile(&p.datacenters, &format!("{dc:?}"))));
        }
        Ok(self
            .url
            .clone()
            .or_else(|| p.url.clone())
            .unwrap_or_else(|| "http://127.0.0.1:8080".to_string()))
    }
}

/// `$XDG_CONFIG_HOME/imgstore` (default `~/.config/imgstore`).
pub(crate) fn config_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .map(|d| d.join("imgstore"))
}

/// `config.json` beside `profiles.d`.
pub(crate) fn config_file() -> Option<PathBuf> {
    config_dir().map(|d| d.join("config.json"))
}

/// The current profile's name, when one is set.
pub(crate) fn current() -> Option<String> {
    let raw = std::fs::read(config_file()?).ok()?;
    let v: Value = serde_json::from_slice(&raw).ok()?;
    v["profile"].as_str().map(str::to_string)
}

/// The profile `--profile` names (a name or a path), or the `default`
/// profile, or the older single `profile.json`, or none.
fn load_profile(named: Option<&str>) -> Result<Profile> {
    let dir = config_dir();
    let path = match named {
        Some(n) if n.contains('/') || n.ends_with(".json") => PathBuf::from(n),
        Some(n) => dir
            .map(|d| d.join("profiles.d").join(format!("{n}.json")))
            .ok_or_else(|| {
                anyhow!("error: no profile {n:?}: HOME and XDG_CONFIG_HOME are unset")
            })?,
        None => {
            let current = current();
            let candidates = dir
                .map(|d| {
                    let mut c = Vec::new();
                    if let Some(n) = current {
                        c.push(d.join("profiles.d").join(format!("{n}.json")));
                    }
                    c.extend([d.join("profiles.d/default.json"), d.join("profile.json")]);
                    c
                })
                .unwrap_or_default();
            match candidates.into_iter().find(|p| p.exists()) {
                Some(p) => p,
                None => return Ok(Profile::default()),
            }
        }
    };
    let raw = std::fs::read(&path).map_err(|e| {
        anyhow!(
            "error: profile {:?} ({}): {e}",
            named.unwrap_or("default"),
            path.display()
        )
    })?;
    let v: Value =
        serde_json::from_slice(&raw).with_context(|| format!("parsing {}", path.display()))?;
    let text = |k: &str| v[k].as_str().map(|s| s.trim_end_matches('/').to_string());
    Ok(Profile {
        url: text("url"),
        account: text("account"),
        datacenters: v["datacenters"]
            .as_object()
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| {
                        v.as_str()
                            .map(|u| (k.clone(), u.trim_end_matches('/').to_string()))
                    })
                    .collect()
            })
            .unwrap_or_default(),
        user: text("user"),
        key_id: text("keyId"),
    })
}

/// What `GET /accounts/:name` answers.
#[derive(serde::Deserialize)]
struct AccountName {
    uuid: String,
}

/// The account uuid `name` stands for: itself when it is a uuid, else the
/// login's in the daemon's account table (an unknown one is an error that
/// says so).
pub(crate) fn account_uuid(c: &Client, name: &str) -> Result<String> {
    if let Ok(u) = uuid::Uuid::parse_str(name) {
        return Ok(u.to_string());
    }
    let safe = |ch: char| ch.is_ascii_alphanumeric() || "_.@-".contains(ch);
    if !name.chars().all(safe) {
        bail!(
            "error: account {name:?} is neither a uuid nor a login (letters, digits, '_', '.', '@', '-')"
        );
    }
    let found: AccountName = c
        .as_account(None)
        .get(&format!("/accounts/{name}"), &[])
        .map_err(describe)?;
    Ok(found.uuid)
}

/// A daemon's error as the CLI prints it: `error (CODE): message`, or
/// `error: cannot reach URL: cause`.
pub(crate) fn describe(e: ClientError) -> anyhow::Error {
    match &e {
        ClientError::Api { body, .. } => {
            // A field's words that the message already says are not said
            // twice: one clear sentence per error.
            let details: Vec<String> = body
                .errors
                .iter()
                .filter_map(|f| {
                    let m = f.message.as_ref()?;
                    (!body.message.contains(m.as_str())).then(|| format!("{}: {m}", f.field))
                })
                .collect();
            if details.is_empty() {
                anyhow!("error ({}): {}", body.code, body.message)
            } else {
                anyhow!(
                    "error ({}): {} ({})",
                    body.code,
                    body.message,
                    details.join("; ")
                )
            }
        }
        _ => anyhow!("error: {e}"),
    }
}

/// The client for `url` as `account`.
pub(crate) fn client(url: &str, account: Option<&str>) -> Result<Client> {
    Ok(Client::new(url, None)
        .map_err(describe)?
        .as_account(account)
        .signed_by(SIGNER.get().cloned().flatten()))
}

/// Prints an error as `imgstore COMMAND: error...` and gives the exit
/// status for it (1).
pub(crate) fn report(command: &str, e: &anyhow::Error) -> i32 {
    let msg = format!("{e:#}");
    let msg = if msg.starts_with("error") {
        msg
    } else {
        format!("error: {msg}")
    };
    eprintln!("imgstore {command}: {msg}");
    1
}
