//! How far the running operation is: files and bytes done, and the totals when
//! they are known (a restore or a deep verify knows them from the manifest; a
//! backup learns them as it goes). Operations advance it; a caller polls
//! [`Progress::snapshot`] from another task to draw a bar or log a line.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters one operation advances; shared by a repository handle's clones.
#[derive(Debug, Default)]
pub struct Progress {
    files: AtomicU64,
    bytes: AtomicU64,
    /// `u64::MAX` while unknown.
    total_files: AtomicU64,
    total_bytes: AtomicU64,
}

/// A reading of [`Progress`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgressSnapshot {
    /// Files (or objects) done.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Files the operation will handle, when known.
    pub total_files: Option<u64>,
    /// Their bytes, when known.
    pub total_bytes: Option<u64>,
}

impl Progress {
    /// Starts counting an operation from zero; totals `None` while unknown.
    pub(crate) fn start(&self, total_files: Option<u64>, total_bytes: Option<u64>) {
        self.files.store(0, Ordering::Relaxed);
        self.bytes.store(0, Ordering::Relaxed);
        self.total_files
            .store(total_files.unwrap_or(u64::MAX), Ordering::Relaxed);
        self.total_bytes
            .store(total_bytes.unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// One more file (or object) of `bytes` done.
    pub(crate) fn advance(&self, bytes: u64) {
        self.files.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> ProgressSnapshot {
        let known = |n: u64| (n != u64::MAX).then_some(n);
        ProgressSnapshot {
            files: self.files.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            total_files: known(self.total_files.load(Ordering::Relaxed)),
            total_bytes: known(self.total_bytes.load(Ordering::Relaxed)),
        }
    }
}
