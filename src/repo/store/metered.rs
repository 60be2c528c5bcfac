//! Every request to the store passes here: counted by kind with the bytes it
//! moved ([`Traffic`]), the HTTP status of a failed one attached to its error
//! (`status`), and — with rate limits — paced so that uploads and downloads
//! together, and each direction, stay at or under theirs over the run. Pacing is a virtual
//! clock: each transfer of `n` bytes is scheduled `n / rate` after the
//! previous one, waiting for its slot before it is sent (uploads) or before the
//! next chunk is read (downloads, where TCP's back-pressure slows the sender).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};
use serde::Serialize;
use tokio::time::Instant;

use super::status::{observed, Observed};

/// Requests by kind and bytes moved, since the repository was opened.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    put: AtomicU64,
    get: AtomicU64,
    head: AtomicU64,
    list: AtomicU64,
    delete: AtomicU64,
    uploaded: AtomicU64,
    downloaded: AtomicU64,
}

/// What a run asked of the store (LIST counts one per listing, however many
/// pages the store answered with; DELETE one per object).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Traffic {
    /// PUT requests, multipart parts and completions included.
    pub put: u64,
    /// GET requests (ranged GETs included).
    pub get: u64,
    /// HEAD requests.
    pub head: u64,
    /// Listings.
    pub list: u64,
    /// Objects deleted.
    pub delete: u64,
    /// Bytes sent.
    pub uploaded_bytes: u64,
    /// Bytes received.
    pub downloaded_bytes: u64,
}

impl Counters {
    pub fn snapshot(&self) -> Traffic {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Traffic {
            put: read(&self.put),
            get: read(&self.get),
            head: read(&self.head),
            list: read(&self.list),
            delete: read(&self.delete),
            uploaded_bytes: read(&self.uploaded),
            downloaded_bytes: read(&self.downloaded),
        }
    }
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// The byte rates a repository handle keeps to (`--rate-limit`,
/// `--limit-upload`, `--limit-download`), each optional: uploads count
/// against the total and the upload rate, downloads against the total and
/// the download rate. Handles given clones of one limiter share its budget
/// (`copy`'s two repositories).
#[derive(Debug, Clone, Default)]
pub struct RateLimiter {
    total: Option<Arc<Pace>>,
    upload: Option<Arc<Pace>>,
    download: Option<Arc<Pace>>,
}

impl RateLimiter {
    /// A limiter of these rates in bytes per second (`None`: unlimited).
    pub fn new(total: Option<u64>, upload: Option<u64>, download: Option<u64>) -> Self {
        let pace = |rate: Option<u64>| rate.map(|r| Arc::new(Pace::new(r)));
        Self {
            total: pace(total),
            upload: pace(upload),
            download: pace(download),
        }
    }

    /// Whether no rate is set.
    pub fn is_unlimited(&self) -> bool {
        self.total.is_none() && self.upload.is_none() && self.download.is_none()
    }

    async fn sent(&self, bytes: u64) {
        take(&self.total, bytes).await;
        take(&self.upload, bytes).await;
    }

    async fn received(&self, bytes: u64) {
        take(&self.total, bytes).await;
        take(&self.download, bytes).await;
    }
}

async fn take(pace: &Option<Arc<Pace>>, bytes: u64) {
    if let Some(pace) = pace {
        pace.take(bytes).await;
    }
}

/// One byte rate, as a virtual clock.
#[derive(Debug)]
struct Pace {
    bytes_per_sec: f64,
    next_slot: Mutex<Option<Instant>>,
}

impl Pace {
    fn new(bytes_per_sec: u64) -> Self {
        Self {
            bytes_per_sec: bytes_per_sec.max(1) as f64,
            next_slot: Mutex::new(None),
        }
    }

    /// Waits for the slot of a transfer of `bytes`.
    async fn take(&self, bytes: u64) {
        let start = {
            let mut next = self.next_slot.lock().expect("pace lock");
            let now = Instant::now();
            let start = next.map_or(now, |slot| slot.max(now));
            *next = Some(start + Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec));
            start
        };
        tokio::time::sleep_until(start).await;
    }
}

/// A store whose requests are counted and, optionally, paced.
#[derive(Debug)]
pub(super) struct Metered {
    inner: Arc<dyn ObjectStore>,
    counters: Arc<Counters>,
    limits: RateLimiter,
}

impl Metered {
    pub fn new(inner: Arc<dyn ObjectStore>, counters: Arc<Counters>, limits: RateLimiter) -> Self {
        Self {
            inner,
            counters,
            limits,
        }
    }
}

impl std::fmt::Display for Metered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for Metered {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let bytes = payload.content_length() as u64;
        self.limits.sent(bytes).await;
        add(&self.counters.put, 1);
        add(&self.counters.uploaded, bytes);
        observed(self.inner.put_opts(location, payload, opts)).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        add(&self.counters.put, 1);
        let inner = observed(self.inner.put_multipart_opts(location, opts)).await?;
        Ok(Box::new(MeteredUpload {
            inner,
            counters: self.counters.clone(),
            limits: self.limits.clone(),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        add(
            if options.head {
                &self.counters.head
            } else {
                &self.counters.get
            },
            1,
        );
        let mut result = observed(self.inner.get_opts(location, options)).await?;
        let (counters, limits) = (self.counters.clone(), self.limits.clone());
        let (meta, range) = (result.meta.clone(), result.range.clone());
        let attributes = std::mem::take(&mut result.attributes);
        let extensions = std::mem::take(&mut result.extensions);
        let metered = result.into_stream().then(move |chunk| {
            let (counters, limits) = (counters.clone(), limits.clone());
            async move {
                if let Ok(bytes) = &chunk {
                    add(&counters.downloaded, bytes.len() as u64);
                    limits.received(bytes.len() as u64).await;
                }
                chunk
            }
        });
        Ok(GetResult {
            payload: GetResultPayload::Stream(metered.boxed()),
            meta,
            range,
            attributes,
            extensions,
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let counters = self.counters.clone();
        let counted = locations.inspect(move |_| add(&counters.delete, 1));
        Observed::new(self.inner.delete_stream(counted.boxed())).boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        add(&self.counters.list, 1);
        Observed::new(self.inner.list(prefix)).boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        add(&self.counters.list, 1);
        observed(self.inner.list_with_delimiter(prefix)).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        add(&self.counters.put, 1);
        observed(self.inner.copy_opts(from, to, options)).await
    }
}

/// A multipart upload whose parts are counted and paced.
#[derive(Debug)]
struct MeteredUpload {
    inner: Box<dyn MultipartUpload>,
    counters: Arc<Counters>,
    limits: RateLimiter,
}

#[async_trait::async_trait]
impl MultipartUpload for MeteredUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let bytes = data.content_length() as u64;
        let (counters, limits) = (self.counters.clone(), self.limits.clone());
        let part = self.inner.put_part(data);
        Box::pin(async move {
            limits.sent(bytes).await;
            add(&counters.put, 1);
            add(&counters.uploaded, bytes);
            observed(part).await
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        add(&self.counters.put, 1);
        observed(self.inner.complete()).await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        add(&self.counters.delete, 1);
        observed(self.inner.abort()).await
    }
}

impl Traffic {
    /// What was asked of the store since `before` (a snapshot of the same handle).
    pub fn since(self, before: Traffic) -> Traffic {
        Traffic {
            put: self.put.saturating_sub(before.put),
            get: self.get.saturating_sub(before.get),
            head: self.head.saturating_sub(before.head),
            list: self.list.saturating_sub(before.list),
            delete: self.delete.saturating_sub(before.delete),
            uploaded_bytes: self.uploaded_bytes.saturating_sub(before.uploaded_bytes),
            downloaded_bytes: self
                .downloaded_bytes
                .saturating_sub(before.downloaded_bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::ObjectStoreExt;

    #[tokio::test(start_paused = true)]
    async fn uploads_and_downloads_together_keep_to_the_rate() {
        let counters = Arc::new(Counters::default());
        let limits = RateLimiter::new(Some(100_000), None, None);
        let store = Metered::new(Arc::new(InMemory::new()), counters.clone(), limits);
        let start = Instant::now();
        for i in 0..5 {
            let key = Path::from(format!("k{i}"));
            store.put(&key, vec![7u8; 50_000].into()).await.unwrap();
            store.get(&key).await.unwrap().bytes().await.unwrap();
        }
        // 500,000 bytes at 100,000 bytes/s: the last transfer's slot starts at
        // 4.5 s (the first one goes at once).
        let elapsed = start.elapsed().as_secs_f64();
        assert!((4.5..4.6).contains(&elapsed), "{elapsed} s");
        let traffic = counters.snapshot();
        assert_eq!((traffic.put, traffic.get), (5, 5));
        assert_eq!(
            (traffic.uploaded_bytes, traffic.downloaded_bytes),
            (250_000, 250_000)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn each_direction_keeps_to_its_own_rate() {
        let counters = Arc::new(Counters::default());
        let limits = RateLimiter::new(None, Some(100_000), Some(25_000));
        let store = Metered::new(Arc::new(InMemory::new()), counters, limits);
        let start = Instant::now();
        for i in 0..5 {
            let key = Path::from(format!("k{i}"));
            store.put(&key, vec![7u8; 50_000].into()).await.unwrap();
        }
        // 250,000 bytes up at 100,000 bytes/s: the last slot at 2 s.
        let uploaded = start.elapsed().as_secs_f64();
        assert!((2.0..2.1).contains(&uploaded), "{uploaded} s");
        let start = Instant::now();
        for i in 0..2 {
            let key = Path::from(format!("k{i}"));
            store.get(&key).await.unwrap().bytes().await.unwrap();
        }
        // 100,000 bytes down at 25,000 bytes/s: the second read's slot at
        // 2 s, and the last chunk's wait after it.
        let downloaded = start.elapsed().as_secs_f64();
        assert!((2.0..4.1).contains(&downloaded), "{downloaded} s");
    }
}
