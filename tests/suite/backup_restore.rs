//! Round trips, incremental backups, reference problems, corruption, and the
//! guarantees about work directories and targets.

use std::path::Path;

use rockup::{Error, ProblemKind, RestoreOptions, Source};

use super::fixture::*;

fn restore_options(fx: &Fixture, backup: &str) -> RestoreOptions {
    restoring(
        backup,
        fx.path("restored/db"),
        Some(fx.path("restored/files")),
    )
}

fn source_sequence(db: &Path) -> u64 {
    let opts = rocksdb::Options::default();
    let names = rocksdb::DB::list_cf(&opts, db).unwrap();
    rocksdb::DB::open_cf_for_read_only(&opts, db, &names, false)
        .unwrap()
        .latest_sequence_number()
}

async fn round_trip(fx: &Fixture, repo: rockup::Repository) {
    let before = tree(&fx.db);
    let report = rockup::backup(&repo, Source::Db(fx.db.clone()), &fx.options())
        .await
        .unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(
        tree(&fx.db),
        before,
        "the source database directory was not touched"
    );
    assert_eq!(report.header.sequence_number, source_sequence(&fx.db));
    assert_eq!(report.header.stats.external_files, 40);
    assert!(
        entries(&fx.path("work")).is_empty(),
        "work directory removed: {:?}",
        entries(&fx.path("work"))
    );

    let (sent, stats) = (report.traffic, &report.header.stats);
    assert!(
        sent.put >= stats.uploaded_objects + 2 && sent.uploaded_bytes >= stats.uploaded_bytes,
        "every upload, part and the header counted: {sent:?} for {stats:?}"
    );
    let restored = rockup::restore(&repo, &restore_options(fx, "latest"))
        .await
        .unwrap();
    let fetched = restored.traffic;
    let files = restored.db_files + restored.external_files;
    let tables = list_keys(&repo, "sst").await;
    let mut table_bytes = 0;
    for key in &tables {
        table_bytes += get_object(&repo, key.as_ref()).await.unwrap().len() as u64;
    }
    assert!(
        fetched.get > tables.len() as u64
            && fetched.get < files
            && fetched.downloaded_bytes > table_bytes,
        "table files one by one, small files from packs in a few requests: {fetched:?}"
    );
    assert_eq!(
        (fetched.put, fetched.delete),
        (0, 0),
        "a restore writes nothing"
    );
    assert_eq!(restored.sequence_number, report.header.sequence_number);
    assert_eq!(restored.references_checked, 40);
    let (source, copy) = (read_all(&fx.db), read_all(&fx.path("restored/db")));
    assert_eq!(
        source, copy,
        "restored database equals the source record by record"
    );
    assert!(
        copy["meta"].iter().any(|(k, _)| k == b"wal-only"),
        "WAL-only records are in the backup"
    );
    assert_eq!(copy["files"].len(), 40);
    assert_eq!(
        tree(&fx.files),
        tree(&fx.path("restored/files")),
        "external files byte-identical"
    );
    let meta = |p: &Path| std::fs::metadata(p).unwrap();
    let (a, b) = (
        meta(&fx.files.join("d1/f-1.bin")),
        meta(&fx.path("restored/files/d1/f-1.bin")),
    );
    assert_eq!(
        a.modified().unwrap(),
        b.modified().unwrap(),
        "mtime restored"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        a.permissions().mode(),
        b.permissions().mode(),
        "mode restored"
    );
}

#[tokio::test]
async fn round_trip_local_repository() {
    let fx = Fixture::new(40);
    let repo = fx.local_repo();
    round_trip(&fx, repo).await;
}

#[tokio::test]
async fn round_trip_in_memory_repository() {
    let fx = Fixture::new(40);
    round_trip(&fx, memory_repo()).await;
}

#[tokio::test]
async fn second_backup_uploads_no_unchanged_data() {
    let fx = Fixture::new(30);
    let repo = fx.local_repo();
    let first = rockup::backup(&repo, Source::Db(fx.db.clone()), &fx.options())
        .await
        .unwrap();
    let shared = |repo: &rockup::Repository| {
        let repo = repo.clone();
        async move {
            (
                list_keys(&repo, "sst").await.len(),
                list_keys(&repo, "blobs").await.len(),
                list_keys(&repo, "packs").await.len(),
            )
        }
    };
    let objects_before = shared(&repo).await;
    let second = rockup::backup(&repo, Source::Db(fx.db.clone()), &fx.options())
        .await
        .unwrap();
    let latest = rockup::manifest::load(&repo, "latest", None).await.unwrap();
    assert_eq!(
        latest.backup_id, second.header.backup_id,
        "latest is the newest, also within one second"
    );
    let db_entries: Vec<rockup::manifest::DbFileEntry> =
        second.header.entries(&repo).await.unwrap();
    let by_content: Vec<_> = db_entries.iter().filter(|e| e.object.is_none()).collect();
    assert!(by_content.iter().any(|e| e.name == "CURRENT"));
    assert!(
        second.header.stats.uploaded_objects <= 2,
        "at most one pack (and its index) for what changed of MANIFEST/CURRENT/OPTIONS/WAL"
    );
    let small_files: u64 = by_content.iter().map(|e| e.size).sum();
    assert!(second.header.stats.uploaded_bytes < small_files + 4096);
    let after_second = shared(&repo).await;
    assert_eq!(
        (after_second.0, after_second.1),
        (objects_before.0, objects_before.1),
        "no table file or blob added"
    );
    assert!(after_second.2 <= objects_before.2 + 1);
    assert!(first.header.stats.uploaded_bytes > second.header.stats.uploaded_bytes * 10);

    // One new external file: exactly one more pack, holding it.
    {
        let db = open_rw(&fx.db);
        add_file(&db, &fx.files, 1000, 5000);
    }
    let third = rockup::backup(&repo, Source::Db(fx.db.clone()), &fx.options())
        .await
        .unwrap();
    assert_eq!(third.header.stats.external_files, 31);
    let after_third = shared(&repo).await;
    let new_tables = (after_third.0 - after_second.0) as u64;
    assert_eq!(
        third.header.stats.uploaded_objects,
        new_tables + 2,
        "the tables the reopened database flushed, and one pack (and its index) for the rest"
    );
    assert_eq!(after_third.2, after_second.2 + 1);
}

fn add_record(db: &rocksdb::DB, key: &str, value: serde_json::Value) {
    db.put_cf(&db.cf_handle("files").unwrap(), key, value.to_string())
        .unwrap();
}

#[tokio::test]
async fn missing_and_invalid_references_are_reported_and_block_the_commit() {
    let fx = Fixture::new(5);
    std::fs::write(fx.path("secret"), b"outside").unwrap();
    std::os::unix::fs::symlink(fx.path("secret"), fx.files.join("escape")).unwrap();
    {
        let db = open_rw(&fx.db);
        add_record(
            &db,
            "file:missing",
            serde_json::json!({"path": "d0/gone.bin"}),
        );
        add_record(&db, "file:dotdot", serde_json::json!({"path": "../secret"}));
        add_record(
            &db,
            "file:absolute",
            serde_json::json!({"path": "/etc/passwd"}),
        );
        add_record(&db, "file:symlink", serde_json::json!({"path": "escape"}));
        add_record(&db, "file:dir", serde_json::json!({"path": "d0"}));
        add_record(&db, "file:number", serde_json::json!({"path": 7}));
        add_record(
            &db,
            "file:badhash",
            serde_json::json!({"path": "d1/f-1.bin", "sha256": "0".repeat(64)}),
        );
        add_record(&db, "file:nulls", serde_json::json!({"path": null}));
    }
    let repo = fx.local_repo();
    let err = rockup::backup(&repo, Source::Db(fx.db.clone()), &fx.options())
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 3);
    let Error::Problems { problems, .. } = &err else {
        panic!("{err}")
    };
    let mut found: Vec<(ProblemKind, String)> = problems
        .iter()
        .map(|p| (p.kind, p.record_key.clone().unwrap()))
        .collect();
    found.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        found,
        vec![
            (ProblemKind::Invalid, "file:absolute".into()),
            (ProblemKind::Mismatch, "file:badhash".into()),
            (ProblemKind::Invalid, "file:dir".into()),
            (ProblemKind::Invalid, "file:dotdot".into()),
            (ProblemKind::Missing, "file:missing".into()),
            (ProblemKind::Invalid, "file:number".into()),
            (ProblemKind::Invalid, "file:symlink".into()),
        ]
    );
    assert!(problems.iter().any(|p| p.path == "d0/gone.bin"));
    assert!(
        rockup::list(&repo).await.unwrap().is_empty(),
        "nothing committed"
    );

    let allow = with(fx.options(), |o| o.allow_missing_files = true);
    let report = rockup::backup(&repo, Source::Db(fx.db.clone()), &allow)
        .await
        .unwrap();
    assert_eq!(report.problems.len(), 7);
    assert_eq!(report.header.problem_count, 7);
    assert_eq!(rockup::list(&repo).await.unwrap().len(), 1);
    let restored = rockup::restore(&repo, &restore_options(&fx, "latest"))
        .await
        .unwrap();
    assert_eq!(restored.known_problems, 7);
    assert!(
        !fx.path("restored/files/escape").exists(),
        "a symlink is never restored"
    );
}

#[tokio::test]
async fn corruption_is_detected_by_deep_verify_and_by_restore() {
    corruption_is_detected(rockup::Format::V2).await;
}

#[tokio::test]
async fn corruption_of_a_format_1_blob_is_detected_by_deep_verify_and_by_restore() {
    corruption_is_detected(rockup::Format::V1).await;
}

async fn corruption_is_detected(format: rockup::Format) {
    let fx = Fixture::new(10);
    let repo = fx.local_repo();
    let options = with(fx.options(), |o| o.format = format);
    let report = rockup::backup(&repo, Source::Db(fx.db.clone()), &options)
        .await
        .unwrap();
    let external: Vec<rockup::manifest::ExternalEntry> =
        report.header.entries(&repo).await.unwrap();
    let victim = damage_content(&repo, &external[3].sha256).await;
    assert_eq!(
        victim.starts_with("packs/"),
        format == rockup::Format::V2,
        "{victim}"
    );

    let quick = verify(&repo, "latest", false).await;
    assert!(
        quick.problems.is_empty(),
        "same size: only --deep can see it"
    );
    let deep = verify(&repo, "all", true).await;
    assert_eq!(deep.problems.len(), 1, "{:?}", deep.problems);
    assert_eq!(deep.problems[0].path, victim);
    assert_eq!(deep.problems[0].kind, ProblemKind::CorruptObject);
    assert_eq!(deep.into_result().unwrap_err().exit_code(), 3);

    let err = rockup::restore(&repo, &restore_options(&fx, "latest"))
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 3, "{err}");
    assert!(err.to_string().contains("nothing was placed"), "{err}");
    assert!(
        entries(&fx.path("restored/db")).is_empty(),
        "no partial restore"
    );
    assert!(entries(&fx.path("restored/files")).is_empty());

    // A missing SST is found by the quick check (one LIST).
    let sst = list_keys(&repo, "sst").await.remove(0).to_string();
    std::fs::remove_file(fx.path("repo").join(&sst)).unwrap();
    let quick = verify(&repo, "latest", false).await;
    assert!(
        quick
            .problems
            .iter()
            .any(|p| p.path == sst && p.kind == ProblemKind::MissingObject),
        "{:?}",
        quick.problems
    );
}

#[tokio::test]
async fn restore_refuses_a_non_empty_target_and_needs_a_blob_root() {
    let fx = Fixture::new(3);
    let repo = memory_repo();
    rockup::backup(&repo, Source::Db(fx.db.clone()), &fx.options())
        .await
        .unwrap();
    std::fs::create_dir_all(fx.path("restored/db")).unwrap();
    std::fs::write(fx.path("restored/db/precious"), b"keep me").unwrap();
    let err = rockup::restore(&repo, &restore_options(&fx, "latest"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TargetNotEmpty { .. }), "{err}");
    assert_eq!(
        std::fs::read(fx.path("restored/db/precious")).unwrap(),
        b"keep me"
    );
    let no_root = restoring("latest", fx.path("other"), None);
    let err = rockup::restore(&repo, &no_root).await.unwrap_err();
    assert_eq!(err.exit_code(), 2, "{err}");
    assert!(err.to_string().contains("--blob-root"), "{err}");
}

#[tokio::test]
async fn work_directory_is_removed_after_a_failure() {
    let fx = Fixture::new(3);
    let mut options = fx.options();
    options.external.as_mut().unwrap().column_family = "no-such-cf".into();
    let err = rockup::backup(&memory_repo(), Source::Db(fx.db.clone()), &options)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no-such-cf"), "{err}");
    assert!(
        entries(&fx.path("work")).is_empty(),
        "{:?}",
        entries(&fx.path("work"))
    );
}

#[tokio::test]
async fn a_checkpoint_made_by_the_application_is_backed_up_untouched() {
    let fx = Fixture::new(8);
    let checkpoint = fx.path("app-checkpoint");
    {
        let db = open_rw(&fx.db);
        rocksdb::checkpoint::Checkpoint::new(&db)
            .unwrap()
            .create_checkpoint(&checkpoint)
            .unwrap();
    }
    let before = tree(&checkpoint);
    let repo = memory_repo();
    let source = Source::Checkpoint {
        path: checkpoint.clone(),
        options: None,
    };
    rockup::backup(&repo, source, &fx.options()).await.unwrap();
    assert_eq!(tree(&checkpoint), before, "checkpoint untouched");
    rockup::restore(&repo, &restore_options(&fx, "latest"))
        .await
        .unwrap();
    assert_eq!(read_all(&checkpoint), read_all(&fx.path("restored/db")));
}

#[tokio::test]
async fn a_database_with_a_custom_comparator_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = db_options();
    opts.set_comparator("rocksdict", Box::new(|a: &[u8], b: &[u8]| a.cmp(b)));
    drop(rocksdb::DB::open(&opts, dir.path()).unwrap());
    let err = rockup::backup(
        &memory_repo(),
        Source::Db(dir.path().to_path_buf()),
        &Default::default(),
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("\"rocksdict\"") && text.contains("library API"),
        "{text}"
    );
}

#[tokio::test]
async fn a_missing_database_is_named() {
    let err = rockup::backup(
        &memory_repo(),
        Source::Db("/nonexistent/db".into()),
        &Default::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::DatabaseNotFound { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/db"));
}

#[tokio::test]
async fn rocksdb_blob_files_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let db_dir = dir.path().join("db");
    {
        let mut opts = db_options();
        opts.set_enable_blob_files(true);
        opts.set_min_blob_size(64);
        let db = rocksdb::DB::open(&opts, &db_dir).unwrap();
        for i in 0..200u32 {
            db.put(i.to_be_bytes(), vec![i as u8; 1000 + i as usize])
                .unwrap();
        }
        db.flush().unwrap();
    }
    assert!(
        entries(&db_dir).iter().any(|n| n.ends_with(".blob")),
        "the fixture has blob files"
    );
    let repo = memory_repo();
    let report = rockup::backup(&repo, Source::Db(db_dir.clone()), &Default::default())
        .await
        .unwrap();
    let db_files: Vec<rockup::manifest::DbFileEntry> = report.header.entries(&repo).await.unwrap();
    let blob = db_files.iter().find(|e| e.name.ends_with(".blob")).unwrap();
    let object = blob.object.as_deref().unwrap();
    assert!(
        object.contains(&format!("_x{}_", blob.sha256)),
        "blob files are named by content: {object}"
    );
    let target = dir.path().join("restored");
    rockup::restore(&repo, &restoring("latest", &target, None))
        .await
        .unwrap();
    assert_eq!(read_all(&db_dir), read_all(&target));
}

/// A WAL whose last record is torn (a crash mid-append, or a writer caught
/// appending): the copy ends at the last complete record, so the restored
/// database opens even in the strictest recovery mode the application may use.
#[tokio::test]
async fn a_torn_wal_tail_is_cut_so_the_restore_opens_in_absolute_consistency_mode() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("db");
    let mut opts = db_options();
    opts.set_wal_recovery_mode(rocksdb::DBRecoveryMode::AbsoluteConsistency);
    {
        let db = rocksdb::DB::open(&opts, &db_path).unwrap();
        for i in 0..50u32 {
            db.put(format!("k{i:03}"), vec![i as u8; 3000]).unwrap();
        }
    }
    let wal = std::fs::read_dir(&db_path)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let size = std::fs::metadata(&wal).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&wal)
        .unwrap()
        .set_len(size - 1000)
        .unwrap();
    assert!(
        rocksdb::DB::open_for_read_only(&opts, &db_path, false).is_err(),
        "the source itself does not open in absolute-consistency mode"
    );

    let repo = memory_repo();
    let options = options_in(dir.path());
    let report = rockup::backup(&repo, Source::Db(db_path.clone()), &options)
        .await
        .unwrap();
    assert!(
        report.checkpoint.wal_cut_bytes > 0,
        "{:?}",
        report.checkpoint
    );
    let restored = dir.path().join("restored");
    rockup::restore(&repo, &restoring("latest", restored.clone(), None))
        .await
        .unwrap();
    let db = rocksdb::DB::open_for_read_only(&opts, &restored, false).unwrap();
    let keys: Vec<Vec<u8>> = db
        .iterator(rocksdb::IteratorMode::Start)
        .map(|r| r.unwrap().0.to_vec())
        .collect();
    let expected: Vec<Vec<u8>> = (0..49u32)
        .map(|i| format!("k{i:03}").into_bytes())
        .collect();
    assert_eq!(
        keys, expected,
        "every complete write, and nothing of the torn one"
    );
}

/// A compressed WAL cannot be read record by record: refused with the way out.
#[tokio::test]
async fn a_compressed_wal_is_refused_with_the_alternatives() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("db");
    let mut opts = db_options();
    opts.set_wal_compression_type(rocksdb::DBCompressionType::Zstd);
    {
        let db = rocksdb::DB::open(&opts, &db_path).unwrap();
        db.put(b"k", b"v").unwrap();
    }
    let options = options_in(dir.path());
    let err = rockup::backup(&memory_repo(), Source::Db(db_path), &options)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("compressed") && err.contains("--checkpoint"),
        "{err}"
    );
}

/// A database whose OPTIONS file puts the WAL elsewhere, open and written while
/// the backup runs: the unflushed writes in that WAL directory are in the backup.
#[tokio::test]
async fn a_separate_wal_dir_is_found_through_the_options_file() {
    let dir = tempfile::tempdir().unwrap();
    let (db_path, wal_dir) = (dir.path().join("db"), dir.path().join("wal"));
    let mut opts = db_options();
    opts.set_wal_dir(&wal_dir);
    let db = rocksdb::DB::open(&opts, &db_path).unwrap();
    db.put(b"flushed", b"1").unwrap();
    db.flush().unwrap();
    db.put(b"only-in-the-wal", b"2").unwrap();
    let options = options_in(dir.path());
    let repo = memory_repo();
    let report = rockup::backup(&repo, Source::Db(db_path.clone()), &options)
        .await
        .unwrap();
    assert!(report.checkpoint.wal_files >= 1, "{:?}", report.checkpoint);
    drop(db);
    let restored = dir.path().join("restored");
    rockup::restore(&repo, &restoring("latest", restored.clone(), None))
        .await
        .unwrap();
    let records = read_all(&restored);
    let keys: Vec<&[u8]> = records["default"]
        .iter()
        .map(|(k, _)| k.as_slice())
        .collect();
    assert_eq!(keys, [b"flushed".as_slice(), b"only-in-the-wal"]);
}

/// `--dry-run` resolves every reference and reads every file, reports what a
/// real run would upload and what it could not capture, and leaves the
/// repository exactly as it was — empty or not.
#[tokio::test]
async fn a_dry_run_reports_what_it_would_upload_and_writes_nothing() {
    let fx = Fixture::new(30);
    let repo = fx.local_repo();
    let dry = with(fx.options(), |o| o.dry_run = true);
    let first = rockup::backup(&repo, Source::Db(fx.db.clone()), &dry)
        .await
        .unwrap();
    assert_eq!(first.header.stats.external_files, 30);
    assert!(
        first.header.stats.uploaded_bytes > 0,
        "a first backup uploads"
    );
    assert!(tree(&fx.path("repo")).is_empty(), "nothing written");

    rockup::backup(&repo, Source::Db(fx.db.clone()), &fx.options())
        .await
        .unwrap();
    {
        let db = open_rw(&fx.db);
        add_file(&db, &fx.files, 100, 5000);
        add_record(
            &db,
            "file:missing",
            serde_json::json!({"path": "d0/gone.bin"}),
        );
    }
    let before = tree(&fx.path("repo"));
    let second = rockup::backup(&repo, Source::Db(fx.db.clone()), &dry)
        .await
        .unwrap();
    assert_eq!(
        tree(&fx.path("repo")),
        before,
        "the repository is unchanged"
    );
    assert_eq!(second.problems.len(), 1, "{:?}", second.problems);
    assert_eq!(second.problems[0].path, "d0/gone.bin");
    assert_eq!(second.header.stats.external_files, 31);
    let uploaded = second.header.stats.uploaded_bytes;
    assert!(
        uploaded < first.header.stats.uploaded_bytes,
        "{uploaded}: only what changed"
    );
    assert_eq!(
        rockup::list(&repo).await.unwrap().len(),
        1,
        "still one backup"
    );
}
