//! `rockup copy`: a second repository from the first, verified on the way,
//! deduplicated on the target, the manifest last.

use std::sync::Arc;

use object_store::memory::InMemory;
use rockup::{CopyOptions, Error, LockLoss, Repository, Source};

use super::fixture::*;
use super::stores::PauseOnPut;

fn all() -> CopyOptions {
    with(CopyOptions::default(), |o| {
        o.backup = "all".into();
        o.jobs = 4.into();
    })
}

#[tokio::test]
async fn copies_restore_and_only_new_objects_are_sent() {
    let fx = Fixture::new(12);
    let first = fx.local_repo();
    for _ in 0..2 {
        rockup::backup(&first, Source::Db(fx.db.clone()), &fx.options())
            .await
            .unwrap();
    }
    let second = memory_repo();
    let report = rockup::copy(&first, &second, &all()).await.unwrap();
    assert_eq!(report.copied.len(), 2, "{report:?}");
    assert!(
        report.objects_present > 0,
        "the second backup's shared files were there"
    );
    let listed = |repo| async move {
        let rows = rockup::list(repo).await.unwrap();
        rows.into_iter().map(|b| b.backup_id).collect::<Vec<_>>()
    };
    assert_eq!(listed(&first).await, listed(&second).await);
    assert!(verify(&second, "all", true).await.problems.is_empty());
    let target = fx.path("from-copy");
    let options = restoring("latest", target.join("db"), Some(target.join("files")));
    rockup::restore(&second, &options).await.unwrap();
    assert_eq!(read_all(&target.join("db")), read_all(&fx.db));
    assert_eq!(tree(&target.join("files")), tree(&fx.files));

    let again = rockup::copy(&first, &second, &all()).await.unwrap();
    assert_eq!(
        (
            again.copied.len(),
            again.present.len(),
            again.objects_copied
        ),
        (0, 2, 0)
    );
    let third = rockup::backup(&first, Source::Db(fx.db.clone()), &fx.options())
        .await
        .unwrap();
    let latest = with(all(), |o| o.backup = "latest".into());
    let report = rockup::copy(&first, &second, &latest).await.unwrap();
    assert_eq!(report.copied, std::slice::from_ref(&third.header.backup_id));
    assert_eq!(
        report.objects_copied,
        third.header.stats.uploaded_objects + 2,
        "its own files and parts"
    );
}

#[tokio::test]
async fn a_damaged_source_object_is_never_copied_nor_committed() {
    let fx = Fixture::new(6);
    let first = fx.local_repo();
    let report = rockup::backup(&first, Source::Db(fx.db.clone()), &fx.options())
        .await
        .unwrap();
    let external: Vec<rockup::manifest::ExternalEntry> =
        report.header.entries(&first).await.unwrap();
    let victim = &external[2].sha256;
    damage_content(&first, victim).await;
    let second = memory_repo();
    let err = rockup::copy(&first, &second, &all()).await.unwrap_err();
    assert!(matches!(err, Error::Manifest { .. }), "{err}");
    assert!(err.to_string().contains(&victim.to_string()), "{err}");
    assert!(get_object(&second, &blob_key(victim)).await.is_none());
    for index in list_keys(&second, "index").await {
        let index = get_object(&second, index.as_ref()).await.unwrap();
        let damaged_sent = String::from_utf8_lossy(&index).contains(&victim.to_string());
        assert!(!damaged_sent, "the damaged content was not sent");
    }
    assert!(
        rockup::list(&second).await.unwrap().is_empty(),
        "nothing committed"
    );
    assert!(list_keys(&second, "locks").await.is_empty());
}

/// A copy whose lock on the target is removed while it commits a manifest
/// (`rockup unlock --force` on the target): the manifest it just committed is
/// withdrawn, as a prune may have deleted what it references, and the error
/// says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_that_loses_its_lock_at_the_commit_withdraws_its_manifest() {
    let fx = Fixture::new(6);
    let first = fx.local_repo();
    rockup::backup(&first, Source::Db(fx.db.clone()), &fx.options())
        .await
        .unwrap();
    let inner = Arc::new(InMemory::new());
    let operator = Repository::from_store(inner.clone(), "memory://target");
    // Held once the manifest is written, before the copy checks its lock again.
    let store = Arc::new(PauseOnPut::new(inner, "/manifest.json").after_write());
    let target = Repository::from_store(store.clone(), "memory://target");
    let copying = tokio::spawn(async move { rockup::copy(&first, &target, &all()).await });
    store.reached().await;
    let unlocked = rockup::unlock(&operator, true).await.unwrap();
    assert_eq!(unlocked.removed.len(), 1, "{unlocked:?}");
    store.resume();
    let err = copying.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, Error::LockLost { outcome: LockLoss::Withdrawn(key), .. } if key.ends_with("/manifest.json")),
        "{err:?}"
    );
    assert!(err.to_string().contains("withdrawn"), "{err}");
    assert!(
        rockup::list(&operator).await.unwrap().is_empty(),
        "no manifest is left"
    );
    assert!(list_keys(&operator, "locks").await.is_empty());
}
