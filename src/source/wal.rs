//! RocksDB write-ahead-log files, read just far enough to copy one safely from a
//! database another process is writing: the copy ends at the last complete,
//! checksummed record (a record the writer was still appending is cut off, so the
//! copy opens in every recovery mode, also `kAbsoluteConsistency`), and the
//! sequence numbers it covers are reported so that a set of copies can be checked
//! for gaps; and read batch by batch ([`read_batches`]) from where an earlier
//! read ended, for `follow`.
//!
//! The format (RocksDB's `db/log_format.h`): 32 KiB blocks of physical records,
//! each `crc32c (4, masked) | length (2) | type (1) [| log number (4) for the
//! recyclable types] | payload`; a logical record is one FULL fragment or
//! FIRST, MIDDLE…, LAST; a data record's payload is a WriteBatch, which starts with
//! its sequence number (8 bytes) and count (4 bytes).

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{Error, Result};

const BLOCK_SIZE: usize = 32 * 1024;
const HEADER_SIZE: usize = 7;
const RECYCLABLE_HEADER_SIZE: usize = 11;
/// Record types RocksDB may skip when it does not know them.
const SAFE_TO_IGNORE: u8 = 1 << 7;
const CRC_MASK_DELTA: u32 = 0xa282_ead8;

/// The number of a WAL file name (`000123.log`), `None` for any other name.
pub fn file_number(name: &str) -> Option<u64> {
    name.strip_suffix(".log")?.parse().ok()
}

/// What a copied WAL file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalSummary {
    /// The WAL's file number.
    pub number: u64,
    /// Sequence number of the first write batch, if there is one.
    pub first_sequence: Option<u64>,
    /// One past the last sequence number the file's write batches use.
    pub end_sequence: Option<u64>,
    /// Bytes copied: the file up to the end of its last complete record.
    pub copied_bytes: u64,
    /// Bytes after that (a record being appended, or a torn tail), left out.
    pub cut_bytes: u64,
}

/// One write batch as its WAL holds it: its first sequence number, how many
/// sequence numbers it uses, and its bytes (RocksDB's `WriteBatch` rep).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The sequence number of its first operation.
    pub sequence: u64,
    /// How many sequence numbers it uses.
    pub count: u32,
    /// The batch, header included.
    pub data: Vec<u8>,
}

impl Batch {
    /// One past the last sequence number it uses.
    pub fn end(&self) -> u64 {
        self.sequence + u64::from(self.count)
    }
}

/// What [`read_batches`] found.
pub struct BatchesRead {
    /// The complete batches after the starting offset, in order.
    pub batches: Vec<Batch>,
    /// Where the next read starts: just past the last complete record.
    pub end: u64,
}

/// Reads the complete, checksummed write batches of WAL `number` that end
/// after `from` (the `end` of an earlier read, or 0), stopping once about
/// `budget` bytes of batches are read. A record being appended, a torn tail or
/// a left-over of the file's previous life (recycling) ends the read.
pub fn read_batches(source: &File, number: u64, from: u64, budget: usize) -> Result<BatchesRead> {
    let mut parser = Parser::new(number);
    parser.keep_batches(from);
    parser.block_start = from - from % BLOCK_SIZE as u64;
    parser.valid_end = from;
    let mut block = vec![0u8; BLOCK_SIZE];
    loop {
        let offset = parser.block_start;
        let len =
            read_block(source, offset, &mut block).map_err(|e| Error::io(wal_name(number), e))?;
        let more = parser
            .block(&block[..len])
            .map_err(|reason| unsupported(&wal_name(number), reason))?;
        let kept = parser.kept.as_ref().map_or(0, |k| k.bytes);
        if !more || len < BLOCK_SIZE || kept >= budget {
            break;
        }
    }
    let batches = parser.kept.take().map(|k| k.batches).unwrap_or_default();
    Ok(BatchesRead {
        batches,
        end: parser.valid_end,
    })
}

fn wal_name(number: u64) -> std::path::PathBuf {
    format!("{number:06}.log").into()
}

/// Copies the WAL `number` from `source` (read by offset, so an open descriptor
/// of a file since deleted still works) into a new file `dest`, up to its last
/// complete record. Whatever is at `dest` is unlinked first, never written
/// through (it could be a hard link to the live WAL).
pub fn copy(source: &File, number: u64, source_name: &Path, dest: &Path) -> Result<WalSummary> {
    match std::fs::remove_file(dest) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(dest, e)),
    }
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
        .map_err(|e| Error::io(dest, e))?;
    let mut parser = Parser::new(number);
    let mut block = vec![0u8; BLOCK_SIZE];
    let mut offset = 0u64;
    loop {
        let len = read_block(source, offset, &mut block).map_err(|e| Error::io(source_name, e))?;
        if len == 0 {
            break;
        }
        // Written whole (a record may span blocks), cut back to the last complete
        // record at the end.
        out.write_all(&block[..len])
            .map_err(|e| Error::io(dest, e))?;
        offset += len as u64;
        let more = parser
            .block(&block[..len])
            .map_err(|reason| unsupported(source_name, reason))?;
        if !more || len < BLOCK_SIZE {
            break;
        }
    }
    let copied = parser.valid_end;
    out.set_len(copied).map_err(|e| Error::io(dest, e))?;
    let size = source
        .metadata()
        .map_err(|e| Error::io(source_name, e))?
        .len();
    Ok(WalSummary {
        number,
        first_sequence: parser.first_sequence,
        end_sequence: parser.end_sequence,
        copied_bytes: copied,
        cut_bytes: size.saturating_sub(copied),
    })
}

fn unsupported(path: &Path, reason: String) -> Error {
    Error::Unsupported {
        path: path.to_path_buf(),
        reason,
    }
}

/// Reads up to one block at `offset`; fewer bytes only at the end of the file.
fn read_block(file: &File, offset: u64, block: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < block.len() {
        match file.read_at(&mut block[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Walks physical records block by block.
struct Parser {
    number: u64,
    /// File offset of the block being parsed.
    block_start: u64,
    /// File offset just past the last complete logical record.
    valid_end: u64,
    /// The first 12 bytes (sequence, count) of the logical record being assembled.
    batch_header: Vec<u8>,
    in_fragmented_record: bool,
    first_sequence: Option<u64>,
    end_sequence: Option<u64>,
    /// Whole batches, when they are wanted.
    kept: Option<Kept>,
}

/// The batches a parser keeps: those ending after `after`.
struct Kept {
    after: u64,
    record: Vec<u8>,
    batches: Vec<Batch>,
    bytes: usize,
}

impl Parser {
    fn new(number: u64) -> Self {
        Self {
            number,
            block_start: 0,
            valid_end: 0,
            batch_header: Vec::with_capacity(12),
            in_fragmented_record: false,
            first_sequence: None,
            end_sequence: None,
            kept: None,
        }
    }

    /// Keeps every whole batch that ends after file offset `after`; records
    /// ending before it are passed over unparsed.
    fn keep_batches(&mut self, after: u64) {
        self.kept = Some(Kept {
            after,
            record: Vec::new(),
            batches: Vec::new(),
            bytes: 0,
        });
    }

    /// Parses one block (shorter only at the end of the file). Returns false once
    /// the records end (torn or unwritten tail); `Err` for what cannot be copied.
    fn block(&mut self, block: &[u8]) -> std::result::Result<bool, String> {
        let mut at = 0;
        while block.len() - at >= HEADER_SIZE {
            let header = &block[at..];
            let stored_crc = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
            let length = u16::from_le_bytes([header[4], header[5]]) as usize;
            let kind = header[6];
            if kind == 0 && length == 0 {
                // Zero-filled: preallocated space never written.
                break;
            }
            let header_size = if matches!(kind, 5..=8 | 11 | 131) {
                RECYCLABLE_HEADER_SIZE
            } else {
                HEADER_SIZE
            };
            if at + header_size + length > block.len() {
                return Ok(false); // a record cut off by the end of the data
            }
            let crc = crc32c::crc32c(&block[at + 6..at + header_size + length]);
            if unmask(stored_crc) != crc {
                return Ok(false);
            }
            if header_size == RECYCLABLE_HEADER_SIZE {
                let log = u32::from_le_bytes(header[7..11].try_into().expect("4 bytes"));
                if u64::from(log) != self.number & 0xffff_ffff {
                    return Ok(false); // left over from the file's previous life
                }
            }
            let payload = &block[at + header_size..at + header_size + length];
            at += header_size + length;
            let record_end = self.block_start + at as u64;
            if self.kept.as_ref().is_some_and(|k| record_end <= k.after) {
                continue; // read before
            }
            match kind {
                1 | 5 => {
                    self.start_record();
                    self.take_header(payload);
                    self.finish_batch(record_end)?;
                }
                2 | 6 => {
                    self.start_record();
                    self.take_header(payload);
                    self.in_fragmented_record = true;
                }
                3 | 7 if self.in_fragmented_record => self.take_header(payload),
                4 | 8 if self.in_fragmented_record => {
                    self.take_header(payload);
                    self.in_fragmented_record = false;
                    self.finish_batch(record_end)?;
                }
                3 | 4 | 7 | 8 => return Ok(false), // a fragment without its start
                9 => {
                    // kSetCompressionType: its payload's first byte is the type.
                    if payload.first().copied().unwrap_or(0) != 0 {
                        return Err("its WAL is compressed (wal_compression); back it up with --checkpoint or the library API".into());
                    }
                    self.valid_end = record_end;
                }
                10 | 11 => self.valid_end = record_end, // timestamp sizes
                kind if kind & SAFE_TO_IGNORE != 0 => self.valid_end = record_end,
                kind => return Err(format!("its WAL has records of unknown type {kind}")),
            }
        }
        self.block_start += block.len() as u64;
        Ok(true)
    }

    fn take_header(&mut self, payload: &[u8]) {
        let wanted = 12 - self.batch_header.len().min(12);
        self.batch_header
            .extend_from_slice(&payload[..wanted.min(payload.len())]);
        if let Some(kept) = &mut self.kept {
            kept.record.extend_from_slice(payload);
        }
    }

    /// A logical record begins (a FULL or FIRST fragment).
    fn start_record(&mut self) {
        self.batch_header.clear();
        if let Some(kept) = &mut self.kept {
            kept.record.clear();
        }
    }

    fn finish_batch(&mut self, record_end: u64) -> std::result::Result<(), String> {
        if self.batch_header.len() < 12 {
            return Err("its WAL holds a write batch shorter than its header".into());
        }
        let sequence = u64::from_le_bytes(self.batch_header[..8].try_into().expect("8 bytes"));
        let count = u32::from_le_bytes(self.batch_header[8..12].try_into().expect("4 bytes"));
        self.first_sequence.get_or_insert(sequence);
        self.end_sequence = Some(sequence + u64::from(count));
        self.valid_end = record_end;
        if let Some(kept) = &mut self.kept {
            let data = std::mem::take(&mut kept.record);
            kept.bytes += data.len();
            kept.batches.push(Batch {
                sequence,
                count,
                data,
            });
        }
        Ok(())
    }
}

fn unmask(masked: u32) -> u32 {
    let rot = masked.wrapping_sub(CRC_MASK_DELTA);
    rot.rotate_left(15)
}

/// Checks that `wals` (sorted by number; empty ones skipped) form one gap-free
/// run of sequence numbers. Returns the first gap as a message.
pub fn check_contiguous(wals: &[WalSummary]) -> std::result::Result<(), String> {
    let mut previous: Option<&WalSummary> = None;
    for wal in wals.iter().filter(|w| w.first_sequence.is_some()) {
        if let Some(prev) = previous {
            if wal.first_sequence != prev.end_sequence {
                return Err(format!(
                    "WAL {} ends before sequence {:?} but WAL {} starts at {:?}",
                    prev.number,
                    prev.end_sequence.unwrap_or_default(),
                    wal.number,
                    wal.first_sequence.unwrap_or_default()
                ));
            }
        }
        previous = Some(wal);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rocksdb::{Options, WriteBatch, DB};

    fn wal_files(dir: &Path) -> Vec<(u64, std::path::PathBuf)> {
        let mut wals: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter_map(|p| Some((file_number(p.file_name()?.to_str()?)?, p)))
            .collect();
        wals.sort();
        wals
    }

    /// Writes `batches` batches of `per_batch` puts (values of `value_size`) and
    /// leaves them in the WAL.
    fn db_with_wal(dir: &Path, batches: usize, per_batch: usize, value_size: usize) {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        let db = DB::open(&opts, dir).unwrap();
        for b in 0..batches {
            let mut batch = WriteBatch::default();
            for i in 0..per_batch {
                batch.put(format!("k{b}-{i}"), vec![b as u8; value_size]);
            }
            db.write(batch).unwrap();
        }
    }

    #[test]
    fn copies_a_wal_and_reports_its_sequence_numbers() {
        let dir = tempfile::tempdir().unwrap();
        // Batches larger than a block exercise FIRST/MIDDLE/LAST fragments.
        db_with_wal(dir.path(), 20, 3, 20_000);
        let (number, path) = wal_files(dir.path()).pop().unwrap();
        let dest = dir.path().join("copy.log");
        let summary = copy(&File::open(&path).unwrap(), number, &path, &dest).unwrap();
        assert_eq!(summary.first_sequence, Some(1));
        assert_eq!(summary.end_sequence, Some(61));
        assert_eq!(summary.cut_bytes, 0);
        assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&path).unwrap());
    }

    #[test]
    fn a_torn_tail_is_cut_at_the_last_complete_record() {
        let dir = tempfile::tempdir().unwrap();
        db_with_wal(dir.path(), 10, 2, 10_000);
        let (number, path) = wal_files(dir.path()).pop().unwrap();
        let whole = std::fs::read(&path).unwrap();
        // Cut in the middle of the last batch, and flip a byte of a copy's tail.
        std::fs::write(&path, &whole[..whole.len() - 5_000]).unwrap();
        let dest = dir.path().join("copy.log");
        let summary = copy(&File::open(&path).unwrap(), number, &path, &dest).unwrap();
        assert_eq!(
            summary.end_sequence,
            Some(19),
            "nine complete batches of two"
        );
        assert!(summary.cut_bytes > 0);
        let mut corrupt = whole.clone();
        let last = corrupt.len() - 10;
        corrupt[last] ^= 0xff;
        std::fs::write(&path, &corrupt).unwrap();
        let summary = copy(&File::open(&path).unwrap(), number, &path, &dest).unwrap();
        assert_eq!(
            summary.end_sequence,
            Some(19),
            "a bad checksum ends the copy"
        );
    }

    #[test]
    fn gaps_between_wals_are_found() {
        let wal = |number, first, end| WalSummary {
            number,
            first_sequence: Some(first),
            end_sequence: Some(end),
            copied_bytes: 1,
            cut_bytes: 0,
        };
        let empty = WalSummary {
            number: 8,
            first_sequence: None,
            end_sequence: None,
            copied_bytes: 0,
            cut_bytes: 0,
        };
        assert!(check_contiguous(&[wal(4, 1, 10), empty, wal(9, 10, 20)]).is_ok());
        let err = check_contiguous(&[wal(4, 1, 10), wal(12, 15, 20)]).unwrap_err();
        assert!(err.contains("WAL 12 starts at 15"), "{err}");
    }
}
