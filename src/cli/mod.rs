//! The command-line interface: `imgstore serve` (the daemon) and the
//! `imgstore store ...` admin commands that work offline on a data directory.

pub mod image;
pub mod serve_cmd;
pub mod store_cmd;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "imgstore",
    version,
    about = "A content-addressed store for VM and container images"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Work with images on a daemon (node-triton-like; live copy progress).
    Image(image::ImageArgs),
    /// Run the IMGAPI daemon (no configuration needed).
    Serve(serve_cmd::ServeArgs),
    /// Offline administration of a data directory (the daemon must not be running on it).
    Store(store_cmd::StoreArgs),
}

/// Runs the command line; returns the process exit status.
pub fn run() -> i32 {
    let cli = Cli::parse();
    match cli.command {
        Command::Image(args) => image::run(args),
        Command::Serve(args) => serve_cmd::run(args),
        Command::Store(args) => store_cmd::run(args),
    }
}
