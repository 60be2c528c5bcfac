//! Stage 1: the source's checkpoint, opened read-only. For a `--db` source the
//! tree under the blob root is pre-linked right before and right after the
//! point in time is fixed, so that files the application deletes meanwhile
//! can still be pinned.

use std::sync::Arc;

use crate::common::tasks::blocking;
use crate::error::Result;
use crate::source::{self, Prelinks, Prepared, Source, WorkDir};

use super::BackupOptions;

/// Takes the checkpoint of `source` into `work` (on a blocking thread where the
/// source can move there); returns it with the pre-links made around it.
pub(super) async fn take(
    source: Source<'_>,
    work: &Arc<WorkDir>,
    options: &BackupOptions,
) -> Result<(Prepared, Option<Prelinks>)> {
    let prepared = match source {
        // The application's handle is borrowed: checkpointed where it is.
        Source::Live { .. } => (source::prepare(source, work.path(), &mut || Ok(()))?, None),
        Source::Db(path) => {
            let (work, prelink_root) = (work.clone(), prelink_root(options));
            blocking(move || db_with_prelinks(Source::Db(path), &work, prelink_root)).await?
        }
        Source::Checkpoint { path, options } => {
            let (work, source) = (work.clone(), Source::Checkpoint { path, options });
            (
                blocking(move || source::prepare(source, work.path(), &mut || Ok(()))).await?,
                None,
            )
        }
    };
    tracing::info!(
        sequence = prepared.0.snapshot.sequence_number,
        files = prepared.0.files.len(),
        "checkpoint ready"
    );
    Ok(prepared)
}

/// The blob root to pre-link, when external files are captured and pre-links wanted.
fn prelink_root(options: &BackupOptions) -> Option<std::path::PathBuf> {
    let external = options.external.as_ref().filter(|_| options.prelink)?;
    Some(external.blob_root.clone())
}

/// A `--db` checkpoint, linking the tree under the blob root each time the
/// point in time is about to be (and has just been) fixed.
fn db_with_prelinks(
    source: Source<'_>,
    work: &WorkDir,
    root: Option<std::path::PathBuf>,
) -> Result<(Prepared, Option<Prelinks>)> {
    let mut prelinks = None;
    let prepared = source::prepare(source, work.path(), &mut || {
        let Some(root) = &root else { return Ok(()) };
        let links = match &mut prelinks {
            Some(links) => links,
            None => prelinks.insert(Prelinks::new(work.path().join("prelinks"))?),
        };
        links.link_tree(root)
    })?;
    if let Some(links) = &prelinks {
        tracing::info!(files = links.files, "external files pre-linked");
    }
    Ok((prepared, prelinks))
}
