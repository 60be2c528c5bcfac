//! A local repository that never follows a symlink inside it: object_store's
//! `LocalFileSystem` follows them (a symlinked directory would let a backup
//! write, and a prune delete, outside the repository), so every request first
//! checks each component of its key with `lstat` and refuses one that is a
//! symlink, and listings leave out whatever is reached through one. (A symlink
//! swapped in between the check and the request is not caught: the repository
//! directory is meant to be writable by its owner only.)
//!
//! Durability is per commit, not per object: content objects are written
//! without an fsync each; a write-once create (`PutMode::Create`: the marker,
//! locks, backup headers — the commit points) first flushes the whole
//! filesystem (`syncfs`), so everything written before it is on disk before it
//! is, and is itself written with fsyncs of the file and its directories.

use std::path::PathBuf;
use std::sync::Arc;

use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// `LocalFileSystem` rooted at `root`, refusing symlinks below it.
#[derive(Debug)]
pub(super) struct NoSymlinks {
    /// Writes content objects without fsync.
    inner: Arc<LocalFileSystem>,
    /// Writes commit points with fsync of file and directories.
    durable: LocalFileSystem,
    root: PathBuf,
}

impl NoSymlinks {
    /// The repository directory `root` (absolute, canonical).
    pub fn new(root: PathBuf) -> object_store::Result<Self> {
        Ok(Self {
            inner: Arc::new(LocalFileSystem::new_with_prefix(&root)?),
            durable: LocalFileSystem::new_with_prefix(&root)?.with_fsync(true),
            root,
        })
    }

    /// Fails when a component of `location` that exists is a symlink.
    fn check(&self, location: &Path) -> object_store::Result<()> {
        check(&self.root, location)
    }
}

fn check(root: &std::path::Path, location: &Path) -> object_store::Result<()> {
    let mut path = root.to_path_buf();
    for part in location.parts() {
        path.push(part.as_ref());
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(object_store::Error::PermissionDenied {
                    path: location.to_string(),
                    source: format!(
                        "{} is a symlink: rockup never follows symlinks inside a local repository; remove it",
                        path.display()
                    )
                    .into(),
                })
            }
            Ok(_) => {}
            Err(_) => return Ok(()), // not there (yet): nothing below it is a link
        }
    }
    Ok(())
}

/// Bytes read per blocking call when an object is streamed (object_store reads
/// 8 KiB at a time: a restore of 1.4 GB spent 12 s of system time on that).
const READ_CHUNK: u64 = 512 << 10;

/// `range` of `file`, in [`READ_CHUNK`]s read on blocking threads; a file that
/// ends early is an error.
fn file_chunks(
    file: std::fs::File,
    path: PathBuf,
    range: std::ops::Range<u64>,
) -> BoxStream<'static, object_store::Result<bytes::Bytes>> {
    let file = Arc::new(file);
    futures::stream::try_unfold(range.start, move |at| {
        let (file, path, end) = (file.clone(), path.clone(), range.end);
        async move {
            if at >= end {
                return Ok(None);
            }
            let len = (end - at).min(READ_CHUNK) as usize;
            let buf = on_blocking_thread(format!("reading {}", path.display()), move || {
                use std::os::unix::fs::FileExt;
                let mut buf = vec![0; len];
                file.read_exact_at(&mut buf, at).map(|()| buf)
            })
            .await?;
            Ok(Some((bytes::Bytes::from(buf), at + len as u64)))
        }
    })
    .boxed()
}

/// Runs file I/O on a blocking thread; a failure (or a panic) becomes a
/// store error saying what was being done.
async fn on_blocking_thread<T: Send + 'static>(
    doing: String,
    io: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> object_store::Result<T> {
    let error = |source: &dyn std::fmt::Display| object_store::Error::Generic {
        store: "local",
        source: format!("{doing}: {source}").into(),
    };
    match tokio::task::spawn_blocking(io).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(error(&e)),
        Err(e) => Err(error(&e)),
    }
}

impl std::fmt::Display for NoSymlinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for NoSymlinks {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.check(location)?;
        if !matches!(opts.mode, PutMode::Create) {
            return self.inner.put_opts(location, payload, opts).await;
        }
        let root = self.root.clone();
        let doing = format!("syncfs {}", root.display());
        on_blocking_thread(doing, move || {
            crate::common::durable::sync_filesystem(&root)
        })
        .await?;
        self.durable.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.check(location)?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.check(location)?;
        let mut result = self.inner.get_opts(location, options).await?;
        let empty = GetResultPayload::Stream(futures::stream::empty().boxed());
        if let GetResultPayload::File(file, path) = std::mem::replace(&mut result.payload, empty) {
            result.payload =
                GetResultPayload::Stream(file_chunks(file, path, result.range.clone()));
        }
        Ok(result)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let root = self.root.clone();
        let checked = locations.map(move |location| {
            let location = location?;
            check(&root, &location).map(|()| location)
        });
        self.inner.delete_stream(checked.boxed())
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let root = self.root.clone();
        self.inner
            .list(prefix)
            .filter(move |meta| {
                let through_link = meta
                    .as_ref()
                    .is_ok_and(|meta| check(&root, &meta.location).is_err());
                futures::future::ready(!through_link)
            })
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        if let Some(prefix) = prefix {
            self.check(prefix)?;
        }
        let mut listed = self.inner.list_with_delimiter(prefix).await?;
        listed
            .objects
            .retain(|meta| self.check(&meta.location).is_ok());
        listed.common_prefixes.retain(|dir| self.check(dir).is_ok());
        Ok(listed)
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.check(from)?;
        self.check(to)?;
        self.inner.copy_opts(from, to, options).await
    }
}

/// Removes the staging files (`<key>#<digits>`) that writes interrupted by a
/// crash left under `root` — object_store's listings skip them, so nothing
/// else ever would — when the key is rockup's and the file was last modified
/// before `cutoff`. Walks without following symlinks. Returns the files and
/// bytes removed (or, with `dry_run`, that would be).
pub(super) fn sweep_staged(
    root: &std::path::Path,
    cutoff: std::time::SystemTime,
    dry_run: bool,
) -> std::io::Result<(u64, u64)> {
    let (mut files, mut bytes) = (0, 0);
    for entry in walkdir::WalkDir::new(root).follow_links(false) {
        let entry = entry.map_err(std::io::Error::other)?;
        let Some(key) = staged_key(root, entry.path()) else {
            continue;
        };
        let meta = entry.metadata().map_err(std::io::Error::other)?;
        let old = meta.modified().is_ok_and(|t| t < cutoff);
        if !entry.file_type().is_file() || !old || !crate::repo::layout::is_rockup_key(&key) {
            continue;
        }
        if !dry_run {
            std::fs::remove_file(entry.path())?;
        }
        files += 1;
        bytes += meta.len();
    }
    Ok((files, bytes))
}

/// The key a staging file `<key>#<digits>` was being written for.
fn staged_key(root: &std::path::Path, path: &std::path::Path) -> Option<String> {
    let relative = path.strip_prefix(root).ok()?.to_str()?;
    let (key, suffix) = relative.rsplit_once('#')?;
    let digits = !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit());
    digits.then(|| key.to_string())
}
