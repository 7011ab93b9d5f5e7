//! `imgstore serve`: the IMGAPI daemon. With no options it stores data in
//! `./imgstore-data`, listens on 127.0.0.1:8080, in dc mode, as datacenter
//! `local`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;

use imgstore::daemon::{self, DaemonConfig};
use imgstore::service::Logger;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// IMGAPI-style JSON config; every key is in `imgstore config
    /// reference`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on (overrides the config).
    #[arg(long)]
    pub listen: Option<String>,
    /// Data directory (overrides the config).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// This datacenter's name (overrides the config).
    #[arg(long)]
    pub datacenter: Option<String>,
    /// Also serve CloudAPI's image endpoints (for the `triton` CLI) on this
    /// address; overrides `cloudapi.listen` of the config. Its users and
    /// keys come from the config's `cloudapi.users`.
    #[arg(long, value_name = "ADDR")]
    pub cloudapi_listen: Option<String>,
    /// Check the configuration (and the bucket of its `storage`, as a
    /// start does) and exit: 0 when the daemon would start.
    #[arg(long)]
    pub check_config: bool,
    /// More log lines: each `-v` lowers the config's `logLevel` one step
    /// (info, debug, trace).
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    pub verbose: u8,
}

pub fn run(args: ServeArgs) -> i32 {
    match serve(args) {
        Ok(()) => 0,
        Err(e) => {
            // One line, whatever the causes' texts hold, each cause once
            // (many errors repeat their source in their own text).
            let mut text = String::new();
            for cause in e.chain() {
                let t = cause.to_string();
                if !text.contains(&t) {
                    if !text.is_empty() {
                        text.push_str(": ");
                    }
                    text.push_str(&t);
                }
            }
            let line: Vec<&str> = text.split_whitespace().collect();
            eprintln!("imgstore serve: error: {}", line.join(" "));
            1
        }
    }
}

/// `logLevel` lowered one bunyan step (10) by each `-v`, down to trace.
fn log_level(configured: u8, verbose: u8) -> u8 {
    configured
        .saturating_sub(10u8.saturating_mul(verbose))
        .max(10)
}

/// The configuration file with the command line's settings over it.
fn configuration(args: &ServeArgs) -> Result<DaemonConfig> {
    let mut cfg = match &args.config {
        Some(p) => DaemonConfig::load(p)?,
        None => DaemonConfig::default(),
    };
    if let Some(l) = &args.listen {
        cfg.listen = l.clone();
    }
    if let Some(d) = &args.data_dir {
        cfg.data_dir = d.clone();
    }
    if let Some(d) = &args.datacenter {
        cfg.imgapi.datacenter_name = d.clone();
    }
    if let Some(l) = &args.cloudapi_listen {
        cfg.cloudapi.get_or_insert_with(Default::default).listen = l.clone();
    }
    Ok(cfg)
}

/// Completes on the first SIGINT or SIGTERM, after saying what happens
/// now; a second one ends the process at once.
async fn stopping(log: Logger, drain: std::time::Duration) {
    daemon::shutdown_signal().await;
    log.info(&format!(
        "stopping: requests in flight get up to {} s to finish; \
         SIGINT or SIGTERM again to stop now (a cut upload is not stored)",
        drain.as_secs()
    ));
    // A second signal ends the process at once: everything acknowledged
    // is durable already, nothing cut is stored.
    tokio::spawn(async move {
        daemon::shutdown_signal().await;
        log.info("stopping now, on a second signal");
        std::process::exit(130);
    });
}

fn serve(args: ServeArgs) -> Result<()> {
    let cfg = configuration(&args)?;
    if args.check_config {
        let opts = cfg.store_options()?;
        cfg.check_storage(&opts)?;
        println!(
            "imgstore serve: configuration ok{}",
            cfg.storage
                .as_ref()
                .map(|s| format!("; storage: {}", s.describe()))
                .unwrap_or_default()
        );
        return Ok(());
    }
    let log = Logger::stdout("imgstore").with_level(log_level(cfg.log_level, args.verbose));
    if cfg.cloudapi.as_ref().is_some_and(|c| c.keys.is_empty()) {
        log.log(
            40,
            "the CloudAPI face has no users: every request will be refused \
             (add cloudapi.users to the config)",
            serde_json::Map::new(),
        );
    }
    // The ports first: a start that cannot listen leaves nothing behind
    // (no data directory made for nothing).
    let imgapi_port = std::net::TcpListener::bind(&cfg.listen)
        .with_context(|| format!("listening on {}", cfg.listen))?;
    let face_port = match &cfg.cloudapi {
        Some(c) => Some(
            std::net::TcpListener::bind(&c.listen)
                .with_context(|| format!("listening for CloudAPI on {}", c.listen))?,
        ),
        None => None,
    };
    let serving = match &cfg.cluster {
        Some(c) if c.is_member() => Serving::Member(daemon::cluster::Member::start(
            &cfg,
            cfg.cloudapi.clone(),
            log.clone(),
        )?),
        _ => Serving::Alone(cfg.open(log.clone())?),
    };
    let rt = cfg.runtime().context("starting the async runtime")?;
    let drain = cfg.limits.shutdown_deadline;
    let result = rt.block_on(async {
        imgapi_port.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(imgapi_port)?;
        let addr = listener.local_addr()?;
        let face = match (&cfg.cloudapi, face_port) {
            (Some(c), Some(port)) => {
                port.set_nonblocking(true)?;
                let l = tokio::net::TcpListener::from_std(port)?;
                let scheme = if c.tls.is_some() { "https" } else { "http" };
                log.info(&format!(
                    "CloudAPI face listening on {scheme}://{}",
                    l.local_addr()?
                ));
                Some((l, c.clone()))
            }
            _ => None,
        };
        let role = match &serving {
            Serving::Alone(_) => "alone".to_string(),
            Serving::Member(m) => m.membership.role().as_str().to_string(),
        };
        log.log(
            30,
            &format!(
                "imgstore listening on {}://{addr}",
                if cfg.tls.is_some() { "https" } else { "http" }
            ),
            serde_json::json!({
                "datacenterName": cfg.imgapi.datacenter_name,
                "dataDir": cfg.data_dir.display().to_string(),
                "mode": cfg.imgapi.mode.as_str(),
                "storage": cfg.storage.as_ref().map_or("local disk only".to_string(), |s| s.describe()),
                "cluster": role,
            })
            .as_object()
            .cloned()
            .unwrap_or_default(),
        );
        let stopping = stopping(log.clone(), drain);
        match &serving {
            Serving::Alone(state) => {
                daemon::serve_faces(listener, face, state.clone(), stopping).await?
            }
            Serving::Member(m) => {
                daemon::cluster::serve_member(
                    listener,
                    face.map(|f| f.0),
                    Arc::clone(m),
                    stopping,
                )
                .await?
            }
        }
        log.info("shutting down: in-flight requests finished");
        anyhow::Ok(())
    });
    // Let blocking work (an upload's commit) finish before the store
    // closes; a put whose connection was cut ends at once with an error.
    rt.shutdown_timeout(cfg.limits.shutdown_deadline);
    result?;
    match serving {
        Serving::Alone(state) => {
            let store = state.api.store().clone();
            drop(state);
            store.close()?;
        }
        Serving::Member(m) => m.close()?,
    }
    Ok(())
}

/// What `serve` runs: a daemon alone, or a member of a cluster.
enum Serving {
    Alone(Arc<imgstore::http::AppState>),
    Member(Arc<daemon::cluster::Member>),
}
