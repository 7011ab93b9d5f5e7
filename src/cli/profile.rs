//! `imgstore profile create|list|get|set-current|delete`, as `triton
//! profile`: a profile is `$XDG_CONFIG_HOME/imgstore/profiles.d/NAME.json`
//! (see [`connect`](super::connect)), and the current one, used when no
//! `--profile` is named, is `{"profile": NAME}` in `config.json` beside
//! that directory, as `triton` keeps it in `~/.triton/config.json`.

use std::path::PathBuf;

use anyhow::{Result, anyhow, bail};
use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use super::connect::{config_dir, config_file, current, report};
use super::emit;

#[derive(Args, Debug)]
pub struct ProfileArgs {
    /// JSON output.
    #[arg(short = 'j', long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: ProfileCommand,
}

#[derive(Subcommand, Debug)]
pub enum ProfileCommand {
    /// Create a profile; the first one made becomes the current one.
    Create {
        /// Its name (letters, digits, '_', '.', '-').
        name: String,
        /// The daemon to talk to.
        #[arg(long)]
        url: String,
        /// The account to act as, a uuid or a login the daemon knows
        /// (none: operator).
        #[arg(long)]
        account: Option<String>,
        /// Another datacenter for `--dc` and copies, as NAME=URL
        /// (repeatable).
        #[arg(long = "datacenter", value_name = "NAME=URL")]
        datacenters: Vec<String>,
        /// The login that signs requests (a daemon with `"authType":
        /// "signature"`).
        #[arg(long)]
        user: Option<String>,
        /// The signing key's MD5 fingerprint.
        #[arg(long)]
        key_id: Option<String>,
        /// Make it the current profile.
        #[arg(long)]
        current: bool,
        /// Replace a profile of that name.
        #[arg(short = 'f', long)]
        force: bool,
    },
    /// List the profiles; `*` marks the current one.
    #[command(alias = "ls")]
    List,
    /// Show a profile (default: the current one).
    Get { name: Option<String> },
    /// Make NAME the profile used when none is named.
    SetCurrent { name: String },
    /// Delete profiles (the current one too: then none is current).
    #[command(alias = "rm")]
    Delete {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
}

pub fn run(args: ProfileArgs) -> i32 {
    match execute(&args) {
        Ok(()) => 0,
        Err(e) => report("profile", &e),
    }
}

fn execute(args: &ProfileArgs) -> Result<()> {
    let json = args.json;
    match &args.command {
        ProfileCommand::Create { .. } => create(&args.command, json),
        ProfileCommand::List => list(json),
        ProfileCommand::Get { name } => {
            let name = match name.clone().or_else(current) {
                Some(n) => n,
                None => bail!(
                    "error: no current profile: name one, or set one with `imgstore profile set-current NAME`"
                ),
            };
            let v = read(&name)?;
            if json {
                emit(true, &v, String::new)
            } else {
                emit(false, &v, || {
                    serde_json::to_string_pretty(&v).unwrap_or_default()
                })
            }
        }
        ProfileCommand::SetCurrent { name } => {
            read(&name.clone())?;
            set_current(Some(name))?;
            emit(json, &json!({"profile": name}), || {
                format!("Set \"{name}\" as the current profile")
            })
        }
        ProfileCommand::Delete { names } => {
            // Every name must exist before any is deleted.
            for n in names {
                read(n)?;
            }
            for n in names {
                let path = path_of(n)?;
                std::fs::remove_file(&path)
                    .map_err(|e| anyhow!("error: deleting {}: {e}", path.display()))?;
                if current().as_deref() == Some(n.as_str()) {
                    set_current(None)?;
                }
                emit(json, &json!({"deleted": n}), || {
                    format!("Deleted profile \"{n}\"")
                })?;
            }
            Ok(())
        }
    }
}

fn create(cmd: &ProfileCommand, json: bool) -> Result<()> {
    let ProfileCommand::Create {
        name,
        url,
        account,
        datacenters,
        user,
        key_id,
        current: make_current,
        force,
    } = cmd
    else {
        bail!("error: not a create command");
    };
    let path = path_of(name)?;
    if path.exists() && !force {
        bail!(
            "error: profile \"{name}\" exists ({}): pass -f to replace it",
            path.display()
        );
    }
    if user.is_some() != key_id.is_some() {
        bail!("error: --user and --key-id go together (the login that signs and its key)");
    }
    let mut v = Map::new();
    v.insert("url".into(), json!(checked_url(url)?));
    if let Some(a) = account.as_ref().filter(|a| !a.is_empty()) {
        v.insert("account".into(), json!(a));
    }
    let mut dcs = Map::new();
    for d in datacenters {
        let Some((n, u)) = d.split_once('=').filter(|(n, _)| !n.is_empty()) else {
            bail!("error: --datacenter {d:?} is not NAME=URL");
        };
        dcs.insert(n.into(), json!(checked_url(u)?));
    }
    if !dcs.is_empty() {
        v.insert("datacenters".into(), Value::Object(dcs));
    }
    if let (Some(u), Some(k)) = (user, key_id) {
        v.insert("user".into(), json!(u));
        v.insert("keyId".into(), json!(k));
    }
    let v = Value::Object(v);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow!("error: creating {}: {e}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(&v)?;
    std::fs::write(&path, text + "\n")
        .map_err(|e| anyhow!("error: writing {}: {e}", path.display()))?;
    let now_current = *make_current || current().is_none();
    if now_current {
        set_current(Some(name))?;
    }
    emit(json, &v, || {
        let also = if now_current {
            " (now the current profile)"
        } else {
            ""
        };
        format!("Created profile \"{name}\"{also}: {}", path.display())
    })
}

fn list(json: bool) -> Result<()> {
    let cur = current();
    let names = names()?;
    if names.is_empty() && !json {
        say!("No profiles: make one with `imgstore profile create NAME --url URL`");
        return Ok(());
    }
    if !json {
        say!("{:<16} {:<4} {:<36} URL", "NAME", "CURR", "ACCOUNT");
    }
    for n in names {
        let v = read(&n)?;
        let is_cur = cur.as_deref() == Some(n.as_str());
        let field = |k: &str| v[k].as_str().unwrap_or("-").to_string();
        if json {
            say!(
                "{}",
                json!({"name": n, "curr": is_cur, "account": v["account"], "url": v["url"]})
            );
        } else {
            let mark = if is_cur { "*" } else { "" };
            say!(
                "{n:<16} {mark:<4} {:<36} {}",
                field("account"),
                field("url")
            );
        }
    }
    Ok(())
}

/// The daemon's URL as a profile keeps it: http(s), no trailing slash.
fn checked_url(url: &str) -> Result<String> {
    let u = url.trim_end_matches('/');
    if !(u.starts_with("http://") || u.starts_with("https://")) || u.len() < "http://x".len() {
        bail!("error: {url:?} is not an http:// or https:// URL");
    }
    Ok(u.to_string())
}

fn profiles_dir() -> Result<PathBuf> {
    config_dir()
        .map(|d| d.join("profiles.d"))
        .ok_or_else(|| anyhow!("error: HOME and XDG_CONFIG_HOME are unset: no place for profiles"))
}

fn path_of(name: &str) -> Result<PathBuf> {
    let ok = |c: char| c.is_ascii_alphanumeric() || "_.-".contains(c);
    if name.is_empty() || name.starts_with('.') || !name.chars().all(ok) {
        bail!("error: {name:?} is not a profile name (letters, digits, '_', '.', '-')");
    }
    Ok(profiles_dir()?.join(format!("{name}.json")))
}

/// The profile `name` as stored; a missing one names those there are.
fn read(name: &str) -> Result<Value> {
    let path = path_of(name)?;
    match std::fs::read(&path) {
        Ok(raw) => serde_json::from_slice(&raw)
            .map_err(|e| anyhow!("error: profile \"{name}\" ({}): {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let have = names()?;
            let have = match have.is_empty() {
                true => "there are none".to_string(),
                false => format!("there are: {}", have.join(", ")),
            };
            bail!("error: no profile \"{name}\" ({have})")
        }
        Err(e) => bail!("error: profile \"{name}\" ({}): {e}", path.display()),
    }
}

/// The profiles' names, sorted.
fn names() -> Result<Vec<String>> {
    let dir = profiles_dir()?;
    let mut out: Vec<String> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".json"))
                    .map(str::to_string)
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => bail!("error: reading {}: {e}", dir.display()),
    };
    out.sort();
    Ok(out)
}

/// Sets (or, with None, clears) the current profile, keeping the other
/// keys of `config.json`.
fn set_current(name: Option<&str>) -> Result<()> {
    let path = config_file().ok_or_else(|| anyhow!("error: HOME and XDG_CONFIG_HOME are unset"))?;
    let mut v: Map<String, Value> = std::fs::read(&path)
        .ok()
        .and_then(|raw| serde_json::from_slice(&raw).ok())
        .unwrap_or_default();
    match name {
        Some(n) => v.insert("profile".into(), json!(n)),
        None => v.remove("profile"),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow!("error: creating {}: {e}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(&Value::Object(v))?;
    std::fs::write(&path, text + "\n")
        .map_err(|e| anyhow!("error: writing {}: {e}", path.display()))
}
