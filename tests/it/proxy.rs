//! A TCP proxy on a free loopback port in front of one server, for what a
//! network does to a daemon: [`Proxy::cut`] stops forwarding (connections
//! stay open and new ones are taken, but no byte passes either way: a
//! partition, not a refusal) until [`Proxy::mend`]; a proxy started with
//! [`Proxy::dropping`] removes named headers from every HTTP request (a
//! gateway that strips what it does not know).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub struct Proxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut.store(false, Ordering::SeqCst);
        // Wakes the accepting thread so that it sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

impl Proxy {
    /// Forwards every byte to `127.0.0.1:upstream`.
    pub fn start(upstream: u16) -> Proxy {
        Proxy::run(upstream, Vec::new())
    }

    /// Forwards to `127.0.0.1:upstream`, removing the request headers
    /// `drop` (lower case) from every request.
    pub fn dropping(upstream: u16, drop: &[&str]) -> Proxy {
        Proxy::run(upstream, drop.iter().map(|h| h.to_string()).collect())
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// No byte passes from now on, either way.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    /// Bytes pass again.
    pub fn mend(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    fn run(upstream: u16, drop: Vec<String>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, stop) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let (c, s) = (Arc::clone(&cut), Arc::clone(&stop));
        let drop = Arc::new(drop);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let (c, s, drop) = (Arc::clone(&c), Arc::clone(&s), Arc::clone(&drop));
                std::thread::spawn(move || {
                    wait_while(&c, &s);
                    if let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) {
                        relay(client, server, &c, &s, &drop);
                    }
                });
            }
        });
        Proxy { port, cut, stop }
    }
}

fn wait_while(cut: &AtomicBool, stop: &AtomicBool) {
    while cut.load(Ordering::SeqCst) && !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Pumps both ways until either side closes. With headers to drop, the
/// first request's head is rewritten and the connection closed after its
/// answer (`Connection: close`), so every request comes on a connection
/// of its own and has its head rewritten.
fn relay(
    client: TcpStream,
    server: TcpStream,
    cut: &Arc<AtomicBool>,
    stop: &Arc<AtomicBool>,
    drop: &[String],
) {
    let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    if !drop.is_empty() {
        let Some((head, rest)) = read_head(&mut c_in) else {
            return;
        };
        let mut kept: Vec<&str> = head
            .split("\r\n")
            .filter(|line| {
                let name = line
                    .split(':')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                !drop.contains(&name) && name != "connection"
            })
            .collect();
        kept.push("Connection: close");
        let head = kept.join("\r\n") + "\r\n\r\n";
        if s_out
            .write_all(head.as_bytes())
            .and_then(|_| s_out.write_all(&rest))
            .is_err()
        {
            return;
        }
    }
    let up = {
        let (cut, stop) = (Arc::clone(cut), Arc::clone(stop));
        std::thread::spawn(move || pump(c_in, s_out, &cut, &stop))
    };
    pump(server, client, cut, stop);
    let _ = up.join();
}

/// The request head (without its blank line) and what came after it.
fn read_head(from: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            return Some((head, buf[end + 4..].to_vec()));
        }
        match from.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Copies `from` to `to` while not cut; closes `to`'s write side at the end.
fn pump(mut from: TcpStream, mut to: TcpStream, cut: &AtomicBool, stop: &AtomicBool) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = [0u8; 64 * 1024];
    loop {
        wait_while(cut, stop);
        if stop.load(Ordering::SeqCst) {
            break;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                // Bytes read just as the link was cut wait for the mend.
                wait_while(cut, stop);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}
