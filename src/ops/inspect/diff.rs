//! What changed between two backups: both backups' entries are walked side
//! by side in name order, one part of each at a time — the database files,
//! then the external files — and each name is added, removed, modified (its
//! content differs) or has new metadata (mode or mtime only). Entries out of
//! order are refused: a backup rockup wrote is sorted, so they are damage.

use std::cmp::Ordering;

use serde::Serialize;

use super::{open, Item};
use crate::error::{Error, Result};
use crate::repo::ids::BackupId;
use crate::repo::layout;
use crate::repo::manifest::{DbFileEntry, ExternalEntry, Header, PartEntry, PartRef};
use crate::repo::Repository;

/// The two backups: [`DiffOptions::default`], then `from` and `to`.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct DiffOptions {
    /// The older backup (id or `latest`).
    pub from: String,
    /// The newer backup (id or `latest`).
    pub to: String,
    /// Whose `latest`: needed where the repository holds several sources.
    pub source: Option<String>,
}

/// How a file differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Only in the newer backup.
    Added,
    /// Only in the older backup.
    Removed,
    /// In both, with different content.
    Modified,
    /// In both, with the same content and a different mode or mtime.
    Metadata,
}

/// One file that differs.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Change {
    /// How.
    pub change: ChangeKind,
    /// The file as the newer backup holds it (the older one's when removed).
    pub item: Item,
    /// The file as the older backup holds it, when both do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<Item>,
}

/// Files and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Files.
    pub files: u64,
    /// Their bytes (the newer backup's size where both hold the file).
    pub bytes: u64,
}

impl Tally {
    fn add(&mut self, size: u64) {
        self.files += 1;
        self.bytes = self.bytes.saturating_add(size);
    }
}

/// Files of one kind, by how they differ.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DiffTotals {
    /// Only in the newer backup.
    pub added: Tally,
    /// Only in the older backup.
    pub removed: Tally,
    /// Different content.
    pub modified: Tally,
    /// Same content, different mode or mtime.
    pub metadata: Tally,
    /// The same.
    pub unchanged: Tally,
}

impl DiffTotals {
    fn tally(&mut self, kind: Option<ChangeKind>) -> &mut Tally {
        match kind {
            Some(ChangeKind::Added) => &mut self.added,
            Some(ChangeKind::Removed) => &mut self.removed,
            Some(ChangeKind::Modified) => &mut self.modified,
            Some(ChangeKind::Metadata) => &mut self.metadata,
            None => &mut self.unchanged,
        }
    }
}

/// The totals of a diff.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct DiffReport {
    /// The older backup.
    pub from: BackupId,
    /// The newer backup.
    pub to: BackupId,
    /// Database files.
    pub db: DiffTotals,
    /// External files.
    pub external: DiffTotals,
}

/// Calls `each` on every file that differs between two backups (database
/// files, then external files, each in name order); returns the totals.
pub async fn diff(
    repo: &Repository,
    options: &DiffOptions,
    mut each: impl FnMut(Change) -> Result<()>,
) -> Result<DiffReport> {
    let source = options.source.as_deref();
    let from = open(repo, &options.from, source).await?;
    let to = open(repo, &options.to, source).await?;
    let db = walk::<DbFileEntry>(repo, (&from, &to), &mut each).await?;
    let external = walk::<ExternalEntry>(repo, (&from, &to), &mut each).await?;
    Ok(DiffReport {
        from: from.backup_id,
        to: to.backup_id,
        db,
        external,
    })
}

/// An entry that can be compared across backups.
trait Compared: PartEntry {
    fn name(&self) -> &str;
    fn size(&self) -> u64;
    /// How `self` (newer) differs from `older`; `None` when it does not.
    fn differs_from(&self, older: &Self) -> Option<ChangeKind>;
    fn into_item(self) -> Item;
}

impl Compared for DbFileEntry {
    fn name(&self) -> &str {
        &self.name
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn differs_from(&self, older: &Self) -> Option<ChangeKind> {
        match (self.sha256 == older.sha256, self.mode == older.mode) {
            (false, _) => Some(ChangeKind::Modified),
            (true, false) => Some(ChangeKind::Metadata),
            (true, true) => None,
        }
    }
    fn into_item(self) -> Item {
        Item::Db(self)
    }
}

impl Compared for ExternalEntry {
    fn name(&self) -> &str {
        &self.path
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn differs_from(&self, older: &Self) -> Option<ChangeKind> {
        let same_metadata = self.mode == older.mode && self.mtime_ns == older.mtime_ns;
        match (self.sha256 == older.sha256, same_metadata) {
            (false, _) => Some(ChangeKind::Modified),
            (true, false) => Some(ChangeKind::Metadata),
            (true, true) => None,
        }
    }
    fn into_item(self) -> Item {
        Item::External(self)
    }
}

/// Merges the two backups' entries of one kind.
async fn walk<T: Compared>(
    repo: &Repository,
    (from, to): (&Header, &Header),
    each: &mut impl FnMut(Change) -> Result<()>,
) -> Result<DiffTotals> {
    let mut totals = DiffTotals::default();
    let (mut older, mut newer) = (Sorted::<T>::new(from), Sorted::<T>::new(to));
    let (mut old, mut new) = (older.next(repo).await?, newer.next(repo).await?);
    loop {
        let order = match (&old, &new) {
            (None, None) => return Ok(totals),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(a), Some(b)) => a.name().cmp(b.name()),
        };
        let (kind, item, before) = match order {
            Ordering::Less => {
                let gone = old.take().expect("compared");
                old = older.next(repo).await?;
                (Some(ChangeKind::Removed), gone, None)
            }
            Ordering::Greater => {
                let came = new.take().expect("compared");
                new = newer.next(repo).await?;
                (Some(ChangeKind::Added), came, None)
            }
            Ordering::Equal => {
                let (was, is) = (old.take().expect("compared"), new.take().expect("compared"));
                (old, new) = (older.next(repo).await?, newer.next(repo).await?);
                (is.differs_from(&was), is, Some(was))
            }
        };
        totals.tally(kind).add(item.size());
        if let Some(change) = kind {
            let before = before.map(Compared::into_item);
            let item = item.into_item();
            each(Change {
                change,
                item,
                before,
            })?;
        }
    }
}

/// A backup's entries of one kind, one part in memory at a time, checked
/// to be in strictly increasing name order.
struct Sorted<'a, T> {
    header: &'a Header,
    parts: Vec<&'a PartRef>,
    next_part: usize,
    current: std::vec::IntoIter<T>,
    last: Option<String>,
}

impl<'a, T: Compared> Sorted<'a, T> {
    fn new(header: &'a Header) -> Self {
        Self {
            header,
            parts: header.parts_of::<T>().collect(),
            next_part: 0,
            current: Vec::new().into_iter(),
            last: None,
        }
    }

    async fn next(&mut self, repo: &Repository) -> Result<Option<T>> {
        loop {
            if let Some(entry) = self.current.next() {
                self.check_order(&entry)?;
                return Ok(Some(entry));
            }
            let Some(part) = self.parts.get(self.next_part) else {
                return Ok(None);
            };
            self.next_part += 1;
            self.current = self.header.read_part::<T>(repo, part).await?.into_iter();
        }
    }

    fn check_order(&mut self, entry: &T) -> Result<()> {
        if self
            .last
            .as_deref()
            .is_some_and(|last| last >= entry.name())
        {
            return Err(Error::manifest(
                layout::manifest(&self.header.backup_id).to_string(),
                format!(
                    "entries out of order at {:?} (damaged or tampered)",
                    entry.name()
                ),
            ));
        }
        self.last = Some(entry.name().to_string());
        Ok(())
    }
}
