//! Taking back one external file without restoring anything else: its entry
//! is looked up in the backup's parts, its content read from its pack entry
//! (one ranged GET) or its own object, checked against its size and SHA-256
//! in a private staging directory beside the target, made durable, and only
//! then renamed into place — never over an existing file unless asked, and
//! never through a symlink (a rename replaces the link itself).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::download::Download;
use super::{fail_on, Content, RESTORE_JOBS};
use crate::common::names::normalize_relative_path;
use crate::common::tasks::Jobs;
use crate::common::{durable, nofollow};
use crate::error::{Error, Result};
use crate::repo::crypto::sealed::Kind;
use crate::repo::ids::BackupId;
use crate::repo::manifest::{self, ExternalEntry, Header, Stored};
use crate::repo::{Repository, Traffic};

/// Which file to take back, and where it goes: [`DumpOptions::default`],
/// then `path` and `target`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DumpOptions {
    /// Backup id or `latest`.
    pub backup: String,
    /// Whose `latest`: needed where the repository holds several sources.
    pub source: Option<String>,
    /// The file's path under the blob root, as `ls` shows it.
    pub path: String,
    /// The file to write (its directory must exist).
    pub target: PathBuf,
    /// Replace `target` when it exists (a file, or a symlink — the link
    /// itself, never what it points to).
    pub overwrite: bool,
}

impl Default for DumpOptions {
    /// From the latest backup; `path` and `target` must still be set.
    fn default() -> Self {
        Self {
            backup: "latest".into(),
            source: None,
            path: String::new(),
            target: PathBuf::new(),
            overwrite: false,
        }
    }
}

/// What a dump took back.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct DumpReport {
    /// The backup it came from.
    pub backup_id: BackupId,
    /// The file's entry in that backup (its content is what was written).
    pub entry: ExternalEntry,
    /// Requests and bytes this run asked of the store.
    pub traffic: Traffic,
}

/// Writes one external file of a backup to `options.target`, verified; see
/// the module docs.
pub async fn dump(repo: &Repository, options: &DumpOptions) -> Result<DumpReport> {
    let before = repo.traffic();
    let path = normalize_relative_path(&options.path).map_err(|why| {
        Error::Usage(format!(
            "{:?} is not a path under the blob root ({why}); `rockup ls` shows the paths a backup holds",
            options.path
        ))
    })?;
    check_target(&options.target, options.overwrite)?;
    repo.check_marker(None).await?;
    repo.require_full_key("dump")?;
    let header = manifest::load(repo, &options.backup, options.source.as_deref()).await?;
    let entry =
        external_entry(repo, &header, &path)
            .await?
            .ok_or_else(|| Error::FileNotInBackup {
                backup: header.backup_id.to_string(),
                path: path.clone(),
            })?;
    let parent = durable::parent_dir(&options.target);
    let staging = tempfile::Builder::new()
        .prefix(".rockup-dump-")
        .tempdir_in(parent)
        .map_err(|e| Error::io(parent, e))?;
    let staged = staging.path().join("content");
    let download = Download {
        key: repo.content_key(&entry.sha256),
        kind: Kind::Content,
        dest: staged.clone(),
        sha256: entry.sha256,
        size: entry.size,
        mode: Some(entry.mode),
        mtime_ns: Some(entry.mtime_ns),
    };
    let content = Content::load(repo).await?;
    let one = futures::stream::iter([Ok((Stored::Content, download))]);
    let problems = content
        .fetch(repo, one, Jobs::from(RESTORE_JOBS), 0)
        .await?;
    fail_on(problems, |_| {
        format!(
            "{path} of backup {}: its content is missing or corrupt; nothing was written",
            header.backup_id
        )
    })?;
    place(&staged, &options.target, options.overwrite)?;
    Ok(DumpReport {
        backup_id: header.backup_id,
        entry,
        traffic: repo.traffic().since(before),
    })
}

/// The entry of the external file at `path` (normalized), if the backup
/// holds one. Parts are sorted by path: the search stops at the part that
/// would hold it.
async fn external_entry(
    repo: &Repository,
    header: &Header,
    path: &str,
) -> Result<Option<ExternalEntry>> {
    for part in header.parts_of::<ExternalEntry>() {
        let entries: Vec<ExternalEntry> = header.read_part(repo, part).await?;
        if let Some(found) = entries.iter().position(|e| e.path == path) {
            return Ok(entries.into_iter().nth(found));
        }
        if entries.last().is_some_and(|e| e.path.as_str() > path) {
            break;
        }
    }
    Ok(None)
}

/// Refuses a target that is a directory, or that exists when `overwrite`
/// is not set — before anything is downloaded.
fn check_target(target: &Path, overwrite: bool) -> Result<()> {
    if target.as_os_str().is_empty() {
        return Err(Error::Usage(
            "no file to write: set DumpOptions::target (--target)".into(),
        ));
    }
    match target.symlink_metadata() {
        Ok(meta) if meta.is_dir() => Err(Error::Usage(format!(
            "{} is a directory; give the path of the file to write",
            target.display()
        ))),
        Ok(_) if !overwrite => Err(Error::Usage(format!(
            "{} exists; pass --overwrite to replace it",
            target.display()
        ))),
        _ => Ok(()),
    }
}

/// Makes the verified file durable and renames it to `target`.
fn place(staged: &Path, target: &Path, overwrite: bool) -> Result<()> {
    std::fs::File::open(staged)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(staged, e))?;
    let renamed = match overwrite {
        true => std::fs::rename(staged, target),
        false => nofollow::rename_no_replace(staged, target),
    };
    renamed.map_err(|e| Error::io(target, e))?;
    durable::sync_dir(durable::parent_dir(target)).map_err(|e| Error::io(target, e))
}
