//! Bunyan-compatible JSON log lines, as Triton's services write them:
//! `name`, `hostname`, `pid`, `level` (10 trace .. 60 fatal), `time`, `msg`,
//! `v` and any extra fields (`req_id` on request lines).

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

use crate::imgapi::time;

/// Where log lines go; cheap to clone.
#[derive(Clone)]
pub struct Logger {
    name: String,
    hostname: String,
    out: Arc<Mutex<Box<dyn Write + Send>>>,
    /// Lines less severe than this bunyan level are dropped (`logLevel`).
    min_level: u8,
}

impl Logger {
    pub fn new(name: &str, out: Box<dyn Write + Send>) -> Self {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        Self {
            name: name.into(),
            hostname,
            out: Arc::new(Mutex::new(out)),
            min_level: 0,
        }
    }

    /// Logs to standard output.
    pub fn stdout(name: &str) -> Self {
        Self::new(name, Box::new(std::io::stdout()))
    }

    /// Discards everything (tests).
    pub fn sink() -> Self {
        Self::new("imgstore", Box::new(std::io::sink()))
    }

    /// The same, writing only lines at `level` (bunyan's: 10 trace ... 60
    /// fatal) or more severe.
    pub fn with_level(mut self, level: u8) -> Self {
        self.min_level = level;
        self
    }

    pub fn log(&self, level: u8, msg: &str, fields: Map<String, Value>) {
        if level < self.min_level {
            return;
        }
        let mut line = Map::new();
        line.insert("name".into(), self.name.clone().into());
        line.insert("hostname".into(), self.hostname.clone().into());
        line.insert("pid".into(), std::process::id().into());
        line.insert("level".into(), level.into());
        for (k, v) in fields {
            line.insert(k, v);
        }
        line.insert("msg".into(), msg.into());
        line.insert("time".into(), time::iso8601(time::now_ms()).into());
        line.insert("v".into(), 0.into());
        if let Ok(mut s) = serde_json::to_string(&Value::Object(line)) {
            s.push('\n');
            let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
            let _ = out.write_all(s.as_bytes());
            let _ = out.flush();
        }
    }

    pub fn info(&self, msg: &str) {
        self.log(30, msg, Map::new());
    }

    pub fn error(&self, msg: &str) {
        self.log(50, msg, Map::new());
    }
}
