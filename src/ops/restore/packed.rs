//! Files whose content is in packs: queued by pack and offset in a scratch
//! spool while the manifest is walked, then read pack by pack with coalesced
//! range requests ([`reader`]), at most `jobs` at once. Each entry is decoded
//! (never past its recorded size), hashed, and only then written to a new
//! file (`O_EXCL`, `0600`) that gets its recorded mode and mtime; content
//! that several files share is read once.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use super::download::{create_exclusive, finish, Download};
use crate::common::spool::Spool;
use crate::common::tasks::{blocking, Jobs};
use crate::error::{Error, Problem, Result};
use crate::repo::ids::PackId;
use crate::repo::layout;
use crate::repo::pack::reader::{self, Failed, Wanted};
use crate::repo::pack::{IndexEntry, Location};
use crate::repo::Repository;

/// Queue entries read from the spool at a time.
const SPOOL_BATCH: usize = 10_000;

/// A queued file: the pack entry holding its content, and the file.
#[derive(Serialize, Deserialize)]
struct Queued {
    pack_size: u64,
    entry: IndexEntry,
    /// The size the manifest records: the index's must be the same.
    size: u64,
    dest: PathBuf,
    mode: Option<u32>,
    mtime_ns: Option<i64>,
}

/// Where a queued file's content is: pack, offset, and the order it was
/// queued in (files sharing content are queued each).
type QueueKey = (PackId, u64, u64);

/// The queued files of one pack, by offset.
struct PackFiles {
    pack: PackId,
    pack_size: u64,
    files: Vec<Wanted<Queued>>,
}

/// The packed files of one restore, by pack and offset.
pub(super) struct PackedFiles {
    spool: Spool<QueueKey, Queued>,
    sequence: AtomicU64,
}

impl PackedFiles {
    pub fn create(dir: &std::path::Path) -> Result<Self> {
        Ok(Self {
            spool: Spool::create(dir)?,
            sequence: AtomicU64::new(0),
        })
    }

    /// Queues the file of `download`, whose content is at `location`.
    pub fn push(&self, location: Location, download: Download) -> Result<()> {
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        let key = (location.pack, location.entry.offset, n);
        let queued = Queued {
            pack_size: location.pack_size,
            entry: location.entry,
            size: download.size,
            dest: download.dest,
            mode: download.mode,
            mtime_ns: download.mtime_ns,
        };
        self.spool.put(&key, &queued)
    }

    /// Restores every queued file; returns what was missing or corrupt.
    pub async fn run(&self, repo: &Repository, jobs: Jobs) -> Result<Vec<Problem>> {
        let packs = futures::stream::try_unfold(None::<QueueKey>, |after| async move {
            Ok::<_, Error>(
                self.next_pack(after)?
                    .map(|(pack, last)| (pack, Some(last))),
            )
        });
        let ranges = packs.map_ok(
            |PackFiles {
                 pack,
                 pack_size,
                 files,
             }| {
                let ranges = reader::ranges(files, reader::RANGE_SPAN).into_iter();
                futures::stream::iter(ranges.map(move |r| Ok((pack, pack_size, r))))
            },
        );
        let problems: Vec<Vec<Problem>> = ranges
            .try_flatten()
            .map_ok(|(pack, pack_size, range)| restore_range(repo, pack, pack_size, range))
            .try_buffer_unordered(jobs.get())
            .try_collect()
            .await?;
        Ok(problems.into_iter().flatten().collect())
    }

    /// The files of the next pack after spool key `after`, and the last key read.
    fn next_pack(&self, mut after: Option<QueueKey>) -> Result<Option<(PackFiles, QueueKey)>> {
        let mut group: Option<PackFiles> = None;
        loop {
            let batch = self.spool.batch_after(after.as_ref(), SPOOL_BATCH)?;
            if batch.is_empty() {
                return Ok(group.zip(after));
            }
            for (key, queued) in batch {
                let pack = key.0;
                if group.as_ref().is_some_and(|g| g.pack != pack) {
                    return Ok(group.zip(after));
                }
                let group = group.get_or_insert_with(|| PackFiles {
                    pack,
                    pack_size: queued.pack_size,
                    files: Vec::new(),
                });
                group.files.push(Wanted {
                    entry: queued.entry.clone(),
                    target: queued,
                });
                after = Some(key);
            }
        }
    }
}

/// Reads one range and restores its files.
async fn restore_range(
    repo: &Repository,
    pack: PackId,
    pack_size: u64,
    range: Vec<Wanted<Queued>>,
) -> Result<Vec<Problem>> {
    let key = layout::pack(pack).to_string();
    let read = reader::read_range(repo, pack, pack_size, range, |wanted, frame| {
        restore_file(repo, &key, wanted, frame)
    })
    .await?;
    let mut problems: Vec<Problem> = read.delivered.into_iter().flatten().collect();
    if let Some(failed) = read.failed {
        let lost = failed.undelivered.len();
        let detail = format!("{}; {lost} file(s) not restored", failed.detail);
        problems.push(Failed { detail, ..failed }.problem(&key));
    }
    Ok(problems)
}

/// Decodes and checks one entry, then writes its file.
async fn restore_file(
    repo: &Repository,
    pack_key: &str,
    wanted: Wanted<Queued>,
    frame: Bytes,
) -> Result<Option<Problem>> {
    let Wanted { entry, target } = wanted;
    let size = entry.size;
    let checked = match size == target.size {
        false => Err(format!(
            "entry {} is {size} bytes, the manifest says {} for {}",
            entry.sha256,
            target.size,
            target.dest.display()
        )),
        true => match reader::entry_key(repo, &entry, &frame).await? {
            Err(why) => Err(why),
            Ok(key) => {
                blocking(
                    move || match reader::open_entry(&entry, &frame, key.as_ref()) {
                        Ok(content) => write_file(&target, &content).map(Ok),
                        Err(why) => Ok(Err(why)),
                    },
                )
                .await?
            }
        },
    };
    repo.progress().advance(size);
    Ok(checked
        .err()
        .map(|why| Problem::corrupt_object(pack_key, why)))
}

/// Writes verified content to a new file and gives it its mode and mtime.
fn write_file(target: &Queued, content: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut file = create_exclusive(&target.dest)?;
    file.write_all(content)
        .map_err(|e| Error::io(&target.dest, e))?;
    finish(&file, &target.dest, target.mode, target.mtime_ns)
}
