//! Partial restores: only the files a selection names (patterns, records),
//! with or without the database, merged into a blob root that holds other
//! files — never over one without `overwrite`, never through a symlink —
//! and the database alone.

use std::path::Path;

use rockup::{Error, FileMatch, FileSelection, PointInTime, Repository, RestoreOptions, Source};

use super::fixture::*;

async fn backup(fx: &Fixture, repo: &Repository) -> String {
    let report = rockup::backup(repo, Source::Db(fx.db.clone()), &fx.options())
        .await
        .unwrap();
    report.header.backup_id.to_string()
}

/// Files only, those `matching` names, into `root`.
fn files_only(backup: &str, root: &Path, matching: FileMatch) -> RestoreOptions {
    with(restoring(backup, "", Some(root.to_path_buf())), |o| {
        o.database = false;
        o.files = FileSelection::Matching(matching);
    })
}

fn including(patterns: &[&str]) -> FileMatch {
    with(FileMatch::default(), |m| {
        m.include = patterns.iter().map(|p| p.to_string()).collect()
    })
}

/// The source's files whose paths `keep` picks.
fn source_files(fx: &Fixture, keep: impl Fn(&str) -> bool) -> Vec<(String, Vec<u8>)> {
    tree(&fx.files)
        .into_iter()
        .filter(|(p, _)| keep(p))
        .collect()
}

/// Patterns pick files into a root holding others, which stay untouched;
/// an existing file refuses the whole restore (nothing placed) unless
/// `overwrite`; excluded files stay out; the database is not restored.
#[tokio::test]
async fn patterns_restore_only_matching_files_next_to_others() {
    let fx = Fixture::new(40);
    let repo = fx.local_repo();
    let id = backup(&fx, &repo).await;
    let root = fx.path("r/files");
    std::fs::create_dir_all(root.join("d1")).unwrap();
    std::fs::write(root.join("keep.txt"), b"the user's own").unwrap();
    std::fs::write(root.join("d1/f-1.bin"), b"changed since").unwrap();

    let report = rockup::restore(&repo, &files_only(&id, &root, including(&["d2/*"])))
        .await
        .unwrap();
    let wanted = source_files(&fx, |p| p.starts_with("d2/"));
    assert_eq!(report.external_files, wanted.len() as u64);
    assert_eq!(report.db_files, 0);
    let mut expected: Vec<(String, Vec<u8>)> = wanted;
    expected.push(("d1/f-1.bin".into(), b"changed since".to_vec()));
    expected.push(("keep.txt".into(), b"the user's own".to_vec()));
    expected.sort();
    assert_eq!(tree(&root).into_iter().collect::<Vec<_>>(), expected);
    assert!(!fx.path("r/db").exists(), "no database restored");

    // An existing file: refused before anything moves, and named.
    let before = tree(&root);
    let clash = files_only(&id, &root, including(&["f-1.bin", "f-3.bin"]));
    let err = rockup::restore(&repo, &clash).await.unwrap_err();
    assert!(
        matches!(&err, Error::TargetExists { path } if path.ends_with("d1/f-1.bin")),
        "{err}"
    );
    assert!(err.to_string().contains("--overwrite"), "{err}");
    assert_eq!(tree(&root), before, "nothing placed, no staging left");
    let replaced = with(clash, |o| o.overwrite = true);
    rockup::restore(&repo, &replaced).await.unwrap();
    let source = tree(&fx.files);
    let restored = tree(&root);
    for path in ["d1/f-1.bin", "d3/f-3.bin"] {
        assert_eq!(restored[path], source[path], "{path}");
    }
    assert_eq!(restored["keep.txt"], b"the user's own");

    // Everything but one directory, into a new root.
    let other = fx.path("r/other");
    let all_but = with(FileMatch::default(), |m| m.exclude = vec!["d0/*".into()]);
    rockup::restore(&repo, &files_only(&id, &other, all_but))
        .await
        .unwrap();
    let expected: Vec<_> = source_files(&fx, |p| !p.starts_with("d0/"));
    assert_eq!(tree(&other).into_iter().collect::<Vec<_>>(), expected);

    // A selection that names nothing is an error, not an empty success.
    let none = files_only(&id, &fx.path("r/none"), including(&["*.jpg"]));
    let err = rockup::restore(&repo, &none).await.unwrap_err();
    assert!(err.to_string().contains("matches the selection"), "{err}");
}

/// `--record KEY`: exactly the files that record referenced in the backup,
/// with the database or without it; an unknown key is an error.
#[tokio::test]
async fn a_record_key_restores_the_files_it_references() {
    let fx = Fixture::new(20);
    let repo = fx.local_repo();
    let id = backup(&fx, &repo).await;
    let record = |key: &str| with(FileMatch::default(), |m| m.records = vec![key.into()]);

    let root = fx.path("r/files");
    let report = rockup::restore(&repo, &files_only(&id, &root, record("file:000007")))
        .await
        .unwrap();
    assert_eq!(report.external_files, 1);
    let expected = source_files(&fx, |p| p == "d2/f-7.bin");
    assert_eq!(tree(&root).into_iter().collect::<Vec<_>>(), expected);

    // With the database: every record, and that one record's file.
    let both = with(
        restoring(&id, fx.path("s/db"), Some(fx.path("s/files"))),
        |o| o.files = FileSelection::Matching(record("file:000012")),
    );
    rockup::restore(&repo, &both).await.unwrap();
    assert_eq!(read_all(&fx.path("s/db")), read_all(&fx.db));
    let expected = source_files(&fx, |p| p == "d2/f-12.bin");
    assert_eq!(
        tree(&fx.path("s/files")).into_iter().collect::<Vec<_>>(),
        expected
    );

    let unknown = files_only(&id, &fx.path("t/files"), record("file:999999"));
    let err = rockup::restore(&repo, &unknown).await.unwrap_err();
    assert!(
        err.to_string().contains("no record at key file:999999"),
        "{err}"
    );
    assert!(!fx.path("t/files").join("d2").exists());
}

/// `--db-only`: the database, record for record, and no file.
#[tokio::test]
async fn the_database_alone_is_restored_without_a_blob_root() {
    let fx = Fixture::new(20);
    let repo = fx.local_repo();
    let id = backup(&fx, &repo).await;
    let options = with(restoring(&id, fx.path("r/db"), None), |o| {
        o.files = FileSelection::None
    });
    let report = rockup::restore(&repo, &options).await.unwrap();
    assert_eq!(report.external_files, 0);
    assert!(report.db_files > 0);
    assert_eq!(read_all(&fx.path("r/db")), read_all(&fx.db));

    // A partial restore is of a backup, not of a point in time.
    let to_point = with(options, |o| o.to = Some(PointInTime::Latest));
    let err = rockup::restore(&repo, &to_point).await.unwrap_err();
    assert!(err.to_string().contains("apply to backups"), "{err}");
}

/// A directory of the blob root that is a symlink is never written through.
#[tokio::test]
async fn a_partial_restore_never_writes_through_a_symlink() {
    let fx = Fixture::new(20);
    let repo = fx.local_repo();
    let id = backup(&fx, &repo).await;
    let (root, outside) = (fx.path("r/files"), fx.path("outside"));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("d3")).unwrap();
    let err = rockup::restore(&repo, &files_only(&id, &root, including(&["d3/*"])))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("symlink"), "{err}");
    assert!(
        tree(&outside).is_empty(),
        "nothing written outside the root"
    );
    let left: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["d3"], "no staging left behind");
}

/// One file out of many reads a bounded share of the repository: no
/// database file, no whole pack.
#[tokio::test]
async fn one_file_reads_a_bounded_number_of_bytes() {
    let fx = Fixture::new(600);
    let repo = fx.local_repo();
    let id = backup(&fx, &repo).await;
    let total: usize = tree(&fx.files).values().map(Vec::len).sum();
    let one = files_only(&id, &fx.path("r/files"), including(&["d4/f-444.bin"]));
    let report = rockup::restore(&repo, &one).await.unwrap();
    assert_eq!(report.external_files, 1);
    let read = report.traffic.downloaded_bytes as usize;
    eprintln!("one file of {} ({total} bytes): {:?}", 600, report.traffic);
    assert!(
        read * 10 < total,
        "{read} bytes read for one file of {total}"
    );
}

/// From the command line: `--no-db --include` into a non-empty root, and
/// `--record`.
#[test]
fn the_cli_restores_part_of_a_backup() {
    let fx = Fixture::new(20);
    let repo = fx.path("repo");
    let backed = rockup_command()
        .args(["backup", "--repo", repo.to_str().unwrap(), "--db"])
        .arg(&fx.db)
        .args(blob_args(&fx.files))
        .status()
        .unwrap();
    assert!(backed.success());
    let root = fx.path("r/files");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("keep.txt"), b"mine").unwrap();
    let restore = |extra: &[&str]| {
        rockup_command()
            .args(["restore", "--repo", repo.to_str().unwrap(), "--blob-root"])
            .arg(&root)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = restore(&["--no-db", "--include", "d1/*"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut expected = source_files(&fx, |p| p.starts_with("d1/"));
    expected.push(("keep.txt".into(), b"mine".to_vec()));
    assert_eq!(tree(&root).into_iter().collect::<Vec<_>>(), expected);
    let again = restore(&["--no-db", "--record", "file:000006"]);
    assert!(!again.status.success(), "d1/f-6.bin exists");
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("--overwrite"), "{stderr}");
    let forced = restore(&["--no-db", "--record", "file:000006", "--overwrite"]);
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
}
