//! Streaming upload with hashing, deduplication, multipart and a global memory
//! budget. Small files are read once, hashed and sent in one PUT; large ones go
//! through a multipart upload in chunks of max(8 MiB, size / 9000) — so 100 GiB
//! fits in 10,000 parts — read and hashed on blocking threads. Every chunk in
//! memory holds bytes of one shared [`Semaphore`], which bounds memory across all
//! concurrent uploads. A multipart upload is aborted on every error, on a hash
//! mismatch (so a content-addressed key never receives the wrong bytes), and —
//! best effort, from a spawned task — when the upload is cancelled.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use object_store::path::Path as ObjectPath;
use object_store::{MultipartUpload, ObjectStoreExt, PutPayload};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::common::cleanup;
use crate::common::tasks::blocking;
use crate::digest::{Hasher, Sha256};
use crate::error::{Error, Result};
use crate::repo::crypto::sealed::{Kind, SealStream};
use crate::repo::Repository;

/// Smallest multipart chunk, and the largest file sent in a single PUT.
pub const MIN_CHUNK: u64 = 8 << 20;
/// Most parts of one multipart upload (S3's limit is 10,000).
const MAX_PARTS: u64 = 9_000;
/// Parts of one upload in flight at once.
const PARTS_IN_FLIGHT: usize = 4;
/// Default memory budget for file contents in flight.
pub const DEFAULT_MEMORY_BUDGET: u64 = 32 << 20;

/// Chunk size for a file of `size` bytes: max(8 MiB, size / 9000), in whole MiB.
pub fn chunk_size(size: u64) -> u64 {
    let chunk = MIN_CHUNK.max(size.div_ceil(MAX_PARTS));
    chunk.div_ceil(1 << 20) << 20
}

/// Counters of what was actually sent.
#[derive(Debug, Default)]
pub struct UploadStats {
    pub objects: AtomicU64,
    pub bytes: AtomicU64,
}

/// A file's content, loaded or hashed.
pub enum Content {
    /// Small enough to hold: the bytes, their hash, and the budget they use.
    Small {
        bytes: Bytes,
        sha256: Sha256,
        _permit: OwnedSemaphorePermit,
    },
    /// Large: only hashed; upload it with [`Uploader::upload_file`].
    Large { sha256: Sha256, size: u64 },
}

impl Content {
    pub fn sha256(&self) -> Sha256 {
        match self {
            Content::Small { sha256, .. } | Content::Large { sha256, .. } => *sha256,
        }
    }

    pub fn size(&self) -> u64 {
        match self {
            Content::Small { bytes, .. } => bytes.len() as u64,
            Content::Large { size, .. } => *size,
        }
    }
}

/// Uploads files to one repository within one memory budget.
#[derive(Clone)]
pub struct Uploader {
    repo: Repository,
    budget: Arc<Semaphore>,
    budget_bytes: u64,
    stats: Arc<UploadStats>,
}

impl Uploader {
    pub fn new(repo: Repository, memory_budget: u64) -> Self {
        let budget_bytes = memory_budget.clamp(MIN_CHUNK, u32::MAX as u64);
        Self {
            repo,
            budget: Arc::new(Semaphore::new(budget_bytes as usize)),
            budget_bytes,
            stats: Arc::default(),
        }
    }

    /// The repository uploaded to.
    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    pub fn stats(&self) -> &UploadStats {
        &self.stats
    }

    async fn reserve(&self, bytes: u64) -> OwnedSemaphorePermit {
        let permits = bytes.clamp(1, self.budget_bytes) as u32;
        self.budget
            .clone()
            .acquire_many_owned(permits)
            .await
            .expect("budget semaphore is never closed")
    }

    /// Reads a small file into memory (within the budget) or hashes a large one.
    pub async fn load(&self, path: &Path, size: u64) -> Result<Content> {
        if size <= MIN_CHUNK {
            let permit = self.reserve(size).await;
            let path = path.to_path_buf();
            let (bytes, sha256) = blocking(move || {
                let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
                let sha256 = Sha256::of(&bytes);
                Ok((Bytes::from(bytes), sha256))
            })
            .await?;
            return Ok(Content::Small {
                bytes,
                sha256,
                _permit: permit,
            });
        }
        let mut reader = ChunkReader::open(path)?;
        let chunk = chunk_size(size);
        loop {
            let permit = self.reserve(chunk).await;
            let more = reader.next(chunk).await?;
            drop(permit);
            if more.is_none() {
                break;
            }
        }
        let (sha256, size) = reader.finish();
        Ok(Content::Large { sha256, size })
    }

    /// Stores small content at `key` (sealed as `kind` where the repository
    /// is encrypted) in one PUT.
    pub async fn put_small(
        &self,
        (kind, key): (Kind, &ObjectPath),
        content: &Content,
    ) -> Result<()> {
        let Content::Small { bytes, .. } = content else {
            unreachable!("put_small takes small content")
        };
        self.repo.put_sealed(kind, key, bytes.clone()).await?;
        self.count(bytes.len() as u64);
        Ok(())
    }

    /// Streams the file at `path` to `key` — one PUT when small, multipart when
    /// large — and returns its SHA-256 and size. With `expect`, content that does
    /// not hash to it is never committed to `key`: the error is a
    /// [`Error::HashMismatch`].
    pub async fn upload_file(
        &self,
        path: &Path,
        (kind, key): (Kind, &ObjectPath),
        expect: Option<&Sha256>,
    ) -> Result<(Sha256, u64)> {
        let size = std::fs::metadata(path)
            .map_err(|e| Error::io(path, e))?
            .len();
        if size <= MIN_CHUNK {
            let content = self.load(path, size).await?;
            check_expected(path, &content.sha256(), expect)?;
            self.put_small((kind, key), &content).await?;
            return Ok((content.sha256(), content.size()));
        }
        let session = self.repo.session().await?;
        let sealer = PartSealer::new(session.map(|s| s.stream((kind, key.as_ref()))));
        let upload = self
            .repo
            .store()
            .put_multipart(key)
            .await
            .map_err(|e| self.repo.error(e))?;
        let mut guard = AbortOnDrop(Some(upload));
        let result = self
            .send_parts(
                (path, size),
                guard.0.as_mut().expect("upload present"),
                sealer,
                expect,
            )
            .await;
        let mut upload = guard.0.take().expect("upload present");
        match result {
            Ok(done) => match upload.complete().await {
                Ok(_) => {
                    self.count(done.1);
                    Ok(done)
                }
                Err(e) => {
                    let _ = upload.abort().await;
                    Err(self.repo.error(e))
                }
            },
            Err(e) => {
                let _ = upload.abort().await;
                Err(e)
            }
        }
    }

    /// Sends the file's content as parts, each as soon as it is read (a part
    /// never waits for the next one, so that uploads holding budget never
    /// wait on each other). Sealed, the object ends at the size the file had
    /// when it was measured: the part that reaches it carries the sealed end
    /// (or, if the file ended early, one last small part does), and what
    /// the hash and the caller's checks make of a file that changed is as
    /// for plaintext.
    async fn send_parts(
        &self,
        (path, size): (&Path, u64),
        upload: &mut Box<dyn MultipartUpload>,
        mut sealer: PartSealer,
        expect: Option<&Sha256>,
    ) -> Result<(Sha256, u64)> {
        let chunk = chunk_size(size);
        let mut reader = ChunkReader::open(path)?;
        // Parts run as tasks so they progress (and return their budget) while this
        // loop waits for budget; dropping the set on an error cancels them.
        let mut in_flight = JoinSet::new();
        loop {
            let want = sealer.next_read(chunk, size - size.min(reader.read));
            if want == 0 {
                break;
            }
            let permit = self.reserve(chunk).await;
            let Some(bytes) = reader.next(want).await? else {
                break;
            };
            let part = sealer.piece(bytes, reader.read >= size).await?;
            let part = upload.put_part(PutPayload::from(part));
            in_flight.spawn(async move {
                let result = part.await;
                drop(permit);
                result
            });
            while in_flight.len() >= PARTS_IN_FLIGHT {
                self.part_done(in_flight.join_next().await.expect("non-empty"))?;
            }
        }
        if let Some(end) = sealer.end() {
            in_flight.spawn(upload.put_part(PutPayload::from(end)));
        }
        while let Some(done) = in_flight.join_next().await {
            self.part_done(done)?;
        }
        let (sha256, read) = reader.finish();
        check_expected(path, &sha256, expect)?;
        Ok((sha256, read))
    }

    fn part_done(
        &self,
        joined: std::result::Result<object_store::Result<()>, tokio::task::JoinError>,
    ) -> Result<()> {
        joined?.map_err(|e| self.repo.error(e))
    }

    fn count(&self, bytes: u64) {
        self.stats.objects.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

pub(crate) fn check_expected(path: &Path, actual: &Sha256, expect: Option<&Sha256>) -> Result<()> {
    match expect {
        Some(expected) if expected != actual => Err(Error::HashMismatch {
            path: path.to_path_buf(),
            expected: *expected,
            actual: *actual,
        }),
        _ => Ok(()),
    }
}

/// Turns plaintext pieces into what is uploaded: sealed (on a blocking thread)
/// where the repository is encrypted, as they are otherwise.
enum PartSealer {
    Plain,
    Sealing(SealStream),
    /// The sealed object's end was sent: nothing more is read.
    Ended,
}

impl PartSealer {
    fn new(stream: Option<SealStream>) -> Self {
        stream.map_or(PartSealer::Plain, PartSealer::Sealing)
    }

    /// How much to read next: a chunk, but sealed never past the measured
    /// size (`left` of it unread).
    fn next_read(&self, chunk: u64, left: u64) -> u64 {
        match self {
            PartSealer::Plain => chunk,
            PartSealer::Sealing(_) => chunk.min(left),
            PartSealer::Ended => 0,
        }
    }

    /// The next part's bytes; `last` seals the object's end into it.
    async fn piece(&mut self, bytes: Bytes, last: bool) -> Result<Bytes> {
        let mut stream = match std::mem::replace(self, PartSealer::Ended) {
            PartSealer::Sealing(stream) => stream,
            other => {
                *self = other;
                return Ok(bytes);
            }
        };
        let (stream, sealed) = blocking(move || {
            let mut sealed = stream.push(&bytes);
            Ok(match last {
                true => {
                    sealed.extend(stream.finish());
                    (None, sealed)
                }
                false => (Some(stream), sealed),
            })
        })
        .await?;
        *self = stream.map_or(PartSealer::Ended, PartSealer::Sealing);
        Ok(Bytes::from(sealed))
    }

    /// The sealed end not sent yet (the file ended before its measured
    /// size): a last part of its own.
    fn end(self) -> Option<Vec<u8>> {
        match self {
            PartSealer::Sealing(stream) => Some(stream.finish()),
            _ => None,
        }
    }
}

/// Aborts a multipart upload that is dropped before completion (cancellation).
struct AbortOnDrop(Option<Box<dyn MultipartUpload>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(mut upload) = self.0.take() {
            cleanup::spawn(async move {
                let _ = upload.abort().await;
            });
        }
    }
}

/// Reads a file chunk by chunk on blocking threads, hashing as it goes.
struct ChunkReader {
    path: PathBuf,
    state: Option<(File, Hasher)>,
    read: u64,
}

impl ChunkReader {
    fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            state: Some((file, Hasher::default())),
            read: 0,
        })
    }

    /// The next chunk of at most `len` bytes; `None` at the end of the file.
    async fn next(&mut self, len: u64) -> Result<Option<Bytes>> {
        let (mut file, mut hasher) = self.state.take().expect("reader used after an error");
        let path = self.path.clone();
        let (file, hasher, chunk) = blocking(move || {
            let mut buf = BytesMut::zeroed(len as usize);
            let mut filled = 0;
            while filled < buf.len() {
                match file.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(Error::io(&path, e)),
                }
            }
            buf.truncate(filled);
            hasher.update(&buf);
            Ok((file, hasher, buf.freeze()))
        })
        .await?;
        self.state = Some((file, hasher));
        self.read += chunk.len() as u64;
        Ok((!chunk.is_empty()).then_some(chunk))
    }

    fn finish(self) -> (Sha256, u64) {
        let (_, hasher) = self.state.expect("reader finished after an error");
        (hasher.finish(), self.read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::Fetched;
    use object_store::memory::InMemory;

    #[test]
    fn chunks_fit_ten_thousand_parts() {
        assert_eq!(chunk_size(1), MIN_CHUNK);
        let hundred_gib = 100u64 << 30;
        let chunk = chunk_size(hundred_gib);
        assert!(hundred_gib.div_ceil(chunk) <= 10_000);
        assert_eq!(chunk % (1 << 20), 0);
    }

    #[tokio::test]
    async fn large_files_go_multipart_and_mismatches_never_land() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        let data: Vec<u8> = (0..(MIN_CHUNK * 2 + 12345))
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        let repo = Repository::from_store(Arc::new(InMemory::new()), "memory://");
        let uploader = Uploader::new(repo.clone(), 16 << 20);
        let key = ObjectPath::from("x/big");
        let (sha, size) = uploader
            .upload_file(&path, (Kind::Content, &key), None)
            .await
            .unwrap();
        assert_eq!(size, data.len() as u64);
        assert_eq!(sha, Sha256::of(&data));
        assert_eq!(
            repo.get(&key, 1 << 30).await.unwrap().as_ref(),
            data.as_slice()
        );
        assert_eq!(uploader.load(&path, size).await.unwrap().sha256(), sha);

        let wrong = ObjectPath::from("x/wrong");
        let err = uploader
            .upload_file(&path, (Kind::Content, &wrong), Some(&Sha256::of(b"other")))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::HashMismatch { actual, .. } if *actual == sha),
            "{err}"
        );
        assert!(
            repo.fetch(&wrong, Default::default())
                .await
                .unwrap()
                .is_none(),
            "aborted upload left no object"
        );
        assert_eq!(uploader.stats().objects.load(Ordering::Relaxed), 1);
    }

    /// Uploads that each need more than one chunk of budget, more of them at
    /// once than the budget holds chunks: none waits for another (a part is
    /// sent as soon as it is read), so all finish.
    #[tokio::test]
    async fn large_uploads_at_once_never_wait_on_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::from_store(Arc::new(InMemory::new()), "memory://");
        let uploader = Uploader::new(repo.clone(), MIN_CHUNK * 2);
        let uploads = (0..6u8).map(|n| {
            let path = dir.path().join(format!("big-{n}"));
            let data = vec![n; (MIN_CHUNK * 3 + 1) as usize];
            std::fs::write(&path, &data).unwrap();
            let uploader = &uploader;
            async move {
                let key = ObjectPath::from(format!("x/big-{n}"));
                let uploaded = uploader
                    .upload_file(&path, (Kind::Content, &key), None)
                    .await;
                (uploaded.unwrap().0, Sha256::of(&data))
            }
        });
        let all = futures::future::join_all(uploads);
        let done = tokio::time::timeout(std::time::Duration::from_secs(120), all).await;
        for (stored, expected) in done.expect("the uploads deadlocked") {
            assert_eq!(stored, expected);
        }
    }

    /// An uploader on an encrypted in-memory repository, unlocked.
    async fn sealing_uploader() -> (Repository, Uploader) {
        let repo = Repository::from_store(Arc::new(InMemory::new()), "memory://")
            .with_credentials(crate::Credentials::passphrase("sealed uploads"));
        repo.encrypt_for_tests("sealed uploads").await;
        let uploader = Uploader::new(repo.clone(), 64 << 20);
        (repo, uploader)
    }

    /// Reads `key` back as a sealed content object of `content`.
    async fn opens_as(repo: &Repository, key: &ObjectPath, content: &[u8]) {
        let mut out = Vec::new();
        let expected = (content.len() as u64, &Sha256::of(content));
        let read = repo.read_verified((Kind::Content, key), expected, &mut out, Path::new("-"));
        assert!(matches!(read.await.unwrap(), Fetched::Intact), "{key}");
        assert_eq!(out, content);
    }

    /// Sealed multipart uploads of sizes at and around part boundaries open
    /// whole.
    #[tokio::test]
    async fn sealed_uploads_end_where_the_file_does() {
        let (repo, uploader) = sealing_uploader().await;
        let dir = tempfile::tempdir().unwrap();
        for size in [MIN_CHUNK + 1, MIN_CHUNK * 2, MIN_CHUNK * 3 - 5] {
            let path = dir.path().join(format!("f-{size}"));
            let data: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
            std::fs::write(&path, &data).unwrap();
            let key = ObjectPath::from(format!("content/f-{size}"));
            uploader
                .upload_file(&path, (Kind::Content, &key), None)
                .await
                .unwrap();
            opens_as(&repo, &key, &data).await;
        }
    }

    /// A file shorter or longer than it was measured: the sealed object ends
    /// with what was read up to the measured size, and says how much that
    /// was (the caller's checks decide what a changed file means).
    #[tokio::test]
    async fn a_sealed_upload_of_a_file_that_changed_is_still_whole() {
        let (repo, uploader) = sealing_uploader().await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("changing");
        let data: Vec<u8> = (0..MIN_CHUNK * 2 + 7).map(|i| (i % 249) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let measured = [data.len() as u64 + MIN_CHUNK, data.len() as u64 - 3];
        for (n, size) in measured.into_iter().enumerate() {
            let key = ObjectPath::from(format!("content/changed-{n}"));
            let session = repo.session().await.unwrap().unwrap();
            let sealer = PartSealer::new(Some(session.stream((Kind::Content, key.as_ref()))));
            let mut upload = repo.store().put_multipart(&key).await.unwrap();
            let sent = uploader
                .send_parts((&path, size), &mut upload, sealer, None)
                .await;
            upload.complete().await.unwrap();
            let read = size.min(data.len() as u64) as usize;
            assert_eq!(sent.unwrap(), (Sha256::of(&data[..read]), read as u64));
            opens_as(&repo, &key, &data[..read]).await;
        }
    }
}
