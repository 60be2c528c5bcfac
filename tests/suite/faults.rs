//! Operators and stores at their worst: a store wrapper that stops a run at a
//! chosen request, and what must hold when somebody acts meanwhile.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use tokio::sync::Semaphore;

use rockup::{Error, PruneOptions, Repository, RetentionPolicy, Source};

use super::fixture::*;

/// A store that holds the first write whose key contains `pattern` until the
/// test lets it go.
#[derive(Debug)]
pub struct PauseOnPut {
    inner: Arc<InMemory>,
    pattern: &'static str,
    reached: Semaphore,
    resume: Semaphore,
    armed: std::sync::atomic::AtomicBool,
}

impl PauseOnPut {
    pub fn new(inner: Arc<InMemory>, pattern: &'static str) -> Self {
        Self {
            inner,
            pattern,
            reached: Semaphore::new(0),
            resume: Semaphore::new(0),
            armed: true.into(),
        }
    }

    /// Waits until a run is held at the write.
    pub async fn reached(&self) {
        let held = tokio::time::timeout(Duration::from_secs(60), self.reached.acquire());
        held.await
            .expect("the run reached the write")
            .unwrap()
            .forget();
    }

    /// Lets the held write go on.
    pub fn resume(&self) {
        self.resume.add_permits(1);
    }
}

impl std::fmt::Display for PauseOnPut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PauseOnPut({})", self.pattern)
    }
}

#[async_trait::async_trait]
impl ObjectStore for PauseOnPut {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let ours = location.as_ref().contains(self.pattern);
        if ours && self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.reached.add_permits(1);
            self.resume.acquire().await.unwrap().forget();
        }
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// `unlock` during a backup, then `prune --grace 0s`: the backup must not
/// commit a manifest whose objects the prune deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_whose_lock_was_removed_does_not_commit() {
    let fx = Fixture::new(10);
    let inner = Arc::new(InMemory::new());
    let operator = Repository::from_store(inner.clone(), "memory://shared");
    rockup::backup(&operator, Source::Db(fx.db.clone()), &fx.options())
        .await
        .unwrap();
    let store = Arc::new(PauseOnPut::new(inner.clone(), "/parts/"));
    let running = Repository::from_store(store.clone(), "memory://shared");
    let (db, options) = (fx.db.clone(), fx.options());
    let backup =
        tokio::spawn(async move { rockup::backup(&running, Source::Db(db), &options).await });
    store.reached().await; // uploaded, about to write its parts and commit

    let refused = rockup::unlock(&operator, false).await.unwrap();
    assert!(
        refused.removed.is_empty(),
        "a live backup's lock stays: {refused:?}"
    );
    assert_eq!(
        rockup::unlock(&operator, true).await.unwrap().removed.len(),
        1
    );
    let prune = PruneOptions {
        policy: RetentionPolicy {
            keep_last: Some(1),
            ..Default::default()
        },
        grace: Duration::ZERO,
        dry_run: false,
    };
    let pruned = rockup::prune(&operator, &prune).await.unwrap();
    assert!(
        pruned.deleted_objects > 0,
        "the running backup's uploads: {pruned:?}"
    );

    store.resume();
    let result = backup.await.unwrap();
    assert!(matches!(result, Err(Error::LockLost { .. })), "{result:?}");
    assert_eq!(
        rockup::list(&operator).await.unwrap().len(),
        1,
        "nothing committed"
    );
    let verified = verify(&operator, "all", true).await;
    assert!(verified.problems.is_empty(), "{:?}", verified.problems);
}

/// A local repository with a symlink inside it: prune never deletes through it,
/// a backup never writes through it, and foreign files are left alone.
#[tokio::test]
async fn a_local_repository_never_follows_symlinks_and_prune_keeps_foreign_files() {
    let fx = Fixture::new(6);
    let repo = fx.local_repo();
    let first = rockup::backup(&repo, Source::Db(fx.db.clone()), &fx.options())
        .await
        .unwrap();
    let root = fx.path("repo");
    // Outside the repository: a file named like an unreferenced blob, reached
    // through a symlinked directory.
    let outside = fx.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let lookalike = format!("ef{}", "0".repeat(62));
    std::fs::write(outside.join(&lookalike), b"not rockup's").unwrap();
    std::os::unix::fs::symlink(&outside, root.join("blobs/sha256/ef")).unwrap();
    // Foreign files under the prefix.
    std::fs::write(root.join("notes.txt"), b"mine").unwrap();
    std::fs::write(root.join("backups/README"), b"mine").unwrap();

    let prune = PruneOptions {
        policy: RetentionPolicy {
            keep_last: Some(1),
            ..Default::default()
        },
        grace: Duration::ZERO,
        dry_run: false,
    };
    let pruned = rockup::prune(&repo, &prune).await.unwrap();
    assert_eq!(pruned.foreign_objects, 2, "{pruned:?}");
    assert!(
        outside.join(&lookalike).exists(),
        "nothing deleted through the symlink"
    );
    assert!(root.join("notes.txt").exists() && root.join("backups/README").exists());

    // A backup that would store a blob through a symlinked directory fails,
    // naming it, and writes nothing outside.
    let external: Vec<rockup::manifest::ExternalEntry> = first.header.entries(&repo).await.unwrap();
    let sha = &external[0].sha256;
    std::fs::remove_dir_all(root.join(format!("blobs/sha256/{}", &sha[..2]))).unwrap();
    let trap = fx.path("trap");
    std::fs::create_dir_all(&trap).unwrap();
    std::os::unix::fs::symlink(&trap, root.join(format!("blobs/sha256/{}", &sha[..2]))).unwrap();
    let rehash = rockup::BackupOptions {
        rehash: true,
        ..fx.options()
    };
    let err = rockup::backup(&repo, Source::Db(fx.db.clone()), &rehash)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("symlink"), "{err}");
    assert!(
        entries(&trap).is_empty(),
        "nothing written through the symlink"
    );
}
