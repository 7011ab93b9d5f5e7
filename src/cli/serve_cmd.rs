//! `imgstore serve`: the IMGAPI daemon. With no options it stores data in
//! `./imgstore-data`, listens on 127.0.0.1:8080, in dc mode, as datacenter
//! `local`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use imgstore::daemon::{self, DaemonConfig};
use imgstore::http::Logger;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// IMGAPI-style JSON config (mode, datacenterName, adminUuid,
    /// imgapiUrlFromDatacenter, listen, dataDir, accounts, transfer,
    /// gcIntervalSeconds, limits).
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
}

pub fn run(args: ServeArgs) -> i32 {
    match serve(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("imgstore serve: error: {e:#}");
            1
        }
    }
}

fn serve(args: ServeArgs) -> Result<()> {
    let mut cfg = match &args.config {
        Some(p) => DaemonConfig::from_file(p)?,
        None => DaemonConfig::default(),
    };
    if let Some(l) = args.listen {
        cfg.listen = l;
    }
    if let Some(d) = args.data_dir {
        cfg.data_dir = d;
    }
    if let Some(d) = args.datacenter {
        cfg.imgapi.datacenter_name = d;
    }
    let log = Logger::stdout("imgstore");
    let state = cfg.open(log.clone())?;
    let rt = cfg.runtime().context("starting the async runtime")?;
    let result = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(&cfg.listen)
            .await
            .with_context(|| format!("listening on {}", cfg.listen))?;
        let addr = listener.local_addr()?;
        log.log(
            30,
            &format!("imgstore listening on http://{addr}"),
            serde_json::json!({
                "datacenterName": cfg.imgapi.datacenter_name,
                "dataDir": cfg.data_dir.display().to_string(),
                "mode": cfg.imgapi.mode.as_str(),
            })
            .as_object()
            .cloned()
            .unwrap_or_default(),
        );
        daemon::serve(listener, state.clone(), daemon::shutdown_signal()).await?;
        log.info("shutting down: in-flight requests finished");
        anyhow::Ok(())
    });
    // Let blocking work (an upload's commit) finish before the store
    // closes; a put whose connection was cut ends at once with an error.
    rt.shutdown_timeout(cfg.limits.shutdown_deadline);
    result?;
    let store = state.api.store().clone();
    drop(state);
    store.close()?;
    Ok(())
}
