//! Typed tables and transactions generic over the caller's error: what the
//! layers above the engine build on.

use std::ops::ControlFlow;

use imgstore::store::{json_decode, json_encode};
use imgstore::transfer::{Expect, LocalSource, Progress, receive_file_with};
use imgstore::{Error, Store, StoreOptions, Table};

use crate::common::*;

/// A layer's table: strings under a name.
struct Notes;
impl Table for Notes {
    const NAME: &'static str = "notes";
    type Key = str;
    type Value = String;
    fn key(key: &str) -> Vec<u8> {
        key.as_bytes().to_vec()
    }
    fn encode(value: &String) -> Result<Vec<u8>, imgstore::store::CodecError> {
        json_encode(value)
    }
    fn decode(raw: &[u8]) -> Result<String, imgstore::store::CodecError> {
        json_decode(raw)
    }
}

/// A caller's own error type.
#[derive(Debug, PartialEq)]
enum LayerError {
    Refused(&'static str),
    Engine(String),
}

impl From<Error> for LayerError {
    fn from(e: Error) -> Self {
        LayerError::Engine(e.to_string())
    }
}

fn open(dir: &std::path::Path) -> Store {
    Store::open_with(
        dir,
        StoreOptions {
            tables: vec![Notes::NAME],
            ..small_options()
        },
    )
    .unwrap()
}

#[test]
fn a_transaction_reads_its_own_writes_and_commits_them_together() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .transaction(|t| {
            t.put::<Notes>("a", &"one".to_string())?;
            t.put::<Notes>("b", &"two".to_string())?;
            // A save followed by a load in one transaction sees the save.
            assert_eq!(t.get::<Notes>("a")?.as_deref(), Some("one"));
            Ok::<_, Error>(())
        })
        .unwrap();
    store
        .transaction(|t| {
            t.delete::<Notes>("a")?;
            t.put::<Notes>("c", &"three".to_string())?;
            assert_eq!(t.get::<Notes>("a")?, None);
            // A scan merges committed records with pending writes.
            let keys: Vec<Vec<u8>> = t
                .scan_all::<Notes>(b"")?
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            assert_eq!(keys, [b"b".to_vec(), b"c".to_vec()]);
            // Committed state is unchanged until the commit.
            assert_eq!(store_get(&store, "a"), Some("one".into()));
            Ok::<_, Error>(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store_get(&store, "a"), None);
    assert_eq!(store_get(&store, "c"), Some("three".into()));
    let mut seen = Vec::new();
    store
        .scan::<Notes>(b"", |k, v| {
            seen.push((String::from_utf8_lossy(k).to_string(), v));
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(seen.len(), 2);
}

fn store_get(store: &Store, key: &str) -> Option<String> {
    store.get::<Notes>(key).unwrap()
}

#[test]
fn a_caller_error_aborts_with_nothing_written_and_comes_back_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let id = put(&store, &bytes(100_000, 1));
    let res: Result<(), LayerError> = store.transaction(|t| {
        t.put::<Notes>("x", &"never".to_string())?;
        t.link(&id)?;
        Err(LayerError::Refused("no"))
    });
    assert_eq!(res, Err(LayerError::Refused("no")));
    assert_eq!(store_get(&store, "x"), None);
    assert_eq!(store.stat(&id).unwrap().refs, 1, "the link was not kept");
    // An engine error inside reaches the caller as its own type.
    let missing = imgstore::FileId([9; 32]);
    let res: Result<(), LayerError> = store.transaction(|t| {
        t.link(&missing)?;
        Ok(())
    });
    assert!(matches!(res, Err(LayerError::Engine(m)) if m.contains("not found")));
    assert_clean(&store);
}

#[test]
fn a_transfer_hands_the_callers_commit_error_back_and_keeps_what_it_verified() {
    let src_dir = tempfile::tempdir().unwrap();
    let src = open(src_dir.path());
    let data = text(300_000, 4);
    let id = put(&src, &data);
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let source = LocalSource::new(src.clone(), id).unwrap();
    let partial = [3u8; 16];
    let res: Result<_, LayerError> = receive_file_with(
        &store,
        &source,
        &partial,
        &Expect::default(),
        &Progress::default(),
        &crate::transfer::opts(),
        &mut |_, _| Err(LayerError::Refused("image gone")),
    );
    assert!(matches!(res, Err(LayerError::Refused("image gone"))));
    assert!(store.get::<Notes>("x").unwrap().is_none());
    // Nothing was committed, but the verified chunks stay held for a retry.
    assert!(store.stat(&id).is_err());
    assert!(store.partial_len(&partial).unwrap() > 0);
    store.release_partial(&partial).unwrap();
    assert_clean(&store);
}

/// A table indexed by the first word of each note.
struct Words;
impl Table for Words {
    const NAME: &'static str = "words";
    type Key = str;
    type Value = String;
    fn key(key: &str) -> Vec<u8> {
        key.as_bytes().to_vec()
    }
    fn encode(value: &String) -> Result<Vec<u8>, imgstore::store::CodecError> {
        json_encode(value)
    }
    fn decode(raw: &[u8]) -> Result<String, imgstore::store::CodecError> {
        json_decode(raw)
    }
    const INDEXED: bool = true;
    fn index_keys(value: &String) -> Vec<(&'static str, Vec<u8>)> {
        let first = value.split(' ').next().unwrap_or_default();
        vec![(ByFirstWord::NAME, format!("{first}/{value}").into_bytes())]
    }
}

/// The index of [`Words`].
struct ByFirstWord;
impl Table for ByFirstWord {
    const NAME: &'static str = "words_by_first";
    type Key = str;
    type Value = ();
    fn key(key: &str) -> Vec<u8> {
        key.as_bytes().to_vec()
    }
    fn encode((): &()) -> Result<Vec<u8>, imgstore::store::CodecError> {
        Ok(Vec::new())
    }
    fn decode(_: &[u8]) -> Result<(), imgstore::store::CodecError> {
        Ok(())
    }
}

/// [`Words`] written without its index, as a store from before it.
struct WordsUnindexed;
impl Table for WordsUnindexed {
    const NAME: &'static str = "words";
    type Key = str;
    type Value = String;
    fn key(key: &str) -> Vec<u8> {
        key.as_bytes().to_vec()
    }
    fn encode(value: &String) -> Result<Vec<u8>, imgstore::store::CodecError> {
        json_encode(value)
    }
    fn decode(raw: &[u8]) -> Result<String, imgstore::store::CodecError> {
        json_decode(raw)
    }
}

fn index_of(store: &Store) -> Vec<String> {
    store
        .scan_all::<ByFirstWord>(&[])
        .unwrap()
        .into_iter()
        .map(|(k, ())| String::from_utf8(k).unwrap())
        .collect()
}

#[test]
fn an_index_follows_its_table_in_the_same_commit_and_rebuilds() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(
        dir.path(),
        StoreOptions {
            tables: vec![Words::NAME, ByFirstWord::NAME],
            ..small_options()
        },
    )
    .unwrap();
    store
        .transaction(|t| {
            t.put::<Words>("1", &"red apple".to_string())?;
            t.put::<Words>("2", &"red car".to_string())?;
            t.put::<Words>("3", &"blue sky".to_string())?;
            // The transaction sees its own index entries.
            assert_eq!(t.scan_all::<ByFirstWord>(b"red/")?.len(), 2);
            Ok::<_, Error>(())
        })
        .unwrap();
    assert_eq!(
        index_of(&store),
        ["blue/blue sky", "red/red apple", "red/red car"]
    );
    // A changed record moves its entry; a deleted one takes it along.
    store
        .transaction(|t| {
            t.put::<Words>("2", &"green car".to_string())?;
            t.delete::<Words>("3")?;
            Ok::<_, Error>(())
        })
        .unwrap();
    assert_eq!(index_of(&store), ["green/green car", "red/red apple"]);
    // An aborted transaction leaves record and index as they were.
    let r = store.transaction(|t| {
        t.delete::<Words>("1")?;
        Err::<(), _>(LayerError::Refused("no"))
    });
    assert_eq!(r, Err(LayerError::Refused("no")));
    assert_eq!(index_of(&store), ["green/green car", "red/red apple"]);
    // Records written without the index, and a stray entry: a rebuild
    // makes the index exactly the records' again, and a second changes nothing.
    store
        .transaction(|t| {
            t.put::<WordsUnindexed>("4", &"gray cat".to_string())?;
            t.put::<ByFirstWord>("stray/entry", &())?;
            Ok::<_, Error>(())
        })
        .unwrap();
    let changed = store
        .transaction(|t| t.rebuild_indexes::<Words>(&[ByFirstWord::NAME]))
        .unwrap();
    assert_eq!(changed, 2);
    assert_eq!(
        index_of(&store),
        ["gray/gray cat", "green/green car", "red/red apple"]
    );
    let again = store
        .transaction(|t| t.rebuild_indexes::<Words>(&[ByFirstWord::NAME]))
        .unwrap();
    assert_eq!(again, 0);
}
