//! rockup's working directory for one run (`<base>/run-<id>`): locked while the
//! run uses it and removed when it ends (success, error, or unwinding from a
//! signal); a directory left by a crashed run is removed by the next run. Also
//! where it may be: never inside the database directory or the blob root.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

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
