//! Retention and garbage collection. [`RetentionPolicy::keep`] (`retention`)
//! decides which backups stay. [`prune`] then, under a prune lock (no backup may
//! run meanwhile, see `crate::repo::lock`; checked before every deletion):
//! 1. deletes the manifests of the backups to forget (each disappears at once:
//!    a backup exists if and only if its manifest does), then their own objects;
//! 2. walks every kept backup ([`Header::referenced`]) and the segments that
//!    continue it (those no merged segment covers) into scratch spools —
//!    objects by key, content by hash — so the set never has to fit in memory;
//! 3. weighs every pack (`packs`: deleted, kept or repacked);
//! 4. streams the repository listing and deletes every object nothing
//!    references — table files, content objects, objects of interrupted
//!    backups — once it is older than the grace period.
//!
//! A repository with an unreadable manifest is not garbage-collected: what that
//! backup references cannot be known.

mod packs;
mod retention;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use object_store::path::Path;
use object_store::ObjectMeta;
use serde::Serialize;

use crate::common::spool::{scratch_dir, Spool};
use crate::error::{Error, Result};
use crate::repo::crypto::keys::ContentName;
use crate::repo::ids::BackupId;
use crate::repo::layout;
use crate::repo::lock::{self, locked, LockKind, LockRequest, RepoLock, DEFAULT_LEASE};
use crate::repo::manifest::{self, Header, Stored};
use crate::repo::segment::{self, covers, SegmentRef};
use crate::repo::{Repository, Traffic};

use packs::PackPlan;
pub use packs::{RepackReport, DEFAULT_REPACK_BELOW};
use retention::Candidate;
pub use retention::{GroupBy, RetentionPolicy, UNLIMITED};

/// Objects deleted per bulk request batch.
const DELETE_BATCH: usize = 1000;

/// What `prune` does: [`PruneOptions::default`] (a 24-hour grace period,
/// no retention rule), then the fields that differ — a rule always (see the
/// crate docs).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PruneOptions {
    /// Which backups to keep.
    pub policy: RetentionPolicy,
    /// Unreferenced objects younger than this are left alone.
    pub grace: Duration,
    /// Report what would be deleted, delete nothing.
    pub dry_run: bool,
    /// Apply the policy to this source's backups only.
    pub source: Option<String>,
    /// How backups are grouped for the policy (`--group-by`; by source).
    pub group_by: GroupBy,
    /// Forget these backups (and no others) instead of applying a policy
    /// (`rockup forget ID…`).
    pub forget: Vec<BackupId>,
    /// How long the prune's lock stays live without renewal.
    pub lease: Duration,
    /// How long to wait for the backups or prune in the way to finish
    /// (`--retry-lock`); zero fails at once.
    pub retry_lock: Duration,
    /// Packs less than this share (0–1) referenced are repacked
    /// ([`DEFAULT_REPACK_BELOW`]); 0 never repacks.
    pub repack_below: f64,
}

impl Default for PruneOptions {
    fn default() -> Self {
        Self {
            policy: RetentionPolicy::default(),
            grace: Duration::from_secs(24 * 3600),
            dry_run: false,
            source: None,
            group_by: GroupBy::default(),
            forget: Vec::new(),
            lease: DEFAULT_LEASE,
            retry_lock: Duration::ZERO,
            repack_below: DEFAULT_REPACK_BELOW,
        }
    }
}

/// A backup that stays, and why.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Kept {
    /// The backup kept.
    pub backup_id: BackupId,
    /// The rules that keep it (`newest`, `last`, `daily`, `tag k=v`, …).
    pub reasons: Vec<String>,
}

/// What `prune` did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct PruneReport {
    /// Nothing was deleted: the report says what would be.
    pub dry_run: bool,
    /// Backups kept, with their reasons.
    pub kept: Vec<Kept>,
    /// Backups forgotten (their manifests deleted), by id.
    pub forgotten: Vec<BackupId>,
    /// Objects deleted (manifests included).
    pub deleted_objects: u64,
    /// Bytes of the objects deleted.
    pub deleted_bytes: u64,
    /// Unreferenced objects left because they are younger than the grace period.
    pub young_unreferenced: u64,
    /// Objects under the repository prefix that are not rockup's (their keys
    /// are not in its layout): never deleted.
    pub foreign_objects: u64,
    /// Locks whose lease had run out (their runs are gone), removed.
    pub stale_locks_removed: Vec<String>,
    /// Packs repacked: bytes reclaimed and re-uploaded.
    pub repack: RepackReport,
    /// Requests and bytes this run asked of the store.
    pub traffic: Traffic,
}

/// Applies `options.policy` (or forgets the backups `options.forget`
/// names) and collects the repository's garbage.
pub async fn prune(repo: &Repository, options: &PruneOptions) -> Result<PruneReport> {
    match (options.policy.is_empty(), options.forget.is_empty()) {
        (true, true) => return Err(Error::Usage(
            "prune needs a retention rule (--keep-last, --keep-hourly/-daily/-weekly/-monthly/-yearly, --keep-within[-*] or --keep-tag), or `rockup forget ID…` the backups to forget".into(),
        )),
        (false, false) => return Err(Error::Usage(
            "name the backups to forget or give a retention rule, not both".into(),
        )),
        _ => {}
    }
    let before = repo.traffic();
    repo.check_marker(None).await?;
    repo.require_full_key("prune")?;
    // Also for a dry run: its report is what a prune would do now, and the
    // lock tells the store's time.
    let request = LockRequest {
        kind: LockKind::Prune,
        operation: "prune",
        id: BackupId::new(Utc::now()),
        lease: options.lease,
        wait: options.retry_lock,
    };
    let report = locked(repo, request, async |lock| {
        lock.check_clock()?;
        collect(repo, options, lock).await
    })
    .await?;
    Ok(PruneReport {
        traffic: repo.traffic().since(before),
        ..report
    })
}

/// Forgets and collects under `lock`, whose writing tells the store's time.
async fn collect(
    repo: &Repository,
    options: &PruneOptions,
    lock: &RepoLock,
) -> Result<PruneReport> {
    let now = lock.written_at();
    // Locks whose lease ran out go first, before any manifest is read: a
    // backup that lost its lock finds it gone and withdraws its manifest.
    let stale_locks_removed = match options.dry_run {
        true => Vec::new(),
        false => lock::remove_stale(repo, now).await?,
    };
    let headers = readable_headers(repo).await?;
    let segments = Segments::list(repo).await?;
    check_named(&headers, options)?;
    let kept = keep_per_group(&headers, &segments, options);
    let (kept_headers, forgotten): (Vec<Header>, Vec<Header>) = headers
        .into_iter()
        .map(|(header, _)| header)
        .partition(|h| kept.contains_key(&h.backup_id));
    let mut report = PruneReport {
        dry_run: options.dry_run,
        kept: kept
            .into_iter()
            .map(|(backup_id, reasons)| Kept { backup_id, reasons })
            .collect(),
        forgotten: forgotten.iter().map(|h| h.backup_id.clone()).collect(),
        stale_locks_removed,
        ..Default::default()
    };
    let deletes = Deletes {
        lock,
        dry_run: options.dry_run,
    };
    let forgotten_manifests = forget(repo, &forgotten, &deletes, &mut report).await?;
    let scratch = scratch_dir("prune")?;
    let referenced = Marked::create(&scratch.path().join("referenced"))?;
    for header in &kept_headers {
        referenced.mark(repo, header).await?;
        referenced
            .mark_segments(repo, segments.live_of(&header.backup_id))
            .await?;
    }
    let cutoff = now - chrono::Duration::from_std(options.grace).unwrap_or_default();
    let index_dir = scratch.path().join("index");
    let contents = &referenced.contents;
    let mut packs =
        PackPlan::make(repo, contents, &index_dir, options.repack_below, cutoff).await?;
    report.repack = packs.repack(repo, contents, options.dry_run).await?;
    let garbage = Garbage {
        packs,
        referenced,
        forgotten_manifests,
        forgotten_prefixes: forgotten
            .iter()
            .flat_map(|h| {
                [layout::BACKUPS, layout::SEGMENTS].map(|p| format!("{p}/{}/", h.backup_id))
            })
            .collect(),
        locks: format!("{}/", layout::LOCKS),
        cutoff,
    };
    collect_garbage(repo, &garbage, &deletes, &mut report).await?;
    if !options.dry_run {
        lock.check_held().await?;
    }
    let (staged, bytes) = repo
        .sweep_staged_uploads(garbage.cutoff, options.dry_run)
        .await?;
    report.deleted_objects += staged;
    report.deleted_bytes += bytes;
    Ok(report)
}

/// The backups to keep, by id with their reasons: the backups named to be
/// forgotten never; every backup of another source than `options.source`,
/// when one is named; the policy applied to each group on its own (by
/// source unless `--group-by` says otherwise; every group keeps its newest),
/// or, where backups are named, every backup not named. A backup that
/// `follow`'s segments continue is as new as its newest segment: what it is
/// kept for is every point up to there.
fn keep_per_group(
    headers: &[(Header, DateTime<Utc>)],
    segments: &Segments,
    options: &PruneOptions,
) -> BTreeMap<BackupId, Vec<String>> {
    let mut kept = BTreeMap::new();
    let mut groups: BTreeMap<_, Vec<Candidate>> = BTreeMap::new();
    for (header, committed_at) in headers {
        let id = &header.backup_id;
        let source = header.source.id();
        if options.forget.contains(id) {
            continue;
        }
        if options.source.as_ref().is_some_and(|only| *only != source) {
            kept.insert(id.clone(), vec!["other source".into()]);
            continue;
        }
        if !options.forget.is_empty() {
            kept.insert(id.clone(), vec!["not named".into()]);
            continue;
        }
        let group = options.group_by.key(source, &header.tags);
        let newest = segments.newest_of(id).max(*committed_at);
        groups
            .entry(group)
            .or_default()
            .push(candidate(header, newest));
    }
    for candidates in groups.values() {
        kept.extend(options.policy.keep(candidates));
    }
    kept
}

/// Fails, before anything is forgotten, when a backup named to be forgotten
/// is not in the repository.
fn check_named(headers: &[(Header, DateTime<Utc>)], options: &PruneOptions) -> Result<()> {
    let present: std::collections::HashSet<&BackupId> =
        headers.iter().map(|(h, _)| &h.backup_id).collect();
    match options.forget.iter().find(|id| !present.contains(id)) {
        Some(missing) => Err(Error::BackupNotFound(format!(
            "{missing} (`rockup list` shows the backups there are)"
        ))),
        None => Ok(()),
    }
}

/// A backup as the retention policy sees it: dated by the store's clock.
fn candidate(header: &Header, committed_at: DateTime<Utc>) -> Candidate {
    Candidate {
        backup_id: header.backup_id.clone(),
        created_at: committed_at,
        tags: header.tags.clone(),
    }
}

/// Every committed backup's header with its commit time by the store's clock;
/// refuses while any is unreadable.
async fn readable_headers(repo: &Repository) -> Result<Vec<(Header, DateTime<Utc>)>> {
    let mut headers = Vec::new();
    for listed in manifest::list(repo).await? {
        match (listed.header, listed.error) {
            (Some(header), _) => headers.push((header, listed.committed_at)),
            (None, error) => {
                return Err(Error::manifest(
                    layout::manifest(&listed.backup_id).to_string(),
                    format!(
                    "is unreadable ({}), so what it references is unknown and nothing is pruned; \
                         remove backups/{}/ by hand if that backup is lost",
                    error.unwrap_or_default(),
                    listed.backup_id
                ),
                ))
            }
        }
    }
    Ok(headers)
}

/// Deletes the manifests of the forgotten backups (counted in `report`);
/// returns their keys.
async fn forget(
    repo: &Repository,
    forgotten: &[Header],
    deletes: &Deletes<'_>,
    report: &mut PruneReport,
) -> Result<HashSet<String>> {
    let manifests: Vec<Path> = forgotten
        .iter()
        .map(|h| layout::manifest(&h.backup_id))
        .collect();
    let keys: HashSet<String> = manifests.iter().map(|k| k.to_string()).collect();
    for meta in repo.list(layout::BACKUPS).await? {
        if keys.contains(meta.location.as_ref()) {
            report.deleted_objects += 1;
            report.deleted_bytes += meta.size;
        }
    }
    deletes.delete(repo, &manifests).await?;
    Ok(keys)
}

/// Deletions of one prune: none when dry, each batch only while its lock is
/// still held (a prune whose lock was removed may have a backup beside it).
struct Deletes<'a> {
    lock: &'a RepoLock,
    dry_run: bool,
}

impl Deletes<'_> {
    async fn delete(&self, repo: &Repository, keys: &[Path]) -> Result<()> {
        if self.dry_run || keys.is_empty() {
            return Ok(());
        }
        self.lock.check_held().await?;
        repo.delete_all(keys).await
    }
}

/// Everything the kept backups reference: objects by key, content by hash.
struct Marked {
    objects: Spool<String, ()>,
    /// Content by its name here (its SHA-256 in a plaintext repository).
    contents: Spool<ContentName, ()>,
}

impl Marked {
    fn create(dir: &std::path::Path) -> Result<Self> {
        let objects = Spool::create(dir)?;
        Ok(Self {
            contents: objects.beside(1),
            objects,
        })
    }

    /// Marks every object and content `header`'s backup needs, its manifest too.
    async fn mark(&self, repo: &Repository, header: &Header) -> Result<()> {
        let manifest = layout::manifest(&header.backup_id).to_string();
        self.objects.put(&manifest, &())?;
        let mut walk = std::pin::pin!(header.referenced(repo));
        while let Some(needed) = walk.next().await {
            let needed = needed?;
            match needed.stored {
                Stored::Object(key) => self.objects.put(&key.to_string(), &())?,
                Stored::Content => self.contents.put(&repo.content_name(&needed.sha256), &())?,
            }
        }
        Ok(())
    }

    /// Marks `segments` and the content of the files they name.
    async fn mark_segments(&self, repo: &Repository, segments: Vec<&SegmentRef>) -> Result<()> {
        for at in segments {
            self.objects.put(&at.key().to_string(), &())?;
            for file in segment::read(repo, at).await?.header.files {
                self.contents.put(&repo.content_name(&file.sha256), &())?;
            }
        }
        Ok(())
    }

    /// Whether a kept backup needs the object at `key`.
    fn holds(&self, repo: &Repository, key: &str) -> Result<bool> {
        match repo.parse_content_key(key) {
            Some(name) => self.contents.contains(&name),
            None => self.objects.contains(&key.to_string()),
        }
    }
}

/// Every segment in the repository (one LIST), with when it was written.
struct Segments(Vec<(SegmentRef, DateTime<Utc>)>);

impl Segments {
    async fn list(repo: &Repository) -> Result<Self> {
        let listed = repo.list(layout::SEGMENTS).await?.into_iter();
        let parsed = listed.filter_map(|meta| {
            Some((
                SegmentRef::parse_key(meta.location.as_ref())?,
                meta.last_modified,
            ))
        });
        Ok(Self(parsed.collect()))
    }

    /// When the newest segment of `base` was written (the earliest time
    /// when it has none).
    fn newest_of(&self, base: &BackupId) -> DateTime<Utc> {
        let of = self.0.iter().filter(|(s, _)| s.base == *base);
        of.map(|(_, at)| *at)
            .max()
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    /// The segments of `base` a restore may read: those no segment of a
    /// higher level covers (the covered ones go once the grace period is over).
    fn live_of(&self, base: &BackupId) -> Vec<&SegmentRef> {
        let of: Vec<&SegmentRef> = self
            .0
            .iter()
            .map(|(s, _)| s)
            .filter(|s| s.base == *base)
            .collect();
        of.iter()
            .copied()
            .filter(|s| !of.iter().any(|o| covers(o, s)))
            .collect()
    }
}

/// What garbage collection keeps and what it may delete.
struct Garbage {
    /// The fate of packs and their indexes.
    packs: PackPlan,
    /// Every object and content a kept backup references.
    referenced: Marked,
    /// Manifests already deleted (and counted) by `forget`.
    forgotten_manifests: HashSet<String>,
    /// The forgotten backups' own objects: deleted whatever their age.
    forgotten_prefixes: Vec<String>,
    locks: String,
    /// Unreferenced objects modified after this are left alone.
    cutoff: chrono::DateTime<Utc>,
}

/// What garbage collection does with one listed object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Referenced, or rockup's marker or a lock.
    Keep,
    /// Unreferenced but younger than the grace period.
    Young,
    /// Not a key of rockup's layout: somebody else's.
    Foreign,
    Delete,
}

impl Garbage {
    fn verdict(&self, repo: &Repository, meta: &ObjectMeta) -> Result<Verdict> {
        let key = meta.location.as_ref();
        if !layout::is_rockup_key(key) {
            return Ok(Verdict::Foreign);
        }
        if let Some(verdict) = self.packs.verdict(key) {
            return Ok(verdict);
        }
        // Session keys are never deleted: what a session sealed may live on
        // in any pack, repacked.
        if key == layout::MARKER
            || key.starts_with(&self.locks)
            || layout::is_session_key(key)
            || self.forgotten_manifests.contains(key)
            || self.referenced.holds(repo, key)?
        {
            return Ok(Verdict::Keep);
        }
        let of_forgotten = self.forgotten_prefixes.iter().any(|p| key.starts_with(p));
        if !of_forgotten && meta.last_modified > self.cutoff {
            return Ok(Verdict::Young);
        }
        Ok(Verdict::Delete)
    }
}

/// Streams the listing and deletes, in batches, every object `garbage` deletes;
/// the repository's progress counts the objects examined.
async fn collect_garbage(
    repo: &Repository,
    garbage: &Garbage,
    deletes: &Deletes<'_>,
    report: &mut PruneReport,
) -> Result<()> {
    let mut batch = Vec::new();
    let mut objects = repo.store().list(None);
    repo.progress().start(None, None);
    while let Some(meta) = objects.next().await {
        let meta = meta.map_err(|e| repo.error(e))?;
        repo.progress().advance(meta.size);
        match garbage.verdict(repo, &meta)? {
            Verdict::Keep => continue,
            Verdict::Young => {
                report.young_unreferenced += 1;
                continue;
            }
            Verdict::Foreign => {
                tracing::warn!(key = %meta.location, "not rockup's object (not in its layout); left alone");
                report.foreign_objects += 1;
                continue;
            }
            Verdict::Delete => {}
        }
        report.deleted_objects += 1;
        report.deleted_bytes += meta.size;
        batch.push(meta.location);
        if batch.len() == DELETE_BATCH {
            deletes.delete(repo, &std::mem::take(&mut batch)).await?;
        }
    }
    deletes.delete(repo, &batch).await
}
