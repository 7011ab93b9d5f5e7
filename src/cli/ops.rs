//! Operators' commands against a running daemon, over HTTP (the offline
//! `imgstore store ...` commands cannot open a data dir a daemon holds):
//!
//! * `imgstore admin stats|gc|verify|cluster`: the daemon's `/state`
//!   (operator only: run without `--account`);
//! * `imgstore account settings|trust|untrust`: an account's
//!   `image_share_trusted_accounts`;
//! * `imgstore datacenters`: the profile's datacenters, each asked its name.

use super::emit;
use anyhow::{Result, anyhow, bail};
use clap::{Args, Subcommand};
use imgstore::http::client::Client;
use imgstore::imgapi::share::AccountSettings;
use serde_json::json;

use super::connect::{ConnArgs, client, describe, report};

#[derive(Args, Debug)]
pub struct AdminArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// JSON output.
    #[arg(short = 'j', long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Store-wide figures: logical and stored bytes, files, chunks, segments.
    Stats,
    /// Collect garbage now; exit 1 if a segment could not be compacted.
    Gc {
        /// Garbage ratio at which a segment is rewritten (0-1).
        #[arg(long, default_value_t = 0.3)]
        threshold: f64,
    },
    /// Check every record, refcount and reference, and every object in the
    /// bucket (existence and length); exit 1 on problems.
    Verify {
        /// Also read the bucket's objects that have a cached copy and
        /// compare them with it.
        #[arg(long)]
        read_data: bool,
        /// Fix what can be fixed: refcounts, accounting, a bucket object
        /// whose cached copy is sound (uploaded again).
        #[arg(long)]
        repair: bool,
    },
    /// The datacenter's cluster as this daemon sees it: each member's
    /// role, the writer's epoch and each follower's lag; exit 1 when no
    /// member writes.
    Cluster,
}

#[derive(Args, Debug)]
pub struct AccountArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// JSON output.
    #[arg(short = 'j', long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: AccountCommand,
}

#[derive(Subcommand, Debug)]
pub enum AccountCommand {
    /// Show the account's settings.
    Settings,
    /// Trust accounts (uuids or logins): images they share with this
    /// account may be provisioned from (`image_share_trusted_accounts`).
    Trust {
        #[arg(required = true, value_name = "ACCOUNT")]
        accounts: Vec<String>,
    },
    /// Stop trusting accounts.
    Untrust {
        #[arg(required = true, value_name = "ACCOUNT")]
        accounts: Vec<String>,
    },
}

#[derive(Args, Debug)]
pub struct DatacentersArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// JSON output.
    #[arg(short = 'j', long)]
    pub json: bool,
}

fn operator(c: &Client) -> Result<()> {
    if let Some(a) = c.account() {
        bail!(
            "error: admin commands are for operators, and this one would act as account {a}: \
             pass --operator (or drop --account, IMGSTORE_ACCOUNT and the profile's account)"
        );
    }
    Ok(())
}

pub fn admin(args: AdminArgs) -> i32 {
    let name = match args.command {
        AdminCommand::Stats => "admin stats",
        AdminCommand::Gc { .. } => "admin gc",
        AdminCommand::Verify { .. } => "admin verify",
        AdminCommand::Cluster => "admin cluster",
    };
    match run_admin(&args) {
        Ok(status) => status,
        Err(e) => report(name, &e),
    }
}

fn run_admin(args: &AdminArgs) -> Result<i32> {
    let (c, _) = args.conn.connect()?;
    operator(&c)?;
    match &args.command {
        AdminCommand::Cluster => cluster(&c, args.json),
        AdminCommand::Stats => {
            let v = c.state().map_err(describe)?;
            let s = &v.store;
            emit(args.json, &v, || {
                let mut line = format!(
                    "datacenter {}, up {} s: {} files, {} chunks, {} segments; {} bytes logical, {} stored ({} live)",
                    v.datacenter_name,
                    v.uptime_s,
                    s.files,
                    s.chunks,
                    s.segments,
                    s.logical_bytes,
                    s.stored_bytes,
                    s.live_stored_bytes,
                );
                if let Some(t) = &s.tier {
                    line.push_str(&format!(
                        "; bucket: {} bytes remote, {} cached, {} waiting in {} segments",
                        t.remote_bytes, t.cached_bytes, t.local_bytes, t.local_segments
                    ));
                }
                if let Some(d) = &s.disk {
                    line.push_str(&format!(
                        "; disk: {} of {} bytes free",
                        d.free_bytes, d.size_bytes
                    ));
                }
                line
            })?;
            Ok(0)
        }
        AdminCommand::Gc { threshold } => {
            let v = c.gc(Some(*threshold)).map_err(describe)?;
            let done = &v.done;
            let failed = done.failed.len();
            emit(args.json, &v, || {
                format!(
                    "gc: {} segments deleted, {} rewritten, {} bytes freed{}",
                    done.segments_deleted,
                    done.segments_rewritten,
                    done.bytes_freed,
                    if failed > 0 {
                        format!("; {failed} segments left as they are (see -j)")
                    } else {
                        String::new()
                    }
                )
            })?;
            Ok(if failed > 0 { 1 } else { 0 })
        }
        AdminCommand::Verify { read_data, repair } => {
            let v = c.verify(*read_data, *repair).map_err(describe)?;
            let problems: Vec<_> = v.report.problems.iter().filter(|p| !p.repaired).collect();
            emit(args.json, &v, || {
                let mut s = format!(
                    "{} files, {} chunks, {} records checked: {}",
                    v.report.files,
                    v.report.chunks,
                    v.report.records_checked,
                    if problems.is_empty() {
                        "ok"
                    } else {
                        "PROBLEMS"
                    }
                );
                for p in &problems {
                    s.push_str(&format!("\n  {}: {}", p.kind, p.detail));
                }
                if !v.damaged_images.is_empty() {
                    let images: Vec<String> =
                        v.damaged_images.iter().map(|u| u.to_string()).collect();
                    s.push_str(&format!("\n  images touched: {}", images.join(", ")));
                }
                s
            })?;
            Ok(if problems.is_empty() { 0 } else { 1 })
        }
    }
}

pub fn account(args: AccountArgs) -> i32 {
    let name = match args.command {
        AccountCommand::Settings => "account settings",
        AccountCommand::Trust { .. } => "account trust",
        AccountCommand::Untrust { .. } => "account untrust",
    };
    match run_account(&args) {
        Ok(()) => 0,
        Err(e) => report(name, &e),
    }
}

/// "account A trusts B, C" (or "no account").
fn trusts_line(me: &str, settings: &AccountSettings) -> String {
    let t = trusted(settings);
    if t.is_empty() {
        format!("account {me} trusts no account")
    } else {
        format!("account {me} trusts {}", t.join(", "))
    }
}

fn trusted(settings: &AccountSettings) -> Vec<String> {
    settings
        .image_share_trusted_accounts
        .iter()
        .map(uuid::Uuid::to_string)
        .collect()
}

fn run_account(args: &AccountArgs) -> Result<()> {
    let (c, _) = args.conn.connect()?;
    let me = c
        .account()
        .ok_or_else(|| anyhow!("error: whose settings? pass --account (or set it in the profile)"))?
        .to_string();
    let current = c.settings(&me).map_err(describe)?;
    let (accounts, add) = match &args.command {
        AccountCommand::Settings => {
            return emit(args.json, &current, || trusts_line(&me, &current));
        }
        AccountCommand::Trust { accounts } => (accounts, true),
        AccountCommand::Untrust { accounts } => (accounts, false),
    };
    let accounts = accounts
        .iter()
        .map(|a| super::connect::account_uuid(&c, a))
        .collect::<Result<Vec<_>>>()?;
    let accounts = &accounts;
    let mut list = trusted(&current);
    if add {
        for a in accounts {
            if !list.contains(a) {
                list.push(a.clone());
            }
        }
    } else {
        list.retain(|t| !accounts.contains(t));
    }
    let body = json!({ "image_share_trusted_accounts": list });
    let after = c.put_settings(&me, &body).map_err(describe)?;
    emit(args.json, &after, || trusts_line(&me, &after))
}

/// `imgstore datacenters`: each of the profile's datacenters, the name it
/// answers with, or why it did not answer. Exit 1 if any did not.
pub fn datacenters(args: DatacentersArgs) -> i32 {
    let run = || -> Result<i32> {
        let (_, prof) = args.conn.connect()?;
        if prof.datacenters.is_empty() {
            bail!("error: the profile names no datacenters");
        }
        let mut rows = Vec::new();
        let mut down = 0;
        for (name, url) in &prof.datacenters {
            let answer = client(url, None)?.datacenter_name();
            let (state, says) = match answer {
                Ok(n) => ("up", n.unwrap_or_default()),
                Err(e) => {
                    down += 1;
                    ("down", format!("{:#}", describe(e)))
                }
            };
            rows.push(json!({"name": name, "url": url, "state": state, "answers": says}));
        }
        if args.json {
            for r in &rows {
                say!("{r}");
            }
        } else {
            say!("{:<12} {:<5} {:<32} ANSWERS", "NAME", "STATE", "URL");
            for r in &rows {
                say!(
                    "{:<12} {:<5} {:<32} {}",
                    r["name"].as_str().unwrap_or(""),
                    r["state"].as_str().unwrap_or(""),
                    r["url"].as_str().unwrap_or(""),
                    r["answers"].as_str().unwrap_or("")
                );
            }
        }
        Ok(if down > 0 { 1 } else { 0 })
    };
    match run() {
        Ok(s) => s,
        Err(e) => report("datacenters", &e),
    }
}

/// `admin cluster`: one line per member the bucket knows, the writer
/// first.
fn cluster(c: &Client, json: bool) -> Result<i32> {
    let v = c.state().map_err(describe)?;
    let Some(cl) = v.cluster else {
        bail!(
            "error: this daemon is not a cluster member (its config has no cluster.advertiseUrl)"
        );
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut members = cl.members.clone();
    members.sort_by_key(|m| {
        (
            m.role.as_str() != "writer" || m.epoch != cl.epoch,
            m.holder.clone(),
        )
    });
    let writes = members
        .iter()
        .any(|m| m.role.as_str() == "writer" && m.epoch == cl.epoch);
    emit(json, &cl, || {
        let mut out = format!(
            "epoch {}, writer {}",
            cl.epoch,
            cl.writer
                .as_deref()
                .unwrap_or("unknown (a failover is under way)")
        );
        for m in &members {
            // A record older than the writer's epoch is a member that
            // stopped (or was replaced) before the last failover.
            let stale = m.epoch < cl.epoch && m.role.as_str() == "writer";
            out.push_str(&format!(
                "\n  {:<8} {:<28} epoch {:<4} lag {:>5.1} s  seen {:>5.1} s ago{}",
                m.role.as_str(),
                m.advertise.as_deref().unwrap_or(&m.holder),
                m.epoch,
                m.lag_seconds,
                now_ms.saturating_sub(m.seen_ms) as f64 / 1000.0,
                if stale {
                    "  (stale: no longer writes)"
                } else {
                    ""
                }
            ));
        }
        out
    })?;
    Ok(if writes { 0 } else { 1 })
}
