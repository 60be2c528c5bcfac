//! Many databases in one repository: each backup belongs to a source (its
//! database's IDENTITY, or a name given with --source); `latest` and retention
//! apply per source.

use std::time::Duration;

use rockup::{Error, Repository, RestoreOptions, Source};

use super::fixture::*;

async fn back_up(repo: &Repository, fx: &Fixture, name: Option<&str>) -> rockup::BackupReport {
    let options = with(fx.options(), |o| o.source = name.map(String::from));
    rockup::backup(repo, Source::Db(fx.db.clone()), &options)
        .await
        .unwrap()
}

fn restore(fx: &Fixture, target: &str, source: Option<&str>) -> RestoreOptions {
    let target = fx.path(target);
    with(
        restoring("latest", target.join("db"), Some(target.join("files"))),
        |o| o.source = source.map(String::from),
    )
}

#[tokio::test]
async fn retention_keeps_every_sources_newest_backup() {
    let (a, b) = (Fixture::new(4), Fixture::new(5));
    let repo = memory_repo();
    let a_first = back_up(&repo, &a, None).await;
    let a_newest = back_up(&repo, &a, None).await;
    let b_only = back_up(&repo, &b, None).await;
    let prune = keep_last(1, Duration::ZERO, false);
    let pruned = rockup::prune(&repo, &prune).await.unwrap();
    assert_eq!(
        pruned.forgotten,
        std::slice::from_ref(&a_first.header.backup_id),
        "{pruned:?}"
    );
    let mut listed: Vec<rockup::BackupId> = rockup::list(&repo)
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.backup_id)
        .collect();
    listed.sort();
    let mut expected = vec![a_newest.header.backup_id, b_only.header.backup_id];
    expected.sort();
    assert_eq!(listed, expected, "B's only backup survives");
    assert!(verify(&repo, "all", true).await.problems.is_empty());
}

#[tokio::test]
async fn latest_is_per_source_and_must_be_chosen_among_several() {
    let (a, b) = (Fixture::new(4), Fixture::new(5));
    let repo = memory_repo();
    back_up(&repo, &a, Some("app-a")).await;
    let b_report = back_up(&repo, &b, None).await;
    let b_source = b_report.header.source.db_identity.clone().unwrap();

    let err = rockup::restore(&repo, &restore(&a, "none", None))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Usage(_)), "{err}");
    assert!(
        err.to_string().contains("app-a") && err.to_string().contains(&b_source),
        "{err}"
    );
    assert!(tree(&a.path("none")).is_empty());

    rockup::restore(&repo, &restore(&a, "a", Some("app-a")))
        .await
        .unwrap();
    assert_eq!(read_all(&a.path("a/db")), read_all(&a.db));
    assert_eq!(tree(&a.path("a/files")), tree(&a.files));
    rockup::restore(&repo, &restore(&b, "b", Some(&b_source)))
        .await
        .unwrap();
    assert_eq!(read_all(&b.path("b/db")), read_all(&b.db));

    let rows = rockup::list(&repo).await.unwrap();
    let sources: Vec<Option<&str>> = rows.iter().map(|r| r.source.as_deref()).collect();
    assert!(sources.contains(&Some("app-a")) && sources.contains(&Some(b_source.as_str())));
    let err = rockup::restore(&repo, &restore(&a, "x", Some("nobody")))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::BackupNotFound(_)), "{err}");
}

#[tokio::test]
async fn a_repository_of_one_source_needs_no_name_and_bad_names_are_refused() {
    let fx = Fixture::new(3);
    let repo = memory_repo();
    back_up(&repo, &fx, None).await;
    back_up(&repo, &fx, None).await;
    rockup::restore(&repo, &restore(&fx, "r", None))
        .await
        .unwrap();
    let options = with(fx.options(), |o| o.source = Some("bad\u{1b}name".into()));
    let err = rockup::backup(&repo, Source::Db(fx.db.clone()), &options)
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 2, "{err}");
}

/// A backup made by a host whose clock ran two days ahead (its id and
/// created_at in the future, its manifest written before the real newest):
/// `latest` and retention follow the store's clock.
#[tokio::test]
async fn the_store_clock_orders_backups_not_the_hosts() {
    let fx = Fixture::new(4);
    let repo = memory_repo();
    let first = back_up(&repo, &fx, None).await;
    // The fast host's backup: a copy of the first under a future id.
    let ahead = chrono::Utc::now() + chrono::Duration::days(2);
    let future_id = backup_id_at(ahead);
    let mut doc = serde_json::to_value(&first.header).unwrap();
    doc["backup_id"] = future_id.clone().into();
    doc["created_at"] = serde_json::to_value(ahead).unwrap();
    copy_backup_files(&repo, &first.header.backup_id, &future_id).await;
    for part in doc["parts"].as_array_mut().unwrap() {
        let sha = part["sha256"].as_str().unwrap().to_string();
        // Format 2 parts name no backup: the same bytes serve the copy.
        let bytes = get_object(&repo, &part_key(&first.header.backup_id, &sha))
            .await
            .unwrap();
        put_object(&repo, &part_key(&future_id, &sha), bytes).await;
    }
    put_object(
        &repo,
        &manifest_key(&future_id),
        serde_json::to_vec(&doc).unwrap(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let real_newest = back_up(&repo, &fx, None).await;

    let latest = rockup::manifest::load(&repo, "latest", None).await.unwrap();
    assert_eq!(latest.backup_id, real_newest.header.backup_id);
    let prune = keep_last(1, Duration::ZERO, true);
    let report = rockup::prune(&repo, &prune).await.unwrap();
    let kept: Vec<&str> = report.kept.iter().map(|k| k.backup_id.as_str()).collect();
    assert_eq!(kept, [real_newest.header.backup_id.as_str()], "{report:?}");
}
