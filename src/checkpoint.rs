//! The three ways into a backup, all ending in one immutable checkpoint directory
//! opened read-only at a known sequence number:
//!
//! - [`Source::Db`]: a database directory, closed or held open and written by
//!   another process. Its WAL files are pinned (opened) first, then it is opened
//!   read-only (no flush, no new MANIFEST or OPTIONS: nothing is written into it)
//!   and that instance checkpointed into the work directory; a read-only
//!   checkpoint has no WAL, so the pinned WALs from the MANIFEST's minimum log
//!   number on are copied in, each up to its last complete record, and checked to
//!   form one gap-free run of sequence numbers. When the writer deleted a needed
//!   WAL or an SST meanwhile, the whole attempt is repeated (a bounded number of
//!   times).
//! - [`Source::Checkpoint`]: a checkpoint the application made; never written to.
//! - [`Source::Live`]: the application's own open database (library mode);
//!   `Checkpoint::create_checkpoint` flushes and is consistent by itself.
//!
//! Also the [`WorkDir`]: rockup's own directory, locked while a run uses it and
//! removed when it ends (success, error, or unwinding from a signal); a directory
//! left by a crashed run is removed by the next run.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use std::collections::BTreeMap;
use std::time::Duration;

use rocksdb::{Cache, DBRecoveryMode, Env, Options, DB};

use crate::error::{Error, Result};
use crate::manifest::{is_rocksdb_file_name, SourceInfo};
use crate::wal::{self, WalSummary};

/// Files the read-only instance keeps open at most, so memory does not grow with
/// the size of the database.
const MAX_OPEN_FILES: i32 = 256;
/// Attempts at a consistent checkpoint of a database a writer keeps changing.
const CHECKPOINT_ATTEMPTS: usize = 20;
const BUILTIN_COMPARATORS: [&str; 2] = [
    "leveldb.BytewiseComparator",
    "rocksdb.ReverseBytewiseComparator",
];

/// Where the database to back up comes from.
pub enum Source<'a> {
    /// A database directory that no process holds open.
    Db(PathBuf),
    /// A checkpoint directory the application made. `options` are the
    /// application's own (comparator, merge operators); `None` reads them from the
    /// checkpoint's OPTIONS file, which works for RocksDB's built-in comparators.
    Checkpoint {
        path: PathBuf,
        options: Option<Options>,
    },
    /// The application's own open database (library mode).
    Live {
        db: &'a DB,
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
    /// WAL files copied into the checkpoint, and their bytes.
    pub wal_files: usize,
    pub wal_bytes: u64,
    /// Bytes left out at the ends of WAL files: records still being appended.
    pub wal_cut_bytes: u64,
}

/// A checkpoint ready to be scanned and uploaded.
pub struct Prepared {
    /// The checkpoint directory (in the work directory, or the user's own).
    pub dir: PathBuf,
    /// The checkpoint opened read-only, its WAL directory forced to `dir`.
    pub db: DB,
    /// The sequence number the checkpoint holds the database at.
    pub sequence_number: u64,
    pub column_families: Vec<String>,
    pub source: SourceInfo,
    /// Database files to upload, by name (RocksDB file names only).
    pub files: Vec<String>,
    pub stats: CheckpointStats,
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
    let origin = source.path().to_path_buf();
    let kind = source.kind();
    let mut stats = CheckpointStats::default();
    let (dir, options) = match source {
        Source::Db(path) => {
            let options = check_database(&path)?;
            let dir = work.join("checkpoint");
            stats = checkpoint_database(&path, options, &dir, at_point_in_time)?;
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
    let sequence_number = db.latest_sequence_number();
    let files = database_files(&dir)?;
    let db_identity = std::fs::read_to_string(dir.join("IDENTITY"))
        .or_else(|_| std::fs::read_to_string(origin.join("IDENTITY")))
        .ok()
        .map(|s| s.trim().to_string());
    let source = SourceInfo {
        host: hostname(),
        kind: kind.to_string(),
        path: origin.display().to_string(),
        db_identity,
    };
    Ok(Prepared {
        dir,
        db,
        sequence_number,
        column_families,
        source,
        files,
        stats,
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

/// Settings read from a database's newest OPTIONS file.
#[derive(Debug, Default, PartialEq)]
struct OptionsFile {
    wal_dir: Option<String>,
    /// (column family, comparator)
    comparators: Vec<(String, String)>,
    multiple_paths: bool,
}

fn read_options_file(dir: &Path) -> Result<OptionsFile> {
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
enum WalSource<'a> {
    /// The database's own (live) WAL directory, whose newest record may be
    /// half-written: replayed up to the last intact record.
    Live,
    /// A checkpoint's own copies, replayed in the application's recovery mode.
    Copied(&'a Path),
}

fn open_read_only(
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

/// Checkpoints a database another process may be writing (see the module docs).
fn checkpoint_database(
    path: &Path,
    options_file: OptionsFile,
    dir: &Path,
    at_point_in_time: &mut dyn FnMut() -> Result<()>,
) -> Result<CheckpointStats> {
    if let Some(holder) = lock_holder(path)? {
        tracing::info!(path = %path.display(), %holder, "database is open in another process: checkpointing a read-only instance and copying its WAL");
    }
    let wal_dir = options_file
        .wal_dir
        .map(PathBuf::from)
        .unwrap_or_else(|| path.to_path_buf());
    let mut reason = String::new();
    for attempt in 1..=CHECKPOINT_ATTEMPTS {
        let _ = std::fs::remove_dir_all(dir);
        match checkpoint_attempt(path, &wal_dir, dir, at_point_in_time)? {
            Ok(wals) => {
                at_point_in_time()?;
                let stats = CheckpointStats {
                    attempts: attempt,
                    wal_files: wals.len(),
                    wal_bytes: wals.iter().map(|w| w.copied_bytes).sum(),
                    wal_cut_bytes: wals.iter().map(|w| w.cut_bytes).sum(),
                };
                tracing::info!(?stats, "checkpoint with WAL copied");
                return Ok(stats);
            }
            Err(why) => {
                tracing::info!(attempt, reason = %why, "the writer changed the database during the checkpoint; trying again");
                reason = why;
                std::thread::sleep(Duration::from_millis((10 * attempt as u64).min(100)));
            }
        }
    }
    Err(Error::CheckpointUnstable {
        path: path.to_path_buf(),
        attempts: CHECKPOINT_ATTEMPTS,
        reason,
    })
}

/// One attempt. `Ok(Err(reason))` when the writer moved under it (try again).
fn checkpoint_attempt(
    path: &Path,
    wal_dir: &Path,
    dir: &Path,
    before_wal_copy: &mut dyn FnMut() -> Result<()>,
) -> Result<std::result::Result<Vec<WalSummary>, String>> {
    // A file the writer deleted meanwhile (compaction, WAL recycling) shows up as
    // NotFound or as an IO error "No such file or directory"; a MANIFEST read
    // while it was being written as Corruption.
    let retry = |what: &str, e: rocksdb::Error| {
        let vanished = e.kind() == rocksdb::ErrorKind::NotFound
            || e.kind() == rocksdb::ErrorKind::Corruption
            || (e.kind() == rocksdb::ErrorKind::IOError
                && e.to_string().contains("No such file or directory"));
        if vanished {
            Ok(Err(format!("{what}: {e}")))
        } else {
            Err(Error::rocks(format!("{what} of {}", path.display()), e))
        }
    };
    // Pinned before the open, so none of the WALs the instance will need can
    // vanish; WALs created after this are pinned after the checkpoint.
    let mut wals = PinnedWals::default();
    let manifest_before = manifest_state(path);
    wals.pin_new(wal_dir)?;
    let newest_before_open = wals.files.keys().next_back().copied().unwrap_or(0);
    let db = match open_read_only(path, None, WalSource::Live) {
        Ok((db, _)) => db,
        Err(Error::Rocks { source, .. }) => return retry("read-only open", source),
        Err(e) => return Err(e),
    };
    // A lower bound: WALs below it are obsolete (RocksDB deletes them lazily).
    let keep = db
        .property_int_value("rocksdb.min-log-number-to-keep")
        .ok()
        .flatten()
        .unwrap_or(0);
    if let Err(e) = rocksdb::checkpoint::Checkpoint::new(&db).and_then(|c| c.create_checkpoint(dir))
    {
        return retry("checkpoint", e);
    }
    drop(db);
    before_wal_copy()?;
    wals.pin_new(wal_dir)?;
    let copied = wals.copy_from(keep, dir)?;
    // A WAL the checkpoint needs can only be lost if the writer created it after
    // the first pinning and deleted it (after a flush) before the second. With a
    // WAL from the first pinning in the copied run, that shows as a gap in the
    // sequence numbers; without one, only an unchanged MANIFEST (no flush
    // recorded) rules it out.
    let pinned_before_open = copied
        .first()
        .is_some_and(|w| w.number <= newest_before_open);
    if !pinned_before_open && manifest_state(path) != manifest_before {
        return Ok(Err(
            "the writer flushed while no WAL of the checkpoint's was pinned yet".into(),
        ));
    }
    Ok(wal::check_contiguous(&copied).map(|()| copied))
}

/// The current MANIFEST's name and size: changes whenever the writer records a
/// flush, a compaction or a new WAL.
fn manifest_state(path: &Path) -> Option<(String, u64)> {
    let current = std::fs::read_to_string(path.join("CURRENT")).ok()?;
    let name = current.trim().to_string();
    let size = std::fs::metadata(path.join(&name)).ok()?.len();
    Some((name, size))
}

/// WAL files held open by number, so that deleting them does not take their
/// content away from the copy.
#[derive(Default)]
struct PinnedWals {
    files: BTreeMap<u64, (PathBuf, File)>,
}

impl PinnedWals {
    /// Opens every WAL in `wal_dir` not pinned yet.
    fn pin_new(&mut self, wal_dir: &Path) -> Result<()> {
        for entry in std::fs::read_dir(wal_dir).map_err(|e| Error::io(wal_dir, e))? {
            let entry = entry.map_err(|e| Error::io(wal_dir, e))?;
            let name = entry.file_name();
            let Some(number) = name.to_str().and_then(wal::file_number) else {
                continue;
            };
            if self.files.contains_key(&number) {
                continue;
            }
            match File::open(entry.path()) {
                Ok(file) => {
                    self.files.insert(number, (entry.path(), file));
                }
                // Deleted since the listing: it was obsolete by then.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(entry.path(), e)),
            }
        }
        Ok(())
    }

    /// Copies the WALs numbered `keep` or higher into `dir`, replacing any the
    /// checkpoint holds.
    fn copy_from(&self, keep: u64, dir: &Path) -> Result<Vec<WalSummary>> {
        self.files
            .range(keep..)
            .map(|(&number, (path, file))| {
                let name = path.file_name().expect("a WAL file name");
                wal::copy(file, number, path, &dir.join(name))
            })
            .collect()
    }
}

/// Who holds the database's LOCK (RocksDB takes a POSIX record lock on it), if
/// anybody other than this process.
fn lock_holder(path: &Path) -> Result<Option<String>> {
    use std::os::fd::AsRawFd;
    let lock_path = path.join("LOCK");
    let file = match File::open(&lock_path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(lock_path, e)),
    };
    // SAFETY: a zeroed flock is a valid value; fcntl(F_GETLK) only writes into it.
    let mut query: libc::flock = unsafe { std::mem::zeroed() };
    query.l_type = libc::F_WRLCK as _;
    query.l_whence = libc::SEEK_SET as _;
    // SAFETY: the descriptor is open for the duration of the call.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut query) } != 0 {
        return Err(Error::io(lock_path, io::Error::last_os_error()));
    }
    let unlocked = query.l_type == libc::F_UNLCK as libc::c_short;
    Ok((!unlocked).then(|| format!("process {} holds its LOCK", query.l_pid)))
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

/// This machine's host name, as recorded in manifests and locks.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// rockup's working directory for one run: `<base>/run-<id>`, holding a lock
/// file for as long as the run lives, removed on drop.
pub struct WorkDir {
    path: PathBuf,
    _lock: File,
}

impl WorkDir {
    /// Creates a fresh run directory under `base`, first removing run directories
    /// that no live run holds (left by a crash).
    pub fn create(base: &Path, run_id: &str) -> Result<Self> {
        std::fs::create_dir_all(base).map_err(|e| Error::io(base, e))?;
        remove_stale_runs(base);
        let path = base.join(format!("run-{run_id}"));
        std::fs::create_dir(&path).map_err(|e| Error::io(&path, e))?;
        let lock = File::create(path.join("lock")).map_err(|e| Error::io(path.join("lock"), e))?;
        lock.try_lock()
            .map_err(|e| Error::io(path.join("lock"), io::Error::other(e.to_string())))?;
        Ok(Self { path, _lock: lock })
    }

    /// The run directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove the work directory");
        }
        if let Some(base) = self.path.parent() {
            let _ = std::fs::remove_dir(base); // only if empty
        }
    }
}

fn remove_stale_runs(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with("run-") {
            continue;
        }
        let held = File::open(entry.path().join("lock")).is_ok_and(|f| f.try_lock().is_err());
        if !held {
            tracing::info!(path = %entry.path().display(), "removing a work directory left by an earlier run");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Refuses a work directory inside the database directory or the blob root:
/// rockup never writes there (and the blob tree's pre-links would include
/// themselves).
pub fn check_work_base(base: &Path, db: &Path, blob_root: Option<&Path>) -> Result<()> {
    match source_containing(base, db, blob_root) {
        Some((flag, dir)) => Err(Error::Usage(format!(
            "the work directory {} is inside {flag} {}; rockup never writes there: choose another --work-dir",
            resolved(base).display(),
            dir.display()
        ))),
        None => Ok(()),
    }
}

/// The source directory (`--db` or `--blob-root`, with its flag) that `dir` lies
/// inside, symlinks resolved.
fn source_containing<'a>(
    dir: &Path,
    db: &'a Path,
    blob_root: Option<&'a Path>,
) -> Option<(&'static str, &'a Path)> {
    let dir = resolved(dir);
    [(Some(db), "--db"), (blob_root, "--blob-root")]
        .into_iter()
        .filter_map(|(source, flag)| Some((flag, source?)))
        .find(|(_, source)| dir.starts_with(resolved(source)))
}

/// `path` with symlinks resolved as far as it exists.
fn resolved(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            return rest.iter().rev().fold(real, |p, c| p.join(c));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return absolute,
        }
    }
}

/// The default work directory base: beside the database, but never inside the
/// database directory or the blob root.
pub fn default_work_base(db: &Path, blob_root: Option<&Path>) -> PathBuf {
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let (db, root) = (absolute(db), blob_root.map(absolute));
    let candidates = [db.parent(), root.as_deref().and_then(Path::parent)];
    let base = candidates
        .into_iter()
        .flatten()
        .find(|dir| source_containing(dir, &db, root.as_deref()).is_none())
        .unwrap_or_else(|| Path::new("/tmp"));
    base.join(".rockup-work")
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

    #[test]
    fn work_dir_is_removed_and_stale_runs_are_cleaned() {
        let base = tempfile::tempdir().unwrap();
        let stale = base.path().join("run-crashed");
        std::fs::create_dir_all(&stale).unwrap();
        std::fs::write(stale.join("lock"), b"").unwrap();
        let live = WorkDir::create(base.path(), "a").unwrap();
        assert!(!stale.exists(), "stale run removed");
        let second = WorkDir::create(base.path(), "b").unwrap();
        assert!(live.path().exists(), "a live run is never removed");
        let path = live.path().to_path_buf();
        drop(live);
        assert!(!path.exists());
        drop(second);
        assert!(!base.path().join(".rockup-work").exists());
    }

    #[test]
    fn a_work_dir_inside_the_database_or_blob_root_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (db, files) = (dir.path().join("db"), dir.path().join("files"));
        std::fs::create_dir_all(&db).unwrap();
        std::fs::create_dir_all(&files).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&files, &link).unwrap();
        for inside in [db.join("w"), files.join("a/b"), link.join("w")] {
            let err = check_work_base(&inside, &db, Some(&files)).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{err}");
        }
        check_work_base(&dir.path().join("work"), &db, Some(&files)).unwrap();
    }

    #[test]
    fn default_work_base_stays_out_of_db_and_blob_root() {
        let base = default_work_base(Path::new("/data/db"), Some(Path::new("/data")));
        assert_eq!(base, Path::new("/.rockup-work"));
        let base = default_work_base(Path::new("/data/db"), Some(Path::new("/data/files")));
        assert_eq!(base, Path::new("/data/.rockup-work"));
    }
}
