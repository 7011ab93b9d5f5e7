//! The real daemon binary as a child process, for tests that kill it.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `imgstore serve`; killed (SIGKILL) when dropped.
pub struct Proc {
    pub child: Child,
}

impl Proc {
    /// kill -9, and reap it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `imgstore ARGS` and waits, a minute at most (restarts after a
/// kill -9 on a slow machine take a while), until every URL of `ping`
/// answers.
pub fn spawn<S: AsRef<std::ffi::OsStr>>(args: &[S], ping: &[String]) -> Proc {
    // Its stderr kept in a file, to tell why it stopped if it does.
    let errors = tempfile::NamedTempFile::new().unwrap();
    // IMGSTORE_TEST_LOGS=DIR keeps each daemon's log there, to debug.
    let stdout = match std::env::var_os("IMGSTORE_TEST_LOGS") {
        Some(dir) => {
            let path = std::path::Path::new(&dir).join(format!(
                "{}-{}.log",
                std::process::id(),
                free_port()
            ));
            Stdio::from(std::fs::File::create(path).unwrap())
        }
        None => Stdio::null(),
    };
    let child = Command::new(env!("CARGO_BIN_EXE_imgstore"))
        .args(args)
        .stdout(stdout)
        .stderr(errors.reopen().unwrap())
        .spawn()
        .unwrap();
    let mut proc = Proc { child };
    let http = reqwest::blocking::Client::new();
    let start = std::time::Instant::now();
    let pid = proc.child.id();
    // Ours, not another test's daemon that took the port this one was
    // given (ports come free and go to whoever binds first): a ping that
    // names a pid must name this child's.
    let ours = |u: &String| {
        http.get(u).send().is_ok_and(|r| {
            r.json::<serde_json::Value>()
                .map(|v| v.get("pid").and_then(serde_json::Value::as_u64))
                .map_or(true, |p| p.is_none_or(|p| p == u64::from(pid)))
        })
    };
    while !ping.iter().all(ours) {
        if let Ok(Some(status)) = proc.child.try_wait() {
            let why = std::fs::read_to_string(errors.path()).unwrap_or_default();
            panic!("the daemon exited ({status}) before answering {ping:?}: {why}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the daemon did not answer {ping:?}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    proc
}

/// Starts `imgstore serve --config CONFIG` and waits until `url` answers.
pub fn start(config: &std::path::Path, url: &str) -> Proc {
    spawn(
        &["serve".as_ref(), "--config".as_ref(), config.as_os_str()],
        &[format!("{url}/ping")],
    )
}
