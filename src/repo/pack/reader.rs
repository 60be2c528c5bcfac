//! Reading pack entries with few requests: the entries wanted from one pack,
//! sorted by offset, are grouped into ranges — neighbours at most [`MAX_GAP`]
//! apart, up to a span — and each range is one GET, streamed: an entry's
//! frame is handed on as soon as it is in, so a request holds one entry in
//! memory, not its range. The store must report the pack at the size its
//! index records and return exactly the range asked for; nothing outside the
//! range is read, and what does not match fails the range's entries.

use std::collections::VecDeque;
use std::future::Future;

use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use object_store::{GetOptions, GetRange};

use super::codec;
use super::index::IndexEntry;
use crate::common::tasks::blocking;
use crate::digest::Sha256;
use crate::error::{Problem, Result};
use crate::repo::crypto::sealed::{self, Kind, ObjectKey};
use crate::repo::ids::PackId;
use crate::repo::layout;
use crate::repo::Repository;

/// Neighbouring entries this close are read with one GET (the gap is read and dropped).
pub const MAX_GAP: u64 = 256 << 10;
/// Most bytes one range request spans when only some entries are wanted:
/// large enough that a pack is a few requests, small enough that many of
/// them keep a restore (or a repack) parallel.
pub const RANGE_SPAN: u64 = 8 << 20;

/// One entry wanted from a pack, and what it is for.
pub struct Wanted<T> {
    pub entry: IndexEntry,
    pub target: T,
}

/// A range that failed: why, whether the pack is missing altogether, and the
/// entries it did not deliver.
pub struct Failed<T> {
    pub detail: String,
    pub missing: bool,
    pub undelivered: Vec<Wanted<T>>,
}

impl<T> Failed<T> {
    /// The problem of pack `key` this failure is.
    pub fn problem(&self, key: &str) -> Problem {
        match self.missing {
            true => Problem::missing_object(key),
            false => Problem::corrupt_object(key, &self.detail),
        }
    }
}

/// Groups `wanted` (one pack's entries, sorted by offset) into ranges of at
/// most `max_span` bytes (a single larger entry is a range of its own).
pub fn ranges<T>(wanted: Vec<Wanted<T>>, max_span: u64) -> Vec<Vec<Wanted<T>>> {
    let mut ranges: Vec<Vec<Wanted<T>>> = Vec::new();
    for w in wanted {
        let joins = ranges.last().is_some_and(|range| {
            let (start, end) = span(range);
            let new_end = w.entry.offset + w.entry.length;
            w.entry.offset <= end + MAX_GAP && new_end.max(end) - start <= max_span
        });
        match joins {
            true => ranges.last_mut().expect("checked").push(w),
            false => ranges.push(vec![w]),
        }
    }
    ranges
}

/// First and past-the-last byte of a non-empty range.
fn span<T>(range: &[Wanted<T>]) -> (u64, u64) {
    let start = range[0].entry.offset;
    let end = range
        .iter()
        .map(|w| w.entry.offset + w.entry.length)
        .max()
        .unwrap_or(start);
    (start, end)
}

/// What reading a range gave: what `each` returned for every entry
/// delivered, and the failure that stopped it, if any.
pub struct EntriesRead<T, O> {
    pub delivered: Vec<O>,
    pub failed: Option<Failed<T>>,
}

/// Reads one range of pack `pack` (`pack_size` bytes by its index) and calls
/// `each` with every entry's frame, in order. Fails the undelivered entries
/// when the pack is missing, of another size, or the range comes back short
/// or long.
pub async fn read_range<T, O, F, Fut>(
    repo: &Repository,
    pack: PackId,
    pack_size: u64,
    range: Vec<Wanted<T>>,
    mut each: F,
) -> Result<EntriesRead<T, O>>
where
    F: FnMut(Wanted<T>, Bytes) -> Fut,
    Fut: Future<Output = Result<O>>,
{
    let (start, end) = span(&range);
    let mut queue = VecDeque::from(range);
    let mut delivered = Vec::new();
    let failed = |detail: String, queue: VecDeque<Wanted<T>>, delivered| {
        Ok(EntriesRead {
            delivered,
            failed: Some(Failed {
                missing: false,
                detail,
                undelivered: queue.into(),
            }),
        })
    };
    if end > pack_size {
        let detail = format!("range ends at {end}, past the pack's {pack_size} bytes");
        return failed(detail, queue, delivered);
    }
    let options = GetOptions::default().with_range(Some(GetRange::Bounded(start..end)));
    let Some(result) = repo.fetch(&layout::pack(pack), options).await? else {
        let missing = Failed {
            detail: "pack is missing".into(),
            missing: true,
            undelivered: queue.into(),
        };
        return Ok(EntriesRead {
            delivered,
            failed: Some(missing),
        });
    };
    if result.meta.size != pack_size {
        let detail = format!(
            "pack is {} bytes, its index says {pack_size}",
            result.meta.size
        );
        return failed(detail, queue, delivered);
    }
    let (mut buffer, mut at) = (BytesMut::new(), start);
    let mut last: Option<(u64, Bytes)> = None;
    let mut stream = result.into_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| repo.error(e))?;
        if at + (buffer.len() + chunk.len()) as u64 > end {
            let detail = format!("returned more than the {} bytes asked for", end - start);
            return failed(detail, queue, delivered);
        }
        buffer.extend_from_slice(&chunk);
        while let Some(next) = queue.front() {
            let (offset, length) = (next.entry.offset, next.entry.length);
            let frame = match &last {
                Some((same, frame)) if *same == offset => frame.clone(),
                _ if offset < at => {
                    return failed(
                        format!("entries overlap at byte {offset}"),
                        queue,
                        delivered,
                    )
                }
                _ if at + (buffer.len() as u64) < offset + length => break,
                _ => {
                    buffer.advance((offset - at) as usize);
                    at = offset + length;
                    buffer.split_to(length as usize).freeze()
                }
            };
            last = Some((offset, frame.clone()));
            delivered.push(each(queue.pop_front().expect("front exists"), frame).await?);
        }
    }
    match queue.is_empty() {
        true => Ok(EntriesRead {
            delivered,
            failed: None,
        }),
        false => {
            let detail = format!("range ended early, at byte {}", at + buffer.len() as u64);
            failed(detail, queue, delivered)
        }
    }
}

/// The content of an entry's frame: opened with `key` where it is sealed,
/// decoded (never past its recorded size) and checked against its recorded
/// SHA-256; `Err(why)` otherwise.
pub fn open_entry(
    entry: &IndexEntry,
    frame: &[u8],
    key: Option<&ObjectKey>,
) -> std::result::Result<Vec<u8>, String> {
    let content = codec::decode(frame, entry.size, key).map_err(|why| at(entry, why))?;
    match Sha256::of(&content) {
        actual if actual == entry.sha256 => Ok(content),
        actual => Err(at(entry, format!("content hashes to {actual}"))),
    }
}

fn at(entry: &IndexEntry, why: String) -> String {
    format!("entry {} at byte {}: {why}", entry.sha256, entry.offset)
}

/// The key of a sealed entry's frame (bound to its content's name); `None`
/// for a frame that is not sealed in a plaintext repository, `Err(why)` for
/// one whose seal is damaged or whose session is gone, and for an unsealed
/// frame in an encrypted repository (never trusted: whoever writes the
/// bucket could have put it there).
pub async fn entry_key(
    repo: &Repository,
    entry: &IndexEntry,
    frame: &[u8],
) -> Result<std::result::Result<Option<ObjectKey>, String>> {
    let Some(payload) = codec::sealed_payload(frame) else {
        return Ok(match repo.is_encrypted() {
            true => Err(at(entry, "not sealed, in an encrypted repository".into())),
            false => Ok(None),
        });
    };
    let header = match sealed::Header::parse(payload) {
        Ok(header) => header,
        Err(why) => return Ok(Err(at(entry, why))),
    };
    let name = repo.content_name(&entry.sha256).to_string();
    match repo.object_key(&header, (Kind::Entry, &name)).await {
        Ok(key) => Ok(Ok(Some(key))),
        Err(e @ crate::error::Error::Manifest { .. }) => Ok(Err(at(entry, e.to_string()))),
        Err(e) => Err(e),
    }
}

/// Opens an entry (its key, then [`open_entry`] on a blocking thread).
pub async fn open_entry_of(
    repo: &Repository,
    entry: IndexEntry,
    frame: Bytes,
) -> Result<std::result::Result<Vec<u8>, String>> {
    let key = match entry_key(repo, &entry, &frame).await? {
        Ok(key) => key,
        Err(why) => return Ok(Err(why)),
    };
    blocking(move || Ok(open_entry(&entry, &frame, key.as_ref()))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(offset: u64, length: u64) -> Wanted<u64> {
        let entry = IndexEntry {
            sha256: Sha256::of(b""),
            offset,
            length,
            size: 0,
        };
        Wanted {
            entry,
            target: offset,
        }
    }

    #[test]
    fn neighbours_share_a_range_up_to_the_span() {
        let far = 28 + MAX_GAP + 1;
        let groups = ranges(
            vec![
                wanted(8, 10),
                wanted(8, 10),
                wanted(18, 10),
                wanted(far, 10),
                wanted(far + 110, 10),
            ],
            1 << 20,
        );
        let shape: Vec<Vec<u64>> = groups
            .iter()
            .map(|g| g.iter().map(|w| w.target).collect())
            .collect();
        assert_eq!(shape, vec![vec![8, 8, 18], vec![far, far + 110]]);
        let small = ranges(vec![wanted(8, 10), wanted(18, 10)], 15);
        assert_eq!(small.len(), 2);
    }
}
