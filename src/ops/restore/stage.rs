//! Downloads into staging: parallel, each object into a new file (`O_EXCL`,
//! never following a symlink) inside a staging directory in the target, its size
//! and SHA-256 checked; the staging directory is renamed into place only when
//! everything is intact, and removed otherwise.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Problem, Result};
use crate::repo::manifest::ExternalEntry;
use crate::repo::Repository;

/// A staging directory inside a restore target; removed unless placed.
pub(super) struct Staging {
    target: PathBuf,
    pub path: PathBuf,
    placed: bool,
}

impl Staging {
    pub fn create(target: &Path, backup_id: &str) -> Result<Self> {
        std::fs::create_dir_all(target).map_err(|e| Error::io(target, e))?;
        let path = target.join(format!(".rockup-restore-{backup_id}"));
        std::fs::create_dir(&path).map_err(|e| Error::io(&path, e))?;
        Ok(Self {
            target: target.to_path_buf(),
            path,
            placed: false,
        })
    }

    /// Renames everything staged into the target.
    pub fn place(mut self) -> Result<()> {
        for entry in std::fs::read_dir(&self.path).map_err(|e| Error::io(&self.path, e))? {
            let entry = entry.map_err(|e| Error::io(&self.path, e))?;
            let dest = self.target.join(entry.file_name());
            std::fs::rename(entry.path(), &dest).map_err(|e| Error::io(&dest, e))?;
        }
        std::fs::remove_dir(&self.path).map_err(|e| Error::io(&self.path, e))?;
        sync_dir(&self.target)?;
        self.placed = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.placed {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
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

/// Downloads one object into a new file, checking size and hash; returns a
/// problem when the object is missing or corrupt.
pub(super) async fn download(
    repo: &Repository,
    key: ObjectPath,
    dest: PathBuf,
    sha256: &str,
    size: u64,
    external: Option<&ExternalEntry>,
) -> Result<Option<Problem>> {
    let result = match repo.store().get(&key).await {
        Ok(result) => result,
        Err(object_store::Error::NotFound { .. }) => {
            return Ok(Some(Problem::missing_object(key.to_string())))
        }
        Err(e) => return Err(repo.error(e)),
    };
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&dest)
        .await
        .map_err(|e| Error::io(&dest, e))?;
    let mut stream = result.into_stream();
    let mut hasher = Sha256::new();
    let mut written = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| repo.error(e))?;
        hasher.update(&chunk);
        written += chunk.len() as u64;
        file.write_all(&chunk)
            .await
            .map_err(|e| Error::io(&dest, e))?;
    }
    let actual = hex::encode(hasher.finalize());
    if written != size || actual != sha256 {
        return Ok(Some(Problem::corrupt_object(
            key.to_string(),
            format!(
                "expected {size} bytes with SHA-256 {sha256}, got {written} bytes with {actual}"
            ),
        )));
    }
    file.sync_all().await.map_err(|e| Error::io(&dest, e))?;
    let file = file.into_std().await;
    if let Some(entry) = external {
        file.set_permissions(std::fs::Permissions::from_mode(entry.mode))
            .map_err(|e| Error::io(&dest, e))?;
        let mtime = UNIX_EPOCH + Duration::from_nanos(entry.mtime_ns.max(0) as u64);
        file.set_modified(mtime).map_err(|e| Error::io(&dest, e))?;
    }
    Ok(None)
}
