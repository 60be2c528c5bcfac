//! The manifest: a small JSON header at `backups/<id>/manifest.json` (the commit
//! point, written once and last) that names its parts, plus the parts themselves —
//! sorted NDJSON lists of file entries stored under the SHA-256 of their bytes, so
//! a million files never sit in memory and a tampered part is detected. Loading
//! validates everything a restore will act on: format and version, hashes, and
//! every path and file name (no absolute paths, no `..`, only RocksDB file names).

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Problem, Result};
use crate::layout;
use crate::scan::{normalize_relative_path, ExternalInfo};
use crate::store::Repository;

/// Format name in every manifest header.
pub const MANIFEST_FORMAT: &str = "rockup-manifest";
/// Major version written by this build; a reader rejects any other.
pub const MANIFEST_VERSION: u32 = 1;
/// Most entries in one part.
pub const PART_ENTRIES: usize = 100_000;
/// Most problems listed in the header itself (all of them are in a part).
const HEADER_PROBLEMS: usize = 50;

/// The manifest header.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Header {
    pub format: String,
    pub version: u32,
    pub backup_id: String,
    pub created_at: DateTime<Utc>,
    pub tool_version: String,
    pub source: SourceInfo,
    /// The sequence number the backup holds the database at.
    pub sequence_number: u64,
    pub column_families: Vec<String>,
    /// How external files were found; `None` when the backup has none.
    pub external: Option<ExternalInfo>,
    pub stats: Stats,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Number of problems (missing or invalid references) recorded.
    pub problem_count: u64,
    /// The first problems, for `list` and humans; all of them are in the parts.
    #[serde(default)]
    pub problems: Vec<Problem>,
    pub parts: Vec<PartRef>,
}

/// Where the backed-up database came from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SourceInfo {
    pub host: String,
    /// `db`, `checkpoint` or `live`.
    pub kind: String,
    pub path: String,
    /// Contents of the database's IDENTITY file, when it has one.
    pub db_identity: Option<String>,
}

/// Figures about one backup.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    pub db_files: u64,
    pub db_bytes: u64,
    pub external_files: u64,
    pub external_bytes: u64,
    /// Objects and bytes this backup actually uploaded (the rest were present).
    pub uploaded_objects: u64,
    pub uploaded_bytes: u64,
    pub duration_ms: u64,
}

/// What a part lists.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PartKind {
    Db,
    External,
    Problems,
}

/// A reference from the header to one part.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PartRef {
    pub kind: PartKind,
    pub sha256: String,
    pub entries: u64,
    pub bytes: u64,
}

/// A database file: name in the DB directory, and the object holding it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DbFileEntry {
    pub name: String,
    pub size: u64,
    pub sha256: String,
    pub object: String,
}

/// An external file: path relative to the blob root; its object is
/// `blobs/sha256/<aa>/<sha256>`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExternalEntry {
    pub path: String,
    pub size: u64,
    pub sha256: String,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Permission bits.
    pub mode: u32,
}

/// One entry of a part, whatever its kind.
pub trait PartEntry: Serialize + DeserializeOwned {
    /// The kind of part this entry belongs in.
    const KIND: PartKind;
    /// The sort key within parts.
    fn sort_key(&self) -> &str;
    /// Rejects entries a restore must not act on.
    fn validate(&self, backup_id: &str) -> std::result::Result<(), String>;
}

impl PartEntry for DbFileEntry {
    const KIND: PartKind = PartKind::Db;
    fn sort_key(&self) -> &str {
        &self.name
    }
    fn validate(&self, backup_id: &str) -> std::result::Result<(), String> {
        if !is_rocksdb_file_name(&self.name) {
            return Err(format!("{:?} is not a RocksDB file name", self.name));
        }
        check_sha256(&self.sha256)?;
        let shared = self.name.ends_with(".sst") || self.name.ends_with(".blob");
        let valid_object = if shared {
            self.object
                .strip_prefix(&format!("{}/", layout::SST))
                .is_some_and(|rest| {
                    !rest.is_empty() && !rest.contains('/') && !rest.starts_with('.')
                })
        } else {
            self.object == layout::backup_file(backup_id, &self.name).as_ref()
        };
        if !valid_object {
            return Err(format!(
                "object {:?} of {:?} is outside its place in the layout",
                self.object, self.name
            ));
        }
        Ok(())
    }
}

impl PartEntry for ExternalEntry {
    const KIND: PartKind = PartKind::External;
    fn sort_key(&self) -> &str {
        &self.path
    }
    fn validate(&self, _backup_id: &str) -> std::result::Result<(), String> {
        let normalized = normalize_relative_path(&self.path)?;
        if normalized != self.path {
            return Err(format!("path {:?} is not normalized", self.path));
        }
        check_sha256(&self.sha256)
    }
}

impl PartEntry for Problem {
    const KIND: PartKind = PartKind::Problems;
    fn sort_key(&self) -> &str {
        &self.path
    }
    fn validate(&self, _backup_id: &str) -> std::result::Result<(), String> {
        Ok(())
    }
}

fn check_sha256(hex: &str) -> std::result::Result<(), String> {
    if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(format!("{hex:?} is not a SHA-256"))
    }
}

/// Whether `name` is a file RocksDB keeps in a database directory that a backup
/// may restore: `NNNNNN.sst|.blob|.log`, `MANIFEST-N`, `OPTIONS-N`, `CURRENT`, `IDENTITY`.
pub fn is_rocksdb_file_name(name: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match name {
        "CURRENT" | "IDENTITY" => true,
        _ => {
            if let Some(n) = name
                .strip_prefix("MANIFEST-")
                .or_else(|| name.strip_prefix("OPTIONS-"))
            {
                return digits(n);
            }
            match name.rsplit_once('.') {
                Some((n, "sst" | "blob" | "log")) => digits(n),
                _ => false,
            }
        }
    }
}

/// SHA-256 of bytes as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Assembles sorted entries into parts of at most [`PART_ENTRIES`] entries.
/// Synchronous, so it can run where the entries are produced; each finished part
/// is stored with [`store_part`].
#[derive(Default)]
pub struct PartBuffer {
    buffer: Vec<u8>,
    entries: u64,
}

/// A part's bytes and entry count, ready to be stored.
pub struct FinishedPart {
    pub bytes: Bytes,
    pub entries: u64,
}

impl PartBuffer {
    /// Appends one serialized entry (a JSON line without its newline); returns a
    /// finished part when this one is full.
    pub fn push_json(&mut self, json: &[u8]) -> Option<FinishedPart> {
        self.buffer.extend_from_slice(json);
        self.buffer.push(b'\n');
        self.entries += 1;
        (self.entries as usize >= PART_ENTRIES)
            .then(|| self.take())
            .flatten()
    }

    /// Appends one entry.
    pub fn push<T: PartEntry>(&mut self, entry: &T) -> Option<FinishedPart> {
        self.push_json(&serde_json::to_vec(entry).expect("entries serialize"))
    }

    /// The last, partly filled part, if any.
    pub fn take(&mut self) -> Option<FinishedPart> {
        (self.entries > 0).then(|| FinishedPart {
            bytes: Bytes::from(std::mem::take(&mut self.buffer)),
            entries: std::mem::take(&mut self.entries),
        })
    }
}

/// Stores a part under the hash of its bytes and returns its header reference.
pub async fn store_part(
    repo: &Repository,
    backup_id: &str,
    kind: PartKind,
    part: FinishedPart,
) -> Result<PartRef> {
    let sha256 = sha256_hex(&part.bytes);
    let reference = PartRef {
        kind,
        sha256,
        entries: part.entries,
        bytes: part.bytes.len() as u64,
    };
    repo.put(&layout::part(backup_id, &reference.sha256), part.bytes)
        .await?;
    Ok(reference)
}

/// Stores a short, sorted list of entries as parts.
pub async fn store_entries<T: PartEntry>(
    repo: &Repository,
    backup_id: &str,
    entries: &[T],
) -> Result<Vec<PartRef>> {
    let mut buffer = PartBuffer::default();
    let mut finished = Vec::new();
    for entry in entries {
        finished.extend(buffer.push(entry));
    }
    finished.extend(buffer.take());
    let mut parts = Vec::with_capacity(finished.len());
    for part in finished {
        parts.push(store_part(repo, backup_id, T::KIND, part).await?);
    }
    Ok(parts)
}

impl Header {
    /// The problems recorded in the header, at most a few; see [`Header::problem_count`].
    pub fn with_problems(mut self, problems: &[Problem]) -> Self {
        self.problem_count = problems.len() as u64;
        self.problems = problems.iter().take(HEADER_PROBLEMS).cloned().collect();
        self
    }

    fn validate(&self, key: &str, expected_id: &str) -> Result<()> {
        if self.backup_id != expected_id {
            return Err(Error::manifest(
                key,
                format!("names backup {:?}, not {expected_id:?}", self.backup_id),
            ));
        }
        for part in &self.parts {
            check_sha256(&part.sha256).map_err(|e| Error::manifest(key, e))?;
        }
        Ok(())
    }

    /// The parts holding entries of type `T`.
    pub fn parts_of<T: PartEntry>(&self) -> impl Iterator<Item = &PartRef> {
        self.parts.iter().filter(|p| p.kind == T::KIND)
    }

    /// Reads one part, checking its hash and validating every entry.
    pub async fn read_part<T: PartEntry>(
        &self,
        repo: &Repository,
        part: &PartRef,
    ) -> Result<Vec<T>> {
        let key = layout::part(&self.backup_id, &part.sha256);
        let bytes = repo.get(&key).await?;
        if sha256_hex(&bytes) != part.sha256 {
            return Err(Error::manifest(
                key.to_string(),
                "part does not match its hash (corrupt or tampered)",
            ));
        }
        let mut entries = Vec::with_capacity(part.entries as usize);
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let entry: T = serde_json::from_slice(line)
                .map_err(|e| Error::manifest(key.to_string(), format!("unreadable entry: {e}")))?;
            entry
                .validate(&self.backup_id)
                .map_err(|e| Error::manifest(key.to_string(), format!("rejected entry: {e}")))?;
            entries.push(entry);
        }
        if entries.len() as u64 != part.entries {
            return Err(Error::manifest(
                key.to_string(),
                format!(
                    "holds {} entries, header says {}",
                    entries.len(),
                    part.entries
                ),
            ));
        }
        Ok(entries)
    }

    /// Calls `each` on every entry of type `T`, part by part.
    pub async fn for_each_entry<T: PartEntry>(
        &self,
        repo: &Repository,
        mut each: impl FnMut(T) -> Result<()>,
    ) -> Result<()> {
        for part in self.parts_of::<T>() {
            for entry in self.read_part::<T>(repo, part).await? {
                each(entry)?;
            }
        }
        Ok(())
    }

    /// Every entry of one kind, collected (for the bounded DB file list).
    pub async fn entries<T: PartEntry>(&self, repo: &Repository) -> Result<Vec<T>> {
        let mut all = Vec::new();
        self.for_each_entry(repo, |e| {
            all.push(e);
            Ok(())
        })
        .await?;
        Ok(all)
    }
}

/// Parses and validates a manifest header read from `key` for backup `backup_id`.
pub fn parse_header(key: &str, backup_id: &str, bytes: &[u8]) -> Result<Header> {
    #[derive(Deserialize)]
    struct Version {
        format: String,
        version: u32,
    }
    let version: Version = serde_json::from_slice(bytes)
        .map_err(|e| Error::manifest(key, format!("not a rockup manifest (corrupt?): {e}")))?;
    if version.format != MANIFEST_FORMAT {
        return Err(Error::manifest(
            key,
            format!("format {:?} is not {MANIFEST_FORMAT:?}", version.format),
        ));
    }
    if version.version != MANIFEST_VERSION {
        return Err(Error::manifest(
            key,
            format!(
                "manifest version {} is not supported by rockup {} (reads version {MANIFEST_VERSION}); upgrade rockup",
                version.version,
                env!("CARGO_PKG_VERSION")
            ),
        ));
    }
    let header: Header = serde_json::from_slice(bytes)
        .map_err(|e| Error::manifest(key, format!("corrupt manifest: {e}")))?;
    header.validate(key, backup_id)?;
    Ok(header)
}

/// Loads the header of backup `id` (`latest` is resolved first).
pub async fn load(repo: &Repository, id: &str) -> Result<Header> {
    let id = resolve(repo, id).await?;
    let key = layout::manifest(&id);
    let bytes = repo
        .get_if_exists(&key)
        .await?
        .ok_or_else(|| Error::BackupNotFound(id.clone()))?;
    parse_header(key.as_ref(), &id, &bytes)
}

/// Ids of every committed backup, oldest first (one LIST).
pub async fn committed_ids(repo: &Repository) -> Result<Vec<String>> {
    let mut ids: Vec<String> = repo
        .list(layout::BACKUPS)
        .await?
        .iter()
        .filter_map(|meta| layout::parse_manifest_key(&meta.location))
        .collect();
    ids.sort();
    Ok(ids)
}

/// Resolves `latest` to the newest committed backup; checks other ids' syntax.
pub async fn resolve(repo: &Repository, id: &str) -> Result<String> {
    if id == "latest" {
        return committed_ids(repo)
            .await?
            .pop()
            .ok_or_else(|| Error::BackupNotFound("latest".into()));
    }
    if layout::parse_backup_id(id).is_none() {
        return Err(Error::Usage(format!(
            "{id:?} is not a backup id (like 20261125T130500.123Z-1a2b3c4d) or \"latest\""
        )));
    }
    Ok(id.to_string())
}

/// Writes the header: the commit point of a backup.
pub async fn commit(repo: &Repository, header: &Header) -> Result<()> {
    let bytes = Bytes::from(serde_json::to_vec_pretty(header).expect("header serializes"));
    repo.create(&layout::manifest(&header.backup_id), bytes)
        .await?;
    Ok(())
}

/// One backup as `list` shows it: its header, or why it could not be read.
#[derive(Debug, Clone, Serialize)]
pub struct ListedBackup {
    pub backup_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<Header>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Every committed backup, oldest first, reading headers only.
pub async fn list(repo: &Repository) -> Result<Vec<ListedBackup>> {
    repo.check_marker(false).await?;
    let ids = committed_ids(repo).await?;
    let rows = futures::stream::iter(ids)
        .map(|id| async move {
            match load(repo, &id).await {
                Ok(header) => ListedBackup {
                    backup_id: id,
                    header: Some(header),
                    error: None,
                },
                Err(e) => ListedBackup {
                    backup_id: id,
                    header: None,
                    error: Some(e.to_string()),
                },
            }
        })
        .buffered(16)
        .collect()
        .await;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rocksdb_file_names() {
        for ok in [
            "000012.sst",
            "000001.log",
            "7.blob",
            "MANIFEST-000005",
            "OPTIONS-000007",
            "CURRENT",
            "IDENTITY",
        ] {
            assert!(is_rocksdb_file_name(ok), "{ok}");
        }
        for bad in [
            "../CURRENT",
            "LOCK",
            "a.sst",
            ".sst",
            "MANIFEST-",
            "x/000012.sst",
            "000012.sst/",
            "LOG",
            "/etc/passwd",
        ] {
            assert!(!is_rocksdb_file_name(bad), "{bad}");
        }
    }

    #[test]
    fn db_entries_must_point_into_the_layout() {
        let id = "20261125T130500.000Z-0000000a";
        let entry = |name: &str, object: &str| DbFileEntry {
            name: name.into(),
            size: 1,
            sha256: "a".repeat(64),
            object: object.into(),
        };
        assert!(entry("000001.sst", "sst/000001_sX_1.sst")
            .validate(id)
            .is_ok());
        assert!(entry("CURRENT", &format!("backups/{id}/files/CURRENT"))
            .validate(id)
            .is_ok());
        assert!(entry("CURRENT", "backups/other/files/CURRENT")
            .validate(id)
            .is_err());
        assert!(entry("000001.sst", "sst/../x").validate(id).is_err());
        assert!(entry("../000001.sst", "sst/x").validate(id).is_err());
    }

    #[test]
    fn unknown_versions_and_garbage_are_rejected() {
        let err =
            parse_header("k", "id", br#"{"format":"rockup-manifest","version":2}"#).unwrap_err();
        assert!(err.to_string().contains("version 2"), "{err}");
        assert!(parse_header("k", "id", b"\x00garbage").is_err());
        assert!(parse_header("k", "id", br#"{"format":"other","version":1}"#).is_err());
    }
}
