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
mod stage;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::path::Path as ObjectPath;
use serde::Serialize;

use crate::common::references::ReferenceExtractor;
use crate::error::{Error, Problem, Result};
use crate::repo::layout;
use crate::repo::manifest::{self, DbFileEntry, ExternalEntry, Header};
use crate::repo::Repository;
use stage::{collect_problems, download, place_all, Expected, Staging, PERMISSION_BITS};

/// How to restore.
#[derive(Clone)]
pub struct RestoreOptions {
    /// Backup id or `latest`.
    pub backup: String,
    /// Where the database goes (missing or empty).
    pub db_dir: PathBuf,
    /// Where external files go (missing or empty); required when the backup has any.
    pub blob_root: Option<PathBuf>,
    /// Downloads at once.
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
    /// files, `blob_root`, with 8 downloads at once.
    pub fn new(
        backup: impl Into<String>,
        db_dir: impl Into<PathBuf>,
        blob_root: Option<PathBuf>,
    ) -> Self {
        Self {
            backup: backup.into(),
            db_dir: db_dir.into(),
            blob_root,
            jobs: 8,
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
}

/// Restores a backup; see the module docs for what is checked.
pub async fn restore(repo: &Repository, options: &RestoreOptions) -> Result<RestoreReport> {
    repo.check_marker(false).await?;
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
    };
    let jobs = options.jobs.max(1);
    let db_stage = Staging::create(&options.db_dir, &header.backup_id)?;
    let mut problems = download_db(repo, &db_entries, &db_stage, jobs).await?;
    let blob_stage = match &blob_root {
        Some(root) => Some(Staging::create(root, &header.backup_id)?),
        None => None,
    };
    if let Some(stage) = &blob_stage {
        problems.extend(download_external(repo, &header, stage, jobs, &mut report).await?);
    }
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

async fn download_db(
    repo: &Repository,
    entries: &[DbFileEntry],
    stage: &Staging,
    jobs: usize,
) -> Result<Vec<Problem>> {
    let downloads = entries.iter().map(|entry| {
        let dest = stage.path.join(&entry.name);
        let key = ObjectPath::from(entry.object.as_str());
        let expected = Expected {
            sha256: &entry.sha256,
            size: entry.size,
            mode: entry.mode,
            mtime_ns: None,
        };
        download(repo, key, dest, expected)
    });
    collect_problems(downloads, jobs).await
}

/// Downloads the external files part by part (one part in memory at a time).
async fn download_external(
    repo: &Repository,
    header: &Header,
    stage: &Staging,
    jobs: usize,
    report: &mut RestoreReport,
) -> Result<Vec<Problem>> {
    let mut problems = Vec::new();
    for part in header.parts_of::<ExternalEntry>() {
        let entries: Vec<ExternalEntry> = header.read_part(repo, part).await?;
        for entry in &entries {
            if let Some(parent) = Path::new(&entry.path).parent() {
                let dir = stage.path.join(parent);
                std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            }
            report.external_files += 1;
            report.external_bytes = report.external_bytes.saturating_add(entry.size);
        }
        let downloads = entries.iter().map(|entry| {
            let dest = stage.path.join(&entry.path);
            let key = layout::external_blob(&entry.sha256);
            let expected = Expected {
                sha256: &entry.sha256,
                size: entry.size,
                mode: Some(entry.mode),
                mtime_ns: Some(entry.mtime_ns),
            };
            download(repo, key, dest, expected)
        });
        problems.extend(collect_problems(downloads, jobs).await?);
    }
    Ok(problems)
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
