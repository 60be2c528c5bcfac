//! Pack indexes and the content index built from them.
//!
//! `index/<pack-id>` lists what its pack holds: for each entry the SHA-256 of
//! the original content, the frame's offset and length in the pack, and the
//! content's size. It is written after its pack is stored, so an index never
//! names a pack that was not whole. Every index is validated before use —
//! offsets and lengths inside the recorded pack size, entries sorted and
//! disjoint, counts and sizes within limits — and trusted only if its pack is
//! listed with that size.
//!
//! [`ContentIndex`] is the union: SHA-256 → where that content is, a pack
//! entry or a content object, in scratch spools so that a million entries
//! stay off the heap.

use std::collections::HashMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::codec::FRAME_HEADER;
use super::stored_index::{self, IndexRead};
use super::PACK_HEADER;
use crate::common::spool::Spool;
use crate::digest::Sha256;
use crate::error::{Error, Problem, Result};
use crate::repo::crypto::keys::ContentName;
use crate::repo::ids::PackId;
use crate::repo::layout;
use crate::repo::Repository;

/// Format name of a pack index.
const INDEX_FORMAT: &str = "rockup-pack-index";
/// Version of the index format this build reads and writes.
const INDEX_VERSION: u32 = 1;
/// Largest index object read.
const INDEX_LIMIT: u64 = 16 << 20;
/// Most entries an index may list.
pub const MAX_ENTRIES: usize = 50_000;
/// Largest pack an index may describe.
const MAX_PACK_SIZE: u64 = 1 << 30;
/// Largest content one entry may decode to.
pub const MAX_ENTRY_SIZE: u64 = 16 << 20;
/// Index objects read at once: each is a few MiB of JSON, parsed whole.
const READS_IN_FLIGHT: usize = 4;

/// `index/<pack-id>`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PackIndex {
    /// Always `rockup-pack-index`.
    pub format: String,
    /// Major version.
    pub version: u32,
    /// The pack's id.
    pub pack: PackId,
    /// The pack object's size in bytes.
    pub pack_size: u64,
    /// Entries by offset.
    pub entries: Vec<IndexEntry>,
}

/// One entry of a pack.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IndexEntry {
    /// SHA-256 of the original content.
    pub sha256: Sha256,
    /// Offset of its frame in the pack.
    pub offset: u64,
    /// Length of its frame (header included).
    pub length: u64,
    /// Size of the original content.
    pub size: u64,
}

/// Where a pack entry is: the pack, and the entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Location {
    /// The pack's id.
    pub pack: PackId,
    /// The pack's size, as its index records it.
    pub pack_size: u64,
    /// The entry.
    #[serde(flatten)]
    pub entry: IndexEntry,
}

/// Where content with a given SHA-256 is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    /// In a pack.
    Packed(Location),
    /// A content object `blobs/sha256/<aa>/<sha256>` (there, or nowhere).
    Object,
}

impl PackIndex {
    /// A new index of `pack`.
    pub fn new(pack: PackId, pack_size: u64, entries: Vec<IndexEntry>) -> Self {
        Self {
            format: INDEX_FORMAT.into(),
            version: INDEX_VERSION,
            pack,
            pack_size,
            entries,
        }
    }

    /// Parses and validates the index read from `index/<pack_id>`.
    pub fn parse(pack_id: PackId, bytes: &[u8]) -> std::result::Result<Self, String> {
        #[derive(Deserialize)]
        struct Version {
            format: String,
            version: u32,
        }
        let version: Version =
            serde_json::from_slice(bytes).map_err(|e| format!("not a pack index: {e}"))?;
        if version.format != INDEX_FORMAT {
            return Err(format!(
                "format {:?} is not {INDEX_FORMAT:?}",
                version.format
            ));
        }
        if version.version != INDEX_VERSION {
            return Err(format!(
                "index version {} was written by a newer rockup (this one reads {INDEX_VERSION}); upgrade rockup",
                version.version
            ));
        }
        let index: Self =
            serde_json::from_slice(bytes).map_err(|e| format!("corrupt pack index: {e}"))?;
        index.validate(pack_id)?;
        Ok(index)
    }

    /// Fails closed on anything no rockup writes: another pack's id, a pack
    /// too large, too many entries, entries out of order, overlapping, outside
    /// the pack or decoding to more than an entry may hold.
    fn validate(&self, pack_id: PackId) -> std::result::Result<(), String> {
        if self.pack != pack_id {
            return Err(format!("names pack {}, not {pack_id}", self.pack));
        }
        if self.pack_size > MAX_PACK_SIZE {
            return Err(format!(
                "claims a pack of {} bytes (at most {MAX_PACK_SIZE})",
                self.pack_size
            ));
        }
        if self.entries.is_empty() || self.entries.len() > MAX_ENTRIES {
            return Err(format!(
                "lists {} entries (1 to {MAX_ENTRIES} allowed)",
                self.entries.len()
            ));
        }
        let mut end = PACK_HEADER;
        for entry in &self.entries {
            entry.validate(end, self.pack_size)?;
            end = entry.offset + entry.length;
        }
        Ok(())
    }
}

impl IndexEntry {
    /// Checks one entry, which must start at or after `after`.
    fn validate(&self, after: u64, pack_size: u64) -> std::result::Result<(), String> {
        let sha = &self.sha256;
        let end = self.offset.checked_add(self.length);
        if self.offset < after || end.is_none_or(|end| end > pack_size) {
            return Err(format!(
                "entry {sha} at {}+{} overlaps another or lies outside the pack's {pack_size} bytes",
                self.offset, self.length
            ));
        }
        if self.length < FRAME_HEADER || self.size > MAX_ENTRY_SIZE {
            return Err(format!(
                "entry {sha} is {} bytes long decoding to {} (frames have a {FRAME_HEADER}-byte header; at most {MAX_ENTRY_SIZE} decoded)",
                self.length, self.size
            ));
        }
        Ok(())
    }
}

/// A pack as the listing and its index describe it.
#[derive(Debug, Clone)]
pub struct PackInfo {
    /// Its id.
    pub id: PackId,
    /// Its size.
    pub size: u64,
    /// When the store wrote it.
    pub last_modified: DateTime<Utc>,
    /// Whether a valid index describes it.
    pub indexed: bool,
}

/// What the repository's pack indexes say, in scratch spools: each content's
/// first known place, each pack's entries by offset, and content held
/// otherwise (a listed content object, or stored by this run).
pub struct ContentIndex {
    repo: Repository,
    places: Spool<Sha256, Location>,
    entries: Spool<(PackId, u64), IndexEntry>,
    held: Spool<ContentName, ()>,
    /// Every listed pack, by id.
    pub packs: HashMap<PackId, PackInfo>,
    /// Packs whose index could not be used, and the problem (the index's,
    /// or the pack's when its size disagrees). Their content is unknown, so
    /// nothing may delete them.
    pub damaged: Vec<(PackId, Problem)>,
    /// Indexes whose pack is not in the listing (nothing they name exists).
    pub dangling: Vec<PackId>,
}

impl ContentIndex {
    /// Lists packs and indexes and reads every index whose pack is listed
    /// (`READS_IN_FLIGHT` at a time); `objects` also records the content
    /// objects present (one LIST), for a writer's deduplication.
    pub async fn load(repo: &Repository, dir: &Path, objects: bool) -> Result<Self> {
        let mut index = Self::empty(repo, dir)?;
        for meta in repo.list(layout::PACKS).await? {
            if let Some(id) = layout::parse_pack_key(meta.location.as_ref()) {
                let info = PackInfo {
                    id,
                    size: meta.size,
                    last_modified: meta.last_modified,
                    indexed: false,
                };
                index.packs.insert(id, info);
            }
        }
        let mut ids = Vec::new();
        for meta in repo.list(layout::INDEX).await? {
            match layout::parse_index_key(meta.location.as_ref()) {
                Some(id) if index.packs.contains_key(&id) => ids.push(id),
                Some(id) => index.dangling.push(id),
                None => {}
            }
        }
        let mut reads = futures::stream::iter(ids)
            .map(|id| async move { (read_index(repo, id).await, id) })
            .buffered(READS_IN_FLIGHT);
        while let Some((read, id)) = reads.next().await {
            index.add(id, read?)?;
        }
        drop(reads);
        if objects {
            for meta in repo.list(repo.content_prefix()).await? {
                if let Some(name) = repo.parse_content_key(meta.location.as_ref()) {
                    index.held.put(&name, &())?;
                }
            }
        }
        Ok(index)
    }

    /// An index of nothing yet (in scratch spools in `dir`): it comes to
    /// hold only what this run stores.
    pub fn empty(repo: &Repository, dir: &Path) -> Result<Self> {
        let places = Spool::create(dir)?;
        Ok(Self {
            repo: repo.clone(),
            entries: places.beside(1),
            held: places.beside(2),
            places,
            packs: HashMap::new(),
            damaged: Vec::new(),
            dangling: Vec::new(),
        })
    }

    fn add(&mut self, id: PackId, read: std::result::Result<IndexRead, String>) -> Result<()> {
        let read = match read {
            Ok(IndexRead::Names(names)) => return self.add_names(id, &names),
            Ok(IndexRead::Full(index)) => Ok(index),
            Err(why) => Err(why),
        };
        let info = self.packs.get_mut(&id).expect("only listed packs are read");
        // An index that reads is whole (sealed or checked); a size that
        // disagrees with it is the pack's damage, named as the pack's.
        let parsed = read
            .map_err(|why| Problem::corrupt_object(layout::pack_index(id), why))
            .and_then(|index| match index.pack_size == info.size {
                true => Ok(index),
                false => Err(Problem::corrupt_object(
                    layout::pack(id),
                    format!(
                        "is {} bytes; its index says {} (truncated, extended or replaced)",
                        info.size, index.pack_size
                    ),
                )),
            });
        let index = match parsed {
            Ok(index) => index,
            Err(problem) => {
                tracing::warn!(%problem, "pack unusable");
                self.damaged.push((id, problem));
                return Ok(());
            }
        };
        info.indexed = true;
        for entry in index.entries {
            self.entries.put(&(id, entry.offset), &entry)?;
            let location = Location {
                pack: id,
                pack_size: index.pack_size,
                entry,
            };
            self.insert_if_absent(&location)?;
        }
        Ok(())
    }

    /// Records what a write-only host learns of pack `id`: the names of the
    /// content it holds.
    fn add_names(&mut self, id: PackId, names: &[ContentName]) -> Result<()> {
        let info = self.packs.get_mut(&id).expect("only listed packs are read");
        info.indexed = true;
        for name in names {
            self.held.put(name, &())?;
        }
        Ok(())
    }

    /// The indexes that are unusable, or name a pack that is gone, as problems.
    pub fn problems(&self) -> Vec<Problem> {
        let damaged = self.damaged.iter().map(|(_, problem)| problem.clone());
        let dangling = self.dangling.iter().map(|id| {
            Problem::corrupt_object(
                layout::pack_index(*id),
                "names a pack that is not in the repository",
            )
        });
        damaged.chain(dangling).collect()
    }

    /// Records where content is, unless it is known already.
    pub fn insert_if_absent(&self, location: &Location) -> Result<()> {
        let sha256 = &location.entry.sha256;
        if !self.places.contains(sha256)? {
            self.places.put(sha256, location)?;
        }
        Ok(())
    }

    /// What content with this hash is called in the repository.
    pub fn content_name(&self, sha256: &Sha256) -> ContentName {
        self.repo.content_name(sha256)
    }

    /// Records that content is held: a listed content object, or stored by
    /// this run.
    pub fn note_held(&self, sha256: &Sha256) -> Result<()> {
        self.held.put(&self.repo.content_name(sha256), &())
    }

    /// Where content is: packed, or (so far as the indexes know) a content
    /// object.
    pub fn locate(&self, sha256: &Sha256) -> Result<Located> {
        Ok(match self.places.get(sha256)? {
            Some(location) => Located::Packed(location),
            None => Located::Object,
        })
    }

    /// Whether the repository holds content (packed, a listed content
    /// object, or stored by this run).
    pub fn holds(&self, sha256: &Sha256) -> Result<bool> {
        Ok(self.places.contains(sha256)? || self.held.contains(&self.repo.content_name(sha256))?)
    }

    /// Up to `limit` entries of pack `id` after offset `after`, by offset.
    pub fn entries_of(
        &self,
        id: PackId,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<IndexEntry>> {
        let batch = match after {
            Some(offset) => self.entries.batch_after(Some(&(id, offset)), limit)?,
            None => self.entries.batch_from(Some(&(id, 0)), limit)?,
        };
        Ok(batch
            .into_iter()
            .take_while(|((pack, _), _)| *pack == id)
            .map(|(_, entry)| entry)
            .collect())
    }
}

/// Reads and validates `index/<id>`; `Err(why)` when it is unusable.
async fn read_index(
    repo: &Repository,
    id: PackId,
) -> Result<std::result::Result<IndexRead, String>> {
    let read = repo
        .get_if_exists(&layout::pack_index(id), INDEX_LIMIT)
        .await;
    match read {
        Ok(Some(bytes)) => stored_index::decode(repo, id, bytes).await,
        Ok(None) => Ok(Err("vanished while it was read".into())),
        Err(e @ Error::Manifest { .. }) => Ok(Err(e.to_string())),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(offset: u64, length: u64, size: u64) -> IndexEntry {
        IndexEntry {
            sha256: Sha256::of(b"ab"),
            offset,
            length,
            size,
        }
    }

    fn pack_id(hex: &str) -> PackId {
        hex.repeat(16).parse().unwrap()
    }

    fn parse(pack_size: u64, entries: Vec<IndexEntry>) -> std::result::Result<PackIndex, String> {
        let id = pack_id("0f");
        let index = PackIndex::new(id, pack_size, entries);
        PackIndex::parse(id, &serde_json::to_vec(&index).unwrap())
    }

    #[test]
    fn sound_indexes_parse() {
        assert!(parse(108, vec![entry(8, 50, 46), entry(58, 50, 100)]).is_ok());
    }

    #[test]
    fn forged_offsets_lengths_and_counts_fail_closed() {
        let cases = [
            (108, vec![entry(8, 101, 1)], "outside the pack"),
            (108, vec![entry(0, 10, 1)], "outside the pack"),
            (108, vec![entry(8, 50, 1), entry(40, 10, 1)], "overlaps"),
            (108, vec![entry(u64::MAX - 1, 10, 1)], "outside the pack"),
            (108, vec![entry(8, 2, 1)], "header"),
            (108, vec![entry(8, 10, MAX_ENTRY_SIZE + 1)], "decoded"),
            (MAX_PACK_SIZE + 1, vec![entry(8, 10, 1)], "claims a pack"),
            (108, vec![], "0 entries"),
        ];
        for (size, entries, expected) in cases {
            let err = parse(size, entries.clone()).unwrap_err();
            assert!(err.contains(expected), "{entries:?}: {err}");
        }
        let many = (0..=MAX_ENTRIES as u64)
            .map(|i| entry(8 + i * 4, 4, 0))
            .collect();
        assert!(parse(8 + 4 * (MAX_ENTRIES as u64 + 1), many)
            .unwrap_err()
            .contains("entries"));
        let id = pack_id("0f");
        let other = PackIndex::new(pack_id("1f"), 108, vec![entry(8, 50, 1)]);
        assert!(PackIndex::parse(id, &serde_json::to_vec(&other).unwrap()).is_err());
        let newer = br#"{"format":"rockup-pack-index","version":2}"#;
        assert!(PackIndex::parse(id, newer)
            .unwrap_err()
            .contains("newer rockup"));
    }
}
