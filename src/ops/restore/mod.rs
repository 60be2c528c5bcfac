//! Restore onto a fresh host. The backup is walked once
//! ([`Header::referenced`]): each file is fetched from its own object
//! (`download`: `--jobs` requests in flight, large objects in ranges) or, when
//! its content is in a pack, queued by pack and offset and read with coalesced
//! ranges (`packed`); every byte is checked against its size and SHA-256
//! before the file gets its mode and mtime. Files go into staging directories
//! inside the targets (`stage`), renamed into place at the end, all or
//! nothing. Refuses non-empty targets; acts only on validated manifest entries
//! (RocksDB file names; normalized relative paths), creates files with
//! `O_EXCL` (never following a symlink) and mode 0600, restores content,
//! permission bits (never setuid, setgid or sticky) and mtime — never
//! ownership — and the database directory's mode where it creates it. Then
//! (`check`) it opens the restored database read-only, checks that it reaches
//! the backup's sequence number, and that every record's reference resolves to
//! a restored file.

mod check;
mod download;
mod dump;
mod packed;
mod partial;
mod point;
mod stage;

pub use dump::{dump, DumpOptions, DumpReport};
pub use point::{restorable, PointInTime, Restorable};

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::common::references::ReferenceExtractor;
use crate::common::spool::scratch_dir;
use crate::common::tasks::Jobs;
use crate::error::{Error, Problem, Result};
use crate::repo::crypto::sealed::Kind;
use crate::repo::ids::BackupId;
use crate::repo::manifest::{self, Entry, Header, Referenced, Stored};
use crate::repo::pack::{ContentIndex, Located};
use crate::repo::{Repository, Traffic};
use download::{Download, Downloader, PERMISSION_BITS};
use packed::PackedFiles;
use stage::{place_all, Staging};

/// Requests in flight by default: many small objects are latency-bound, so
/// far more than there are cores; large objects are fetched in ranges.
pub const RESTORE_JOBS: usize = 32;

/// How to restore: [`RestoreOptions::default`], then the fields that differ
/// — `db_dir` always (see the crate docs).
#[derive(Clone)]
#[non_exhaustive]
pub struct RestoreOptions {
    /// Backup id or `latest`.
    pub backup: String,
    /// Where the database goes (missing or empty); required.
    pub db_dir: PathBuf,
    /// Where external files go (missing or empty); required when the backup has any.
    pub blob_root: Option<PathBuf>,
    /// Requests in flight (objects, or ranges of a large object).
    pub jobs: Jobs,
    /// The application's extractor, for backups made with one (library mode).
    pub extractor: Option<Arc<dyn ReferenceExtractor>>,
    /// Options to open the restored database with (custom comparators).
    pub open_options: Option<rocksdb::Options>,
    /// Whose `latest`: needed where the repository holds several sources.
    pub source: Option<String>,
    /// A point in time to restore to from a base backup and the segments
    /// `follow` shipped after it (`--to-sequence`, `--to-time`, `--to
    /// latest`); `backup` is then ignored.
    pub to: Option<PointInTime>,
    /// Restore the database (`--no-db`: only external files, and `db_dir`
    /// is not needed).
    pub database: bool,
    /// Which external files to restore.
    pub files: FileSelection,
    /// When only some files are restored: replace files that exist under the
    /// blob root (a file or a symlink itself; never a directory).
    pub overwrite: bool,
}

/// Which external files a restore takes.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum FileSelection {
    /// Every one, into a missing or empty blob root; the restored records'
    /// references are checked against them.
    #[default]
    All,
    /// None (`--db-only`).
    None,
    /// Those a [`FileMatch`] names, merged into a blob root that may hold
    /// other files.
    Matching(FileMatch),
}

/// The external files a partial restore takes: those matching an `include`
/// pattern or referenced by a record at one of `records` (every file when
/// both are empty), less those matching an `exclude` pattern.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileMatch {
    /// Path patterns (globs, as `find` takes them: without a `/`, the file
    /// name; with one, the whole path).
    pub include: Vec<String>,
    /// Path patterns of files not to restore.
    pub exclude: Vec<String>,
    /// Keys of records in the backup's external-files column family.
    pub records: Vec<Vec<u8>>,
}

impl Default for RestoreOptions {
    /// The latest backup, [`RESTORE_JOBS`] requests in flight; `db_dir` must
    /// still be set.
    fn default() -> Self {
        Self {
            backup: "latest".into(),
            db_dir: PathBuf::new(),
            blob_root: None,
            jobs: Jobs::from(RESTORE_JOBS),
            extractor: None,
            open_options: None,
            source: None,
            to: None,
            database: true,
            files: FileSelection::All,
            overwrite: false,
        }
    }
}

impl RestoreOptions {
    /// Whether this restore takes less than the whole backup.
    fn is_partial(&self) -> bool {
        !self.database || self.files != FileSelection::All
    }
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct RestoreReport {
    /// The backup restored.
    pub backup_id: BackupId,
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
    /// References of the restored records whose file is not restored
    /// because the backup (or a segment) could not capture it.
    pub unrestorable: Vec<Problem>,
    /// Requests and bytes this run asked of the store.
    pub traffic: Traffic,
}

/// Restores a backup; see the module docs for what is checked.
pub async fn restore(repo: &Repository, options: &RestoreOptions) -> Result<RestoreReport> {
    let before = repo.traffic();
    if options.database && options.db_dir.as_os_str().is_empty() {
        return Err(Error::Usage(
            "no database directory to restore into: set RestoreOptions::db_dir (--db-dir)".into(),
        ));
    }
    if options.is_partial() && options.to.is_some() {
        return Err(Error::Usage(
            "a restore to a point takes the whole database and its files; \
             --include, --exclude, --record, --no-db and --db-only apply to backups"
                .into(),
        ));
    }
    repo.check_marker(None).await?;
    repo.require_full_key("restore")?;
    let plan = match options.to {
        Some(to) => Some(point::plan(repo, options.source.as_deref(), to).await?),
        None => None,
    };
    let header = match &plan {
        Some(plan) => plan.base.clone(),
        None => manifest::load(repo, &options.backup, options.source.as_deref()).await?,
    };
    if options.is_partial() {
        let mut report = partial::restore_part(repo, options, &header).await?;
        report.traffic = repo.traffic().since(before);
        return Ok(report);
    }
    let blob_root = blob_root(&header, options)?;
    require_empty(&options.db_dir)?;
    if let Some(root) = &blob_root {
        require_empty(root)?;
    }
    let stages = Stages {
        db: Staging::create(&options.db_dir, header.backup_id.as_str())?,
        external: match &blob_root {
            Some(root) => Some(Staging::create(root, header.backup_id.as_str())?),
            None => None,
        },
        tally: Tally::default(),
    };
    let content = Content::load(repo).await?;
    let stats = &header.stats;
    let total_files = stats.db_files.saturating_add(stats.external_files);
    let total_bytes = stats.db_bytes.saturating_add(stats.external_bytes);
    repo.progress().start(Some(total_files), Some(total_bytes));
    let fetch = Fetch {
        repo,
        header: &header,
        stages: &stages,
        content: &content,
        jobs: options.jobs,
    };
    let (problems, replayed) = match &plan {
        None => (fetch.run(|_| true, Vec::new(), 0).await?, None),
        Some(plan) => {
            let (problems, replayed) = fetch.to_point(plan, options).await?;
            (problems, Some(replayed))
        }
    };
    fail_on(problems, |count| {
        format!(
            "restore of {} failed: {count} corrupt or missing object(s); nothing was placed",
            header.backup_id
        )
    })?;
    let mut report = stages.report(&header);
    let placed = place_all(
        [Some(stages.db), stages.external]
            .into_iter()
            .flatten()
            .collect(),
    )?;
    set_db_mode(&header, &placed[0], &options.db_dir)?;
    if let Some(replayed) = &replayed {
        report.sequence_number = replayed.reached;
        report.known_problems += replayed.problems.len() as u64;
    }
    let checks = check::Checks {
        header: &header,
        blob_root: blob_root.as_deref(),
        replayed: replayed.as_ref(),
    };
    let problems = check::check_restored(repo, checks, options, &mut report).await?;
    fail_on(problems, |count| {
        format!(
            "restored backup {} failed its checks ({count} problem(s))",
            header.backup_id
        )
    })?;
    report.traffic = repo.traffic().since(before);
    Ok(report)
}

/// Gives the database directory the backup's mode, where the restore
/// created it.
fn set_db_mode(header: &Header, placed: &stage::Placed, db_dir: &Path) -> Result<()> {
    if let (Some(mode), true) = (header.db_mode, placed.created_target) {
        let permissions = std::fs::Permissions::from_mode(mode & PERMISSION_BITS);
        std::fs::set_permissions(db_dir, permissions).map_err(|e| Error::io(db_dir, e))?;
    }
    Ok(())
}

/// Where external files go: required when the backup has any.
fn blob_root(header: &Header, options: &RestoreOptions) -> Result<Option<PathBuf>> {
    let has_external = header.stats.external_files > 0 || header.problem_count > 0;
    match (&options.blob_root, has_external) {
        (Some(root), _) => Ok(Some(root.clone())),
        (None, false) => Ok(None),
        (None, true) => Err(needs_blob_root(header)),
    }
}

fn needs_blob_root(header: &Header) -> Error {
    Error::Usage(format!(
        "backup {} holds external files; pass --blob-root DIR to restore them",
        header.backup_id
    ))
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

/// Where the content of a restore's files is: pack indexes (and, in a
/// scratch directory, the queues of files to read from packs).
struct Content {
    index: ContentIndex,
    scratch: tempfile::TempDir,
}

impl Content {
    async fn load(repo: &Repository) -> Result<Self> {
        let scratch = scratch_dir("restore")?;
        Ok(Self {
            index: ContentIndex::load(repo, &scratch.path().join("index"), false).await?,
            scratch,
        })
    }

    /// A new queue of files to read from packs (one per round of fetching).
    fn queue(&self, round: usize) -> Result<PackedFiles> {
        PackedFiles::create(&self.scratch.path().join(format!("packed-{round}")))
    }

    /// Downloads every file, each from its object or, when its content is
    /// in a pack, from its pack's queue; returns what was missing or corrupt.
    async fn fetch(
        &self,
        repo: &Repository,
        downloads: impl futures::Stream<Item = Result<(Stored, Download)>>,
        jobs: Jobs,
        round: usize,
    ) -> Result<Vec<Problem>> {
        let queue = self.queue(round)?;
        let unpacked = downloads.try_filter_map(|(stored, download)| {
            futures::future::ready(self.route(&stored, download, &queue))
        });
        let mut problems = Downloader::new(repo, jobs).run(unpacked).await?;
        problems.extend(queue.run(repo, jobs).await?);
        if !problems.is_empty() {
            // Content an unusable index held is looked for elsewhere: name the cause.
            problems.extend(self.index.problems());
        }
        Ok(problems)
    }

    /// Content by hash that is in a pack goes to its pack's queue; every
    /// other file is downloaded from its object.
    fn route(
        &self,
        stored: &Stored,
        download: Download,
        queue: &PackedFiles,
    ) -> Result<Option<Download>> {
        if *stored != Stored::Content {
            return Ok(Some(download));
        }
        match self.index.locate(&download.sha256)? {
            Located::Packed(location) => queue.push(location, download).map(|()| None),
            Located::Object => Ok(Some(download)),
        }
    }
}

/// One round of downloads: the backup's files that `select` picks, and
/// `extra` files (content by hash), each checked.
struct Fetch<'a> {
    repo: &'a Repository,
    header: &'a Header,
    stages: &'a Stages,
    content: &'a Content,
    jobs: Jobs,
}

impl Fetch<'_> {
    async fn run(
        &self,
        select: impl Fn(&Entry) -> bool,
        extra: Vec<Download>,
        round: usize,
    ) -> Result<Vec<Problem>> {
        let (repo, header) = (self.repo, self.header);
        let extra = extra.into_iter().map(|d| Ok((Stored::Content, d)));
        let downloads = header
            .referenced(repo)
            .try_filter(|needed| futures::future::ready(select(&needed.entry)))
            .try_filter_map(|needed| async { self.stages.download(repo, header, needed) })
            .chain(futures::stream::iter(extra));
        self.content.fetch(repo, downloads, self.jobs, round).await
    }

    /// The base's database files, the segments replayed into them, then the
    /// external files the records alive at the point reference.
    async fn to_point(
        &self,
        plan: &point::Plan,
        options: &RestoreOptions,
    ) -> Result<(Vec<Problem>, point::Replayed)> {
        let is_db = |entry: &Entry| matches!(entry, Entry::Db(_));
        let db_problems = self.run(is_db, Vec::new(), 0).await?;
        fail_on(db_problems, |count| {
            format!(
                "restore of {} failed: {count} corrupt or missing database file(s); nothing was placed",
                self.header.backup_id
            )
        })?;
        let stage_root = self.stages.external.as_ref().map(|s| s.path.clone());
        let files = check::external_files(self.header, options, stage_root.as_deref());
        let db_dir = &self.stages.db.path;
        let replayed =
            point::replay(self.repo, plan, db_dir, files, options.open_options.clone()).await?;
        let from_segments = self
            .stages
            .segment_downloads(self.repo, self.header, &replayed)?;
        let wanted = &replayed.wanted;
        let from_base = |entry: &Entry| matches!(entry, Entry::External(e) if matches!(wanted.get(&e.path), Some(None)));
        let problems = self.run(from_base, from_segments, 1).await?;
        Ok((problems, replayed))
    }
}

/// The staging directories of a restore, and what was staged in them.
struct Stages {
    db: Staging,
    external: Option<Staging>,
    tally: Tally,
}

/// Files and bytes staged, counted as the backup is walked.
#[derive(Default)]
struct Tally {
    db_files: AtomicU64,
    db_bytes: AtomicU64,
    external_files: AtomicU64,
    external_bytes: AtomicU64,
}

impl Stages {
    /// The download of a file the backup needs (none for its parts, which
    /// the walk has read), and where its bytes are.
    fn download(
        &self,
        repo: &Repository,
        header: &Header,
        needed: Referenced,
    ) -> Result<Option<(Stored, Download)>> {
        let needed_kind = needed.kind();
        let Referenced {
            stored,
            size,
            sha256,
            entry,
        } = needed;
        let key = match &stored {
            Stored::Object(key) => key.clone(),
            Stored::Content => repo.content_key(&sha256),
        };
        let (dest, mode, mtime_ns) = match entry {
            Entry::Part(_) => return Ok(None),
            Entry::Db(db) => {
                count(&self.tally.db_files, &self.tally.db_bytes, size);
                (self.db.path.join(&db.name), db.mode, None)
            }
            Entry::External(external) => {
                let stage = self
                    .external
                    .as_ref()
                    .ok_or_else(|| needs_blob_root(header))?;
                count(&self.tally.external_files, &self.tally.external_bytes, size);
                (
                    stage.mkdir_for(&external.path)?,
                    Some(external.mode),
                    Some(external.mtime_ns),
                )
            }
        };
        let download = Download {
            key,
            kind: needed_kind,
            dest,
            sha256,
            size,
            mode,
            mtime_ns,
        };
        Ok(Some((stored, download)))
    }

    /// The downloads of the files the replayed segments hold for the point.
    fn segment_downloads(
        &self,
        repo: &Repository,
        header: &Header,
        replayed: &point::Replayed,
    ) -> Result<Vec<Download>> {
        let from_segments = replayed
            .wanted
            .iter()
            .filter_map(|(p, f)| Some((p, f.as_ref()?)));
        let mut downloads = Vec::new();
        for (path, file) in from_segments {
            let stage = self
                .external
                .as_ref()
                .ok_or_else(|| needs_blob_root(header))?;
            count(
                &self.tally.external_files,
                &self.tally.external_bytes,
                file.size,
            );
            downloads.push(Download {
                key: repo.content_key(&file.sha256),
                kind: Kind::Content,
                dest: stage.mkdir_for(path)?,
                sha256: file.sha256,
                size: file.size,
                mode: Some(file.mode),
                mtime_ns: Some(file.mtime_ns),
            });
        }
        Ok(downloads)
    }

    /// The report of what was staged.
    fn report(&self, header: &Header) -> RestoreReport {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        RestoreReport {
            backup_id: header.backup_id.clone(),
            sequence_number: header.sequence_number,
            db_files: read(&self.tally.db_files),
            db_bytes: read(&self.tally.db_bytes),
            external_files: read(&self.tally.external_files),
            external_bytes: read(&self.tally.external_bytes),
            references_checked: 0,
            known_problems: header.problem_count,
            unrestorable: Vec::new(),
            traffic: Traffic::default(),
        }
    }
}

/// One more file of `size` bytes. Sizes come from the manifest: a forged one
/// must not overflow the sum.
fn count(files: &AtomicU64, bytes: &AtomicU64, size: u64) {
    files.fetch_add(1, Ordering::Relaxed);
    let _ = bytes.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
        Some(b.saturating_add(size))
    });
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
