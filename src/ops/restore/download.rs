//! Downloads into staging: each object into a new file (`O_EXCL`, so never
//! through a symlink) created `0600` inside the staging directory, no byte past
//! the recorded size written and the SHA-256 checked; only then does the file
//! get its recorded permission bits — never setuid, setgid or sticky — and mtime.
//!
//! Concurrency is counted in requests, not objects: at most `jobs` GETs are in
//! flight. An object of [`RANGED_FROM`] bytes or more is fetched as
//! [`RANGE`]-byte ranges in parallel (the first alone, so that an object whose
//! size is not the recorded one is refused before anything else is read),
//! written at their offsets and hashed once from the file on a blocking thread,
//! off the network path. So thousands of small objects and one large object
//! both keep `jobs` requests busy.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use futures::{Stream, StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use tokio::sync::Semaphore;

use crate::common::tasks::{blocking, Jobs};
use crate::digest::{Hasher, Sha256};
use crate::error::{Error, Problem, Result};
use crate::repo::crypto::sealed::Kind;
use crate::repo::{Fetched, RangeFetched, RangeKey, Repository};

/// The permission bits a restore may set: never setuid, setgid or sticky.
pub(super) const PERMISSION_BITS: u32 = 0o777;
/// Objects this large are fetched in ranges.
const RANGED_FROM: u64 = 32 << 20;
/// The size of one ranged GET.
const RANGE: u64 = 8 << 20;

/// One file to restore from an object of its own, and what the file gets
/// once it is verified.
pub(super) struct Download {
    pub key: ObjectPath,
    /// What the object is sealed as, in an encrypted repository.
    pub kind: Kind,
    pub dest: PathBuf,
    pub sha256: Sha256,
    pub size: u64,
    /// Permission bits to set (masked to [`PERMISSION_BITS`]); `None` keeps 0600.
    pub mode: Option<u32>,
    /// Modification time to set, nanoseconds since the Unix epoch.
    pub mtime_ns: Option<i64>,
}

/// What a download found, short of an error of the store or the disk.
enum Checked {
    Intact,
    Missing,
    Corrupt(String),
}

/// Downloads with at most `jobs` requests in flight.
pub(super) struct Downloader {
    repo: Repository,
    requests: Arc<Semaphore>,
    jobs: Jobs,
}

impl Downloader {
    pub fn new(repo: &Repository, jobs: Jobs) -> Self {
        Self {
            repo: repo.clone(),
            requests: Arc::new(Semaphore::new(jobs.get())),
            jobs,
        }
    }

    /// Downloads every file; returns the objects found missing or corrupt.
    pub async fn run(&self, jobs: impl Stream<Item = Result<Download>>) -> Result<Vec<Problem>> {
        jobs.map_ok(|job| self.download(job))
            .try_buffer_unordered(self.jobs.get())
            .try_filter_map(|problem| async move { Ok(problem) })
            .try_collect()
            .await
    }

    async fn download(&self, job: Download) -> Result<Option<Problem>> {
        let file = create_exclusive(&job.dest)?;
        let found = match job.size >= RANGED_FROM {
            true => self.ranged(&job, &file).await?,
            false => {
                self.whole(&job, file.try_clone().map_err(|e| Error::io(&job.dest, e))?)
                    .await?
            }
        };
        self.repo.progress().advance(job.size);
        match found {
            Checked::Intact => finish(&file, &job.dest, job.mode, job.mtime_ns).map(|()| None),
            Checked::Missing => Ok(Some(Problem::missing_object(job.key.to_string()))),
            Checked::Corrupt(detail) => {
                Ok(Some(Problem::corrupt_object(job.key.to_string(), detail)))
            }
        }
    }

    /// One GET, hashed as it streams.
    async fn whole(&self, job: &Download, file: std::fs::File) -> Result<Checked> {
        let _request = self.requests.acquire().await.expect("never closed");
        let mut out = tokio::fs::File::from_std(file);
        let wanted = (job.size, &job.sha256);
        Ok(
            match self
                .repo
                .read_verified((job.kind, &job.key), wanted, &mut out, &job.dest)
                .await?
            {
                Fetched::Intact => Checked::Intact,
                Fetched::Damaged(why) => Checked::Corrupt(why),
                Fetched::Missing => Checked::Missing,
                Fetched::TooLarge => {
                    Checked::Corrupt(format!("larger than the {} bytes recorded", job.size))
                }
                Fetched::Differs { bytes, sha256 } => Checked::Corrupt(format!(
                    "expected {} bytes with SHA-256 {}, got {bytes} bytes with {sha256}",
                    job.size, job.sha256
                )),
            },
        )
    }

    /// Ranged GETs in parallel (the first alone, after the header of a sealed
    /// object), then one hash of the file.
    async fn ranged(&self, job: &Download, file: &std::fs::File) -> Result<Checked> {
        let opened = {
            let _request = self.requests.acquire().await.expect("never closed");
            self.repo.range_key((job.kind, &job.key), job.size).await?
        };
        let opened = match opened {
            Ok(opened) => opened,
            Err(fetched) => return Ok(checked(fetched, job).expect("a failed range")),
        };
        let mut ranges =
            (0..job.size.div_ceil(RANGE)).map(|i| i * RANGE..((i + 1) * RANGE).min(job.size));
        let first = ranges.next().expect("a ranged object is not empty");
        if let Some(found) = self.range(job, &opened, file, first).await? {
            return Ok(found);
        }
        let problems: Vec<Checked> = futures::stream::iter(ranges)
            .map(|range| self.range(job, &opened, file, range))
            .buffer_unordered(self.jobs.get())
            .try_filter_map(|found| async move { Ok(found) })
            .try_collect()
            .await?;
        if let Some(found) = problems.into_iter().next() {
            return Ok(found);
        }
        let path = job.dest.clone();
        let (bytes, sha256) = blocking(move || hash_file(&path)).await?;
        Ok(match bytes == job.size && sha256 == job.sha256 {
            true => Checked::Intact,
            false => Checked::Corrupt(format!(
                "expected {} bytes with SHA-256 {}, got {bytes} bytes with {sha256}",
                job.size, job.sha256
            )),
        })
    }

    /// One range; `Some` when the object is not what was recorded.
    async fn range(
        &self,
        job: &Download,
        opened: &RangeKey,
        file: &std::fs::File,
        range: std::ops::Range<u64>,
    ) -> Result<Option<Checked>> {
        let _request = self.requests.acquire().await.expect("never closed");
        let target = (job.size, file, job.dest.as_path());
        let fetched = self
            .repo
            .read_range_into(&job.key, opened, range, target)
            .await?;
        Ok(checked(fetched, job))
    }
}

/// What a range's read says of the object; `None` when it was as recorded.
fn checked(fetched: RangeFetched, job: &Download) -> Option<Checked> {
    match fetched {
        RangeFetched::Written => None,
        RangeFetched::Missing => Some(Checked::Missing),
        RangeFetched::ObjectSize(size) => Some(Checked::Corrupt(format!(
            "{size} bytes long, not the {} bytes recorded",
            job.size
        ))),
        RangeFetched::Short(at) => Some(Checked::Corrupt(format!(
            "ended early, at byte {at} of {}",
            job.size
        ))),
        RangeFetched::Damaged(why) => Some(Checked::Corrupt(why)),
    }
}

/// Size and SHA-256 of a file, read back (from the page cache, just written).
fn hash_file(path: &Path) -> Result<(u64, Sha256)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let (mut hasher, mut buf, mut total) = (Hasher::default(), vec![0u8; 1 << 20], 0u64);
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok((total, hasher.finish())),
            Ok(n) => {
                hasher.update(&buf[..n]);
                total += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(path, e)),
        }
    }
}

/// A new file `0600` at `dest`: never an existing one, never through a symlink.
pub(super) fn create_exclusive(dest: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dest)
        .map_err(|e| Error::io(dest, e))
}

/// Gives a verified file its recorded permission bits (masked to
/// [`PERMISSION_BITS`]) and mtime.
pub(super) fn finish(
    file: &std::fs::File,
    dest: &Path,
    mode: Option<u32>,
    mtime_ns: Option<i64>,
) -> Result<()> {
    if let Some(mode) = mode {
        let permissions = std::fs::Permissions::from_mode(mode & PERMISSION_BITS);
        file.set_permissions(permissions)
            .map_err(|e| Error::io(dest, e))?;
    }
    if let Some(mtime_ns) = mtime_ns {
        let mtime = UNIX_EPOCH + Duration::from_nanos(mtime_ns.max(0) as u64);
        file.set_modified(mtime).map_err(|e| Error::io(dest, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// A 40 MiB object (fetched in 5 ranges) in an in-memory repository.
    async fn repo_with(key: &ObjectPath, content: Vec<u8>) -> Repository {
        let store = Arc::new(object_store::memory::InMemory::new());
        let repo = Repository::from_store(store, "memory://");
        repo.put(key, Bytes::from(content)).await.unwrap();
        repo
    }

    fn job(key: &ObjectPath, dir: &Path, content: &[u8]) -> Download {
        Download {
            key: key.clone(),
            kind: Kind::Content,
            dest: dir.join("restored"),
            sha256: Sha256::of(content),
            size: content.len() as u64,
            mode: Some(0o640),
            mtime_ns: None,
        }
    }

    async fn restore_one(repo: &Repository, job: Download) -> Vec<Problem> {
        let jobs = futures::stream::iter([Ok(job)]);
        Downloader::new(repo, Jobs::from(4))
            .run(jobs)
            .await
            .unwrap()
    }

    fn content() -> Vec<u8> {
        (0..(40u32 << 20))
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    }

    #[tokio::test]
    async fn a_large_object_comes_back_whole_from_parallel_ranges() {
        let (dir, key, content) = (
            tempfile::tempdir().unwrap(),
            ObjectPath::from("big"),
            content(),
        );
        let repo = repo_with(&key, content.clone()).await;
        assert!(restore_one(&repo, job(&key, dir.path(), &content))
            .await
            .is_empty());
        let restored = dir.path().join("restored");
        assert!(std::fs::read(&restored).unwrap() == content);
        let mode = std::fs::metadata(&restored).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o640);
    }

    #[tokio::test]
    async fn a_ranged_object_of_another_size_or_content_is_refused() {
        let (dir, key, content) = (
            tempfile::tempdir().unwrap(),
            ObjectPath::from("big"),
            content(),
        );
        // One byte longer than recorded: refused after the first range.
        let mut longer = content.clone();
        longer.push(0);
        let repo = repo_with(&key, longer).await;
        let problems = restore_one(&repo, job(&key, dir.path(), &content)).await;
        assert!(
            problems[0].to_string().contains("bytes long, not the"),
            "{}",
            problems[0]
        );
        assert!(
            std::fs::metadata(dir.path().join("restored"))
                .unwrap()
                .len()
                <= RANGE
        );
        // Same size, one byte changed in the middle: the hash of the file tells.
        let mut changed = content.clone();
        changed[30 << 20] ^= 1;
        let repo = repo_with(&key, changed).await;
        std::fs::remove_file(dir.path().join("restored")).unwrap();
        let problems = restore_one(&repo, job(&key, dir.path(), &content)).await;
        assert!(
            problems[0].to_string().contains("SHA-256"),
            "{}",
            problems[0]
        );
        // Missing altogether.
        let repo = Repository::from_store(Arc::new(object_store::memory::InMemory::new()), "m");
        std::fs::remove_file(dir.path().join("restored")).unwrap();
        let problems = restore_one(&repo, job(&key, dir.path(), &content)).await;
        assert!(
            problems[0].to_string().contains("missing"),
            "{}",
            problems[0]
        );
    }
}
