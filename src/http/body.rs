//! The bridge between async bodies and the engine's blocking I/O, both
//! ways, in blocks of [`BLOCK`] bytes so that a hand-over costs one
//! channel operation per megabyte:
//!
//! * [`BlockReader`]: a request body as a blocking [`Read`] (uploads);
//! * [`blocking_body`]: a response body written by blocking code on the
//!   blocking pool (downloads, chunk records).

use std::io::{self, Read, Write};

use axum::body::{Body, Bytes};
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;

/// Size of the blocks passed between the async and the blocking side.
pub const BLOCK: usize = 1 << 20;

/// Blocks in flight each way: with [`BLOCK`], what one transfer holds.
const DEPTH: usize = 4;

/// Feeds a request body to the engine's blocking put: an async task gathers
/// the body's frames into blocks, and the blocking side reads those.
pub struct BlockReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
}

impl BlockReader {
    pub fn spawn(stream: impl Stream<Item = io::Result<Bytes>> + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel(DEPTH);
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            let mut buf = Vec::with_capacity(BLOCK);
            while let Some(item) = stream.next().await {
                match item {
                    Ok(bytes) => {
                        buf.extend_from_slice(&bytes);
                        if buf.len() >= BLOCK {
                            let full = std::mem::replace(&mut buf, Vec::with_capacity(BLOCK));
                            if tx.send(Ok(full)).await.is_err() {
                                return; // the put gave up
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
            if !buf.is_empty() {
                let _ = tx.send(Ok(buf)).await;
            }
        });
        BlockReader {
            rx,
            cur: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for BlockReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.cur.len() {
            match self.rx.blocking_recv() {
                Some(Ok(block)) => {
                    self.cur = block;
                    self.pos = 0;
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let avail = self.cur.get(self.pos..).unwrap_or_default();
        let n = avail.len().min(out.len());
        out.get_mut(..n)
            .unwrap_or_default()
            .copy_from_slice(avail.get(..n).unwrap_or_default());
        self.pos += n;
        Ok(n)
    }
}

/// Where blocking code writes a response body; whole blocks go to the
/// client as they fill. A write fails once the client has gone.
pub struct BodyWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl BodyWriter {
    fn send_block(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let full = std::mem::take(&mut self.buf);
        self.tx
            .blocking_send(Ok(Bytes::from(full)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }

    /// Sends a whole buffer as it is (after what was written before).
    pub fn send(&mut self, block: Vec<u8>) -> io::Result<()> {
        self.send_block()?;
        self.buf = block;
        self.send_block()
    }
}

impl Write for BodyWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.capacity() == 0 {
            self.buf.reserve(BLOCK);
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() >= BLOCK {
            self.send_block()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_block()
    }
}

/// A response body that `produce` writes on the blocking pool. If it fails
/// the body ends with an error: the client sees the connection cut (it
/// re-checks what it got, as IMGAPI clients do).
pub fn blocking_body(
    produce: impl FnOnce(&mut BodyWriter) -> io::Result<()> + Send + 'static,
) -> Body {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(DEPTH);
    tokio::task::spawn_blocking(move || {
        let mut w = BodyWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(BLOCK),
        };
        let res = produce(&mut w).and_then(|()| w.flush());
        if let Err(e) = res {
            let _ = tx.blocking_send(Err(e));
        }
    });
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}
