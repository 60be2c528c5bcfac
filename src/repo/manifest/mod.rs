//! The manifest: a small JSON header at `backups/<id>/manifest.json` (the commit
//! point, written once and last) that names its parts (`parts`). Loading
//! validates everything a restore will act on: format and version, hashes, and
//! every path and file name (no absolute paths, no `..`, only RocksDB file names).
//! What a backup needs from the repository is walked in one place
//! (`referenced`).

mod parts;
mod referenced;
mod sources;

pub use referenced::{Entry, Referenced};
pub use sources::{check_source_name, resolve};

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::common::references::ResolverConfig;
use crate::error::{Error, Problem, Result};
use crate::repo::crypto::sealed::Kind;
use crate::repo::ids::{BackupId, Format};
use crate::repo::layout;
use crate::repo::lock::RepoLock;
use crate::repo::Repository;

pub use parts::{
    store_entries, store_part, DbFileEntry, ExternalEntry, PartBuffer, PartEntry, PartKind,
    PartRef, Stored,
};

/// Format name in every manifest header.
pub const MANIFEST_FORMAT: &str = "rockup-manifest";
/// Largest manifest header read: its size grows with the number of parts (one
/// per 100,000 files) only.
const HEADER_LIMIT: u64 = 16 << 20;
/// Most problems listed in the header itself (all of them are in a part).
const HEADER_PROBLEMS: usize = 50;

/// The manifest header.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct Header {
    /// Always `rockup-manifest`.
    pub format: String,
    /// The repository format the backup is written in (format 2 references
    /// database files other than tables by content).
    pub version: Format,
    /// `<UTC time to the millisecond>-<8 hex digits>`.
    pub backup_id: BackupId,
    /// When the backup started (the backing-up host's clock).
    pub created_at: DateTime<Utc>,
    /// The rockup version that wrote it.
    pub tool_version: String,
    /// Where the backed-up database came from.
    pub source: SourceInfo,
    /// The sequence number the backup holds the database at.
    pub sequence_number: u64,
    /// When the database had reached `sequence_number` (its checkpoint was
    /// open; absent in older backups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reached_at: Option<DateTime<Utc>>,
    /// The database's column families.
    pub column_families: Vec<String>,
    /// Permission bits of the database directory (absent in older backups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_mode: Option<u32>,
    /// How external files were found; `None` when the backup has none.
    pub external: Option<ExternalInfo>,
    /// Counts and bytes.
    pub stats: Stats,
    #[serde(default)]
    /// Tags given at backup time.
    pub tags: BTreeMap<String, String>,
    /// Number of problems (missing or invalid references) recorded.
    pub problem_count: u64,
    /// The first problems, for `list` and humans; all of them are in the parts.
    #[serde(default)]
    pub problems: Vec<Problem>,
    /// The parts listing database files, external files and problems.
    pub parts: Vec<PartRef>,
}

/// Where the backed-up database came from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SourceInfo {
    /// The host the backup ran on.
    pub host: String,
    /// `db`, `checkpoint` or `live`.
    pub kind: String,
    /// The database (or checkpoint) directory.
    pub path: String,
    /// Contents of the database's IDENTITY file, when it has one.
    pub db_identity: Option<String>,
    /// The source's name, when the backup was given one (`--source NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl SourceInfo {
    /// The source this backup belongs to: its given name, else the database's
    /// IDENTITY, else `host:path` (derived on read for older backups too).
    pub fn id(&self) -> String {
        match (&self.name, &self.db_identity) {
            (Some(name), _) => name.clone(),
            (None, Some(identity)) => identity.clone(),
            (None, None) => format!("{}:{}", self.host, self.path),
        }
    }
}

/// Figures about one backup.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct Stats {
    /// Database files in the backup.
    pub db_files: u64,
    /// Their bytes.
    pub db_bytes: u64,
    /// External files in the backup.
    pub external_files: u64,
    /// Their bytes.
    pub external_bytes: u64,
    /// Objects and bytes this backup actually uploaded (the rest were present).
    pub uploaded_objects: u64,
    /// Bytes this backup actually uploaded.
    pub uploaded_bytes: u64,
    /// How long the backup took.
    pub duration_ms: u64,
}

/// What the manifest records about external files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalInfo {
    /// The column family whose records reference them.
    pub column_family: String,
    /// The built-in resolver used; `None` for an application's own extractor.
    pub resolver: Option<ResolverConfig>,
}

impl Header {
    /// The problems recorded in the header, at most a few; see [`Header::problem_count`].
    pub fn with_problems(mut self, problems: &[Problem]) -> Self {
        self.problem_count = problems.len() as u64;
        self.problems = problems.iter().take(HEADER_PROBLEMS).cloned().collect();
        self
    }

    /// When the database was at this backup's sequence number: a restore to
    /// a time at or after it may start from this backup (older backups, which
    /// do not record it, use `created_at`).
    pub fn time_of_point(&self) -> DateTime<Utc> {
        self.reached_at.unwrap_or(self.created_at)
    }

    fn validate(&self, key: &str, expected_id: &BackupId) -> Result<()> {
        if self.backup_id != *expected_id {
            return Err(Error::manifest(
                key,
                format!("names backup {:?}, not {expected_id:?}", self.backup_id),
            ));
        }
        for part in &self.parts {
            part.check().map_err(|e| Error::manifest(key, e))?;
        }
        Ok(())
    }
}

/// Parses and validates a manifest header read from `key` for backup `backup_id`.
pub fn parse_header(key: &str, backup_id: &BackupId, bytes: &[u8]) -> Result<Header> {
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
    if Format::from_number(version.version).is_none() {
        return Err(Error::manifest(
            key,
            Format::unknown("manifest", version.version),
        ));
    }
    let header: Header = serde_json::from_slice(bytes)
        .map_err(|e| Error::manifest(key, format!("corrupt manifest: {e}")))?;
    header.validate(key, backup_id)?;
    Ok(header)
}

/// Loads the header of backup `id`, or of the newest backup of `source` for
/// `latest` (`None`: of the only source; a usage error where there are several).
pub async fn load(repo: &Repository, id: &str, source: Option<&str>) -> Result<Header> {
    let id = resolve(repo, id, source).await?;
    read(repo, &id).await
}

/// Reads and validates the header of backup `id`.
pub async fn read(repo: &Repository, id: &BackupId) -> Result<Header> {
    Ok(read_raw(repo, id).await?.0)
}

/// Reads and validates the header of backup `id`; returns it with its bytes.
pub async fn read_raw(repo: &Repository, id: &BackupId) -> Result<(Header, Bytes)> {
    let key = layout::manifest(id);
    let bytes = repo
        .get_opened(Kind::Manifest, &key, HEADER_LIMIT)
        .await?
        .ok_or_else(|| Error::BackupNotFound(id.to_string()))?;
    Ok((parse_header(key.as_ref(), id, &bytes)?, bytes))
}

/// Ids of every committed backup, oldest first (one LIST).
pub async fn committed_ids(repo: &Repository) -> Result<Vec<BackupId>> {
    Ok(committed(repo)
        .await?
        .into_iter()
        .map(|(id, _)| id)
        .collect())
}

/// Whether backup `id` is committed (its manifest exists; one HEAD).
pub async fn is_committed(repo: &Repository, id: &BackupId) -> Result<bool> {
    repo.exists(&layout::manifest(id)).await
}

/// Every committed backup with the time its manifest was written by the
/// store's clock, oldest first (one LIST). The store's clock, not the id's
/// (the writing host's): a host whose clock runs ahead cannot make its backup
/// the newest.
pub async fn committed(repo: &Repository) -> Result<Vec<(BackupId, DateTime<Utc>)>> {
    let mut committed: Vec<(BackupId, DateTime<Utc>)> = repo
        .list(layout::BACKUPS)
        .await?
        .iter()
        .filter_map(|meta| {
            Some((
                layout::parse_manifest_key(meta.location.as_ref())?,
                meta.last_modified,
            ))
        })
        .collect();
    committed.sort_by(|(a, a_at), (b, b_at)| (a_at, a).cmp(&(b_at, b)));
    Ok(committed)
}

/// Writes the header under `lock` (checked before and after, see
/// [`RepoLock::commit`]): the commit point of a backup.
pub async fn commit(repo: &Repository, lock: &RepoLock, header: &Header) -> Result<()> {
    let bytes = Bytes::from(serde_json::to_vec_pretty(header).expect("header serializes"));
    let key = layout::manifest(&header.backup_id);
    let sealed = repo.seal((Kind::Manifest, key.as_ref()), bytes).await?;
    lock.commit(&key, sealed).await.map(drop)
}

/// One backup as `list` shows it: its header, or why it could not be read.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct ListedBackup {
    /// The backup's id.
    pub backup_id: BackupId,
    /// When its manifest was written, by the store's clock: backups are
    /// ordered, and retention applied, by this time.
    pub committed_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Its header, when readable.
    pub header: Option<Header>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Why the header could not be read.
    pub error: Option<String>,
    /// The source it belongs to ([`SourceInfo::id`]), when readable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// Every committed backup, oldest first, reading headers only.
pub async fn list(repo: &Repository) -> Result<Vec<ListedBackup>> {
    repo.check_marker(None).await?;
    repo.require_full_key("listing backups")?;
    let committed = committed(repo).await?;
    let rows = futures::stream::iter(committed)
        .map(|(id, committed_at)| async move {
            match read(repo, &id).await {
                Ok(header) => ListedBackup {
                    backup_id: id,
                    committed_at,
                    source: Some(header.source.id()),
                    header: Some(header),
                    error: None,
                },
                Err(e) => ListedBackup {
                    backup_id: id,
                    committed_at,
                    header: None,
                    error: Some(e.to_string()),
                    source: None,
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
    fn unknown_versions_and_garbage_are_rejected() {
        let id: BackupId = "20261125T130500.000Z-0000000a".parse().unwrap();
        let newer = br#"{"format":"rockup-manifest","version":3}"#;
        let err = parse_header("k", &id, newer).unwrap_err();
        assert!(
            err.to_string()
                .contains("version 3 was written by a newer rockup"),
            "{err}"
        );
        assert!(parse_header("k", &id, b"\x00garbage").is_err());
        assert!(parse_header("k", &id, br#"{"format":"other","version":1}"#).is_err());
    }
}
