//! Looking inside backups without restoring anything: [`ls`] streams what a
//! backup holds, [`find`] the backups in which paths matching a pattern
//! exist, [`diff`] what changed between two backups. Each reads headers and
//! parts only — validated as a restore validates them — one part (at most
//! 100,000 entries) at a time per backup, so memory stays flat at millions
//! of files; no content is downloaded.

mod diff;

pub use diff::{diff, Change, ChangeKind, DiffOptions, DiffReport, DiffTotals, Tally};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::common::glob::PathPattern;
use crate::common::names::normalize_relative_path;
use crate::error::{Error, Result};
use crate::repo::ids::BackupId;
use crate::repo::manifest::{self, DbFileEntry, ExternalEntry, Header};
use crate::repo::Repository;

/// One file a backup holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Item {
    /// A file of the database directory.
    Db(DbFileEntry),
    /// An external file, by its path under the blob root.
    External(ExternalEntry),
}

/// What to list: [`LsOptions::default`] (the latest backup, everything),
/// then the fields that differ.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LsOptions {
    /// Backup id or `latest`.
    pub backup: String,
    /// Whose `latest`: needed where the repository holds several sources.
    pub source: Option<String>,
    /// Only the external files in this directory (or at this path) under
    /// the blob root; the database files are then left out.
    pub prefix: Option<String>,
}

impl Default for LsOptions {
    /// Everything in the latest backup.
    fn default() -> Self {
        Self {
            backup: "latest".into(),
            source: None,
            prefix: None,
        }
    }
}

/// Calls `each` on every file of a backup: its database files, then its
/// external files in path order. Returns the backup's header.
pub async fn ls(
    repo: &Repository,
    options: &LsOptions,
    mut each: impl FnMut(Item) -> Result<()>,
) -> Result<Header> {
    let within = match &options.prefix {
        Some(prefix) => Some(normalize_relative_path(prefix).map_err(|why| {
            Error::Usage(format!(
                "{prefix:?} is not a path under the blob root: {why}"
            ))
        })?),
        None => None,
    };
    let header = open(repo, &options.backup, options.source.as_deref()).await?;
    if within.is_none() {
        header
            .for_each_entry(repo, |db: DbFileEntry| each(Item::Db(db)))
            .await?;
    }
    header
        .for_each_entry(repo, |file: ExternalEntry| match &within {
            Some(dir) if !is_within(&file.path, dir) => Ok(()),
            _ => each(Item::External(file)),
        })
        .await?;
    Ok(header)
}

/// Whether `path` is `dir` or under it.
fn is_within(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The header of a backup, for reading inside it.
async fn open(repo: &Repository, backup: &str, source: Option<&str>) -> Result<Header> {
    repo.check_marker(None).await?;
    repo.require_full_key("looking inside backups")?;
    manifest::load(repo, backup, source).await
}

/// Where to look: [`FindOptions::default`] (every backup), then `pattern`.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct FindOptions {
    /// A path pattern: `*.jpg` matches names in any directory,
    /// `users/*/avatar.jpg` whole paths (`*` stops at `/`, `**` does not).
    pub pattern: String,
    /// Only this source's backups.
    pub source: Option<String>,
    /// Only these backups (ids); every backup when empty.
    pub backups: Vec<String>,
}

/// An external file found in a backup.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Found {
    /// The backup holding it.
    pub backup_id: BackupId,
    /// When that backup was taken.
    pub created_at: DateTime<Utc>,
    /// Its source.
    pub source: String,
    /// The file.
    pub entry: ExternalEntry,
}

/// What a search covered.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct FindReport {
    /// Backups searched.
    pub backups: u64,
    /// Files found.
    pub found: u64,
    /// Backups whose header could not be read, with why (not searched).
    pub unreadable: Vec<(BackupId, String)>,
}

/// Calls `each` on every external file matching the pattern, backup by
/// backup, newest first (paths in order within a backup).
pub async fn find(
    repo: &Repository,
    options: &FindOptions,
    mut each: impl FnMut(Found) -> Result<()>,
) -> Result<FindReport> {
    let pattern = PathPattern::parse(&options.pattern).map_err(Error::Usage)?;
    let mut report = FindReport::default();
    for listed in manifest::list(repo).await?.into_iter().rev() {
        if !options.backups.is_empty()
            && !options
                .backups
                .iter()
                .any(|id| *id == listed.backup_id.as_str())
        {
            continue;
        }
        let Some(header) = listed.header else {
            let why = listed.error.unwrap_or_default();
            report.unreadable.push((listed.backup_id, why));
            continue;
        };
        let source = header.source.id();
        if options.source.as_ref().is_some_and(|s| *s != source) {
            continue;
        }
        report.backups += 1;
        header
            .for_each_entry(repo, |entry: ExternalEntry| {
                if !pattern.matches(&entry.path) {
                    return Ok(());
                }
                report.found += 1;
                each(Found {
                    backup_id: header.backup_id.clone(),
                    created_at: header.created_at,
                    source: source.clone(),
                    entry,
                })
            })
            .await?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_a_directory_means_under_it() {
        assert!(is_within("a/b", "a"));
        assert!(is_within("a", "a"));
        assert!(!is_within("ab/c", "a"));
        assert!(!is_within("b/a", "a"));
    }
}
