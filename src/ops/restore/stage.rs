//! Downloads into staging: parallel, each object into a new file (`O_EXCL`, so
//! never through a symlink) created `0600` inside a `0700` staging directory in
//! the target, its size checked while it streams (no byte past the recorded
//! size is written) and its SHA-256 at the end; only then does it get its
//! recorded permission bits — never setuid, setgid or sticky — and mtime.
//! Durability comes at the end, not per file: one `syncfs` per target's
//! filesystem before placement. Placement renames everything staged into the
//! targets, all or nothing: a failure halfway removes what was already placed;
//! then each target directory is fsynced.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;

use crate::error::{Error, Problem, Result};
use crate::repo::{Fetched, Repository};

/// The permission bits a restore may set: never setuid, setgid or sticky.
pub(super) const PERMISSION_BITS: u32 = 0o777;

/// A staging directory inside a restore target; removed unless placed.
pub(super) struct Staging {
    target: PathBuf,
    /// Whether this restore created the target (its mode is then ours to set).
    created_target: bool,
    pub path: PathBuf,
}

/// What one staging directory placed into its target, so it can be undone.
#[derive(Debug)]
pub(super) struct Placed {
    pub target: PathBuf,
    pub created_target: bool,
    names: Vec<std::ffi::OsString>,
}

impl Staging {
    pub fn create(target: &Path, backup_id: &str) -> Result<Self> {
        let created_target = !target.exists();
        std::fs::create_dir_all(target).map_err(|e| Error::io(target, e))?;
        let path = target.join(format!(".rockup-restore-{backup_id}"));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(Self {
            target: target.to_path_buf(),
            created_target,
            path,
        })
    }

    /// Renames everything staged into the target; on a failure, removes what
    /// it had moved and returns the error (the staging directory goes on drop).
    fn place(self) -> Result<Placed> {
        let mut placed = Placed {
            target: self.target.clone(),
            created_target: self.created_target,
            names: Vec::new(),
        };
        if let Err(e) = self.move_entries(&mut placed) {
            placed.roll_back();
            return Err(e);
        }
        std::fs::remove_dir(&self.path).map_err(|e| Error::io(&self.path, e))?;
        sync_dir(&self.target)?;
        Ok(placed)
    }

    fn move_entries(&self, placed: &mut Placed) -> Result<()> {
        for entry in std::fs::read_dir(&self.path).map_err(|e| Error::io(&self.path, e))? {
            let entry = entry.map_err(|e| Error::io(&self.path, e))?;
            let dest = self.target.join(entry.file_name());
            rename_no_replace(&entry.path(), &dest).map_err(|e| Error::io(&dest, e))?;
            placed.names.push(entry.file_name());
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

impl Placed {
    /// Removes what this restore placed (and nothing else).
    fn roll_back(&self) {
        for name in &self.names {
            let path = self.target.join(name);
            let removed = match path.symlink_metadata() {
                Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&path),
                Ok(_) => std::fs::remove_file(&path),
                Err(_) => continue,
            };
            if let Err(e) = removed {
                tracing::warn!(path = %path.display(), error = %e, "could not undo a partial restore");
            }
        }
    }
}

/// Places every staging directory, all or nothing: when one fails, what the
/// others placed is removed again. Everything staged is made durable first —
/// one `syncfs` per target's filesystem rather than an fsync per file on the
/// download path — so nothing is renamed into place before it is on disk.
pub(super) fn place_all(stages: Vec<Staging>) -> Result<Vec<Placed>> {
    for stage in &stages {
        sync_filesystem(&stage.path)?;
    }
    let mut placed: Vec<Placed> = Vec::new();
    for stage in stages {
        match stage.place() {
            Ok(done) => placed.push(done),
            Err(e) => {
                placed.iter().for_each(Placed::roll_back);
                return Err(e);
            }
        }
    }
    Ok(placed)
}

/// Renames `from` to `to` unless `to` exists (atomically where the filesystem
/// supports `RENAME_NOREPLACE`).
fn rename_no_replace(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c =
        |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other);
    let (from_c, to_c) = (c(from)?, c(to)?);
    // SAFETY: both are valid NUL-terminated paths for the duration of the call.
    let done = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from_c.as_ptr(),
            libc::AT_FDCWD,
            to_c.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if done == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EINVAL) {
        return Err(err);
    }
    // A filesystem without RENAME_NOREPLACE: check, then rename.
    if to.symlink_metadata().is_ok() {
        return Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists));
    }
    std::fs::rename(from, to)
}

/// Flushes every dirty file and directory of the filesystem holding `dir`.
fn sync_filesystem(dir: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let handle = std::fs::File::open(dir).map_err(|e| Error::io(dir, e))?;
    // SAFETY: the descriptor is open for the duration of the call.
    if unsafe { libc::syncfs(handle.as_raw_fd()) } != 0 {
        return Err(Error::io(dir, std::io::Error::last_os_error()));
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

pub(super) async fn collect_problems(
    downloads: impl Iterator<Item = impl std::future::Future<Output = Result<Option<Problem>>>>,
    jobs: usize,
) -> Result<Vec<Problem>> {
    futures::stream::iter(downloads)
        .buffer_unordered(jobs)
        .try_filter_map(|p| async move { Ok(p) })
        .try_collect()
        .await
}

/// What an object is expected to be, and what its file gets once it is.
pub(super) struct Expected<'a> {
    pub sha256: &'a str,
    pub size: u64,
    /// Permission bits to set (masked to [`PERMISSION_BITS`]); `None` keeps 0600.
    pub mode: Option<u32>,
    /// Modification time to set, nanoseconds since the Unix epoch.
    pub mtime_ns: Option<i64>,
}

/// Downloads one object into a new file, checking size and hash; returns a
/// problem when the object is missing or corrupt.
pub(super) async fn download(
    repo: &Repository,
    key: ObjectPath,
    dest: PathBuf,
    expected: Expected<'_>,
) -> Result<Option<Problem>> {
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&dest)
        .await
        .map_err(|e| Error::io(&dest, e))?;
    let wanted = (expected.size, expected.sha256);
    let detail = match repo.read_verified(&key, wanted, &mut file, &dest).await? {
        Fetched::Intact => None,
        Fetched::Missing => return Ok(Some(Problem::missing_object(key.to_string()))),
        Fetched::TooLarge => Some(format!("larger than the {} bytes recorded", expected.size)),
        Fetched::Differs { bytes, sha256 } => Some(format!(
            "expected {} bytes with SHA-256 {}, got {bytes} bytes with {sha256}",
            expected.size, expected.sha256
        )),
    };
    if let Some(detail) = detail {
        return Ok(Some(Problem::corrupt_object(key.to_string(), detail)));
    }
    finish(file.into_std().await, &dest, &expected)?;
    Ok(None)
}

/// Gives a verified file its recorded permission bits and mtime.
fn finish(file: std::fs::File, dest: &Path, expected: &Expected<'_>) -> Result<()> {
    if let Some(mode) = expected.mode {
        let permissions = std::fs::Permissions::from_mode(mode & PERMISSION_BITS);
        file.set_permissions(permissions)
            .map_err(|e| Error::io(dest, e))?;
    }
    if let Some(mtime_ns) = expected.mtime_ns {
        let mtime = UNIX_EPOCH + Duration::from_nanos(mtime_ns.max(0) as u64);
        file.set_modified(mtime).map_err(|e| Error::io(dest, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn placement_is_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (db, files) = (dir.path().join("db"), dir.path().join("files"));
        let db_stage = Staging::create(&db, "id").unwrap();
        std::fs::write(db_stage.path.join("CURRENT"), "x").unwrap();
        let blob_stage = Staging::create(&files, "id").unwrap();
        for name in ["a", "b", "c"] {
            std::fs::create_dir(blob_stage.path.join(name)).unwrap();
            std::fs::write(blob_stage.path.join(name).join("f"), name).unwrap();
        }
        // Something else appears in the target meanwhile: placement must fail
        // there, and undo what it placed, in both targets.
        std::fs::write(files.join("b"), "not ours").unwrap();
        let err = place_all(vec![db_stage, blob_stage]).unwrap_err();
        assert!(err.to_string().contains("exists"), "{err}");
        assert!(names(&db).is_empty(), "{:?}", names(&db));
        assert_eq!(names(&files), ["b"]);
        assert_eq!(std::fs::read(files.join("b")).unwrap(), b"not ours");
    }
}
