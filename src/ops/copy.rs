//! `rockup copy`: committed backups copied to a second repository (another
//! provider, region or account) — the second copy of the 3-2-1 rule, from one
//! read of the first, without backing the database up again. Per backup: every
//! object its manifest names that the target lacks is downloaded to a scratch
//! file with its size and SHA-256 checked, then uploaded (multipart when large,
//! the hash checked again); objects the target has are not sent (dedup across
//! backups and sources). Parts follow, the manifest last with the write-once
//! create — under a backup lock on the target, so a prune there never deletes
//! what a copy is about to reference.

use std::collections::HashMap;
use std::path::Path;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::repo::layout;
use crate::repo::lock::{LockKind, RepoLock, DEFAULT_LEASE};
use crate::repo::manifest::{self, DbFileEntry, ExternalEntry, Header};
use crate::repo::upload::{Uploader, DEFAULT_MEMORY_BUDGET};
use crate::repo::{Fetched, Repository};

/// What to copy.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// A backup id, `latest` (of `source`) or `all`.
    pub backup: String,
    /// Only this source's backups (and whose `latest`).
    pub source: Option<String>,
    /// Objects copied at once.
    pub jobs: usize,
}

/// What a copy did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CopyReport {
    /// Backups committed to the target.
    pub copied: Vec<String>,
    /// Backups the target already held.
    pub present: Vec<String>,
    /// Objects sent, and their bytes.
    pub objects_copied: u64,
    /// Bytes of the objects sent.
    pub bytes_copied: u64,
    /// Objects the target already had (not sent).
    pub objects_present: u64,
}

/// One object a backup needs: its key, size and SHA-256.
struct Needed {
    key: ObjectPath,
    size: u64,
    sha256: String,
}

/// Copies the selected backups of `from` into `to`.
pub async fn copy(from: &Repository, to: &Repository, options: &CopyOptions) -> Result<CopyReport> {
    from.check_marker(false).await?;
    to.check_marker(true).await?;
    let ids = selected(from, options).await?;
    let lock_id = layout::new_backup_id(chrono::Utc::now());
    let lock = RepoLock::acquire(to, LockKind::Backup, &lock_id, DEFAULT_LEASE).await?;
    let mut report = CopyReport::default();
    let result = copy_all(from, to, &lock, &ids, options.jobs, &mut report).await;
    lock.release().await?;
    result.map(|()| report)
}

/// Copies the backups `ids`, in order, while `lock` is held on the target.
async fn copy_all(
    from: &Repository,
    to: &Repository,
    lock: &RepoLock,
    ids: &[String],
    jobs: usize,
    report: &mut CopyReport,
) -> Result<()> {
    let scratch = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let mut target = Target {
        repo: to,
        lock,
        uploader: Uploader::new(to.clone(), DEFAULT_MEMORY_BUDGET),
        scratch: scratch.path(),
        jobs: jobs.max(1),
        present: present_in(to, &[layout::SST, layout::BLOBS]).await?,
    };
    for id in ids {
        copy_backup(from, &mut target, id, report).await?;
    }
    Ok(())
}

/// The target of a copy: what it holds (shared objects listed once per copy,
/// and every object copied since), and how objects get there.
struct Target<'a> {
    repo: &'a Repository,
    lock: &'a RepoLock,
    uploader: Uploader,
    scratch: &'a Path,
    jobs: usize,
    /// Object key → size.
    present: HashMap<String, u64>,
}

/// The ids `options` selects, oldest first.
async fn selected(from: &Repository, options: &CopyOptions) -> Result<Vec<String>> {
    if options.backup != "all" {
        let id = manifest::resolve(from, &options.backup, options.source.as_deref()).await?;
        return Ok(vec![id]);
    }
    let listed = manifest::list(from).await?;
    if let Some(broken) = listed.iter().find(|b| b.error.is_some()) {
        return Err(Error::manifest(
            layout::manifest(&broken.backup_id).to_string(),
            broken.error.clone().unwrap_or_default(),
        ));
    }
    let wanted =
        |b: &&manifest::ListedBackup| options.source.is_none() || b.source == options.source;
    Ok(listed
        .iter()
        .filter(wanted)
        .map(|b| b.backup_id.clone())
        .collect())
}

/// Copies one backup: its objects, its parts, then its manifest.
async fn copy_backup(
    from: &Repository,
    target: &mut Target<'_>,
    id: &str,
    report: &mut CopyReport,
) -> Result<()> {
    let to = target.repo;
    let (header, bytes) = manifest::read_raw(from, id).await?;
    let key = layout::manifest(id);
    if to
        .get_if_exists(&key, bytes.len() as u64 + 1)
        .await
        .ok()
        .flatten()
        == Some(bytes.clone())
    {
        report.present.push(id.to_string());
        return Ok(());
    }
    let needed = needed_objects(from, &header).await?;
    // What an earlier, interrupted copy of this backup left.
    let own = format!("{}/{id}", layout::BACKUPS);
    target.present.extend(present_in(to, &[&own]).await?);
    let missing: Vec<&Needed> = needed
        .iter()
        .filter(|n| target.present.get(n.key.as_ref()) != Some(&n.size))
        .collect();
    report.objects_present += (needed.len() - missing.len()) as u64;
    futures::stream::iter(
        missing
            .iter()
            .map(|n| copy_object(from, &target.uploader, n, target.scratch)),
    )
    .buffer_unordered(target.jobs)
    .try_for_each(|sent| {
        report.objects_copied += 1;
        report.bytes_copied += sent;
        futures::future::ok(())
    })
    .await?;
    let copied = missing.iter().map(|n| (n.key.to_string(), n.size));
    target.present.extend(copied);
    target.lock.check_held().await?;
    to.create(&key, bytes).await?;
    target.lock.check_held().await?;
    tracing::info!(backup = id, "copied");
    report.copied.push(id.to_string());
    Ok(())
}

/// Every object `header`'s backup needs, parts included.
async fn needed_objects(from: &Repository, header: &Header) -> Result<Vec<Needed>> {
    let mut needed = Vec::new();
    for part in &header.parts {
        let key = layout::part(&header.backup_id, &part.sha256);
        needed.push(Needed {
            key,
            size: part.bytes,
            sha256: part.sha256.clone(),
        });
    }
    header
        .for_each_entry(from, |e: DbFileEntry| {
            let key = ObjectPath::from(e.object.as_str());
            needed.push(Needed {
                key,
                size: e.size,
                sha256: e.sha256,
            });
            Ok(())
        })
        .await?;
    let mut externals = HashMap::new();
    header
        .for_each_entry(from, |e: ExternalEntry| {
            externals.insert(e.sha256, e.size);
            Ok(())
        })
        .await?;
    for (sha256, size) in externals {
        needed.push(Needed {
            key: layout::external_blob(&sha256),
            size,
            sha256,
        });
    }
    Ok(needed)
}

/// Object key → size of everything the target holds under `prefixes` (one
/// LIST each).
async fn present_in(to: &Repository, prefixes: &[&str]) -> Result<HashMap<String, u64>> {
    let mut present = HashMap::new();
    for prefix in prefixes {
        for meta in to.list(prefix).await? {
            present.insert(meta.location.to_string(), meta.size);
        }
    }
    Ok(present)
}

/// Downloads one object into `scratch` with its size and hash checked, then
/// uploads it; returns its size.
async fn copy_object(
    from: &Repository,
    uploader: &Uploader,
    needed: &Needed,
    scratch: &Path,
) -> Result<u64> {
    let file = scratch.join(&needed.sha256);
    let mut out = tokio::fs::File::create(&file)
        .await
        .map_err(|e| Error::io(&file, e))?;
    let wanted = (needed.size, needed.sha256.as_str());
    let fetched = from
        .read_verified(&needed.key, wanted, &mut out, &file)
        .await;
    let damage = match fetched? {
        Fetched::Intact => None,
        Fetched::Missing => Some("is missing".to_string()),
        Fetched::TooLarge => Some(format!("holds more than {} bytes", needed.size)),
        Fetched::Differs { bytes, sha256 } => {
            Some(format!("holds {bytes} bytes hashing to {sha256}"))
        }
    };
    if let Some(damage) = damage {
        let _ = tokio::fs::remove_file(&file).await;
        return Err(Error::manifest(
            needed.key.to_string(),
            format!("the source {damage}; its manifest says {} bytes, {}: not copied (rockup verify --deep names the damage)", needed.size, needed.sha256),
        ));
    }
    let sent = uploader
        .upload_file(&file, &needed.key, Some(&needed.sha256))
        .await;
    let _ = tokio::fs::remove_file(&file).await;
    Ok(sent?.1)
}
