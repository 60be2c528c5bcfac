//! The three ways into a backup, all ending in one immutable checkpoint directory
//! opened read-only at a known sequence number:
//!
//! - [`Source::Db`]: a database directory, closed or held open and written by
//!   another process (see `held`).
//! - [`Source::Checkpoint`]: a checkpoint the application made; never written to.
//! - [`Source::Live`]: the application's own open database (library mode);
//!   `Checkpoint::create_checkpoint` flushes and is consistent by itself.

use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use rocksdb::{Options, DB};

use crate::common::names::is_rocksdb_file_name;
use crate::common::rocks::{open_checkpoint, read_options_file, OptionsFile};
use crate::error::{Error, Result};
use crate::source::held;

const BUILTIN_COMPARATORS: [&str; 2] = [
    "leveldb.BytewiseComparator",
    "rocksdb.ReverseBytewiseComparator",
];

/// Where the database to back up comes from.
pub enum Source<'a> {
    /// A database directory, closed or held open (and written) by another process.
    Db(PathBuf),
    /// A checkpoint directory the application made. `options` are the
    /// application's own (comparator, merge operators); `None` reads them from the
    /// checkpoint's OPTIONS file, which works for RocksDB's built-in comparators.
    Checkpoint {
        /// The checkpoint directory.
        path: PathBuf,
        /// The application's options, if its comparators are not built in.
        options: Option<Options>,
    },
    /// The application's own open database (library mode).
    Live {
        /// The application's handle.
        db: &'a DB,
        /// Options to open the checkpoint with; `None` reads its OPTIONS file.
        options: Option<Options>,
    },
}

impl Source<'_> {
    /// The directory the source lives in.
    pub fn path(&self) -> &Path {
        match self {
            Source::Db(path) | Source::Checkpoint { path, .. } => path,
            Source::Live { db, .. } => db.path(),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Source::Db(_) => "db",
            Source::Checkpoint { .. } => "checkpoint",
            Source::Live { .. } => "live",
        }
    }
}

/// How the checkpoint of a `--db` source was taken (all zero for the others).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CheckpointStats {
    /// Attempts until the checkpoint and its WAL copy were consistent.
    pub attempts: usize,
    /// WAL files copied into the checkpoint.
    pub wal_files: usize,
    /// Bytes of the WAL files copied.
    pub wal_bytes: u64,
    /// Bytes left out at the ends of WAL files: records still being appended.
    pub wal_cut_bytes: u64,
}

/// What identifies the database a checkpoint was taken of.
pub struct Origin {
    /// `db`, `checkpoint` or `live`.
    pub kind: &'static str,
    /// The source directory.
    pub path: PathBuf,
    /// Contents of the database's IDENTITY file, when it has one.
    pub db_identity: Option<String>,
    /// Permission bits of the source directory.
    pub mode: Option<u32>,
}

/// What a checkpoint holds: the database at one point in time.
pub struct Snapshot {
    /// The sequence number the checkpoint holds the database at.
    pub sequence_number: u64,
    /// When the checkpoint was open: every write batch up to
    /// `sequence_number` had been written by then.
    pub reached_at: DateTime<Utc>,
    /// Its column families.
    pub column_families: Vec<String>,
    /// What it is a checkpoint of.
    pub origin: Origin,
}

/// A checkpoint ready to be scanned and uploaded.
pub struct Prepared {
    /// The checkpoint directory (in the work directory, or the user's own).
    pub dir: PathBuf,
    /// The checkpoint opened read-only, its WAL directory forced to `dir`.
    pub db: DB,
    /// Database files to upload, by name (RocksDB file names only).
    pub files: Vec<String>,
    /// How it was taken.
    pub stats: CheckpointStats,
    /// What it holds.
    pub snapshot: Snapshot,
}

/// The permission bits of `path`, if it can be read.
pub fn permission_bits(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(meta.permissions().mode() & 0o7777)
}

/// Makes the checkpoint for `source` (into `<work>/checkpoint` where one is made)
/// and opens it. For a `--db` source, `at_point_in_time` runs right before and
/// right after the backup's point in time is fixed by the WAL copy (before the
/// checkpoint is opened and read), and again before each retry's copy.
pub fn prepare(
    source: Source<'_>,
    work: &Path,
    at_point_in_time: &mut dyn FnMut() -> Result<()>,
) -> Result<Prepared> {
    let path = source.path().to_path_buf();
    let kind = source.kind();
    let mut stats = CheckpointStats::default();
    let (dir, options) = match source {
        Source::Db(path) => {
            let options = check_database(&path)?;
            let dir = work.join("checkpoint");
            stats = held::checkpoint_database(&path, options, &dir, at_point_in_time)?;
            (dir, None)
        }
        Source::Checkpoint { path, options } => {
            if options.is_none() {
                check_database(&path)?;
            } else {
                require_current(&path)?;
            }
            (path, options)
        }
        Source::Live { db, options } => {
            let dir = work.join("checkpoint");
            rocksdb::checkpoint::Checkpoint::new(db)
                .and_then(|c| c.create_checkpoint(&dir))
                .map_err(|e| Error::rocks(format!("checkpoint of {}", db.path().display()), e))?;
            (dir, options)
        }
    };
    let (db, column_families) = open_checkpoint(&dir, options)?;
    let db_identity = std::fs::read_to_string(dir.join("IDENTITY"))
        .or_else(|_| std::fs::read_to_string(path.join("IDENTITY")))
        .ok()
        .map(|s| s.trim().to_string());
    let snapshot = Snapshot {
        sequence_number: db.latest_sequence_number(),
        reached_at: Utc::now(),
        column_families,
        origin: Origin {
            kind,
            mode: permission_bits(&path),
            path,
            db_identity,
        },
    };
    Ok(Prepared {
        files: database_files(&dir)?,
        dir,
        db,
        stats,
        snapshot,
    })
}

fn require_current(path: &Path) -> Result<()> {
    match std::fs::metadata(path.join("CURRENT")) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::DatabaseNotFound {
            path: path.to_path_buf(),
            reason: if path.exists() {
                "no CURRENT file".into()
            } else {
                "directory does not exist".into()
            },
        }),
        Err(e) => Err(Error::io(path.join("CURRENT"), e)),
    }
}

/// Checks what the CLI needs to open a database without the application's help.
fn check_database(path: &Path) -> Result<OptionsFile> {
    require_current(path)?;
    let options = read_options_file(path)?;
    if options.multiple_paths {
        return Err(Error::Unsupported {
            path: path.to_path_buf(),
            reason: "it spreads files over db_paths/cf_paths; back it up with --checkpoint".into(),
        });
    }
    if let Some((cf, comparator)) = options
        .comparators
        .iter()
        .find(|(_, c)| !BUILTIN_COMPARATORS.contains(&c.as_str()))
    {
        return Err(Error::UnsupportedComparator {
            path: path.to_path_buf(),
            column_family: cf.clone(),
            comparator: comparator.clone(),
        });
    }
    Ok(options)
}

/// RocksDB files in a checkpoint directory, sorted; anything else (other
/// bindings' files, LOG) is left out with a note.
fn database_files(dir: &Path) -> Result<Vec<String>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_file = entry
            .file_type()
            .map_err(|e| Error::io(entry.path(), e))?
            .is_file();
        if is_file && is_rocksdb_file_name(&name) {
            files.push(name);
        } else if name != "LOCK" {
            tracing::info!(file = %entry.path().display(), "not a RocksDB file; not backed up");
        }
    }
    files.sort();
    Ok(files)
}
