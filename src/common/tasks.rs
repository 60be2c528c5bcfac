//! Running work: blocking work (file I/O, hashing, RocksDB calls) off the
//! async threads, and [`Jobs`], how many files or requests at once.

use std::num::NonZeroUsize;

use crate::error::Result;

/// Runs `work` on a blocking thread and returns its result; a panic in it
/// becomes [`crate::Error::Task`].
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work).await?
}

/// How many files or requests an operation works on at once: at least one
/// (`Jobs::from(0)` is one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Jobs(NonZeroUsize);

impl Jobs {
    /// The number, at least one.
    pub fn get(self) -> usize {
        self.0.get()
    }
}

impl From<usize> for Jobs {
    fn from(jobs: usize) -> Self {
        Self(NonZeroUsize::new(jobs).unwrap_or(NonZeroUsize::MIN))
    }
}

impl std::fmt::Display for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}
