//! `imgstore image ...`: a command-line client for imgstore (and IMGAPI)
//! daemons with node-triton's ergonomics, plus live byte progress for
//! copies between datacenters. It talks through the one IMGAPI client
//! (`imgstore::http::client`).
//!
//! | module | |
//! | --- | --- |
//! | here | the commands, name resolution, profiles |
//! | `view` | node-triton's columns and flags, tables |
//! | `follow` | copies to other datacenters and `wait`, with live progress |

mod follow;
mod view;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use imgstore::http::client::{Client, ClientError};
use serde_json::{Map, Value, json};

#[derive(Args, Debug)]
pub struct ImageArgs {
    /// The daemon to talk to.
    #[arg(
        long,
        env = "IMGSTORE_URL",
        global = true,
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,
    /// Act as this account (no account: operator).
    #[arg(long, env = "IMGSTORE_ACCOUNT", global = true)]
    pub account: Option<String>,
    /// Datacenter profile: {"datacenters": {"NAME": "URL", ...}}.
    #[arg(long, env = "IMGSTORE_PROFILE", global = true)]
    pub profile: Option<PathBuf>,
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// List images (SHORTID NAME VERSION FLAGS OS TYPE PUBDATE).
    #[command(alias = "ls")]
    List {
        /// Long form: ID NAME VERSION STATE FLAGS OS TYPE PUBDATE.
        #[arg(short = 'l', long)]
        long: bool,
        /// Columns to show, comma-separated.
        #[arg(short = 'o')]
        output: Option<String>,
        /// No header row.
        #[arg(short = 'H')]
        no_header: bool,
        /// One JSON object a line.
        #[arg(short = 'j', long)]
        json: bool,
        /// All states (state=all).
        #[arg(short = 'a', long)]
        all: bool,
        /// Filters: name=, version=, os=, type=, public=, state=, owner=.
        filters: Vec<String>,
    },
    /// Show an image's manifest.
    Get {
        image: String,
    },
    /// Create an (unactivated) image.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        version: String,
        #[arg(long = "type", default_value = "zone-dataset")]
        type_: String,
        #[arg(long, default_value = "smartos")]
        os: String,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        origin: Option<String>,
        #[arg(long)]
        public: bool,
        /// More manifest fields as KEY=VALUE (VALUE may be JSON).
        fields: Vec<String>,
    },
    /// Upload an image's file.
    Upload {
        image: String,
        file: PathBuf,
        #[arg(long, default_value = "none")]
        compression: String,
    },
    /// Activate an image.
    Activate {
        image: String,
    },
    /// Change fields: KEY=VALUE (VALUE may be JSON; empty deletes).
    Update {
        image: String,
        fields: Vec<String>,
    },
    Enable {
        image: String,
    },
    Disable {
        image: String,
    },
    #[command(alias = "rm")]
    Delete {
        image: String,
    },
    /// Share an image with an account.
    Share {
        image: String,
        #[arg(value_name = "ACCOUNT")]
        member: String,
    },
    /// Stop sharing an image with an account.
    Unshare {
        image: String,
        #[arg(value_name = "ACCOUNT")]
        member: String,
    },
    /// Clone an image shared with you (and its origin chain) into your account.
    Clone {
        image: String,
    },
    /// Copy your image from this datacenter to others, with live progress.
    #[command(alias = "cp")]
    Copy {
        image: String,
        /// Target datacenters (names from the profile), comma-separated, or `all`.
        #[arg(long)]
        to: String,
    },
    /// Wait for images to reach a state, following any copy in progress.
    Wait {
        images: Vec<String>,
        #[arg(short = 's', long, default_value = "active,failed")]
        states: String,
    },
    /// Where an image comes from, what derives from it, what it costs.
    Lineage {
        image: String,
    },
}

/// A daemon's error as the CLI prints it: `error (CODE): message`, or
/// `error: cannot reach URL: cause`.
pub(crate) fn describe(e: ClientError) -> anyhow::Error {
    match &e {
        ClientError::Api { body, .. } => {
            let details: Vec<String> = body
                .errors
                .iter()
                .filter_map(|f| f.message.as_ref().map(|m| format!("{}: {m}", f.field)))
                .collect();
            if details.is_empty() || details.iter().all(|d| body.message.contains(d.as_str())) {
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
        .as_account(account))
}

/// Resolves uuid, short id, name (latest by published_at) or name@version.
pub(crate) fn resolve(c: &Client, name: &str) -> Result<Value> {
    if name.len() == 36 && name.chars().filter(|ch| *ch == '-').count() == 4 {
        return c.get_image(name).map_err(describe);
    }
    let list = c.list_all_images(&[("state", "all")]).map_err(describe)?;
    let (n, v) = match name.split_once('@') {
        Some((n, v)) => (n, Some(v)),
        None => (name, None),
    };
    let mut hits: Vec<&Value> = list
        .iter()
        .filter(|i| i["name"] == n && v.is_none_or(|v| i["version"] == v))
        .collect();
    if hits.is_empty() && v.is_none() {
        hits = list
            .iter()
            .filter(|i| {
                i["uuid"]
                    .as_str()
                    .is_some_and(|u| u.split('-').next() == Some(name))
            })
            .collect();
    }
    hits.sort_by_key(|i| i["published_at"].as_str().unwrap_or_default().to_string());
    hits.last()
        .map(|v| (*v).clone())
        .ok_or_else(|| anyhow!("error: no image {name:?} at {}", c.base()))
}

/// `uuid` and `name@version` of a manifest.
fn names(img: &Value) -> (String, String) {
    (
        img["uuid"].as_str().unwrap_or_default().to_string(),
        format!(
            "{}@{}",
            img["name"].as_str().unwrap_or("?"),
            img["version"].as_str().unwrap_or("?")
        ),
    )
}

/// The datacenter profile.
fn profile(args: &ImageArgs) -> Result<BTreeMap<String, String>> {
    let path = match &args.profile {
        Some(p) => p.clone(),
        None => match std::env::var_os("HOME") {
            Some(h) => PathBuf::from(h).join(".config/imgstore/profile.json"),
            None => return Ok(BTreeMap::new()),
        },
    };
    if !path.exists() {
        return Ok(BTreeMap::new());
    }
    let raw = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let v: Value =
        serde_json::from_slice(&raw).with_context(|| format!("parsing {}", path.display()))?;
    Ok(v["datacenters"]
        .as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| {
                    v.as_str()
                        .map(|u| (k.clone(), u.trim_end_matches('/').to_string()))
                })
                .collect()
        })
        .unwrap_or_default())
}

/// KEY=VALUE pairs into a JSON object (VALUE parsed as JSON when it is).
fn fields(pairs: &[String], empty_is_null: bool) -> Result<Map<String, Value>> {
    let mut m = Map::new();
    for p in pairs {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| anyhow!("error: {p:?} is not KEY=VALUE"))?;
        let value = if v.is_empty() && empty_is_null {
            Value::Null
        } else {
            serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()))
        };
        m.insert(k.to_string(), value);
    }
    Ok(m)
}

pub fn run(args: ImageArgs) -> i32 {
    let name = format!("{:?}", args.command)
        .split([' ', '{', '('])
        .next()
        .unwrap_or_default()
        .to_lowercase();
    match execute(args) {
        Ok(()) => 0,
        Err(e) => {
            let msg = format!("{e:#}");
            let msg = if msg.starts_with("error") {
                msg
            } else {
                format!("error: {msg}")
            };
            eprintln!("imgstore image {name}: {msg}");
            1
        }
    }
}

fn execute(args: ImageArgs) -> Result<()> {
    let c = client(&args.url, args.account.as_deref())?;
    match &args.command {
        ImageCommand::List {
            long,
            output,
            no_header,
            json,
            all,
            filters,
        } => view::list(
            &c,
            *long,
            output.as_deref(),
            *no_header,
            *json,
            *all,
            filters,
        ),
        ImageCommand::Get { image } => {
            println!("{}", serde_json::to_string_pretty(&resolve(&c, image)?)?);
            Ok(())
        }
        ImageCommand::Create {
            name,
            version,
            type_,
            os,
            description,
            origin,
            public,
            fields: extra,
        } => {
            let mut body = fields(extra, false)?;
            body.insert("name".into(), json!(name));
            body.insert("version".into(), json!(version));
            body.insert("type".into(), json!(type_));
            body.insert("os".into(), json!(os));
            if let Some(d) = description {
                body.insert("description".into(), json!(d));
            }
            if let Some(o) = origin {
                body.insert("origin".into(), resolve(&c, o)?["uuid"].clone());
            }
            if *public {
                body.insert("public".into(), json!(true));
            }
            let img = c.create_image(&Value::Object(body)).map_err(describe)?;
            println!(
                "Created image {} ({}@{})",
                img["uuid"].as_str().unwrap_or("?"),
                name,
                version
            );
            Ok(())
        }
        ImageCommand::Upload {
            image,
            file,
            compression,
        } => upload(&c, image, file, compression),
        ImageCommand::Activate { image }
        | ImageCommand::Enable { image }
        | ImageCommand::Disable { image } => {
            let (action, done) = match &args.command {
                ImageCommand::Activate { .. } => ("activate", "Activated"),
                ImageCommand::Enable { .. } => ("enable", "Enabled"),
                _ => ("disable", "Disabled"),
            };
            let (uuid, label) = names(&resolve(&c, image)?);
            c.image_action(&uuid, action, &json!({}))
                .map_err(describe)?;
            println!("{done} image {uuid} ({label})");
            Ok(())
        }
        ImageCommand::Update {
            image,
            fields: pairs,
        } => {
            let (uuid, _) = names(&resolve(&c, image)?);
            c.image_action(&uuid, "update", &Value::Object(fields(pairs, true)?))
                .map_err(describe)?;
            println!("Updated image {uuid}");
            Ok(())
        }
        ImageCommand::Delete { image } => {
            let (uuid, label) = names(&resolve(&c, image)?);
            c.delete_image(&uuid).map_err(describe)?;
            println!("Deleted image {uuid} ({label})");
            Ok(())
        }
        ImageCommand::Share { image, member } => share(&c, image, member, true),
        ImageCommand::Unshare { image, member } => share(&c, image, member, false),
        ImageCommand::Clone { image } => {
            let (uuid, _) = names(&resolve(&c, image)?);
            let clone = c.clone_image(&uuid).map_err(describe)?;
            let (new, label) = names(&clone);
            println!("Cloned image {image} to {new} ({label})");
            Ok(())
        }
        ImageCommand::Lineage { image } => {
            let (uuid, _) = names(&resolve(&c, image)?);
            let lineage = c.lineage(&uuid).map_err(describe)?;
            println!("{}", serde_json::to_string_pretty(&lineage)?);
            Ok(())
        }
        ImageCommand::Copy { image, to } => {
            let account = args.account.clone().ok_or_else(|| {
                anyhow!("error: copying needs --account (copies are of one's own images)")
            })?;
            follow::copy(&c, &profile(&args)?, &account, image, to)
        }
        ImageCommand::Wait { images, states } => follow::wait(&c, images, states),
    }
}

fn upload(c: &Client, image: &str, file: &std::path::Path, compression: &str) -> Result<()> {
    let (uuid, _) = names(&resolve(c, image)?);
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let len = f.metadata()?.len();
    let img = c.add_file(&uuid, compression, f, len).map_err(describe)?;
    println!(
        "Uploaded {} bytes to image {uuid} (sha1 {})",
        len,
        img["files"][0]["sha1"].as_str().unwrap_or("?")
    );
    Ok(())
}

/// Share or unshare: the ACL changes by one account.
fn share(c: &Client, image: &str, account: &str, add: bool) -> Result<()> {
    let img = resolve(c, image)?;
    let (uuid, _) = names(&img);
    let in_acl = img["acl"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(account)));
    if !add && !in_acl {
        bail!("error: image is not shared with {account}");
    }
    c.change_acl(&uuid, add, &[account]).map_err(describe)?;
    if add {
        println!("Shared image {image} with account {account}");
    } else {
        println!("Unshared image {image} with account {account}");
    }
    Ok(())
}
