//! Blocking work (file I/O, hashing, RocksDB calls) run off the async threads.

use crate::error::Result;

/// Runs `work` on a blocking thread and returns its result; a panic in it
/// becomes [`crate::Error::Task`].
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work).await?
}
