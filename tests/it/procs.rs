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

/// Starts `imgstore serve --config CONFIG` and waits until `url` answers.
pub fn start(config: &std::path::Path, url: &str) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_imgstore"))
        .args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::blocking::Client::new();
    for _ in 0..400 {
        if http.get(format!("{url}/ping")).send().is_ok() {
            return Proc { child };
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("daemon at {url} did not start");
}
