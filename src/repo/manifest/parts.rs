//! Manifest parts: sorted NDJSON lists of entries (database files, external
//! files, problems), at most [`PART_ENTRIES`] a part, stored under the SHA-256 of
//! their bytes so a tampered part is detected, and read back one part at a time so
//! a million files never sit in memory. In format 2 a part is stored as one
//! frame (zstd-compressed; `size` records its NDJSON's length). Every entry is
//! validated before anyone acts on it.

use bytes::Bytes;
use object_store::path::Path;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::Header;
use crate::common::names::{is_rocksdb_file_name, is_table_file, normalize_relative_path};
use crate::common::tasks::blocking;
use crate::digest::Sha256;
use crate::error::{Error, Problem, Result};
use crate::repo::crypto::sealed::Kind;
use crate::repo::ids::{BackupId, Format};
use crate::repo::layout;
use crate::repo::pack::codec;
use crate::repo::Repository;

/// Most entries in one part.
pub const PART_ENTRIES: usize = 100_000;
/// A part is finished once it holds this many bytes (or [`PART_ENTRIES`]).
const PART_TARGET_BYTES: usize = 64 << 20;
/// Largest part a reader accepts: the target plus one entry of any sane size.
const PART_MAX_BYTES: u64 = 2 * PART_TARGET_BYTES as u64;

/// What a part lists.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PartKind {
    /// Database files ([`DbFileEntry`]).
    Db,
    /// External files ([`ExternalEntry`]).
    External,
    /// Problems ([`crate::Problem`]).
    Problems,
}

/// A reference from the header to one part.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PartRef {
    /// What the part lists.
    pub kind: PartKind,
    /// SHA-256 of the part's bytes, which is also its name.
    pub sha256: Sha256,
    /// Entries it holds.
    pub entries: u64,
    /// Its size in bytes, as stored.
    pub bytes: u64,
    /// Format 2: the size of its NDJSON, stored as a frame (compressed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

impl PartRef {
    /// Rejects a reference no rockup writes: a malformed hash, or more entries
    /// or bytes than a part may hold (checked before anything is allocated).
    pub(super) fn check(&self) -> std::result::Result<(), String> {
        if self.entries as usize > PART_ENTRIES || self.entries == 0 {
            return Err(format!(
                "part {} claims {} entries (1 to {PART_ENTRIES} allowed)",
                self.sha256, self.entries
            ));
        }
        if self.bytes > PART_MAX_BYTES || self.size.is_some_and(|s| s > PART_MAX_BYTES) {
            return Err(format!(
                "part {} claims {} bytes, {} decoded (at most {PART_MAX_BYTES} allowed)",
                self.sha256,
                self.bytes,
                self.size.unwrap_or(self.bytes)
            ));
        }
        Ok(())
    }
}

/// A database file: name in the DB directory, and where its content is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct DbFileEntry {
    /// File name in the database directory.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content.
    pub sha256: Sha256,
    /// The object holding it: `sst/<unique name>` for table files;
    /// for the others `backups/<id>/files/<name>` in format 1, absent in
    /// format 2 (content by hash: a pack entry, or a content object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// Permission bits in the database directory (absent in backups made
    /// before rockup recorded them; restored as 0600 then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

/// An external file: path relative to the blob root; its content is by
/// SHA-256 (a pack entry, or a content object).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExternalEntry {
    /// Normalized path relative to the blob root.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content.
    pub sha256: Sha256,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Permission bits.
    pub mode: u32,
}

/// Where an entry's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// In an object of its own (a part, a table file, a format-1 per-backup
    /// file).
    Object(Path),
    /// Content by SHA-256: a pack entry, or a content object.
    Content,
}

impl DbFileEntry {
    /// Where this file's content is.
    pub fn stored(&self) -> Stored {
        match &self.object {
            Some(object) => Stored::Object(Path::from(object.as_str())),
            None => Stored::Content,
        }
    }
}

/// One entry of a part, whatever its kind.
pub trait PartEntry: Serialize + DeserializeOwned {
    /// The kind of part this entry belongs in.
    const KIND: PartKind;
    /// Rejects entries a restore must not act on (`version`: the manifest's);
    /// entries nobody acts on accept anything.
    fn validate(&self, _backup_id: &BackupId, _version: Format) -> std::result::Result<(), String> {
        Ok(())
    }
}

impl PartEntry for DbFileEntry {
    const KIND: PartKind = PartKind::Db;
    fn validate(&self, backup_id: &BackupId, version: Format) -> std::result::Result<(), String> {
        if !is_rocksdb_file_name(&self.name) {
            return Err(format!("{:?} is not a RocksDB file name", self.name));
        }
        let object = self.object.as_deref();
        let valid_object = match (is_table_file(&self.name), version) {
            (true, _) => object.is_some_and(layout::is_table_key),
            (false, Format::V1) => {
                object == Some(layout::backup_file(backup_id, &self.name).as_ref())
            }
            (false, Format::V2) => object.is_none(),
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
    fn validate(&self, _: &BackupId, _: Format) -> std::result::Result<(), String> {
        let normalized = normalize_relative_path(&self.path)?;
        if normalized != self.path {
            return Err(format!("path {:?} is not normalized", self.path));
        }
        Ok(())
    }
}

impl PartEntry for Problem {
    const KIND: PartKind = PartKind::Problems;
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
    /// Appends one entry; returns a finished part when this one is full.
    pub fn push<T: PartEntry>(&mut self, entry: &T) -> Option<FinishedPart> {
        serde_json::to_writer(&mut self.buffer, entry).expect("entries serialize");
        self.buffer.push(b'\n');
        self.entries += 1;
        let full = self.entries as usize >= PART_ENTRIES || self.buffer.len() >= PART_TARGET_BYTES;
        full.then(|| self.take()).flatten()
    }

    /// The last, partly filled part, if any.
    pub fn take(&mut self) -> Option<FinishedPart> {
        (self.entries > 0).then(|| FinishedPart {
            bytes: Bytes::from(std::mem::take(&mut self.buffer)),
            entries: std::mem::take(&mut self.entries),
        })
    }
}

/// Stores a part of a manifest of `version` under the hash of its bytes (in
/// format 2 a frame: compressed) and returns its header reference.
pub async fn store_part(
    repo: &Repository,
    (backup_id, version): (&BackupId, Format),
    kind: PartKind,
    part: FinishedPart,
) -> Result<PartRef> {
    let size = part.bytes.len() as u64;
    let (stored, size) = match version {
        Format::V1 => (part.bytes, None),
        Format::V2 => {
            let ndjson = part.bytes;
            let level = crate::repo::content::DEFAULT_COMPRESSION_LEVEL;
            let frame = blocking(move || Ok(codec::encode(&ndjson, level))).await?;
            let binding = part_binding(backup_id);
            let sealed = repo
                .seal((Kind::Part, &binding), Bytes::from(frame))
                .await?;
            (sealed, Some(size))
        }
    };
    let reference = PartRef {
        kind,
        sha256: Sha256::of(&stored),
        entries: part.entries,
        bytes: stored.len() as u64,
        size,
    };
    repo.put(&layout::part(backup_id, &reference.sha256), stored)
        .await?;
    Ok(reference)
}

/// What a sealed part is bound to: its backup (its name is the hash of its
/// sealed bytes, which the header records).
fn part_binding(backup_id: &BackupId) -> String {
    format!("{}/{backup_id}/parts", layout::BACKUPS)
}

/// Stores a short, sorted list of entries as parts of a manifest of `version`.
pub async fn store_entries<T: PartEntry>(
    repo: &Repository,
    (backup_id, version): (&BackupId, Format),
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
        parts.push(store_part(repo, (backup_id, version), T::KIND, part).await?);
    }
    Ok(parts)
}

impl Header {
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
        let stored = repo.get(&key, part.bytes).await?;
        if stored.len() as u64 != part.bytes || Sha256::of(&stored) != part.sha256 {
            return Err(Error::manifest(
                key.to_string(),
                "part does not match its hash (corrupt or tampered)",
            ));
        }
        let bytes = match part.size {
            None => stored.to_vec(),
            Some(size) => {
                let binding = part_binding(&self.backup_id);
                let frame = repo.unseal((Kind::Part, &binding), stored).await?;
                codec::decode(&frame, size, None)
                    .map_err(|why| Error::manifest(key.to_string(), format!("part: {why}")))?
            }
        };
        let mut entries = Vec::new();
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let entry: T = serde_json::from_slice(line)
                .map_err(|e| Error::manifest(key.to_string(), format!("unreadable entry: {e}")))?;
            entry
                .validate(&self.backup_id, self.version)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_entries_must_point_into_the_layout() {
        let id: BackupId = "20261125T130500.000Z-0000000a".parse().unwrap();
        let entry = |name: &str, object: Option<&str>| DbFileEntry {
            name: name.into(),
            size: 1,
            sha256: Sha256::of(b"a"),
            object: object.map(Into::into),
            mode: None,
        };
        let current = format!("backups/{id}/files/CURRENT");
        for version in [Format::V1, Format::V2] {
            let sst = entry("000001.sst", Some("sst/000001_sX_1.sst"));
            assert!(sst.validate(&id, version).is_ok());
            assert!(entry("000001.sst", None).validate(&id, version).is_err());
            let elsewhere = entry("CURRENT", Some("backups/other/files/CURRENT"));
            assert!(elsewhere.validate(&id, version).is_err());
            let escape = entry("000001.sst", Some("sst/../x"));
            assert!(escape.validate(&id, version).is_err());
            let bad_name = entry("../000001.sst", Some("sst/x"));
            assert!(bad_name.validate(&id, version).is_err());
        }
        assert!(entry("CURRENT", Some(&current))
            .validate(&id, Format::V1)
            .is_ok());
        assert!(entry("CURRENT", None).validate(&id, Format::V1).is_err());
        assert!(entry("CURRENT", None).validate(&id, Format::V2).is_ok());
        assert!(entry("CURRENT", Some(&current))
            .validate(&id, Format::V2)
            .is_err());
    }
}
