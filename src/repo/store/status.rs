//! The HTTP status of a failed request, carried in its error. object_store
//! keeps it in an error type it does not export (arrow-rs-object-store#737),
//! so the HTTP layer (`throttle`) notes each error status (400 and up) in the
//! scope of the store call it belongs to, and `metered` — which every call
//! passes — attaches the last one noted to the error of a call that failed,
//! as [`HttpStatus`], where `errors` finds it. A call whose last attempt got
//! no answer (a timeout after a 503) keeps the status of the attempt before.
//! In a stream of concurrent requests (a bulk delete's batches) the status
//! is the last any of them got: best effort there. Stores without HTTP
//! (local, memory) note nothing.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;

tokio::task_local! {
    /// The last error status answered within the current store call.
    static LAST_STATUS: Arc<AtomicU16>;
}

/// Notes a response's status for the store call in whose scope it runs, if
/// it is an error status.
pub(super) fn note(status: u16) {
    if status >= 400 {
        let _ = LAST_STATUS.try_with(|last| last.store(status, Ordering::Relaxed));
    }
}

/// A failed request's HTTP status, in the chain of the error object_store
/// returned for it; shown as that error.
#[derive(Debug)]
pub(crate) struct HttpStatus {
    pub status: u16,
    source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl std::fmt::Display for HttpStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.source.fmt(f)
    }
}

impl std::error::Error for HttpStatus {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.source.as_ref())
    }
}

/// The HTTP status attached to `err`, if any.
pub(crate) fn status_of(err: &object_store::Error) -> Option<u16> {
    let mut current: &(dyn std::error::Error + 'static) = err;
    loop {
        if let Some(found) = current.downcast_ref::<HttpStatus>() {
            return Some(found.status);
        }
        current = current.source()?;
    }
}

/// `err` with `status` attached, when it failed with an error status.
fn attach(err: object_store::Error, status: u16) -> object_store::Error {
    match err {
        object_store::Error::Generic { store, source } if status >= 400 => {
            let source = Box::new(HttpStatus { status, source });
            object_store::Error::Generic { store, source }
        }
        other => other,
    }
}

/// Runs one store call, attaching the status of its failed request to its error.
pub(super) async fn observed<T>(
    call: impl Future<Output = object_store::Result<T>>,
) -> object_store::Result<T> {
    let last = Arc::new(AtomicU16::new(0));
    let result = LAST_STATUS.scope(last.clone(), call).await;
    result.map_err(|e| attach(e, last.load(Ordering::Relaxed)))
}

/// A stream of a store call's results (a listing's pages, a bulk delete),
/// each error with the status of the request that failed.
pub(super) struct Observed<S> {
    inner: S,
    last: Arc<AtomicU16>,
}

impl<S> Observed<S> {
    pub fn new(inner: S) -> Self {
        let last = Arc::new(AtomicU16::new(0));
        Self { inner, last }
    }
}

impl<T, S> Stream for Observed<S>
where
    S: Stream<Item = object_store::Result<T>> + Unpin,
{
    type Item = object_store::Result<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let last = self.last.clone();
        let polled =
            LAST_STATUS.sync_scope(last.clone(), || Pin::new(&mut self.inner).poll_next(cx));
        polled.map(|item| item.map(|r| r.map_err(|e| attach(e, last.load(Ordering::Relaxed)))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error of a store call whose requests were answered `statuses`
    /// before it failed with `err`.
    async fn failing(statuses: &[u16], err: object_store::Error) -> object_store::Error {
        let call = async {
            statuses.iter().for_each(|status| note(*status));
            Err::<(), _>(err)
        };
        observed(call).await.unwrap_err()
    }

    fn generic(text: &str) -> object_store::Error {
        let source = text.into();
        object_store::Error::Generic {
            store: "S3",
            source,
        }
    }

    #[tokio::test]
    async fn a_failed_calls_status_is_found_in_its_error() {
        let err = failing(&[503, 200], generic("Error performing GET")).await;
        assert_eq!(status_of(&err), Some(503));
        assert!(err.to_string().ends_with("Error performing GET"), "{err}");
        let (path, source) = ("k".into(), "gone".into());
        let err = failing(&[404], object_store::Error::NotFound { path, source }).await;
        assert!(matches!(err, object_store::Error::NotFound { .. }));
        let unanswered = failing(&[200], generic("connection reset")).await;
        assert_eq!(status_of(&unanswered), None);
        let after_a_503 = failing(&[503], generic("timed out")).await;
        assert_eq!(status_of(&after_a_503), Some(503));
    }
}
