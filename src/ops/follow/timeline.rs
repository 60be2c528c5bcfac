//! A timeline: the base backup segments continue, and how far they reach.
//! At the start `follow` resumes the newest backup of its source, continued
//! from the last sequence number its segments reach (one LIST); when that
//! cannot be continued — no backup yet, or the WAL has a gap — it takes a new
//! base backup; the tail, opened before it, holds every WAL that appears
//! meanwhile, so the batches after the base's point in time are still there
//! to ship.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::common::rocks::{open_read_only, read_options_file, WalSource};
use crate::common::tasks::blocking;
use crate::error::Result;
use crate::ops::backup::backup;
use crate::repo::ids::BackupId;
use crate::repo::manifest::{self, Header};
use crate::repo::segment::{self, covers, SegmentRef};
use crate::repo::Repository;
use crate::source::{column_families_written, column_family_id, Batch, Source, WalTail};

use super::{FollowOptions, Run};

/// The timeline being followed.
pub(super) struct Timeline {
    /// Its base backup.
    pub base: BackupId,
    /// The base's sequence number.
    pub base_sequence: u64,
    /// The last sequence number shipped (the base's, then each segment's).
    pub shipped: u64,
    /// When everything up to `shipped` had been read.
    pub shipped_at: DateTime<Utc>,
    /// When `shipped` was everything the WAL held (the lag counts from it).
    pub current_at: DateTime<Utc>,
    /// Level-0 segments (and higher) not merged yet, oldest first.
    pub unmerged: Vec<SegmentRef>,
    /// The id of the external-files column family in write batches.
    pub files_cf: Option<u32>,
    /// The ids of the base's column families: a batch writing to another
    /// cannot be replayed onto the base.
    pub column_families: BTreeSet<u32>,
    /// Their names, as the base's manifest records them.
    base_column_families: Vec<String>,
    started: Instant,
}

impl Timeline {
    /// Resumes the newest backup of the source, or (with none, or `fresh`)
    /// takes a new base; `tail` then hands on the batches after it.
    pub async fn start(
        repo: &Repository,
        db_dir: &Path,
        options: &FollowOptions,
        tail: &mut WalTail,
        run: &mut Run<'_>,
    ) -> Result<Self> {
        // Resumed once, at the start; a gap later needs a new base.
        run.timelines += 1;
        let resumed = match run.timelines == 1 && !repo.is_write_only() {
            true => resume(repo, db_dir, options).await?,
            false => None,
        };
        let timeline = match resumed {
            Some(mut timeline) => {
                timeline.learn_column_families(db_dir, options).await?;
                timeline
            }
            None => Self::new_base(repo, db_dir, options, run).await?,
        };
        tail.start_at(timeline.shipped + 1);
        tracing::info!(timeline = %timeline.base, from = timeline.shipped + 1, "following");
        Ok(timeline)
    }

    /// A timeline of a new base backup (its segments start after the base).
    pub async fn new_base(
        repo: &Repository,
        db_dir: &Path,
        options: &FollowOptions,
        run: &mut Run<'_>,
    ) -> Result<Self> {
        run.bases += 1;
        let mut timeline = take_base(repo, db_dir, options).await?;
        timeline.learn_column_families(db_dir, options).await?;
        Ok(timeline)
    }

    fn new(header: &Header, segments: &[SegmentRef]) -> Self {
        let shipped = segment::reach(segments, header.sequence_number + 1);
        let unmerged = segments
            .iter()
            .filter(|s| s.last <= shipped && !segments.iter().any(|o| covers(o, s)))
            .cloned()
            .collect();
        Self {
            base: header.backup_id.clone(),
            base_sequence: header.sequence_number,
            shipped,
            shipped_at: Utc::now(),
            current_at: Utc::now(),
            unmerged,
            files_cf: None,
            column_families: BTreeSet::new(),
            base_column_families: header.column_families.clone(),
            started: Instant::now(),
        }
    }

    /// Reads the ids the database gives the base's column families.
    async fn learn_column_families(
        &mut self,
        db_dir: &Path,
        options: &FollowOptions,
    ) -> Result<()> {
        let names = self.base_column_families.clone();
        (self.files_cf, self.column_families) = column_family_ids(db_dir, options, names).await?;
        Ok(())
    }

    /// The first of `batches` that writes to a column family the base does
    /// not have (created since), with that column family's id.
    pub fn foreign_batch(&self, batches: &[Batch]) -> Option<(usize, u32)> {
        if self.column_families.is_empty() {
            return None; // a manifest that names none: nothing to check against
        }
        batches.iter().enumerate().find_map(|(i, batch)| {
            column_families_written(&batch.data)
                .into_iter()
                .find(|id| !self.column_families.contains(id))
                .map(|id| (i, id))
        })
    }

    /// Everything read up to `at` is shipped; `whole`: and that was all
    /// the WAL held.
    pub fn shipped_read(&mut self, at: DateTime<Utc>, whole: bool) {
        self.shipped_at = at;
        if whole {
            self.current_at = at;
        }
    }

    /// Whether a new base backup is due: `every` has passed and something
    /// was written since this base (an idle database's base stays current).
    pub fn base_is_due(&self, every: Option<Duration>) -> bool {
        self.shipped > self.base_sequence
            && every.is_some_and(|every| self.started.elapsed() >= every)
    }
}

/// The WAL directory of the database at `db_dir` (its `wal_dir`, if set).
pub(super) fn wal_dir(db_dir: &Path) -> Result<PathBuf> {
    Ok(read_options_file(db_dir)?
        .wal_dir
        .map_or_else(|| db_dir.to_path_buf(), PathBuf::from))
}

/// The source `follow` writes: its name, else the database's IDENTITY.
fn source_id(db_dir: &Path, options: &FollowOptions) -> Option<String> {
    options.backup.source.clone().or_else(|| {
        std::fs::read_to_string(db_dir.join("IDENTITY"))
            .ok()
            .map(|s| s.trim().to_string())
    })
}

/// The newest backup of the source and the segments continuing it.
async fn resume(
    repo: &Repository,
    db_dir: &Path,
    options: &FollowOptions,
) -> Result<Option<Timeline>> {
    let Some(source) = source_id(db_dir, options) else {
        return Ok(None);
    };
    let newest = manifest::list(repo)
        .await?
        .into_iter()
        .filter_map(|listed| listed.header)
        .filter(|header| header.source.id() == source)
        .max_by_key(|header| header.sequence_number);
    let Some(header) = newest else {
        return Ok(None);
    };
    let segments = segment::list(repo, Some(&header.backup_id)).await?;
    Ok(Some(Timeline::new(&header, &segments)))
}

/// A new base backup (the tail holds every WAL that appears while it runs).
async fn take_base(repo: &Repository, db_dir: &Path, options: &FollowOptions) -> Result<Timeline> {
    let report = backup(repo, Source::Db(db_dir.to_path_buf()), &options.backup).await?;
    tracing::info!(base = %report.header.backup_id, sequence = report.header.sequence_number, "base backup taken");
    Ok(Timeline::new(&report.header, &[]))
}

/// Times the database is opened read-only to read column families' ids: an
/// open races the writer's compactions (a table deleted while it is opened).
const OPEN_ATTEMPTS: usize = 10;

/// The ids, in the database now, of the column families named `base` (the
/// base backup's), and the id of the external-files column family.
async fn column_family_ids(
    db_dir: &Path,
    options: &FollowOptions,
    base: Vec<String>,
) -> Result<(Option<u32>, BTreeSet<u32>)> {
    let files = options.backup.external.as_ref();
    let files = files.map(|external| external.column_family.clone());
    let db_dir = db_dir.to_path_buf();
    blocking(move || {
        let mut attempt = 1;
        let db = loop {
            match open_read_only(&db_dir, None, WalSource::Live) {
                Ok((db, _)) => break db,
                Err(e) if attempt < OPEN_ATTEMPTS => {
                    tracing::debug!(error = %e, attempt, "opening the database again");
                    std::thread::sleep(Duration::from_millis(50));
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        };
        let files_cf = files.map(|name| column_family_id(&db, &name)).transpose()?;
        // A column family of the base dropped since has no id now (and no
        // batch writes to it).
        let known = base
            .iter()
            .filter_map(|name| column_family_id(&db, name).ok())
            .collect();
        Ok((files_cf, known))
    })
    .await
}
