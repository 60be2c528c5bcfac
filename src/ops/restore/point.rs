//! Restores to a point in time: a base backup, then the write batches of the
//! segments that continue it, up to a write-batch boundary at or before the
//! target.
//!
//! `plan` picks the newest base at or before the target whose segments reach
//! it without a gap (one LIST per candidate) and the segments to read (merged
//! ones first); a target no base reaches is refused, naming the ranges
//! that exist. `replay` opens the restored base (in its staging directory)
//! and writes each batch again in order — RocksDB gives each the sequence
//! number it had, since they continue the base's — then reads the records
//! alive at that point to learn which external files it references. Those come
//! from the segment that last captured the path at or before the point, else
//! from the base.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::common::names::normalize_relative_path;
use crate::common::rocks::{open_checkpoint, read_options_file};
use crate::common::tasks::blocking;
use crate::error::{Error, Problem, Result};
use crate::repo::ids::BackupId;
use crate::repo::manifest::{self, Header};
use crate::repo::segment::{self, SegmentFile, SegmentRef};
use crate::repo::Repository;
use crate::source::{for_each_reference, ExternalFiles};

/// The moment to restore to (`--to-sequence`, `--to-time`, `--to latest`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PointInTime {
    /// The last write batch at or before this sequence number.
    Sequence(u64),
    /// The last write batch `follow` had read by this time.
    Time(DateTime<Utc>),
    /// The last batch shipped.
    Latest,
}

/// What a restore to a point reads.
pub(super) struct Plan {
    /// The base backup.
    pub base: Header,
    /// Its segments, in order.
    pub segments: Vec<SegmentRef>,
    /// The last sequence number to restore.
    pub target: u64,
}

/// One base's restorable range: every write batch from its base's
/// sequence number to the last its segments reach without a gap.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Restorable {
    /// The source.
    pub source: String,
    /// The base backup.
    pub base: BackupId,
    /// The base's sequence number.
    pub first_sequence: u64,
    /// The last sequence number the segments reach.
    pub last_sequence: u64,
    /// When the base was taken.
    pub from_time: DateTime<Utc>,
    /// When `follow` had read the last batch.
    pub to_time: DateTime<Utc>,
    /// Segments a restore to the end reads.
    pub segments: usize,
}

/// The restorable range of every backup: from its sequence number to the
/// last its segments reach without a gap, or its own point when none
/// continue it (one LIST, and one GET per continued range for its end time).
pub async fn restorable(repo: &Repository) -> Result<Vec<Restorable>> {
    let segments = segment::list(repo, None).await?;
    let mut ranges = Vec::new();
    for listed in manifest::list(repo).await? {
        let Some(base) = listed.header else { continue };
        let start = base.sequence_number + 1;
        let of: Vec<SegmentRef> = segments
            .iter()
            .filter(|s| s.base == base.backup_id)
            .cloned()
            .collect();
        let chain = segment::plan(&of, start, segment::reach(&of, start)).unwrap_or_default();
        let (last_sequence, to_time) = match chain.last() {
            // No segment continues it (or its first is gone): its own point.
            None => (base.sequence_number, base.time_of_point()),
            Some(last) => {
                let end = segment::read(repo, last).await?;
                let at = end
                    .header
                    .marks
                    .last()
                    .map_or(base.time_of_point(), |m| m.at);
                (last.last, at)
            }
        };
        ranges.push(Restorable {
            source: base.source.id(),
            base: base.backup_id.clone(),
            first_sequence: base.sequence_number,
            last_sequence,
            from_time: base.time_of_point(),
            to_time,
            segments: chain.len(),
        });
    }
    Ok(ranges)
}

/// Plans the restore of `source`'s database to `to`.
pub(super) async fn plan(repo: &Repository, source: Option<&str>, to: PointInTime) -> Result<Plan> {
    let mut bases = bases_of(repo, source).await?;
    bases.sort_by_key(|h| std::cmp::Reverse(h.sequence_number));
    let mut ranges = Vec::new();
    for base in bases {
        let start = base.sequence_number + 1;
        let segments = segment::list(repo, Some(&base.backup_id)).await?;
        let reach = segment::reach(&segments, start);
        ranges.push(format!(
            "{}..={reach} (base {})",
            base.sequence_number, base.backup_id
        ));
        let target = match to {
            PointInTime::Latest => Some(reach),
            PointInTime::Sequence(n) if n >= base.sequence_number && n <= reach => Some(n),
            PointInTime::Sequence(_) => None,
            PointInTime::Time(t) if base.time_of_point() <= t => Some(
                last_read_by(repo, &segments, start, reach, t)
                    .await?
                    .unwrap_or(base.sequence_number),
            ),
            PointInTime::Time(_) => None,
        };
        if let Some(target) = target {
            let segments = segment::plan(&segments, start, target).map_err(|gap| {
                Error::manifest(
                    base.backup_id.to_string(),
                    format!("no segment holds sequence number {gap}"),
                )
            })?;
            return Ok(Plan {
                base,
                segments,
                target,
            });
        }
    }
    Err(Error::Usage(format!(
        "no base backup and segments reach {to:?}; the restorable ranges are: {}",
        if ranges.is_empty() {
            "none".to_string()
        } else {
            ranges.join(", ")
        }
    )))
}

/// The backups of `source` (of the only source when `None`).
async fn bases_of(repo: &Repository, source: Option<&str>) -> Result<Vec<Header>> {
    let headers: Vec<Header> = manifest::list(repo)
        .await?
        .into_iter()
        .filter_map(|listed| listed.header)
        .collect();
    let sources: HashSet<String> = headers.iter().map(|h| h.source.id()).collect();
    let wanted = match source {
        Some(source) => source.to_string(),
        None if sources.len() <= 1 => return Ok(headers),
        None => {
            return Err(Error::Usage(format!(
                "the repository holds several sources; pass --source (one of {})",
                sources.into_iter().collect::<Vec<_>>().join(", ")
            )))
        }
    };
    Ok(headers
        .into_iter()
        .filter(|h| h.source.id() == wanted)
        .collect())
}

/// The last sequence number `follow` had read by `time` in the segments from
/// `start` to `reach`; `None` when it had read none of them by then.
async fn last_read_by(
    repo: &Repository,
    segments: &[SegmentRef],
    start: u64,
    reach: u64,
    time: DateTime<Utc>,
) -> Result<Option<u64>> {
    let chain = segment::plan(segments, start, reach).unwrap_or_default();
    let mut last = None;
    for at in chain {
        let read = segment::read(repo, &at).await?;
        for mark in read.header.marks {
            if mark.at > time {
                return Ok(last);
            }
            last = Some(mark.last);
        }
    }
    Ok(last)
}

/// What replaying the segments gave.
pub(super) struct Replayed {
    /// The sequence number the database reached.
    pub reached: u64,
    /// The external files referenced at that point, by path, with the
    /// segment entry that holds their content (`None`: the base's).
    pub wanted: HashMap<String, Option<SegmentFile>>,
    /// The problems the replayed segments recorded.
    pub problems: Vec<Problem>,
}

/// Writes the planned batches into the base restored at `db_dir`, then reads
/// which files the records alive at the target reference.
pub(super) async fn replay(
    repo: &Repository,
    plan: &Plan,
    db_dir: &Path,
    files: Option<ExternalFiles>,
    open_options: Option<rocksdb::Options>,
) -> Result<Replayed> {
    let mut latest: HashMap<String, SegmentFile> = HashMap::new();
    let mut problems = Vec::new();
    let mut batches = Vec::new();
    for at in &plan.segments {
        let read = segment::read(repo, at).await?;
        for batch in read.batches {
            let (sequence, count) = segment::batch_sequence(&batch)
                .map_err(|e| Error::manifest(at.key().to_string(), e))?;
            if sequence > plan.base.sequence_number && sequence + count - 1 <= plan.target {
                batches.push(batch);
            }
        }
        for file in read
            .header
            .files
            .into_iter()
            .filter(|f| f.sequence <= plan.target)
        {
            latest.insert(file.path.clone(), file);
        }
        problems.extend(read.header.problems);
    }
    let db_dir = db_dir.to_path_buf();
    let expected_start = plan.base.sequence_number + 1;
    blocking(move || {
        let reached = write_batches(&db_dir, open_options.clone(), batches, expected_start)?;
        let wanted = referenced(&db_dir, open_options, files.as_ref(), latest)?;
        Ok(Replayed {
            reached,
            wanted,
            problems,
        })
    })
    .await
}

/// Opens the restored base read-write with its column families and writes
/// `batches` in order; returns the sequence number reached.
fn write_batches(
    db_dir: &Path,
    open_options: Option<rocksdb::Options>,
    batches: Vec<bytes::Bytes>,
    mut next: u64,
) -> Result<u64> {
    let db = open_for_replay(db_dir, open_options)?;
    if db.latest_sequence_number() + 1 != next {
        return Err(Error::manifest(
            db_dir.display().to_string(),
            format!(
                "the restored base is at sequence number {}, its segments continue {}",
                db.latest_sequence_number(),
                next - 1
            ),
        ));
    }
    for batch in batches {
        let (sequence, count) = segment::batch_sequence(&batch).expect("checked when read");
        if sequence != next {
            return Err(Error::manifest(
                db_dir.display().to_string(),
                format!("batch {sequence} does not continue {}", next - 1),
            ));
        }
        db.write(rocksdb::WriteBatch::from_data(&batch))
            .map_err(|e| Error::rocks("replaying a WAL segment", e))?;
        next = sequence + count;
    }
    db.flush_wal(true)
        .map_err(|e| Error::rocks("syncing the replayed WAL", e))?;
    let reached = db.latest_sequence_number();
    if reached + 1 != next {
        return Err(Error::manifest(
            db_dir.display().to_string(),
            format!("replay reached sequence number {reached}, not {}", next - 1),
        ));
    }
    Ok(reached)
}

/// The restored database opened read-write, every column family with the
/// options its OPTIONS file records (or the application's).
fn open_for_replay(db_dir: &Path, options: Option<rocksdb::Options>) -> Result<rocksdb::DB> {
    let (mut opts, cfs) = match options {
        Some(options) => {
            let names = rocksdb::DB::list_cf(&options, db_dir)
                .map_err(|e| Error::rocks("listing column families", e))?;
            let cfs = names
                .into_iter()
                .map(|n| rocksdb::ColumnFamilyDescriptor::new(n, options.clone()))
                .collect();
            (options, cfs)
        }
        None => {
            let env = rocksdb::Env::new()
                .map_err(|e| Error::rocks("creating a RocksDB environment", e))?;
            rocksdb::Options::load_latest(db_dir, env, true, rocksdb::Cache::new_lru_cache(8 << 20))
                .map_err(|e| {
                    Error::rocks(
                        format!("reading the OPTIONS file of {}", db_dir.display()),
                        e,
                    )
                })?
        }
    };
    opts.create_if_missing(false);
    // The restored copy's own directory holds its WAL, whatever the source's was.
    if read_options_file(db_dir)?.wal_dir.is_some() {
        opts.set_wal_dir(db_dir);
    }
    rocksdb::DB::open_cf_descriptors(&opts, db_dir, cfs).map_err(|e| {
        Error::rocks(
            format!(
                "opening the restored base {} to replay segments",
                db_dir.display()
            ),
            e,
        )
    })
}

/// The paths the records alive in the replayed database reference, each
/// with the newest segment entry for it (`None`: the base holds it).
fn referenced(
    db_dir: &Path,
    open_options: Option<rocksdb::Options>,
    files: Option<&ExternalFiles>,
    mut latest: HashMap<String, SegmentFile>,
) -> Result<HashMap<String, Option<SegmentFile>>> {
    let mut wanted = HashMap::new();
    let Some(files) = files else {
        return Ok(wanted);
    };
    let (db, _) = open_checkpoint(db_dir, open_options)?;
    for_each_reference(&db, files, |_, item| {
        if let Some(path) = item
            .ok()
            .and_then(|r| normalize_relative_path(&r.path).ok())
        {
            let entry = latest.remove(&path);
            wanted.entry(path).or_insert(entry);
        }
        true
    })?;
    Ok(wanted)
}
