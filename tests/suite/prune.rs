//! Retention and garbage collection: what is forgotten, what is deleted and what
//! must stay (kept backups restore intact; objects of a backup that may still be
//! running are left alone).

use std::time::Duration;

use rockup::{prune, Error, Source};

use super::fixture::*;

const DAY: Duration = Duration::from_secs(24 * 3600);

#[tokio::test]
async fn prune_forgets_by_policy_and_deletes_only_unreferenced_objects() {
    let fx = Fixture::new(20);
    let repo = fx.local_repo();
    let mut ids = Vec::new();
    for round in 0..3 {
        {
            let db = open_rw(&fx.db);
            add_file(&db, &fx.files, 100 + round, 5000 + round);
            db.flush().unwrap();
        }
        let report = rockup::backup(&repo, Source::Db(fx.db.clone()), &fx.options())
            .await
            .unwrap();
        ids.push(report.header.backup_id);
    }
    // What an interrupted backup leaves: objects no manifest references.
    let orphans = [
        blob_key("ab".repeat(32)),
        "backups/20261125T000000.000Z-0badc0de/files/CURRENT".to_string(),
    ];
    for key in &orphans {
        put_object(&repo, key, &b"orphan"[..]).await;
    }
    let count = |repo: &rockup::Repository| {
        let repo = repo.clone();
        async move { list_keys(&repo, "").await.len() }
    };
    let before = count(&repo).await;

    let dry = prune(&repo, &keep_last(2, DAY, true)).await.unwrap();
    assert_eq!(dry.forgotten, [ids[0].clone()]);
    assert!(dry.deleted_objects > 0);
    assert_eq!(count(&repo).await, before, "a dry run deletes nothing");

    let pruned = prune(&repo, &keep_last(2, DAY, false)).await.unwrap();
    assert_eq!(pruned.forgotten, [ids[0].clone()]);
    assert_eq!(pruned.deleted_objects, dry.deleted_objects);
    assert_eq!(
        pruned.young_unreferenced, 2,
        "orphans younger than --grace stay"
    );
    let listed: Vec<rockup::BackupId> = rockup::list(&repo)
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.backup_id)
        .collect();
    assert_eq!(listed, ids[1..]);
    for key in &orphans {
        assert!(get_object(&repo, key).await.is_some());
    }

    let collected = prune(&repo, &keep_last(2, Duration::ZERO, false))
        .await
        .unwrap();
    assert!(collected.forgotten.is_empty());
    assert_eq!(collected.deleted_objects, 2, "{collected:?}");
    for key in &orphans {
        assert!(get_object(&repo, key).await.is_none());
    }

    // The kept backups are whole: deep verify is clean and the oldest restores.
    let report = verify(&repo, "all", true).await;
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let restore = restoring(
        &ids[1],
        fx.path("restored/db"),
        Some(fx.path("restored/files")),
    );
    rockup::restore(&repo, &restore).await.unwrap();
    let restored = read_all(&fx.path("restored/db"));
    assert_eq!(restored["files"].len(), 22, "the second backup's records");
}

#[tokio::test]
async fn prune_waits_for_running_backups_and_refuses_unreadable_manifests() {
    let fx = Fixture::new(3);
    let repo = fx.local_repo();
    let report = rockup::backup(&repo, Source::Db(fx.db.clone()), &fx.options())
        .await
        .unwrap();
    rockup::backup(&repo, Source::Db(fx.db.clone()), &fx.options())
        .await
        .unwrap();

    // A backup that is running (or was killed): prune refuses, naming it.
    leave_backup_lock(&repo, "running").await;
    let err = prune(&repo, &keep_last(1, Duration::ZERO, false))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert!(err.to_string().contains("rockup unlock"), "{err}");
    assert_eq!(
        rockup::list(&repo).await.unwrap().len(),
        2,
        "nothing forgotten"
    );
    remove_object(&repo, "locks/backup-running.json").await; // it finished

    // An unreadable manifest: what it references is unknown, so nothing goes.
    let key = manifest_key(&report.header.backup_id);
    let path = fx.path("repo").join(key);
    std::fs::write(&path, b"{ not json").unwrap();
    let before = list_keys(&repo, "").await.len();
    let err = prune(&repo, &keep_last(1, Duration::ZERO, false))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unreadable"), "{err}");
    assert_eq!(list_keys(&repo, "").await.len(), before);
    assert!(
        list_keys(&repo, "locks").await.is_empty(),
        "the prune lock is released after a refusal"
    );
}

/// Writes a crash interrupted leave staging files (`<key>#<digits>`) in a local
/// repository; object_store's listings skip them, so prune sweeps them itself —
/// only for rockup's keys, and only past the grace period.
#[tokio::test]
async fn prune_removes_staging_files_of_interrupted_writes() {
    let fx = Fixture::new(3);
    let repo = fx.local_repo();
    rockup::backup(&repo, Source::Db(fx.db.clone()), &fx.options())
        .await
        .unwrap();
    let root = fx.path("repo");
    let sha = "cd".repeat(32);
    std::fs::create_dir_all(root.join("blobs/sha256/cd")).unwrap();
    let old = root.join(format!("blobs/sha256/cd/{sha}#1234"));
    let fresh = root.join("sst/000099_sX_7.sst#77");
    let foreign = root.join("notes#5");
    for path in [&old, &fresh, &foreign] {
        std::fs::write(path, b"partial").unwrap();
    }
    let two_days_ago = std::time::SystemTime::now() - Duration::from_secs(2 * 86_400);
    for path in [&old, &foreign] {
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(two_days_ago)
            .unwrap();
    }
    let report = prune(&repo, &keep_last(1, Duration::from_secs(86_400), false))
        .await
        .unwrap();
    assert_eq!(report.deleted_objects, 1, "{report:?}");
    assert!(!old.exists(), "an old staging file of rockup's is swept");
    assert!(fresh.exists(), "a young one may belong to a running write");
    assert!(foreign.exists(), "never somebody else's");
}

/// Backs `fx` up once per tag set; returns the ids, oldest first.
async fn tagged_backups(
    fx: &Fixture,
    repo: &rockup::Repository,
    tiers: &[&str],
) -> Vec<rockup::BackupId> {
    let mut ids = Vec::new();
    for tier in tiers {
        let options = with(fx.options(), |o| {
            o.tags.insert("tier".into(), tier.to_string());
        });
        let report = rockup::backup(repo, Source::Db(fx.db.clone()), &options)
            .await
            .unwrap();
        ids.push(report.header.backup_id);
    }
    ids
}

#[tokio::test]
async fn forget_removes_exactly_the_backups_named() {
    let fx = Fixture::new(4);
    let repo = fx.local_repo();
    let ids = tagged_backups(&fx, &repo, &["a", "a", "a"]).await;
    let forget = |named: Vec<rockup::BackupId>| {
        with(rockup::PruneOptions::default(), |o| {
            o.forget = named;
            o.grace = Duration::ZERO;
        })
    };
    // An id that is not there refuses the whole run.
    let unknown: rockup::BackupId = "20200101T000000.000Z-00000000".parse().unwrap();
    let err = prune(&repo, &forget(vec![ids[0].clone(), unknown]))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::BackupNotFound(_)), "{err}");
    assert_eq!(
        rockup::list(&repo).await.unwrap().len(),
        3,
        "nothing forgotten"
    );
    // A rule and names together are refused.
    let both = with(forget(vec![ids[0].clone()]), |o| {
        o.policy.keep_last = Some(1)
    });
    assert!(matches!(
        prune(&repo, &both).await.unwrap_err(),
        Error::Usage(_)
    ));

    // The newest may be named too: names are deliberate.
    let report = prune(&repo, &forget(vec![ids[0].clone(), ids[2].clone()]))
        .await
        .unwrap();
    assert_eq!(report.forgotten, [ids[0].clone(), ids[2].clone()]);
    let left: Vec<_> = rockup::list(&repo)
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.backup_id)
        .collect();
    assert_eq!(left, [ids[1].clone()]);
    assert!(verify(&repo, "all", true).await.problems.is_empty());
    let restore = restoring(
        &ids[1],
        fx.path("restored/db"),
        Some(fx.path("restored/files")),
    );
    rockup::restore(&repo, &restore).await.unwrap();
    assert_eq!(read_all(&fx.path("restored/db")), read_all(&fx.db));
}

#[tokio::test]
async fn group_by_tags_keeps_each_groups_newest() {
    let fx = Fixture::new(2);
    let repo = fx.local_repo();
    let ids = tagged_backups(&fx, &repo, &["gold", "silver", "gold", "silver"]).await;
    let keep_one = |group_by: &str| {
        with(keep_last(1, Duration::ZERO, true), |o| {
            o.group_by = group_by.parse().unwrap()
        })
    };
    let kept = |report: rockup::PruneReport| -> Vec<rockup::BackupId> {
        report.kept.into_iter().map(|k| k.backup_id).collect()
    };
    let by_source = prune(&repo, &keep_one("source")).await.unwrap();
    assert_eq!(kept(by_source), [ids[3].clone()]);
    let by_tags = prune(&repo, &keep_one("tags")).await.unwrap();
    assert_eq!(kept(by_tags), [ids[2].clone(), ids[3].clone()]);
    let by_both = prune(&repo, &keep_one("source,tags")).await.unwrap();
    assert_eq!(kept(by_both), [ids[2].clone(), ids[3].clone()]);
    assert!("host".parse::<rockup::GroupBy>().is_err());
}
