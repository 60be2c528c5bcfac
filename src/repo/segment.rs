//! WAL segments: what `follow` ships after a base backup. A segment is one
//! write-once object holding a contiguous run of write batches (RocksDB's own
//! bytes, sequence numbers `first..=last`), the times `follow` read them, and
//! the external files those batches newly reference (content stored by hash,
//! like a backup's). Its key names the base (the base backup it
//! continues), its level and its range, so a restore plans from one listing:
//!
//! ```text
//! segments/<base-backup-id>/<level>/<first:020>-<last:020>
//! ```
//!
//! Level 0 is one poll; higher levels merge lower ones (`compact`). The
//! object: a JSON header line, then each batch as `u32 length | bytes`, then
//! the SHA-256 of everything before it; sealed as a whole (kind `Segment`)
//! where the repository is encrypted. Reading checks the hash, the header
//! against the key, and every batch against the range: a segment is used
//! whole and only when each of its batches continues the one before.

use bytes::{BufMut, Bytes, BytesMut};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::common::names::normalize_relative_path;
use crate::digest::Sha256;
use crate::error::{Error, Problem, Result};
use crate::repo::crypto::sealed::Kind;
use crate::repo::ids::BackupId;
use crate::repo::layout;
use crate::repo::{Created, Repository};

/// Format name in every segment header.
const SEGMENT_FORMAT: &str = "rockup-segment";
/// Largest segment read (level 0 segments are cut at a few MiB of batches;
/// merged ones at [`MERGED_BELOW`]).
const SEGMENT_LIMIT: u64 = 512 << 20;
/// Merging stops before a merged segment reaches this many bytes of batches.
pub const MERGED_BELOW: u64 = 256 << 20;
/// A batch holds at least its sequence number and count.
const BATCH_HEADER: usize = 12;

/// Where a segment is: its base, level and range.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct SegmentRef {
    /// The base backup it continues.
    pub base: BackupId,
    /// 0 for one poll; higher for merged segments.
    pub level: u8,
    /// The sequence number of its first batch.
    pub first: u64,
    /// The last sequence number its batches use.
    pub last: u64,
}

impl SegmentRef {
    /// `segments/<base>/<level>/<first>-<last>`
    pub fn key(&self) -> object_store::path::Path {
        layout::segment(&self.base, self.level, self.first, self.last)
    }

    /// The segment a key names, if it is one.
    pub fn parse_key(key: &str) -> Option<Self> {
        let (base, level, first, last) = layout::parse_segment_key(key)?;
        Some(Self {
            base,
            level,
            first,
            last,
        })
    }
}

/// One time `follow` read the WAL: every batch up to `last` was written by
/// then (for `restore --to-time`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// The last sequence number read.
    pub last: u64,
    /// When it was read (the following host's clock).
    pub at: DateTime<Utc>,
}

/// An external file a segment's batches reference for the first time in
/// their base (or with other content than before).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentFile {
    /// Normalized path relative to the blob root.
    pub path: String,
    /// Its content, stored by hash.
    pub sha256: Sha256,
    /// Bytes.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// The sequence number of the batch that referenced it.
    pub sequence: u64,
}

/// A segment's header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentHeader {
    /// Always `rockup-segment`.
    pub format: String,
    /// 1.
    pub version: u32,
    /// Where it is.
    #[serde(flatten)]
    pub at: SegmentInfo,
    /// When its batches were read, oldest first; the last names `last`.
    pub marks: Vec<Mark>,
    /// Files its batches newly reference.
    pub files: Vec<SegmentFile>,
    /// References its batches make that could not be captured.
    #[serde(default)]
    pub problems: Vec<Problem>,
}

/// The key fields a header repeats (checked against its key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentInfo {
    /// The base backup it continues.
    pub base: BackupId,
    /// Its level.
    pub level: u8,
    /// First sequence number.
    pub first: u64,
    /// Last sequence number.
    pub last: u64,
    /// Batches it holds.
    pub batches: u64,
}

/// A segment read and checked: its header and its batches.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Its header.
    pub header: SegmentHeader,
    /// Its batches, in order.
    pub batches: Vec<Bytes>,
}

impl Segment {
    /// A new segment of `batches` (each continuing the one before).
    pub fn new(
        base: BackupId,
        level: u8,
        batches: Vec<Bytes>,
        marks: Vec<Mark>,
        files: Vec<SegmentFile>,
        problems: Vec<Problem>,
    ) -> Result<Self> {
        let (first, last) = span(&batches).map_err(|e| Error::Usage(format!("segment: {e}")))?;
        let header = SegmentHeader {
            format: SEGMENT_FORMAT.into(),
            version: 1,
            at: SegmentInfo {
                base,
                level,
                first,
                last,
                batches: batches.len() as u64,
            },
            marks,
            files,
            problems,
        };
        Ok(Self { header, batches })
    }

    /// Where it goes.
    pub fn reference(&self) -> SegmentRef {
        let at = &self.header.at;
        SegmentRef {
            base: at.base.clone(),
            level: at.level,
            first: at.first,
            last: at.last,
        }
    }

    /// Bytes of its batches.
    pub fn batch_bytes(&self) -> u64 {
        self.batches.iter().map(|b| b.len() as u64).sum()
    }

    fn encode(&self) -> Bytes {
        let header = serde_json::to_vec(&self.header).expect("a header serializes");
        let mut out = BytesMut::with_capacity(header.len() + self.batch_bytes() as usize + 64);
        out.put_slice(&header);
        out.put_u8(b'\n');
        for batch in &self.batches {
            out.put_u32_le(batch.len() as u32);
            out.put_slice(batch);
        }
        let sha = Sha256::of(&out);
        out.put_slice(sha.as_bytes());
        out.freeze()
    }

    /// Parses and checks the plaintext of the segment at `at`.
    fn decode(at: &SegmentRef, bytes: Bytes) -> std::result::Result<Self, String> {
        if bytes.len() < 32 {
            return Err("too short to be a segment".into());
        }
        let (body, sha) = bytes.split_at(bytes.len() - 32);
        if Sha256::of(body).as_bytes() != sha {
            return Err("its content does not match its SHA-256 (damaged)".into());
        }
        let line_end = body
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("no header line")?;
        let header: SegmentHeader = serde_json::from_slice(&body[..line_end])
            .map_err(|e| format!("corrupt header: {e}"))?;
        check_header(at, &header)?;
        let batches = split_batches(&bytes.slice(line_end + 1..bytes.len() - 32))?;
        if batches.len() as u64 != header.at.batches || span(&batches)? != (at.first, at.last) {
            return Err("its batches do not cover the range its name says".into());
        }
        Ok(Self { header, batches })
    }
}

fn check_header(at: &SegmentRef, header: &SegmentHeader) -> std::result::Result<(), String> {
    if header.format != SEGMENT_FORMAT || header.version != 1 {
        return Err(format!(
            "format {:?} version {} is not {SEGMENT_FORMAT:?} 1 (a newer rockup?)",
            header.format, header.version
        ));
    }
    let named = SegmentInfo {
        batches: header.at.batches,
        base: at.base.clone(),
        level: at.level,
        first: at.first,
        last: at.last,
    };
    if header.at != named {
        return Err("its header names another range than its key".into());
    }
    for file in &header.files {
        let normalized = normalize_relative_path(&file.path)?;
        if normalized != file.path || !(at.first..=at.last).contains(&file.sequence) {
            return Err(format!("file entry {:?} is not valid here", file.path));
        }
    }
    let in_range = header
        .marks
        .iter()
        .all(|m| (at.first..=at.last).contains(&m.last));
    if !in_range || header.marks.last().map(|m| m.last) != Some(at.last) {
        return Err("its read times do not match its range".into());
    }
    Ok(())
}

/// The batches of a segment's body.
fn split_batches(body: &Bytes) -> std::result::Result<Vec<Bytes>, String> {
    let mut batches = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let len_bytes: [u8; 4] = body
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .ok_or("a batch length cut off")?;
        let end = (at + 4).saturating_add(u32::from_le_bytes(len_bytes) as usize);
        if end > body.len() {
            return Err("a batch cut off".into());
        }
        if end - at - 4 < BATCH_HEADER {
            return Err("a batch shorter than its header".into());
        }
        batches.push(body.slice(at + 4..end));
        at = end;
    }
    Ok(batches)
}

/// The first and last sequence numbers of `batches`, which must each
/// continue the one before.
fn span(batches: &[Bytes]) -> std::result::Result<(u64, u64), String> {
    let mut range: Option<(u64, u64)> = None;
    for batch in batches {
        let (sequence, count) = batch_sequence(batch)?;
        if count == 0 {
            return Err("a batch without operations".into());
        }
        if let Some((_, last)) = range {
            if sequence != last + 1 {
                return Err(format!(
                    "batch at sequence number {sequence} does not follow {last}"
                ));
            }
        }
        let last = sequence
            .checked_add(count - 1)
            .ok_or("sequence numbers overflow")?;
        range = Some((range.map_or(sequence, |(first, _)| first), last));
    }
    range.ok_or_else(|| "no batches".into())
}

/// A batch's first sequence number and its count (RocksDB's 12-byte header).
pub fn batch_sequence(batch: &[u8]) -> std::result::Result<(u64, u64), String> {
    let header = batch
        .get(..BATCH_HEADER)
        .ok_or("a batch shorter than its header")?;
    let sequence = u64::from_le_bytes(header[..8].try_into().expect("8 bytes"));
    let count = u32::from_le_bytes(header[8..].try_into().expect("4 bytes"));
    Ok((sequence, u64::from(count)))
}

/// Stores `segment` once (sealed where the repository is encrypted).
/// A segment already there with the same plaintext is ours: an earlier
/// attempt whose response was lost, sealed then under another nonce.
pub async fn store(repo: &Repository, segment: &Segment) -> Result<Created> {
    let key = segment.reference().key();
    let plain = segment.encode();
    let sealed = repo
        .seal((Kind::Segment, key.as_ref()), plain.clone())
        .await?;
    match repo.create(&key, sealed).await {
        Err(Error::Conflict { .. }) if holds(repo, &key, &plain).await => Ok(Created::AlreadyOurs),
        written => written,
    }
}

/// Whether the segment at `key` opens to exactly `plain` (false when it
/// cannot be read, as on a write-only host).
async fn holds(repo: &Repository, key: &object_store::path::Path, plain: &Bytes) -> bool {
    let limit = plain.len() as u64;
    matches!(repo.get_opened(Kind::Segment, key, limit).await, Ok(Some(stored)) if stored == *plain)
}

/// Reads and checks the segment at `at`.
pub async fn read(repo: &Repository, at: &SegmentRef) -> Result<Segment> {
    let key = at.key();
    let bytes = repo
        .get_opened(Kind::Segment, &key, SEGMENT_LIMIT)
        .await?
        .ok_or_else(|| Error::manifest(key.as_ref(), "segment is missing"))?;
    Segment::decode(at, bytes).map_err(|reason| Error::manifest(key.as_ref(), reason))
}

/// Every segment of `base` (one LIST), or of every base.
pub async fn list(repo: &Repository, base: Option<&BackupId>) -> Result<Vec<SegmentRef>> {
    let prefix = match base {
        Some(id) => format!("{}/{id}/", layout::SEGMENTS),
        None => format!("{}/", layout::SEGMENTS),
    };
    let mut segments: Vec<SegmentRef> = repo
        .list(&prefix)
        .await?
        .iter()
        .filter_map(|meta| SegmentRef::parse_key(meta.location.as_ref()))
        .collect();
    segments.sort();
    Ok(segments)
}

/// The segments a restore of `base` from sequence number `from` to
/// `to` reads, in order: each step takes the segment that starts at or before
/// the next sequence number and reaches furthest (merged segments first), so
/// the count stays small. `Err` names the first sequence number no segment
/// holds.
pub fn plan(
    segments: &[SegmentRef],
    from: u64,
    to: u64,
) -> std::result::Result<Vec<SegmentRef>, u64> {
    let mut chosen = Vec::new();
    let mut next = from;
    while next <= to {
        let best = segments
            .iter()
            .filter(|s| s.first <= next && s.last >= next)
            .max_by_key(|s| (s.last, s.level));
        match best {
            Some(segment) => {
                next = segment.last + 1;
                chosen.push(segment.clone());
            }
            None => return Err(next),
        }
    }
    Ok(chosen)
}

/// Whether `outer` (of a higher level) holds every batch of `inner`.
pub fn covers(outer: &SegmentRef, inner: &SegmentRef) -> bool {
    outer.base == inner.base
        && outer.level > inner.level
        && outer.first <= inner.first
        && outer.last >= inner.last
}

/// The furthest sequence number the segments of a base reach
/// contiguously from `from` (`from - 1` when none continues it).
pub fn reach(segments: &[SegmentRef], from: u64) -> u64 {
    let mut next = from;
    while let Some(segment) = segments
        .iter()
        .filter(|s| s.first <= next && s.last >= next)
        .max_by_key(|s| s.last)
    {
        next = segment.last + 1;
    }
    next - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(sequence: u64, count: u32) -> Bytes {
        let mut b = BytesMut::new();
        b.put_u64_le(sequence);
        b.put_u32_le(count);
        b.put_slice(b"payload");
        b.freeze()
    }

    fn base() -> BackupId {
        "20261203T120000.000Z-0000000a".parse().unwrap()
    }

    fn segment(first: u64) -> Segment {
        let batches = vec![batch(first, 2), batch(first + 2, 3)];
        let marks = vec![Mark {
            last: first + 4,
            at: Utc::now(),
        }];
        Segment::new(base(), 0, batches, marks, vec![], vec![]).unwrap()
    }

    #[test]
    fn a_segment_round_trips_and_damage_is_found() {
        let written = segment(11);
        let at = written.reference();
        assert_eq!((at.first, at.last), (11, 15));
        assert_eq!(SegmentRef::parse_key(at.key().as_ref()), Some(at.clone()));
        let bytes = written.encode();
        let read = Segment::decode(&at, bytes.clone()).unwrap();
        assert_eq!(read.header, written.header);
        assert_eq!(read.batches, written.batches);
        let mut damaged = bytes.to_vec();
        damaged[bytes.len() / 2] ^= 1;
        assert!(Segment::decode(&at, damaged.into()).is_err());
        let elsewhere = SegmentRef { first: 10, ..at };
        assert!(
            Segment::decode(&elsewhere, bytes).is_err(),
            "named for another range"
        );
    }

    #[tokio::test]
    async fn a_sealed_segment_stored_again_is_ours_and_another_under_its_key_conflicts() {
        let memory = std::sync::Arc::new(object_store::memory::InMemory::new());
        let repo = Repository::from_store(memory, "memory://")
            .with_credentials(crate::Credentials::passphrase("segments"));
        repo.encrypt_for_tests("segments").await;
        let written = segment(11);
        assert!(matches!(store(&repo, &written).await, Ok(Created::New)));
        let again = store(&repo, &written).await;
        assert!(matches!(again, Ok(Created::AlreadyOurs)), "{again:?}");
        let mut other = segment(11); // the same range, read at another time
        other.header.marks[0].at -= chrono::Duration::hours(1);
        let refused = store(&repo, &other).await;
        assert!(
            matches!(refused, Err(Error::Conflict { .. })),
            "{refused:?}"
        );
        assert_eq!(
            read(&repo, &written.reference()).await.unwrap().header,
            written.header
        );
    }

    #[test]
    fn batches_must_continue_each_other() {
        let gap = vec![batch(1, 2), batch(4, 1)];
        assert!(Segment::new(base(), 0, gap, vec![], vec![], vec![]).is_err());
    }

    #[test]
    fn plans_prefer_merged_segments_and_name_gaps() {
        let at = |level, first, last| SegmentRef {
            base: base(),
            level,
            first,
            last,
        };
        let segments = vec![
            at(0, 1, 5),
            at(0, 6, 9),
            at(1, 1, 9),
            at(0, 10, 12),
            at(0, 15, 20),
        ];
        assert_eq!(
            plan(&segments, 1, 11).unwrap(),
            vec![at(1, 1, 9), at(0, 10, 12)]
        );
        assert_eq!(plan(&segments, 3, 7).unwrap(), vec![at(1, 1, 9)]);
        assert_eq!(plan(&segments, 1, 16).unwrap_err(), 13);
        assert_eq!(reach(&segments, 1), 12);
        assert_eq!(reach(&segments, 13), 12);
    }
}
