//! Typed, sorted, on-disk maps — a scratch RocksDB with the WAL off — so that
//! file lists of any length are sorted, de-duplicated and looked up without
//! holding them in memory (a backup's external entries, the previous backup's,
//! the pack index, what a prune keeps). A [`Spool<K, V>`] maps keys that encode
//! in their own order ([`SpoolKey`]) to values stored as JSON; several spools
//! may share one scratch database ([`Spool::beside`]), each under its own tag.

use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{BlockBasedOptions, Cache, Direction, IteratorMode, Options, WriteOptions, DB};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::digest::Sha256;
use crate::error::{Error, Result};

/// A temporary directory for an operation's scratch spools
/// (`<temp dir>/rockup-<operation>-…`), removed when dropped.
pub fn scratch_dir(operation: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("rockup-{operation}-"))
        .tempdir()
        .map_err(|e| Error::io(std::env::temp_dir(), e))
}

/// Block cache of one scratch database.
const SPOOL_BLOCK_CACHE: usize = 4 << 20;

/// A key of a spool, encoded so that the order of the bytes is the order of
/// the keys: integers big-endian, strings as their bytes — so a string ends
/// its key, and in a tuple only the last part may be one ([`FixedKey`]).
pub trait SpoolKey: Sized {
    /// Appends the encoded key.
    fn encode(&self, out: &mut Vec<u8>);
    /// Reads a key from the front of `bytes`, consuming it.
    fn decode(bytes: &mut &[u8]) -> Option<Self>;
}

/// A key of a fixed width, which may come first in a tuple key.
pub trait FixedKey: SpoolKey {}

impl FixedKey for u64 {}
impl FixedKey for Sha256 {}

impl SpoolKey for String {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
    fn decode(bytes: &mut &[u8]) -> Option<Self> {
        let text = String::from_utf8(bytes.to_vec()).ok()?;
        *bytes = &[];
        Some(text)
    }
}

/// Fixed-width keys: their bytes as they are.
fn take<const N: usize>(bytes: &mut &[u8]) -> Option<[u8; N]> {
    let (head, rest) = bytes.split_first_chunk::<N>()?;
    *bytes = rest;
    Some(*head)
}

impl SpoolKey for u64 {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_be_bytes());
    }
    fn decode(bytes: &mut &[u8]) -> Option<Self> {
        take(bytes).map(u64::from_be_bytes)
    }
}

impl SpoolKey for Sha256 {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
    fn decode(bytes: &mut &[u8]) -> Option<Self> {
        take(bytes).map(Sha256::from_bytes)
    }
}

impl<A: FixedKey, B: SpoolKey> SpoolKey for (A, B) {
    fn encode(&self, out: &mut Vec<u8>) {
        self.0.encode(out);
        self.1.encode(out);
    }
    fn decode(bytes: &mut &[u8]) -> Option<Self> {
        Some((A::decode(bytes)?, B::decode(bytes)?))
    }
}

impl<A: FixedKey, B: FixedKey, C: SpoolKey> SpoolKey for (A, B, C) {
    fn encode(&self, out: &mut Vec<u8>) {
        self.0.encode(out);
        self.1.encode(out);
        self.2.encode(out);
    }
    fn decode(bytes: &mut &[u8]) -> Option<Self> {
        Some((A::decode(bytes)?, B::decode(bytes)?, C::decode(bytes)?))
    }
}

/// The scratch database spools share.
struct Scratch {
    db: DB,
    write: WriteOptions,
    dir: PathBuf,
}

/// A scratch sorted map from `K` to `V`, removed with its directory (clones
/// are the same map).
pub struct Spool<K, V> {
    scratch: Arc<Scratch>,
    tag: u8,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for Spool<K, V> {
    fn clone(&self) -> Self {
        Self {
            scratch: self.scratch.clone(),
            tag: self.tag,
            _types: PhantomData,
        }
    }
}

impl<K: SpoolKey, V: Serialize + DeserializeOwned> Spool<K, V> {
    /// Creates an empty spool in a new scratch database at `dir`.
    pub fn create(dir: &Path) -> Result<Self> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_write_buffer_size(8 << 20);
        opts.set_max_open_files(64);
        // RocksDB's default is a 32 MiB block cache per database; a spool's
        // files are in the page cache anyway, and several spools run at once.
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&Cache::new_lru_cache(SPOOL_BLOCK_CACHE));
        opts.set_block_based_table_factory(&table);
        let db = DB::open(&opts, dir)
            .map_err(|e| Error::rocks(format!("creating scratch index {}", dir.display()), e))?;
        let mut write = WriteOptions::default();
        write.disable_wal(true);
        let dir = dir.to_path_buf();
        let scratch = Arc::new(Scratch { db, write, dir });
        Ok(Self::in_scratch(scratch, 0))
    }

    /// Another, empty spool in the same scratch database, under `tag`.
    pub fn beside<K2: SpoolKey, V2: Serialize + DeserializeOwned>(&self, tag: u8) -> Spool<K2, V2> {
        assert_ne!(
            tag, self.tag,
            "each spool of a scratch database has its own tag"
        );
        Spool::in_scratch(self.scratch.clone(), tag)
    }

    fn in_scratch(scratch: Arc<Scratch>, tag: u8) -> Self {
        Self {
            scratch,
            tag,
            _types: PhantomData,
        }
    }

    /// Inserts or replaces an entry.
    pub fn put(&self, key: &K, value: &V) -> Result<()> {
        let value = serde_json::to_vec(value).expect("spool values serialize");
        let scratch = &self.scratch;
        scratch
            .db
            .put_opt(self.key(key), value, &scratch.write)
            .map_err(|e| Error::rocks("writing scratch index", e))
    }

    /// Looks an entry up.
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        let found = self
            .scratch
            .db
            .get(self.key(key))
            .map_err(|e| Error::rocks("reading scratch index", e))?;
        found.map(|bytes| self.value(&bytes)).transpose()
    }

    /// Whether there is an entry for `key`.
    pub fn contains(&self, key: &K) -> Result<bool> {
        Ok(self.get(key)?.is_some())
    }

    /// Up to `limit` entries from `start` on (the first when `None`), in key
    /// order: a batch to work on without holding an iterator across awaits.
    pub fn batch_from(&self, start: Option<&K>, limit: usize) -> Result<Vec<(K, V)>> {
        let from = start.map_or_else(|| vec![self.tag], |key| self.key(key));
        let mode = IteratorMode::From(&from, Direction::Forward);
        let mut batch = Vec::new();
        for item in self.scratch.db.iterator(mode).take(limit) {
            let (key, value) = item.map_err(|e| Error::rocks("reading scratch index", e))?;
            match key.split_first() {
                Some((tag, key)) if *tag == self.tag => {
                    batch.push((self.decode_key(key)?, self.value(&value)?));
                }
                _ => break,
            }
        }
        Ok(batch)
    }

    /// Up to `limit` entries after `after` (from the first when `None`).
    pub fn batch_after(&self, after: Option<&K>, limit: usize) -> Result<Vec<(K, V)>> {
        let mut batch = self.batch_from(after, limit.saturating_add(1))?;
        let skip_first = after.is_some_and(|after| {
            batch
                .first()
                .is_some_and(|(first, _)| self.key(first) == self.key(after))
        });
        if skip_first {
            batch.remove(0);
        }
        batch.truncate(limit);
        Ok(batch)
    }

    /// Every entry, in key order.
    pub fn iter(&self) -> impl Iterator<Item = Result<(K, V)>> + '_ {
        let start = [self.tag];
        let mode = IteratorMode::From(&start, Direction::Forward);
        self.scratch
            .db
            .iterator(mode)
            .take_while(|item| {
                item.as_ref()
                    .map_or(true, |(key, _)| key.first() == Some(&self.tag))
            })
            .map(|item| {
                let (key, value) = item.map_err(|e| Error::rocks("reading scratch index", e))?;
                Ok((self.decode_key(&key[1..])?, self.value(&value)?))
            })
    }

    fn key(&self, key: &K) -> Vec<u8> {
        let mut bytes = vec![self.tag];
        key.encode(&mut bytes);
        bytes
    }

    fn decode_key(&self, mut bytes: &[u8]) -> Result<K> {
        match K::decode(&mut bytes) {
            Some(key) if bytes.is_empty() => Ok(key),
            _ => Err(self.damaged("a key")),
        }
    }

    fn value(&self, bytes: &[u8]) -> Result<V> {
        serde_json::from_slice(bytes).map_err(|_| self.damaged("a value"))
    }

    /// The scratch database returned what no spool wrote (a failing disk).
    fn damaged(&self, what: &str) -> Error {
        let why = format!("{what} of rockup's scratch index is unreadable (failing disk?)");
        Error::io(
            &self.scratch.dir,
            std::io::Error::new(std::io::ErrorKind::InvalidData, why),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_and_deduplicates() {
        let dir = tempfile::tempdir().unwrap();
        let spool: Spool<String, u64> = Spool::create(dir.path()).unwrap();
        for (key, value) in [("b", 2), ("a", 1), ("c", 3), ("a", 1)] {
            spool.put(&key.to_string(), &value).unwrap();
        }
        let all: Vec<_> = spool.iter().map(|e| e.unwrap()).collect();
        assert_eq!(all, [("a".into(), 1), ("b".into(), 2), ("c".into(), 3)]);
        assert_eq!(spool.get(&"b".into()).unwrap(), Some(2));
        assert_eq!(spool.get(&"z".into()).unwrap(), None);
        let first = spool.batch_after(None, 2).unwrap();
        assert_eq!(first, [("a".into(), 1), ("b".into(), 2)]);
        let rest = spool.batch_after(Some(&"b".into()), 2).unwrap();
        assert_eq!(rest, [("c".to_string(), 3)]);
    }

    #[test]
    fn spools_beside_each_other_never_mix_and_keep_numeric_order() {
        let dir = tempfile::tempdir().unwrap();
        let words: Spool<String, ()> = Spool::create(dir.path()).unwrap();
        let numbered: Spool<(u64, u64), String> = words.beside(1);
        words.put(&"zz".into(), &()).unwrap();
        for (a, b) in [(256, 1), (2, 9), (2, 1)] {
            numbered.put(&(a, b), &format!("{a}.{b}")).unwrap();
        }
        let keys: Vec<_> = numbered.iter().map(|e| e.unwrap().0).collect();
        assert_eq!(keys, [(2, 1), (2, 9), (256, 1)]);
        assert_eq!(numbered.batch_from(Some(&(2, 5)), 10).unwrap().len(), 2);
        assert_eq!(words.iter().count(), 1);
        assert_eq!(numbered.batch_after(Some(&(256, 1)), 10).unwrap(), []);
    }
}
