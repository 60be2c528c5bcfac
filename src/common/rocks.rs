//! Opening a RocksDB database read-only the way its application configured it:
//! the newest OPTIONS file (column families, comparators, `wal_dir`), or the
//! application's own `rocksdb::Options`. Used on the source database, on a
//! checkpoint, and on a restored database.

use std::path::Path;

use rocksdb::{Cache, DBRecoveryMode, Env, Options, DB};

use crate::error::{Error, Result};

/// Files a read-only instance keeps open at most, so memory does not grow with
/// the size of the database.
const MAX_OPEN_FILES: i32 = 256;

/// Settings read from a database's newest OPTIONS file.
#[derive(Debug, Default, PartialEq)]
pub struct OptionsFile {
    /// The database's `wal_dir`, when it sets one.
    pub wal_dir: Option<String>,
    /// (column family, comparator)
    pub comparators: Vec<(String, String)>,
    /// Whether files are spread over `db_paths`/`cf_paths`.
    pub multiple_paths: bool,
}

/// The settings of the newest OPTIONS file in `dir` (all empty without one).
pub fn read_options_file(dir: &Path) -> Result<OptionsFile> {
    let newest = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter_map(|name| Some((name.strip_prefix("OPTIONS-")?.parse::<u64>().ok()?, name)))
        .max();
    let Some((_, name)) = newest else {
        return Ok(OptionsFile::default());
    };
    let text =
        std::fs::read_to_string(dir.join(&name)).map_err(|e| Error::io(dir.join(&name), e))?;
    Ok(parse_options_file(&text))
}

fn parse_options_file(text: &str) -> OptionsFile {
    let mut parsed = OptionsFile::default();
    let mut cf: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            cf = line
                .strip_prefix("[CFOptions \"")
                .and_then(|rest| rest.strip_suffix("\"]"))
                .map(str::to_string);
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match (key.trim(), value.trim(), &cf) {
            ("wal_dir", v, None) if !v.is_empty() => parsed.wal_dir = Some(v.to_string()),
            ("db_paths" | "cf_paths", v, _) if !v.is_empty() && v != "{}" => {
                parsed.multiple_paths = true
            }
            ("comparator", v, Some(cf)) => parsed.comparators.push((cf.clone(), v.to_string())),
            _ => {}
        }
    }
    parsed
}

/// Options and column families from the newest OPTIONS file, or `options` for all.
fn load_options(
    dir: &Path,
    options: Option<Options>,
) -> Result<(Options, Vec<rocksdb::ColumnFamilyDescriptor>)> {
    match options {
        Some(options) => {
            let names = DB::list_cf(&options, dir).map_err(|e| {
                Error::rocks(format!("listing column families of {}", dir.display()), e)
            })?;
            let cfs = names
                .into_iter()
                .map(|n| rocksdb::ColumnFamilyDescriptor::new(n, options.clone()))
                .collect();
            Ok((options, cfs))
        }
        None => {
            let env = Env::new().map_err(|e| Error::rocks("creating a RocksDB environment", e))?;
            Options::load_latest(dir, env, true, Cache::new_lru_cache(8 << 20)).map_err(|e| {
                Error::rocks(format!("reading the OPTIONS file of {}", dir.display()), e)
            })
        }
    }
}

/// How a read-only instance finds its WAL files.
pub enum WalSource<'a> {
    /// The database's own (live) WAL directory, whose newest record may be
    /// half-written: replayed up to the last intact record.
    Live,
    /// A checkpoint's own copies, replayed in the application's recovery mode.
    Copied(&'a Path),
}

/// Opens the database at `dir` read-only with its own options (or `options`),
/// a bounded number of open files, and WALs found as `wal` says; returns it with
/// its column family names.
pub fn open_read_only(
    dir: &Path,
    options: Option<Options>,
    wal: WalSource<'_>,
) -> Result<(DB, Vec<String>)> {
    let (mut opts, cfs) = load_options(dir, options)?;
    opts.create_if_missing(false);
    opts.set_max_open_files(MAX_OPEN_FILES);
    match wal {
        WalSource::Live => opts.set_wal_recovery_mode(DBRecoveryMode::PointInTime),
        WalSource::Copied(wal_dir) => opts.set_wal_dir(wal_dir),
    }
    let names = cfs.iter().map(|cf| cf.name().to_string()).collect();
    let db = DB::open_cf_descriptors_read_only(&opts, dir, cfs, false)
        .map_err(|e| Error::rocks(format!("opening {} read-only", dir.display()), e))?;
    Ok((db, names))
}

/// Opens a checkpoint read-only with its own directory as WAL directory, so no
/// live WAL elsewhere is replayed.
pub fn open_checkpoint(dir: &Path, options: Option<Options>) -> Result<(DB, Vec<String>)> {
    open_read_only(dir, options, WalSource::Copied(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_file_parsing() {
        let text = "[DBOptions]\n  wal_dir=/wal\n  db_paths=\n[CFOptions \"default\"]\n  comparator=leveldb.BytewiseComparator\n[CFOptions \"meta\"]\n  comparator=rocksdict\n  cf_paths=\n";
        let parsed = parse_options_file(text);
        assert_eq!(parsed.wal_dir.as_deref(), Some("/wal"));
        assert!(!parsed.multiple_paths);
        assert_eq!(
            parsed.comparators[1],
            ("meta".to_string(), "rocksdict".to_string())
        );
        assert!(parse_options_file("[DBOptions]\n db_paths={/a,1}\n").multiple_paths);
    }
}
