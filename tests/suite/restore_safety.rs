//! A restore can never escalate: no setuid, setgid or sticky bit comes back (from
//! an honest backup or a forged one), modes are the recorded ones and no wider,
//! an object larger than its entry is never written past its size, and nothing
//! is placed when anything fails.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rockup::Source;

use super::fixture::*;

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

async fn restore_into(
    repo: &rockup::Repository,
    fx: &Fixture,
    id: &str,
    name: &str,
) -> rockup::Result<()> {
    let target = fx.path(name);
    let options = restoring(id, target.join("db"), Some(target.join("files")));
    rockup::restore(repo, &options).await.map(drop)
}

#[tokio::test]
async fn modes_come_back_as_recorded_without_special_bits() {
    let fx = Fixture::new(6);
    set_mode(&fx.files.join("d1/f-1.bin"), 0o4755); // an application's setuid file
    set_mode(&fx.files.join("d2/f-2.bin"), 0o600);
    set_mode(&fx.files.join("d3/f-3.bin"), 0o1777);
    set_mode(&fx.db, 0o700);
    for entry in std::fs::read_dir(&fx.db).unwrap() {
        set_mode(&entry.unwrap().path(), 0o600);
    }
    let repo = fx.local_repo();
    let report = rockup::backup(&repo, Source::Db(fx.db.clone()), &fx.options())
        .await
        .unwrap();
    restore_into(&repo, &fx, report.header.backup_id.as_str(), "restored")
        .await
        .unwrap();
    let restored = fx.path("restored");
    assert_eq!(
        mode(&restored.join("files/d1/f-1.bin")),
        0o755,
        "setuid dropped"
    );
    assert_eq!(mode(&restored.join("files/d2/f-2.bin")), 0o600);
    assert_eq!(
        mode(&restored.join("files/d3/f-3.bin")),
        0o777,
        "sticky dropped"
    );
    assert_eq!(
        mode(&restored.join("files/d0/f-0.bin")),
        mode(&fx.files.join("d0/f-0.bin"))
    );
    assert_eq!(mode(&restored.join("db")), 0o700, "database directory mode");
    for entry in std::fs::read_dir(restored.join("db")).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    assert_eq!(read_all(&fx.db), read_all(&restored.join("db")));
}

#[tokio::test]
async fn a_forged_setuid_mode_is_masked() {
    let fx = Fixture::new(4);
    let repo = memory_repo();
    let report = rockup::backup(&repo, Source::Db(fx.db.clone()), &fx.options())
        .await
        .unwrap();
    // Rewrite the external part with setuid, setgid and sticky bits everywhere.
    let header = rockup::manifest::load(&repo, report.header.backup_id.as_str(), None)
        .await
        .unwrap();
    let mut doc = serde_json::to_value(&header).unwrap();
    let new_id = backup_id_at(chrono::Utc::now() + chrono::Duration::seconds(5));
    doc["backup_id"] = new_id.clone().into();
    for part in doc["parts"].as_array_mut().unwrap() {
        let sha = part["sha256"].as_str().unwrap().to_string();
        let bytes = get_object(&repo, &part_key(&header.backup_id, &sha))
            .await
            .unwrap();
        let mut text = String::from_utf8(part_ndjson(&bytes)).unwrap();
        text = text.replace(
            &format!("backups/{}/", header.backup_id),
            &format!("backups/{new_id}/"),
        );
        if part["kind"] == "external" {
            let lines: Vec<String> = text
                .lines()
                .map(|l| {
                    let mut entry: serde_json::Value = serde_json::from_str(l).unwrap();
                    entry["mode"] = 0o7777.into();
                    format!("{entry}\n")
                })
                .collect();
            text = lines.concat();
        }
        let sha = sha256_hex(text.as_bytes());
        part["sha256"] = sha.clone().into();
        part["bytes"] = text.len().into();
        part["size"] = serde_json::Value::Null;
        put_object(&repo, &part_key(&new_id, &sha), text).await;
    }
    copy_backup_files(&repo, &header.backup_id, &new_id).await;
    put_object(
        &repo,
        &manifest_key(&new_id),
        serde_json::to_vec(&doc).unwrap(),
    )
    .await;
    restore_into(&repo, &fx, &new_id, "forged").await.unwrap();
    let files = tree(&fx.path("forged/files"));
    assert_eq!(files.len(), 4);
    for name in files.keys() {
        let path = fx.path("forged/files").join(name);
        assert_eq!(mode(&path), 0o777, "{name}: special bits never restored");
    }
}

#[tokio::test]
async fn an_object_larger_than_its_entry_is_never_written_past_its_size() {
    let fx = Fixture::new(4);
    let repo = memory_repo();
    let report = rockup::backup(&repo, Source::Db(fx.db.clone()), &format_1(fx.options()))
        .await
        .unwrap();
    let external: Vec<rockup::manifest::ExternalEntry> =
        report.header.entries(&repo).await.unwrap();
    let victim = &external[0];
    put_object(&repo, &blob_key(victim.sha256), vec![7u8; 64 << 20]).await;
    let err = restore_into(&repo, &fx, report.header.backup_id.as_str(), "big")
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 3, "{err}");
    let rockup::Error::Problems { problems, .. } = &err else {
        panic!("{err}")
    };
    assert!(problems[0].detail.contains("larger than"), "{problems:?}");
    assert!(tree(&fx.path("big")).is_empty(), "nothing placed");
}
