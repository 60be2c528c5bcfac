//! Retention and garbage collection.
//!
//! [`RetentionPolicy::keep`] decides which backups stay — a pure function of their
//! creation times and tags; the newest backup always stays. [`prune`] then, under
//! a prune lock (no backup may run meanwhile, see [`crate::lock`]):
//! 1. deletes the manifests of the backups to forget (each disappears at once:
//!    a backup exists if and only if its manifest does), then their own objects;
//! 2. collects every object a kept backup references into a scratch index (so
//!    the set never has to fit in memory);
//! 3. streams the repository listing and deletes every object nothing references —
//!    shared table files, external files, objects of interrupted backups — once it
//!    is older than the grace period.
//!
//! A repository with an unreadable manifest is not garbage-collected: what that
//! backup references cannot be known.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Datelike, Utc};
use futures::StreamExt;
use object_store::path::Path;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::layout;
use crate::lock::{LockKind, RepoLock};
use crate::manifest::{self, DbFileEntry, ExternalEntry, Header};
use crate::spool::Spool;
use crate::store::Repository;

/// Objects deleted per bulk request batch.
const DELETE_BATCH: usize = 1000;

/// Which backups to keep. A backup is kept when any rule keeps it.
#[derive(Debug, Clone, Default)]
pub struct RetentionPolicy {
    /// The N newest backups.
    pub keep_last: Option<usize>,
    /// The newest backup of each of the N most recent days (UTC) that have one.
    pub keep_daily: Option<usize>,
    /// The newest backup of each of the N most recent ISO weeks that have one.
    pub keep_weekly: Option<usize>,
    /// Every backup younger than this.
    pub keep_within: Option<Duration>,
    /// Every backup carrying one of these tags.
    pub keep_tags: Vec<(String, String)>,
}

/// A backup as the policy sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub backup_id: String,
    pub created_at: DateTime<Utc>,
    pub tags: BTreeMap<String, String>,
}

impl RetentionPolicy {
    /// True when no rule is set (pruning would then have no policy to follow).
    pub fn is_empty(&self) -> bool {
        self.keep_last.is_none()
            && self.keep_daily.is_none()
            && self.keep_weekly.is_none()
            && self.keep_within.is_none()
            && self.keep_tags.is_empty()
    }

    /// The backups to keep, by id, with the rules that keep each.
    pub fn keep(&self, backups: &[Candidate], now: DateTime<Utc>) -> BTreeMap<String, Vec<String>> {
        let mut newest_first: Vec<&Candidate> = backups.iter().collect();
        newest_first.sort_by_key(|b| std::cmp::Reverse(b.created_at));
        let mut kept: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut keep = |backup: &Candidate, reason: String| {
            kept.entry(backup.backup_id.clone())
                .or_default()
                .push(reason);
        };
        if let Some(newest) = newest_first.first() {
            keep(newest, "newest".into());
        }
        for (i, backup) in newest_first.iter().enumerate() {
            if self.keep_last.is_some_and(|n| i < n) {
                keep(backup, "last".into());
            }
            if let Some(within) = self.keep_within {
                let age = (now - backup.created_at).to_std().unwrap_or_default();
                if age <= within {
                    keep(backup, "within".into());
                }
            }
            for (k, v) in &self.keep_tags {
                if backup.tags.get(k) == Some(v) {
                    keep(backup, format!("tag {k}={v}"));
                }
            }
        }
        let periods = [
            (
                "daily",
                self.keep_daily,
                period_day as fn(&DateTime<Utc>) -> (i32, u32),
            ),
            ("weekly", self.keep_weekly, period_week),
        ];
        for (name, count, period) in periods {
            let Some(count) = count else { continue };
            let mut seen = HashSet::new();
            for backup in &newest_first {
                if seen.len() == count {
                    break;
                }
                if seen.insert(period(&backup.created_at)) {
                    keep(backup, name.into());
                }
            }
        }
        kept
    }
}

fn period_day(time: &DateTime<Utc>) -> (i32, u32) {
    (time.year(), time.ordinal())
}

fn period_week(time: &DateTime<Utc>) -> (i32, u32) {
    let week = time.iso_week();
    (week.year(), week.week())
}

/// What `prune` does.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    pub policy: RetentionPolicy,
    /// Unreferenced objects younger than this are left alone.
    pub grace: Duration,
    /// Report what would be deleted, delete nothing.
    pub dry_run: bool,
}

/// A backup that stays, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Kept {
    pub backup_id: String,
    pub reasons: Vec<String>,
}

/// What `prune` did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub kept: Vec<Kept>,
    pub forgotten: Vec<String>,
    pub deleted_objects: u64,
    pub deleted_bytes: u64,
    /// Unreferenced objects left because they are younger than the grace period.
    pub young_unreferenced: u64,
}

/// Applies `options.policy` to the repository and collects its garbage.
pub async fn prune(repo: &Repository, options: &PruneOptions) -> Result<PruneReport> {
    if options.policy.is_empty() {
        return Err(Error::Usage(
            "prune needs a retention rule: --keep-last, --keep-daily, --keep-weekly, --keep-within or --keep-tag".into(),
        ));
    }
    repo.check_marker(false).await?;
    let lock = match options.dry_run {
        true => None,
        false => {
            let id = layout::new_backup_id(Utc::now());
            Some(RepoLock::acquire(repo, LockKind::Prune, &id).await?)
        }
    };
    let report = collect(repo, options).await;
    if let Some(lock) = lock {
        lock.release().await?;
    }
    report
}

async fn collect(repo: &Repository, options: &PruneOptions) -> Result<PruneReport> {
    let mut headers = Vec::new();
    for listed in manifest::list(repo).await? {
        match (listed.header, listed.error) {
            (Some(header), _) => headers.push(header),
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
    let candidates: Vec<Candidate> = headers
        .iter()
        .map(|h| Candidate {
            backup_id: h.backup_id.clone(),
            created_at: h.created_at,
            tags: h.tags.clone(),
        })
        .collect();
    let kept = options.policy.keep(&candidates, Utc::now());
    let (kept_headers, forgotten): (Vec<Header>, Vec<Header>) = headers
        .into_iter()
        .partition(|h| kept.contains_key(&h.backup_id));
    let mut report = PruneReport {
        dry_run: options.dry_run,
        kept: kept
            .into_iter()
            .map(|(backup_id, reasons)| Kept { backup_id, reasons })
            .collect(),
        forgotten: forgotten.iter().map(|h| h.backup_id.clone()).collect(),
        ..Default::default()
    };
    // Forgotten backups disappear first (their manifests), then their objects.
    let manifests: Vec<Path> = forgotten
        .iter()
        .map(|h| layout::manifest(&h.backup_id))
        .collect();
    let manifest_keys: HashSet<String> = manifests.iter().map(|k| k.to_string()).collect();
    for meta in repo.list(layout::BACKUPS).await? {
        if manifest_keys.contains(meta.location.as_ref()) {
            report.deleted_objects += 1;
            report.deleted_bytes += meta.size;
        }
    }
    if !options.dry_run {
        repo.delete_all(&manifests).await?;
    }

    let scratch = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let referenced = Spool::create(scratch.path())?;
    for header in &kept_headers {
        mark_references(repo, header, &referenced).await?;
    }
    let forgotten_prefixes: Vec<String> = forgotten
        .iter()
        .map(|h| format!("{}/{}/", layout::BACKUPS, h.backup_id))
        .collect();
    let locks = format!("{}/", layout::LOCKS);
    let cutoff = Utc::now() - chrono::Duration::from_std(options.grace).unwrap_or_default();
    let mut batch = Vec::new();
    let mut objects = repo.store().list(None);
    while let Some(meta) = objects.next().await {
        let meta = meta.map_err(|e| repo.error(e))?;
        let key = meta.location.to_string();
        if key == layout::MARKER
            || key.starts_with(&locks)
            || manifest_keys.contains(&key)
            || referenced.get(&key)?.is_some()
        {
            continue;
        }
        let of_forgotten = forgotten_prefixes.iter().any(|p| key.starts_with(p));
        if !of_forgotten && meta.last_modified > cutoff {
            report.young_unreferenced += 1;
            continue;
        }
        report.deleted_objects += 1;
        report.deleted_bytes += meta.size;
        batch.push(meta.location);
        if batch.len() == DELETE_BATCH {
            delete_batch(repo, &mut batch, options.dry_run).await?;
        }
    }
    delete_batch(repo, &mut batch, options.dry_run).await?;
    Ok(report)
}

/// Records every object `header`'s backup needs.
async fn mark_references(repo: &Repository, header: &Header, referenced: &Spool) -> Result<()> {
    let id = &header.backup_id;
    referenced.put(layout::manifest(id).as_ref(), b"")?;
    for part in &header.parts {
        referenced.put(layout::part(id, &part.sha256).as_ref(), b"")?;
    }
    header
        .for_each_entry(repo, |entry: DbFileEntry| {
            referenced.put(&entry.object, b"")
        })
        .await?;
    header
        .for_each_entry(repo, |entry: ExternalEntry| {
            referenced.put(layout::external_blob(&entry.sha256).as_ref(), b"")
        })
        .await
}

async fn delete_batch(repo: &Repository, batch: &mut Vec<Path>, dry_run: bool) -> Result<()> {
    if !dry_run && !batch.is_empty() {
        repo.delete_all(batch).await?;
    }
    batch.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(day: u32, hour: u32) -> Candidate {
        let created_at = Utc.with_ymd_and_hms(2026, 11, day, hour, 0, 0).unwrap();
        Candidate {
            backup_id: format!("{day:02}-{hour:02}"),
            created_at,
            tags: BTreeMap::new(),
        }
    }

    fn kept(policy: &RetentionPolicy, backups: &[Candidate]) -> Vec<String> {
        let now = Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap();
        policy.keep(backups, now).into_keys().collect()
    }

    #[test]
    fn retention_rules() {
        // Two backups a day from Nov 2 (Monday of ISO week 45) to Nov 25.
        let backups: Vec<Candidate> = (2..=25).flat_map(|d| [at(d, 1), at(d, 13)]).collect();
        let last = RetentionPolicy {
            keep_last: Some(3),
            ..Default::default()
        };
        assert_eq!(kept(&last, &backups), ["24-13", "25-01", "25-13"]);
        let daily = RetentionPolicy {
            keep_daily: Some(3),
            ..Default::default()
        };
        assert_eq!(kept(&daily, &backups), ["23-13", "24-13", "25-13"]);
        let weekly = RetentionPolicy {
            keep_weekly: Some(3),
            ..Default::default()
        };
        // Newest of ISO weeks 48 (Nov 23–), 47 (Nov 16–22), 46 (Nov 9–15).
        assert_eq!(kept(&weekly, &backups), ["15-13", "22-13", "25-13"]);
        let within = RetentionPolicy {
            keep_within: Some(Duration::from_secs(36 * 3600)),
            ..Default::default()
        };
        assert_eq!(
            kept(&within, &backups),
            ["24-01", "24-13", "25-01", "25-13"]
        );
        let mut tagged = backups.clone();
        tagged[0].tags.insert("keep".into(), "forever".into());
        let tag = RetentionPolicy {
            keep_tags: vec![("keep".into(), "forever".into())],
            ..Default::default()
        };
        assert_eq!(
            kept(&tag, &tagged),
            ["02-01", "25-13"],
            "the newest always stays"
        );
        assert!(RetentionPolicy::default().is_empty());
    }
}
