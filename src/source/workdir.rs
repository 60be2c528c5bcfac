//! rockup's working directory for one run (`<base>/run-<id>`): locked while the
//! run uses it and removed when it ends (success, error, or unwinding from a
//! signal). A run directory carries rockup's marker, written only once its lock
//! is held; a marked directory of this host whose lock nobody holds was left by a
//! crash and is removed by the next run. Nothing else under the base is ever
//! removed — not a user's `run-something`, not a directory a starting run has not
//! finished creating — and the base itself only when rockup created it. Also
//! where the work directory may be: never inside the database directory or the
//! blob root.

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
        // Removed while the lock is still held, so no other run takes it for stale.
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove the work directory");
        }
        if let Some(base) = &self.own_base {
            let _ = std::fs::remove_dir(base); // only if empty: other runs may use it
        }
    }
}

/// Removes the run directories a crashed run of this host left: named
/// `run-*`, a real directory, carrying rockup's marker for this host, and with
/// a lock nobody holds.
fn remove_stale_runs(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with("run-") && is_stale_run(&path) {
            tracing::info!(path = %path.display(), "removing a work directory left by an earlier run");
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

fn is_stale_run(path: &Path) -> bool {
    if !std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        return false;
    }
    let ours = std::fs::read(path.join(MARKER))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<RunMarker>(&bytes).ok())
        .is_some_and(|marker| marker.host == hostname());
    // Only a marked directory's lock is tried: its owner took the lock before
    // marking it, so trying never takes a lock from a run still starting.
    ours && File::open(path.join("lock")).is_ok_and(|f| f.try_lock().is_ok())
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
