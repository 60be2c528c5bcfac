//! Retention: which backups stay — a pure function of their creation times and
//! tags; the newest backup always stays.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Datelike, Utc};

use crate::repo::ids::BackupId;

/// Which backups to keep: [`RetentionPolicy::default`] (no rule), then the
/// rules wanted. A backup is kept when any rule keeps it.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
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
pub(crate) struct Candidate {
    pub backup_id: BackupId,
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
    pub(crate) fn keep(
        &self,
        backups: &[Candidate],
        now: DateTime<Utc>,
    ) -> BTreeMap<BackupId, Vec<String>> {
        let mut newest_first: Vec<&Candidate> = backups.iter().collect();
        // Stores date objects to the second (S3, Azure): within one second the
        // id (time-sortable) decides, as it does for `latest`.
        newest_first
            .sort_by(|a, b| (b.created_at, &b.backup_id).cmp(&(a.created_at, &a.backup_id)));
        let mut kept: BTreeMap<BackupId, Vec<String>> = BTreeMap::new();
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(day: u32, hour: u32) -> Candidate {
        let created_at = Utc.with_ymd_and_hms(2026, 11, day, hour, 0, 0).unwrap();
        Candidate {
            backup_id: BackupId::new(created_at),
            created_at,
            tags: BTreeMap::new(),
        }
    }

    /// The kept backups, as `DD-HH` of their creation.
    fn kept(policy: &RetentionPolicy, backups: &[Candidate]) -> Vec<String> {
        let now = Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap();
        let kept = policy.keep(backups, now).into_keys();
        kept.map(|id| id.created_at().format("%d-%H").to_string())
            .collect()
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

    #[test]
    fn within_one_second_the_later_id_is_the_newer() {
        let second = Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap();
        let older = Candidate {
            backup_id: "20261125T120000.100Z-00000001".parse().unwrap(),
            created_at: second,
            tags: BTreeMap::new(),
        };
        let newer = Candidate {
            backup_id: "20261125T120000.900Z-00000002".parse().unwrap(),
            ..older.clone()
        };
        let last = RetentionPolicy {
            keep_last: Some(1),
            ..Default::default()
        };
        let kept = last.keep(&[older, newer.clone()], second).into_keys();
        assert_eq!(kept.collect::<Vec<_>>(), [newer.backup_id]);
    }
}
