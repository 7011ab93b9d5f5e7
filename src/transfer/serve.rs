//! The serving end of the chunk-diff protocol over a local store: a file's
//! chunk list, and its records exactly as stored, CRC-checked. A file
//! serves only its own chunks, so nobody fetches content by guessing
//! hashes; which chunks those are is kept for the few files being copied
//! now, because every fetch request checks each id against them.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use super::{ChunkSource, MAX_IDS_PER_FETCH};
use crate::error::{Error, Result};
use crate::format::ChunkList;
use crate::id::{ChunkId, FileId};
use crate::store::{RecordStream, Store};

/// Files whose chunk sets are kept (a copy fetches one file for minutes).
const RECENT_FILES: usize = 8;

/// Serves files of one store; cheap to share.
pub struct ChunkServer {
    store: Store,
    recent: Mutex<VecDeque<(FileId, Arc<HashSet<ChunkId>>)>>,
}

impl ChunkServer {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            recent: Mutex::new(VecDeque::with_capacity(RECENT_FILES)),
        }
    }

    /// The source for one stored file.
    pub fn file(&self, file: FileId) -> Result<LocalSource> {
        let allowed = {
            let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            recent
                .iter()
                .find(|(f, _)| *f == file)
                .map(|(_, set)| Arc::clone(set))
        };
        let allowed = match allowed {
            Some(set) => set,
            None => {
                let set = Arc::new(self.store.chunk_set(&file)?);
                let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
                if recent.len() >= RECENT_FILES {
                    recent.pop_front();
                }
                recent.push_back((file, Arc::clone(&set)));
                set
            }
        };
        Ok(LocalSource {
            store: self.store.clone(),
            file,
            allowed,
            groups: true,
        })
    }
}

/// A file of a local store as a [`ChunkSource`] (the HTTP routes serve it
/// to other daemons; tests and same-machine copies use it directly).
pub struct LocalSource {
    store: Store,
    file: FileId,
    allowed: Arc<HashSet<ChunkId>>,
    /// The receiver takes group records (transfer version 2).
    groups: bool,
}

/// Why a fetch request is refused before anything is read.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// More than [`MAX_IDS_PER_FETCH`] ids.
    TooMany(usize),
    /// An id that is not a chunk of this file.
    NotInFile(ChunkId),
}

impl LocalSource {
    pub fn new(store: Store, file: FileId) -> Result<Self> {
        let allowed = Arc::new(store.chunk_set(&file)?);
        Ok(Self {
            store,
            file,
            allowed,
            groups: true,
        })
    }

    /// This source for a receiver of transfer version 1, which takes
    /// records only: a group's members travel as records of their own.
    pub fn without_groups(mut self) -> Self {
        self.groups = false;
        self
    }

    /// The records of `ids` (checked with [`LocalSource::check`] first),
    /// served a few ids at a time.
    pub fn stream(&self, ids: Vec<ChunkId>) -> RecordStream {
        self.store
            .record_stream(Arc::clone(&self.allowed), ids, self.groups)
    }

    /// Checks a request before any record is read.
    pub fn check(&self, ids: &[ChunkId]) -> std::result::Result<(), Refused> {
        if ids.len() > MAX_IDS_PER_FETCH {
            return Err(Refused::TooMany(ids.len()));
        }
        match ids.iter().find(|i| !self.allowed.contains(i)) {
            Some(bad) => Err(Refused::NotInFile(*bad)),
            None => Ok(()),
        }
    }
}

impl ChunkSource for LocalSource {
    fn chunk_list(&self) -> Result<ChunkList> {
        let mut list = self.store.chunk_list(&self.file)?;
        if !self.groups {
            list.runs = None; // a list of version 1
        }
        Ok(list)
    }

    fn fetch(&self, ids: &[ChunkId], out: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        self.check(ids).map_err(|r| {
            Error::InvalidInput(match r {
                Refused::TooMany(n) => {
                    format!("{n} chunks asked for; at most {MAX_IDS_PER_FETCH} per request")
                }
                Refused::NotInFile(id) => format!("chunk {id} is not part of the requested file"),
            })
        })?;
        let mut stream = self.stream(ids.to_vec());
        while stream.next_ids(MAX_IDS_PER_FETCH, out)? {}
        Ok(())
    }
}
