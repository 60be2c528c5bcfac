//! `rockup copy`: committed backups copied to a second repository (another
//! provider, region or account) — the second copy of the 3-2-1 rule, from one
//! read of the first, without backing the database up again. Per backup: every
//! object its manifest names that the target lacks is downloaded to a scratch
//! file with its size and SHA-256 checked (content in a pack: its entry read,
//! decoded and checked), then stored — table files and parts under their own
//! keys, content through the target's [`ContentStore`] (packed when small, so
//! the target's packs are its own); what the target holds is not sent (dedup
//! across backups and sources). What a backup needs is its walk
//! ([`Header::referenced`]: parts, table files, content). The manifest goes
//! last, committed under a backup lock on the target (checked before and
//! after, withdrawn when lost), so a prune there never deletes what a copy is
//! about to reference.

use std::collections::HashMap;
use std::path::Path;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use serde::Serialize;

use crate::common::spool::scratch_dir;
use crate::common::tasks::Jobs;
use crate::digest::Sha256;
use crate::error::{Error, Result};
use crate::repo::content::{ContentOptions, ContentStore};
use crate::repo::crypto::sealed::Kind;
use crate::repo::ids::{BackupId, Format};
use crate::repo::layout;
use crate::repo::lock::{locked, LockKind, LockRequest, RepoLock, DEFAULT_LEASE};
use crate::repo::manifest::{self, DbFileEntry, Entry, ExternalEntry, Header, PartKind, Stored};
use crate::repo::pack::reader::{self, Wanted};
use crate::repo::pack::{ContentIndex, Located, Location};
use crate::repo::upload::{Uploader, DEFAULT_MEMORY_BUDGET};
use crate::repo::{Fetched, Repository};

/// What to copy: [`CopyOptions::default`] (the latest backup), then the
/// fields that differ (see the crate docs).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CopyOptions {
    /// A backup id, `latest` (of `source`) or `all`.
    pub backup: String,
    /// Only this source's backups (and whose `latest`).
    pub source: Option<String>,
    /// Objects copied at once.
    pub jobs: Jobs,
    /// How long to wait for a prune of the target to finish (`--retry-lock`);
    /// zero fails at once.
    pub retry_lock: std::time::Duration,
}

impl Default for CopyOptions {
    fn default() -> Self {
        Self {
            backup: "latest".into(),
            source: None,
            jobs: Jobs::from(8),
            retry_lock: std::time::Duration::ZERO,
        }
    }
}

/// What a copy did.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct CopyReport {
    /// Backups committed to the target.
    pub copied: Vec<BackupId>,
    /// Backups the target already held.
    pub present: Vec<BackupId>,
    /// Objects sent, and their bytes.
    pub objects_copied: u64,
    /// Bytes of the objects sent.
    pub bytes_copied: u64,
    /// Objects the target already had (not sent).
    pub objects_present: u64,
}

/// Copies the selected backups of `from` into `to`.
pub async fn copy(from: &Repository, to: &Repository, options: &CopyOptions) -> Result<CopyReport> {
    from.check_marker(None).await?;
    from.require_full_key("copying from an encrypted repository")?;
    to.check_marker(Some(Format::NEWEST)).await?;
    let ids = selected(from, options).await?;
    let request = LockRequest {
        kind: LockKind::Backup,
        operation: "copy",
        id: BackupId::new(chrono::Utc::now()),
        lease: DEFAULT_LEASE,
        wait: options.retry_lock,
    };
    let mut report = CopyReport::default();
    locked(to, request, async |lock| {
        copy_all(from, to, lock, &ids, options.jobs, &mut report).await
    })
    .await?;
    Ok(report)
}

/// Copies the backups `ids`, in order, while `lock` is held on the target.
async fn copy_all(
    from: &Repository,
    to: &Repository,
    lock: &RepoLock,
    ids: &[BackupId],
    jobs: Jobs,
    report: &mut CopyReport,
) -> Result<()> {
    let scratch = scratch_dir("copy")?;
    let uploader = Uploader::new(to.clone(), DEFAULT_MEMORY_BUDGET);
    let (source_dir, target_dir) = (scratch.path().join("from"), scratch.path().join("to"));
    let files = scratch.path().join("files");
    std::fs::create_dir(&files).map_err(|e| Error::io(&files, e))?;
    let mut target = Target {
        repo: to,
        lock,
        content: ContentStore::open(to, uploader, &target_dir, ContentOptions::default()).await?,
        source: ContentIndex::load(from, &source_dir, false).await?,
        scratch: &files,
        jobs,
        present: present_in(to, &[layout::TABLES]).await?,
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
    /// Content the target holds, and where content goes.
    content: ContentStore,
    /// Where content is in the source.
    source: ContentIndex,
    scratch: &'a Path,
    jobs: Jobs,
    /// Object key → size of the target's other objects.
    present: HashMap<String, u64>,
}

/// The ids `options` selects, oldest first.
async fn selected(from: &Repository, options: &CopyOptions) -> Result<Vec<BackupId>> {
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

/// Copies one backup: what it needs, then its manifest.
async fn copy_backup(
    from: &Repository,
    target: &mut Target<'_>,
    id: &BackupId,
    report: &mut CopyReport,
) -> Result<()> {
    let to = target.repo;
    let (header, bytes) = manifest::read_raw(from, id).await?;
    let transcode = from.is_encrypted() || to.is_encrypted();
    if holds_backup(to, id, &bytes, transcode).await? {
        report.present.push(id.clone());
        return Ok(());
    }
    if to.is_encrypted() && header.version == Format::V1 {
        return Err(Error::Usage(format!(
            "backup {id} is in format 1, which is never encrypted: copy it into a plaintext \
             repository, or back the database up anew"
        )));
    }
    let needed = needed(from, to, &header, transcode).await?;
    // What an earlier, interrupted copy of this backup left.
    let own = format!("{}/{id}", layout::BACKUPS);
    target.present.extend(present_in(to, &[&own]).await?);
    let mut missing = Vec::new();
    for n in &needed {
        let present = match &n.keys {
            None => target.content.index.holds(&n.sha256)?,
            Some((_, key)) => target.present.get(key.as_ref()) == Some(&n.target_size(to)),
        };
        if !present {
            missing.push(n);
        }
    }
    report.objects_present += (needed.len() - missing.len()) as u64;
    let target_ref = &*target;
    // Collected first: a lazily mapped iterator of borrowing futures is not
    // `Send` to the compiler (rust-lang/rust#102211), and copies are spawned.
    let copies: Vec<_> = missing
        .iter()
        .enumerate()
        .map(|(n, needed)| copy_object(from, target_ref, n, needed))
        .collect();
    futures::stream::iter(copies)
        .buffer_unordered(target.jobs.get())
        .try_for_each(|sent| {
            report.objects_copied += 1;
            report.bytes_copied += sent;
            futures::future::ok(())
        })
        .await?;
    for n in &missing {
        if let Some((_, key)) = &n.keys {
            target.present.insert(key.to_string(), n.target_size(to));
        }
    }
    // Every pack stored before the manifest references its content.
    target.content.finish().await?;
    let bytes = match transcode {
        true => transcoded_header(from, to, &header).await?,
        false => bytes,
    };
    let key = layout::manifest(id);
    let sealed = to.seal((Kind::Manifest, key.as_ref()), bytes).await?;
    target.lock.commit(&key, sealed).await?;
    tracing::info!(backup = %id, "copied");
    report.copied.push(id.clone());
    Ok(())
}

/// Whether the target holds backup `id` already: the same manifest bytes,
/// or — where either side is encrypted, so the bytes differ — any manifest
/// of that id.
async fn holds_backup(
    to: &Repository,
    id: &BackupId,
    bytes: &[u8],
    transcode: bool,
) -> Result<bool> {
    let key = layout::manifest(id);
    if transcode {
        return Ok(to
            .get_opened(Kind::Manifest, &key, bytes.len() as u64 + (1 << 20))
            .await
            .ok()
            .flatten()
            .is_some());
    }
    let held = to.get_if_exists(&key, bytes.len() as u64 + 1).await;
    Ok(held.ok().flatten().is_some_and(|held| held == bytes))
}

/// The header of the copy of `header` in `to`: its parts stored anew, as
/// `to` stores parts (sealed there, or not), naming the same entries.
async fn transcoded_header(from: &Repository, to: &Repository, header: &Header) -> Result<Bytes> {
    let to_format = (&header.backup_id, header.version);
    let mut parts = Vec::new();
    for part in &header.parts {
        let stored = match part.kind {
            PartKind::Db => {
                let entries: Vec<DbFileEntry> = header.read_part(from, part).await?;
                manifest::store_entries(to, to_format, &entries).await?
            }
            PartKind::External => {
                let entries: Vec<ExternalEntry> = header.read_part(from, part).await?;
                manifest::store_entries(to, to_format, &entries).await?
            }
            PartKind::Problems => {
                let entries: Vec<crate::error::Problem> = header.read_part(from, part).await?;
                manifest::store_entries(to, to_format, &entries).await?
            }
        };
        parts.extend(stored);
    }
    let mut copied = header.clone();
    copied.parts = parts;
    Ok(Bytes::from(
        serde_json::to_vec_pretty(&copied).expect("header serializes"),
    ))
}

/// One object or content a backup needs.
struct Needed {
    /// Its object's key in the source and in the target; none for content
    /// by hash.
    keys: Option<(ObjectPath, ObjectPath)>,
    kind: Kind,
    /// Bytes of its content (a part's: as stored).
    size: u64,
    sha256: Sha256,
}

impl Needed {
    /// Bytes its object takes in the target.
    fn target_size(&self, to: &Repository) -> u64 {
        match self.kind {
            Kind::Part => self.size,
            _ => to.stored_len(self.size),
        }
    }
}

/// What `header`'s backup needs from `from` to be whole in `to`, each
/// content once; its parts too unless they are `transcode`d (stored anew).
async fn needed(
    from: &Repository,
    to: &Repository,
    header: &Header,
    transcode: bool,
) -> Result<Vec<Needed>> {
    let mut contents = std::collections::HashSet::new();
    header
        .referenced(from)
        .try_filter(|n| {
            let part = matches!(n.entry, Entry::Part(_));
            let wanted = match n.stored {
                Stored::Content => contents.insert(n.sha256),
                Stored::Object(_) => !(part && transcode),
            };
            futures::future::ready(wanted)
        })
        .map_ok(|n| {
            let kind = n.kind();
            let keys = match (&n.stored, &n.entry) {
                (Stored::Content, _) => None,
                (Stored::Object(key), Entry::Db(db)) => {
                    let logical = ObjectPath::from(db.object.clone().unwrap_or_default());
                    Some((key.clone(), to.object_key_of(&logical)))
                }
                (Stored::Object(key), _) => Some((key.clone(), key.clone())),
            };
            Needed {
                keys,
                kind,
                size: n.size,
                sha256: n.sha256,
            }
        })
        .try_collect()
        .await
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

/// Downloads one object (or pack entry) into the scratch directory with
/// its size and hash checked, then stores it in the target; returns its size.
async fn copy_object(
    from: &Repository,
    target: &Target<'_>,
    n: usize,
    needed: &Needed,
) -> Result<u64> {
    let file = target.scratch.join(n.to_string());
    let (key, located) = match &needed.keys {
        None => (
            from.content_key(&needed.sha256),
            target.source.locate(&needed.sha256)?,
        ),
        Some((key, _)) => (key.clone(), Located::Object),
    };
    let damage = match located {
        Located::Packed(location) => read_entry(from, location, &file).await?,
        Located::Object => download(from, (needed.kind, &key), needed, &file).await?,
    };
    if let Some(damage) = damage {
        let _ = tokio::fs::remove_file(&file).await;
        return Err(Error::manifest(
            key.to_string(),
            format!("the source {damage}; its manifest says {} bytes, {}: not copied (rockup verify --deep names the damage)", needed.size, needed.sha256),
        ));
    }
    let sent = match &needed.keys {
        None => target
            .content
            .store_file(&file, needed.size, Some(&needed.sha256))
            .await
            .map(|_| needed.size),
        Some((_, key)) => target
            .content
            .uploader()
            .upload_file(&file, (needed.kind, key), Some(&needed.sha256))
            .await
            .map(|(_, size)| size),
    };
    let _ = tokio::fs::remove_file(&file).await;
    sent
}

/// Downloads the object at `key` to `file`; `Some(damage)` when it is not
/// what `needed` says.
async fn download(
    from: &Repository,
    key: (Kind, &ObjectPath),
    needed: &Needed,
    file: &Path,
) -> Result<Option<String>> {
    let mut out = tokio::fs::File::create(file)
        .await
        .map_err(|e| Error::io(file, e))?;
    let wanted = (needed.size, &needed.sha256);
    Ok(
        match from.read_verified(key, wanted, &mut out, file).await? {
            Fetched::Intact => None,
            Fetched::Missing => Some("is missing".to_string()),
            Fetched::TooLarge => Some(format!("holds more than {} bytes", needed.size)),
            Fetched::Differs { bytes, sha256 } => {
                Some(format!("holds {bytes} bytes hashing to {sha256}"))
            }
            Fetched::Damaged(why) => Some(why),
        },
    )
}

/// Reads one pack entry, checked, into `file`; `Some(damage)` when it is not intact.
async fn read_entry(from: &Repository, location: Location, file: &Path) -> Result<Option<String>> {
    let range = vec![Wanted {
        entry: location.entry,
        target: (),
    }];
    let read = reader::read_range(
        from,
        location.pack,
        location.pack_size,
        range,
        |w, frame| reader::open_entry_of(from, w.entry, frame),
    )
    .await?;
    if let Some(failed) = read.failed {
        return Ok(Some(format!("pack {}: {}", location.pack, failed.detail)));
    }
    match read.delivered.into_iter().next() {
        Some(Ok(content)) => {
            std::fs::write(file, content).map_err(|e| Error::io(file, e))?;
            Ok(None)
        }
        Some(Err(why)) => Ok(Some(format!("pack {}: {why}", location.pack))),
        None => Ok(Some(format!("pack {}: entry not delivered", location.pack))),
    }
}
