//! The read pool: a few worker threads, shared by every reader of the
//! store, that read, check and decompress batches of chunks ahead of the
//! readers that asked for them.
//!
//! A reader queues the next few batches of its file (a bounded window) and
//! takes them back in order. A batch nobody has started yet when its reader
//! needs it is run by the reader itself, so a busy pool only slows a reader
//! down to one core and never stalls it; together the workers and the
//! readers use every core. The bytes in flight across all readers are
//! bounded ([`READAHEAD_BUDGET`]); beyond it a reader keeps one batch ahead.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::error::{Error, Result};

/// Decompressed bytes all readers may have in flight together.
pub const READAHEAD_BUDGET: u64 = 32 << 20;

/// Work a slot carries until someone runs it.
pub(super) type Work =
    Box<dyn FnOnce(&mut zstd::bulk::Decompressor<'static>) -> Result<Vec<u8>> + Send>;

enum SlotState {
    Queued(Work),
    /// A worker or the reader is running it.
    Running,
    Done(Result<Vec<u8>>),
    /// Its reader went away before anyone started it.
    Cancelled,
}

/// One batch on its way.
pub(super) struct Slot {
    state: Mutex<SlotState>,
    done: Condvar,
    /// Bytes this batch counts against the budget (0 when it did not).
    pub(super) budget: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Slot {
    /// Runs the work if nobody started it yet; true when it ran here.
    fn run_if_queued(&self, dctx: &mut zstd::bulk::Decompressor<'static>) -> bool {
        let work = {
            let mut st = lock(&self.state);
            match std::mem::replace(&mut *st, SlotState::Running) {
                SlotState::Queued(w) => w,
                other => {
                    *st = other;
                    return false;
                }
            }
        };
        let result = work(dctx);
        *lock(&self.state) = SlotState::Done(result);
        self.done.notify_all();
        true
    }

    /// The batch's bytes: runs it here when nobody has started it, else
    /// waits for the worker that did.
    pub(super) fn take(&self, dctx: &mut zstd::bulk::Decompressor<'static>) -> Result<Vec<u8>> {
        self.run_if_queued(dctx);
        let mut st = lock(&self.state);
        loop {
            match std::mem::replace(&mut *st, SlotState::Running) {
                SlotState::Done(r) => return r,
                SlotState::Running => {}
                other => {
                    *st = other;
                    return Err(Error::Internal("a read batch was cancelled".into()));
                }
            }
            st = self.done.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Drops the work if nobody started it, and waits for it if a worker
    /// is running it: once a reader is gone, no work of its is in flight
    /// (a worker still inside the store when the process exits would be
    /// inside RocksDB while its statics are destroyed).
    pub(super) fn cancel(&self) {
        let mut st = lock(&self.state);
        loop {
            match *st {
                SlotState::Queued(_) => {
                    *st = SlotState::Cancelled;
                    return;
                }
                SlotState::Running => {
                    st = self.done.wait(st).unwrap_or_else(|p| p.into_inner());
                }
                SlotState::Done(_) | SlotState::Cancelled => return,
            }
        }
    }
}

struct Queue {
    slots: Mutex<VecDeque<Arc<Slot>>>,
    ready: Condvar,
    stop: AtomicBool,
    /// Budget in use, in bytes.
    in_flight: AtomicU64,
}

/// The pool; dropping it stops its threads. They are not joined: the last
/// handle of a store may be dropped on a worker (a batch owns one), and a
/// worker holds nothing but the queue.
pub(super) struct ReadPool {
    queue: Arc<Queue>,
    threads: usize,
}

impl ReadPool {
    /// A pool of `threads` workers (at least one).
    pub(super) fn new(threads: usize) -> Self {
        let queue = Arc::new(Queue {
            slots: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            stop: AtomicBool::new(false),
            in_flight: AtomicU64::new(0),
        });
        let threads = (0..threads.max(1))
            .filter(|i| {
                let q = Arc::clone(&queue);
                std::thread::Builder::new()
                    .name(format!("imgstore-read-{i}"))
                    .spawn(move || worker(&q))
                    .is_ok()
            })
            .count();
        Self { queue, threads }
    }

    /// Takes `bytes` of the budget, if there is room.
    pub(super) fn reserve(&self, bytes: u64) -> bool {
        let q = &self.queue;
        let prev = q.in_flight.fetch_add(bytes, Ordering::AcqRel);
        if prev + bytes > READAHEAD_BUDGET {
            q.in_flight.fetch_sub(bytes, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Queues `work`, which holds `budget` bytes reserved for it.
    pub(super) fn submit(&self, work: Work, budget: u64) -> Arc<Slot> {
        let q = &self.queue;
        let slot = Arc::new(Slot {
            state: Mutex::new(SlotState::Queued(work)),
            done: Condvar::new(),
            budget,
        });
        if self.threads > 0 {
            lock(&q.slots).push_back(Arc::clone(&slot));
            q.ready.notify_one();
        }
        // Without workers the reader runs everything itself.
        slot
    }

    /// Read-ahead bytes all readers hold now.
    pub(super) fn in_flight(&self) -> u64 {
        self.queue.in_flight.load(Ordering::Acquire)
    }

    /// Gives back what a slot counted against the budget.
    pub(super) fn release(&self, slot: &Slot) {
        if slot.budget > 0 {
            self.queue
                .in_flight
                .fetch_sub(slot.budget, Ordering::AcqRel);
        }
    }
}

impl Drop for ReadPool {
    fn drop(&mut self) {
        self.queue.stop.store(true, Ordering::SeqCst);
        self.queue.ready.notify_all();
    }
}

fn worker(q: &Queue) {
    let Ok(mut dctx) = zstd::bulk::Decompressor::new() else {
        return; // readers run their batches themselves
    };
    loop {
        let slot = {
            let mut slots = lock(&q.slots);
            loop {
                if q.stop.load(Ordering::SeqCst) {
                    return;
                }
                if let Some(s) = slots.pop_front() {
                    break s;
                }
                slots = q.ready.wait(slots).unwrap_or_else(|p| p.into_inner());
            }
        };
        slot.run_if_queued(&mut dctx);
    }
}
