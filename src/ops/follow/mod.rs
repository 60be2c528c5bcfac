//! Continuous protection: `follow` ships a database's WAL, and the external
//! files its new records reference, as they are written.
//!
//! ```text
//! timeline ──► every interval: poll the WAL ──► capture ──► ship ──► merge
//! (base backup)   (tail: contiguous batches)      (pins)      (content, then the segment)
//! ```
//!
//! A *timeline* is a base backup and the segments that continue it
//! (`timeline`: resumed from the newest backup of the source where the WAL
//! still continues it, else a new base). `capture` pins the files the new
//! batches reference the moment they are read, from the links the watcher made
//! as the files appeared (`source::NewFiles`) or the live tree; `ship` stores
//! their content, then the segment — a segment is committed only once every
//! file it names is in the repository. A store that fails keeps the batches
//! pending (with their pinned files) and they are shipped once it answers; a
//! gap in the WAL (batches never seen) starts a new timeline, never a silent
//! hole. `merge` folds level-0 segments into larger ones so that a restore to
//! any point reads few objects. Lag is reported after every poll
//! ([`FollowStatus`]), and written as Prometheus metrics (`metrics`).

mod capture;
mod merge;
mod metrics;
mod timeline;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::common::durable::{replace_file, STATUS_FILE_MODE};
use crate::error::{Error, Result};
use crate::ops::backup::BackupOptions;
use crate::repo::content::{ContentOptions, ContentStore};
use crate::repo::ids::BackupId;
use crate::repo::upload::Uploader;
use crate::repo::{Repository, Traffic};
use crate::source::{default_work_base, NewFiles, WalTail, WorkDir};
use capture::Pending;
use timeline::Timeline;

/// Bytes of batches in one level-0 segment at most (a busy poll is cut into
/// several segments).
const SEGMENT_BYTES: usize = 8 << 20;
/// Pending (unshipped) batches held in memory at most while the store fails;
/// beyond it the WAL is left where it is and read later.
const PENDING_BYTES: usize = 64 << 20;

/// How to follow: [`FollowOptions::default`], then the fields that differ.
#[derive(Clone)]
#[non_exhaustive]
pub struct FollowOptions {
    /// How base backups are taken (external files, work directory, source
    /// name, lease…); its `external` also says which new files to capture.
    pub backup: BackupOptions,
    /// How often the WAL is read (`--interval`).
    pub interval: Duration,
    /// A new base backup after this long (`--base-every`); `None`: only
    /// when the WAL cannot be continued.
    pub base_every: Option<Duration>,
    /// Lag beyond which a warning is logged (`--lag-warning`).
    pub lag_warning: Duration,
    /// Where Prometheus metrics are written after every poll (`--metrics-file`).
    pub metrics_file: Option<PathBuf>,
    /// Where the shipped sequence number is published after every poll
    /// (`--safepoint-file`): an application that deletes an external file
    /// only once the batch deleting its record is at or below this number
    /// loses no file to the lag (see the README).
    pub safepoint_file: Option<PathBuf>,
    /// How long links of new files are kept for records not read yet
    /// (`--keep-new-files`); at least three intervals.
    pub keep_new_files: Duration,
    /// Level-0 segments merged into one level-1 segment, and so on up.
    pub merge_fan_in: usize,
}

impl Default for FollowOptions {
    fn default() -> Self {
        Self {
            backup: BackupOptions::default(),
            interval: Duration::from_secs(1),
            base_every: Some(Duration::from_secs(24 * 3600)),
            lag_warning: Duration::from_secs(60),
            metrics_file: None,
            safepoint_file: None,
            keep_new_files: Duration::from_secs(60),
            merge_fan_in: 60,
        }
    }
}

/// Where `follow` stands, after every poll.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[non_exhaustive]
pub struct FollowStatus {
    /// The base backup of the timeline followed (the segments continue it).
    pub base: BackupId,
    /// The last sequence number shipped (committed in a segment or the base).
    pub shipped_sequence: u64,
    /// The last sequence number read from the WAL.
    pub read_sequence: u64,
    /// Sequence numbers read but not shipped yet.
    pub lag_sequences: u64,
    /// Seconds since everything the WAL held was shipped: what a host
    /// lost now would lose at most.
    pub lag_seconds: f64,
    /// When everything up to `shipped_sequence` had been read.
    pub shipped_at: DateTime<Utc>,
    /// Segments stored by this run.
    pub segments: u64,
    /// External files captured by this run.
    pub files: u64,
    /// References this run could not capture.
    pub problems: u64,
    /// Base backups this run took.
    pub bases: u64,
    /// New files the watcher linked, and those gone before it could.
    pub new_files_linked: u64,
    /// New files deleted before the watcher could link them.
    pub new_files_missed: u64,
    /// The last store failure, while batches wait for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// Requests and bytes this run asked of the store.
    pub traffic: Traffic,
}

/// Follows the database at `db_dir` into `repo` until `stop` completes,
/// calling `status` after every poll. Returns the last status; stopping
/// ships what was read first (once).
pub async fn follow(
    repo: &Repository,
    db_dir: &std::path::Path,
    options: &FollowOptions,
    mut status: impl FnMut(&FollowStatus),
    stop: impl std::future::Future<Output = ()>,
) -> Result<FollowStatus> {
    repo.check_marker(Some(options.backup.format)).await?;
    let before = repo.traffic();
    let mut stop = std::pin::pin!(stop);
    let work = follow_work_dir(db_dir, options)?;
    let new_files = match &options.backup.external {
        Some(external) => Some(NewFiles::start(
            &external.blob_root,
            work.path().join("new-files"),
        )?),
        None => None,
    };
    let mut run = Run::new(repo, db_dir, options, &work, new_files.as_ref());
    loop {
        let mut tail = WalTail::open(&timeline::wal_dir(db_dir)?)?;
        // A base backup can take long: a stop meanwhile ends the run (the
        // backup is cancelled and leaves nothing committed).
        let timeline = tokio::select! {
            started = Timeline::start(repo, db_dir, options, &mut tail, &mut run) => started?,
            _ = stop.as_mut() => return Err(Error::Interrupted("a stop before the base backup was committed")),
        };
        match run
            .follow_timeline(timeline, &mut tail, &mut stop, &mut status, before)
            .await?
        {
            Ended::Stopped(last) => return Ok(last),
            Ended::NewTimeline => continue,
        }
    }
}

/// How following one timeline ended.
enum Ended {
    Stopped(FollowStatus),
    NewTimeline,
}

/// One `follow` process's state across timelines.
struct Run<'a> {
    repo: &'a Repository,
    db_dir: PathBuf,
    options: &'a FollowOptions,
    work: &'a WorkDir,
    new_files: Option<&'a NewFiles>,
    /// Where the content of captured files goes: a store per timeline.
    content: Option<TimelineContent>,
    status: Option<FollowStatus>,
    pins: u64,
    timelines: u64,
    bases: u64,
}

impl<'a> Run<'a> {
    fn new(
        repo: &'a Repository,
        db_dir: &std::path::Path,
        options: &'a FollowOptions,
        work: &'a WorkDir,
        new_files: Option<&'a NewFiles>,
    ) -> Self {
        Self {
            repo,
            db_dir: db_dir.to_path_buf(),
            options,
            work,
            new_files,
            content: None,
            status: None,
            pins: 0,
            timelines: 0,
            bases: 0,
        }
    }

    /// Follows `timeline` until stopped or a gap. When a new base is due it
    /// is taken on the same tail, and the old timeline continues up to the
    /// new base's sequence number, so that no point between is lost.
    async fn follow_timeline(
        &mut self,
        mut timeline: Timeline,
        tail: &mut WalTail,
        stop: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
        status: &mut impl FnMut(&FollowStatus),
        before: Traffic,
    ) -> Result<Ended> {
        let mut pending = Pending::default();
        let mut next: Option<(Timeline, Pending)> = None;
        let mut stopping = false;
        loop {
            let polled_at = Instant::now();
            let mut read_at = Utc::now();
            // Whether everything in the WAL was read (the lag ends only then).
            let mut read_all = false;
            if pending.bytes() < PENDING_BYTES {
                let polled = tail.poll(SEGMENT_BYTES)?;
                // Every batch polled was written by now: a mark taken after
                // the read never claims a batch written later than its time.
                read_at = Utc::now();
                match polled {
                    Ok(polled) => {
                        read_all = polled.reached_end;
                        let taken = (&timeline, &mut pending, &mut next);
                        if let Some(foreign) = self.take(taken, polled.batches, read_at).await? {
                            tracing::warn!(timeline = %timeline.base, "{foreign}: starting a new base backup");
                            self.ship_all(&mut timeline, &mut pending).await?;
                            return Ok(Ended::NewTimeline);
                        }
                    }
                    Err(gap) => {
                        tracing::warn!(%gap, timeline = %timeline.base, "starting a new base backup");
                        self.ship_all(&mut timeline, &mut pending).await?;
                        return Ok(Ended::NewTimeline);
                    }
                }
            }
            let waiting = match self.ship_all(&mut timeline, &mut pending).await {
                Ok(()) => None,
                Err(e) if e.retryable() && !stopping => Some(e.to_string()),
                Err(e) => return Err(e),
            };
            if waiting.is_none() && pending.is_empty() {
                timeline.shipped_read(read_at, read_all);
                if let Some((successor, carried)) =
                    next.take_if(|(s, _)| timeline.shipped >= s.base_sequence)
                {
                    tracing::info!(ended = %timeline.base, at = timeline.shipped, next = %successor.base, "timeline handed over");
                    (timeline, pending) = (successor, carried);
                    continue;
                }
            }
            merge::maybe_merge(self.repo, &mut timeline, self.options.merge_fan_in).await;
            let current = self.report(&timeline, tail, waiting, before);
            self.publish(&current, status);
            if let Some(links) = self.new_files {
                links.expire(polled_at - self.keep_new_files());
            }
            if stopping {
                return Ok(Ended::Stopped(current));
            }
            if next.is_none() && pending.is_empty() && timeline.base_is_due(self.options.base_every)
            {
                let db_dir = self.db_dir.clone();
                let base = Timeline::new_base(self.repo, &db_dir, self.options, self).await?;
                next = Some((base, Pending::default()));
                continue;
            }
            // Behind, the next poll starts at once.
            let wait = match read_all {
                true => self.options.interval.saturating_sub(polled_at.elapsed()),
                false => Duration::ZERO,
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.as_mut() => stopping = true,
            }
        }
    }

    /// Captures polled batches: those up to the next timeline's base
    /// into the current one, the rest into the next — up to the first batch
    /// its timeline's base cannot take (it writes to a column family created
    /// since): that ends the timeline, and what it says why is returned.
    async fn take(
        &mut self,
        (timeline, pending, next): (&Timeline, &mut Pending, &mut Option<(Timeline, Pending)>),
        batches: Vec<crate::source::Batch>,
        read_at: DateTime<Utc>,
    ) -> Result<Option<String>> {
        let boundary = next.as_ref().map(|(successor, _)| successor.base_sequence);
        let (mut old, mut new): (Vec<_>, Vec<_>) = batches
            .into_iter()
            .partition(|b| boundary.is_none_or(|base| b.end() - 1 <= base));
        let mut foreign = cut_at_foreign(timeline, &mut old);
        if foreign.is_some() {
            new.clear();
        }
        if !old.is_empty() {
            pending.append(self.capture(timeline, old, read_at).await?);
        }
        if let Some((successor, carried)) = next.as_mut() {
            foreign = foreign.or_else(|| cut_at_foreign(successor, &mut new));
            if !new.is_empty() {
                carried.append(self.capture(successor, new, read_at).await?);
            }
        }
        Ok(foreign)
    }

    fn keep_new_files(&self) -> Duration {
        self.options.keep_new_files.max(self.options.interval * 3)
    }

    /// Pins the files `batches` reference, at once.
    async fn capture(
        &mut self,
        timeline: &Timeline,
        batches: Vec<crate::source::Batch>,
        read_at: DateTime<Utc>,
    ) -> Result<Pending> {
        self.pins += 1;
        let pins = self.work.path().join(format!("pins-{}", self.pins));
        let links = self.new_files.map(|n| n.dir().to_path_buf());
        capture::capture(
            timeline,
            batches,
            read_at,
            &self.options.backup,
            pins,
            links,
        )
        .await
    }

    /// Ships every pending batch, a segment at a time.
    async fn ship_all(&mut self, timeline: &mut Timeline, pending: &mut Pending) -> Result<()> {
        while !pending.is_empty() {
            let jobs = self.options.backup.jobs.get();
            let repo = self.repo;
            let content = self.content_of(timeline)?;
            let shipped = capture::ship(repo, content, timeline, pending, jobs).await?;
            let totals = self
                .status
                .get_or_insert_with(|| FollowStatus::empty(timeline));
            totals.segments += 1;
            totals.files += shipped.files;
            totals.problems += shipped.problems;
        }
        Ok(())
    }

    /// The content store of `timeline`. Each timeline has its own, which
    /// takes for stored only what that timeline stored: follow holds no lock
    /// between base backups, so content it did not see referenced (the
    /// repository's, or an earlier timeline's once its base is forgotten)
    /// may be deleted by a prune, while what its own segments reference is
    /// kept as long as its base — the source's newest — is.
    fn content_of(&mut self, timeline: &Timeline) -> Result<&ContentStore> {
        if self
            .content
            .as_ref()
            .is_none_or(|c| c.base != timeline.base)
        {
            if let Some(old) = self.content.take() {
                old.remove();
            }
            self.content = Some(TimelineContent::new(
                self.repo,
                self.options,
                self.work,
                &timeline.base,
            )?);
        }
        Ok(&self.content.as_ref().expect("just made").store)
    }

    fn report(
        &mut self,
        timeline: &Timeline,
        tail: &WalTail,
        waiting: Option<String>,
        before: Traffic,
    ) -> FollowStatus {
        let mut status = self
            .status
            .clone()
            .unwrap_or_else(|| FollowStatus::empty(timeline));
        let read = tail.next_sequence() - 1;
        let lag = (Utc::now() - timeline.current_at).num_milliseconds().max(0);
        status.base = timeline.base.clone();
        status.shipped_sequence = timeline.shipped;
        status.read_sequence = read;
        status.lag_sequences = read.saturating_sub(timeline.shipped);
        status.lag_seconds = lag as f64 / 1000.0;
        status.shipped_at = timeline.shipped_at;
        status.bases = self.bases;
        if let Some(links) = self.new_files {
            let watched = links.stats();
            status.new_files_linked = watched.linked;
            status.new_files_missed = watched.missed;
        }
        status.waiting = waiting;
        status.traffic = self.repo.traffic().since(before);
        self.status = Some(status.clone());
        status
    }

    fn publish(&self, status: &FollowStatus, callback: &mut impl FnMut(&FollowStatus)) {
        if status.lag_seconds > self.options.lag_warning.as_secs_f64() {
            tracing::warn!(
                lag_seconds = status.lag_seconds,
                lag_sequences = status.lag_sequences,
                waiting = status.waiting.as_deref().unwrap_or(""),
                "follow is behind the database by more than --lag-warning"
            );
        }
        if let Some(path) = &self.options.metrics_file {
            if let Err(e) = metrics::write(path, status) {
                tracing::warn!(error = %e, "the metrics file could not be written");
            }
        }
        if let Some(path) = &self.options.safepoint_file {
            let line = format!("{}\n", status.shipped_sequence);
            if let Err(e) = replace_file(path, line.as_bytes(), STATUS_FILE_MODE) {
                tracing::warn!(error = %e, "the safepoint file could not be written");
            }
        }
        callback(status);
    }
}

impl FollowStatus {
    fn empty(timeline: &Timeline) -> Self {
        Self {
            base: timeline.base.clone(),
            shipped_sequence: timeline.shipped,
            read_sequence: timeline.shipped,
            lag_sequences: 0,
            lag_seconds: 0.0,
            shipped_at: timeline.shipped_at,
            segments: 0,
            files: 0,
            problems: 0,
            bases: 0,
            new_files_linked: 0,
            new_files_missed: 0,
            waiting: None,
            traffic: Traffic::default(),
        }
    }
}

/// Cuts `batches` before the first that `timeline`'s base cannot take; says
/// which and why.
fn cut_at_foreign(timeline: &Timeline, batches: &mut Vec<crate::source::Batch>) -> Option<String> {
    let (at, cf_id) = timeline.foreign_batch(batches)?;
    let sequence = batches[at].sequence;
    batches.truncate(at);
    Some(format!(
        "batch {sequence} writes to column family id {cf_id}, which base {} does not have (created since)",
        timeline.base
    ))
}

/// The content writer of one timeline: packs small files as a backup does.
struct TimelineContent {
    base: BackupId,
    store: ContentStore,
    dir: PathBuf,
}

impl TimelineContent {
    fn new(
        repo: &Repository,
        options: &FollowOptions,
        work: &WorkDir,
        base: &BackupId,
    ) -> Result<Self> {
        let backup = &options.backup;
        let content_options = ContentOptions {
            compression_level: backup.compression_level,
            pack: backup.format.packs(),
        };
        let uploader = Uploader::new(repo.clone(), backup.memory_budget);
        let dir = work.path().join(format!("content-{base}"));
        let store = ContentStore::own_only(uploader, &dir, content_options)?;
        Ok(Self {
            base: base.clone(),
            store,
            dir,
        })
    }

    /// Closes the store and removes its scratch index.
    fn remove(self) {
        let Self { store, dir, .. } = self;
        drop(store);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::debug!(error = %e, dir = %dir.display(), "a scratch index stays until the run ends");
        }
    }
}

/// The process's work directory: links of new files and pins, on the blob
/// root's filesystem by default.
fn follow_work_dir(db_dir: &std::path::Path, options: &FollowOptions) -> Result<WorkDir> {
    let blob_root = options
        .backup
        .external
        .as_ref()
        .map(|e| e.blob_root.as_path());
    if let Some(root) = blob_root.filter(|root| !root.is_dir()) {
        return Err(Error::Usage(format!(
            "blob root {} is not a directory; check --blob-root",
            root.display()
        )));
    }
    let base = options
        .backup
        .work_dir
        .clone()
        .unwrap_or_else(|| default_work_base(db_dir, blob_root));
    crate::source::check_work_base(&base, db_dir, blob_root)?;
    WorkDir::create(&base, &format!("follow-{}", BackupId::new(Utc::now())))
}
