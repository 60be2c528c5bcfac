//! A sorted, on-disk map in the work directory — a scratch RocksDB with the WAL
//! off — so that file lists of any length are sorted, de-duplicated and looked up
//! without holding them in memory (the current backup's external entries, and the
//! previous backup's for change detection).

use std::path::Path;

use rocksdb::{BlockBasedOptions, Cache, IteratorMode, Options, WriteOptions, DB};

use crate::error::{Error, Result};

/// A temporary directory for an operation's scratch spools
/// (`<temp dir>/rockup-<operation>-…`), removed when dropped.
pub fn scratch_dir(operation: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("rockup-{operation}-"))
        .tempdir()
        .map_err(|e| Error::io(std::env::temp_dir(), e))
}

/// Block cache of one spool.
const SPOOL_BLOCK_CACHE: usize = 4 << 20;

/// A scratch sorted map, removed with the work directory.
pub struct Spool {
    db: DB,
    write: WriteOptions,
}

impl Spool {
    /// Creates an empty spool at `dir`.
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
        Ok(Self { db, write })
    }

    /// Inserts or replaces an entry.
    pub fn put(&self, key: &str, value: &[u8]) -> Result<()> {
        self.db
            .put_opt(key, value, &self.write)
            .map_err(|e| Error::rocks("writing scratch index", e))
    }

    /// Looks an entry up.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.db
            .get(key)
            .map_err(|e| Error::rocks("reading scratch index", e))
    }

    /// Up to `limit` entries after `after` (from the first when `None`), in
    /// key order: a batch to work on without holding an iterator across awaits.
    pub fn batch_after(&self, after: Option<&str>, limit: usize) -> Result<Vec<(String, Vec<u8>)>> {
        let mode = match after {
            Some(key) => IteratorMode::From(key.as_bytes(), rocksdb::Direction::Forward),
            None => IteratorMode::Start,
        };
        let mut batch = Vec::new();
        for item in self.db.iterator(mode) {
            let (key, value) = item.map_err(|e| Error::rocks("reading scratch index", e))?;
            let key = String::from_utf8_lossy(&key).into_owned();
            if Some(key.as_str()) == after {
                continue;
            }
            batch.push((key, value.into_vec()));
            if batch.len() == limit {
                break;
            }
        }
        Ok(batch)
    }

    /// Every value, in key order.
    pub fn values(&self) -> impl Iterator<Item = Result<Box<[u8]>>> + '_ {
        self.db.iterator(IteratorMode::Start).map(|item| {
            item.map(|(_, v)| v)
                .map_err(|e| Error::rocks("reading scratch index", e))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_and_deduplicates() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::create(dir.path()).unwrap();
        for key in ["b", "a", "c", "a"] {
            spool.put(key, key.as_bytes()).unwrap();
        }
        let values: Vec<_> = spool.values().map(|v| v.unwrap().to_vec()).collect();
        assert_eq!(values, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(spool.get("b").unwrap(), Some(b"b".to_vec()));
        assert_eq!(spool.get("z").unwrap(), None);
        let first = spool.batch_after(None, 2).unwrap();
        assert_eq!(
            first.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        let rest = spool.batch_after(Some("b"), 2).unwrap();
        assert_eq!(rest, vec![("c".to_string(), b"c".to_vec())]);
    }
}
