//! Retention: which backups stay — a pure function of their creation times and
//! tags, restic's rules: the newest backup of each of the last N hours, days,
//! weeks, months, years that have one; every backup, or the newest of each
//! period, within a duration of the group's newest backup; the newest backup
//! always stays.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Datelike, Timelike, Utc};

use crate::repo::ids::BackupId;

/// A count meaning "every period that has a backup" (restic's `unlimited`).
pub const UNLIMITED: usize = usize::MAX;

/// Which backups to keep: [`RetentionPolicy::default`] (no rule), then the
/// rules wanted. A backup is kept when any rule keeps it. Durations count
/// back from the newest backup of the group, as restic's do (so a host that
/// stopped backing up keeps its last backups however old they get).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RetentionPolicy {
    /// The N newest backups.
    pub keep_last: Option<usize>,
    /// The newest backup of each of the N most recent hours (UTC) that have one.
    pub keep_hourly: Option<usize>,
    /// The newest backup of each of the N most recent days (UTC) that have one.
    pub keep_daily: Option<usize>,
    /// The newest backup of each of the N most recent ISO weeks that have one.
    pub keep_weekly: Option<usize>,
    /// The newest backup of each of the N most recent months that have one.
    pub keep_monthly: Option<usize>,
    /// The newest backup of each of the N most recent years that have one.
    pub keep_yearly: Option<usize>,
    /// Every backup made less than this long before the newest.
    pub keep_within: Option<Duration>,
    /// The newest backup of each hour less than this long before the newest.
    pub keep_within_hourly: Option<Duration>,
    /// The newest backup of each day less than this long before the newest.
    pub keep_within_daily: Option<Duration>,
    /// The newest backup of each ISO week less than this long before the newest.
    pub keep_within_weekly: Option<Duration>,
    /// The newest backup of each month less than this long before the newest.
    pub keep_within_monthly: Option<Duration>,
    /// The newest backup of each year less than this long before the newest.
    pub keep_within_yearly: Option<Duration>,
    /// Every backup carrying one of these tags.
    pub keep_tags: Vec<(String, String)>,
}

/// How backups are grouped for retention (`--group-by`): each group keeps
/// its own newest backup and counts its own periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupBy {
    /// Backups of different sources apart (the default).
    pub source: bool,
    /// Backups with different tags apart.
    pub tags: bool,
}

impl Default for GroupBy {
    fn default() -> Self {
        Self {
            source: true,
            tags: false,
        }
    }
}

impl std::str::FromStr for GroupBy {
    type Err = String;

    /// `source`, `tags`, `source,tags`, or `none` (the whole repository one group).
    fn from_str(text: &str) -> Result<Self, String> {
        let mut group = GroupBy {
            source: false,
            tags: false,
        };
        if text.trim() == "none" {
            return Ok(group);
        }
        for part in text.split(',').map(str::trim) {
            match part {
                "source" => group.source = true,
                "tags" => group.tags = true,
                _ => {
                    return Err(format!(
                        "{text:?}: group by source, tags, source,tags or none"
                    ))
                }
            }
        }
        Ok(group)
    }
}

impl GroupBy {
    /// The group of a backup of `source` with `tags`.
    pub(crate) fn key(
        &self,
        source: String,
        tags: &BTreeMap<String, String>,
    ) -> (Option<String>, Option<BTreeMap<String, String>>) {
        (
            self.source.then_some(source),
            self.tags.then(|| tags.clone()),
        )
    }
}

/// A backup as the policy sees it.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub backup_id: BackupId,
    pub created_at: DateTime<Utc>,
    pub tags: BTreeMap<String, String>,
}

/// A calendar period a backup falls in.
type Period = fn(&DateTime<Utc>) -> (i32, u32, u32);

impl RetentionPolicy {
    /// True when no rule is set, or only rules of zero (restic refuses those
    /// too: pruning would then have no policy to follow).
    pub fn is_empty(&self) -> bool {
        let unset = |n: Option<usize>| n.is_none_or(|n| n == 0);
        unset(self.keep_last)
            && self.counted().iter().all(|(_, n, _)| unset(*n))
            && self
                .within()
                .iter()
                .all(|(_, d, _)| d.is_none_or(|d| d.is_zero()))
            && self.keep_tags.is_empty()
    }

    /// The rules "newest of each of the last N periods".
    fn counted(&self) -> [(&'static str, Option<usize>, Period); 5] {
        [
            ("hourly", self.keep_hourly, period_hour),
            ("daily", self.keep_daily, period_day),
            ("weekly", self.keep_weekly, period_week),
            ("monthly", self.keep_monthly, period_month),
            ("yearly", self.keep_yearly, period_year),
        ]
    }

    /// The rules "newest of each period within a duration" (`None`: every backup).
    fn within(&self) -> [(&'static str, Option<Duration>, Option<Period>); 6] {
        [
            ("within", self.keep_within, None),
            ("within hourly", self.keep_within_hourly, Some(period_hour)),
            ("within daily", self.keep_within_daily, Some(period_day)),
            ("within weekly", self.keep_within_weekly, Some(period_week)),
            (
                "within monthly",
                self.keep_within_monthly,
                Some(period_month),
            ),
            ("within yearly", self.keep_within_yearly, Some(period_year)),
        ]
    }

    /// The backups of one group to keep, by id, with the rules that keep each.
    pub(crate) fn keep(&self, backups: &[Candidate]) -> BTreeMap<BackupId, Vec<String>> {
        let mut newest_first: Vec<&Candidate> = backups.iter().collect();
        // Stores date objects to the second (S3, Azure): within one second the
        // id (time-sortable) decides, as it does for `latest`.
        newest_first
            .sort_by(|a, b| (b.created_at, &b.backup_id).cmp(&(a.created_at, &a.backup_id)));
        let mut kept: BTreeMap<BackupId, Vec<String>> = BTreeMap::new();
        for (backup, reason) in self.reasons(&newest_first) {
            kept.entry(backup.backup_id.clone())
                .or_default()
                .push(reason);
        }
        kept
    }

    /// Each rule's backups, with the rule's name.
    fn reasons<'a>(&self, newest_first: &[&'a Candidate]) -> Vec<(&'a Candidate, String)> {
        let Some(newest) = newest_first.first() else {
            return Vec::new();
        };
        let named = |backups: Vec<&'a Candidate>, name: &str| -> Vec<(&'a Candidate, String)> {
            backups.into_iter().map(|b| (b, name.to_string())).collect()
        };
        let last = self.keep_last.unwrap_or(0);
        let mut reasons = vec![(*newest, "newest".to_string())];
        reasons.extend(named(
            newest_first.iter().copied().take(last).collect(),
            "last",
        ));
        for (k, v) in &self.keep_tags {
            let tagged = newest_first
                .iter()
                .copied()
                .filter(|b| b.tags.get(k) == Some(v));
            reasons.extend(named(tagged.collect(), &format!("tag {k}={v}")));
        }
        for (name, count, period) in self.counted() {
            let Some(count) = count else { continue };
            let mut chosen = newest_of_periods(newest_first, period);
            chosen.truncate(count);
            reasons.extend(named(chosen, name));
        }
        for (name, within, period) in self.within() {
            let Some(within) = within else { continue };
            let age = |b: &Candidate| {
                (newest.created_at - b.created_at)
                    .to_std()
                    .unwrap_or_default()
            };
            let inside = newest_first.iter().copied().take_while(|b| age(b) < within);
            let inside: Vec<&Candidate> = inside.collect();
            let chosen = match period {
                Some(period) => newest_of_periods(&inside, period),
                None => inside,
            };
            reasons.extend(named(chosen, name));
        }
        reasons
    }
}

/// The newest backup of each period, newest period first (`newest_first` is
/// sorted newest first).
fn newest_of_periods<'a>(newest_first: &[&'a Candidate], period: Period) -> Vec<&'a Candidate> {
    let mut seen = HashSet::new();
    newest_first
        .iter()
        .copied()
        .filter(|backup| seen.insert(period(&backup.created_at)))
        .collect()
}

fn period_hour(time: &DateTime<Utc>) -> (i32, u32, u32) {
    (time.year(), time.ordinal(), time.hour())
}

fn period_day(time: &DateTime<Utc>) -> (i32, u32, u32) {
    (time.year(), time.ordinal(), 0)
}

fn period_week(time: &DateTime<Utc>) -> (i32, u32, u32) {
    let week = time.iso_week();
    (week.year(), week.week(), 0)
}

fn period_month(time: &DateTime<Utc>) -> (i32, u32, u32) {
    (time.year(), time.month(), 0)
}

fn period_year(time: &DateTime<Utc>) -> (i32, u32, u32) {
    (time.year(), 0, 0)
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
        kept_as(policy, backups, "%d-%H")
    }

    fn kept_as(policy: &RetentionPolicy, backups: &[Candidate], format: &str) -> Vec<String> {
        let kept = policy.keep(backups).into_keys();
        kept.map(|id| id.created_at().format(format).to_string())
            .collect()
    }

    #[test]
    fn hours_months_years_and_periods_within() {
        let hourly: Vec<Candidate> = (0..8).map(|h| at(25, h * 3)).collect();
        let policy = RetentionPolicy {
            keep_hourly: Some(3),
            ..Default::default()
        };
        assert_eq!(kept(&policy, &hourly), ["25-15", "25-18", "25-21"]);
        // The 1st and 15th of every month of 2025 and 2026 up to November.
        let monthly: Vec<Candidate> = [2025, 2026]
            .into_iter()
            .flat_map(|y| (1..=12).map(move |m| (y, m)))
            .filter(|&(y, m)| y == 2025 || m <= 11)
            .flat_map(|(y, m)| [1, 15].map(|d| Utc.with_ymd_and_hms(y, m, d, 3, 0, 0).unwrap()))
            .map(|created_at| Candidate {
                backup_id: BackupId::new(created_at),
                created_at,
                tags: BTreeMap::new(),
            })
            .collect();
        let months = RetentionPolicy {
            keep_monthly: Some(3),
            ..Default::default()
        };
        let ymd = "%Y-%m-%d";
        assert_eq!(
            kept_as(&months, &monthly, ymd),
            ["2026-09-15", "2026-10-15", "2026-11-15"]
        );
        let years = RetentionPolicy {
            keep_yearly: Some(UNLIMITED),
            ..Default::default()
        };
        assert_eq!(kept_as(&years, &monthly, ymd), ["2025-12-15", "2026-11-15"]);
        // Counted back from the newest backup (Nov 15), not from now.
        let within = RetentionPolicy {
            keep_within_monthly: Some(Duration::from_secs(60 * 86400)),
            ..Default::default()
        };
        assert_eq!(
            kept_as(&within, &monthly, ymd),
            ["2026-10-15", "2026-11-15"]
        );
        let within_all = RetentionPolicy {
            keep_within: Some(Duration::from_secs(31 * 86400)),
            ..Default::default()
        };
        assert_eq!(
            kept_as(&within_all, &monthly, ymd),
            ["2026-11-01", "2026-11-15"],
            "October 15 is exactly 31 days before: not less than that"
        );
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
            ["24-13", "25-01", "25-13"],
            "made less than 36 h before the newest (restic's rule)"
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
        assert!(!last.is_empty() && !within.is_empty() && !tag.is_empty());
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
        let kept = last.keep(&[older, newer.clone()]).into_keys();
        assert_eq!(kept.collect::<Vec<_>>(), [newer.backup_id]);
    }
}
