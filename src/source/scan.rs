//! Records → references: which external files a backup captures
//! ([`ExternalFiles`]: the blob root, the column family whose records reference
//! them, the extractor), and the walk over that column family of an open
//! checkpoint that turns every record into references or problems.

use std::path::PathBuf;
use std::sync::Arc;

use crate::common::names::display_key;
use crate::common::references::{Reference, ReferenceExtractor, ResolverConfig};
use crate::error::{Error, Problem, Result};

/// Which external files a backup captures: the root they live under, the column
/// family whose records reference them, and how to read the references.
#[derive(Clone)]
pub struct ExternalFiles {
    /// The directory the references are relative to.
    pub blob_root: PathBuf,
    /// The column family whose records reference files.
    pub column_family: String,
    /// How a record names its files.
    pub extractor: Arc<dyn ReferenceExtractor>,
}

impl ExternalFiles {
    /// External files found with the built-in resolver.
    pub fn new(
        blob_root: impl Into<PathBuf>,
        column_family: impl Into<String>,
        resolver: ResolverConfig,
    ) -> Self {
        Self {
            blob_root: blob_root.into(),
            column_family: column_family.into(),
            extractor: Arc::new(resolver),
        }
    }
}

/// Bytes read ahead by the scan of the external-files column family.
const SCAN_READAHEAD: usize = 2 << 20;

/// Iterates the external-files column family of an open (checkpoint) database and
/// hands every extracted reference, or problem, to `each`; stops early when `each`
/// returns false. Returns the number of records read.
pub fn for_each_reference(
    db: &rocksdb::DB,
    files: &ExternalFiles,
    mut each: impl FnMut(&[u8], std::result::Result<Reference, Problem>) -> bool,
) -> Result<u64> {
    let cf = db.cf_handle(&files.column_family).ok_or_else(|| {
        Error::Usage(format!(
            "column family {:?} (--blob-cf) does not exist in the database",
            files.column_family
        ))
    })?;
    // One sequential pass: read ahead, and keep the blocks out of the cache.
    let mut read = rocksdb::ReadOptions::default();
    read.fill_cache(false);
    read.set_readahead_size(SCAN_READAHEAD);
    let mut iter = db.raw_iterator_cf_opt(&cf, read);
    iter.seek_to_first();
    let mut records = 0;
    while iter.valid() {
        let (key, value) = (
            iter.key().unwrap_or_default(),
            iter.value().unwrap_or_default(),
        );
        records += 1;
        let outcome = match files.extractor.extract(key, value) {
            Ok(refs) => refs.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(reason) => vec![Err(Problem::invalid("", reason).in_record(display_key(key)))],
        };
        for item in outcome {
            if !each(key, item) {
                return Ok(records);
            }
        }
        iter.next();
    }
    iter.status().map_err(|e| {
        Error::rocks(
            format!("reading column family {:?}", files.column_family),
            e,
        )
    })?;
    Ok(records)
}
