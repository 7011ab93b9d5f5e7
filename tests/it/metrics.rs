//! `/metrics`: the daemon's counters in Prometheus' text format, read
//! back with a Prometheus text-format parser.

use std::time::{Duration, Instant};

use prometheus_parse::{Scrape, Value as Sample};
use serde_json::json;

use crate::common::bytes;
use crate::daemon::*;

pub(crate) fn scrape(d: &Daemon) -> Scrape {
    let r = d.get("/metrics");
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let text = r.text().unwrap();
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap()
}

/// The value of the sample named `name` whose labels include `labels`.
pub(crate) fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .find(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(v)))
        .and_then(|x| match &x.value {
            Sample::Counter(v) | Sample::Gauge(v) | Sample::Untyped(v) => Some(*v),
            _ => None,
        })
}

#[test]
fn metrics_count_requests_bytes_gc_and_copies() {
    let (_s, west) = crate::xdc::source();
    let data = bytes(500_000, 1);
    let uuid = west.image(ALICE, "app", json!({}), &data, true);
    let got = west.get(&format!("/images/{uuid}/file")).bytes().unwrap();
    assert_eq!(got.len(), data.len());
    let (s, _) = sj(west.post("/state?action=gc", &json!({})));
    assert_eq!(s, 200);
    let m = scrape(&west);
    let route = [
        ("route", "/images/:uuid/file"),
        ("method", "GET"),
        ("status", "200"),
    ];
    assert_eq!(value(&m, "imgstore_http_requests_total", &route), Some(1.0));
    assert!(
        m.samples
            .iter()
            .any(|x| x.metric == "imgstore_http_request_duration_seconds"
                && matches!(x.value, Sample::Histogram(_)))
    );
    assert!(value(&m, "imgstore_http_received_bytes_total", &[]).unwrap() >= 500_000.0);
    assert!(value(&m, "imgstore_http_sent_bytes_total", &[]).unwrap() >= 500_000.0);
    assert_eq!(
        value(&m, "imgstore_gc_runs_total", &[("outcome", "ok")]),
        Some(1.0)
    );
    assert_eq!(value(&m, "imgstore_store_files", &[]), Some(1.0));
    assert_eq!(
        value(&m, "imgstore_store_logical_bytes", &[]),
        Some(500_000.0)
    );
    assert!(value(&m, "imgstore_store_stored_bytes", &[]).unwrap() > 0.0);

    // A copy that ends is counted where it ran, with its bytes.
    let (_east_dir, east) = crate::xdc::dest(&west.url);
    let (job, _) = crate::xdc::import(&east, &uuid, ALICE);
    assert_eq!(job["execution"], "succeeded");
    let start = Instant::now();
    let copies = loop {
        let m = scrape(&east);
        if let Some(n) = value(&m, "imgstore_copy_jobs_total", &[("outcome", "succeeded")]) {
            break (
                n,
                value(
                    &m,
                    "imgstore_copy_fetched_bytes_total",
                    &[("outcome", "succeeded")],
                ),
            );
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no copy counted");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(copies.0, 1.0);
    assert!(copies.1.unwrap() >= 500_000.0, "{copies:?}");
    // Store-wide figures are for operators only.
    assert_err(
        west.get(&format!("/metrics?account={ALICE}")),
        403,
        "OperatorOnly",
    );
}
