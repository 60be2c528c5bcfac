//! Capture and ship. The batches one poll read are captured at once: every
//! file their puts reference is pinned (from the watcher's links of new files
//! first, then the live tree), because the application may delete it a moment
//! later. Shipping stores the pinned files' content and only then the segment
//! naming them; what fails stays pending, pins and all, for the next attempt.

use std::path::PathBuf;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};

use crate::common::tasks::blocking;
use crate::error::{Problem, Result};
use crate::ops::backup::{store_pinned, BackupOptions};
use crate::repo::content::ContentStore;
use crate::repo::segment::{self, Mark, Segment, SegmentFile};
use crate::repo::Repository;
use crate::source::{references, Batch, Pin, Pinned, Pinner, Prelinks};

use super::timeline::Timeline;

/// Batches read and captured, not shipped yet.
#[derive(Default)]
pub(super) struct Pending {
    batches: Vec<Bytes>,
    marks: Vec<Mark>,
    files: Vec<(u64, Pinned)>,
    problems: Vec<Problem>,
    pins: Vec<PathBuf>,
    bytes: usize,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Bytes of batches held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Adds a later capture.
    pub fn append(&mut self, later: Pending) {
        self.batches.extend(later.batches);
        self.marks.extend(later.marks);
        self.files.extend(later.files);
        self.problems.extend(later.problems);
        self.pins.extend(later.pins);
        self.bytes += later.bytes;
    }
}

/// Pins the files `batches` (read at `read_at`) reference into `pins`.
pub(super) async fn capture(
    timeline: &Timeline,
    batches: Vec<Batch>,
    read_at: DateTime<Utc>,
    options: &BackupOptions,
    pins: PathBuf,
    links: Option<PathBuf>,
) -> Result<Pending> {
    let last = batches.last().map_or(0, |b| b.end() - 1);
    let mut pending = Pending {
        marks: vec![Mark { last, at: read_at }],
        bytes: batches.iter().map(|b| b.data.len()).sum(),
        ..Pending::default()
    };
    let (Some(external), Some(cf_id)) = (options.external.clone(), timeline.files_cf) else {
        pending.batches = batches.into_iter().map(|b| b.data.into()).collect();
        return Ok(pending);
    };
    pending.pins.push(pins.clone());
    blocking(move || {
        let mut pinner = Pinner::new(&external.blob_root, pins.clone())?
            .with_prelinks(links.map(Prelinks::kept_in));
        for batch in batches {
            for found in references(&batch.data, cf_id, &external) {
                let pinned = found
                    .reference
                    .map(|reference| pinner.pin(&found.key, reference));
                match pinned {
                    Ok(Pin::Captured(mut pinned)) => {
                        hold_link(&mut pinned, &pins, pending.files.len());
                        pending.files.push((batch.sequence, *pinned))
                    }
                    Ok(Pin::Duplicate) => {}
                    Ok(Pin::Problem(problem)) | Err(problem) => pending.problems.push(problem),
                }
            }
            pending.batches.push(batch.data.into());
        }
        Ok(pending)
    })
    .await
}

/// A file pinned from the watcher's links (which expire) gets a link of its
/// own among the pins, so that it outlasts a store outage.
fn hold_link(pinned: &mut Pinned, pins: &std::path::Path, n: usize) {
    if pinned.read_from.starts_with(pins) {
        return;
    }
    let own = pins.join(format!("held-{n}"));
    if std::fs::hard_link(&pinned.read_from, &own).is_ok() {
        pinned.read_from = own;
    }
}

/// Stores one pinned file: its segment entry, or the problem that kept it out.
async fn store_file(
    content: &ContentStore,
    sequence: u64,
    pinned: Pinned,
) -> Result<std::result::Result<SegmentFile, Problem>> {
    let entry = store_pinned(content, &pinned).await?;
    Ok(entry.map(|entry| SegmentFile {
        path: entry.path,
        sha256: entry.sha256,
        size: entry.size,
        mode: entry.mode,
        mtime_ns: entry.mtime_ns,
        sequence,
    }))
}

/// What one shipped segment held.
pub(super) struct Shipped {
    pub files: u64,
    pub problems: u64,
}

/// Stores the content of every pending file, then the segment of all pending
/// batches; on success the pending batches are gone and the timeline has
/// shipped them. On failure nothing pending is lost.
pub(super) async fn ship(
    repo: &Repository,
    content: &ContentStore,
    timeline: &mut Timeline,
    pending: &mut Pending,
    jobs: usize,
) -> Result<Shipped> {
    let stored: Vec<_> = futures::stream::iter(pending.files.clone())
        .map(|(sequence, pinned)| store_file(content, sequence, pinned))
        .buffered(jobs.max(1))
        .try_collect()
        .await?;
    content.finish().await?;
    let mut problems = pending.problems.clone();
    let mut files = Vec::with_capacity(stored.len());
    for entry in stored {
        match entry {
            Ok(file) => files.push(file),
            Err(problem) => problems.push(problem),
        }
    }
    let shipped = Shipped {
        files: files.len() as u64,
        problems: problems.len() as u64,
    };
    let segment = Segment::new(
        timeline.base.clone(),
        0,
        pending.batches.clone(),
        pending.marks.clone(),
        files,
        problems,
    )?;
    for problem in &segment.header.problems {
        tracing::warn!(%problem, "a reference follow could not capture");
    }
    segment::store(repo, &segment).await?;
    let at = segment.reference();
    timeline.shipped = at.last;
    timeline.unmerged.push(at);
    for pins in std::mem::take(&mut *pending).pins {
        let _ = std::fs::remove_dir_all(pins);
    }
    Ok(shipped)
}
