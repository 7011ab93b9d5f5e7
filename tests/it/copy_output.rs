//! What `imgstore image copy` says: the plan of each copy in words, the
//! result on a line of its own (also under live bars on a terminal),
//! "already up to date" when nothing moves, and a dry run that checks what
//! the copy checks.

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};

use serde_json::json;

use crate::common::bytes;
use crate::daemon::{ALICE, Daemon};
use crate::image_cli::{err, ok};

fn cli(url: &str, profile: &std::path::Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_imgstore"));
    c.arg("image")
        .args(args)
        .env("IMGSTORE_URL", url)
        .env("IMGSTORE_ACCOUNT", ALICE)
        .env("IMGSTORE_PROFILE", profile)
        .env("XDG_CONFIG_HOME", "/nonexistent/xdg");
    c
}

/// west (the source), east (copies from west) and a profile naming both.
fn setup(dir: &std::path::Path) -> (Daemon, Daemon, std::path::PathBuf) {
    let (_w, west) = crate::xdc::source();
    std::mem::forget(_w);
    let (_e, east) = crate::xdc::dest(&west.url);
    std::mem::forget(_e);
    let profile = dir.join("profile.json");
    let dcs = json!({"datacenters": {"west": west.url, "east": east.url}});
    std::fs::write(&profile, dcs.to_string()).unwrap();
    (west, east, profile)
}

#[test]
fn a_copy_explains_its_total_and_an_unchanged_one_is_up_to_date() {
    let dir = tempfile::tempdir().unwrap();
    let (west, east, profile) = setup(dir.path());
    // base travels whole; app shares base's first 1 MB and adds 1 MB.
    let base = bytes(1_000_000, 11);
    let mut more = base.clone();
    more.extend_from_slice(&bytes(1_000_000, 12));
    west.image(ALICE, "base", json!({}), &base, true);
    let uuid = west.image(ALICE, "app", json!({}), &more, true);
    ok(&cli(&west.url, &profile, &["copy", "base", "east"])
        .output()
        .unwrap());

    let out = ok(&cli(&west.url, &profile, &["copy", "app", "east"])
        .output()
        .unwrap());
    let result = out
        .lines()
        .find(|l| l.starts_with("Copied image"))
        .unwrap_or_else(|| panic!("{out}"));
    // "Copied image U (app@1.0.0) to datacenter east: X fetched of 1.9 MiB, Y already here"
    assert!(
        result.starts_with(&format!(
            "Copied image {uuid} (app@1.0.0) to datacenter east: "
        )) && result.contains(" fetched of 1.91 MiB, ")
            && result.ends_with(" already here"),
        "{out}"
    );
    assert!(!result.contains(" 0 B already here"), "{out}");
    // The progress lines say the plan the same way.
    let line = out
        .lines()
        .find(|l| l.starts_with("east: ") && l.contains(" fetched ("))
        .unwrap_or_default();
    assert!(
        line.contains(" to fetch of 1.91 MiB, ") && line.contains("already here"),
        "{out}"
    );
    assert_eq!(east.file(&uuid), more);

    // Nothing moves: already up to date, also with -q; -n says so first.
    let out = ok(&cli(&west.url, &profile, &["copy", "-n", "app", "east"])
        .output()
        .unwrap());
    assert!(out.contains("already up to date"), "{out}");
    for args in [&["copy", "app", "east"][..], &["copy", "-q", "app", "east"]] {
        let out = ok(&cli(&west.url, &profile, args).output().unwrap());
        assert_eq!(
            out.trim(),
            format!("Image {uuid} (app@1.0.0) in datacenter east is already up to date"),
            "{args:?}"
        );
    }
}

#[test]
fn the_dry_run_checks_what_the_copy_checks() {
    let dir = tempfile::tempdir().unwrap();
    let (west, east, _) = setup(dir.path());
    // A datacenter that knows no west: the real copy would fail there.
    let north_dir = tempfile::tempdir().unwrap();
    let north = Daemon::start_with(north_dir.path(), |c| {
        c.imgapi.datacenter_name = "north".into()
    });
    let profile = dir.path().join("three.json");
    let dcs = json!({"datacenters": {"west": west.url, "east": east.url, "north": north.url}});
    std::fs::write(&profile, dcs.to_string()).unwrap();
    let base = west.image(ALICE, "base", json!({}), &bytes(100_000, 1), true);
    let app = west.image(
        ALICE,
        "app",
        json!({"version": "2.0.0", "origin": base}),
        &bytes(100_000, 2),
        true,
    );
    let o = cli(&west.url, &profile, &["copy", "-n", "app", "--to", "all"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let e = err(&o);
    assert!(
        out.contains(&format!(
            "Would copy image {app} (app@2.0.0) from west to datacenter east, and first its origins {base}"
        )),
        "{out}"
    );
    assert!(
        e.contains("would fail in 1 of 2 datacenters")
            && e.contains("north: ")
            && e.contains("\"west\" is not supported")
            && e.contains("imgapiUrlFromDatacenter"),
        "{e}"
    );
    // Nothing started anywhere.
    assert_eq!(east.get(&format!("/images/{app}")).status(), 404);
    assert_eq!(east.get(&format!("/images/{base}")).status(), 404);
    // The real copy fails at north the same way.
    let e = err(&cli(&west.url, &profile, &["copy", "-q", "app", "north"])
        .output()
        .unwrap());
    assert!(e.contains("\"west\" is not supported"), "{e}");
}

/// Runs `cmd` with its stdout and stderr on a pseudo-terminal 120
/// columns wide; everything it wrote there.
fn on_a_terminal(mut cmd: Command) -> String {
    let (mut master, mut slave) = (0, 0);
    let size = libc::winsize {
        ws_row: 40,
        ws_col: 120,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two descriptors it opened; the size is read.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(rc, 0, "openpty");
    // SAFETY: both descriptors were just opened and are owned here only.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let mut child = cmd
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave.try_clone().unwrap())
        .spawn()
        .unwrap();
    // The command keeps its copies of the slave until dropped: without
    // this the pty never reports the end.
    drop(cmd);
    drop(slave);
    let mut reader = std::fs::File::from(master);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // The pty reads EIO once the child and every copy of the slave end.
    while let Ok(n) = reader.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    assert!(
        child.wait().unwrap().success(),
        "{}",
        String::from_utf8_lossy(&out)
    );
    String::from_utf8_lossy(&out).to_string()
}

/// What a terminal shows of each line: the text after its last carriage
/// return, without escape sequences.
fn screen_lines(raw: &str) -> Vec<String> {
    raw.split('\n')
        .map(|l| {
            let l = l.trim_end_matches('\r');
            let l = l.rsplit('\r').next().unwrap_or(l);
            let mut text = String::new();
            let mut chars = l.chars();
            while let Some(c) = chars.next() {
                if c == '\u{1b}' {
                    // CSI: ESC [ params final-byte
                    if chars.next() == Some('[') {
                        for f in chars.by_ref() {
                            if f.is_ascii_alphabetic() {
                                break;
                            }
                        }
                    }
                } else {
                    text.push(c);
                }
            }
            text
        })
        .collect()
}

#[test]
fn on_a_terminal_the_result_has_a_line_of_its_own_and_no_empty_bar() {
    let dir = tempfile::tempdir().unwrap();
    let (west, east, profile) = setup(dir.path());
    let data = bytes(3_000_000, 21);
    let uuid = west.image(ALICE, "app", json!({}), &data, true);
    let raw = on_a_terminal(cli(&west.url, &profile, &["copy", "app", "east"]));
    assert!(!raw.contains("0 B/0 B"), "{raw:?}");
    // Bars were drawn (a spinner, then the plan), then made way.
    assert!(
        raw.contains("comparing chunk lists") || raw.contains("already here)"),
        "{raw:?}"
    );
    let lines = screen_lines(&raw);
    assert!(
        lines.iter().any(|l| l.starts_with(&format!(
            "Copied image {uuid} (app@1.0.0) to datacenter east: "
        ))),
        "{lines:?}\n{raw:?}"
    );
    assert_eq!(east.file(&uuid), data);
}
