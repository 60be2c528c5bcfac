//! Restore onto a fresh host: parallel download with a hash check of every file,
//! into staging directories inside the targets, renamed into place at the end.
//! Refuses non-empty targets; acts only on validated manifest entries (RocksDB file
//! names; normalized relative paths), creates files with `O_EXCL` (never following
//! a symlink) and mode 0600, restores content, permission bits (never setuid,
//! setgid or sticky) and mtime — never ownership — and the database directory's
//! mode where it creates it; placement is all or nothing. Then it opens
//! the restored database read-only, checks that it reaches the backup's sequence
//! number, and checks that every record's reference resolves to a restored file.

mod check;
mod download;
mod packed;
mod stage;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::{Stream, StreamExt, TryStreamExt};

use object_store::path::Path as ObjectPath;
use serde::Serialize;

use crate::common::references::ReferenceExtractor;
use crate::common::spool::scratch_dir;
use crate::error::{Error, Problem, Result};
use crate::repo::layout;
use crate::repo::manifest::{self, DbFileEntry, ExternalEntry, Header, Stored};
use crate::repo::pack::{ContentIndex, Located};
use crate::repo::{Repository, Traffic};
use download::{Downloader, Job, PERMISSION_BITS};
use packed::PackedFiles;
use stage::{place_all, Staging};

/// Requests in flight by default: many small objects are latency-bound, so
/// far more than there are cores; large objects are fetched in ranges.
pub const RESTORE_JOBS: usize = 32;

/// How to restore.
#[derive(Clone)]
pub struct RestoreOptions {
    /// Backup id or `latest`.
    pub backup: String,
    /// Where the database goes (missing or empty).
    pub db_dir: PathBuf,
    /// Where external files go (missing or empty); required when the backup has any.
    pub blob_root: Option<PathBuf>,
    /// Requests in flight (objects, or ranges of a large object).
    pub jobs: usize,
    /// The application's extractor, for backups made with one (library mode).
    pub extractor: Option<Arc<dyn ReferenceExtractor>>,
    /// Options to open the restored database with (custom comparators).
    pub open_options: Option<rocksdb::Options>,
    /// Whose `latest`: needed where the repository holds several sources.
    pub source: Option<String>,
}

impl RestoreOptions {
    /// Restores `backup` (an id or `latest`) into `db_dir` and, for its external
    /// files, `blob_root`, with [`RESTORE_JOBS`] requests in flight.
    pub fn new(
        backup: impl Into<String>,
        db_dir: impl Into<PathBuf>,
        blob_root: Option<PathBuf>,
    ) -> Self {
        Self {
            backup: backup.into(),
            db_dir: db_dir.into(),
            blob_root,
            jobs: RESTORE_JOBS,
            extractor: None,
            open_options: None,
            source: None,
        }
    }
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// The backup restored.
    pub backup_id: String,
    /// The sequence number the restored database reached (the backup's).
    pub sequence_number: u64,
    /// Database files restored.
    pub db_files: u64,
    /// Bytes of the database files restored.
    pub db_bytes: u64,
    /// External files restored.
    pub external_files: u64,
    /// Bytes of the external files restored.
    pub external_bytes: u64,
    /// References in the restored records that were checked against restored files.
    pub references_checked: u64,
    /// Problems the backup itself recorded (references it could not capture).
    pub known_problems: u64,
    /// Requests and bytes this run asked of the store.
    pub traffic: Traffic,
}

/// Restores a backup; see the module docs for what is checked.
pub async fn restore(repo: &Repository, options: &RestoreOptions) -> Result<RestoreReport> {
    let before = repo.traffic();
    repo.check_marker(None).await?;
    let header = manifest::load(repo, &options.backup, options.source.as_deref()).await?;
    let blob_root = blob_root(&header, options)?;
    require_empty(&options.db_dir)?;
    if let Some(root) = &blob_root {
        require_empty(root)?;
    }
    let db_entries: Vec<DbFileEntry> = header.entries(repo).await?;
    let mut report = RestoreReport {
        backup_id: header.backup_id.clone(),
        sequence_number: header.sequence_number,
        db_files: db_entries.len() as u64,
        // Sizes come from the manifest: a forged one must not overflow the sum.
        db_bytes: db_entries
            .iter()
            .fold(0, |sum, e| sum.saturating_add(e.size)),
        external_files: 0,
        external_bytes: 0,
        references_checked: 0,
        known_problems: header.problem_count,
        traffic: Traffic::default(),
    };
    let db_stage = Staging::create(&options.db_dir, &header.backup_id)?;
    let blob_stage = match &blob_root {
        Some(root) => Some(Staging::create(root, &header.backup_id)?),
        None => None,
    };
    let tally = Tally::default();
    let total_files = report.db_files.saturating_add(header.stats.external_files);
    let total_bytes = report.db_bytes.saturating_add(header.stats.external_bytes);
    let content = Content::load(repo).await?;
    repo.progress().start(Some(total_files), Some(total_bytes));
    let db_jobs = db_entries.iter().map(|entry| db_job(entry, &db_stage));
    let jobs = futures::stream::iter(db_jobs)
        .chain(external_jobs(repo, &header, blob_stage.as_ref(), &tally))
        .try_filter_map(|job| async { content.route(job) });
    let mut problems = Downloader::new(repo, options.jobs).run(jobs).await?;
    problems.extend(content.packed.run(repo, options.jobs).await?);
    if !problems.is_empty() {
        // Content an unusable index held is looked for elsewhere: name the cause.
        problems.extend(content.index.problems());
    }
    report.external_files = tally.files.into_inner();
    report.external_bytes = tally.bytes.into_inner();
    fail_on(problems, |count| {
        format!(
            "restore of {} failed: {count} corrupt or missing object(s); nothing was placed",
            header.backup_id
        )
    })?;
    let placed = place_all([Some(db_stage), blob_stage].into_iter().flatten().collect())?;
    if let (Some(mode), true) = (header.db_mode, placed[0].created_target) {
        let permissions = std::fs::Permissions::from_mode(mode & PERMISSION_BITS);
        std::fs::set_permissions(&options.db_dir, permissions)
            .map_err(|e| Error::io(&options.db_dir, e))?;
    }
    let problems =
        check::check_restored(repo, &header, options, blob_root.as_deref(), &mut report).await?;
    fail_on(problems, |count| {
        format!(
            "restored backup {} failed its checks ({count} problem(s))",
            header.backup_id
        )
    })?;
    report.traffic = repo.traffic().since(before);
    Ok(report)
}

/// Where external files go: required when the backup has any.
fn blob_root(header: &Header, options: &RestoreOptions) -> Result<Option<PathBuf>> {
    let has_external = header.stats.external_files > 0 || header.problem_count > 0;
    match (&options.blob_root, has_external) {
        (Some(root), _) => Ok(Some(root.clone())),
        (None, false) => Ok(None),
        (None, true) => Err(Error::Usage(format!(
            "backup {} holds {} external file(s); pass --blob-root DIR to restore them",
            header.backup_id, header.stats.external_files
        ))),
    }
}

/// `Err(Problems)` when there are any, summarized from their number.
fn fail_on(problems: Vec<Problem>, summary: impl FnOnce(usize) -> String) -> Result<()> {
    if problems.is_empty() {
        return Ok(());
    }
    Err(Error::Problems {
        summary: summary(problems.len()),
        problems,
    })
}

/// Where the content of a restore's files is: pack indexes, and the files
/// queued for reading from packs; a scratch directory holds both.
struct Content {
    index: ContentIndex,
    packed: PackedFiles,
    _scratch: tempfile::TempDir,
}

impl Content {
    async fn load(repo: &Repository) -> Result<Self> {
        let scratch = scratch_dir("restore")?;
        Ok(Self {
            index: ContentIndex::load(repo, &scratch.path().join("index"), false).await?,
            packed: PackedFiles::create(&scratch.path().join("packed"))?,
            _scratch: scratch,
        })
    }

    /// A job whose key is a blob (`blobs/sha256/…`) goes to its pack's queue
    /// when the content is packed; every other job is downloaded as is.
    fn route(&self, job: Job) -> Result<Option<Job>> {
        if job.key != layout::external_blob(&job.sha256) {
            return Ok(Some(job));
        }
        match self.index.locate(&job.sha256)? {
            Located::Packed(location) => self.packed.push(location, job).map(|()| None),
            Located::Blob => Ok(Some(job)),
        }
    }
}

fn db_job(entry: &DbFileEntry, stage: &Staging) -> Result<Job> {
    let key = match entry.stored() {
        Stored::Object(object) => ObjectPath::from(object),
        Stored::Content(sha256) => layout::external_blob(sha256),
    };
    Ok(Job {
        key,
        dest: stage.path.join(&entry.name),
        sha256: entry.sha256.clone(),
        size: entry.size,
        mode: entry.mode,
        mtime_ns: None,
    })
}

/// External files counted as their parts are read.
#[derive(Default)]
struct Tally {
    files: AtomicU64,
    bytes: AtomicU64,
}

/// The external files' jobs, part by part (one part in memory at a time),
/// each part's directories created in staging before its files are fetched.
fn external_jobs<'a>(
    repo: &'a Repository,
    header: &'a Header,
    stage: Option<&'a Staging>,
    tally: &'a Tally,
) -> impl Stream<Item = Result<Job>> + 'a {
    let parts = stage.map(|stage| {
        header
            .parts_of::<ExternalEntry>()
            .map(move |part| (stage, part))
    });
    futures::stream::iter(parts.into_iter().flatten())
        .then(move |(stage, part)| async move {
            let entries: Vec<ExternalEntry> = header.read_part(repo, part).await?;
            let jobs = entries
                .into_iter()
                .map(|entry| external_job(entry, stage, tally))
                .collect::<Vec<_>>();
            Ok::<_, Error>(futures::stream::iter(jobs))
        })
        .try_flatten()
}

fn external_job(entry: ExternalEntry, stage: &Staging, tally: &Tally) -> Result<Job> {
    if let Some(parent) = Path::new(&entry.path).parent() {
        let dir = stage.path.join(parent);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    tally.files.fetch_add(1, Ordering::Relaxed);
    let _ = tally
        .bytes
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
            Some(b.saturating_add(entry.size))
        });
    Ok(Job {
        key: layout::external_blob(&entry.sha256),
        dest: stage.path.join(&entry.path),
        size: entry.size,
        mode: Some(entry.mode),
        mtime_ns: Some(entry.mtime_ns),
        sha256: entry.sha256,
    })
}

fn require_empty(dir: &Path) -> Result<()> {
    match std::fs::read_dir(dir).map(|mut entries| entries.next().is_some()) {
        Ok(true) => Err(Error::TargetNotEmpty {
            path: dir.to_path_buf(),
        }),
        Ok(false) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(dir, e)),
    }
}
