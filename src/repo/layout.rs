//! Every object key in a repository, formatted and parsed in one place
//! (docs/FORMAT.md describes the same layout for humans):
//!
//! ```text
//! rockup.json                        repository marker
//! backups/<backup-id>/manifest.json  the commit point, written once
//! backups/<backup-id>/parts/<sha256> sorted NDJSON file lists, hash-named
//! backups/<backup-id>/files/<name>   format 1: per-backup DB files (MANIFEST, CURRENT, OPTIONS, WAL)
//! sst/<unique-name>                  table files (SSTs, RocksDB blob files), shared across backups
//! blobs/sha256/<aa>/<sha256>         content objects: content by SHA-256, stored whole
//! content/<aa>/<name>                the same, encrypted: named by a keyed hash
//! packs/<aa>/<pack-id>               small files' content, packed (format 2)
//! index/<pack-id>                    what each pack holds, written after it
//! locks/<kind>-<id>.json             locks of running backups and prunes
//! locks/<kind>-<id>.lease            their leases, rewritten while they run
//! keys/session-<id>                  encrypted: a writing run's key, wrapped (never deleted)
//! segments/<backup-id>/<level>/<first>-<last>  `follow`: WAL batches after a base backup
//! ```

use object_store::path::Path;

use crate::common::names::is_rocksdb_file_name;
use crate::digest::Sha256;
use crate::repo::crypto::keys::{ContentName, SessionId};
use crate::repo::ids::{BackupId, PackId};

/// Key of the repository marker.
pub const MARKER: &str = "rockup.json";
/// Prefix of every backup's own objects.
pub const BACKUPS: &str = "backups";
/// Prefix of table files (SSTs and RocksDB blob files), shared across backups.
pub const TABLES: &str = "sst";
/// Prefix of content objects: content by SHA-256, stored whole.
pub const CONTENT: &str = "blobs/sha256";
/// Prefix of content objects in an encrypted repository.
pub const KEYED_CONTENT: &str = "content";
/// Prefix of the wrapped session keys of an encrypted repository.
pub const KEYS: &str = "keys";
/// Prefix of pack objects.
pub const PACKS: &str = "packs";
/// Prefix of pack indexes.
pub const INDEX: &str = "index";
/// Prefix of the locks of running backups and prunes.
pub const LOCKS: &str = "locks";
/// Prefix of `follow`'s WAL segments, by base (base backup).
pub const SEGMENTS: &str = "segments";

/// `rockup.json`
pub fn marker() -> Path {
    Path::from(MARKER)
}

/// `backups/<id>/manifest.json`
pub fn manifest(backup: &BackupId) -> Path {
    Path::from(format!("{BACKUPS}/{backup}/manifest.json"))
}

/// `backups/<id>/parts/<sha256>`
pub fn part(backup: &BackupId, sha256: &Sha256) -> Path {
    Path::from(format!("{BACKUPS}/{backup}/parts/{sha256}"))
}

/// `backups/<id>/files/<name>` (format 1)
pub fn backup_file(backup: &BackupId, name: &str) -> Path {
    Path::from(format!("{BACKUPS}/{backup}/files/{name}"))
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
pub fn table(unique_name: &str) -> Path {
    Path::from(format!("{TABLES}/{unique_name}"))
}

/// Whether `object` is a table file's key, `sst/<name>`, its name of the
/// characters rockup's unique names use (so the key needs no escaping).
pub fn is_table_key(object: &str) -> bool {
    object
        .strip_prefix(TABLES)
        .and_then(|rest| rest.strip_prefix('/'))
        .is_some_and(is_table_name)
}

fn is_table_name(name: &str) -> bool {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-');
    is_plain_name(name) && name.bytes().all(allowed)
}

/// `blobs/sha256/<aa>/<sha256>`
pub fn content_object(sha256: &Sha256) -> Path {
    Path::from(format!("{CONTENT}/{}/{sha256}", sha256.prefix()))
}

/// The content a `blobs/sha256/<aa>/<sha256>` key holds, if it is one.
pub fn parse_content_key(key: &str) -> Option<Sha256> {
    match key.split('/').collect::<Vec<_>>().as_slice() {
        ["blobs", "sha256", aa, sha] => sha.parse().ok().filter(|s: &Sha256| s.prefix() == *aa),
        _ => None,
    }
}

/// `content/<aa>/<name>`: a content object of an encrypted repository.
pub fn keyed_content(name: &ContentName) -> Path {
    Path::from(format!("{KEYED_CONTENT}/{}/{name}", name.prefix()))
}

/// The name a `content/<aa>/<name>` key holds, if it is one.
pub fn parse_keyed_content_key(key: &str) -> Option<ContentName> {
    match key.split('/').collect::<Vec<_>>().as_slice() {
        [KEYED_CONTENT, aa, name] => ContentName::parse(name).filter(|n| n.prefix() == *aa),
        _ => None,
    }
}

/// `keys/session-<id>`
pub fn session(id: &SessionId) -> Path {
    Path::from(format!("{KEYS}/session-{id}"))
}

/// Whether `key` is a wrapped session key's.
pub fn is_session_key(key: &str) -> bool {
    key.strip_prefix(KEYS)
        .and_then(|rest| rest.strip_prefix("/session-"))
        .is_some_and(|id| SessionId::parse(id).is_some())
}

/// `packs/<aa>/<pack-id>`
pub fn pack(id: PackId) -> Path {
    Path::from(format!("{PACKS}/{}/{id}", id.prefix()))
}

/// `index/<pack-id>`
pub fn pack_index(id: PackId) -> Path {
    Path::from(format!("{INDEX}/{id}"))
}

/// The pack id of a `packs/<aa>/<id>` key, if it is one.
pub fn parse_pack_key(key: &str) -> Option<PackId> {
    match key.split('/').collect::<Vec<_>>().as_slice() {
        [PACKS, aa, id] => id.parse().ok().filter(|id: &PackId| id.prefix() == *aa),
        _ => None,
    }
}

/// The pack id of an `index/<id>` key, if it is one.
pub fn parse_index_key(key: &str) -> Option<PackId> {
    match key.split('/').collect::<Vec<_>>().as_slice() {
        [INDEX, id] => id.parse().ok(),
        _ => None,
    }
}

/// The backup id of a `backups/<id>/manifest.json` key, if it is one.
pub fn parse_manifest_key(key: &str) -> Option<BackupId> {
    match key.split('/').collect::<Vec<_>>().as_slice() {
        [BACKUPS, id, "manifest.json"] => id.parse().ok(),
        _ => None,
    }
}

/// `segments/<base>/<level>/<first:020>-<last:020>`
pub fn segment(base: &BackupId, level: u8, first: u64, last: u64) -> Path {
    Path::from(format!("{SEGMENTS}/{base}/{level}/{first:020}-{last:020}"))
}

/// What a segment key names — base, level, first and last sequence
/// number — if it is one (spelled exactly as [`segment`] spells it).
pub fn parse_segment_key(key: &str) -> Option<(BackupId, u8, u64, u64)> {
    let [SEGMENTS, base, level, range] = key.split('/').collect::<Vec<_>>()[..] else {
        return None;
    };
    let (first, last) = range.split_once('-')?;
    let number = |text: &str| {
        (text.len() == 20 && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse::<u64>().ok())
            .flatten()
    };
    let level: u8 = level.parse().ok().filter(|l: &u8| l.to_string() == level)?;
    let (first, last) = (number(first)?, number(last)?);
    (first <= last).then_some((base.parse().ok()?, level, first, last))
}

/// A name that is neither empty nor hidden.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains('/')
}

/// Whether `key` is one of rockup's objects, as this layout names them: the
/// marker, a lock, a backup's manifest, part or file, a table file, a content
/// object, a pack or its index. Anything else under the prefix is somebody
/// else's.
pub fn is_rockup_key(key: &str) -> bool {
    let backup = |id: &str| id.parse::<BackupId>().is_ok();
    let parts: Vec<&str> = key.split('/').collect();
    match parts.as_slice() {
        [MARKER] => true,
        [LOCKS, name] => {
            is_plain_name(name) && (name.ends_with(".json") || name.ends_with(LEASE_SUFFIX))
        }
        [BACKUPS, id, "manifest.json"] => backup(id),
        [BACKUPS, id, "parts", sha] => backup(id) && sha.parse::<Sha256>().is_ok(),
        [BACKUPS, id, "files", name] => backup(id) && is_rocksdb_file_name(name),
        [TABLES, name] => is_table_name(name),
        _ => {
            parse_content_key(key).is_some()
                || parse_keyed_content_key(key).is_some()
                || is_session_key(key)
                || parse_pack_key(key).is_some()
                || parse_index_key(key).is_some()
                || parse_segment_key(key).is_some()
        }
    }
}

/// The unique name a table file gets in the repository.
///
/// SST files carry the id of the DB session that wrote them in their properties
/// block: `<number>_s<session-id>_<size>.sst` is unique across databases and across
/// divergent histories of one database (the scheme of RocksDB's BackupEngine).
/// Files without a session id (RocksDB blob files, very old SSTs) are named by
/// content: `<number>_x<sha256>_<size>.<ext>`.
pub fn unique_table_name(file_name: &str, size: u64, naming: &TableNaming) -> String {
    let (stem, ext) = file_name.rsplit_once('.').unwrap_or((file_name, ""));
    match naming {
        TableNaming::Session(session) => format!("{stem}_s{session}_{size}.{ext}"),
        TableNaming::Content(sha256) => format!("{stem}_x{sha256}_{size}.{ext}"),
    }
}

/// What makes a table file's object name unique.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableNaming {
    /// The `rocksdb.creating.session.identity` table property.
    Session(String),
    /// The SHA-256 of the whole file.
    Content(Sha256),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_keys_name_their_backup() {
        let id: BackupId = "20261125T130500.998Z-0000000a".parse().unwrap();
        assert_eq!(parse_manifest_key(manifest(&id).as_ref()), Some(id));
        assert_eq!(parse_manifest_key("backups/x/manifest.json"), None);
    }

    #[test]
    fn only_rockups_keys_are_recognised() {
        let id: BackupId = "20261125T130500.000Z-0000000a".parse().unwrap();
        let sha = Sha256::of(b"x");
        let pack_id: PackId = "0f".repeat(16).parse().unwrap();
        for ours in [
            "rockup.json".to_string(),
            "locks/backup-x.json".into(),
            manifest(&id).to_string(),
            part(&id, &sha).to_string(),
            backup_file(&id, "CURRENT").to_string(),
            table("000012_sABC_4096.sst").to_string(),
            content_object(&sha).to_string(),
            pack(pack_id).to_string(),
            pack_index(pack_id).to_string(),
            segment(&id, 1, 7, 9).to_string(),
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
            &format!("packs/aa/{pack_id}"),
            &format!("index/{pack_id}/x"),
            &format!("segments/{id}/0/7-9"),
            &format!("segments/{id}/00/{:020}-{:020}", 7, 9),
            &format!("segments/{id}/0/{:020}-{:020}", 9, 7),
        ] {
            assert!(!is_rockup_key(foreign), "{foreign}");
        }
    }

    #[test]
    fn table_names() {
        let s = unique_table_name("000012.sst", 4096, &TableNaming::Session("ABC".into()));
        assert_eq!(s, "000012_sABC_4096.sst");
        let sha = Sha256::of(b"");
        let b = unique_table_name("000013.blob", 7, &TableNaming::Content(sha));
        assert_eq!(b, format!("000013_x{sha}_7.blob"));
        assert!(is_table_key("sst/000012_sABC_4096.sst"));
        for not_a_table in ["sst/../x", "sst/", "blobs/x", "sst/a b.sst", "sst/a%2F.sst"] {
            assert!(!is_table_key(not_a_table), "{not_a_table}");
        }
    }
}
