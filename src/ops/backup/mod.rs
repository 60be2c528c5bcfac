//! One backup, as a pipeline of named stages:
//!
//! ```text
//! checkpoint ──► pin ──► transfer (dedup + upload) ──► commit
//! (source)       (references → captured files)          (parts, header: write-once)
//! ```
//!
//! `checkpoint` takes the source's checkpoint (pre-linking the tree under the
//! blob root around the point in time for a `--db` source); `pin` captures
//! every referenced file on a blocking thread, then feeds them to the transfer; `transfer` streams database
//! files and pinned files through one bounded upload stream, deduplicating
//! against the repository and the previous backup (`dedup`); `commit` stores the
//! sorted parts and commits the header only when every file is in the repository
//! and — unless the caller allows it — no reference is missing or invalid. The
//! work directory is removed whatever happens.

mod checkpoint;
mod commit;
mod dedup;
mod pin;
mod previous;
mod transfer;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::common::tasks::Jobs;
use crate::error::{Error, Problem, Result};
use crate::repo::ids::{BackupId, Format};
use crate::repo::lock::{locked, LockKind, LockRequest, RepoLock, DEFAULT_LEASE};
use crate::repo::manifest::{self, Header};
use crate::repo::upload::DEFAULT_MEMORY_BUDGET;
use crate::repo::{Repository, Traffic};
use crate::source::{
    check_work_base, default_work_base, CheckpointStats, DeletionGuard, ExternalFiles, Prepared,
    Source, WorkDir,
};
pub(crate) use dedup::store_pinned;
use dedup::Dedup;

/// How to run a backup: [`BackupOptions::default`], then the fields that
/// differ (see the crate docs).
#[derive(Clone)]
#[non_exhaustive]
pub struct BackupOptions {
    /// External files to capture, if the database references any.
    pub external: Option<ExternalFiles>,
    /// Files read and uploaded at once.
    pub jobs: Jobs,
    /// Bytes of file content in memory at once, across all uploads.
    pub memory_budget: u64,
    /// Tags recorded in the manifest (`--tag K=V`).
    pub tags: BTreeMap<String, String>,
    /// Commit even when references are missing or invalid (they are
    /// recorded; `--allow-missing-blobs`).
    pub allow_missing_files: bool,
    /// Re-read external files even when the previous backup has them unchanged.
    pub rehash: bool,
    /// Do everything but write to the repository: every reference resolved
    /// and every file read, the report saying what would be uploaded
    /// (`--dry-run`); the repository is left exactly as it was.
    pub dry_run: bool,
    /// Base of the work directory (default: beside the database).
    pub work_dir: Option<PathBuf>,
    /// The application's deletion guard (library mode).
    pub guard: Option<DeletionGuard>,
    /// The source's name (`--source`); by default the database's IDENTITY
    /// stands for it. Retention and `latest` apply per source.
    pub source: Option<String>,
    /// How long this backup's lock stays live without renewal (`--lease`); it
    /// is renewed every third of that while the backup runs.
    pub lease: std::time::Duration,
    /// How long to wait for a prune in the way to finish (`--retry-lock`);
    /// zero fails at once.
    pub retry_lock: std::time::Duration,
    /// For a `--db` source: hard-link the tree under the blob root into the
    /// work directory the moment the point in time is fixed, so that files the
    /// application deletes meanwhile are still captured (one link per file per
    /// backup).
    pub prelink: bool,
    /// Repository format to write: 2 (packs, compression) or 1 (every file
    /// an object of its own; readable by rockup 0.1).
    pub format: Format,
    /// zstd level for packed content (1–22); 0 stores it uncompressed.
    pub compression_level: i32,
    /// Where a write-only host (an encrypted repository opened with a write
    /// key) records what it backed up, so that the next backup need not read
    /// unchanged files again (`--cache-dir`; default `$XDG_CACHE_HOME/rockup`,
    /// else `~/.cache/rockup`).
    pub cache_dir: Option<PathBuf>,
}

impl Default for BackupOptions {
    fn default() -> Self {
        Self {
            external: None,
            jobs: Jobs::from(16),
            memory_budget: DEFAULT_MEMORY_BUDGET,
            tags: BTreeMap::new(),
            allow_missing_files: false,
            rehash: false,
            dry_run: false,
            work_dir: None,
            guard: None,
            source: None,
            lease: DEFAULT_LEASE,
            retry_lock: std::time::Duration::ZERO,
            prelink: true,
            format: Format::NEWEST,
            compression_level: crate::repo::content::DEFAULT_COMPRESSION_LEVEL,
            cache_dir: None,
        }
    }
}

/// What a backup did.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct BackupReport {
    /// The committed manifest header.
    pub header: Header,
    /// Every problem found (also recorded in the manifest).
    pub problems: Vec<Problem>,
    /// How the checkpoint was taken.
    pub checkpoint: CheckpointStats,
    /// Referenced files deleted from the tree under the blob root after the
    /// point in time and captured from their pre-links.
    pub rescued_by_prelinks: u64,
    /// Requests and bytes this run asked of the store.
    pub traffic: Traffic,
}

/// The identity of one backup run.
struct Run {
    backup_id: BackupId,
    created_at: DateTime<Utc>,
    started: Instant,
}

/// Backs up `source` (and, with `options.external`, the files its records
/// reference) into `repo`.
#[tracing::instrument(skip_all, fields(source = %source.path().display()))]
pub async fn backup(
    repo: &Repository,
    source: Source<'_>,
    options: &BackupOptions,
) -> Result<BackupReport> {
    let started = Instant::now();
    let dry = options.dry_run.then(|| repo.clone().dry_run());
    let repo = dry.as_ref().unwrap_or(repo);
    let before = repo.traffic();
    if let Some(name) = &options.source {
        manifest::check_source_name(name)?;
    }
    repo.check_marker(Some(options.format)).await?;
    let created_at = Utc::now();
    let run = Run {
        backup_id: BackupId::new(created_at),
        created_at,
        started,
    };
    // Keeps `prune` from deleting objects this backup reuses before it commits.
    let request = LockRequest {
        kind: LockKind::Backup,
        operation: "backup",
        id: run.backup_id.clone(),
        lease: options.lease,
        wait: options.retry_lock,
    };
    let report = locked(repo, request, async |lock| {
        if let Err(skew) = lock.check_clock() {
            tracing::warn!(%skew, "the backup id carries this host's time; backups are ordered by the store's");
        }
        pipeline(repo, source, options, &run, lock).await
    })
    .await?;
    Ok(BackupReport {
        traffic: repo.traffic().since(before),
        ..report
    })
}

/// Backs up the application's own open database, holding `guard` (if given) from
/// before the checkpoint until every referenced external file is pinned.
/// `open_options` are the options the checkpoint is opened with (the
/// application's comparator and merge operators); `None` reads its OPTIONS file.
pub async fn backup_live(
    repo: &Repository,
    db: &rocksdb::DB,
    open_options: Option<rocksdb::Options>,
    options: &BackupOptions,
) -> Result<BackupReport> {
    let source = Source::Live {
        db,
        options: open_options,
    };
    backup(repo, source, options).await
}

async fn pipeline(
    repo: &Repository,
    source: Source<'_>,
    options: &BackupOptions,
    run: &Run,
    lock: &RepoLock,
) -> Result<BackupReport> {
    // Shared with the blocking tasks that write into it, so that the directory is
    // removed only when the last of them is done, also when the backup is cancelled.
    let work = Arc::new(work_dir(&source, options, &run.backup_id)?);
    // The guard is held from before the checkpoint until every reference is pinned.
    let hold = match &options.guard {
        Some(guard) => {
            let set_aside = work.path().join("set-aside");
            Some(
                guard
                    .hold(set_aside.clone())
                    .map_err(|e| Error::io(set_aside, e))?,
            )
        }
        None => None,
    };
    let (prepared, prelinks) = checkpoint::take(source, &work, options).await?;
    let Prepared {
        dir,
        db,
        files,
        stats,
        snapshot,
    } = prepared;
    let pinning = pin::start(db, prelinks, options, &work, hold);
    let source = commit::source_info(&snapshot.origin, options);
    let dedup = Dedup::prepare(
        repo,
        dir,
        &snapshot.origin,
        &source,
        options,
        &work,
        &run.backup_id,
    );
    let dedup = dedup.await?;
    let transferred =
        transfer::run(dedup, files, pinning.jobs, options, &work, repo.progress()).await?;
    let rescued_by_prelinks = pinning.task.await??;
    // A dry run reports the problems a real run would refuse.
    let allowed = options.allow_missing_files || options.dry_run;
    transferred.refuse_problems(&run.backup_id, allowed)?;
    let (header, problems) =
        commit::commit(repo, run, snapshot, transferred, options, lock).await?;
    Ok(BackupReport {
        header,
        problems,
        checkpoint: stats,
        rescued_by_prelinks,
        traffic: Traffic::default(),
    })
}

/// The run's work directory, never inside the database or the blob root.
fn work_dir(source: &Source<'_>, options: &BackupOptions, run_id: &BackupId) -> Result<WorkDir> {
    let blob_root = options.external.as_ref().map(|e| e.blob_root.as_path());
    if let Some(root) = blob_root.filter(|root| !root.is_dir()) {
        return Err(Error::Usage(format!(
            "blob root {} is not a directory; check --blob-root",
            root.display()
        )));
    }
    let base = options
        .work_dir
        .clone()
        .unwrap_or_else(|| default_work_base(source.path(), blob_root));
    check_work_base(&base, source.path(), blob_root)?;
    WorkDir::create(&base, run_id.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_send<T: Send>(_: &T) {}

    #[test]
    fn backup_futures_can_be_spawned() {
        let repo = Repository::from_store(
            std::sync::Arc::new(object_store::memory::InMemory::new()),
            "memory://",
        );
        let options = BackupOptions::default();
        let future = backup(&repo, Source::Db("/nonexistent".into()), &options);
        is_send(&future);
    }
}
