//! Sources: which database a backup is of. `latest` means the newest backup of
//! one source; where a repository holds several and the command names none,
//! the choice is the user's (a usage error lists them).

use std::collections::BTreeMap;

use super::{committed_ids, list, ListedBackup};
use crate::error::{Error, Result};
use crate::repo::ids::BackupId;
use crate::repo::Repository;

/// Longest source name accepted.
const NAME_MAX: usize = 128;

/// Checks a source name given by a user: printable, at most 128 characters.
pub fn check_source_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > NAME_MAX || name.chars().any(char::is_control) {
        return Err(Error::Usage(format!(
            "source name {name:?} must be 1 to {NAME_MAX} printable characters"
        )));
    }
    Ok(())
}

/// Resolves `latest` to the newest committed backup of `source` — of the only
/// source when `source` is `None` — and checks an id's syntax otherwise.
pub async fn resolve(repo: &Repository, id: &str, source: Option<&str>) -> Result<BackupId> {
    if id != "latest" {
        return id
            .parse()
            .map_err(|why| Error::Usage(format!("{why}, or \"latest\"")));
    }
    if source.is_none() {
        // The common case, one database per repository: one LIST, no header read.
        let ids = committed_ids(repo).await?;
        if ids.len() <= 1 {
            return ids
                .into_iter()
                .next()
                .ok_or_else(|| Error::BackupNotFound("latest".into()));
        }
    }
    latest_of(&list(repo).await?, source)
}

/// The newest of `listed` (oldest first) that belongs to `source`.
fn latest_of(listed: &[ListedBackup], source: Option<&str>) -> Result<BackupId> {
    let known = sources(listed);
    let source = match source {
        Some(source) => source.to_string(),
        None if known.len() <= 1 => {
            let newest = listed.last().map(|b| b.backup_id.clone());
            return newest.ok_or_else(|| Error::BackupNotFound("latest".into()));
        }
        None => {
            let names: Vec<String> = known.keys().cloned().collect();
            return Err(Error::Usage(format!(
                "the repository holds backups of {} sources; name one with --source: {}",
                names.len(),
                names.join(", ")
            )));
        }
    };
    listed
        .iter()
        .rev()
        .find(|b| b.source.as_deref() == Some(&source))
        .map(|b| b.backup_id.clone())
        .ok_or_else(|| Error::BackupNotFound(format!("latest of source {source:?}")))
}

/// The sources of `listed`, each with its number of backups.
fn sources(listed: &[ListedBackup]) -> BTreeMap<String, usize> {
    let mut sources = BTreeMap::new();
    for source in listed.iter().filter_map(|b| b.source.clone()) {
        *sources.entry(source).or_default() += 1;
    }
    sources
}
