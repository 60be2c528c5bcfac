//! Garbage collection of packs. Each indexed pack's entries are weighed
//! against what the kept backups reference (content referenced, and this the
//! pack the indexes name first for it): a pack with no live entry is deleted
//! once older than the grace period; a pack whose live entries fill less
//! than the repack threshold is repacked — its live entries read with
//! coalesced range requests, checked against their hashes, and copied as they
//! are (still compressed) into new packs — and deleted once the new packs and
//! their indexes are stored. A pack whose index is damaged is never touched:
//! what it holds is unknown. Packs without any index (a backup interrupted
//! between pack and index) are unreferenced objects, deleted after the grace
//! period; an index whose pack is gone names nothing and is deleted.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::Verdict;
use crate::common::spool::Spool;
use crate::error::Result;
use crate::repo::crypto::keys::ContentName;
use crate::repo::ids::PackId;
use crate::repo::layout;
use crate::repo::pack::reader::{self, Wanted};
use crate::repo::pack::{ContentIndex, IndexEntry, Located, PackInfo, Packer};
use crate::repo::Repository;

/// Entries weighed at a time.
const ENTRY_BATCH: usize = 10_000;

/// Default repack threshold: packs less than this share referenced are repacked.
pub const DEFAULT_REPACK_BELOW: f64 = 0.7;

/// What becomes of one pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Live enough, new, or of unknown content (damaged index).
    Keep,
    /// To be repacked (done unless dry run).
    Repack,
    /// Repacked: its live entries are in new packs.
    Repacked,
    /// Nothing in it is referenced.
    Dead,
}

/// What pack garbage collection did (or, dry, would do).
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct RepackReport {
    /// Packs repacked.
    pub packs_repacked: u64,
    /// Their total size: reclaimed once they are deleted.
    pub bytes_repacked: u64,
    /// Bytes uploaded in new packs (and their indexes) for their live entries.
    pub bytes_uploaded: u64,
    /// Entries of repacked packs that were damaged: those packs were kept.
    pub damaged_entries: Vec<String>,
}

/// The fate of every pack, and the index it was decided from.
pub(super) struct PackPlan {
    index: ContentIndex,
    fates: HashMap<PackId, Fate>,
    dangling: HashSet<PackId>,
}

/// The content the kept backups reference, by its name here.
type Referenced = Spool<ContentName, ()>;

impl PackPlan {
    /// Weighs every pack against the content the kept backups reference.
    pub async fn make(
        repo: &Repository,
        referenced: &Referenced,
        dir: &Path,
        repack_below: f64,
        cutoff: DateTime<Utc>,
    ) -> Result<Self> {
        let index = ContentIndex::load(repo, dir, false).await?;
        let mut fates = HashMap::new();
        for info in index.packs.values().filter(|info| info.indexed) {
            let live: u64 = live_entries(&index, referenced, info.id)?
                .iter()
                .map(|e| e.length)
                .sum();
            fates.insert(info.id, fate(info, live, repack_below, cutoff));
        }
        for (id, _) in &index.damaged {
            fates.insert(*id, Fate::Keep);
        }
        let dangling = index.dangling.iter().cloned().collect();
        Ok(Self {
            index,
            fates,
            dangling,
        })
    }

    /// Repacks the packs planned for it (dry: only counts them).
    pub async fn repack(
        &mut self,
        repo: &Repository,
        referenced: &Referenced,
        dry_run: bool,
    ) -> Result<RepackReport> {
        let mut report = RepackReport::default();
        let chosen: Vec<PackInfo> = self
            .index
            .packs
            .values()
            .filter(|info| self.fates.get(&info.id) == Some(&Fate::Repack))
            .cloned()
            .collect();
        let packer = Packer::new(repo);
        for info in chosen {
            let damaged = match dry_run {
                true => Vec::new(),
                false => self.copy_live(repo, referenced, &info, &packer).await?,
            };
            if damaged.is_empty() {
                report.packs_repacked += 1;
                report.bytes_repacked += info.size;
                // A dry run deletes nothing: the pack stays.
                let fate = if dry_run { Fate::Keep } else { Fate::Repacked };
                self.fates.insert(info.id, fate);
            } else {
                tracing::warn!(pack = %info.id, "damaged entries: pack kept (`rockup verify --deep` names them)");
                report.damaged_entries.extend(damaged);
                self.fates.insert(info.id, Fate::Keep);
            }
        }
        let stored = packer.finish().await?;
        report.bytes_uploaded = stored.bytes;
        self.fates
            .extend(stored.ids.into_iter().map(|id| (id, Fate::Keep)));
        Ok(report)
    }

    /// Copies the live entries of one pack into `packer`; returns the damaged ones.
    async fn copy_live(
        &self,
        repo: &Repository,
        referenced: &Referenced,
        info: &PackInfo,
        packer: &Packer,
    ) -> Result<Vec<String>> {
        let live = live_entries(&self.index, referenced, info.id)?;
        let wanted = live.into_iter().map(|entry| Wanted { entry, target: () });
        let mut damaged = Vec::new();
        for range in reader::ranges(wanted.collect(), reader::RANGE_SPAN) {
            let read = reader::read_range(
                repo,
                info.id,
                info.size,
                range,
                |wanted, frame| async move {
                    let entry = wanted.entry.clone();
                    let checked = reader::open_entry_of(repo, wanted.entry, frame.clone()).await?;
                    match checked.map(|_| frame) {
                        Ok(frame) => packer
                            .add(&entry.sha256, entry.size, &frame)
                            .await
                            .map(|()| None),
                        Err(why) => Ok(Some(why)),
                    }
                },
            )
            .await?;
            damaged.extend(read.delivered.into_iter().flatten());
            damaged.extend(read.failed.map(|f| f.detail));
        }
        Ok(damaged)
    }

    /// What garbage collection does with `key`, if it is a pack or an index
    /// whose fate is decided; `None` when neither, or when only its age
    /// decides (a dead pack, an unindexed one).
    pub fn verdict(&self, key: &str) -> Option<Verdict> {
        if let Some(index) = layout::parse_index_key(key) {
            if self.dangling.contains(&index) {
                return Some(Verdict::Delete);
            }
        }
        let id = layout::parse_pack_key(key).or_else(|| layout::parse_index_key(key))?;
        match self.fates.get(&id)? {
            Fate::Keep | Fate::Repack => Some(Verdict::Keep),
            Fate::Repacked => Some(Verdict::Delete),
            Fate::Dead => None,
        }
    }
}

fn fate(info: &PackInfo, live: u64, repack_below: f64, cutoff: DateTime<Utc>) -> Fate {
    let old = info.last_modified <= cutoff;
    if live == 0 {
        Fate::Dead
    } else if old && (live as f64) < repack_below * info.size as f64 {
        Fate::Repack
    } else {
        Fate::Keep
    }
}

/// The entries of pack `id` that kept backups reference and for which it is
/// the pack the indexes name first.
fn live_entries(
    index: &ContentIndex,
    referenced: &Referenced,
    id: PackId,
) -> Result<Vec<IndexEntry>> {
    let mut live = Vec::new();
    let mut after = None;
    loop {
        let batch = index.entries_of(id, after, ENTRY_BATCH)?;
        let Some(last) = batch.last() else {
            return Ok(live);
        };
        after = Some(last.offset);
        for entry in batch {
            let wanted = referenced.contains(&index.content_name(&entry.sha256))?;
            let first = matches!(index.locate(&entry.sha256)?, Located::Packed(l) if l.pack == id);
            if wanted && first {
                live.push(entry);
            }
        }
    }
}
