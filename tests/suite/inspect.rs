//! Looking inside backups: `ls`, `find` and `diff` compared with the source's
//! actual files, `dump` byte-identical and verified, from the library and
//! from the command line.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use rockup::manifest::ExternalEntry;
use rockup::{
    ChangeKind, DiffOptions, DumpOptions, Error, FindOptions, Item, LsOptions, Repository, Source,
};

use super::fixture::*;

async fn backup(fx: &Fixture, repo: &Repository) -> String {
    let report = rockup::backup(repo, Source::Db(fx.db.clone()), &fx.options())
        .await
        .unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    report.header.backup_id.to_string()
}

async fn ls(repo: &Repository, backup: &str, prefix: Option<&str>) -> Vec<Item> {
    let options = with(LsOptions::default(), |o| {
        o.backup = backup.into();
        o.prefix = prefix.map(Into::into);
    });
    let mut items = Vec::new();
    rockup::ls(repo, &options, |item| {
        items.push(item);
        Ok(())
    })
    .await
    .unwrap();
    items
}

fn external(items: &[Item]) -> BTreeMap<String, ExternalEntry> {
    items
        .iter()
        .filter_map(|item| match item {
            Item::External(e) => Some((e.path.clone(), e.clone())),
            _ => None,
        })
        .collect()
}

fn dumping(backup: &str, path: &str, target: std::path::PathBuf) -> DumpOptions {
    with(DumpOptions::default(), |o| {
        o.backup = backup.into();
        o.path = path.into();
        o.target = target;
    })
}

/// `ls` lists exactly the source's files (sizes, hashes) and the restored
/// database's files; a prefix keeps one directory.
#[tokio::test]
async fn ls_lists_what_the_backup_holds() {
    let fx = Fixture::new(40);
    let repo = fx.local_repo();
    let id = backup(&fx, &repo).await;
    let items = ls(&repo, &id, None).await;
    let files = external(&items);
    let source = tree(&fx.files);
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        source.keys().collect::<Vec<_>>()
    );
    for (path, bytes) in &source {
        assert_eq!(files[path].size, bytes.len() as u64, "{path}");
        assert_eq!(files[path].sha256.to_string(), sha256_hex(bytes), "{path}");
    }
    rockup::restore(
        &repo,
        &restoring(&id, fx.path("r/db"), Some(fx.path("r/files"))),
    )
    .await
    .unwrap();
    let restored_db: Vec<String> = tree(&fx.path("r/db")).into_keys().collect();
    let listed_db: Vec<String> = items
        .iter()
        .filter_map(|item| match item {
            Item::Db(db) => Some(db.name.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(listed_db, restored_db);

    let within = ls(&repo, "latest", Some("d1/")).await;
    let expected: Vec<&String> = source.keys().filter(|p| p.starts_with("d1/")).collect();
    assert!(!expected.is_empty());
    assert_eq!(external(&within).keys().collect::<Vec<_>>(), expected);
    assert_eq!(
        within.len(),
        expected.len(),
        "no database files under a prefix"
    );
}

/// `dump` writes one file byte-identical with its mode and mtime, reading
/// neither the database nor whole packs; it never replaces a file unless
/// asked, names a path the backup lacks, and refuses damaged content
/// without writing anything.
#[tokio::test]
async fn dump_takes_back_one_file_verified() {
    let fx = Fixture::new(40);
    let repo = fx.local_repo();
    let id = backup(&fx, &repo).await;
    let path = "d3/f-8.bin";
    let original = std::fs::read(fx.files.join(path)).unwrap();
    let target = fx.path("taken");
    let report = rockup::dump(&repo, &dumping(&id, path, target.clone()))
        .await
        .unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), original);
    let source_meta = std::fs::metadata(fx.files.join(path)).unwrap();
    let meta = std::fs::metadata(&target).unwrap();
    assert_eq!(meta.modified().unwrap(), source_meta.modified().unwrap());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        meta.permissions().mode() & 0o777,
        source_meta.permissions().mode() & 0o777
    );
    let external_bytes: u64 = tree(&fx.files).values().map(|b| b.len() as u64).sum();
    let t = report.traffic;
    assert!(
        t.put == 0 && t.downloaded_bytes < external_bytes / 4,
        "one entry and the indexes, not the packs: {t:?} of {external_bytes} bytes"
    );

    std::fs::write(&target, b"mine").unwrap();
    let refused = rockup::dump(&repo, &dumping(&id, path, target.clone()))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("--overwrite"), "{refused}");
    assert_eq!(std::fs::read(&target).unwrap(), b"mine");
    let replace = with(dumping(&id, path, target.clone()), |o| o.overwrite = true);
    rockup::dump(&repo, &replace).await.unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), original);

    let absent = rockup::dump(&repo, &dumping(&id, "d3/none", fx.path("none")))
        .await
        .unwrap_err();
    assert!(matches!(absent, Error::FileNotInBackup { .. }), "{absent}");
    let escape = rockup::dump(&repo, &dumping(&id, "../etc/passwd", fx.path("x")))
        .await
        .unwrap_err();
    assert!(matches!(escape, Error::Usage(_)), "{escape}");

    damage_content(&repo, sha256_hex(&original)).await;
    let damaged = rockup::dump(&repo, &dumping(&id, path, fx.path("damaged")))
        .await
        .unwrap_err();
    assert!(matches!(damaged, Error::Problems { .. }), "{damaged}");
    assert!(!fx.path("damaged").exists(), "nothing written");
    let left: Vec<String> = entries(fx.dir.path())
        .into_iter()
        .filter(|n| n.starts_with(".rockup-dump"))
        .collect();
    assert!(left.is_empty(), "staging removed: {left:?}");
}

/// Between two backups, `diff` names each file added, removed, rewritten
/// and touched, and `find` finds a path in the backups that hold it.
#[tokio::test]
async fn diff_and_find_follow_the_changes() {
    let fx = Fixture::new(20);
    let repo = fx.local_repo();
    let first = backup(&fx, &repo).await;
    {
        let db = open_rw(&fx.db);
        add_file(&db, &fx.files, 100, 500);
        add_file(&db, &fx.files, 7, 321); // d2/f-7.bin rewritten
        let cf = db.cf_handle("files").unwrap();
        db.delete_cf(&cf, "file:000003").unwrap();
        std::fs::remove_file(fx.files.join("d3/f-3.bin")).unwrap();
    }
    let touched = std::fs::File::options()
        .write(true)
        .open(fx.files.join("d4/f-4.bin"))
        .unwrap();
    touched
        .set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    let second = backup(&fx, &repo).await;

    let mut changes = BTreeMap::new();
    let options = with(DiffOptions::default(), |o| {
        o.from = first.clone();
        o.to = second.clone();
    });
    let report = rockup::diff(&repo, &options, |change| {
        if let Item::External(e) = &change.item {
            changes.insert(e.path.clone(), change.change);
        }
        Ok(())
    })
    .await
    .unwrap();
    let expected = BTreeMap::from([
        ("d0/f-100.bin".to_string(), ChangeKind::Added),
        ("d2/f-7.bin".to_string(), ChangeKind::Modified),
        ("d3/f-3.bin".to_string(), ChangeKind::Removed),
        ("d4/f-4.bin".to_string(), ChangeKind::Metadata),
    ]);
    assert_eq!(changes, expected);
    let e = &report.external;
    assert_eq!(
        (
            e.added.files,
            e.added.bytes,
            e.removed.files,
            e.modified.bytes
        ),
        (1, 500, 1, 321)
    );
    assert_eq!(e.unchanged.files, 17);
    assert!(
        report.db.added.files > 0,
        "new table files: {:?}",
        report.db
    );

    let find = |pattern: &str| {
        let options = with(FindOptions::default(), |o| o.pattern = pattern.into());
        let repo = repo.clone();
        async move {
            let mut found = Vec::new();
            rockup::find(&repo, &options, |f| {
                found.push((f.backup_id.to_string(), f.entry.path));
                Ok(())
            })
            .await
            .unwrap();
            found
        }
    };
    let both = vec![
        (second.clone(), "d2/f-7.bin".to_string()),
        (first.clone(), "d2/f-7.bin".to_string()),
    ];
    assert_eq!(find("f-7.bin").await, both, "newest first");
    assert_eq!(
        find("f-3.bin").await,
        vec![(first.clone(), "d3/f-3.bin".to_string())]
    );
    assert_eq!(
        find("d0/*.bin").await.len(),
        4 + 5,
        "d0 held 4, then 5 files"
    );
    assert!(
        find("f-7").await.is_empty(),
        "a name pattern matches whole names"
    );
}

/// The commands: `ls` and `find` on stdout (so `| grep` works), NDJSON with
/// --json; `dump` to stdout byte-identical; `diff` lines as restic's.
#[test]
fn inspect_commands_write_their_output_to_stdout() {
    let fx = Fixture::new(10);
    let repo = fx.path("repo");
    let repo = repo.to_str().unwrap();
    let run = |args: &[&str]| {
        let out = rockup_command().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{args:?}: {stderr}");
        out.stdout
    };
    run(&["init", "--repo", repo, "--no-encryption"]);
    let mut backup = vec!["backup", "--repo", repo, "--db", fx.db.to_str().unwrap()];
    let blob = blob_args(&fx.files);
    backup.extend(blob.iter().map(String::as_str));
    run(&backup);

    let listed = String::from_utf8(run(&["ls", "--repo", repo, "latest"])).unwrap();
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("file") && l.ends_with(" d1/f-1.bin")),
        "{listed}"
    );
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("db") && l.ends_with("CURRENT")),
        "{listed}"
    );
    let ndjson = run(&["ls", "--json", "--repo", repo, "latest", "d2"]);
    let lines: Vec<serde_json::Value> = ndjson
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    let paths: Vec<&str> = lines.iter().filter_map(|l| l["path"].as_str()).collect();
    assert_eq!(paths, ["d2/f-2.bin", "d2/f-7.bin"]);
    assert!(lines.last().unwrap()["summary"]["external_files"] == 10);

    let dumped = run(&["dump", "--repo", repo, "latest", "d2/f-7.bin"]);
    assert_eq!(dumped, std::fs::read(fx.files.join("d2/f-7.bin")).unwrap());
    let found = String::from_utf8(run(&["find", "--repo", repo, "f-7.bin"])).unwrap();
    assert_eq!(found.lines().count(), 1, "{found}");
    assert!(found.trim_end().ends_with("d2/f-7.bin"), "{found}");
    let same = String::from_utf8(run(&["diff", "--repo", repo, "latest", "latest"])).unwrap();
    assert!(same.contains("external files: 0 added"), "{same}");
    assert!(same.contains("10 unchanged"), "{same}");

    let missing = rockup_command()
        .args(["dump", "--repo", repo, "latest", "d2/none"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(missing.stdout.is_empty());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("rockup ls"));
}
