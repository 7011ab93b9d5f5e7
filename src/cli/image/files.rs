//! `imgstore image upload` and `download` (`get-file`): an image's file
//! to and from a daemon, with a progress bar and rate on a terminal. A
//! download is checked against the manifest's SHA-1 (and the answer's
//! Content-MD5 when the whole file came in one answer); a partial output
//! file is resumed with a `Range` request, its existing bytes hashed first.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use imgstore::http::client::Client;
use indicatif::{ProgressBar, ProgressStyle};
use md5::{Digest as _, Md5};
use sha1::Sha1;

use super::{describe, emit, names, resolve};

/// A bar of `total` bytes on a terminal (stderr), or nothing.
fn bar(total: u64, quiet: bool, what: &str) -> Option<ProgressBar> {
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let b = ProgressBar::new(total);
    let style = ProgressStyle::with_template(
        "{msg} {bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    b.set_style(style);
    b.set_message(what.to_string());
    Some(b)
}

/// Counts what a reader yields into a bar.
struct Counted<R> {
    inner: R,
    bar: Option<ProgressBar>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(b) = &self.bar {
            b.inc(n as u64);
        }
        Ok(n)
    }
}

pub(super) fn upload(
    c: &Client,
    image: &str,
    file: &Path,
    compression: &str,
    json: bool,
    quiet: bool,
) -> Result<()> {
    let (uuid, label) = names(&resolve(c, image)?);
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let len = f.metadata()?.len();
    let progress = bar(len, quiet || json, "upload");
    let body = Counted {
        inner: f,
        bar: progress.clone(),
    };
    let img = c.add_file(&uuid, compression, body, len);
    if let Some(b) = &progress {
        b.finish_and_clear();
    }
    let img = img.map_err(describe)?;
    emit(json, &img, || {
        format!(
            "Uploaded {len} bytes to image {uuid} ({label}), sha1 {}",
            img.file().map_or("?", |f| f.sha1.as_str())
        )
    })
}

/// Where a download goes, and what of it is there already.
enum Sink {
    Stdout(std::io::StdoutLock<'static>),
    File(std::fs::File),
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::Stdout(s) => s.write(buf),
            Sink::File(f) => f.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Stdout(s) => s.flush(),
            Sink::File(f) => f.flush(),
        }
    }
}

pub(super) fn download(
    c: &Client,
    image: &str,
    output: Option<&Path>,
    json: bool,
    quiet: bool,
) -> Result<()> {
    let img = resolve(c, image)?;
    let (uuid, label) = names(&img);
    let file = img
        .file()
        .ok_or_else(|| anyhow!("error: image {uuid} ({label}) has no file"))?;
    let (size, want_sha1) = (file.size, file.sha1.clone());
    let to_stdout = output.is_none_or(|p| p == Path::new("-"));
    let mut sha1 = Sha1::new();
    let mut md5 = Md5::new();
    let (mut sink, mut have) = open_sink(output, to_stdout, size, &mut sha1, &mut md5)?;
    let resumed = have;
    if have < size {
        let mut resp = c.file_from(&uuid, have).map_err(describe)?;
        if resp.status() == reqwest::StatusCode::OK && have > 0 {
            bail!(
                "error: the server sent the whole file instead of the rest from byte {have}: \
                 remove the partial file to download it again"
            );
        }
        let header_md5 = (have == 0)
            .then(|| {
                resp.headers()
                    .get("content-md5")
                    .and_then(|v| v.to_str().ok())
            })
            .flatten()
            .map(str::to_string);
        let progress = bar(size, quiet || json, "download");
        if let Some(b) = &progress {
            b.set_position(have);
        }
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = resp
                .read(&mut buf)
                .context("reading the file from the daemon")?;
            if n == 0 {
                break;
            }
            let piece = buf.get(..n).unwrap_or_default();
            sha1.update(piece);
            md5.update(piece);
            sink.write_all(piece).context("writing the file")?;
            have += n as u64;
            if let Some(b) = &progress {
                b.set_position(have);
            }
        }
        if let Some(b) = &progress {
            b.finish_and_clear();
        }
        sink.flush()?;
        if let Some(want) = header_md5 {
            let got = base64::engine::general_purpose::STANDARD.encode(md5.clone().finalize());
            if got != want {
                bail!("error: the file's MD5 is {got}, the daemon's Content-MD5 says {want}");
            }
        }
    }
    if have != size {
        bail!("error: got {have} bytes of {size}: run the same command again to resume");
    }
    let got = hex::encode(sha1.finalize());
    if got != want_sha1 {
        bail!(
            "error: the file's SHA-1 is {got}, the manifest says {want_sha1}{}",
            output
                .filter(|_| !to_stdout)
                .map(|p| format!(" (remove {} to download it again)", p.display()))
                .unwrap_or_default()
        );
    }
    let summary = serde_json::json!({
        "uuid": uuid, "bytes": size, "resumed_from": resumed, "sha1": got,
        "output": output.filter(|_| !to_stdout).map(|p| p.display().to_string()),
    });
    if to_stdout {
        // The file went to stdout: the summary goes to stderr.
        if !quiet {
            eprintln!("Downloaded image {uuid} ({label}): {size} bytes, SHA-1 checked");
        }
        return Ok(());
    }
    emit(json, &summary, || {
        let dest = output.map(|p| p.display().to_string()).unwrap_or_default();
        if resumed > 0 {
            format!(
                "Downloaded image {uuid} ({label}) to {dest}: {size} bytes ({resumed} were there), SHA-1 checked"
            )
        } else {
            format!("Downloaded image {uuid} ({label}) to {dest}: {size} bytes, SHA-1 checked")
        }
    })
}

/// The output: standard output, or FILE opened to append, with what it
/// holds already hashed (a resume starts after it; a FILE longer than the
/// image's file starts over).
fn open_sink(
    output: Option<&Path>,
    to_stdout: bool,
    size: u64,
    sha1: &mut Sha1,
    md5: &mut Md5,
) -> Result<(Sink, u64)> {
    let Some(path) = output.filter(|_| !to_stdout) else {
        return Ok((Sink::Stdout(std::io::stdout().lock()), 0));
    };
    let f = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut have = f.metadata()?.len();
    if have > size {
        f.set_len(0)?;
        have = 0;
    }
    let mut buf = vec![0u8; 1 << 20];
    let mut left = have;
    let mut r = std::fs::File::open(path)?;
    while left > 0 {
        let n = r.read(&mut buf)?;
        if n == 0 {
            bail!("error: {} shrank while it was read", path.display());
        }
        let piece = buf.get(..n).unwrap_or_default();
        sha1.update(piece);
        md5.update(piece);
        left = left.saturating_sub(n as u64);
    }
    Ok((Sink::File(f), have))
}
