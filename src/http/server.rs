//! Connections: how many, how long each may stall, and how they end.
//!
//! A client's pace never holds a thread and never holds memory without a
//! bound:
//!
//! * at most [`Limits::max_connections`] connections are open; beyond that
//!   new ones wait in the kernel's accept queue;
//! * a request's headers must arrive within [`Limits::header_timeout`],
//!   which is also how long an idle keep-alive connection stays open;
//! * a response the client stops reading, and an upload body the client
//!   stops sending, are cut after [`Limits::idle_timeout`] without progress
//!   (the send side here, the body side in [`body`](super::body));
//! * on shutdown the listener closes, idle connections close, and requests
//!   in flight get [`Limits::shutdown_deadline`] to finish; what is still
//!   running then is cut. A cut upload is never attached: its body ends
//!   with an error, not with an end of file.
//!
//! With TLS (`tls`), each connection's handshake happens in its own task
//! within the header timeout, then the same HTTP/1.1 serves it.
//!
//! Uploads and downloads are bounded further up, in
//! [`body`](super::body): a fixed number of puts at a time, and one budget
//! of bytes for every response body in flight.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Sleep;

/// The daemon's limits under load (config key `limits`).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Connections open at once (`maxConnections`).
    pub max_connections: usize,
    /// Uploads (PUT of an image file) stored at once (`maxUploads`); more
    /// wait, without a thread, before their body is read.
    pub max_uploads: usize,
    /// Bytes of response bodies produced but not yet sent, across all
    /// downloads and chunk fetches (`sendBufferBytes`).
    pub send_buffer_bytes: usize,
    /// Time to receive a request's headers, and to keep an idle
    /// connection (`headerTimeoutSeconds`).
    pub header_timeout: Duration,
    /// Longest an upload body or a response may make no progress
    /// (`idleTimeoutSeconds`).
    pub idle_timeout: Duration,
    /// Time requests in flight get to finish on shutdown
    /// (`shutdownSeconds`).
    pub shutdown_deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Limits {
            max_connections: 4096,
            // A put keeps about three cores busy; more at once only queue
            // on the CPU and each holds its own buffers.
            max_uploads: cores.clamp(2, 8),
            send_buffer_bytes: 32 << 20,
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            shutdown_deadline: Duration::from_secs(30),
        }
    }
}

impl Limits {
    /// Threads of the async runtime's blocking pool: every put holds one
    /// for its whole body (plus two of its own, outside the pool); every
    /// other request, and every block of a response, takes one for a short
    /// step. Eight are enough for two cores and keep the allocator's
    /// per-thread arenas few (each holds freed megabyte buffers).
    pub fn blocking_threads(&self) -> usize {
        self.max_uploads + 8
    }
}

/// A router that can be replaced while serving (a cluster member's copy
/// of the store changes with each publication): each request goes to the
/// one current when it arrives, and finishes there.
#[derive(Clone)]
pub struct Current(Arc<std::sync::RwLock<Router>>);

impl Current {
    pub fn new(router: Router) -> Self {
        Current(Arc::new(std::sync::RwLock::new(router)))
    }

    /// Serves `router` from the next request on.
    pub fn replace(&self, router: Router) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = router;
    }

    /// The router to serve: it hands each request to the current one.
    pub fn router(&self) -> Router {
        let current = Arc::clone(&self.0);
        Router::new().fallback_service(tower::service_fn(move |req: axum::extract::Request| {
            let router = current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            tower::ServiceExt::oneshot(router, req)
        }))
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown` completes,
/// then drains as the module docs say.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let svc = TowerToHyperService::new(app);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            a = listener.accept() => match a {
                Ok((s, _)) => s,
                // Out of descriptors, or a connection reset before it was
                // accepted: wait a little and go on rather than exit.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let guarded = StallGuard::new(stream, limits.idle_timeout);
        match &tls {
            None => {
                let conn =
                    graceful.watch(builder.serve_connection(TokioIo::new(guarded), svc.clone()));
                tokio::spawn(async move {
                    // A connection's end (the client left, a timeout, a
                    // malformed request hyper answered itself) concerns
                    // only itself.
                    let _ = conn.await;
                    drop(permit);
                });
            }
            Some(acceptor) => {
                // The handshake runs in the connection's own task, within
                // the time a request's headers get: a client that opens a
                // connection and says nothing holds no one else up.
                let (acceptor, watcher) = (acceptor.clone(), graceful.watcher());
                let (builder, svc, handshake) =
                    (builder.clone(), svc.clone(), limits.header_timeout);
                tokio::spawn(async move {
                    if let Ok(Ok(stream)) =
                        tokio::time::timeout(handshake, acceptor.accept(guarded)).await
                    {
                        let conn = builder.serve_connection(TokioIo::new(stream), svc);
                        let _ = watcher.watch(conn).await;
                    }
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    // Idle connections close now; busy ones after their response.
    let _ = tokio::time::timeout(limits.shutdown_deadline, graceful.shutdown()).await;
    Ok(())
}

/// A TCP stream whose writes fail once the peer has accepted nothing for
/// `limit`: a client that stops reading a response frees its connection,
/// its buffers and its share of the send budget. Reads are not timed here
/// (a request being processed leaves the connection silent for as long as
/// the work takes); hyper times headers and the upload path times bodies.
struct StallGuard {
    inner: TcpStream,
    limit: Duration,
    write_stalled: Option<Pin<Box<Sleep>>>,
}

impl StallGuard {
    fn new(inner: TcpStream, limit: Duration) -> Self {
        StallGuard {
            inner,
            limit,
            write_stalled: None,
        }
    }

    /// A write's outcome through the stall clock: progress stops it, no
    /// progress starts it (the first time) or fails once it ran out.
    fn watch(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match r {
            Poll::Pending => self.stalled(cx),
            done => {
                self.write_stalled = None;
                done
            }
        }
    }

    fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let limit = self.limit;
        let timer = self
            .write_stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client read nothing for {} s", limit.as_secs()),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for StallGuard {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for StallGuard {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
