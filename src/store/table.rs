//! Typed tables: where the layers above the engine keep their own records
//! (images, jobs, settings, their indexes), in the same RocksDB as the
//! engine's, so that a record and the file references it holds commit in
//! one batch.
//!
//! A layer declares a [`Table`] (a column family name, how keys and values
//! encode) and lists it in [`StoreOptions::tables`](super::StoreOptions).
//! It reads committed records with [`Store::get`] and [`Store::scan`], and
//! changes them inside a transaction with [`Txn::get`], [`Txn::put`] and
//! [`Txn::delete`]; a transaction reads its own pending changes.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use super::{Store, Txn};
use crate::error::{Error, Result};

/// A column family of a layer above the engine, with typed keys and values.
pub trait Table: 'static {
    /// The column family's name; unique among all tables and the engine's
    /// own (`meta`, `chunks`, `files`, `file_chunks`, `segments`, `partials`).
    const NAME: &'static str;
    /// What a record is looked up by.
    type Key: ?Sized;
    /// What a record holds.
    type Value;
    /// The key's bytes; keys sort by these bytes (big-endian numbers sort).
    fn key(key: &Self::Key) -> Vec<u8>;
    /// The value's bytes.
    fn encode(value: &Self::Value) -> std::result::Result<Vec<u8>, CodecError>;
    /// A value from its bytes; an error means the record is damaged.
    fn decode(raw: &[u8]) -> std::result::Result<Self::Value, CodecError>;
    /// True when records of this table have entries in index tables
    /// ([`Table::index_keys`]); false spares every put a read.
    const INDEXED: bool = false;
    /// The entries a record has in index tables: (the index table's
    /// name, key), each with an empty value. [`Txn::put`] and
    /// [`Txn::delete`] keep them in step with the record in the same
    /// commit, so an index is never behind its table.
    fn index_keys(_value: &Self::Value) -> Vec<(&'static str, Vec<u8>)> {
        Vec::new()
    }
}

/// Index entries of one record, as a set.
type IndexKeys = std::collections::BTreeSet<(&'static str, Vec<u8>)>;

fn index_keys<T: Table>(value: Option<&T::Value>) -> IndexKeys {
    value
        .map(T::index_keys)
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// Why a table's codec could not encode or decode a value; it becomes the
/// source of the engine's error.
pub type CodecError = Box<dyn std::error::Error + Send + Sync>;

/// JSON encoding for tables whose values are serde types (the layers'
/// records are small and evolve by adding optional fields).
pub fn json_encode<T: serde::Serialize>(v: &T) -> std::result::Result<Vec<u8>, CodecError> {
    Ok(serde_json::to_vec(v)?)
}

/// See [`json_encode`].
pub fn json_decode<T: serde::de::DeserializeOwned>(
    raw: &[u8],
) -> std::result::Result<T, CodecError> {
    Ok(serde_json::from_slice(raw)?)
}

fn decode<T: Table>(key: &[u8], raw: &[u8]) -> Result<T::Value> {
    T::decode(raw).map_err(|e| Error::bad_record(T::NAME, hex::encode(key), e))
}

fn encode<T: Table>(value: &T::Value) -> Result<Vec<u8>> {
    T::encode(value).map_err(|e| Error::Internal(format!("encoding a {} record: {e}", T::NAME)))
}

impl Store {
    /// The committed record of `T` under `key`.
    pub fn get<T: Table>(&self, key: &T::Key) -> Result<Option<T::Value>> {
        let k = T::key(key);
        match self.inner.index.get_cf(T::NAME, &k)? {
            None => Ok(None),
            Some(raw) => decode::<T>(&k, &raw).map(Some),
        }
    }

    /// Calls `f` with each committed record of `T` whose key starts with
    /// `prefix`, in key order, until `f` breaks.
    pub fn scan<T: Table>(
        &self,
        prefix: &[u8],
        mut f: impl FnMut(&[u8], T::Value) -> ControlFlow<()>,
    ) -> Result<()> {
        self.inner
            .index
            .for_each_cf(T::NAME, prefix, |k, v| Ok(f(k, decode::<T>(k, v)?)))
    }

    /// Every committed record of `T` whose key starts with `prefix`.
    pub fn scan_all<T: Table>(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, T::Value)>> {
        let mut out = Vec::new();
        self.scan::<T>(prefix, |k, v| {
            out.push((k.to_vec(), v));
            ControlFlow::Continue(())
        })?;
        Ok(out)
    }
}

/// Writes of a transaction to layers' tables, by (table, key); `None`
/// deletes. Reads look here first, so a transaction sees its own changes.
#[derive(Default)]
pub(super) struct Pending(BTreeMap<(&'static str, Vec<u8>), Option<Vec<u8>>>);

impl Txn<'_> {
    /// The record of `T` under `key`, as this transaction sees it.
    pub fn get<T: Table>(&self, key: &T::Key) -> Result<Option<T::Value>> {
        let k = T::key(key);
        let raw = match self.pending.0.get(&(T::NAME, k.clone())) {
            Some(pending) => pending.clone(),
            None => self.index.get_cf(T::NAME, &k)?,
        };
        raw.map(|r| decode::<T>(&k, &r)).transpose()
    }

    /// Writes the record of `T` under `key` when the transaction commits
    /// (with its index entries).
    pub fn put<T: Table>(&mut self, key: &T::Key, value: &T::Value) -> Result<()> {
        if T::INDEXED {
            let old = self.get::<T>(key)?;
            self.reindex(index_keys::<T>(old.as_ref()), index_keys::<T>(Some(value)))?;
        }
        let k = T::key(key);
        let raw = encode::<T>(value)?;
        self.batch.put_cf(T::NAME, &k, &raw)?;
        self.pending.0.insert((T::NAME, k), Some(raw));
        Ok(())
    }

    /// Deletes the record of `T` under `key` when the transaction commits
    /// (with its index entries).
    pub fn delete<T: Table>(&mut self, key: &T::Key) -> Result<()> {
        if T::INDEXED {
            let old = self.get::<T>(key)?;
            self.reindex(index_keys::<T>(old.as_ref()), IndexKeys::new())?;
        }
        let k = T::key(key);
        self.batch.delete_cf(T::NAME, &k)?;
        self.pending.0.insert((T::NAME, k), None);
        Ok(())
    }

    /// Deletes the index entries only `old` has and writes those only
    /// `new` has.
    fn reindex(&mut self, old: IndexKeys, new: IndexKeys) -> Result<()> {
        for (table, k) in old.difference(&new) {
            self.batch.delete_cf(table, k)?;
            self.pending.0.insert((table, k.clone()), None);
        }
        for (table, k) in new.difference(&old) {
            self.batch.put_cf(table, k, &[])?;
            self.pending.0.insert((table, k.clone()), Some(Vec::new()));
        }
        Ok(())
    }

    /// Brings the index entries of every committed record of `T` in line
    /// with the records: adds missing ones, deletes those no record has (a
    /// store written before an index existed, or damage). Call it before
    /// this transaction writes to `T` or the indexes. Holds the index keys,
    /// not the records. Returns how many entries it changed.
    pub fn rebuild_indexes<T: Table>(&mut self, indexes: &[&'static str]) -> Result<usize> {
        let mut want = IndexKeys::new();
        self.index.for_each_cf(T::NAME, &[], |k, raw| {
            want.extend(T::index_keys(&decode::<T>(k, raw)?));
            Ok(ControlFlow::Continue(()))
        })?;
        let mut have = IndexKeys::new();
        for table in indexes {
            self.index.for_each_cf(table, &[], |k, _| {
                have.insert((*table, k.to_vec()));
                Ok(ControlFlow::Continue(()))
            })?;
        }
        let changed = want.symmetric_difference(&have).count();
        self.reindex(have, want)?;
        Ok(changed)
    }

    /// The keys of `T` this transaction writes or deletes (a layer that
    /// keeps a view of its table in memory refreshes these after commit).
    pub fn pending_keys<T: Table>(&self) -> Vec<Vec<u8>> {
        let lo = (T::NAME, Vec::new());
        self.pending
            .0
            .range(lo..)
            .take_while(|((table, _), _)| *table == T::NAME)
            .map(|((_, k), _)| k.clone())
            .collect()
    }

    /// Every record of `T` whose key starts with `prefix`, as this
    /// transaction sees it (committed records merged with its own writes),
    /// in key order. The commit lock keeps the committed part still.
    pub fn scan_all<T: Table>(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, T::Value)>> {
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> =
            self.index.scan_cf(T::NAME, prefix)?.into_iter().collect();
        let lo = (T::NAME, prefix.to_vec());
        for ((table, k), v) in self.pending.0.range(lo..) {
            if *table != T::NAME || !k.starts_with(prefix) {
                break;
            }
            match v {
                Some(raw) => merged.insert(k.clone(), raw.clone()),
                None => merged.remove(k),
            };
        }
        merged
            .into_iter()
            .map(|(k, raw)| {
                let v = decode::<T>(&k, &raw)?;
                Ok((k, v))
            })
            .collect()
    }
}
