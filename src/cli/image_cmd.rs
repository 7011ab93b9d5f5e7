//! `imgstore image ...`: a command-line client for imgstore (and IMGAPI)
//! daemons with node-triton's ergonomics, plus live byte progress for
//! copies between datacenters.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
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

/// An error the daemon answered with, or a network failure.
struct Client {
    url: String,
    account: Option<String>,
    http: reqwest::blocking::Client,
}

fn api_error(resp: reqwest::blocking::Response) -> anyhow::Error {
    let status = resp.status();
    let body: Option<Value> = resp.json().ok();
    match body {
        Some(b) if b.get("code").is_some() => anyhow!(
            "error ({}): {}",
            b["code"].as_str().unwrap_or_default(),
            b["message"].as_str().unwrap_or_default()
        ),
        _ => anyhow!("error: the server answered {status}"),
    }
}

impl Client {
    fn new(url: &str, account: Option<String>) -> Result<Self> {
        Ok(Self {
            url: url.trim_end_matches('/').to_string(),
            account,
            http: reqwest::blocking::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .build()?,
        })
    }

    fn with_account(&self, path: &str) -> String {
        let sep = if path.contains('?') { '&' } else { '?' };
        match &self.account {
            Some(a) => format!("{}{path}{sep}account={a}", self.url),
            None => format!("{}{path}", self.url),
        }
    }

    fn send(
        &self,
        req: reqwest::blocking::RequestBuilder,
        url: &str,
    ) -> Result<reqwest::blocking::Response> {
        let resp = req
            .header("accept-version", "*")
            .send()
            .map_err(|e| anyhow!("error: cannot reach {url}: {e}"))?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(api_error(resp))
        }
    }

    fn get(&self, path: &str) -> Result<Value> {
        let url = self.with_account(path);
        let r = self.send(self.http.get(&url), &url)?;
        r.json()
            .map_err(|e| anyhow!("error: bad answer from {url}: {e}"))
    }

    fn post(&self, path: &str, body: &Value) -> Result<(Value, reqwest::header::HeaderMap)> {
        let url = self.with_account(path);
        let r = self.send(self.http.post(&url).json(body), &url)?;
        let h = r.headers().clone();
        let v = if r.status() == reqwest::StatusCode::NO_CONTENT {
            Value::Null
        } else {
            r.json().unwrap_or(Value::Null)
        };
        Ok((v, h))
    }

    fn delete(&self, path: &str) -> Result<()> {
        let url = self.with_account(path);
        self.send(self.http.delete(&url), &url).map(|_| ())
    }

    /// Resolves uuid, short id, name (latest by published_at) or name@version.
    fn resolve(&self, name: &str) -> Result<Value> {
        if name.len() == 36 && name.chars().filter(|c| *c == '-').count() == 4 {
            return self.get(&format!("/images/{name}"));
        }
        let all = self.get("/images?state=all")?;
        let list = all.as_array().cloned().unwrap_or_default();
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
            .ok_or_else(|| anyhow!("error: no image {name:?} at {}", self.url))
    }
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

fn short(uuid: &str) -> &str {
    uuid.split('-').next().unwrap_or(uuid)
}

/// node-triton's FLAGS, in its order: I origin, P public, X not active,
/// + you share it, S shared with you.
fn flags(img: &Value, account: Option<&str>) -> String {
    let mut f = String::new();
    if img.get("origin").is_some() {
        f.push('I');
    }
    if img["public"] == true {
        f.push('P');
    }
    if img["state"] != "active" {
        f.push('X');
    }
    let acl: Vec<&str> = img["acl"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(a) = account {
        if img["owner"] == a && !acl.is_empty() {
            f.push('+');
        }
        if acl.contains(&a) {
            f.push('S');
        }
    }
    f
}

fn column(img: &Value, col: &str, account: Option<&str>) -> String {
    let s = |k: &str| img[k].as_str().unwrap_or("-").to_string();
    match col {
        "shortid" => short(img["uuid"].as_str().unwrap_or("-")).to_string(),
        "id" | "uuid" => s("uuid"),
        "flags" => flags(img, account),
        "pubdate" => img["published_at"]
            .as_str()
            .map(|p| p.get(..10).unwrap_or(p).to_string())
            .unwrap_or_else(|| "-".into()),
        "pub" => img["published_at"]
            .as_str()
            .map(|p| format!("{}Z", p.get(..19).unwrap_or(p)))
            .unwrap_or_else(|| "-".into()),
        "size" => img["files"][0]["size"]
            .as_u64()
            .map(|n| n.to_string())
            .unwrap_or_else(|| "-".into()),
        other => match &img[other] {
            Value::String(v) => v.clone(),
            Value::Null => "-".into(),
            v => v.to_string(),
        },
    }
}

fn print_table(rows: &[Value], cols: &[&str], header: bool, account: Option<&str>) {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| cols.iter().map(|c| column(r, c, account)).collect())
        .collect();
    let mut widths: Vec<usize> = cols.iter().map(|c| c.len()).collect();
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let line = |vals: Vec<String>| {
        let mut s = String::new();
        for (i, (v, w)) in vals.iter().zip(&widths).enumerate() {
            if i + 1 == vals.len() {
                s.push_str(v);
            } else {
                s.push_str(&format!("{v:<w$}  ", w = *w));
            }
        }
        println!("{}", s.trim_end());
    };
    if header {
        line(cols.iter().map(|c| c.to_uppercase()).collect());
    }
    for row in cells {
        line(row);
    }
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

fn human(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
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
    let c = Client::new(&args.url, args.account.clone())?;
    let me = args.account.as_deref();
    match &args.command {
        ImageCommand::List {
            long,
            output,
            no_header,
            json,
            all,
            filters,
        } => {
            let mut q: Vec<String> = filters
                .iter()
                .map(|f| {
                    let (k, v) = f
                        .split_once('=')
                        .ok_or_else(|| anyhow!("error: filter {f:?} is not KEY=VALUE"))?;
                    Ok(format!("{k}={v}"))
                })
                .collect::<Result<_>>()?;
            if *all {
                q.push("state=all".into());
            }
            let path = if q.is_empty() {
                "/images".to_string()
            } else {
                format!("/images?{}", q.join("&"))
            };
            let mut list = c.get(&path)?.as_array().cloned().unwrap_or_default();
            list.sort_by_key(|i| i["published_at"].as_str().unwrap_or_default().to_string());
            if *json {
                for i in &list {
                    println!("{i}");
                }
                return Ok(());
            }
            let cols: Vec<&str> = match output {
                Some(o) => o.split(',').collect(),
                None if *long => vec![
                    "id", "name", "version", "state", "flags", "os", "type", "pubdate",
                ],
                None => vec![
                    "shortid", "name", "version", "flags", "os", "type", "pubdate",
                ],
            };
            print_table(&list, &cols, !no_header, me);
        }
        ImageCommand::Get { image } => {
            println!("{}", serde_json::to_string_pretty(&c.resolve(image)?)?);
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
                body.insert("origin".into(), c.resolve(o)?["uuid"].clone());
            }
            if *public {
                body.insert("public".into(), json!(true));
            }
            let (img, _) = c.post("/images", &Value::Object(body))?;
            println!(
                "Created image {} ({}@{})",
                img["uuid"].as_str().unwrap_or("?"),
                name,
                version
            );
        }
        ImageCommand::Upload {
            image,
            file,
            compression,
        } => {
            let img = c.resolve(image)?;
            let uuid = img["uuid"].as_str().unwrap_or_default();
            let f =
                std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
            let len = f.metadata()?.len();
            let url = c.with_account(&format!("/images/{uuid}/file?compression={compression}"));
            let resp = c.send(
                c.http
                    .put(&url)
                    .timeout(Duration::from_secs(24 * 3600))
                    .header("content-type", "application/octet-stream")
                    .body(reqwest::blocking::Body::sized(f, len)),
                &url,
            )?;
            let img: Value = resp.json()?;
            println!(
                "Uploaded {} bytes to image {uuid} (sha1 {})",
                len,
                img["files"][0]["sha1"].as_str().unwrap_or("?")
            );
        }
        ImageCommand::Activate { image }
        | ImageCommand::Enable { image }
        | ImageCommand::Disable { image } => {
            let (action, done) = match &args.command {
                ImageCommand::Activate { .. } => ("activate", "Activated"),
                ImageCommand::Enable { .. } => ("enable", "Enabled"),
                _ => ("disable", "Disabled"),
            };
            let img = c.resolve(image)?;
            let uuid = img["uuid"].as_str().unwrap_or_default();
            c.post(&format!("/images/{uuid}?action={action}"), &json!({}))?;
            println!(
                "{done} image {uuid} ({}@{})",
                img["name"].as_str().unwrap_or("?"),
                img["version"].as_str().unwrap_or("?")
            );
        }
        ImageCommand::Update {
            image,
            fields: pairs,
        } => {
            let img = c.resolve(image)?;
            let uuid = img["uuid"].as_str().unwrap_or_default();
            c.post(
                &format!("/images/{uuid}?action=update"),
                &Value::Object(fields(pairs, true)?),
            )?;
            println!("Updated image {uuid}");
        }
        ImageCommand::Delete { image } => {
            let img = c.resolve(image)?;
            let uuid = img["uuid"].as_str().unwrap_or_default();
            c.delete(&format!("/images/{uuid}"))?;
            println!(
                "Deleted image {uuid} ({}@{})",
                img["name"].as_str().unwrap_or("?"),
                img["version"].as_str().unwrap_or("?")
            );
        }
        ImageCommand::Share {
            image,
            member: account,
        }
        | ImageCommand::Unshare {
            image,
            member: account,
        } => {
            let share = matches!(args.command, ImageCommand::Share { .. });
            let img = c.resolve(image)?;
            let uuid = img["uuid"].as_str().unwrap_or_default();
            let acl: Vec<&str> = img["acl"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if !share && !acl.contains(&account.as_str()) {
                bail!("error: image is not shared with {account}");
            }
            let action = if share { "add" } else { "remove" };
            c.post(
                &format!("/images/{uuid}/acl?action={action}"),
                &json!([account]),
            )?;
            if share {
                println!("Shared image {image} with account {account}");
            } else {
                println!("Unshared image {image} with account {account}");
            }
        }
        ImageCommand::Clone { image } => {
            let img = c.resolve(image)?;
            let uuid = img["uuid"].as_str().unwrap_or_default();
            let (clone, _) = c.post(&format!("/images/{uuid}/clone"), &json!({}))?;
            println!(
                "Cloned image {image} to {} ({}@{})",
                clone["uuid"].as_str().unwrap_or("?"),
                clone["name"].as_str().unwrap_or("?"),
                clone["version"].as_str().unwrap_or("?")
            );
        }
        ImageCommand::Lineage { image } => {
            let img = c.resolve(image)?;
            let uuid = img["uuid"].as_str().unwrap_or_default();
            println!(
                "{}",
                serde_json::to_string_pretty(&c.get(&format!("/images/{uuid}/lineage"))?)?
            );
        }
        ImageCommand::Copy { image, to } => copy(&args, &c, image, to)?,
        ImageCommand::Wait { images, states } => wait(&c, images, states)?,
    }
    Ok(())
}

/// One target of a copy, or one job being waited for.
struct Tracked {
    dc: String,
    client: Client,
    job: String,
    bar: ProgressBar,
    done: bool,
}

fn copy(args: &ImageArgs, c: &Client, image: &str, to: &str) -> Result<()> {
    let account = args.account.clone().ok_or_else(|| {
        anyhow!("error: copying needs --account (copies are of one's own images)")
    })?;
    let dcs = profile(args)?;
    let here = c
        .get("/state")
        .ok()
        .and_then(|s| s["datacenterName"].as_str().map(str::to_string));
    let current = dcs
        .iter()
        .find(|(_, u)| **u == c.url)
        .map(|(n, _)| n.clone())
        .or(here)
        .ok_or_else(|| {
            anyhow!(
                "error: cannot tell which datacenter {} is: add it to the profile",
                c.url
            )
        })?;
    let targets: Vec<String> = if to == "all" {
        dcs.keys().filter(|n| **n != current).cloned().collect()
    } else {
        to.split(',').map(str::to_string).collect()
    };
    if targets.is_empty() {
        bail!("error: no datacenter to copy to (the profile lists none besides {current})");
    }
    let img = c.resolve(image)?;
    let uuid = img["uuid"].as_str().unwrap_or_default().to_string();
    let label = format!(
        "{}@{}",
        img["name"].as_str().unwrap_or("?"),
        img["version"].as_str().unwrap_or("?")
    );
    let multi = MultiProgress::new();
    let tty = std::io::stdout().is_terminal();
    let mut tracked = Vec::new();
    for dc in &targets {
        let url = dcs
            .get(dc)
            .ok_or_else(|| anyhow!("error: datacenter {dc:?} is not in the profile"))?;
        let tc = Client::new(url, Some(account.clone()))?;
        let (resp, headers) = tc.post(
            &format!("/images/{uuid}?action=import-from-datacenter&datacenter={current}"),
            &json!({}),
        )?;
        let job = resp["job_uuid"].as_str().unwrap_or_default().to_string();
        let wf = headers
            .get("workflow-api")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .unwrap_or_else(|| url.clone());
        let bar = if tty {
            multi.add(ProgressBar::new(0))
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template("{prefix:>10} [{bar:30}] {bytes}/{total_bytes} fetched, {msg} ({bytes_per_sec}, ETA {eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(dc.clone());
        tracked.push(Tracked {
            dc: dc.clone(),
            client: Client::new(&wf, None)?,
            job,
            bar,
            done: false,
        });
    }
    follow(&mut tracked, tty)?;
    let mut failed = Vec::new();
    for t in &tracked {
        let j = t.client.get(&format!("/jobs/{}", t.job))?;
        if j["execution"] == "succeeded" {
            println!("Copied image {uuid} ({label}) to datacenter {}", t.dc);
        } else {
            let err = j["chain_results"]
                .as_array()
                .and_then(|r| r.last())
                .map(|r| {
                    r["error"]["message"]
                        .as_str()
                        .unwrap_or("failed")
                        .to_string()
                });
            failed.push(format!(
                "{}: {}",
                t.dc,
                err.unwrap_or_else(|| "failed".into())
            ));
        }
    }
    if !failed.is_empty() {
        bail!("error (CopyFailed): {}", failed.join("; "));
    }
    Ok(())
}

/// Polls jobs until they end, drawing bars (terminal) or printing a line
/// per datacenter every couple of seconds (not a terminal).
fn follow(tracked: &mut [Tracked], tty: bool) -> Result<()> {
    let mut last_line = Instant::now() - Duration::from_secs(10);
    loop {
        let mut running = 0;
        let print_now = !tty && last_line.elapsed() >= Duration::from_secs(2);
        for t in tracked.iter_mut().filter(|t| !t.done) {
            let j = t.client.get(&format!("/jobs/{}", t.job))?;
            let p = &j["progress"];
            let n = |k: &str| p[k].as_u64().unwrap_or(0);
            t.bar.set_length(n("bytes_to_fetch"));
            t.bar.set_position(n("bytes_fetched"));
            t.bar
                .set_message(format!("{} found locally", human(n("bytes_local"))));
            let ended = j["execution"] == "succeeded" || j["execution"] == "failed";
            if print_now || (!tty && ended) {
                let rate = n("rate_bytes_per_s");
                let left = n("bytes_to_fetch").saturating_sub(n("bytes_fetched"));
                let eta = left
                    .checked_div(rate)
                    .map(|s| format!("{s}s"))
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{}: {} of {} fetched, {} found locally, {}/s, ETA {eta}, {}",
                    t.dc,
                    human(n("bytes_fetched")),
                    human(n("bytes_to_fetch")),
                    human(n("bytes_local")),
                    human(rate),
                    j["execution"].as_str().unwrap_or("?")
                );
                let _ = std::io::stdout().flush();
            }
            if ended {
                t.done = true;
                t.bar.finish();
            } else {
                running += 1;
            }
        }
        if print_now {
            last_line = Instant::now();
        }
        if running == 0 {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(if tty { 200 } else { 250 }));
    }
}

fn wait(c: &Client, images: &[String], states: &str) -> Result<()> {
    let want: Vec<&str> = states.split(',').collect();
    let tty = std::io::stdout().is_terminal();
    for (i, name) in images.iter().enumerate() {
        let img = c.resolve(name)?;
        let uuid = img["uuid"].as_str().unwrap_or_default().to_string();
        if want.contains(&img["state"].as_str().unwrap_or_default()) {
            println!(
                "Image {uuid} already {}",
                img["state"].as_str().unwrap_or("?")
            );
            continue;
        }
        println!("Waiting for image {name} ({uuid}) to enter state (states: {states})");
        // A copy in progress into this datacenter: follow its bytes.
        let jobs = c
            .get(&format!("/images/{uuid}/jobs"))
            .unwrap_or(Value::Null);
        if let Some(job) = jobs
            .as_array()
            .and_then(|j| j.last())
            .filter(|j| j["execution"] == "running" || j["execution"] == "queued")
        {
            let bar = if tty {
                ProgressBar::new(0)
            } else {
                ProgressBar::hidden()
            };
            let mut t = [Tracked {
                dc: "copy".into(),
                client: Client::new(&c.url, None)?,
                job: job["uuid"].as_str().unwrap_or_default().to_string(),
                bar,
                done: false,
            }];
            follow(&mut t, tty)?;
        }
        let start = Instant::now();
        loop {
            let img = c.get(&format!("/images/{uuid}"))?;
            let state = img["state"].as_str().unwrap_or_default().to_string();
            if want.contains(&state.as_str()) {
                println!(
                    "{}/{}: Image {uuid} moved to state {state}",
                    i + 1,
                    images.len()
                );
                break;
            }
            if start.elapsed() > Duration::from_secs(24 * 3600) {
                bail!("error: gave up waiting for image {uuid}");
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    Ok(())
}
