//! Every object key in a repository, formatted and parsed in one place
//! (docs/FORMAT.md describes the same layout for humans):
//!
//! ```text
//! rockup.json                        repository marker
//! backups/<backup-id>/manifest.json  the commit point, written once
//! backups/<backup-id>/parts/<sha256> sorted NDJSON file lists, hash-named
//! backups/<backup-id>/files/<name>   per-backup small DB files (MANIFEST, CURRENT, OPTIONS, WAL)
//! sst/<unique-name>                  SST and RocksDB blob files, shared across backups
//! blobs/sha256/<aa>/<sha256>         whole files, content-addressed, shared
//! packs/<aa>/<pack-id>               small files' content, packed (format 2)
//! index/<pack-id>                    what each pack holds, written after it
//! locks/<kind>-<id>.json             locks of running backups and prunes
//! locks/<kind>-<id>.lease            their leases, rewritten while they run
//! ```

use chrono::{DateTime, NaiveDateTime, Utc};
use object_store::path::Path;
use rand::Rng;

use crate::common::names::is_rocksdb_file_name;

/// Key of the repository marker.
pub const MARKER: &str = "rockup.json";
/// Prefix of every backup's own objects.
pub const BACKUPS: &str = "backups";
/// Prefix of shared RocksDB table and blob files.
pub const SST: &str = "sst";
/// Prefix of content-addressed external files.
pub const BLOBS: &str = "blobs/sha256";
/// Prefix of pack objects.
pub const PACKS: &str = "packs";
/// Prefix of pack indexes.
pub const INDEX: &str = "index";
/// Prefix of the locks of running backups and prunes.
pub const LOCKS: &str = "locks";

const ID_TIME_FORMAT: &str = "%Y%m%dT%H%M%S%.3fZ";

/// A backup id: `<UTC time to the millisecond>-<8 hex digits>`, so ids sort by
/// creation time (also two backups in one second).
pub fn new_backup_id(now: DateTime<Utc>) -> String {
    let suffix: u32 = rand::rng().random();
    format!("{}-{suffix:08x}", now.format(ID_TIME_FORMAT))
}

/// Parses a backup id, returning its creation time; `None` when it is not an id.
pub fn parse_backup_id(id: &str) -> Option<DateTime<Utc>> {
    let (time, suffix) = id.split_once('-')?;
    // `%Y%m%dT%H%M%S.mmmZ` is 20 characters (chrono would also accept fewer).
    if time.len() != 20 || suffix.len() != 8 || !suffix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    NaiveDateTime::parse_from_str(time, ID_TIME_FORMAT)
        .ok()
        .map(|t| t.and_utc())
}

/// `rockup.json`
pub fn marker() -> Path {
    Path::from(MARKER)
}

/// `backups/<id>/manifest.json`
pub fn manifest(backup_id: &str) -> Path {
    Path::from(format!("{BACKUPS}/{backup_id}/manifest.json"))
}

/// `backups/<id>/parts/<sha256>`
pub fn part(backup_id: &str, sha256: &str) -> Path {
    Path::from(format!("{BACKUPS}/{backup_id}/parts/{sha256}"))
}

/// `backups/<id>/files/<name>`
pub fn backup_file(backup_id: &str, name: &str) -> Path {
    Path::from(format!("{BACKUPS}/{backup_id}/files/{name}"))
}

/// `locks/<name>.json`
pub fn lock(name: &str) -> Path {
    Path::from(format!("{LOCKS}/{name}.json"))
}

/// What ends a lock's lease object: `locks/<name>.lease`.
pub const LEASE_SUFFIX: &str = ".lease";

/// `locks/<name>.lease`, rewritten while the lock's holder runs
pub fn lease(name: &str) -> Path {
    Path::from(format!("{LOCKS}/{name}{LEASE_SUFFIX}"))
}

/// `sst/<unique-name>`
pub fn shared_table_file(unique_name: &str) -> Path {
    Path::from(format!("{SST}/{unique_name}"))
}

/// `blobs/sha256/<aa>/<sha256>`
pub fn external_blob(sha256: &str) -> Path {
    Path::from(format!("{BLOBS}/{}/{sha256}", &sha256[..2]))
}

/// A new pack id: 128 random bits as 32 lowercase hex digits. Random, not a
/// content hash, so that pack names never reveal content.
pub fn new_pack_id() -> String {
    let id: u128 = rand::rng().random();
    format!("{id:032x}")
}

/// Whether `id` is a pack id as [`new_pack_id`] makes them.
pub fn is_pack_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `packs/<aa>/<pack-id>`
pub fn pack(id: &str) -> Path {
    Path::from(format!("{PACKS}/{}/{id}", &id[..2]))
}

/// `index/<pack-id>`
pub fn pack_index(id: &str) -> Path {
    Path::from(format!("{INDEX}/{id}"))
}

/// The pack id of a `packs/<aa>/<id>` key, if it is one.
pub fn parse_pack_key(key: &str) -> Option<&str> {
    match key.split('/').collect::<Vec<_>>().as_slice() {
        [PACKS, aa, id] if is_pack_id(id) && id.starts_with(aa) && aa.len() == 2 => Some(id),
        _ => None,
    }
}

/// The pack id of an `index/<id>` key, if it is one.
pub fn parse_index_key(key: &str) -> Option<&str> {
    match key.split('/').collect::<Vec<_>>().as_slice() {
        [INDEX, id] if is_pack_id(id) => Some(id),
        _ => None,
    }
}

/// The backup id of a `backups/<id>/manifest.json` key, if it is one.
pub fn parse_manifest_key(key: &Path) -> Option<String> {
    let parts: Vec<_> = key.parts().collect();
    match parts.as_slice() {
        [b, id, m] if b.as_ref() == BACKUPS && m.as_ref() == "manifest.json" => {
            parse_backup_id(id.as_ref()).map(|_| id.as_ref().to_string())
        }
        _ => None,
    }
}

/// Whether `key` is one of rockup's objects, as this layout names them: the
/// marker, a lock, a backup's manifest, part or file, a shared table file, an
/// external file. Anything else under the prefix is somebody else's.
pub fn is_rockup_key(key: &str) -> bool {
    let sha256 =
        |s: &str| s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let plain = |s: &str| !s.is_empty() && !s.starts_with('.');
    let parts: Vec<&str> = key.split('/').collect();
    match parts.as_slice() {
        [MARKER] => true,
        [LOCKS, name] => plain(name) && (name.ends_with(".json") || name.ends_with(LEASE_SUFFIX)),
        [BACKUPS, id, "manifest.json"] => parse_backup_id(id).is_some(),
        [BACKUPS, id, "parts", sha] => parse_backup_id(id).is_some() && sha256(sha),
        [BACKUPS, id, "files", name] => parse_backup_id(id).is_some() && is_rocksdb_file_name(name),
        [SST, name] => plain(name),
        ["blobs", "sha256", aa, sha] => sha256(sha) && sha.starts_with(aa) && aa.len() == 2,
        _ => parse_pack_key(key).is_some() || parse_index_key(key).is_some(),
    }
}

/// The unique name a shared table file gets in the repository.
///
/// SST files carry the id of the DB session that wrote them in their properties
/// block: `<number>_s<session-id>_<size>.sst` is unique across databases and across
/// divergent histories of one database (the scheme of RocksDB's BackupEngine).
/// Files without a session id (blob files, very old SSTs) are named by content:
/// `<number>_x<sha256>_<size>.<ext>`.
pub fn unique_table_name(file_name: &str, size: u64, naming: &TableNaming) -> String {
    let (stem, ext) = file_name.rsplit_once('.').unwrap_or((file_name, ""));
    match naming {
        TableNaming::Session(session) => format!("{stem}_s{session}_{size}.{ext}"),
        TableNaming::Content(sha256) => format!("{stem}_x{sha256}_{size}.{ext}"),
    }
}

/// What makes a shared table file's object name unique.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableNaming {
    /// The `rocksdb.creating.session.identity` table property.
    Session(String),
    /// The SHA-256 of the whole file.
    Content(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_ids_round_trip_and_sort_by_time() {
        let t1 = DateTime::parse_from_rfc3339("2026-11-25T13:05:00.998Z")
            .unwrap()
            .to_utc();
        let t2 = DateTime::parse_from_rfc3339("2026-11-25T13:05:00.999Z")
            .unwrap()
            .to_utc();
        let (a, b) = (new_backup_id(t1), new_backup_id(t2));
        assert!(a.starts_with("20261125T130500.998Z-"), "{a}");
        assert!(a < b);
        assert_eq!(parse_backup_id(&a), Some(t1));
        assert_eq!(parse_manifest_key(&manifest(&a)), Some(a.clone()));
        assert_eq!(parse_backup_id("../etc"), None);
        assert_eq!(parse_backup_id("20261125T130500.000Z-zzzzzzzz"), None);
        assert_eq!(parse_backup_id("20261125T130500Z-0000000a"), None);
        assert_eq!(
            parse_manifest_key(&Path::from("backups/x/manifest.json")),
            None
        );
    }

    #[test]
    fn only_rockups_keys_are_recognised() {
        let id = "20261125T130500.000Z-0000000a";
        let sha = "ab".repeat(32);
        for ours in [
            "rockup.json".to_string(),
            "locks/backup-x.json".into(),
            manifest(id).to_string(),
            part(id, &sha).to_string(),
            backup_file(id, "CURRENT").to_string(),
            shared_table_file("000012_sABC_4096.sst").to_string(),
            external_blob(&sha).to_string(),
            pack(&"0f".repeat(16)).to_string(),
            pack_index(&"0f".repeat(16)).to_string(),
        ] {
            assert!(is_rockup_key(&ours), "{ours}");
        }
        for foreign in [
            "notes.txt",
            "backups/README",
            "backups/x/manifest.json",
            &format!("backups/{id}/files/LOG"),
            &format!("blobs/sha256/cd/{sha}"),
            "blobs/sha256/ab/short",
            "sst/.hidden",
            "sst/a/b",
            "locks/x.txt",
            "packs/0f/0f0f",
            &format!("packs/aa/{}", "0f".repeat(16)),
            &format!("index/{}/x", "0f".repeat(16)),
        ] {
            assert!(!is_rockup_key(foreign), "{foreign}");
        }
    }

    #[test]
    fn table_names() {
        let s = unique_table_name("000012.sst", 4096, &TableNaming::Session("ABC".into()));
        assert_eq!(s, "000012_sABC_4096.sst");
        let b = unique_table_name("000013.blob", 7, &TableNaming::Content("ff".into()));
        assert_eq!(b, "000013_xff_7.blob");
        assert_eq!(external_blob("abcdef").as_ref(), "blobs/sha256/ab/abcdef");
    }
}
