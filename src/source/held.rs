//! Checkpoints of a database another process may hold open and write. Its WAL
//! files are pinned (opened) first, then it is opened read-only (no flush, no new
//! MANIFEST or OPTIONS: nothing is written into it) and that instance
//! checkpointed into the work directory; a read-only checkpoint has no WAL, so the
//! pinned WALs from the MANIFEST's minimum log number on are copied in, each up to
//! its last complete record, and checked to form one gap-free run of sequence
//! numbers. When the writer deleted a needed WAL or an SST meanwhile, the whole
//! attempt is repeated (a bounded number of times).

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::rocks::{open_read_only, OptionsFile, WalSource};
use crate::error::{Error, Result};
use crate::source::wal::{self, WalSummary};
use crate::source::CheckpointStats;

/// Attempts at a consistent checkpoint of a database a writer keeps changing.
const CHECKPOINT_ATTEMPTS: usize = 20;

/// Checkpoints a database another process may be writing (see the module docs).
pub fn checkpoint_database(
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
