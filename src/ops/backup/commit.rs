//! Stage 4: the sorted parts (database files, external files from the spool,
//! problems) stored under their hashes, then the header written once under
//! the backup's lock — the commit point of the backup.

use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};

use crate::common::names::hostname;
use crate::common::spool::Spool;
use crate::error::{Problem, Result};
use crate::repo::ids::{BackupId, Format};
use crate::repo::lock::RepoLock;
use crate::repo::manifest::{
    self, ExternalEntry, ExternalInfo, Header, PartBuffer, PartKind, PartRef, SourceInfo,
};
use crate::repo::Repository;
use crate::source::{ExternalFiles, Origin, Snapshot};

use super::previous::HostCache;
use super::transfer::Transferred;
use super::{BackupOptions, Run};

/// Stores the parts and commits the header; returns it with the problems it records.
pub(super) async fn commit(
    repo: &Repository,
    run: &Run,
    snapshot: Snapshot,
    transferred: Transferred,
    options: &BackupOptions,
    lock: &RepoLock,
) -> Result<(Header, Vec<Problem>)> {
    let Transferred {
        db_entries,
        external,
        problems,
        mut stats,
    } = transferred;
    let to = (&run.backup_id, options.format);
    let mut parts = manifest::store_entries(repo, to, &db_entries).await?;
    parts.extend(store_external_parts(repo, to, external.clone()).await?);
    parts.extend(manifest::store_entries(repo, to, &problems).await?);
    stats.duration_ms = run.started.elapsed().as_millis() as u64;
    let origin = &snapshot.origin;

    let header = Header {
        format: manifest::MANIFEST_FORMAT.into(),
        version: options.format,
        backup_id: run.backup_id.clone(),
        created_at: run.created_at,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        source: source_info(origin, options),
        sequence_number: snapshot.sequence_number,
        reached_at: Some(snapshot.reached_at),
        column_families: snapshot.column_families,
        db_mode: origin.mode,
        external: options.external.as_ref().map(external_info),
        stats,
        tags: options.tags.clone(),
        problem_count: 0,
        problems: Vec::new(),
        parts,
    }
    .with_problems(&problems);
    manifest::commit(repo, lock, &header).await?;
    tracing::info!(id = %header.backup_id, "committed");
    if let Some(cache) = HostCache::of(repo, &header.source.id(), options) {
        cache
            .remember(header.backup_id.clone(), db_entries, external)
            .await?;
    }
    Ok((header, problems))
}

/// Where the backup comes from, as the manifest records it.
pub(super) fn source_info(origin: &Origin, options: &BackupOptions) -> SourceInfo {
    SourceInfo {
        host: hostname(),
        kind: origin.kind.to_string(),
        path: origin.path.display().to_string(),
        db_identity: origin.db_identity.clone(),
        name: options.source.clone(),
    }
}

/// What the manifest records about how external files were found.
fn external_info(external: &ExternalFiles) -> ExternalInfo {
    ExternalInfo {
        column_family: external.column_family.clone(),
        resolver: external.extractor.config(),
    }
}

/// Stores the spooled external entries as sorted parts: a blocking thread walks
/// the spool and hands over one finished part at a time.
async fn store_external_parts(
    repo: &Repository,
    to: (&BackupId, Format),
    entries: Spool<String, ExternalEntry>,
) -> Result<Vec<PartRef>> {
    let (mut sender, mut receiver) = mpsc::channel(1);
    let producer = tokio::task::spawn_blocking(move || -> Result<()> {
        let mut buffer = PartBuffer::default();
        for entry in entries.iter() {
            let (_, entry) = entry?;
            if let Some(part) = buffer.push(&entry) {
                if futures::executor::block_on(sender.send(part)).is_err() {
                    return Ok(());
                }
            }
        }
        if let Some(part) = buffer.take() {
            let _ = futures::executor::block_on(sender.send(part));
        }
        Ok(())
    });
    let mut parts = Vec::new();
    while let Some(part) = receiver.next().await {
        parts.push(manifest::store_part(repo, to, PartKind::External, part).await?);
    }
    producer.await??;
    Ok(parts)
}
