//! The command-line interface: `imgstore serve` (the daemon); the client
//! commands that talk to a daemon over HTTP (`image`, `admin`, `account`,
//! `datacenters`, reached through `connect`); and the `imgstore store ...`
//! commands that work offline on a data directory.

/// `println!` for a command's output: when stdout is closed early
/// (`imgstore image list | head -1`) the process ends quietly with status
/// 0, as node-triton does, instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cli::say_line(format_args!($($arg)*))
    };
}

pub mod connect;
pub mod image;
pub mod man;
pub mod ops;
pub mod profile;
pub mod serve_cmd;
pub mod store_cmd;

/// A command's answer: `value` as one line of JSON (`-j`/`--json`), or
/// the line `text` makes for a person.
pub(crate) fn emit<T: serde::Serialize + ?Sized>(
    json: bool,
    value: &T,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    if json {
        say!("{}", serde_json::to_string(value)?);
    } else {
        say!("{}", text());
    }
    Ok(())
}

/// Writes one line of output; see [`say!`].
pub(crate) fn say_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("imgstore: writing the output: {e}");
            std::process::exit(1);
        }
    }
}

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "imgstore",
    version,
    about = "A content-addressed store for VM and container images",
    after_help = "Exit status: 0 done; 1 an error (the message names it: an IMGAPI code, the URL that failed, \
                  or the problems `verify` found); 2 a usage error."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Work with images on a daemon (node-triton-like; live copy progress).
    Image(image::ImageArgs),
    /// Operate a running daemon: stats, gc, verify (operators).
    Admin(ops::AdminArgs),
    /// An account's settings: which accounts it trusts to share images.
    Account(ops::AccountArgs),
    /// The profile's datacenters and whether they answer.
    Datacenters(ops::DatacentersArgs),
    /// Profiles: where the client talks and as whom (as `triton profile`).
    Profile(profile::ProfileArgs),
    /// Run the IMGAPI daemon (no configuration needed).
    Serve(serve_cmd::ServeArgs),
    /// Offline administration of a data directory (the daemon must not be running on it).
    Store(store_cmd::StoreArgs),
    /// Print a shell completion script: `imgstore completion bash > /etc/bash_completion.d/imgstore`.
    Completion { shell: clap_complete::Shell },
    /// Print a man page (roff): `imgstore man image copy | man -l -`; or
    /// write them all: `imgstore man --dir /usr/local/share/man/man1`.
    Man(man::ManArgs),
    /// The daemon's configuration file.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print every key of the config file with its type, default and
    /// meaning, as Markdown.
    Reference,
}

/// Runs the command line; returns the process exit status.
pub fn run() -> i32 {
    let cli = Cli::parse();
    match cli.command {
        Command::Image(args) => image::run(args),
        Command::Admin(args) => ops::admin(args),
        Command::Account(args) => ops::account(args),
        Command::Datacenters(args) => ops::datacenters(args),
        Command::Profile(args) => profile::run(args),
        Command::Serve(args) => serve_cmd::run(args),
        Command::Store(args) => store_cmd::run(args),
        Command::Completion { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            // Through `say!`, so `| head` ends it quietly (clap_complete
            // panics on a closed stdout).
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd, "imgstore", &mut out);
            say!("{}", String::from_utf8_lossy(&out).trim_end());
            0
        }
        Command::Man(args) => man::run(args),
        Command::Config {
            command: ConfigCommand::Reference,
        } => {
            say!("{}", imgstore::daemon::reference::reference());
            0
        }
    }
}
