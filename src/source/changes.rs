//! What a write batch changes in the external-files column family: the
//! references its puts make, each with its record key, read from RocksDB's own
//! batch bytes (`WriteBatch::iterate_cf`), and which column families it
//! writes. Deletions need nothing here: a restore to a point reads the
//! records alive there.

use crate::common::references::Reference;
use crate::error::{Error, Problem, Result};
use crate::source::ExternalFiles;

/// The id a database gives column family `name` (write batches name column
/// families by id).
pub fn column_family_id(db: &rocksdb::DB, name: &str) -> Result<u32> {
    use rocksdb::AsColumnFamilyRef;
    let cf = db.cf_handle(name).ok_or_else(|| {
        Error::Usage(format!(
            "column family {name:?} (--blob-cf) does not exist in the database"
        ))
    })?;
    // SAFETY: the handle is valid while `db` is borrowed; the call only reads it.
    Ok(unsafe { librocksdb_sys::rocksdb_column_family_handle_get_id(cf.inner()) })
}

/// The ids of the column families `batch` writes to (puts, deletions,
/// merges).
pub fn column_families_written(batch: &[u8]) -> std::collections::BTreeSet<u32> {
    struct Written(std::collections::BTreeSet<u32>);
    impl rocksdb::WriteBatchIteratorCf for Written {
        fn put_cf(&mut self, cf_id: u32, _: &[u8], _: &[u8]) {
            self.0.insert(cf_id);
        }
        fn delete_cf(&mut self, cf_id: u32, _: &[u8]) {
            self.0.insert(cf_id);
        }
        fn merge_cf(&mut self, cf_id: u32, _: &[u8], _: &[u8]) {
            self.0.insert(cf_id);
        }
    }
    let mut written = Written(Default::default());
    rocksdb::WriteBatch::from_data(batch).iterate_cf(&mut written);
    written.0
}

/// One reference a batch makes, or why its record has none that can be read.
pub struct Referencing {
    /// The record's key.
    pub key: Vec<u8>,
    /// Its reference, or the problem with it.
    pub reference: std::result::Result<Reference, Problem>,
}

/// The references the puts of `batch` make in column family `cf_id`.
pub fn references(batch: &[u8], cf_id: u32, files: &ExternalFiles) -> Vec<Referencing> {
    struct Puts<'a> {
        cf_id: u32,
        files: &'a ExternalFiles,
        found: Vec<Referencing>,
    }
    impl rocksdb::WriteBatchIteratorCf for Puts<'_> {
        fn put_cf(&mut self, cf_id: u32, key: &[u8], value: &[u8]) {
            if cf_id != self.cf_id {
                return;
            }
            let found =
                match self.files.extractor.extract(key, value) {
                    Ok(refs) => refs.into_iter().map(Ok).collect(),
                    Err(reason) => vec![Err(Problem::invalid("", reason)
                        .in_record(crate::common::names::display_key(key)))],
                };
            self.found
                .extend(found.into_iter().map(|reference| Referencing {
                    key: key.to_vec(),
                    reference,
                }));
        }
        fn delete_cf(&mut self, _: u32, _: &[u8]) {}
        fn merge_cf(&mut self, _: u32, _: &[u8], _: &[u8]) {}
    }
    let mut puts = Puts {
        cf_id,
        files,
        found: Vec::new(),
    };
    rocksdb::WriteBatch::from_data(batch).iterate_cf(&mut puts);
    puts.found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::references::{RefSource, ResolverConfig};

    #[test]
    fn puts_in_the_files_column_family_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let db = rocksdb::DB::open_cf(&opts, dir.path(), ["files", "other"]).unwrap();
        let files_id = column_family_id(&db, "files").unwrap();
        assert_ne!(files_id, column_family_id(&db, "other").unwrap());
        let (files_cf, other) = (
            db.cf_handle("files").unwrap(),
            db.cf_handle("other").unwrap(),
        );
        let mut batch = rocksdb::WriteBatch::default();
        batch.put_cf(&files_cf, b"k1", br#"{"path":"a/one"}"#);
        batch.put_cf(&other, b"k2", br#"{"path":"elsewhere"}"#);
        batch.delete_cf(&files_cf, b"k0");
        batch.put_cf(&files_cf, b"k3", br#"{"path":5}"#);
        let external = ExternalFiles::new(
            dir.path(),
            "files",
            ResolverConfig::new(RefSource::Json("/path".into())),
        );
        let other_id = column_family_id(&db, "other").unwrap();
        assert_eq!(
            column_families_written(batch.data()),
            [files_id, other_id].into()
        );
        let found = references(batch.data(), files_id, &external);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].key, b"k1");
        assert_eq!(found[0].reference.as_ref().unwrap().path, "a/one");
        assert!(
            found[1].reference.is_err(),
            "an unreadable record is a problem"
        );
    }
}
