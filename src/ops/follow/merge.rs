//! Merging segments in levels (Litestream's idea): once `fan_in` segments of
//! one level wait, they are read back and stored as one segment of the next
//! level, so a restore to any point reads a few large objects instead of
//! thousands of one-second ones. The merged-away segments stay until `prune`
//! deletes what a higher level covers (after its grace period, so a restore
//! planned from an older listing still finds them). Merging is an
//! optimization: a failure is logged and tried again later. A write-only host
//! cannot read segments back and does not merge.

use crate::error::Result;
use crate::repo::segment::{self, covers, Segment, SegmentRef, MERGED_BELOW};
use crate::repo::Repository;

use super::timeline::Timeline;

/// Levels above 0.
const TOP_LEVEL: u8 = 2;

/// Merges every level that has `fan_in` segments waiting.
pub(super) async fn maybe_merge(repo: &Repository, timeline: &mut Timeline, fan_in: usize) {
    if repo.is_write_only() || fan_in < 2 {
        return;
    }
    for level in 0..TOP_LEVEL {
        let waiting: Vec<SegmentRef> = timeline
            .unmerged
            .iter()
            .filter(|s| s.level == level)
            .cloned()
            .collect();
        if waiting.len() < fan_in {
            continue;
        }
        match merge(repo, &waiting, level + 1).await {
            Ok(merged) => {
                timeline.unmerged.retain(|s| !covers(&merged, s));
                timeline.unmerged.push(merged);
                timeline.unmerged.sort_by_key(|s| s.first);
            }
            Err(e) => {
                tracing::warn!(error = %e, level, "segments could not be merged; trying later")
            }
        }
    }
}

/// Reads `segments` (contiguous, oldest first) and stores the longest run of
/// them that stays below [`MERGED_BELOW`] as one segment of `level`.
async fn merge(repo: &Repository, segments: &[SegmentRef], level: u8) -> Result<SegmentRef> {
    let (mut batches, mut marks, mut files, mut problems) = (vec![], vec![], vec![], vec![]);
    let mut bytes = 0;
    for at in segments {
        let read = segment::read(repo, at).await?;
        bytes += read.batch_bytes();
        if bytes >= MERGED_BELOW && !batches.is_empty() {
            break;
        }
        batches.extend(read.batches);
        marks.extend(read.header.marks);
        files.extend(read.header.files);
        problems.extend(read.header.problems);
    }
    let timeline = segments[0].base.clone();
    let merged = Segment::new(timeline, level, batches, marks, files, problems)?;
    segment::store(repo, &merged).await?;
    Ok(merged.reference())
}
