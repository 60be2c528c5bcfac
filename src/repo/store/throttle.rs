//! Adaptive request concurrency for stores reached over HTTP: every request
//! waits for a slot; a throttling answer (503 Slow Down, 429 Too Many Requests)
//! halves the slots — at most once a second, so one burst of answers counts
//! once — and each run of successes as long as the current limit adds one back,
//! up to [`MAX_IN_FLIGHT`]. object_store still retries the throttled request
//! with its backoff; this keeps the rest from hammering the store meanwhile.
//! A request holds its slot until the response's headers arrive (for an
//! upload, while its body is sent). Each response's status is also noted for
//! the error of a call that fails (`status`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService, ReqwestConnector,
};
use object_store::ClientOptions;
use tokio::sync::Notify;

use super::status;

/// Requests in flight at most, before any throttling.
pub(super) const MAX_IN_FLIGHT: usize = 64;
/// How long after one decrease the next may come.
const DECREASE_AT_MOST_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct State {
    limit: usize,
    in_flight: usize,
    successes: usize,
    last_decrease: Option<Instant>,
}

/// The shared limit (one per repository, across its clients).
#[derive(Debug)]
pub(super) struct Adaptive {
    state: Mutex<State>,
    freed: Notify,
}

impl Adaptive {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                limit: MAX_IN_FLIGHT,
                in_flight: 0,
                successes: 0,
                last_decrease: None,
            }),
            freed: Notify::new(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("throttle lock")
    }

    async fn acquire(self: &Arc<Self>) -> Slot {
        loop {
            let freed = self.freed.notified();
            {
                let mut state = self.state();
                if state.in_flight < state.limit {
                    state.in_flight += 1;
                    return Slot(self.clone());
                }
            }
            freed.await;
        }
    }

    /// Adjusts the limit to an answer's HTTP status.
    fn observe(&self, status: u16) {
        let mut state = self.state();
        if status == 503 || status == 429 {
            let recent = state
                .last_decrease
                .is_some_and(|at| at.elapsed() < DECREASE_AT_MOST_EVERY);
            if !recent && state.limit > 1 {
                state.limit /= 2;
                state.last_decrease = Some(Instant::now());
                tracing::warn!(
                    status,
                    in_flight = state.limit,
                    "the store is throttling: fewer requests at once"
                );
            }
            state.successes = 0;
            return;
        }
        state.successes += 1;
        if state.successes >= state.limit && state.limit < MAX_IN_FLIGHT {
            state.limit += 1;
            state.successes = 0;
            drop(state);
            self.freed.notify_waiters();
        }
    }
}

/// A request's slot, given back on drop.
struct Slot(Arc<Adaptive>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.state().in_flight -= 1;
        self.0.freed.notify_waiters();
    }
}

/// object_store's reqwest client behind the adaptive limit.
#[derive(Debug)]
struct Throttled {
    inner: HttpClient,
    limit: Arc<Adaptive>,
}

#[async_trait::async_trait]
impl HttpService for Throttled {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let _slot = self.limit.acquire().await;
        let response = self.inner.execute(request).await?;
        let status = response.status().as_u16();
        self.limit.observe(status);
        status::note(status);
        Ok(response)
    }
}

/// Builds clients that share one [`Adaptive`] limit.
#[derive(Debug)]
pub(super) struct ThrottledConnector {
    limit: Arc<Adaptive>,
}

impl ThrottledConnector {
    pub fn new(limit: Arc<Adaptive>) -> Self {
        Self { limit }
    }
}

impl HttpConnector for ThrottledConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(Throttled {
            inner,
            limit: self.limit.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_halves_the_limit_once_per_burst_and_successes_grow_it_back() {
        let limit = Adaptive::new();
        for _ in 0..10 {
            limit.observe(503); // one burst: counted once
        }
        assert_eq!(limit.state().limit, MAX_IN_FLIGHT / 2);
        limit.state().last_decrease = None; // a second later
        limit.observe(429);
        assert_eq!(limit.state().limit, MAX_IN_FLIGHT / 4);
        for _ in 0..MAX_IN_FLIGHT / 4 {
            limit.observe(200);
        }
        assert_eq!(limit.state().limit, MAX_IN_FLIGHT / 4 + 1);
        for _ in 0..10_000 {
            limit.observe(200);
        }
        assert_eq!(
            limit.state().limit,
            MAX_IN_FLIGHT,
            "never above the maximum"
        );
    }

    #[tokio::test]
    async fn requests_wait_for_a_slot() {
        let limit = Adaptive::new();
        limit.state().limit = 2;
        let (a, b) = (limit.acquire().await, limit.acquire().await);
        let third = tokio::spawn({
            let limit = limit.clone();
            async move { limit.acquire().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !third.is_finished(),
            "a third request waits while two are in flight"
        );
        drop(a);
        let _c = tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .expect("a freed slot lets it go")
            .unwrap();
        drop(b);
        assert_eq!(limit.state().in_flight, 1);
    }
}
