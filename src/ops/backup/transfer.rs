//! Stage 3: database files and pinned external files flow through one bounded
//! stream (`--jobs` at a time) into the repository; each outcome is collected —
//! database entries in memory (a bounded list), external entries into a spool in
//! the work directory (sorted and de-duplicated by path without sitting in
//! memory), problems aside — advancing the repository's [`Progress`] file by
//! file.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::channel::mpsc;
use futures::StreamExt;

use crate::common::progress::Progress;
use crate::common::spool::Spool;
use crate::error::{Error, Problem, Result};
use crate::repo::ids::BackupId;
use crate::repo::manifest::{DbFileEntry, ExternalEntry, Stats};
use crate::source::WorkDir;

use super::dedup::{Dedup, Outcome};
use super::pin::Job;
use super::BackupOptions;

/// Everything the transfer stored, ready to be committed.
pub(super) struct Transferred {
    /// Database files, by name.
    pub db_entries: Vec<DbFileEntry>,
    /// External entries by path.
    pub external: Spool<String, ExternalEntry>,
    /// References that could not be captured, by path.
    pub problems: Vec<Problem>,
    /// Counts and bytes, including what was uploaded.
    pub stats: Stats,
}

/// Runs every database file in `files` and every job from the pin stage
/// through `dedup`, `options.jobs` at a time.
pub(super) async fn run(
    dedup: Dedup,
    files: Vec<String>,
    pinned: mpsc::Receiver<Job>,
    options: &BackupOptions,
    work: &WorkDir,
    progress: &Progress,
) -> Result<Transferred> {
    progress.start(None, None);
    let dedup = Arc::new(dedup);
    let jobs = futures::stream::iter(files.into_iter().map(Job::Db)).chain(pinned);
    let mut outcomes = jobs
        .map(|job| {
            let dedup = dedup.clone();
            async move { dedup.run(job).await }
        })
        .buffer_unordered(options.jobs.get());
    let mut transferred = Transferred {
        db_entries: Vec::new(),
        external: Spool::create(&work.path().join("entries"))?,
        problems: Vec::new(),
        stats: Stats::default(),
    };
    while let Some(outcome) = outcomes.next().await {
        transferred.add(outcome?, progress)?;
    }
    drop(outcomes);
    // Every pack stored before anything references it.
    let packs = dedup.content.finish().await?;
    let uploaded = dedup.content.uploader().stats();
    // A pack and its index are two objects.
    transferred.stats.uploaded_objects = uploaded.objects.load(Ordering::Relaxed) + 2 * packs.packs;
    transferred.stats.uploaded_bytes = uploaded.bytes.load(Ordering::Relaxed) + packs.bytes;
    transferred.db_entries.sort_by(|a, b| a.name.cmp(&b.name));
    transferred.problems.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(transferred)
}

impl Transferred {
    fn add(&mut self, outcome: Outcome, progress: &Progress) -> Result<()> {
        match outcome {
            Outcome::Db(entry) => {
                progress.advance(entry.size);
                self.stats.db_files += 1;
                self.stats.db_bytes += entry.size;
                self.db_entries.push(entry);
            }
            Outcome::External(entry) => {
                progress.advance(entry.size);
                self.add_external(entry)?;
            }
            Outcome::Problem(problem) => {
                tracing::warn!(%problem, "reference not captured");
                self.problems.push(problem);
            }
        }
        Ok(())
    }

    fn add_external(&mut self, entry: ExternalEntry) -> Result<()> {
        if !self.external.contains(&entry.path)? {
            self.stats.external_files += 1;
            self.stats.external_bytes += entry.size;
        }
        self.external.put(&entry.path.clone(), &entry)
    }

    /// Refuses to commit a backup with uncaptured references unless allowed.
    pub fn refuse_problems(&self, backup_id: &BackupId, allowed: bool) -> Result<()> {
        if self.problems.is_empty() || allowed {
            return Ok(());
        }
        Err(Error::Problems {
            summary: format!(
                "{} reference(s) could not be captured; backup {backup_id} was not committed (pass --allow-missing-blobs to commit it with them recorded)",
                self.problems.len()
            ),
            problems: self.problems.clone(),
        })
    }
}
