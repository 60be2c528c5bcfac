//! Keys of encrypted repositories: missing, wrong and removed keys refused
//! with the error that names them and nothing written; write-only hosts
//! that back up and deduplicate but cannot read; rotation, recipients and
//! passphrase changes.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use rockup::{keys, Credentials, Error, NewKey, Repository, Source, WriteKey};
use zeroize::Zeroizing;

use super::fixture::*;

async fn back_up(repo: &Repository, fx: &Fixture) -> rockup::BackupReport {
    let options = with(fx.options(), |o| o.cache_dir = Some(fx.path("cache")));
    rockup::backup(repo, Source::Db(fx.db.clone()), &options)
        .await
        .unwrap()
}

/// Restores `backup` from `repo` into a new directory of `fx` and compares
/// it with the source, record by record and file by file.
async fn restores(repo: &Repository, fx: &Fixture, backup: &str, expected: &Records) {
    let dir = fx.path(&format!("restored-{}", rand_suffix()));
    let files = dir.join("files");
    let options = restoring(backup, dir.join("db"), Some(files.clone()));
    rockup::restore(repo, &options).await.unwrap();
    assert_eq!(&read_all(&dir.join("db")), expected, "{backup}");
    assert!(!tree(&files).is_empty());
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

/// Restoring with `repo` fails with exit code 5 naming `what`, and places
/// nothing.
async fn restore_refused(repo: &Repository, fx: &Fixture, what: &str) -> Error {
    let dir = fx.path(&format!("refused-{}", rand_suffix()));
    let options = restoring("latest", dir.join("db"), Some(dir.join("files")));
    let err = rockup::restore(repo, &options).await.unwrap_err();
    assert_eq!(err.exit_code(), 5, "{err}");
    assert!(err.to_string().contains(what), "{what}: {err}");
    assert!(entries(&dir.join("db")).is_empty() && entries(&dir.join("files")).is_empty());
    err
}

fn passphrase_key(name: &str, passphrase: &str) -> NewKey {
    NewKey::Passphrase {
        name: name.into(),
        passphrase: Zeroizing::new(passphrase.into()),
        kdf: fast_kdf(),
    }
}

/// No key, a wrong passphrase and a removed passphrase: restore and backup
/// refused with exit code 5 and the error that says which, and the bucket
/// unchanged.
#[tokio::test]
async fn missing_wrong_and_removed_keys_are_named_and_nothing_is_written() {
    let fx = Fixture::new(20);
    let repo = encrypted(memory_repo()).await;
    back_up(&repo, &fx).await;
    keys::add(&repo, passphrase_key("ops", "a second passphrase"))
        .await
        .unwrap();
    keys::remove(&repo, "ops").await.unwrap();
    let before = all_objects(&repo).await;

    let trials = [
        (Credentials::default(), "is encrypted: give its key"),
        (Credentials::passphrase("not the passphrase"), "passphrase"),
        (Credentials::passphrase("a second passphrase"), "passphrase"),
    ];
    for (credentials, what) in trials {
        let handle = reopened(&repo, credentials);
        let err = restore_refused(&handle, &fx, what).await;
        assert!(
            matches!(err, Error::KeyNeeded { .. } | Error::WrongKey { .. }),
            "{err:?}"
        );
        let options = fx.options();
        let err = rockup::backup(&handle, Source::Db(fx.db.clone()), &options)
            .await
            .unwrap_err();
        assert_eq!(err.exit_code(), 5, "{err}");
    }
    assert_eq!(
        before,
        all_objects(&repo).await,
        "a refused key wrote nothing"
    );
    let err = keys::remove(&repo, "default").await.unwrap_err();
    assert!(err.to_string().contains("only key slot"), "{err}");
    assert_eq!(before, all_objects(&repo).await);
}

/// Bytes uploaded by a backup.
fn uploaded(report: &rockup::BackupReport) -> u64 {
    report.header.stats.uploaded_bytes
}

/// A host holding only a write key backs up and deduplicates as a plaintext
/// one does (with its cache, and without it), cannot list, restore, verify
/// or prune, and what it wrote restores with the full key — also after a
/// prune removed what its cache remembered.
#[tokio::test]
async fn a_write_only_host_backs_up_and_deduplicates_but_reads_nothing() {
    let fx = Fixture::new(40);
    let plain = memory_repo();
    let plain_first = uploaded(&back_up(&plain, &fx).await);
    let plain_unchanged = uploaded(&back_up(&plain, &fx).await);

    let full = encrypted(memory_repo()).await;
    let write_key: WriteKey = keys::write_key(&full).await.unwrap();
    let host = reopened(
        &full,
        Credentials::default().with_write_key(write_key.clone()),
    );
    let first = uploaded(&back_up(&host, &fx).await);
    let unchanged = uploaded(&back_up(&host, &fx).await);
    assert!(first >= plain_first, "{first} < {plain_first}");
    assert!(
        unchanged <= 2 * plain_unchanged + (64 << 10),
        "{unchanged} vs {plain_unchanged}"
    );
    std::fs::remove_dir_all(fx.path("cache")).unwrap();
    let uncached = uploaded(&back_up(&host, &fx).await);
    assert!(
        uncached < first / 4,
        "without its cache: {uncached} of {first}"
    );

    for err in [
        rockup::list(&host).await.map(drop).unwrap_err(),
        rockup::verify(&host, &rockup::VerifyOptions::default())
            .await
            .map(drop)
            .unwrap_err(),
        rockup::prune(&host, &keep_last(1, Duration::ZERO, false))
            .await
            .map(drop)
            .unwrap_err(),
    ] {
        assert!(matches!(err, Error::WriteOnly { .. }), "{err:?}");
        assert_eq!(err.exit_code(), 5);
    }
    restore_refused(&host, &fx, "write key").await;
    let expected = read_all(&fx.db);
    restores(&full, &fx, "latest", &expected).await;

    // The backup the host's cache names is removed and pruned away: the host
    // finds its cache stale and stores what it needs again.
    for listed in rockup::list(&full).await.unwrap() {
        remove_object(&full, &manifest_key(listed.backup_id)).await;
    }
    rockup::prune(&full, &keep_last(1, Duration::ZERO, false))
        .await
        .unwrap();
    assert!(
        list_keys(&full, "content").await.is_empty() && list_keys(&full, "packs").await.is_empty()
    );
    let again = uploaded(&back_up(&host, &fx).await);
    assert!(again >= first / 2, "after the prune: {again} of {first}");
    restores(&full, &fx, "latest", &expected).await;
}

/// What `repo`'s config is (compared before and after a refused change).
async fn config(repo: &Repository) -> Bytes {
    get_object(repo, "rockup.json").await.unwrap()
}

/// Rotation: refused while a passphrase it cannot re-wrap would be lost;
/// then backups from before and after restore with the passphrase and with
/// an identity, the dropped passphrase fails, a removed identity fails, a
/// changed passphrase replaces the old one, and the last slot stays.
#[tokio::test]
async fn keys_rotate_without_re_encrypting_and_removed_keys_stop_working() {
    let fx = Fixture::new(20);
    let repo = encrypted(memory_repo()).await;
    let before = back_up(&repo, &fx).await.header.backup_id.to_string();
    let expected_before = read_all(&fx.db);
    let identity = keys::new_identity();
    let recipient = NewKey::Recipient {
        name: "ops-laptop".into(),
        recipient: identity.recipient(),
    };
    keys::add(&repo, recipient).await.unwrap();
    keys::add(&repo, passphrase_key("second", "the second one"))
        .await
        .unwrap();

    let unrotated = config(&repo).await;
    let err = keys::rotate(&repo, false).await.unwrap_err();
    assert!(err.to_string().contains("second"), "{err}");
    assert_eq!(
        unrotated,
        config(&repo).await,
        "a refused rotation changes nothing"
    );
    let sealed_before: BTreeMap<String, Bytes> = all_objects(&repo).await;
    let rotated = keys::rotate(&repo, true).await.unwrap();
    assert_eq!(rotated.removed, vec!["second".to_string()]);
    assert_eq!(rotated.generation, Some(2));
    for (key, bytes) in sealed_before.iter().filter(|(k, _)| *k != "rockup.json") {
        assert_eq!(
            get_object(&repo, key).await.as_ref(),
            Some(bytes),
            "{key} was re-encrypted"
        );
    }

    let db = open_rw(&fx.db);
    db.put(b"after-rotation", b"yes").unwrap();
    drop(db);
    let current = with_passphrase(&repo, PASSPHRASE);
    back_up(&current, &fx).await;
    let expected_after = read_all(&fx.db);
    let by_identity = Credentials::default().with_identity(identity);
    let by_identity = || reopened(&repo, by_identity.clone());
    for handle in [&current, &by_identity()] {
        restores(handle, &fx, &before, &expected_before).await;
        restores(handle, &fx, "latest", &expected_after).await;
    }
    restore_refused(&with_passphrase(&repo, "the second one"), &fx, "passphrase").await;

    keys::remove(&current, "ops-laptop").await.unwrap();
    restore_refused(&by_identity(), &fx, "identity").await;

    keys::passwd(
        &current,
        None,
        Zeroizing::new("a new one".into()),
        fast_kdf(),
    )
    .await
    .unwrap();
    restore_refused(&with_passphrase(&repo, PASSPHRASE), &fx, "passphrase").await;
    let renewed = with_passphrase(&repo, "a new one");
    restores(&renewed, &fx, &before, &expected_before).await;
    let err = keys::remove(&renewed, "default").await.unwrap_err();
    assert!(err.to_string().contains("only key slot"), "{err}");
}

/// The config replaced by a plaintext marker, or removed: a host given a key
/// (passphrase or write key) refuses to back up or restore, and writes
/// nothing — no plaintext backup, no marker of its own.
#[tokio::test]
async fn a_host_given_a_key_never_takes_the_repository_for_plaintext() {
    let fx = Fixture::new(10);
    let full = encrypted(memory_repo()).await;
    back_up(&full, &fx).await;
    let write_key = keys::write_key(&full).await.unwrap();
    let plaintext_marker = br#"{"format": "rockup-repository", "version": 2}"#.to_vec();
    for replaced in [Some(plaintext_marker), None] {
        match &replaced {
            Some(marker) => put_object(&full, "rockup.json", marker.clone()).await,
            None => remove_object(&full, "rockup.json").await,
        }
        let before = all_objects(&full).await;
        let holders = [
            with_passphrase(&full, PASSPHRASE),
            reopened(
                &full,
                Credentials::default().with_write_key(write_key.clone()),
            ),
        ];
        for handle in holders {
            let options = fx.options();
            let err = rockup::backup(&handle, Source::Db(fx.db.clone()), &options)
                .await
                .unwrap_err();
            assert_eq!(err.exit_code(), 5, "{err}");
            assert!(err.to_string().contains("a key was given"), "{err}");
        }
        if replaced.is_some() {
            restore_refused(&with_passphrase(&full, PASSPHRASE), &fx, "a key was given").await;
        }
        assert_eq!(before, all_objects(&full).await, "nothing was written");
    }
}

/// A passphrase that would only be asked for (a prompt on a terminal) is
/// not a key: plaintext repositories work as without one, and the prompt is
/// never shown.
#[tokio::test]
async fn a_passphrase_prompt_alone_leaves_plaintext_repositories_usable() {
    let fx = Fixture::new(5);
    let never_asked = Credentials::default()
        .with_passphrase_prompt(|| panic!("a plaintext repository never asks for a passphrase"));
    let repo = reopened(&memory_repo(), never_asked);
    back_up(&repo, &fx).await;
    restores(&repo, &fx, "latest", &read_all(&fx.db)).await;
}
