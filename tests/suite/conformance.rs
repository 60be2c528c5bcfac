//! The same end-to-end story against every backend: a format-1 backup with
//! external files (one large enough for multipart) → list → verify → deep
//! verify → a format-2 incremental that deduplicates against the format-1
//! objects → restore of both into fresh directories → compare → commit safety →
//! prune → corruption (of a blob and of a packed entry) and loss detected →
//! bulk delete of everything written; then, in the emptied repository, packs:
//! half the files deleted, prune repacks, the rest restores whole. Each
//! backend runs it twice: plaintext, and encrypted (`rockup init` first; format
//! 1 is refused, so the first backup is format 2; content objects are named by
//! keyed hash, so the damaged one is found by its size).
//!
//! Backends come from the environment, as `scripts/test.sh` sets it after starting
//! the emulators (or as the user sets it for real MinIO, Azurite or a bucket):
//!
//! | backend | URL variable | store settings |
//! |---|---|---|
//! | S3 / MinIO | `ROCKUP_TEST_S3` (`s3://bucket[/prefix]`) | `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`, `AWS_ACCESS_KEY_ID`, … |
//! | Azure Blob | `ROCKUP_TEST_AZURE` (`az://container[/prefix]`) | `AZURE_STORAGE_USE_EMULATOR`, `AZURITE_BLOB_STORAGE_URL`, … |
//! | GCS | `ROCKUP_TEST_GCS` (`gs://bucket[/prefix]`) | `GOOGLE_SERVICE_ACCOUNT`, … |
//!
//! An unconfigured S3 or Azure backend fails its test; `ROCKUP_TEST_SKIP=s3,azure`
//! skips them explicitly. GCS has no emulator that speaks object_store's XML API,
//! so its test is `#[ignore]`d with the reason shown in the test output; run it with
//! `--ignored` against a real bucket.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use object_store::ObjectStoreExt;
use rockup::manifest::ExternalEntry;
use rockup::prune;
use rockup::{ProblemKind, Repository, Source};

use super::fixture::*;

/// The repository URL for `backend` under a prefix of its own, or `None` when the
/// backend is skipped explicitly. Panics when it is neither configured nor skipped.
fn backend_url(backend: &str, variable: &str) -> Option<String> {
    let skipped = std::env::var("ROCKUP_TEST_SKIP").unwrap_or_default();
    if skipped.split(',').any(|s| s.trim() == backend) {
        eprintln!("{backend}: SKIPPED (ROCKUP_TEST_SKIP={skipped})");
        return None;
    }
    let base = std::env::var(variable).unwrap_or_else(|_| {
        panic!(
            "the {backend} backend is not configured: run `bash scripts/test.sh` (it starts the \
             emulators), or set {variable} and the store's environment variables, or skip it \
             explicitly with ROCKUP_TEST_SKIP={backend}"
        )
    });
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    Some(format!(
        "{}/conformance-{backend}-{}-{nanos}",
        base.trim_end_matches('/'),
        std::process::id()
    ))
}

fn open(url: &str, options: &[(&str, &str)]) -> Repository {
    let options: Vec<(String, String)> = options
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Repository::open(url, &options).unwrap()
}

/// Size of the external file that goes through multipart upload (> 8 MiB).
const LARGE: usize = 20 << 20;

/// Whether the story runs on a plaintext or an encrypted repository.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sealing {
    Plaintext,
    Encrypted,
}

/// The first backup: format 1 (an object per file, as rockup 0.1 wrote) in
/// a plaintext repository; format 2 in an encrypted one, which refuses 1.
async fn first_backup(repo: &Repository, fx: &Fixture, sealing: Sealing) -> rockup::BackupReport {
    let format_1 = rockup::backup(repo, Source::Db(fx.db.clone()), &format_1(fx.options())).await;
    if sealing == Sealing::Plaintext {
        let first = format_1.unwrap();
        assert_eq!(first.header.version, rockup::Format::V1);
        assert_eq!(list_keys(repo, "blobs").await.len(), 61);
        return first;
    }
    let err = format_1.unwrap_err();
    assert!(err.to_string().contains("never encrypted"), "{err}");
    let first = rockup::backup(repo, Source::Db(fx.db.clone()), &fx.options())
        .await
        .unwrap();
    assert_eq!(first.header.version, rockup::Format::V2);
    assert!(list_keys(repo, "blobs").await.is_empty());
    assert_eq!(list_keys(repo, "content").await.len(), 1, "the large file");
    first
}

/// The key of the large file's content object, and where to flip a byte.
async fn large_content(
    repo: &Repository,
    external: &[ExternalEntry],
    sealing: Sealing,
) -> (String, usize) {
    if sealing == Sealing::Plaintext {
        let large = external.iter().find(|e| e.size == LARGE as u64).unwrap();
        return (blob_key(large.sha256), LARGE / 2);
    }
    let content = list_keys(repo, "content").await;
    let [key] = content.as_slice() else {
        panic!("one content object: {content:?}");
    };
    (key.to_string(), LARGE / 2)
}

/// The whole story against one repository, which must be empty.
pub async fn conformance(repo: Repository, sealing: Sealing) {
    let repo = match sealing {
        Sealing::Plaintext => repo,
        Sealing::Encrypted => encrypted(repo).await,
    };
    let fx = Fixture::new(60);
    {
        let db = open_rw(&fx.db);
        add_file(&db, &fx.files, 500, LARGE);
    }

    // The first backup, list, verify.
    let first = first_backup(&repo, &fx, sealing).await;
    let at_first = (read_all(&fx.db), tree(&fx.files));
    assert!(first.problems.is_empty(), "{:?}", first.problems);
    assert_eq!(first.header.stats.external_files, 61);
    assert!(first.header.stats.uploaded_bytes > LARGE as u64);
    let listed = rockup::list(&repo).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].backup_id, first.header.backup_id);
    assert!(listed[0].error.is_none(), "{:?}", listed[0].error);
    for deep in [false, true] {
        let report = verify(&repo, "all", deep).await;
        assert!(
            report.problems.is_empty(),
            "deep={deep}: {:?}",
            report.problems
        );
    }

    // Incremental in format 2: one new external file and new records; SSTs and
    // the files format 1 stored are not uploaded again.
    {
        let db = open_rw(&fx.db);
        add_file(&db, &fx.files, 1000, 4321);
    }
    let second = rockup::backup(&repo, Source::Db(fx.db.clone()), &fx.options())
        .await
        .unwrap();
    assert!(second.problems.is_empty(), "{:?}", second.problems);
    assert_eq!(second.header.version, rockup::Format::V2);
    assert_eq!(second.header.stats.external_files, 62);
    let marker = get_object(&repo, "rockup.json").await.unwrap();
    let marker = String::from_utf8_lossy(&marker);
    match sealing {
        Sealing::Plaintext => assert!(marker.contains("\"version\": 2"), "marker raised"),
        Sealing::Encrypted => assert!(marker.contains("\"encryption\""), "{marker}"),
    }
    assert!(
        second.header.stats.uploaded_bytes < first.header.stats.uploaded_bytes / 10,
        "incremental uploaded {} of {} bytes",
        second.header.stats.uploaded_bytes,
        first.header.stats.uploaded_bytes
    );
    assert_eq!(rockup::list(&repo).await.unwrap().len(), 2);

    // Restore into fresh directories and compare.
    let restore = |backup: &str, to: &str| {
        restoring(
            backup,
            fx.path(&format!("{to}/db")),
            Some(fx.path(&format!("{to}/files"))),
        )
    };
    let restored = rockup::restore(&repo, &restore("latest", "restored"))
        .await
        .unwrap();
    assert_eq!(restored.sequence_number, second.header.sequence_number);
    assert_eq!(read_all(&fx.db), read_all(&fx.path("restored/db")));
    assert_eq!(tree(&fx.files), tree(&fx.path("restored/files")));
    rockup::restore(
        &repo,
        &restore(first.header.backup_id.as_str(), "restored-v1"),
    )
    .await
    .unwrap();
    assert_eq!(at_first.0, read_all(&fx.path("restored-v1/db")));
    assert_eq!(at_first.1, tree(&fx.path("restored-v1/files")));

    // Commit safety: an existing manifest is never replaced.
    let header_key = manifest_key(&first.header.backup_id);
    let original = get_object(&repo, &header_key).await.unwrap();
    let err = repo
        .create(
            &header_key.as_str().into(),
            Bytes::from_static(b"{\"someone\":\"else\"}"),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("refusing to overwrite"), "{err}");
    assert_eq!(get_object(&repo, &header_key).await.unwrap(), original);

    // Prune: the first backup is forgotten and its own objects deleted; what the
    // second shares with it stays, and the second still verifies deeply.
    let pruned = prune(&repo, &keep_last(1, Duration::ZERO, false))
        .await
        .unwrap();
    assert_eq!(
        pruned.forgotten,
        std::slice::from_ref(&first.header.backup_id)
    );
    assert!(
        pruned.deleted_objects >= 3,
        "manifest and parts: {pruned:?}"
    );
    assert_eq!(rockup::list(&repo).await.unwrap().len(), 1);
    let report = verify(&repo, "all", true).await;
    assert!(report.problems.is_empty(), "{:?}", report.problems);

    // Corruption (same size) is found by deep verify and stops a restore.
    let external: Vec<ExternalEntry> = second.header.entries(&repo).await.unwrap();
    let (victim, at) = large_content(&repo, &external, sealing).await;
    let mut bytes = get_object(&repo, &victim).await.unwrap().to_vec();
    bytes[at] ^= 0x01;
    put_object(&repo, &victim, bytes).await;
    // A packed entry is found by its index, which only the plaintext one
    // shows a test (the encrypted suite damages packs on its own).
    let mut expected = vec![victim.clone()];
    if sealing == Sealing::Plaintext {
        let new_file = external.iter().find(|e| e.size == 4321).unwrap();
        let pack = damage_content(&repo, &new_file.sha256).await;
        assert!(pack.starts_with("packs/"), "{pack}");
        expected.push(pack);
        expected.sort();
    }
    assert!(verify(&repo, "latest", false).await.problems.is_empty());
    let deep = verify(&repo, "all", true).await;
    let mut damaged: Vec<String> = deep.problems.iter().map(|p| p.path.clone()).collect();
    damaged.sort();
    assert_eq!(damaged, expected, "{:?}", deep.problems);
    assert!(deep
        .problems
        .iter()
        .all(|p| p.kind == ProblemKind::CorruptObject));
    let err = rockup::restore(&repo, &restore("latest", "again"))
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 3, "{err}");
    assert!(
        entries(&fx.path("again/files")).is_empty(),
        "no partial restore"
    );

    // A lost SST is found by the quick check.
    let sst = list_keys(&repo, "sst").await.remove(0);
    repo.store().delete(&sst).await.unwrap();
    let quick = verify(&repo, "latest", false).await;
    assert!(
        quick
            .problems
            .iter()
            .any(|p| p.path == sst.to_string() && p.kind == ProblemKind::MissingObject),
        "{:?}",
        quick.problems
    );

    // Deletes: everything this test wrote, in bulk where the store can.
    let all = list_keys(&repo, "").await;
    assert!(all.len() > 8, "{} objects", all.len());
    repo.delete_all(&all).await.unwrap();
    assert!(list_keys(&repo, "").await.is_empty(), "prefix is empty");

    let repo = match sealing {
        Sealing::Plaintext => repo,
        Sealing::Encrypted => encrypted(repo).await,
    };
    packs_are_repacked(&repo).await;
}

/// In an empty repository: small files packed; half of them deleted; prune
/// forgets the old backup and repacks what is left, which restores whole.
async fn packs_are_repacked(repo: &Repository) {
    let fx = Fixture::new(200);
    rockup::backup(repo, Source::Db(fx.db.clone()), &fx.options())
        .await
        .unwrap();
    let pack_bytes = |repo: &Repository| {
        let repo = repo.clone();
        async move {
            let mut total = 0;
            for key in list_keys(&repo, "packs").await {
                total += get_object(&repo, key.as_ref()).await.unwrap().len();
            }
            total
        }
    };
    let before = pack_bytes(repo).await;
    {
        let db = open_rw(&fx.db);
        let cf = db.cf_handle("files").unwrap();
        for i in (0..200).step_by(2) {
            db.delete_cf(&cf, format!("file:{i:06}")).unwrap();
            std::fs::remove_file(fx.files.join(format!("d{}/f-{i}.bin", i % 5))).unwrap();
        }
    }
    let kept = rockup::backup(repo, Source::Db(fx.db.clone()), &fx.options())
        .await
        .unwrap();
    assert_eq!(kept.header.stats.external_files, 100);
    assert_eq!(
        list_keys(repo, "packs").await.len(),
        2,
        "one more: the database's small files"
    );
    let pruned = prune(repo, &keep_last(1, Duration::ZERO, false))
        .await
        .unwrap();
    assert!(pruned.repack.packs_repacked >= 1, "{pruned:?}");
    let after = pack_bytes(repo).await;
    assert!(
        after * 10 < before * 7,
        "{before} bytes in packs, then {after}"
    );
    let again = prune(repo, &keep_last(1, Duration::ZERO, false))
        .await
        .unwrap();
    assert_eq!(again.repack.packs_repacked, 0, "{again:?}");
    let report = verify(repo, "all", true).await;
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let target = fx.path("repacked");
    let options = restoring("latest", target.join("db"), Some(target.join("files")));
    rockup::restore(repo, &options).await.unwrap();
    assert_eq!(read_all(&fx.db), read_all(&target.join("db")));
    assert_eq!(tree(&fx.files), tree(&target.join("files")));
}

/// A test per backend and sealing: `$name` runs the story on the repository
/// `$open` makes (or skips it when that yields `None`), `${name}_encrypted`
/// the same encrypted.
macro_rules! backend {
    ($(#[$attr:meta])* $name:ident, $encrypted:ident, $open:expr) => {
        $(#[$attr])*
        #[tokio::test]
        async fn $name() {
            if let Some(repo) = $open {
                conformance(repo, Sealing::Plaintext).await;
            }
        }

        $(#[$attr])*
        #[tokio::test]
        async fn $encrypted() {
            if let Some(repo) = $open {
                conformance(repo, Sealing::Encrypted).await;
            }
        }
    };
}

/// The story in a local directory removed afterwards.
async fn local_directory(sealing: Sealing) {
    let dir = tempfile::tempdir().unwrap();
    conformance(
        open(&format!("file://{}", dir.path().display()), &[]),
        sealing,
    )
    .await;
}

#[tokio::test]
async fn local_directory_plaintext() {
    local_directory(Sealing::Plaintext).await;
}

#[tokio::test]
async fn local_directory_encrypted() {
    local_directory(Sealing::Encrypted).await;
}

backend!(in_memory, in_memory_encrypted, Some(memory_repo()));
backend!(
    s3,
    s3_encrypted,
    backend_url("s3", "ROCKUP_TEST_S3").map(|url| open(&url, &[]))
);
backend!(
    /// As a server that neither does conditional writes nor bulk deletes: the
    /// commit falls back to a checked plain write, deletes to one request per
    /// object.
    s3_without_conditional_put_or_bulk_delete,
    s3_without_conditional_put_or_bulk_delete_encrypted,
    backend_url("s3", "ROCKUP_TEST_S3").map(|url| {
        let options = [("aws_conditional_put", "disabled"), ("aws_disable_bulk_delete", "true")];
        open(&url, &options)
    })
);
backend!(
    azure,
    azure_encrypted,
    backend_url("azure", "ROCKUP_TEST_AZURE").map(|url| open(&url, &[]))
);
backend!(
    #[ignore = "GCS: no emulator reachable here speaks object_store's XML API; set ROCKUP_TEST_GCS=gs://bucket/prefix and GOOGLE_SERVICE_ACCOUNT, then run with --ignored"]
    gcs,
    gcs_encrypted,
    backend_url("gcs", "ROCKUP_TEST_GCS").map(|url| open(&url, &[]))
);

/// The first thing a user meets when a setting is wrong: one line naming the
/// repository URL and the fix, never the secret.
async fn first_error(url: &str, options: &[(&str, &str)]) -> String {
    let repo = open(url, options);
    let err = rockup::list(&repo).await.unwrap_err().to_string();
    assert!(!err.contains('\n'), "one line: {err}");
    err
}

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn s3_errors_name_the_url_and_the_fix() {
    let Some(url) = backend_url("s3", "ROCKUP_TEST_S3") else {
        return;
    };
    let missing = "s3://rockup-no-such-bucket/x";
    let err = first_error(missing, &[]).await;
    assert!(
        err.starts_with(missing) && err.contains("does not exist"),
        "{err}"
    );

    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let err = first_error(&url, &[("aws_endpoint", &endpoint)]).await;
    assert!(
        err.contains("unreachable") && err.contains("AWS_ENDPOINT"),
        "{err}"
    );

    let err = first_error(&url, &[]).await;
    assert!(
        err.contains("not a rockup repository"),
        "an empty prefix: {err}"
    );
}

#[tokio::test]
async fn azure_errors_name_the_url_and_the_fix() {
    let Some(url) = backend_url("azure", "ROCKUP_TEST_AZURE") else {
        return;
    };
    let missing = "az://rockup-no-such-container/x";
    let err = first_error(missing, &[]).await;
    assert!(
        err.starts_with(missing) && err.contains("does not exist"),
        "{err}"
    );

    // A well-formed key that is not the account's.
    let wrong = "U0VDUkVULUtFWS1USEFULUlTLVdST05HLVNFQ1JFVC1LRVk=";
    let err = first_error(&url, &[("azure_storage_account_key", wrong)]).await;
    assert!(err.contains("credentials were rejected"), "{err}");
    assert!(!err.contains(wrong), "the secret is never shown: {err}");
}
