//! Orchestrates one backup: checkpoint → scan and pin → upload → commit manifest →
//! remove the work directory. Database files and external files flow through one
//! bounded stream (`--jobs` at a time) while the scan pins on a blocking thread;
//! the manifest is committed only when every file is in the repository and — unless
//! the caller allows it — no reference is missing or invalid.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use serde::Serialize;

use crate::checkpoint::{self, default_work_base, CheckpointStats, Prepared, Source, WorkDir};
use crate::error::{Error, Problem, ProblemKind, Result};
use crate::layout::{self, TableNaming};
use crate::lock::{LockKind, RepoLock};
use crate::manifest::{self, DbFileEntry, ExternalEntry, Header, PartBuffer, PartKind, Stats};
use crate::scan::{self, file_stamp, DeletionGuard, ExternalFiles, Pin, Pinned, Pinner, Prelinks};
use crate::spool::Spool;
use crate::sst;
use crate::store::Repository;
use crate::upload::{self, blocking, hash_mismatch, Content, Uploader};

/// How often a long backup logs its progress.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// How to run a backup.
#[derive(Clone)]
pub struct BackupOptions {
    /// External files to capture, if the database references any.
    pub external: Option<ExternalFiles>,
    /// Files uploaded at once.
    pub jobs: usize,
    /// Bytes of file content in memory at once, across all uploads.
    pub memory_budget: u64,
    pub tags: BTreeMap<String, String>,
    /// Commit even when references are missing or invalid (they are recorded).
    pub allow_missing_blobs: bool,
    /// Re-read external files even when the previous backup has them unchanged.
    pub rehash: bool,
    /// Base of the work directory (default: beside the database).
    pub work_dir: Option<PathBuf>,
    /// The application's deletion guard (library mode).
    pub guard: Option<DeletionGuard>,
    /// For a `--db` source: hard-link the blob tree into the work directory the
    /// moment the point in time is fixed, so that files the application deletes
    /// meanwhile are still captured (one link per file per backup).
    pub prelink: bool,
}

impl Default for BackupOptions {
    fn default() -> Self {
        Self {
            external: None,
            jobs: 4,
            memory_budget: upload::DEFAULT_MEMORY_BUDGET,
            tags: BTreeMap::new(),
            allow_missing_blobs: false,
            rehash: false,
            work_dir: None,
            guard: None,
            prelink: true,
        }
    }
}

/// What a backup did.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    /// The committed manifest header.
    pub header: Header,
    /// Every problem found (also recorded in the manifest).
    pub problems: Vec<Problem>,
    /// How the checkpoint was taken.
    pub checkpoint: CheckpointStats,
    /// Referenced files deleted from the blob tree after the point in time and
    /// captured from their pre-links.
    pub rescued_by_prelinks: u64,
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
    repo.check_marker(true).await?;
    let created_at = Utc::now();
    let backup_id = layout::new_backup_id(created_at);
    // Keeps `prune` from deleting objects this backup reuses before it commits.
    let lock = RepoLock::acquire(repo, LockKind::Backup, &backup_id).await?;
    let result = run(repo, source, options, started, created_at, backup_id).await;
    if let Err(e) = lock.release().await {
        tracing::warn!(error = %e, "could not remove this backup's lock; `rockup unlock` removes it");
    }
    result
}

async fn run(
    repo: &Repository,
    source: Source<'_>,
    options: &BackupOptions,
    started: Instant,
    created_at: chrono::DateTime<Utc>,
    backup_id: String,
) -> Result<BackupReport> {
    let blob_root = options.external.as_ref().map(|e| e.blob_root.clone());
    if let Some(root) = &blob_root {
        if !root.is_dir() {
            return Err(Error::Usage(format!(
                "blob root {} is not a directory; check --blob-root",
                root.display()
            )));
        }
    }
    let base = options
        .work_dir
        .clone()
        .unwrap_or_else(|| default_work_base(source.path(), blob_root.as_deref()));
    checkpoint::check_work_base(&base, source.path(), blob_root.as_deref())?;
    // Shared with the blocking tasks that write into it, so that the directory is
    // removed only when the last of them is done, also when the backup is cancelled.
    let work = Arc::new(WorkDir::create(&base, &backup_id)?);

    // The guard is held from before the checkpoint until every reference is pinned.
    let hold = options.guard.as_ref().map(DeletionGuard::hold);
    let (prepared, prelinks) = match source {
        Source::Live { .. } => (
            checkpoint::prepare(source, work.path(), &mut || Ok(()))?,
            None,
        ),
        Source::Db(path) => {
            let work = work.clone();
            let prelink_root = match &options.external {
                Some(external) if options.prelink => Some(external.blob_root.clone()),
                _ => None,
            };
            blocking(move || {
                let mut prelinks = None;
                let prepared = checkpoint::prepare(Source::Db(path), work.path(), &mut || {
                    if let Some(root) = &prelink_root {
                        let links = match &mut prelinks {
                            Some(links) => links,
                            None => prelinks.insert(Prelinks::new(work.path().join("prelinks"))?),
                        };
                        links.link_tree(root)?;
                    }
                    Ok(())
                })?;
                if let Some(links) = &prelinks {
                    tracing::info!(files = links.files, "blob tree pre-linked");
                }
                Ok((prepared, prelinks))
            })
            .await?
        }
        Source::Checkpoint { path, options } => {
            let work = work.clone();
            let source = Source::Checkpoint { path, options };
            let prepared =
                blocking(move || checkpoint::prepare(source, work.path(), &mut || Ok(()))).await?;
            (prepared, None)
        }
    };
    tracing::info!(
        sequence = prepared.sequence_number,
        files = prepared.files.len(),
        "checkpoint ready"
    );

    let Prepared {
        dir: checkpoint,
        db,
        sequence_number,
        column_families,
        source: source_info,
        files,
        stats: checkpoint_stats,
    } = prepared;
    // Pin every reference first (links are cheap, and the guard or the writer's
    // deletions wait on it), into a spool in scan order; then feed the uploads.
    let (sender, receiver) = mpsc::channel::<Job>(1024);
    let scan_task = {
        let external = options.external.clone();
        let work = work.clone();
        let mut sender = sender.clone();
        tokio::task::spawn_blocking(move || -> Result<u64> {
            let Some(external) = external else {
                return Ok(0);
            };
            let pinned = Spool::create(&work.path().join("pinned"))?;
            let mut pinner =
                Pinner::new(&external.blob_root, work.path().join("pins"))?.with_prelinks(prelinks);
            let mut problems = Vec::new();
            let mut spool_error = None;
            let mut count = 0u64;
            scan::for_each_reference(&db, &external, |key, item| {
                match item.map(|reference| pinner.pin(key, reference)) {
                    Ok(Pin::Captured(file)) => {
                        let value = serde_json::to_vec(&file).expect("pins serialize");
                        if let Err(e) = pinned.put(&format!("{count:016x}"), &value) {
                            spool_error = Some(e);
                            return false;
                        }
                        count += 1;
                    }
                    Ok(Pin::Duplicate) => {}
                    Ok(Pin::Problem(problem)) | Err(problem) => problems.push(problem),
                }
                true
            })?;
            drop(hold); // every reference is pinned
            drop(db);
            if let Some(e) = spool_error {
                return Err(e);
            }
            tracing::info!(
                files = count,
                problems = problems.len(),
                rescued = pinner.rescued,
                "references pinned"
            );
            let problems = problems.into_iter().map(|p| Ok(Job::Problem(p)));
            let files = pinned.values().map(|value| {
                let file: Pinned = serde_json::from_slice(&value?).expect("pins deserialize");
                Ok(Job::External(file))
            });
            for job in problems.chain(files) {
                if futures::executor::block_on(sender.send(job?)).is_err() {
                    break;
                }
            }
            Ok(pinner.rescued)
        })
    };
    let previous = previous_backup(repo, source_info.db_identity.as_deref()).await?;
    let context = Arc::new(Context {
        uploader: Uploader::new(repo.clone(), options.memory_budget),
        backup_id: backup_id.clone(),
        checkpoint,
        known_tables: known_tables(repo, previous.as_ref()).await?,
        existing_tables: repo
            .list(layout::SST)
            .await?
            .into_iter()
            .map(|m| (m.location.to_string(), m.size))
            .collect(),
        previous_external: match (&options.external, &previous, options.rehash) {
            (Some(_), Some(header), false) => Some(previous_external(repo, header, &work).await?),
            _ => None,
        },
    });

    let db_jobs = futures::stream::iter(files.into_iter().map(Job::Db));
    drop(sender);
    let jobs = db_jobs.chain(receiver);
    let mut outcomes = jobs
        .map(|job| {
            let context = context.clone();
            async move { context.run(job).await }
        })
        .buffer_unordered(options.jobs.max(1));

    let entries = Spool::create(&work.path().join("entries"))?;
    let mut db_entries = Vec::new();
    let mut problems = Vec::new();
    let mut stats = Stats::default();
    let mut last_progress = Instant::now();
    while let Some(outcome) = outcomes.next().await {
        if last_progress.elapsed() >= PROGRESS_EVERY {
            last_progress = Instant::now();
            tracing::info!(
                db_files = stats.db_files,
                external_files = stats.external_files,
                uploaded_bytes = context.uploader.stats().bytes.load(Ordering::Relaxed),
                "progress"
            );
        }
        match outcome? {
            Outcome::Db(entry) => {
                stats.db_files += 1;
                stats.db_bytes += entry.size;
                db_entries.push(entry);
            }
            Outcome::External(entry) => {
                if entries.get(&entry.path)?.is_none() {
                    stats.external_files += 1;
                    stats.external_bytes += entry.size;
                }
                entries.put(
                    &entry.path,
                    &serde_json::to_vec(&entry).expect("entries serialize"),
                )?;
            }
            Outcome::Problem(problem) => {
                tracing::warn!(%problem, "reference not captured");
                problems.push(problem);
            }
        }
    }
    drop(outcomes);
    let rescued_by_prelinks = scan_task
        .await
        .map_err(|e| Error::io("<scan task>", std::io::Error::other(e)))??;

    if !problems.is_empty() && !options.allow_missing_blobs {
        problems.sort_by(|a, b| a.path.cmp(&b.path));
        return Err(Error::Problems {
            summary: format!(
                "{} reference(s) could not be captured; backup {backup_id} was not committed (pass --allow-missing-blobs to commit it with them recorded)",
                problems.len()
            ),
            problems,
        });
    }

    db_entries.sort_by(|a, b| a.name.cmp(&b.name));
    problems.sort_by(|a, b| a.path.cmp(&b.path));
    let mut parts = manifest::store_entries(repo, &backup_id, &db_entries).await?;
    parts.extend(store_external_parts(repo, &backup_id, entries).await?);
    parts.extend(manifest::store_entries(repo, &backup_id, &problems).await?);

    stats.uploaded_objects = context.uploader.stats().objects.load(Ordering::Relaxed);
    stats.uploaded_bytes = context.uploader.stats().bytes.load(Ordering::Relaxed);
    stats.duration_ms = started.elapsed().as_millis() as u64;
    let header = Header {
        format: manifest::MANIFEST_FORMAT.into(),
        version: manifest::MANIFEST_VERSION,
        backup_id,
        created_at,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        source: source_info,
        sequence_number,
        column_families,
        external: options.external.as_ref().map(ExternalFiles::info),
        stats,
        tags: options.tags.clone(),
        problem_count: 0,
        problems: Vec::new(),
        parts,
    }
    .with_problems(&problems);
    manifest::commit(repo, &header).await?;
    tracing::info!(id = %header.backup_id, "committed");
    Ok(BackupReport {
        header,
        problems,
        checkpoint: checkpoint_stats,
        rescued_by_prelinks,
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
    backup(
        repo,
        Source::Live {
            db,
            options: open_options,
        },
        options,
    )
    .await
}

/// Stores the spooled external entries as sorted parts: a blocking thread walks
/// the spool and hands over one finished part at a time.
async fn store_external_parts(
    repo: &Repository,
    backup_id: &str,
    entries: Spool,
) -> Result<Vec<manifest::PartRef>> {
    let (mut sender, mut receiver) = mpsc::channel(1);
    let producer = tokio::task::spawn_blocking(move || -> Result<()> {
        let mut buffer = PartBuffer::default();
        for value in entries.values() {
            if let Some(part) = buffer.push_json(&value?) {
                if futures::executor::block_on(sender.send(part)).is_err() {
                    return Ok(());
                }
            }
        }
        if let Some(part) = buffer.take() {
            let _ = futures::executor::block_on(sender.send(part));
        }
        Ok(())
    });
    let mut parts = Vec::new();
    while let Some(part) = receiver.next().await {
        parts.push(manifest::store_part(repo, backup_id, PartKind::External, part).await?);
    }
    producer
        .await
        .map_err(|e| Error::io("<part writer>", std::io::Error::other(e)))??;
    Ok(parts)
}

/// The newest committed backup, preferring one of the same database.
async fn previous_backup(repo: &Repository, identity: Option<&str>) -> Result<Option<Header>> {
    let ids = manifest::committed_ids(repo).await?;
    let mut newest = None;
    for id in ids.iter().rev() {
        let Ok(header) = manifest::load(repo, id).await else {
            continue;
        };
        if header.source.db_identity.as_deref() == identity {
            return Ok(Some(header));
        }
        newest.get_or_insert(header);
    }
    Ok(newest)
}

/// Shared table files the previous backup has, with their size and hash.
async fn known_tables(
    repo: &Repository,
    previous: Option<&Header>,
) -> Result<HashMap<String, (u64, String)>> {
    let Some(header) = previous else {
        return Ok(HashMap::new());
    };
    let entries: Vec<DbFileEntry> = header.entries(repo).await?;
    Ok(entries
        .into_iter()
        .map(|e| (e.object, (e.size, e.sha256)))
        .collect())
}

/// The previous backup's external entries, spooled by path.
async fn previous_external(repo: &Repository, header: &Header, work: &WorkDir) -> Result<Spool> {
    let spool = Spool::create(&work.path().join("previous"))?;
    header
        .for_each_entry(repo, |entry: ExternalEntry| {
            spool.put(
                &entry.path,
                &serde_json::to_vec(&entry).expect("entries serialize"),
            )
        })
        .await?;
    Ok(spool)
}

enum Job {
    Db(String),
    External(Pinned),
    Problem(Problem),
}

enum Outcome {
    Db(DbFileEntry),
    External(ExternalEntry),
    Problem(Problem),
}

struct Context {
    uploader: Uploader,
    backup_id: String,
    checkpoint: PathBuf,
    /// object key → (size, sha256) from the previous backup
    known_tables: HashMap<String, (u64, String)>,
    /// object key → size, from one LIST of `sst/`
    existing_tables: HashMap<String, u64>,
    previous_external: Option<Spool>,
}

impl Context {
    async fn run(&self, job: Job) -> Result<Outcome> {
        match job {
            Job::Db(name) => self.db_file(name).await.map(Outcome::Db),
            Job::External(pinned) => self.external_file(pinned).await,
            Job::Problem(problem) => Ok(Outcome::Problem(problem)),
        }
    }

    async fn db_file(&self, name: String) -> Result<DbFileEntry> {
        let path = self.checkpoint.join(&name);
        let size = std::fs::metadata(&path)
            .map_err(|e| Error::io(&path, e))?
            .len();
        let entry = |object: String, sha256: String| DbFileEntry {
            name: name.clone(),
            size,
            sha256,
            object,
        };
        if !(name.ends_with(".sst") || name.ends_with(".blob")) {
            let key = layout::backup_file(&self.backup_id, &name);
            let (sha256, _) = self.uploader.upload_file(&path, &key, None).await?;
            return Ok(entry(key.to_string(), sha256));
        }
        let session = if name.ends_with(".sst") {
            let path = path.clone();
            blocking(move || Ok(sst::session_id(&path))).await?
        } else {
            None
        };
        if let Some(session) = session {
            let key = layout::shared_table_file(&layout::unique_table_name(
                &name,
                size,
                &TableNaming::Session(session),
            ));
            let object = key.to_string();
            let present = self.existing_tables.get(&object) == Some(&size);
            if let Some((known_size, sha256)) = self.known_tables.get(&object) {
                if present && *known_size == size {
                    return Ok(entry(object, sha256.clone()));
                }
            }
            let sha256 = if present {
                self.uploader.load(&path, size).await?.sha256().to_string()
            } else {
                self.uploader.upload_file(&path, &key, None).await?.0
            };
            return Ok(entry(object, sha256));
        }
        let content = self.uploader.load(&path, size).await?;
        let naming = TableNaming::Content(content.sha256().to_string());
        let key = layout::shared_table_file(&layout::unique_table_name(&name, size, &naming));
        if self.existing_tables.get(key.as_ref()) != Some(&size) {
            self.store_content(&path, &key, &content).await?;
        }
        Ok(entry(key.to_string(), content.sha256().to_string()))
    }

    async fn store_content(
        &self,
        path: &std::path::Path,
        key: &object_store::path::Path,
        content: &Content,
    ) -> Result<()> {
        match content {
            Content::Small { .. } => self.uploader.put_small(key, content).await,
            Content::Large { sha256, .. } => self
                .uploader
                .upload_file(path, key, Some(sha256))
                .await
                .map(drop),
        }
    }

    async fn external_file(&self, pinned: Pinned) -> Result<Outcome> {
        let entry = |sha256: String| ExternalEntry {
            path: pinned.path.clone(),
            size: pinned.size,
            sha256,
            mtime_ns: pinned.mtime_ns,
            mode: pinned.mode,
        };
        if let Some(previous) = self.unchanged_since_previous(&pinned)? {
            return Ok(match &pinned.expected_sha256 {
                Some(expected) if *expected != previous => Outcome::Problem(pinned.problem(
                    ProblemKind::Mismatch,
                    format!("record says SHA-256 {expected}, file has {previous}"),
                )),
                _ => Outcome::External(entry(previous)),
            });
        }
        let stored = match self.store_external(&pinned).await {
            Ok(sha256) => sha256,
            Err(e) if hash_mismatch(&e).is_some() => {
                let actual = hash_mismatch(&e).unwrap_or_default();
                let (kind, detail) = match &pinned.expected_sha256 {
                    Some(expected) => (
                        ProblemKind::Mismatch,
                        format!("record says SHA-256 {expected}, file has {actual}"),
                    ),
                    None => (
                        ProblemKind::Changed,
                        "changed while it was read".to_string(),
                    ),
                };
                return Ok(Outcome::Problem(pinned.problem(kind, detail)));
            }
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Outcome::Problem(
                    pinned.problem(ProblemKind::Missing, "vanished before it was read"),
                ))
            }
            Err(e) => return Err(e),
        };
        let after = std::fs::metadata(&pinned.read_from).map(|m| file_stamp(&m));
        match after {
            Ok((size, mtime_ns, _)) if size == pinned.size && mtime_ns == pinned.mtime_ns => {
                Ok(Outcome::External(entry(stored)))
            }
            Ok(_) => Ok(Outcome::Problem(pinned.problem(
                ProblemKind::Changed,
                "size or mtime changed while it was read",
            ))),
            Err(_) => Ok(Outcome::Problem(
                pinned.problem(ProblemKind::Missing, "vanished while it was read"),
            )),
        }
    }

    /// The previous backup's hash of this file, if path, size and mtime are unchanged.
    fn unchanged_since_previous(&self, pinned: &Pinned) -> Result<Option<String>> {
        let Some(spool) = &self.previous_external else {
            return Ok(None);
        };
        let Some(bytes) = spool.get(&pinned.path)? else {
            return Ok(None);
        };
        let previous: ExternalEntry = serde_json::from_slice(&bytes)
            .map_err(|e| Error::manifest("previous backup", e.to_string()))?;
        Ok(
            (previous.size == pinned.size && previous.mtime_ns == pinned.mtime_ns)
                .then_some(previous.sha256),
        )
    }

    /// Puts the file in the content-addressed store unless it is there; returns its hash.
    async fn store_external(&self, pinned: &Pinned) -> Result<String> {
        let path = &pinned.read_from;
        if let Some(expected) = &pinned.expected_sha256 {
            let key = layout::external_blob(expected);
            if self.uploader.exists(&key).await? {
                let content = self.uploader.load(path, pinned.size).await?;
                return match content.sha256() == expected {
                    true => Ok(expected.clone()),
                    false => Err(Error::io(
                        path,
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            upload::HashMismatchError(content.sha256().to_string()),
                        ),
                    )),
                };
            }
            return Ok(self
                .uploader
                .upload_file(path, &key, Some(expected))
                .await?
                .0);
        }
        let content = self.uploader.load(path, pinned.size).await?;
        let key = layout::external_blob(content.sha256());
        if !self.uploader.exists(&key).await? {
            self.store_content(path, &key, &content).await?;
        }
        Ok(content.sha256().to_string())
    }
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
