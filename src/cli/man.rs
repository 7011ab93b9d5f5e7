//! `imgstore man`: the manual pages, one for every command (clap_mangen
//! per command, named as its SEE ALSO lines name them:
//! `imgstore-image-copy(1)`), and the config file's reference as a section
//! of `imgstore(1)` and `imgstore-config-reference(1)`.

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow, bail};
use clap::Args;

use super::connect::report;

#[derive(Args, Debug)]
pub struct ManArgs {
    /// The command whose page to print (`imgstore man image copy`); none:
    /// imgstore(1).
    #[arg(value_name = "COMMAND")]
    pub command: Vec<String>,
    /// Write every page into DIR instead (`imgstore-image-copy.1` ...),
    /// e.g. /usr/local/share/man/man1.
    #[arg(long, value_name = "DIR", conflicts_with = "command")]
    pub dir: Option<PathBuf>,
}

pub fn run(args: ManArgs) -> i32 {
    match execute(&args) {
        Ok(()) => 0,
        Err(e) => report("man", &e),
    }
}

/// The whole command tree, built (so every subcommand knows its page's
/// name and its full usage).
fn built() -> clap::Command {
    let mut cmd = <super::Cli as clap::CommandFactory>::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

fn execute(args: &ManArgs) -> Result<()> {
    let root = built();
    if let Some(dir) = &args.dir {
        let mut written = 0;
        write_all(&root, dir, &mut written)?;
        say!("Wrote {written} pages into {}", dir.display());
        return Ok(());
    }
    let mut cmd = &root;
    for word in &args.command {
        cmd = cmd.find_subcommand(word).ok_or_else(|| {
            let names: Vec<&str> = cmd.get_subcommands().map(clap::Command::get_name).collect();
            anyhow!(
                "error: no command {word:?} under {} (there are: {})",
                title(cmd),
                names.join(", ")
            )
        })?;
    }
    say!("{}", page(cmd)?);
    Ok(())
}

/// The page's name: `imgstore-image-copy`.
fn title(cmd: &clap::Command) -> &str {
    cmd.get_display_name().unwrap_or_else(|| cmd.get_name())
}

/// One command's page (roff); the top one and `config reference` carry
/// the config file's reference too.
fn page(cmd: &clap::Command) -> Result<String> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .source(format!("imgstore {}", env!("CARGO_PKG_VERSION")))
        .manual("imgstore")
        .render(&mut out)
        .map_err(|e| anyhow!("error: rendering {}: {e}", title(cmd)))?;
    let mut text = String::from_utf8_lossy(&out).into_owned();
    if matches!(title(cmd), "imgstore" | "imgstore-config-reference") {
        text.push_str(&config_section());
        text.push('\n');
    }
    Ok(text)
}

fn write_all(cmd: &clap::Command, dir: &Path, written: &mut usize) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| anyhow!("error: creating {}: {e}", dir.display()))?;
    let path = dir.join(format!("{}.1", title(cmd)));
    if path.exists() && !path.is_file() {
        bail!("error: {} is not a file", path.display());
    }
    std::fs::write(&path, page(cmd)?)
        .map_err(|e| anyhow!("error: writing {}: {e}", path.display()))?;
    *written += 1;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_all(sub, dir, written)?;
    }
    Ok(())
}

/// The configuration reference as a section of a page (the Markdown as
/// it is, unfilled).
fn config_section() -> String {
    let mut out = String::from(".SH CONFIGURATION\n.nf\n");
    for line in imgstore::daemon::reference::reference().lines() {
        // roff: a leading dot or quote would be a request, a backslash an
        // escape.
        let line = line.replace('\\', "\\e");
        if line.starts_with('.') || line.starts_with('\'') {
            out.push_str("\\&");
        }
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str(".fi");
    out
}
