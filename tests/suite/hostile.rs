//! Manifests crafted to escape the restore target or to lie: every one is
//! rejected before anything is written, and nothing lands outside the target.

use serde_json::Value;

use rockup::manifest::{self, PartKind};
use rockup::{Repository, Source};

use super::fixture::*;

/// Copies the original backup under a new id, letting `edit` change one part's
/// lines (re-hashed, so only the content checks can catch it) and the header.
async fn forge(
    repo: &Repository,
    original: &str,
    kind: PartKind,
    edit_line: impl Fn(&mut Value),
    edit_header: impl Fn(&mut Value),
) -> String {
    let header = manifest::load(repo, original, None).await.unwrap();
    let new_id = backup_id_at(chrono::Utc::now() + chrono::Duration::seconds(5));
    let mut doc = serde_json::to_value(&header).unwrap();
    doc["backup_id"] = Value::from(new_id.clone());
    for part in doc["parts"].as_array_mut().unwrap() {
        let sha = part["sha256"].as_str().unwrap().to_string();
        let bytes = part_ndjson(
            &get_object(repo, &part_key(&header.backup_id, &sha))
                .await
                .unwrap(),
        );
        let is_kind = serde_json::to_value(kind).unwrap() == part["kind"];
        let mut lines: Vec<Value> = bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        if is_kind {
            edit_line(&mut lines[0]);
        }
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        // per-backup DB files move with the id
        let text = text.replace(
            &format!("backups/{}/", header.backup_id),
            &format!("backups/{new_id}/"),
        );
        let new_sha = sha256_hex(text.as_bytes());
        // Stored as plain NDJSON (no `size`): readers take that too.
        part["bytes"] = Value::from(text.len());
        part["size"] = Value::Null;
        put_object(repo, &part_key(&new_id, &new_sha), text).await;
        part["sha256"] = Value::from(new_sha);
    }
    copy_backup_files(repo, &header.backup_id, &new_id).await;
    edit_header(&mut doc);
    put_object(
        repo,
        &manifest_key(&new_id),
        serde_json::to_vec(&doc).unwrap(),
    )
    .await;
    new_id
}

async fn backed_up() -> (Fixture, Repository, String) {
    let fx = Fixture::new(4);
    let repo = memory_repo();
    let report = rockup::backup(&repo, Source::Db(fx.db.clone()), &fx.options())
        .await
        .unwrap();
    (fx, repo, report.header.backup_id.to_string())
}

async fn restore_fails(fx: &Fixture, repo: &Repository, id: &str, expect: &str) {
    let target = fx.path("target");
    let options = restoring(id, target.join("db"), Some(target.join("files")));
    let err = rockup::restore(repo, &options).await.unwrap_err();
    assert!(
        err.to_string().contains(expect),
        "expected {expect:?} in: {err}"
    );
    assert!(
        tree(&target).is_empty(),
        "nothing written: {:?}",
        tree(&target).keys().collect::<Vec<_>>()
    );
    assert!(!fx.path("evil").exists() && !std::path::Path::new("/tmp/rockup-evil").exists());
}

#[tokio::test]
async fn external_paths_that_escape_are_rejected() {
    let (fx, repo, original) = backed_up().await;
    for path in ["../../evil", "/tmp/rockup-evil", "d0/../../evil", "./d0/x"] {
        let id = forge(
            &repo,
            &original,
            PartKind::External,
            |l| l["path"] = Value::from(path),
            |_| {},
        )
        .await;
        restore_fails(&fx, &repo, &id, "rejected entry").await;
    }
}

#[tokio::test]
async fn database_names_must_be_rocksdb_files() {
    let (fx, repo, original) = backed_up().await;
    for name in ["../CURRENT", "LOG", "/etc/passwd", "sub/000001.sst"] {
        let id = forge(
            &repo,
            &original,
            PartKind::Db,
            |l| l["name"] = Value::from(name),
            |_| {},
        )
        .await;
        restore_fails(&fx, &repo, &id, "not a RocksDB file name").await;
    }
    let id = forge(
        &repo,
        &original,
        PartKind::Db,
        |l| l["object"] = Value::from("sst/../rockup.json"),
        |_| {},
    )
    .await;
    restore_fails(&fx, &repo, &id, "outside its place").await;
}

#[tokio::test]
async fn unknown_versions_tampered_parts_and_garbage_are_rejected() {
    let (fx, repo, original) = backed_up().await;
    let id = forge(
        &repo,
        &original,
        PartKind::Db,
        |_| {},
        |h| h["version"] = Value::from(3),
    )
    .await;
    restore_fails(
        &fx,
        &repo,
        &id,
        "manifest version 3 was written by a newer rockup",
    )
    .await;

    let id = forge(
        &repo,
        &original,
        PartKind::Db,
        |_| {},
        |h| {
            let part = &mut h["parts"][0]["sha256"];
            let sha = part.as_str().unwrap().to_string();
            *part = Value::from(format!(
                "{}{}",
                if sha.starts_with('0') { "1" } else { "0" },
                &sha[1..]
            ));
        },
    )
    .await;
    restore_fails(&fx, &repo, &id, "not found").await;

    let id = backup_id_at(chrono::Utc::now() + chrono::Duration::seconds(60));
    put_object(
        &repo,
        &manifest_key(&id),
        &b"{\"format\": \"rockup-manifest\", \"vers"[..],
    )
    .await;
    restore_fails(&fx, &repo, &id, "not a rockup manifest").await;
    let listed = rockup::list(&repo).await.unwrap();
    assert!(
        listed
            .iter()
            .any(|b| b.backup_id.as_str() == id && b.error.is_some()),
        "list shows the broken one"
    );
    let report = verify(&repo, "all", false).await;
    assert!(
        report.problems.iter().any(|p| p.path.contains(&id)),
        "{:?}",
        report.problems
    );
}

#[tokio::test]
async fn a_part_whose_bytes_do_not_match_its_name_is_rejected() {
    let (fx, repo, original) = backed_up().await;
    let header = manifest::load(&repo, &original, None).await.unwrap();
    let part = header
        .parts
        .iter()
        .find(|p| p.kind == PartKind::External)
        .unwrap();
    let key = part_key(&header.backup_id, part.sha256);
    let mut bytes = get_object(&repo, &key).await.unwrap().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    put_object(&repo, &key, bytes).await;
    restore_fails(
        &fx,
        &repo,
        header.backup_id.as_str(),
        "does not match its hash",
    )
    .await;
}

/// After the newest backup was damaged: a new backup still commits (and
/// restores), and verify names the damaged one.
async fn damage_is_survived(fx: &Fixture, repo: &Repository, damaged: &str) {
    let report = rockup::backup(repo, Source::Db(fx.db.clone()), &fx.options())
        .await
        .unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let verified = verify(repo, "all", false).await;
    assert!(
        verified.problems.iter().any(|p| p.path.contains(damaged)),
        "{:?}",
        verified.problems
    );
    let target = fx.path(&format!("after-{}", report.header.backup_id));
    let options = restoring(
        &report.header.backup_id,
        target.join("db"),
        Some(target.join("files")),
    );
    rockup::restore(repo, &options).await.unwrap();
    assert_eq!(read_all(&fx.db), read_all(&target.join("db")));
    assert_eq!(tree(&fx.files), tree(&target.join("files")));
}

#[tokio::test]
async fn forged_entry_counts_are_rejected_without_allocating() {
    let (fx, repo, original) = backed_up().await;
    for entries in [1_000_000_000_000_000u64, u64::MAX] {
        let id = forge(
            &repo,
            &original,
            PartKind::Db,
            |_| {},
            |h| h["parts"][0]["entries"] = Value::from(entries),
        )
        .await;
        restore_fails(&fx, &repo, &id, "claims").await;
        damage_is_survived(&fx, &repo, &id).await;
    }
}

#[tokio::test]
async fn a_missing_or_oversized_part_does_not_stop_later_backups() {
    let (fx, repo, original) = backed_up().await;
    let header = manifest::load(&repo, &original, None).await.unwrap();
    let part = &header.parts[0];
    let key = part_key(&original, part.sha256);
    let bytes = get_object(&repo, &key).await.unwrap();

    remove_object(&repo, &key).await;
    restore_fails(&fx, &repo, &original, "not found").await;
    damage_is_survived(&fx, &repo, &original).await;

    // The same name, 64 MiB more than the header records: read no further.
    let mut oversized = bytes.to_vec();
    oversized.resize(bytes.len() + (64 << 20), b'\n');
    put_object(&repo, &key, oversized).await;
    restore_fails(&fx, &repo, &original, "larger than").await;
    damage_is_survived(&fx, &repo, &original).await;
}

/// Forged entry fields, one at a time: every one is either rejected before
/// anything is written, or caught by its hash or size with nothing placed, or
/// (times, modes) restored harmlessly — never a panic, never a write outside
/// the targets.
#[tokio::test]
async fn forged_entry_fields_are_rejected_or_harmless() {
    let (fx, repo, original) = backed_up().await;
    let other_sha = {
        let header = manifest::load(&repo, &original, None).await.unwrap();
        let external: Vec<rockup::manifest::ExternalEntry> = header.entries(&repo).await.unwrap();
        external[1].sha256
    };
    type Edit = Box<dyn Fn(&mut Value)>;
    const CORRUPT: &str = "corrupt or missing object(s); nothing was placed";
    let cases: Vec<(&str, Edit, Option<&str>)> = vec![
        (
            "size + 1",
            Box::new(|l| l["size"] = Value::from(l["size"].as_u64().unwrap() + 1)),
            Some(CORRUPT),
        ),
        (
            "size 0",
            Box::new(|l| l["size"] = Value::from(0)),
            Some(CORRUPT),
        ),
        (
            "size 2^64-1",
            Box::new(|l| l["size"] = Value::from(u64::MAX)),
            Some(CORRUPT),
        ),
        (
            "sha256 not hex",
            Box::new(|l| l["sha256"] = Value::from("z".repeat(64))),
            Some("not a SHA-256"),
        ),
        (
            "sha256 short",
            Box::new(|l| l["sha256"] = Value::from("ab")),
            Some("not a SHA-256"),
        ),
        (
            "sha256 of another file",
            Box::new(move |l| l["sha256"] = Value::from(other_sha.to_string())),
            Some(CORRUPT),
        ),
        (
            "size a string",
            Box::new(|l| l["size"] = Value::from("10")),
            Some("unreadable entry"),
        ),
        (
            "mtime minimal",
            Box::new(|l| l["mtime_ns"] = Value::from(i64::MIN)),
            None,
        ),
        (
            "mtime maximal",
            Box::new(|l| l["mtime_ns"] = Value::from(i64::MAX)),
            None,
        ),
        (
            "mode 2^32-1",
            Box::new(|l| l["mode"] = Value::from(u32::MAX)),
            None,
        ),
    ];
    for (case, edit, expect) in cases {
        let id = forge(&repo, &original, PartKind::External, edit, |_| {}).await;
        let target = fx.path(case);
        let options = restoring(&id, target.join("db"), Some(target.join("files")));
        let result = rockup::restore(&repo, &options).await;
        match (expect, result) {
            (Some(expect), Err(err)) => {
                let all = format!("{err} {:?}", err);
                assert!(all.contains(expect), "{case}: expected {expect:?} in {all}");
                assert!(tree(&target).is_empty(), "{case}: nothing placed");
            }
            (None, Ok(_)) => {
                let files = tree(&target.join("files"));
                assert_eq!(files, tree(&fx.files), "{case}: content restored as it was");
            }
            (expect, result) => panic!("{case}: expected {expect:?}, got {result:?}"),
        }
        assert!(!fx.path("evil").exists());
    }
}

/// Pack indexes forged with offsets, lengths, sizes and counts no rockup
/// writes fail closed: restore places nothing, and verify names the damage.
#[tokio::test]
async fn forged_pack_indexes_fail_closed() {
    let (fx, repo, id) = backed_up().await;
    let keys = list_keys(&repo, "index").await;
    assert_eq!(keys.len(), 1, "the fixture's small files fit one pack");
    let key = keys[0].to_string();
    let original = get_object(&repo, &key).await.unwrap();
    let good: Value = serde_json::from_slice(&original).unwrap();
    let pack_size = good["pack_size"].as_u64().unwrap();
    assert!(good["entries"].as_array().unwrap().len() > 2);
    type Edit = Box<dyn Fn(&mut Value)>;
    let entry = |field: &'static str, value: Value| -> Edit {
        Box::new(move |index| index["entries"][1][field] = value.clone())
    };
    let cases: Vec<(&str, Edit)> = vec![
        (
            "offset past the pack",
            entry("offset", Value::from(pack_size)),
        ),
        (
            "length past the pack",
            entry("length", Value::from(pack_size)),
        ),
        (
            "offset + length overflows",
            entry("offset", Value::from(u64::MAX - 1)),
        ),
        (
            "decoded size over the limit",
            entry("size", Value::from(1u64 << 40)),
        ),
        ("decoded size understated", entry("size", Value::from(1))),
        ("length shortened", entry("length", Value::from(5))),
        (
            "entries overlap",
            Box::new(|index| index["entries"][1]["offset"] = index["entries"][0]["offset"].clone()),
        ),
        (
            "another entry's hash",
            Box::new(|index| index["entries"][2]["sha256"] = index["entries"][1]["sha256"].clone()),
        ),
        (
            "no entries",
            Box::new(|index| index["entries"] = Value::Array(vec![])),
        ),
        (
            "more entries than an index may list",
            Box::new(|index| {
                let one = index["entries"][0].clone();
                index["entries"] = Value::Array(vec![one; 50_001]);
            }),
        ),
        (
            "pack size overstated",
            Box::new(move |index| index["pack_size"] = Value::from(pack_size + 1)),
        ),
        (
            "pack size 2^64-1",
            Box::new(|index| index["pack_size"] = Value::from(u64::MAX)),
        ),
        (
            "newer version",
            Box::new(|index| index["version"] = Value::from(2)),
        ),
        (
            "another pack's index",
            Box::new(|index| index["pack"] = Value::from("0".repeat(32))),
        ),
    ];
    for (case, edit) in cases {
        let mut forged = good.clone();
        edit(&mut forged);
        put_object(&repo, &key, serde_json::to_vec(&forged).unwrap()).await;
        let target = fx.path(case);
        let options = restoring(&id, target.join("db"), Some(target.join("files")));
        let err = rockup::restore(&repo, &options).await.unwrap_err();
        assert_eq!(err.exit_code(), 3, "{case}: {err}");
        assert!(tree(&target).is_empty(), "{case}: nothing placed");
        let report = verify(&repo, "all", true).await;
        let named = |p: &rockup::Problem| p.path == key || p.path.starts_with("packs/");
        assert!(
            report.problems.iter().any(named),
            "{case}: {:?}",
            report.problems
        );
    }
    put_object(&repo, &key, original).await;
    assert!(verify(&repo, "all", true).await.problems.is_empty());
}
