//! Operators and stores at their worst: a store wrapper that stops a run at a
//! chosen request, and what must hold when somebody acts meanwhile.

use std::sync::Arc;
use std::time::Duration;

use object_store::memory::InMemory;

use rockup::{Error, ProblemKind, Repository, Source};

use super::fixture::*;
use super::stores::{Fault, Faulty, Op, PauseOnPut};

/// A backup of `fx` through `store` (sharing the operator's objects), started
/// and held at its first part, i.e. uploaded and about to commit.
async fn backup_held_before_commit(
    fx: &Fixture,
    store: &Arc<PauseOnPut>,
    options: rockup::BackupOptions,
) -> tokio::task::JoinHandle<rockup::Result<rockup::BackupReport>> {
    let running = Repository::from_store(store.clone(), "memory://shared");
    let db = fx.db.clone();
    let backup =
        tokio::spawn(async move { rockup::backup(&running, Source::Db(db), &options).await });
    store.reached().await;
    backup
}

/// The fixture's options with a one-second lease.
fn short_lease(fx: &Fixture) -> rockup::BackupOptions {
    with(fx.options(), |o| o.lease = Duration::from_secs(1))
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
    // Something new, so that the held backup stores a pack before it pauses.
    add_file(&open_rw(&fx.db), &fx.files, 100, 3000);
    let store = Arc::new(PauseOnPut::new(inner.clone(), "/parts/"));
    let backup = backup_held_before_commit(&fx, &store, fx.options()).await;

    let refused = rockup::unlock(&operator, false).await.unwrap();
    assert!(
        refused.removed.is_empty(),
        "a live backup's lock stays: {refused:?}"
    );
    assert_eq!(
        rockup::unlock(&operator, true).await.unwrap().removed.len(),
        1
    );
    let prune = keep_last(1, Duration::ZERO, false);
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
    // Format 1: external files are blobs, under `blobs/sha256/<aa>/`.
    let first = rockup::backup(&repo, Source::Db(fx.db.clone()), &format_1(fx.options()))
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

    let prune = keep_last(1, Duration::ZERO, false);
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
    std::fs::remove_dir_all(root.join(format!("blobs/sha256/{}", sha.prefix()))).unwrap();
    let trap = fx.path("trap");
    std::fs::create_dir_all(&trap).unwrap();
    std::os::unix::fs::symlink(&trap, root.join(format!("blobs/sha256/{}", sha.prefix()))).unwrap();
    let rehash = with(format_1(fx.options()), |o| o.rehash = true);
    let err = rockup::backup(&repo, Source::Db(fx.db.clone()), &rehash)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("symlink"), "{err}");
    assert!(
        entries(&trap).is_empty(),
        "nothing written through the symlink"
    );
}

/// A repository on a faulty store, and the fixture it backs up.
async fn faulty() -> (Fixture, Arc<Faulty>, Repository) {
    let fx = Fixture::new(8);
    let store = Arc::new(Faulty::default());
    let repo = Repository::from_store(store.clone(), "faulty://");
    rockup::backup(&repo, Source::Db(fx.db.clone()), &fx.options())
        .await
        .unwrap();
    (fx, store, repo)
}

/// What every fault case ends with: the source untouched, no lock left, every
/// committed backup verifying deeply, and a clean backup and restore possible.
async fn all_is_well(fx: &Fixture, repo: &Repository, before: &Records, files: &Tree) {
    assert_eq!(&read_all(&fx.db), before, "the database is untouched");
    assert_eq!(&tree(&fx.files), files, "the files are untouched");
    assert!(list_keys(repo, "locks").await.is_empty(), "no lock left");
    let verified = verify(repo, "all", true).await;
    assert!(verified.problems.is_empty(), "{:?}", verified.problems);
    let report = rockup::backup(repo, Source::Db(fx.db.clone()), &fx.options())
        .await
        .unwrap();
    let target = fx.path(&format!("well-{}", report.header.backup_id));
    let options = restoring(
        &report.header.backup_id,
        target.join("db"),
        Some(target.join("files")),
    );
    rockup::restore(repo, &options).await.unwrap();
    assert_eq!(&read_all(&target.join("db")), before);
    assert_eq!(&tree(&target.join("files")), files);
}

#[tokio::test]
async fn store_faults_fail_cleanly_and_lose_nothing() {
    let (fx, store, repo) = faulty().await;
    // Something new to store, so that the next backup writes a pack.
    add_file(&open_rw(&fx.db), &fx.files, 100, 3000);
    let (before, files) = (read_all(&fx.db), tree(&fx.files));
    let rehash = with(fx.options(), |o| o.rehash = true);
    let backups = || async { rockup::list(&repo).await.unwrap().len() };

    // A write that fails: the backup fails, commits nothing, leaves no lock.
    store.inject(Op::Put, "packs/", Fault::Error, 1);
    let err = rockup::backup(&repo, Source::Db(fx.db.clone()), &rehash)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Store { .. }), "{err}");
    assert_eq!(backups().await, 1);
    all_is_well(&fx, &repo, &before, &files).await;

    // The commit's response is lost: the write-once protocol recognises its own.
    store.inject(Op::Put, "/manifest.json", Fault::LoseResponse, 1);
    rockup::backup(&repo, Source::Db(fx.db.clone()), &fx.options())
        .await
        .unwrap();
    assert_eq!(backups().await, 3);

    // Reads that come back short or long: restore places nothing.
    for fault in [Fault::Truncate, Fault::Oversize, Fault::Error] {
        store.inject(Op::Get, "packs/", fault, 1);
        let target = fx.path(&format!("{fault:?}"));
        let options = restoring("latest", target.join("db"), Some(target.join("files")));
        let err = rockup::restore(&repo, &options).await.unwrap_err();
        assert!(matches!(err.exit_code(), 1 | 3), "{fault:?}: {err}");
        assert!(tree(&target).is_empty(), "{fault:?}: nothing placed");
    }

    // Stalled reads only slow a restore down.
    store.inject(Op::Get, "packs/", Fault::Stall, 3);
    let target = fx.path("stalled");
    let options = restoring("latest", target.join("db"), Some(target.join("files")));
    rockup::restore(&repo, &options).await.unwrap();
    assert_eq!(tree(&target.join("files")), files);

    // The previous backup's part reads short: the next backup falls back.
    store.inject(Op::Get, "/parts/", Fault::Truncate, 2);
    rockup::backup(&repo, Source::Db(fx.db.clone()), &fx.options())
        .await
        .unwrap();
    all_is_well(&fx, &repo, &before, &files).await;
}

/// A store that fails reads is not damage: verify calls what it could not
/// read unreadable (exit code 4, worth retrying), never corrupt; a backup that
/// cannot read the previous backup's manifest stops rather than send
/// everything again.
#[tokio::test]
async fn failed_reads_are_unreadable_not_damage() {
    let (fx, store, repo) = faulty().await;
    let (before, files) = (read_all(&fx.db), tree(&fx.files));
    store.inject(Op::Get, "packs/", Fault::Error, usize::MAX);
    let report = verify(&repo, "all", true).await;
    store.heal();
    assert!(!report.problems.is_empty(), "the packs could not be read");
    let unreadable = |p: &rockup::Problem| p.kind == ProblemKind::Unreadable;
    assert!(
        report.problems.iter().all(unreadable),
        "{:?}",
        report.problems
    );
    let err = report.into_result().unwrap_err();
    assert_eq!(err.exit_code(), 4, "{err}");
    assert!(err.retryable(), "{err}");

    let packs = list_keys(&repo, "packs").await.len();
    store.inject(Op::Get, "/manifest.json", Fault::Error, 1);
    let err = rockup::backup(&repo, Source::Db(fx.db.clone()), &fx.options())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::PreviousUnreadable { .. }), "{err}");
    assert!(err.to_string().contains("try again"), "{err}");
    assert_eq!(list_keys(&repo, "packs").await.len(), packs, "nothing sent");
    assert_eq!(rockup::list(&repo).await.unwrap().len(), 1);
    all_is_well(&fx, &repo, &before, &files).await;
}

/// A store that keeps failing: verify stops reading after
/// `MAX_UNREADABLE` objects rather than wait out every object's retries.
#[tokio::test]
async fn verify_stops_reading_once_the_store_keeps_failing() {
    let fx = Fixture::new(150);
    let store = Arc::new(Faulty::default());
    let repo = Repository::from_store(store.clone(), "faulty://");
    let options = format_1(fx.options()); // every file a content object
    rockup::backup(&repo, Source::Db(fx.db.clone()), &options)
        .await
        .unwrap();
    store.inject(Op::Get, "blobs/", Fault::Error, usize::MAX);
    let report = verify(&repo, "all", true).await;
    let unreadable = report
        .problems
        .iter()
        .filter(|p| p.kind == ProblemKind::Unreadable)
        .count();
    let max = rockup::MAX_UNREADABLE;
    assert!(
        (max..max + 8).contains(&unreadable),
        "{unreadable} unreadable"
    );
    assert!(report.stopped.is_some(), "{report:?}");
}

#[tokio::test]
async fn prune_faults_leave_every_kept_backup_whole() {
    let (fx, store, repo) = faulty().await;
    let (before, files) = (read_all(&fx.db), tree(&fx.files));
    for _ in 0..2 {
        rockup::backup(&repo, Source::Db(fx.db.clone()), &fx.options())
            .await
            .unwrap();
    }
    let prune = keep_last(2, Duration::ZERO, false);
    store.inject(Op::List, "", Fault::Error, 1);
    assert!(rockup::prune(&repo, &prune).await.is_err());
    assert_eq!(
        rockup::list(&repo).await.unwrap().len(),
        3,
        "nothing forgotten"
    );
    store.inject(Op::Delete, "manifest.json", Fault::Error, 1);
    assert!(rockup::prune(&repo, &prune).await.is_err());
    all_is_well(&fx, &repo, &before, &files).await;
    rockup::prune(&repo, &prune).await.unwrap();
    all_is_well(&fx, &repo, &before, &files).await;
}

/// A killed run's lock (of another host, so no process can be checked) stops
/// blocking prune once its lease has run out; prune removes it.
#[tokio::test]
async fn a_killed_runs_lock_expires_with_its_lease() {
    let fx = Fixture::new(3);
    let repo = memory_repo();
    rockup::backup(&repo, Source::Db(fx.db.clone()), &fx.options())
        .await
        .unwrap();
    let lock = serde_json::json!({
        "kind": "backup", "host": "lost-host", "pid": 7,
        "created_at": chrono::Utc::now(), "lease_secs": 1,
    });
    put_object(&repo, "locks/backup-killed.json", lock.to_string()).await;
    let err = rockup::prune(&repo, &keep_last(1, Duration::ZERO, false))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Locked { .. }),
        "a fresh lease blocks: {err}"
    );
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let report = rockup::prune(&repo, &keep_last(1, Duration::ZERO, false))
        .await
        .unwrap();
    assert_eq!(report.stale_locks_removed, ["locks/backup-killed.json"]);
    assert!(list_keys(&repo, "locks").await.is_empty());
}

/// `--retry-lock`: a prune meeting a live lock tries again until the wait
/// is over (failing, exit 7) or the lock is gone (running).
#[tokio::test]
async fn retry_lock_waits_for_the_lock_in_the_way() {
    let fx = Fixture::new(2);
    let repo = memory_repo();
    rockup::backup(&repo, Source::Db(fx.db.clone()), &fx.options())
        .await
        .unwrap();
    let lock = serde_json::json!({
        "kind": "backup", "host": "busy-host", "pid": 7,
        "created_at": chrono::Utc::now(), "lease_secs": 4,
    });
    put_object(&repo, "locks/backup-busy.json", lock.to_string()).await;
    let mut options = keep_last(1, Duration::ZERO, false);
    options.retry_lock = Duration::from_secs(1);
    let started = std::time::Instant::now();
    let err = rockup::prune(&repo, &options).await.unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert_eq!(err.exit_code(), 7);
    assert!(started.elapsed() >= Duration::from_secs(1), "it waited");
    options.retry_lock = Duration::from_secs(60);
    let report = rockup::prune(&repo, &options).await.unwrap();
    assert_eq!(report.stale_locks_removed, ["locks/backup-busy.json"]);
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "until the lease ran out"
    );
}

/// A backup held for longer than its lease keeps renewing it: prune stays away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_backup_renews_its_lease() {
    let fx = Fixture::new(6);
    let inner = Arc::new(InMemory::new());
    let operator = Repository::from_store(inner.clone(), "memory://shared");
    let store = Arc::new(PauseOnPut::new(inner, "/parts/"));
    let backup = backup_held_before_commit(&fx, &store, short_lease(&fx)).await;
    tokio::time::sleep(Duration::from_millis(2500)).await; // two and a half leases
    let err = rockup::prune(&operator, &keep_last(1, Duration::ZERO, false))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    store.resume();
    backup.await.unwrap().unwrap();
    assert!(verify(&operator, "all", true).await.problems.is_empty());
}

/// A backup whose lease ran out (its renewals failed while it was held) finds
/// its lock removed by the prune that took it for stale: it commits nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_whose_lease_ran_out_does_not_commit() {
    let fx = Fixture::new(6);
    let inner = Arc::new(InMemory::new());
    let operator = Repository::from_store(inner.clone(), "memory://shared");
    rockup::backup(&operator, Source::Db(fx.db.clone()), &fx.options())
        .await
        .unwrap();
    let store = Arc::new(PauseOnPut::new(inner, "/parts/").failing(".lease"));
    let backup = backup_held_before_commit(&fx, &store, short_lease(&fx)).await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let pruned = rockup::prune(&operator, &keep_last(1, Duration::ZERO, false))
        .await
        .unwrap();
    assert_eq!(pruned.stale_locks_removed.len(), 1, "{pruned:?}");
    store.resume();
    let result = backup.await.unwrap();
    assert!(matches!(result, Err(Error::LockLost { .. })), "{result:?}");
    assert_eq!(rockup::list(&operator).await.unwrap().len(), 1);
    assert!(verify(&operator, "all", true).await.problems.is_empty());
}
