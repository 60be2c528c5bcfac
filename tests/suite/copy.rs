//! `rockup copy`: a second repository from the first, verified on the way,
//! deduplicated on the target, the manifest last.

use rockup::{CopyOptions, Error, RestoreOptions, Source};

use super::fixture::*;

fn all() -> CopyOptions {
    CopyOptions {
        backup: "all".into(),
        source: None,
        jobs: 4,
    }
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
    let options = RestoreOptions::new("latest", target.join("db"), Some(target.join("files")));
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
    let latest = CopyOptions {
        backup: "latest".into(),
        ..all()
    };
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
    assert!(err.to_string().contains(victim.as_str()), "{err}");
    assert!(get_object(&second, &blob_key(victim)).await.is_none());
    for index in list_keys(&second, "index").await {
        let index = get_object(&second, index.as_ref()).await.unwrap();
        let damaged_sent = String::from_utf8_lossy(&index).contains(victim.as_str());
        assert!(!damaged_sent, "the damaged content was not sent");
    }
    assert!(
        rockup::list(&second).await.unwrap().is_empty(),
        "nothing committed"
    );
    assert!(list_keys(&second, "locks").await.is_empty());
}
