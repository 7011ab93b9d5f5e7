//! The bridge between async bodies and the engine's blocking I/O, both
//! ways, without ever letting a client's pace hold a thread:
//!
//! * [`Uploads::admit`]: a request body as a blocking [`Read`] for a put.
//!   The body's first bytes are read before the put takes one of a fixed
//!   number of slots; a body that stops arriving for the idle timeout ends
//!   with an error (never with an end of file, so a cut upload is never
//!   stored as a shorter file).
//! * [`Sender::body`]: a response body pulled block by block: each block
//!   is produced by a short step on the blocking pool only when the client
//!   has taken the previous one, and its bytes count against one budget
//!   shared by every response until hyper has written them.
//!
//! Blocks are about [`BLOCK`] bytes, so a hand-over costs one channel
//! operation or one blocking step per megabyte.

use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use futures_util::{Stream, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::imgapi::{ApiError, Code};
use crate::service::Metrics;

/// Size of the blocks passed between the async and the blocking side.
pub const BLOCK: usize = 1 << 20;

/// Blocks in flight from an upload's connection to its put.
const DEPTH: usize = 4;

/// Bytes of an upload's body that must arrive before it takes a put slot:
/// a connection that sends a few bytes and goes idle never holds one.
const ADMIT_BYTES: usize = 64 * 1024;

type Frames = std::pin::Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// The put slots and the idle timeout of upload bodies.
pub struct Uploads {
    slots: Arc<Semaphore>,
    idle: Duration,
    metrics: Arc<Metrics>,
}

impl Uploads {
    pub fn new(max: usize, idle: Duration, metrics: Arc<Metrics>) -> Self {
        Uploads {
            slots: Arc::new(Semaphore::new(max.max(1))),
            idle,
            metrics,
        }
    }

    /// A put slot, for a put whose bytes do not come in a request body (a
    /// pull from another IMGAPI); held until dropped.
    pub async fn slot(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        Arc::clone(&self.slots).acquire_owned().await.map_err(|_| {
            ApiError::new(Code::ServiceUnavailableError, "the daemon is shutting down")
        })
    }

    /// Waits for the body's first bytes, then for a put slot; the reader
    /// holds the slot until it is dropped. Fails when the client sends
    /// nothing for the idle timeout.
    pub async fn admit(
        &self,
        body: impl Stream<Item = io::Result<Bytes>> + Send + 'static,
    ) -> io::Result<BlockReader> {
        let metrics = Arc::clone(&self.metrics);
        let counted = body.inspect(move |f| {
            if let Ok(b) = f {
                metrics.received(b.len() as u64);
            }
        });
        let mut frames: Frames = Box::pin(counted);
        let mut first = Vec::new();
        let mut ended = false;
        while first.len() < ADMIT_BYTES {
            match next_frame(&mut frames, self.idle).await? {
                Some(bytes) => first.extend_from_slice(&bytes),
                None => {
                    ended = true;
                    break;
                }
            }
        }
        let slot = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .map_err(|_| io::Error::other("the daemon is shutting down"))?;
        Ok(BlockReader::spawn(first, ended, frames, self.idle, slot))
    }
}

/// The next frame, or an error when none comes within `idle`.
async fn next_frame(frames: &mut Frames, idle: Duration) -> io::Result<Option<Bytes>> {
    match tokio::time::timeout(idle, frames.next()).await {
        Ok(Some(Ok(bytes))) => Ok(Some(bytes)),
        Ok(Some(Err(e))) => Err(e),
        Ok(None) => Ok(None),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the client sent nothing for {} s", idle.as_secs()),
        )),
    }
}

/// What the gathering task hands the put.
enum Piece {
    Block(Vec<u8>),
    Failed(io::Error),
    /// The body ended as the client sent it. A channel that closes
    /// without this (the daemon cut the connection) is an error.
    End,
}

/// Feeds a request body to the engine's blocking put: an async task gathers
/// the body's frames into blocks, and the blocking side reads those.
pub struct BlockReader {
    rx: mpsc::Receiver<Piece>,
    cur: Vec<u8>,
    pos: usize,
    ended: bool,
    _slot: OwnedSemaphorePermit,
}

impl BlockReader {
    fn spawn(
        first: Vec<u8>,
        ended: bool,
        mut frames: Frames,
        idle: Duration,
        slot: OwnedSemaphorePermit,
    ) -> Self {
        let (tx, rx) = mpsc::channel(DEPTH);
        tokio::spawn(async move {
            let mut buf = first;
            buf.reserve(BLOCK.saturating_sub(buf.len()));
            let mut done = ended;
            while !done {
                match next_frame(&mut frames, idle).await {
                    Ok(Some(bytes)) => buf.extend_from_slice(&bytes),
                    Ok(None) => done = true,
                    Err(e) => {
                        let _ = tx.send(Piece::Failed(e)).await;
                        return;
                    }
                }
                if buf.len() >= BLOCK {
                    let full = std::mem::replace(&mut buf, Vec::with_capacity(BLOCK));
                    if tx.send(Piece::Block(full)).await.is_err() {
                        return; // the put gave up
                    }
                }
            }
            if !buf.is_empty() && tx.send(Piece::Block(buf)).await.is_err() {
                return;
            }
            let _ = tx.send(Piece::End).await;
        });
        BlockReader {
            rx,
            cur: Vec::new(),
            pos: 0,
            ended: false,
            _slot: slot,
        }
    }
}

impl Read for BlockReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.cur.len() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Piece::Block(block)) => {
                    self.cur = block;
                    self.pos = 0;
                }
                Some(Piece::Failed(e)) => return Err(e),
                Some(Piece::End) => self.ended = true,
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the upload was cut off before its end",
                    ));
                }
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

/// The budget of response bytes produced and not yet written to a client.
pub struct Sender {
    budget: Arc<Semaphore>,
    total: usize,
    metrics: Arc<Metrics>,
}

/// A block of a response body and its share of the budget, released when
/// hyper drops the bytes (after writing them, or with the connection).
struct Budgeted {
    bytes: Vec<u8>,
    _permit: OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Budgeted {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Sender {
    pub fn new(budget_bytes: usize, metrics: Arc<Metrics>) -> Self {
        // Permits are counted in KiB: a semaphore holds fewer than 2^61.
        let total = (budget_bytes / 1024).max(4 * BLOCK / 1024);
        Sender {
            budget: Arc::new(Semaphore::new(total)),
            total,
            metrics,
        }
    }

    /// Bytes of response bodies produced and not yet written (rounded to
    /// KiB).
    pub fn in_flight(&self) -> usize {
        (self.total - self.budget.available_permits()) * 1024
    }

    /// A response body whose blocks `next` produces, one blocking step at
    /// a time, until it returns `None`. An error ends the body with that
    /// error: the client sees the connection cut (IMGAPI clients check
    /// what they got).
    pub fn body<P>(&self, producer: P) -> Body
    where
        P: FnMut() -> io::Result<Option<Vec<u8>>> + Send + 'static,
    {
        Body::from_stream(self.blocks(producer))
    }

    /// A share of the budget for one block, taken before the block is
    /// read (a body's first block, read before the answer's headers).
    pub async fn reserve(&self) -> Result<Reserved, ApiError> {
        let kib = u32::try_from(BLOCK / 1024).unwrap_or(u32::MAX);
        let permit = Arc::clone(&self.budget)
            .acquire_many_owned(kib)
            .await
            .map_err(|_| {
                ApiError::new(Code::ServiceUnavailableError, "the daemon is shutting down")
            })?;
        Ok(Reserved(permit))
    }

    /// [`body`](Self::body), starting with `first`, a block read before
    /// the answer's headers under its `reserved` share: damage in a file's
    /// first block is then an error answer, not a 200 cut short.
    pub fn body_after<P>(&self, first: Vec<u8>, reserved: Reserved, producer: P) -> Body
    where
        P: FnMut() -> io::Result<Option<Vec<u8>>> + Send + 'static,
    {
        let mut permit = reserved.0;
        let need = first.len().div_ceil(1024).clamp(1, self.total);
        if need < permit.num_permits() {
            drop(permit.split(permit.num_permits() - need));
        }
        self.metrics.sent(first.len() as u64);
        let head = Bytes::from_owner(Budgeted {
            bytes: first,
            _permit: permit,
        });
        let rest = self.blocks(producer);
        Body::from_stream(futures_util::stream::once(async { Ok(head) }).chain(rest))
    }

    fn blocks<P>(&self, producer: P) -> impl Stream<Item = io::Result<Bytes>> + Send + use<P>
    where
        P: FnMut() -> io::Result<Option<Vec<u8>>> + Send + 'static,
    {
        let budget = Arc::clone(&self.budget);
        let total = self.total;
        let metrics = Arc::clone(&self.metrics);
        let state = Some(producer);
        futures_util::stream::unfold(state, move |state| {
            let budget = Arc::clone(&budget);
            let metrics = Arc::clone(&metrics);
            async move {
                let mut producer = state?;
                // A block's size is known only once it is read: reserve a
                // typical one first, and the rest (if any) after.
                let kib = u32::try_from(BLOCK / 1024).unwrap_or(u32::MAX);
                let mut permit = match budget.clone().acquire_many_owned(kib).await {
                    Ok(p) => p,
                    Err(_) => return None,
                };
                let step = tokio::task::spawn_blocking(move || (producer(), producer)).await;
                let (block, producer) = match step {
                    Ok(r) => r,
                    Err(e) => return Some((Err(io::Error::other(e)), None)),
                };
                let bytes = match block {
                    Ok(Some(b)) => b,
                    Ok(None) => return None,
                    Err(e) => return Some((Err(e), None)),
                };
                // A larger block takes more of the budget if it is free;
                // waiting for it while holding a share could deadlock two
                // streams, so the overshoot (one block's excess) is allowed.
                // A smaller one (an icon, a file's last block) gives the
                // rest back at once.
                let need = bytes.len().div_ceil(1024).clamp(1, total);
                if need > permit.num_permits() {
                    let more = u32::try_from(need - permit.num_permits()).unwrap_or(u32::MAX);
                    if let Ok(p) = budget.try_acquire_many_owned(more) {
                        permit.merge(p);
                    }
                } else {
                    drop(permit.split(permit.num_permits() - need));
                }
                metrics.sent(bytes.len() as u64);
                let block = Bytes::from_owner(Budgeted {
                    bytes,
                    _permit: permit,
                });
                Some((Ok(block), Some(producer)))
            }
        })
    }
}

/// A share of the send budget held for a block not read yet.
pub struct Reserved(OwnedSemaphorePermit);
