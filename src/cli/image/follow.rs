//! Copies to other datacenters and `wait`: start the jobs, then follow
//! each one's bytes with a bar that fits the terminal, a plain line every
//! two seconds (not a terminal), JSON lines (`-j`, restic's `--json` status
//! lines are the model: `status` while running, `summary` at the end), or
//! nothing but the result (`-q`).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use imgstore::http::client::Client;
use imgstore::imgapi::ImageState;
use imgstore::imgapi::copy::{ImportPlan, PlanAction};
use imgstore::imgapi::jobs::{Execution, JobView, STEP_REFRESH};
use imgstore::imgapi::manifest::Manifest;
use imgstore::transfer::ProgressReport;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::Value;

use super::{client, describe, names, resolve};
use crate::cli::connect::pick_datacenters;
use crate::cli::emit;

/// One target of a copy, or one job being waited for.
struct Tracked {
    dc: String,
    /// The server that runs the job (its `workflow-api`).
    client: Client,
    job: String,
    bar: ProgressBar,
    done: bool,
    /// Why following it stopped (its datacenter went away).
    error: Option<String>,
}

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Show {
    /// Live bars (a terminal).
    Bars,
    /// A plain line per datacenter every two seconds.
    Lines,
    /// One JSON object a line: `status` every second, `summary` at the end.
    Json,
    /// Only the result.
    Quiet,
}

impl Show {
    /// `-j` and `-q` as given, else bars on a terminal and lines off one.
    pub(super) fn pick(json: bool, quiet: bool) -> Show {
        if json {
            Show::Json
        } else if quiet {
            Show::Quiet
        } else if std::io::stdout().is_terminal() {
            Show::Bars
        } else {
            Show::Lines
        }
    }
}

/// Seconds left at `rate`, rounded up (a bar never says 0 s while
/// bytes remain).
fn eta_secs(left: u64, rate: u64) -> Option<u64> {
    (rate > 0).then(|| left.div_ceil(rate))
}

/// A job's progress as a JSON status line.
fn status_json(dc: &str, job: &str, j: &JobView) -> Value {
    let p = &j.progress.report;
    let rate = j.progress.rate_bytes_per_s;
    let left = p.bytes_to_fetch.saturating_sub(p.bytes_fetched);
    serde_json::json!({
        "message_type": "status",
        "datacenter": dc,
        "job_uuid": job,
        "execution": j.execution,
        "bytes_to_fetch": p.bytes_to_fetch,
        "bytes_fetched": p.bytes_fetched,
        "bytes_local": p.bytes_local,
        "rate_bytes_per_s": rate,
        "eta_s": eta_secs(left, rate),
        "percent_done": if p.bytes_to_fetch == 0 { 1.0 } else {
            p.bytes_fetched as f64 / p.bytes_to_fetch as f64
        },
    })
}

fn human(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

/// Until the chunk lists are compared there is no total: a spinner, never
/// a `0 B/0 B` bar.
fn waiting_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:>8} {spinner} comparing chunk lists")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

/// The bar takes what the terminal's width leaves (`wide_bar`), so a line
/// never wraps.
fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix:>8} [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}

/// `imgstore image copy IMAGE --to DC[,DC...]|all`: every target is
/// checked before any copy starts; a target that fails (unreachable, a
/// refused copy) does not stop the others; each error names its
/// datacenter, and a summary ends a run in which any failed (exit 1).
pub(super) fn copy(
    c: &Client,
    dcs: &BTreeMap<String, String>,
    account: &str,
    image: &str,
    to: &str,
    show: Show,
    dry_run: bool,
) -> Result<()> {
    let here = c.datacenter_name().ok().flatten();
    let current = dcs
        .iter()
        .find(|(_, u)| u.as_str() == c.base())
        .map(|(n, _)| n.clone())
        .or(here)
        .ok_or_else(|| {
            anyhow!(
                "error: cannot tell which datacenter {} is: add it to the profile",
                c.base()
            )
        })?;
    let targets = pick_datacenters(dcs, to, Some(&current), "; nothing copied")?;
    if targets.is_empty() {
        bail!("error: no datacenter to copy to (the profile lists none besides {current})");
    }
    if targets.iter().any(|(n, _)| *n == current) {
        bail!(
            "error: {image} is in datacenter {current} already (the one at {}); nothing copied",
            c.base()
        );
    }
    let (uuid, label) = names(&super::resolve_among(c, image, super::Among::Active)?);
    if dry_run {
        return plan(&targets, account, &uuid, &label, &current);
    }
    let multi = MultiProgress::new();
    let tty = show == Show::Bars;
    let mut tracked = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    for (dc, url) in &targets {
        let started = client(url, Some(account))
            .and_then(|t| t.import_from_datacenter(&uuid, &current).map_err(describe));
        let started = match started {
            Ok(s) => s,
            Err(e) => {
                failed.push(format!("{dc}: {e:#}"));
                continue;
            }
        };
        let bar = if tty {
            multi.add(ProgressBar::new(0))
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(waiting_style());
        bar.set_prefix(dc.clone());
        tracked.push(Tracked {
            dc: dc.clone(),
            client: client(started.workflow_api.as_deref().unwrap_or(url), None)?,
            job: started.job_uuid,
            bar,
            done: false,
            error: None,
        });
    }
    follow(&mut tracked, show);
    let mut copied = 0;
    for t in &tracked {
        let outcome = match &t.error {
            Some(e) => Err(e.clone()),
            None => t
                .client
                .job(&t.job)
                .map_err(|e| format!("{:#}", describe(e))),
        };
        let result = match outcome {
            Ok(j) if j.execution == Execution::Succeeded => {
                copied += 1;
                if show != Show::Json {
                    say!("{}", copied_line(&uuid, &label, &t.dc, &j));
                }
                Ok(j)
            }
            Ok(j) => {
                let err = j
                    .last_error_message()
                    .unwrap_or(Execution::Failed.as_str())
                    .to_string();
                failed.push(format!("{}: {err}", t.dc));
                Err(err)
            }
            Err(e) => {
                failed.push(format!("{}: {e}", t.dc));
                Err(e)
            }
        };
        if show == Show::Json {
            say!("{}", summary_json(t, &uuid, result));
        }
    }
    if !failed.is_empty() {
        bail!(
            "error (CopyFailed): copied {label} to {copied} of {} datacenters; failed: {}",
            targets.len(),
            failed.join("; ")
        );
    }
    Ok(())
}

/// `copy -n`: each target checks the copy as it would check the real one
/// (the source datacenter known to it, the image there, one here) and says
/// what it would do; nothing starts. Any target that would fail makes
/// the run fail, as the copy would.
fn plan(
    targets: &[(String, String)],
    account: &str,
    uuid: &str,
    label: &str,
    from: &str,
) -> Result<()> {
    let mut failed = Vec::new();
    for (dc, url) in targets {
        let query = [
            ("action", "plan-import-from-datacenter"),
            ("datacenter", from),
        ];
        let planned = client(url, Some(account)).and_then(|t| {
            t.post::<ImportPlan>(&format!("/images/{uuid}"), &query, &serde_json::json!({}))
                .map(|(p, _)| p)
                .map_err(describe)
        });
        let line = match planned {
            Err(e) => {
                failed.push(format!("{dc}: {e:#}"));
                continue;
            }
            Ok(p) => match p.action {
                PlanAction::Copy if p.origins.is_empty() => {
                    format!("Would copy image {uuid} ({label}) from {from} to datacenter {dc}")
                }
                PlanAction::Copy => format!(
                    "Would copy image {uuid} ({label}) from {from} to datacenter {dc}, and first its origins {}",
                    p.origins
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                PlanAction::Attach => format!(
                    "A copy of image {uuid} ({label}) into datacenter {dc} is running: would follow it"
                ),
                PlanAction::Resume => format!(
                    "Would resume the copy of image {uuid} ({label}) into datacenter {dc} where it stopped"
                ),
                PlanAction::UpToDate => format!(
                    "Image {uuid} ({label}) in datacenter {dc} is already up to date: would only refresh its fields"
                ),
            },
        };
        say!("{line}");
    }
    if !failed.is_empty() {
        bail!(
            "error: the copy of {label} would fail in {} of {} datacenters: {}",
            failed.len(),
            targets.len(),
            failed.join("; ")
        );
    }
    Ok(())
}

/// The JSON summary line of one target of a copy.
fn summary_json(t: &Tracked, uuid: &str, result: Result<JobView, String>) -> Value {
    let mut line = serde_json::json!({
        "message_type": "summary", "datacenter": t.dc, "job_uuid": t.job,
        "image_uuid": uuid,
    });
    match result {
        Ok(j) => {
            line["execution"] = Value::from(j.execution.as_str());
            line["bytes_fetched"] = Value::from(j.progress.report.bytes_fetched);
            line["bytes_local"] = Value::from(j.progress.report.bytes_local);
        }
        Err(e) => {
            line["execution"] = Value::from(Execution::Failed.as_str());
            line["error"] = Value::from(e);
        }
    }
    line
}

/// What a copy moves: `98.4 MiB to fetch of 112.4 MiB, 14.0 MiB already
/// here` (None until the chunk lists are compared).
fn plan_words(p: &ProgressReport) -> Option<String> {
    (p.total_bytes > 0 || p.bytes_to_fetch > 0).then(|| {
        format!(
            "{} to fetch of {}, {} already here",
            human(p.bytes_to_fetch),
            human(p.total_bytes.max(p.bytes_to_fetch + p.bytes_local)),
            human(p.bytes_local)
        )
    })
}

/// One plain progress line of a job.
fn progress_line(dc: &str, j: &JobView) -> String {
    let p = &j.progress.report;
    let rate = j.progress.rate_bytes_per_s;
    let left = p.bytes_to_fetch.saturating_sub(p.bytes_fetched);
    let eta = eta_secs(left, rate)
        .map(|s| format!("{s}s"))
        .unwrap_or_else(|| "-".into());
    match plan_words(p) {
        Some(plan) => format!(
            "{dc}: {} fetched ({plan}), {}/s, ETA {eta}, {}",
            human(p.bytes_fetched),
            human(rate),
            j.execution.as_str()
        ),
        None => format!("{dc}: comparing chunk lists, {}", j.execution.as_str()),
    }
}

/// The result of a copy that succeeded, on a line of its own.
fn copied_line(uuid: &str, label: &str, dc: &str, j: &JobView) -> String {
    let p = &j.progress.report;
    if let Some(r) = j.chain_results.iter().find(|r| r.name == STEP_REFRESH) {
        let refreshed = match r.result.strip_prefix("changed: ") {
            Some(fields) => format!("; refreshed {fields}"),
            None => String::new(),
        };
        return format!(
            "Image {uuid} ({label}) in datacenter {dc} is already up to date{refreshed}"
        );
    }
    let what = if p.bytes_to_fetch == 0 {
        format!(
            "nothing to fetch, all {} already here",
            human(p.total_bytes)
        )
    } else {
        format!(
            "{} fetched of {}, {} already here",
            human(p.bytes_fetched),
            human(p.total_bytes.max(p.bytes_fetched + p.bytes_local)),
            human(p.bytes_local)
        )
    };
    format!("Copied image {uuid} ({label}) to datacenter {dc}: {what}")
}

/// Polls jobs until they end, showing their progress as `show` says.
fn follow(tracked: &mut [Tracked], show: Show) {
    let tty = show == Show::Bars;
    let every = match show {
        Show::Json => Duration::from_secs(1),
        _ => Duration::from_secs(2),
    };
    let mut last_line = Instant::now() - Duration::from_secs(10);
    loop {
        let mut running = 0;
        let print_now = matches!(show, Show::Lines | Show::Json) && last_line.elapsed() >= every;
        for t in tracked.iter_mut().filter(|t| !t.done) {
            // A datacenter that stops answering ends only its own line.
            let j = match t.client.job(&t.job) {
                Ok(j) => j,
                Err(e) => {
                    t.error = Some(format!("{:#}", describe(e)));
                    t.done = true;
                    t.bar.finish_and_clear();
                    continue;
                }
            };
            let p = &j.progress.report;
            match plan_words(p) {
                Some(plan) => {
                    if t.bar.length() == Some(0) {
                        t.bar.set_style(bar_style());
                    }
                    t.bar.set_length(p.bytes_to_fetch.max(1));
                    t.bar.set_position(p.bytes_fetched);
                    t.bar.set_message(format!("({plan})"));
                }
                None => t.bar.tick(),
            }
            let ended = j.execution.is_final();
            // A job that ends before it has a plan (a refresh) has no
            // progress to tell: its result says it all.
            let tell = plan_words(p).is_some() || !ended;
            if tell && (print_now || (show == Show::Lines && ended)) {
                match show {
                    Show::Json => say!("{}", status_json(&t.dc, &t.job, &j)),
                    _ => say!("{}", progress_line(&t.dc, &j)),
                }
            }
            if ended {
                // The result line replaces the bar (never printed on it).
                t.done = true;
                t.bar.finish_and_clear();
            } else {
                running += 1;
            }
        }
        if print_now {
            last_line = Instant::now();
        }
        if running == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(if tty { 200 } else { 250 }));
    }
}

/// `imgstore image wait IMAGE... [-s STATES]`.
pub(super) fn wait(c: &Client, images: &[String], states: &str, show: Show) -> Result<()> {
    let want: Vec<&str> = states.split(',').map(str::trim).collect();
    let known: Vec<&str> = ImageState::ALL.iter().map(|s| s.as_str()).collect();
    if let Some(bad) = want.iter().find(|s| !known.contains(s)) {
        bail!(
            "error: unknown state {bad:?} in -s (states: {})",
            known.join(", ")
        );
    }
    let tty = show == Show::Bars;
    for (i, name) in images.iter().enumerate() {
        let img = resolve(c, name)?;
        let (uuid, _) = names(&img);
        // With -j, the image each wait leaves is the one line it prints,
        // as every image command's -j does.
        let reached = |img: &Manifest, line: String| emit(show == Show::Json, img, || line);
        if want.contains(&img.state.as_str()) {
            let line = format!("Image {uuid} already {}", img.state);
            reached(&img, line)?;
            continue;
        }
        if !matches!(show, Show::Quiet | Show::Json) {
            say!("Waiting for image {name} to enter state (states: {states})");
        }
        // A copy in progress into this datacenter: follow its bytes.
        let jobs = c.image_jobs(&uuid).unwrap_or_default();
        if let Some(job) = jobs.last().filter(|j| !j.execution.is_final()) {
            let bar = if tty {
                ProgressBar::new(0)
            } else {
                ProgressBar::hidden()
            };
            bar.set_style(waiting_style());
            let mut t = [Tracked {
                dc: "copy".into(),
                client: c.as_account(None),
                job: job.uuid.to_string(),
                bar,
                done: false,
                error: None,
            }];
            follow(&mut t, show);
        }
        let start = Instant::now();
        loop {
            let img = c.get_image(&uuid).map_err(describe)?;
            let state = img.state.as_str();
            if want.contains(&state) {
                let line = format!(
                    "{}/{}: Image {uuid} moved to state {state}",
                    i + 1,
                    images.len()
                );
                reached(&img, line)?;
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_eta_rounds_up_and_is_unknown_without_a_rate() {
        assert_eq!(super::eta_secs(1, 1000), Some(1));
        assert_eq!(super::eta_secs(2500, 1000), Some(3));
        assert_eq!(super::eta_secs(0, 1000), Some(0));
        assert_eq!(super::eta_secs(10, 0), None);
    }
}
