//! Following a database's WAL as another process writes it: every WAL file is
//! opened the moment it is created (a thread watches the WAL directory), and
//! held open (so a WAL the writer deletes after a flush, even between two
//! polls, can still be read to its end), read from where the last read ended,
//! and every batch handed on is checked to continue the one before it
//! (`first == previous end`). What cannot be proved continuous — a WAL deleted
//! before it was seen, a recycled file overwritten before it was read, writes
//! that bypass the WAL (`disableWAL`, ingested files) — is a [`Gap`], never
//! skipped over.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use inotify::{Inotify, WatchMask};

use crate::error::{Error, Result};
use crate::source::wal::{self, Batch};
use crate::source::watch::readable;

/// Bytes of batches read per file and poll, at most (plus one batch).
const READ_BUDGET: usize = 16 << 20;

/// The batches after `next` cannot be proved to follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The sequence number the next batch had to start at.
    pub expected: u64,
    /// Where the first batch found starts instead.
    pub found: u64,
}

impl std::fmt::Display for Gap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the WAL continues at sequence number {} where {} was next: the batches between were never seen (a WAL deleted before it was read, or writes that bypass the WAL)",
            self.found, self.expected
        )
    }
}

/// One WAL file held open, and how far it has been read.
struct OpenWal {
    file: File,
    read_to: u64,
}

/// The WAL files held open, by number (shared with the watching thread).
#[derive(Default)]
struct Held {
    files: Mutex<BTreeMap<u64, OpenWal>>,
    stop: AtomicBool,
}

impl Held {
    /// Opens the WAL `name` in `dir` unless it is held already.
    fn open(&self, dir: &Path, name: &std::ffi::OsStr) -> io::Result<()> {
        let Some(number) = name.to_str().and_then(wal::file_number) else {
            return Ok(());
        };
        let mut files = self.files.lock().expect("not poisoned");
        if files.contains_key(&number) {
            return Ok(());
        }
        match File::open(dir.join(name)) {
            Ok(file) => {
                files.insert(number, OpenWal { file, read_to: 0 });
                Ok(())
            }
            // Deleted since it was listed: it was obsolete by then.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// What one poll read.
#[derive(Debug)]
pub struct Polled {
    /// The batches, in order.
    pub batches: Vec<Batch>,
    /// Whether every complete batch in the WAL files was read (else the
    /// budget stopped the poll: there is more to read at once).
    pub reached_end: bool,
}

/// The WAL files of one database directory, followed from a sequence number.
pub struct WalTail {
    dirs: Vec<PathBuf>,
    held: Arc<Held>,
    next: u64,
    watcher: Option<JoinHandle<()>>,
}

impl WalTail {
    /// Follows the WALs in `wal_dir` (and its `archive/`, where RocksDB moves
    /// them with `WAL_ttl_seconds`): opens every WAL there now, and each new
    /// one as it is created.
    pub fn open(wal_dir: &Path) -> Result<Self> {
        let held = Arc::new(Held::default());
        let watcher = watch_wal_dir(wal_dir, held.clone())?;
        let mut tail = Self {
            dirs: vec![wal_dir.to_path_buf(), wal_dir.join("archive")],
            held,
            next: 0,
            watcher: Some(watcher),
        };
        tail.hold_new()?;
        Ok(tail)
    }

    /// Hands on batches from sequence number `next` on (batches that end at
    /// or before it are passed over).
    pub fn start_at(&mut self, next: u64) {
        self.next = next;
    }

    /// The sequence number the next batch must start at.
    pub fn next_sequence(&self) -> u64 {
        self.next
    }

    /// The batches written since the last poll, in order, about `budget`
    /// bytes at most; `Err(Gap)` when they do not continue from
    /// [`WalTail::next_sequence`].
    pub fn poll(&mut self, budget: usize) -> Result<std::result::Result<Polled, Gap>> {
        self.hold_new()?;
        let mut taken = Vec::new();
        let mut bytes = 0;
        let mut files = self.held.files.lock().expect("not poisoned");
        let numbers: Vec<u64> = files.keys().copied().collect();
        for number in numbers {
            let wal = files.get_mut(&number).expect("listed");
            let file_budget = budget.saturating_sub(bytes).clamp(1, READ_BUDGET);
            let read = wal::read_batches(&wal.file, number, wal.read_to, file_budget)?;
            wal.read_to = read.end;
            let read_bytes: usize = read.batches.iter().map(|b| b.data.len()).sum();
            for batch in read.batches {
                if batch.end() <= self.next {
                    continue; // shipped before (or in the base)
                }
                if batch.sequence != self.next {
                    return Ok(Err(Gap {
                        expected: self.next,
                        found: batch.sequence,
                    }));
                }
                self.next = batch.end();
                bytes += batch.data.len();
                taken.push(batch);
            }
            // A file read only up to the budget goes on at the next poll,
            // before any newer file (whose batches come after its rest).
            if read_bytes >= file_budget {
                return Ok(Ok(Polled {
                    batches: taken,
                    reached_end: false,
                }));
            }
        }
        // Every WAL but the newest was read to its end after a newer one
        // appeared; the writer appends to the newest only.
        while files.len() > 1 {
            files.pop_first();
        }
        Ok(Ok(Polled {
            batches: taken,
            reached_end: true,
        }))
    }

    /// Opens the WALs that appeared since the last look (the watcher opens
    /// them as they are created; this finds those of `archive/`).
    pub fn hold_new(&mut self) -> Result<()> {
        for dir in &self.dirs {
            let entries = match std::fs::read_dir(dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| Error::io(dir, e))?;
                self.held
                    .open(dir, &entry.file_name())
                    .map_err(|e| Error::io(entry.path(), e))?;
            }
        }
        Ok(())
    }
}

impl Drop for WalTail {
    fn drop(&mut self) {
        self.held.stop.store(true, Ordering::Relaxed);
        if let Some(watcher) = self.watcher.take() {
            let _ = watcher.join();
        }
    }
}

/// A thread that opens every WAL created (or renamed, when recycled) in
/// `dir` at once.
fn watch_wal_dir(dir: &Path, held: Arc<Held>) -> Result<JoinHandle<()>> {
    let mut inotify = Inotify::init().map_err(|e| Error::io(dir, e))?;
    inotify
        .watches()
        .add(
            dir,
            WatchMask::CREATE | WatchMask::MOVED_TO | WatchMask::ONLYDIR,
        )
        .map_err(|e| Error::io(dir, e))?;
    let watched = dir.to_path_buf();
    std::thread::Builder::new()
        .name("rockup-wal-watch".into())
        .spawn(move || {
            let mut buffer = vec![0u8; 16 << 10];
            while !held.stop.load(Ordering::Relaxed) {
                if !readable(&inotify) {
                    continue;
                }
                let Ok(events) = inotify.read_events(&mut buffer) else {
                    continue;
                };
                for name in events.filter_map(|e| e.name) {
                    if let Err(e) = held.open(&watched, name) {
                        tracing::warn!(error = %e, "a new WAL could not be opened");
                    }
                }
            }
        })
        .map_err(|e| Error::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rocksdb::{Options, WriteBatch, DB};

    fn write(db: &DB, from: usize, batches: usize) {
        for b in from..from + batches {
            let mut batch = WriteBatch::default();
            batch.put(format!("k{b}"), vec![b as u8; 3000]);
            batch.put(format!("j{b}"), b"x");
            db.write(batch).unwrap();
        }
    }

    #[test]
    fn batches_are_handed_on_once_in_order_across_wal_switches() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = Options::default();
        opts.create_if_missing(true);
        let db = DB::open(&opts, dir.path()).unwrap();
        write(&db, 0, 10);
        let mut tail = WalTail::open(dir.path()).unwrap();
        tail.start_at(1);
        let first = tail.poll(usize::MAX).unwrap().unwrap().batches;
        assert_eq!(first.len(), 10);
        assert_eq!((first[0].sequence, first[9].end()), (1, 21));
        assert!(tail.poll(usize::MAX).unwrap().unwrap().batches.is_empty());
        write(&db, 10, 5);
        db.flush().unwrap(); // a new WAL; the old one is deleted once read
        write(&db, 15, 5);
        let next = tail.poll(usize::MAX).unwrap().unwrap().batches;
        let sequences: Vec<u64> = next.iter().map(|b| b.sequence).collect();
        assert_eq!(sequences, (21..41).step_by(2).collect::<Vec<_>>());
        let mut written = WriteBatch::default();
        written.put(b"k10", vec![10u8; 3000]);
        written.put(b"j10", b"x");
        assert_eq!(
            next[0].data[12..],
            written.data()[12..],
            "the batch as written"
        );
    }

    #[test]
    fn a_poll_stopped_by_its_budget_goes_on_where_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = Options::default();
        opts.create_if_missing(true);
        let db = DB::open(&opts, dir.path()).unwrap();
        let mut tail = WalTail::open(dir.path()).unwrap();
        tail.start_at(1);
        write(&db, 0, 40); // 120 KB: several 32 KiB blocks
        db.flush().unwrap();
        write(&db, 40, 5);
        let (mut sequences, mut stopped) = (vec![], 0);
        loop {
            let polled = tail.poll(1).unwrap().expect("no gap");
            sequences.extend(polled.batches.iter().map(|b| b.sequence));
            if polled.reached_end {
                break;
            }
            stopped += 1;
        }
        assert!(stopped >= 3, "the budget stopped {stopped} polls");
        assert_eq!(sequences, (1..91).step_by(2).collect::<Vec<_>>());
    }

    #[test]
    fn a_wal_deleted_unseen_is_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = Options::default();
        opts.create_if_missing(true);
        let db = DB::open(&opts, dir.path()).unwrap();
        write(&db, 0, 3);
        let mut tail = WalTail::open(dir.path()).unwrap();
        tail.start_at(1);
        assert_eq!(tail.poll(usize::MAX).unwrap().unwrap().batches.len(), 3);
        // Written, flushed and deleted while nothing watched.
        drop(tail);
        write(&db, 3, 3);
        db.flush().unwrap();
        write(&db, 6, 1);
        let mut tail2 = WalTail::open(dir.path()).unwrap();
        tail2.start_at(7);
        assert_eq!(
            tail2.poll(usize::MAX).unwrap().unwrap_err(),
            Gap {
                expected: 7,
                found: 13
            }
        );
    }
}
