//! rockup's working directory for one run (`<base>/run-<id>`): locked while the
//! run uses it and removed when it ends (success, error, or unwinding from a
//! signal). A run directory carries rockup's marker, written only once its lock
//! is held; a marked directory of this host whose lock nobody holds was left by a
//! crash and is removed by the next run. Nothing else under the base is ever
//! removed — not a user's `run-something`, not a directory a starting run has not
//! finished creating — and the base itself only when rockup created it. Also
//! where the work directory may be: never inside the database directory or the
//! blob root.
//!
//! Removal is crash-safe: a run directory is first renamed, atomically, to
//! `<base>/.rockup-removing-<id>`, then emptied with its marker removed last,
//! then removed. A run killed at any step leaves either a marked run directory
//! whose lock nobody holds, or a removal directory that is marked or empty;
//! every run finishes such removals. A run's pre-links are hard links to the
//! application's files, so a remnant would keep the disk space of every file
//! the application deletes afterwards.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::common::names::hostname;
use crate::error::{Error, Result};

/// The name of the default base directory (beside the database).
const DEFAULT_BASE: &str = ".rockup-work";
/// The marker file in every run directory rockup creates.
const MARKER: &str = "rockup-run.json";
/// What a run directory is renamed to before it is removed.
const REMOVING: &str = ".rockup-removing-";
/// Attempts at creating a run directory while another run removes the base.
const CREATE_ATTEMPTS: usize = 10;

/// What the marker says: whose run directory this is.
#[derive(Serialize, Deserialize)]
struct RunMarker {
    host: String,
    pid: u32,
}

/// rockup's working directory for one run: `<base>/run-<id>`, holding a lock
/// file for as long as the run lives, removed on drop.
pub struct WorkDir {
    path: PathBuf,
    /// The base, when it is rockup's own (then removed with the last run).
    own_base: Option<PathBuf>,
    _lock: File,
}

impl WorkDir {
    /// Creates a fresh run directory under `base`, first removing run directories
    /// that a crashed run of this host left.
    pub fn create(base: &Path, run_id: &str) -> Result<Self> {
        let path = base.join(format!("run-{run_id}"));
        // The default base is rockup's own; any other only when created here.
        let owns_base = !base.exists() || base.file_name() == Some(DEFAULT_BASE.as_ref());
        let mut attempt = 0;
        loop {
            attempt += 1;
            match create_run_dir(base, &path) {
                Ok(()) => break,
                // Another run removed the (empty) base meanwhile: again.
                Err(e) if vanished_base(&e) && attempt < CREATE_ATTEMPTS => {}
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        let lock = lock_and_mark(&path)?;
        Ok(Self {
            path,
            own_base: owns_base.then(|| base.to_path_buf()),
            _lock: lock,
        })
    }

    /// The run directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Creates `base` if needed, clears the stale runs in it, and creates `path`.
fn create_run_dir(base: &Path, path: &Path) -> io::Result<()> {
    std::fs::create_dir_all(base)?;
    remove_stale_runs(base);
    std::fs::create_dir(path)
}

/// The errors of creating a directory whose parent another run removes.
fn vanished_base(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::AlreadyExists
    )
}

/// Takes the run directory's lock, then writes the marker: a marked directory
/// is always one whose lock was taken.
fn lock_and_mark(path: &Path) -> Result<File> {
    let lock_path = path.join("lock");
    let lock = File::create(&lock_path).map_err(|e| Error::io(&lock_path, e))?;
    lock.try_lock()
        .map_err(|e| Error::io(&lock_path, io::Error::other(e.to_string())))?;
    let marker = RunMarker {
        host: hostname(),
        pid: std::process::id(),
    };
    let bytes = serde_json::to_vec(&marker).expect("marker serializes");
    std::fs::write(path.join(MARKER), bytes).map_err(|e| Error::io(path.join(MARKER), e))?;
    Ok(lock)
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        // Renamed while the lock is still held, so no other run takes it for stale.
        if let Err(e) = ignore_gone(remove_run(&self.path)) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove the work directory; the next run removes it");
        }
        if let Some(base) = &self.own_base {
            let _ = std::fs::remove_dir(base); // only if empty: other runs may use it
        }
    }
}

/// Removes the run directory at `path`: renamed to its removal name first,
/// then emptied, marker last (see the module docs).
fn remove_run(path: &Path) -> io::Result<()> {
    let (Some(base), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::other("a run directory has a parent and a name"));
    };
    let name = name.to_string_lossy();
    let id = name.strip_prefix("run-").unwrap_or(&name);
    let removing = base.join(format!("{REMOVING}{id}"));
    std::fs::rename(path, &removing)?;
    finish_removal(&removing)
}

/// Empties a removal directory, its marker last, then removes it. The
/// directory is opened without following a symlink, and emptied through that
/// descriptor: a symlink swapped in for it is never followed. Other runs may
/// be finishing the same removal: what is gone already counts as removed;
/// any other failure leaves the marker, so a later run tries again.
fn finish_removal(removing: &Path) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::io::AsRawFd;
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(removing)?;
    let inside = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    for entry in std::fs::read_dir(&inside)? {
        let entry = entry?;
        if entry.file_name() == MARKER {
            continue;
        }
        let removed = match entry.file_type() {
            Ok(kind) if kind.is_dir() => std::fs::remove_dir_all(entry.path()),
            Ok(_) => std::fs::remove_file(entry.path()),
            Err(e) => Err(e),
        };
        ignore_gone(removed)?;
    }
    let left = std::fs::read_dir(&inside)?.flatten();
    if left.filter(|entry| entry.file_name() != MARKER).count() > 0 {
        return Err(io::Error::other("entries appeared while it was emptied"));
    }
    ignore_gone(std::fs::remove_file(inside.join(MARKER)))?;
    drop(dir);
    ignore_gone(std::fs::remove_dir(removing))
}

fn ignore_gone(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Removes what crashed runs of this host left: run directories (`run-*`,
/// a real directory, carrying rockup's marker for this host, with a lock
/// nobody holds) and removals they did not finish (`.rockup-removing-*`,
/// marked for this host, or empty).
fn remove_stale_runs(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let (path, name) = (entry.path(), entry.file_name());
        let name = name.to_string_lossy();
        let removed = if name.starts_with("run-") && is_stale_run(&path) {
            tracing::info!(path = %path.display(), "removing a work directory left by an earlier run");
            remove_run(&path)
        } else if name.starts_with(REMOVING) && is_unfinished_removal(&path) {
            tracing::info!(path = %path.display(), "finishing the removal of a work directory an earlier run began");
            finish_removal(&path)
        } else {
            continue;
        };
        if let Err(e) = ignore_gone(removed) {
            tracing::warn!(path = %path.display(), error = %e, "could not remove a work directory left by an earlier run");
        }
    }
}

/// Whether `path` is a real directory carrying rockup's marker for this host.
fn is_marked_here(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
        && std::fs::read(path.join(MARKER))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<RunMarker>(&bytes).ok())
            .is_some_and(|marker| marker.host == hostname())
}

fn is_stale_run(path: &Path) -> bool {
    // Only a marked directory's lock is tried: its owner took the lock before
    // marking it, so trying never takes a lock from a run still starting.
    is_marked_here(path) && File::open(path.join("lock")).is_ok_and(|f| f.try_lock().is_ok())
}

/// A removal directory is only ever made by renaming a marked run directory
/// whose run is over; its marker goes last, so it is marked or empty.
fn is_unfinished_removal(path: &Path) -> bool {
    let empty_dir = || {
        std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
            && std::fs::read_dir(path).is_ok_and(|mut entries| entries.next().is_none())
    };
    is_marked_here(path) || empty_dir()
}

/// Refuses a work directory inside the database directory or the blob root:
/// rockup never writes there (and pre-links of the tree under the blob root
/// would include themselves).
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
    base.join(DEFAULT_BASE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_dir_is_removed_and_only_rockups_stale_runs_are_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("work");
        let stale = base.join("run-crashed");
        std::fs::create_dir_all(&stale).unwrap();
        std::fs::write(stale.join("lock"), b"").unwrap();
        let marker = format!(r#"{{"host":"{}","pid":1}}"#, hostname());
        std::fs::write(stale.join(MARKER), &marker).unwrap();
        // A user's directory that merely looks like a run, and one of another host.
        let users = base.join("run-important");
        std::fs::create_dir_all(&users).unwrap();
        std::fs::write(users.join("lock"), b"mine").unwrap();
        let foreign = base.join("run-other-host");
        std::fs::create_dir_all(&foreign).unwrap();
        std::fs::write(foreign.join("lock"), b"").unwrap();
        std::fs::write(foreign.join(MARKER), r#"{"host":"elsewhere","pid":1}"#).unwrap();

        let live = WorkDir::create(&base, "a").unwrap();
        assert!(!stale.exists(), "stale run removed");
        assert!(
            users.join("lock").exists() && foreign.exists(),
            "never anybody else's"
        );
        let second = WorkDir::create(&base, "b").unwrap();
        assert!(live.path().exists(), "a live run is never removed");
        let path = live.path().to_path_buf();
        drop(live);
        assert!(!path.exists());
        drop(second);
        assert!(base.exists(), "the base existed before: never removed");
    }

    /// What a run killed at each step of a removal leaves.
    fn leave_remnant(base: &Path, name: &str, step: usize) -> PathBuf {
        let run = base.join(format!("run-{name}"));
        std::fs::create_dir_all(run.join("prelinks/a")).unwrap();
        std::fs::write(run.join("prelinks/a/f"), b"linked").unwrap();
        std::fs::write(run.join("lock"), b"").unwrap();
        let marker = format!(r#"{{"host":"{}","pid":1}}"#, hostname());
        std::fs::write(run.join(MARKER), &marker).unwrap();
        let removing = base.join(format!("{REMOVING}{name}"));
        if step >= 1 {
            std::fs::rename(&run, &removing).unwrap();
        }
        if step >= 2 {
            std::fs::remove_dir_all(removing.join("prelinks")).unwrap();
        }
        if step >= 3 {
            std::fs::remove_file(removing.join("lock")).unwrap();
            std::fs::remove_file(removing.join(MARKER)).unwrap();
        }
        if step >= 1 {
            removing
        } else {
            run
        }
    }

    #[test]
    fn every_step_of_a_killed_removal_is_finished_by_the_next_run() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("work");
        let remnants: Vec<PathBuf> = (0..4)
            .map(|step| leave_remnant(&base, &format!("step{step}"), step))
            .collect();
        // Somebody else's look-alikes: another host's removal, a user's
        // non-empty directory with the name.
        let foreign = base.join(format!("{REMOVING}foreign"));
        std::fs::create_dir_all(&foreign).unwrap();
        std::fs::write(foreign.join(MARKER), r#"{"host":"elsewhere","pid":1}"#).unwrap();
        let users = base.join(format!("{REMOVING}mine"));
        std::fs::create_dir_all(&users).unwrap();
        std::fs::write(users.join("notes"), b"mine").unwrap();
        drop(WorkDir::create(&base, "next").unwrap());
        for remnant in &remnants {
            assert!(!remnant.exists(), "{} removed", remnant.display());
        }
        assert!(foreign.join(MARKER).exists() && users.join("notes").exists());
    }

    #[test]
    fn a_removal_never_follows_a_symlink_swapped_in() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("precious"), b"not rockup's").unwrap();
        let marker = format!(r#"{{"host":"{}","pid":1}}"#, hostname());
        std::fs::write(outside.join(MARKER), &marker).unwrap();
        let removing = dir.path().join(format!("{REMOVING}swapped"));
        std::os::unix::fs::symlink(&outside, &removing).unwrap();
        assert!(finish_removal(&removing).is_err());
        assert!(outside.join("precious").exists() && outside.join(MARKER).exists());
    }

    #[test]
    fn a_base_is_removed_only_when_rockup_created_it() {
        let dir = tempfile::tempdir().unwrap();
        let given = dir.path().join("given");
        std::fs::create_dir(&given).unwrap();
        drop(WorkDir::create(&given, "a").unwrap());
        assert!(
            given.exists(),
            "an empty user-supplied work directory stays"
        );
        let made = dir.path().join("made");
        drop(WorkDir::create(&made, "a").unwrap());
        assert!(
            !made.exists(),
            "the base rockup created goes with its last run"
        );
    }

    #[test]
    fn concurrent_runs_never_remove_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join(".rockup-work");
        let runs: Vec<_> = (0..8)
            .map(|thread| {
                let base = base.clone();
                std::thread::spawn(move || {
                    for i in 0..100 {
                        let work = WorkDir::create(&base, &format!("{thread}-{i}")).unwrap();
                        std::fs::create_dir(work.path().join("checkpoint.tmp")).unwrap();
                        assert!(work.path().join("lock").exists());
                    }
                })
            })
            .collect();
        for run in runs {
            run.join().unwrap();
        }
        assert!(!base.exists());
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
