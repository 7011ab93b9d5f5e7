//! A daemon started in-process on port 0, driven over real HTTP.

use std::path::Path;
use std::sync::Arc;

use imgstore::daemon::{self, DaemonConfig};
use imgstore::service::Logger;
use reqwest::blocking::{Client, Response};
use serde_json::{Value, json};

pub const ADMIN: &str = "00000000-0000-0000-0000-00000000ad01";
pub const ALICE: &str = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa";
pub const BOB: &str = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb";
pub const CAROL: &str = "cccccccc-cccc-4ccc-8ccc-cccccccccccc";

/// Log lines kept for a test to read.
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub struct Daemon {
    pub url: String,
    pub client: Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub state: Arc<imgstore::http::AppState>,
}

impl Daemon {
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, |_| {})
    }

    /// A daemon whose log lines are kept in the returned buffer.
    pub fn start_logged(dir: &Path) -> (Self, Arc<std::sync::Mutex<Vec<u8>>>) {
        let buf = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = Logger::new("imgstore", Box::new(Captured(Arc::clone(&buf))));
        (Self::start_inner(dir, |_| {}, log), buf)
    }

    pub fn start_with(dir: &Path, tweak: impl FnOnce(&mut DaemonConfig)) -> Self {
        Self::start_inner(dir, tweak, Logger::sink())
    }

    fn start_inner(dir: &Path, tweak: impl FnOnce(&mut DaemonConfig), log: Logger) -> Self {
        let mut cfg = DaemonConfig {
            data_dir: dir.to_path_buf(),
            // A small reserve: tests make many stores.
            reserve_bytes: 1 << 20,
            ..DaemonConfig::default()
        };
        cfg.imgapi.admin_uuid = Some(ADMIN.parse().unwrap());
        tweak(&mut cfg);
        let state = cfg.open(log).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let st = state.clone();
        let rt = cfg.runtime().unwrap();
        let thread = std::thread::spawn(move || {
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                daemon::serve(listener, st, async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
            });
            rt.shutdown_timeout(std::time::Duration::from_secs(10));
        });
        let addr = addr_rx.recv().unwrap();
        Daemon {
            url: format!("http://{addr}"),
            client: Client::builder()
                .timeout(std::time::Duration::from_secs(120))
                .build()
                .unwrap(),
            stop: Some(tx),
            thread: Some(thread),
            state,
        }
    }

    /// Stops serving and waits; the store closes when the last handle goes.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        // Whatever a test did, the catalog of images must be the table's.
        if self.stop.is_some() && !std::thread::panicking() {
            assert!(
                self.state.api.catalog_matches().unwrap(),
                "the catalog differs from the images table"
            );
        }
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    pub fn get(&self, path: &str) -> Response {
        self.client
            .get(format!("{}{path}", self.url))
            .send()
            .unwrap()
    }

    pub fn post(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(format!("{}{path}", self.url))
            .json(body)
            .send()
            .unwrap()
    }

    pub fn put_bytes(&self, path: &str, body: Vec<u8>) -> Response {
        self.client
            .put(format!("{}{path}", self.url))
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .unwrap()
    }

    pub fn delete(&self, path: &str) -> Response {
        self.client
            .delete(format!("{}{path}", self.url))
            .send()
            .unwrap()
    }

    /// The file of image `uuid` as an operator downloads it (200 asserted).
    pub fn file(&self, uuid: &str) -> Vec<u8> {
        let r = self.get(&format!("/images/{uuid}/file"));
        assert_eq!(r.status(), 200, "downloading the file of {uuid}");
        r.bytes().unwrap().to_vec()
    }

    /// Creates, uploads and (optionally) activates an image; returns its uuid.
    pub fn image(
        &self,
        owner: &str,
        name: &str,
        extra: Value,
        data: &[u8],
        activate: bool,
    ) -> String {
        create_image(&self.client, &self.url, owner, name, extra, data, activate)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Status and JSON body of a response.
pub fn sj(r: Response) -> (u16, Value) {
    let s = r.status().as_u16();
    let text = r.text().unwrap();
    (
        s,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Asserts an IMGAPI error.
pub fn assert_err(r: Response, status: u16, code: &str) -> Value {
    let (s, body) = sj(r);
    assert_eq!(
        (s, body["code"].as_str().unwrap_or("")),
        (status, code),
        "{body}"
    );
    body
}

/// Creates (as `owner`), uploads and (optionally) activates an image
/// on the IMGAPI at `url`, any daemon's; returns its uuid.
pub fn create_image(
    http: &Client,
    url: &str,
    owner: &str,
    name: &str,
    extra: Value,
    data: &[u8],
    activate: bool,
) -> String {
    let mut body =
        json!({"name": name, "version": "1.0.0", "type": "zone-dataset", "os": "smartos"});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    let (status, img) = sj(http
        .post(format!("{url}/images?account={owner}"))
        .json(&body)
        .send()
        .unwrap());
    assert_eq!(status, 200, "{img}");
    let uuid = img["uuid"].as_str().unwrap().to_string();
    if !data.is_empty() {
        let r = http
            .put(format!(
                "{url}/images/{uuid}/file?compression=none&account={owner}"
            ))
            .body(data.to_vec())
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    }
    if activate {
        let r = http
            .post(format!(
                "{url}/images/{uuid}?action=activate&account={owner}"
            ))
            .json(&json!({}))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    }
    uuid
}
