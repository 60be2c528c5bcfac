//! Restore onto a fresh host: parallel download with a hash check of every file,
//! into staging directories inside the targets, renamed into place at the end.
//! Refuses non-empty targets; acts only on validated manifest entries (RocksDB file
//! names; normalized relative paths), creates files with `O_EXCL` (never following
//! a symlink), restores content, mode and mtime — never ownership. Then it opens
//! the restored database read-only, checks that it reaches the backup's sequence
//! number, and checks that every record's reference resolves to a restored file.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::checkpoint::open_checkpoint;
use crate::error::{Error, Problem, ProblemKind, Result};
use crate::layout;
use crate::manifest::{self, DbFileEntry, ExternalEntry, Header};
use crate::scan::{self, normalize_relative_path, ExternalFiles, ReferenceExtractor};
use crate::store::Repository;

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
}

impl RestoreOptions {
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
        }
    }
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub backup_id: String,
    pub sequence_number: u64,
    pub db_files: u64,
    pub db_bytes: u64,
    pub external_files: u64,
    pub external_bytes: u64,
    /// References in the restored records that were checked against restored files.
    pub references_checked: u64,
    /// Problems the backup itself recorded (references it could not capture).
    pub known_problems: u64,
}

/// Restores a backup; see the module docs for what is checked.
pub async fn restore(repo: &Repository, options: &RestoreOptions) -> Result<RestoreReport> {
    repo.check_marker(false).await?;
    let header = manifest::load(repo, &options.backup).await?;
    let has_external = header.stats.external_files > 0 || header.problem_count > 0;
    let blob_root = match (&options.blob_root, has_external) {
        (Some(root), _) => Some(root.clone()),
        (None, false) => None,
        (None, true) => {
            return Err(Error::Usage(format!(
                "backup {} holds {} external file(s); pass --blob-root DIR to restore them",
                header.backup_id, header.stats.external_files
            )))
        }
    };
    require_empty(&options.db_dir)?;
    if let Some(root) = &blob_root {
        require_empty(root)?;
    }
    let db_entries: Vec<DbFileEntry> = header.entries(repo).await?;
    let mut report = RestoreReport {
        backup_id: header.backup_id.clone(),
        sequence_number: header.sequence_number,
        db_files: db_entries.len() as u64,
        db_bytes: db_entries.iter().map(|e| e.size).sum(),
        external_files: 0,
        external_bytes: 0,
        references_checked: 0,
        known_problems: header.problem_count,
    };

    let db_stage = Staging::create(&options.db_dir, &header.backup_id)?;
    let jobs = options.jobs.max(1);
    let downloads = db_entries.iter().map(|entry| {
        let dest = db_stage.path.join(&entry.name);
        let key = ObjectPath::from(entry.object.as_str());
        download(repo, key, dest, &entry.sha256, entry.size, None)
    });
    let mut problems = collect_problems(downloads, jobs).await?;

    let blob_stage = match &blob_root {
        Some(root) => Some(Staging::create(root, &header.backup_id)?),
        None => None,
    };
    if let Some(stage) = &blob_stage {
        for part in header.parts_of::<ExternalEntry>() {
            let entries: Vec<ExternalEntry> = header.read_part(repo, part).await?;
            for entry in &entries {
                if let Some(parent) = Path::new(&entry.path).parent() {
                    let dir = stage.path.join(parent);
                    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
                }
                report.external_files += 1;
                report.external_bytes += entry.size;
            }
            let downloads = entries.iter().map(|entry| {
                let dest = stage.path.join(&entry.path);
                download(
                    repo,
                    layout::external_blob(&entry.sha256),
                    dest,
                    &entry.sha256,
                    entry.size,
                    Some(entry),
                )
            });
            problems.extend(collect_problems(downloads, jobs).await?);
        }
    }
    if !problems.is_empty() {
        return Err(Error::Problems {
            summary: format!(
                "restore of {} failed: {} corrupt or missing object(s); nothing was placed",
                header.backup_id,
                problems.len()
            ),
            problems,
        });
    }
    db_stage.place()?;
    if let Some(stage) = blob_stage {
        stage.place()?;
    }

    let problems =
        check_restored(repo, &header, options, blob_root.as_deref(), &mut report).await?;
    if !problems.is_empty() {
        return Err(Error::Problems {
            summary: format!(
                "restored backup {} failed its checks ({} problem(s))",
                header.backup_id,
                problems.len()
            ),
            problems,
        });
    }
    Ok(report)
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

/// A staging directory inside a restore target; removed unless placed.
struct Staging {
    target: PathBuf,
    path: PathBuf,
    placed: bool,
}

impl Staging {
    fn create(target: &Path, backup_id: &str) -> Result<Self> {
        std::fs::create_dir_all(target).map_err(|e| Error::io(target, e))?;
        let path = target.join(format!(".rockup-restore-{backup_id}"));
        std::fs::create_dir(&path).map_err(|e| Error::io(&path, e))?;
        Ok(Self {
            target: target.to_path_buf(),
            path,
            placed: false,
        })
    }

    /// Renames everything staged into the target.
    fn place(mut self) -> Result<()> {
        for entry in std::fs::read_dir(&self.path).map_err(|e| Error::io(&self.path, e))? {
            let entry = entry.map_err(|e| Error::io(&self.path, e))?;
            let dest = self.target.join(entry.file_name());
            std::fs::rename(entry.path(), &dest).map_err(|e| Error::io(&dest, e))?;
        }
        std::fs::remove_dir(&self.path).map_err(|e| Error::io(&self.path, e))?;
        sync_dir(&self.target)?;
        self.placed = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.placed {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

async fn collect_problems(
    downloads: impl Iterator<Item = impl std::future::Future<Output = Result<Option<Problem>>>>,
    jobs: usize,
) -> Result<Vec<Problem>> {
    futures::stream::iter(downloads)
        .buffer_unordered(jobs)
        .try_filter_map(|p| async move { Ok(p) })
        .try_collect()
        .await
}

/// Downloads one object into a new file, checking size and hash; returns a
/// problem when the object is missing or corrupt.
async fn download(
    repo: &Repository,
    key: ObjectPath,
    dest: PathBuf,
    sha256: &str,
    size: u64,
    external: Option<&ExternalEntry>,
) -> Result<Option<Problem>> {
    let problem = |kind, detail: String| {
        Ok(Some(Problem {
            kind,
            path: key.to_string(),
            record_key: None,
            detail,
        }))
    };
    let result = match repo.store().get(&key).await {
        Ok(result) => result,
        Err(object_store::Error::NotFound { .. }) => {
            return problem(ProblemKind::MissingObject, "object is missing".into())
        }
        Err(e) => return Err(repo.error(e)),
    };
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&dest)
        .await
        .map_err(|e| Error::io(&dest, e))?;
    let mut stream = result.into_stream();
    let mut hasher = Sha256::new();
    let mut written = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| repo.error(e))?;
        hasher.update(&chunk);
        written += chunk.len() as u64;
        file.write_all(&chunk)
            .await
            .map_err(|e| Error::io(&dest, e))?;
    }
    let actual = hex::encode(hasher.finalize());
    if written != size || actual != sha256 {
        return problem(
            ProblemKind::CorruptObject,
            format!(
                "expected {size} bytes with SHA-256 {sha256}, got {written} bytes with {actual}"
            ),
        );
    }
    file.sync_all().await.map_err(|e| Error::io(&dest, e))?;
    let file = file.into_std().await;
    if let Some(entry) = external {
        file.set_permissions(std::fs::Permissions::from_mode(entry.mode))
            .map_err(|e| Error::io(&dest, e))?;
        let mtime = UNIX_EPOCH + Duration::from_nanos(entry.mtime_ns.max(0) as u64);
        file.set_modified(mtime).map_err(|e| Error::io(&dest, e))?;
    }
    Ok(None)
}

/// Opens the restored database and checks its sequence number and references.
async fn check_restored(
    repo: &Repository,
    header: &Header,
    options: &RestoreOptions,
    blob_root: Option<&Path>,
    report: &mut RestoreReport,
) -> Result<Vec<Problem>> {
    let known: HashSet<String> = header
        .entries::<Problem>(repo)
        .await?
        .into_iter()
        .map(|p| p.path)
        .collect();
    let extractor = options.extractor.clone().or_else(|| {
        header
            .external
            .as_ref()?
            .resolver
            .clone()
            .map(|r| Arc::new(r) as Arc<dyn ReferenceExtractor>)
    });
    let files = match (&header.external, blob_root, extractor) {
        (Some(info), Some(root), Some(extractor)) => Some(ExternalFiles {
            blob_root: root.to_path_buf(),
            column_family: info.column_family.clone(),
            extractor,
        }),
        _ => None,
    };
    let db_dir = options.db_dir.clone();
    let open_options = options.open_options.clone();
    let expected = header.sequence_number;
    let (problems, checked) = tokio::task::spawn_blocking(move || -> Result<(Vec<Problem>, u64)> {
        let (db, _) = open_checkpoint(&db_dir, open_options)?;
        let mut problems = Vec::new();
        let reached = db.latest_sequence_number();
        if reached != expected {
            problems.push(Problem {
                kind: ProblemKind::CorruptObject,
                path: db_dir.display().to_string(),
                record_key: None,
                detail: format!("restored database is at sequence number {reached}, the backup at {expected}"),
            });
        }
        let mut checked = 0;
        if let Some(files) = files {
            scan::for_each_reference(&db, &files, |key, item| {
                let reference = match item {
                    Ok(reference) => reference,
                    Err(_) => return true, // recorded as invalid at backup time
                };
                checked += 1;
                let Ok(path) = normalize_relative_path(&reference.path) else { return true };
                if known.contains(&path) {
                    return true;
                }
                let ok = std::fs::symlink_metadata(files.blob_root.join(&path)).is_ok_and(|m| m.is_file());
                if !ok {
                    problems.push(Problem {
                        kind: ProblemKind::Missing,
                        path,
                        record_key: Some(scan::display_key(key)),
                        detail: "referenced by a restored record but not restored".into(),
                    });
                }
                true
            })?;
        }
        Ok((problems, checked))
    })
    .await
    .map_err(|e| Error::io("<restore check>", std::io::Error::other(e)))??;
    report.references_checked = checked;
    Ok(problems)
}
