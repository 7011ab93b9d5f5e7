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
//! | `files` | upload and download of an image's file, with progress and checks |

mod files;
mod follow;
mod view;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Result, anyhow, bail};
use clap::{Args, Subcommand};
use imgstore::http::client::Client;
use imgstore::imgapi::manifest::Manifest;
use imgstore::imgapi::share::CloneReport;
use serde_json::{Map, Value, json};

use super::connect::{ConnArgs, pick_datacenters};
pub(crate) use super::connect::{client, describe};
use super::emit;

/// What `imgstore image --help` says after the commands.
const IMAGE_HELP: &str = "\
IMAGE is a uuid, a short id (its first eight hex digits), a name (the latest
published), or NAME@VERSION. A name means your own images first, then those
shared with you or public; get, --origin, clone and copy look at active
images only (get -a: any state).

FLAGS in listings (node-triton's): I incremental (has an origin), P public,
X not active, + you share it with others, S shared with you.

Columns for list -o: shortid, id, name, version, state, flags, os, type,
pubdate, pub (full time), size, owner, or any manifest field.";

#[derive(Args, Debug)]
#[command(after_long_help = IMAGE_HELP, after_help = IMAGE_HELP)]
pub struct ImageArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// JSON output: list one image a line, copy and wait progress as
    /// `status`/`summary` lines, lineage whole, and every other command the
    /// image it leaves (delete: `{"uuid", "deleted": true}`).
    #[arg(short = 'j', long, global = true)]
    pub json: bool,
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
        /// All states (state=all).
        #[arg(short = 'a', long)]
        all: bool,
        /// Sort by these fields, comma-separated (a leading `-` reverses
        /// one), as node-triton's `-s`; default `published_at`.
        #[arg(
            short = 's',
            long,
            default_value = "published_at",
            allow_hyphen_values = true
        )]
        sort: String,
        /// Filters: name=, version=, os=, type=, public=, state=, owner=.
        filters: Vec<String>,
    },
    /// Show an image's manifest (a name means an active image).
    Get {
        image: String,
        /// Look at images in every state, not only active ones.
        #[arg(short = 'a', long)]
        all: bool,
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
        /// The image this one derives from (an active image).
        #[arg(long)]
        origin: Option<String>,
        /// Allow an origin another account shares with you (not public):
        /// its owner can then block deleting or changing it.
        #[arg(long)]
        allow_shared_origin: bool,
        #[arg(long)]
        public: bool,
        /// More manifest fields as KEY=VALUE (VALUE may be JSON).
        fields: Vec<String>,
    },
    /// Upload an image's file (a progress bar on a terminal).
    Upload {
        image: String,
        file: PathBuf,
        #[arg(long, default_value = "none")]
        compression: String,
        /// No progress bar.
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Download an image's file to FILE or standard output (`-`), checked
    /// against the manifest's SHA-1 (and Content-MD5); a FILE that exists
    /// in part is resumed with a Range request.
    #[command(alias = "get-file")]
    Download {
        image: String,
        /// Where to write it (default: standard output).
        #[arg(short = 'o', long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// No progress bar.
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Activate an image: it becomes `active` and, if public or shared,
    /// visible to others (it must have its file).
    Activate { image: String },
    /// Change fields: KEY=VALUE (VALUE may be JSON; empty deletes).
    Update { image: String, fields: Vec<String> },
    /// Enable a disabled image: it is provisionable again.
    Enable { image: String },
    /// Disable an image: it stays, but no new instance may be made from it.
    Disable { image: String },
    /// Delete images (asks first on a terminal, unless -f).
    #[command(alias = "rm")]
    Delete {
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
        /// Do not ask.
        #[arg(short = 'f', long)]
        force: bool,
    },
    /// Share an image with an account (its uuid or its login).
    Share {
        image: String,
        #[arg(value_name = "ACCOUNT")]
        member: String,
        /// Say what would change, change nothing.
        #[arg(short = 'n', long)]
        dry_run: bool,
    },
    /// Stop sharing an image with an account (its uuid or its login).
    Unshare {
        image: String,
        #[arg(value_name = "ACCOUNT")]
        member: String,
        /// Say what would change, change nothing.
        #[arg(short = 'n', long)]
        dry_run: bool,
    },
    /// Clone an image shared with you (and its origin chain) into your account.
    Clone {
        image: String,
        /// Say what would be cloned, change nothing.
        #[arg(short = 'n', long)]
        dry_run: bool,
    },
    /// Copy your image from this datacenter to others, with live progress.
    #[command(alias = "cp")]
    Copy {
        image: String,
        /// Target datacenters (names from the profile), as node-triton's
        /// `cp IMAGE DC` takes them.
        #[arg(value_name = "DC", conflicts_with = "to")]
        dcs: Vec<String>,
        /// Target datacenters, comma-separated, or `all`.
        #[arg(long, required_unless_present = "dcs")]
        to: Option<String>,
        /// No progress, only the result.
        #[arg(short = 'q', long)]
        quiet: bool,
        /// Check the targets and say what would be copied; copy nothing.
        #[arg(short = 'n', long)]
        dry_run: bool,
    },
    /// Wait for images to reach a state, following any copy in progress.
    Wait {
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
        /// States to wait for, comma-separated: active, unactivated,
        /// disabled, creating, failed.
        #[arg(short = 's', long, default_value = "active,failed")]
        states: String,
        /// No progress, only the result.
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Where an image comes from, what derives from it, what it costs.
    Lineage { image: String },
    /// Import an image from another IMGAPI as `sdc-imgadm import -S`
    /// does: the manifest (AdminImportImage), the file (AddImageFile with
    /// `source`), activation. Operators.
    Import {
        /// The image's uuid on the source.
        uuid: String,
        /// The IMGAPI to import from (e.g. https://images.smartos.org).
        #[arg(short = 'S', long)]
        source: String,
        /// Import into these datacenters of the profile (comma-separated,
        /// or `all`) instead of the one daemon.
        #[arg(long)]
        to: Option<String>,
    },
}

/// Which images a name may stand for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Among {
    /// Images in any state (commands that change an image of one's own).
    All,
    /// Active images only (`get`, `--origin`, `clone`, `copy`), as
    /// node-triton resolves names.
    Active,
}

/// Resolves a uuid, a short id, a name (the latest published) or
/// name@version. The caller's own images come first: a name that another
/// account shares with the caller never shadows one of its own.
pub(crate) fn resolve_among(c: &Client, name: &str, among: Among) -> Result<Manifest> {
    if name.len() == 36 && name.chars().filter(|ch| *ch == '-').count() == 4 {
        return c.get_image(name).map_err(describe);
    }
    let state = match among {
        Among::All => "all",
        Among::Active => "active",
    };
    let list = c.list_all_images(&[("state", state)]).map_err(describe)?;
    let (n, v) = match name.split_once('@') {
        Some((n, v)) => (n, Some(v)),
        None => (name, None),
    };
    let mut hits: Vec<&Manifest> = list
        .iter()
        .filter(|i| i.name == n && v.is_none_or(|v| i.version == v))
        .collect();
    if hits.is_empty() && v.is_none() {
        hits = list
            .iter()
            .filter(|i| i.uuid.to_string().split('-').next() == Some(name))
            .collect();
    }
    if let Some(me) = c.account()
        && hits.iter().any(|i| i.owner.to_string() == me)
    {
        hits.retain(|i| i.owner.to_string() == me);
    }
    hits.sort_by_key(|i| i.published_at.clone().unwrap_or_default());
    let which = match among {
        Among::All => "",
        Among::Active => " among active images",
    };
    hits.last()
        .map(|v| (*v).clone())
        .ok_or_else(|| anyhow!("error: no image {name:?} at {}{which}", c.base()))
}

/// [`resolve_among`] every state.
pub(crate) fn resolve(c: &Client, name: &str) -> Result<Manifest> {
    resolve_among(c, name, Among::All)
}

/// `uuid` and `name@version` of a manifest.
pub(crate) fn names(img: &Manifest) -> (String, String) {
    (
        img.uuid.to_string(),
        format!("{}@{}", img.name, img.version),
    )
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
        Err(e) => super::connect::report(&format!("image {name}"), &e),
    }
}

fn execute(args: ImageArgs) -> Result<()> {
    let (c, prof) = args.conn.connect()?;
    let account = c.account().map(str::to_string);
    let json = args.json;
    match &args.command {
        ImageCommand::List {
            long,
            output,
            no_header,
            all,
            sort,
            filters,
        } => view::list(
            &c,
            &view::Listing {
                long: *long,
                output: output.as_deref(),
                header: !*no_header,
                json,
                all: *all,
                sort,
            },
            filters,
        ),
        ImageCommand::Get { image, all } => {
            let among = if *all { Among::All } else { Among::Active };
            say!(
                "{}",
                serde_json::to_string_pretty(&resolve_among(&c, image, among)?)?
            );
            Ok(())
        }
        cmd @ ImageCommand::Create { .. } => create(&c, cmd, json),
        ImageCommand::Upload {
            image,
            file,
            compression,
            quiet,
        } => files::upload(&c, image, file, compression, json, *quiet),
        ImageCommand::Download {
            image,
            output,
            quiet,
        } => files::download(&c, image, output.as_deref(), json, *quiet),
        ImageCommand::Activate { image }
        | ImageCommand::Enable { image }
        | ImageCommand::Disable { image } => {
            let (action, done) = match &args.command {
                ImageCommand::Activate { .. } => ("activate", "Activated"),
                ImageCommand::Enable { .. } => ("enable", "Enabled"),
                _ => ("disable", "Disabled"),
            };
            act(&c, image, action, None, json, done)
        }
        ImageCommand::Update {
            image,
            fields: pairs,
        } => {
            let body = fields(pairs, true)?;
            act(&c, image, "update", Some(body), json, "Updated")
        }
        ImageCommand::Delete { images, force } => delete(&c, images, *force, json),
        ImageCommand::Share {
            image,
            member,
            dry_run,
        } => share(&c, image, member, true, *dry_run, json),
        ImageCommand::Unshare {
            image,
            member,
            dry_run,
        } => share(&c, image, member, false, *dry_run, json),
        ImageCommand::Clone { image, dry_run } => clone(&c, image, *dry_run, json),
        ImageCommand::Lineage { image } => {
            let (uuid, _) = names(&resolve(&c, image)?);
            let lineage = c.lineage(&uuid).map_err(describe)?;
            emit(json, &lineage, || view::lineage(&lineage))
        }
        ImageCommand::Copy {
            image,
            dcs,
            to,
            quiet,
            dry_run,
        } => {
            let account = account.clone().ok_or_else(|| {
                anyhow!("error: copying needs --account (copies are of one's own images)")
            })?;
            let to = to.clone().unwrap_or_else(|| dcs.join(","));
            let show = follow::Show::pick(json, *quiet);
            follow::copy(&c, &prof.datacenters, &account, image, &to, show, *dry_run)
        }
        ImageCommand::Wait {
            images,
            states,
            quiet,
        } => follow::wait(&c, images, states, follow::Show::pick(json, *quiet)),
        ImageCommand::Import { uuid, source, to } => {
            import(&c, &prof.datacenters, uuid, source, to.as_deref(), json)
        }
    }
}

/// `create --name N --version V ...`: an unactivated image.
fn create(c: &Client, cmd: &ImageCommand, json: bool) -> Result<()> {
    let ImageCommand::Create {
        name,
        version,
        type_,
        os,
        description,
        origin,
        allow_shared_origin,
        public,
        fields: extra,
    } = cmd
    else {
        bail!("error: not a create command");
    };
    let mut body = fields(extra, false)?;
    if c.account().is_none() && !body.contains_key("owner") {
        bail!(
            "error: an operator's image needs an owner: add owner=ACCOUNT (a uuid or a login), or create it with --account ACCOUNT"
        );
    }
    body.insert("name".into(), json!(name));
    body.insert("version".into(), json!(version));
    body.insert("type".into(), json!(type_));
    body.insert("os".into(), json!(os));
    if let Some(d) = description {
        body.insert("description".into(), json!(d));
    }
    if let Some(o) = origin {
        body.insert(
            "origin".into(),
            json!(origin_of(c, o, *allow_shared_origin)?),
        );
    }
    if *public {
        body.insert("public".into(), json!(true));
    }
    let img = c.create_image(&Value::Object(body)).map_err(describe)?;
    emit(json, &img, || {
        format!("Created image {} ({name}@{version})", img.uuid)
    })
}

/// `POST /images/UUID?action=ACTION` on the image `name`, then what was
/// `done` (an update names no name@version) or the image it leaves.
fn act(
    c: &Client,
    name: &str,
    action: &str,
    fields: Option<Map<String, Value>>,
    json: bool,
    done: &str,
) -> Result<()> {
    let (uuid, label) = names(&resolve(c, name)?);
    let text = match &fields {
        Some(_) => format!("{done} image {uuid}"),
        None => format!("{done} image {uuid} ({label})"),
    };
    let body = Value::Object(fields.unwrap_or_default());
    let img = c.image_action(&uuid, action, &body).map_err(describe)?;
    emit(json, &img, || text)
}

/// The uuid of the active image `name` to build on: one's own or a public
/// one, or (with `allow_shared`) one another account shares.
fn origin_of(c: &Client, name: &str, allow_shared: bool) -> Result<uuid::Uuid> {
    let img = resolve_among(c, name, Among::Active)?;
    let shared = c.account().is_some_and(|me| img.owner.to_string() != me) && !img.public;
    if shared && !allow_shared {
        bail!(
            "error: origin {name:?} ({}) belongs to account {} and is shared with you; \
             its owner could then block deleting it: pass --allow-shared-origin to build on it anyway",
            img.uuid,
            img.owner
        );
    }
    Ok(img.uuid)
}

/// `clone [-n] IMAGE`.
fn clone(c: &Client, image: &str, dry_run: bool, json: bool) -> Result<()> {
    let img = resolve_among(c, image, Among::Active)?;
    let (uuid, label) = names(&img);
    if dry_run {
        let plan: CloneReport = c
            .get(&format!("/images/{uuid}/clone-plan"), &[])
            .map_err(describe)?;
        say!(
            "Would clone image {uuid} ({label}) of account {} into account {}",
            img.owner,
            c.account().unwrap_or("(operator)")
        );
        for o in &plan.cloned {
            say!("Would clone its origin {} too (disabled)", o.source);
        }
        for o in &plan.reused {
            say!(
                "Would keep your clone {} of its origin {}",
                o.clone,
                o.source
            );
        }
        for why in &plan.not_reused {
            say!("Note: {why}");
        }
        return Ok(());
    }
    let (clone, headers) = c
        .post::<Manifest>(&format!("/images/{uuid}/clone"), &[], &json!({}))
        .map_err(describe)?;
    let (new, label) = names(&clone);
    emit(json, &clone, || {
        let mut out = format!("Cloned image {image} to {new} ({label})");
        let report = headers
            .get(imgstore::http::wire::CLONE_ORIGINS)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| serde_json::from_str::<CloneReport>(v).ok())
            .unwrap_or_default();
        for o in &report.cloned {
            out.push_str(&format!(
                "\nCloned its origin {} to {} (disabled)",
                o.source, o.clone
            ));
        }
        for o in &report.reused {
            out.push_str(&format!(
                "\nKept your clone {} of its origin {}",
                o.clone, o.source
            ));
        }
        for why in &report.not_reused {
            out.push_str(&format!("\nNote: {why}"));
        }
        out
    })
}

/// `import --source URL UUID [--to DCS]`: AdminImportImage from `source`
/// into this daemon or each named datacenter; one that fails does not stop
/// the others, and the run ends with status 1 if any failed.
fn import(
    c: &Client,
    dcs: &BTreeMap<String, String>,
    uuid: &str,
    source: &str,
    to: Option<&str>,
    json: bool,
) -> Result<()> {
    let targets: Vec<(String, Client)> = match to {
        None => vec![(c.base().to_string(), c.clone())],
        Some(list) => {
            let mut out = Vec::new();
            for (n, url) in pick_datacenters(dcs, list, None, "; nothing imported")? {
                out.push((n, client(&url, c.account())?));
            }
            out
        }
    };
    let mut failed = Vec::new();
    for (name, target) in &targets {
        // sdc-imgadm's three steps: the manifest, the file, activation.
        let done = target
            .admin_import_from(uuid, source)
            .and_then(|_| target.add_file_from_source(uuid, source))
            .and_then(|_| target.image_action(uuid, "activate", &json!({})));
        match done {
            Ok(img) if json => say!("{}", serde_json::to_string(&img)?),
            Ok(img) => {
                let (uuid, label) = names(&img);
                say!("Imported image {uuid} ({label}) into {name}");
            }
            Err(e) => failed.push(format!("{name}: {:#}", describe(e))),
        }
    }
    if !failed.is_empty() {
        bail!(
            "error: imported into {} of {}; failed: {}",
            targets.len() - failed.len(),
            targets.len(),
            failed.join("; ")
        );
    }
    Ok(())
}

/// `delete [-f] IMAGE...`: every name resolved first (an unknown one
/// deletes nothing), a question on a terminal unless `-f`, then each.
fn delete(c: &Client, images: &[String], force: bool, json: bool) -> Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    let mut targets = Vec::new();
    for name in images {
        targets.push(names(&resolve(c, name)?));
    }
    if !force && std::io::stdin().is_terminal() {
        let list: Vec<String> = targets
            .iter()
            .map(|(uuid, label)| format!("{uuid} ({label})"))
            .collect();
        eprint!(
            "Delete image{} {}? [y/N] ",
            if list.len() == 1 { "" } else { "s" },
            list.join(", ")
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            bail!("error: aborting (nothing deleted)");
        }
    }
    for (uuid, label) in &targets {
        c.delete_image(uuid).map_err(describe)?;
        emit(json, &json!({"uuid": uuid, "deleted": true}), || {
            format!("Deleted image {uuid} ({label})")
        })?;
    }
    Ok(())
}

/// Share or unshare: the ACL changes by one account.
fn share(
    c: &Client,
    image: &str,
    account: &str,
    add: bool,
    dry_run: bool,
    json: bool,
) -> Result<()> {
    let img = resolve(c, image)?;
    let (uuid, label) = names(&img);
    let member = super::connect::account_uuid(c, account)?;
    // A login is named with its uuid, so the line says who it is.
    let account = match member == account {
        true => member.clone(),
        false => format!("{account} ({member})"),
    };
    let in_acl = img.acl.iter().any(|x| x.to_string() == member);
    if !add && !in_acl {
        bail!("error: image is not shared with {account}");
    }
    if dry_run {
        let what = match (add, in_acl) {
            (true, true) => "is shared with",
            (true, false) => "would be shared with",
            (false, _) => "would no longer be shared with",
        };
        say!("Image {uuid} ({label}) {what} account {account}");
        return Ok(());
    }
    let changed = c.change_acl(&uuid, add, &[&member]).map_err(describe)?;
    let done = if add { "Shared" } else { "Unshared" };
    emit(json, &changed, || {
        format!("{done} image {image} with account {account}")
    })
}
