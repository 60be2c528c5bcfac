//! Object stores for tests: one that holds a chosen write until the test lets it
//! go, and one that injects faults per kind of request.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use tokio::sync::Semaphore;

/// A store that holds the first write whose key contains `pattern` until the
/// test lets it go.
#[derive(Debug)]
pub struct PauseOnPut {
    inner: Arc<InMemory>,
    pattern: &'static str,
    reached: Semaphore,
    resume: Semaphore,
    armed: std::sync::atomic::AtomicBool,
    /// Writes to keys containing this fail (e.g. lease renewals).
    failing: Option<&'static str>,
    /// Hold the write once it is done (its response not yet given) rather
    /// than before it.
    after: bool,
}

impl PauseOnPut {
    pub fn new(inner: Arc<InMemory>, pattern: &'static str) -> Self {
        Self {
            inner,
            pattern,
            reached: Semaphore::new(0),
            resume: Semaphore::new(0),
            armed: true.into(),
            failing: None,
            after: false,
        }
    }

    /// Holds the write once it is done rather than before it.
    pub fn after_write(mut self) -> Self {
        self.after = true;
        self
    }

    /// Also fails every write to a key containing `pattern`.
    pub fn failing(mut self, pattern: &'static str) -> Self {
        self.failing = Some(pattern);
        self
    }

    /// Waits until a run is held at the write.
    pub async fn reached(&self) {
        let held = tokio::time::timeout(Duration::from_secs(60), self.reached.acquire());
        held.await
            .expect("the run reached the write")
            .unwrap()
            .forget();
    }

    /// Lets the held write go on.
    pub fn resume(&self) {
        self.resume.add_permits(1);
    }

    async fn hold(&self) {
        self.reached.add_permits(1);
        self.resume.acquire().await.unwrap().forget();
    }
}

impl std::fmt::Display for PauseOnPut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PauseOnPut({})", self.pattern)
    }
}

#[async_trait::async_trait]
impl ObjectStore for PauseOnPut {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if self.failing.is_some_and(|f| location.as_ref().contains(f)) {
            return Err(object_store::Error::Generic {
                store: "pause",
                source: "injected failure".into(),
            });
        }
        let ours = location.as_ref().contains(self.pattern);
        let hold = ours && self.armed.swap(false, std::sync::atomic::Ordering::SeqCst);
        if hold && !self.after {
            self.hold().await;
        }
        let written = self.inner.put_opts(location, payload, opts).await;
        if hold && self.after {
            self.hold().await;
        }
        written
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// A kind of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Get,
    Put,
    List,
    Delete,
}

/// What goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The request fails as a dropped connection does, after retries.
    Error,
    /// A read returns only the first half of the object.
    Truncate,
    /// A read returns the object followed by 1 MiB more.
    Oversize,
    /// A write is carried out, but its response is lost: the caller sees an error.
    LoseResponse,
    /// The request is answered only after a pause.
    Stall,
}

/// How long a stalled request waits.
pub const STALL: Duration = Duration::from_millis(300);

#[derive(Debug)]
struct Rule {
    op: Op,
    pattern: &'static str,
    fault: Fault,
    remaining: usize,
}

/// An in-memory store that injects faults into requests whose key contains a
/// pattern, a given number of times.
#[derive(Debug, Default)]
pub struct Faulty {
    inner: Arc<InMemory>,
    rules: Arc<Mutex<Vec<Rule>>>,
}

impl Faulty {
    /// The next `times` requests of kind `op` on keys containing `pattern` meet `fault`.
    pub fn inject(&self, op: Op, pattern: &'static str, fault: Fault, times: usize) {
        let rule = Rule {
            op,
            pattern,
            fault,
            remaining: times,
        };
        self.rules.lock().unwrap().push(rule);
    }

    /// No more faults.
    pub fn heal(&self) {
        self.rules.lock().unwrap().clear();
    }

    fn take(&self, op: Op, key: &Path) -> Option<Fault> {
        take(&self.rules, op, key)
    }
}

/// The fault the next request of kind `op` on `key` meets, if any (counted).
fn take(rules: &Mutex<Vec<Rule>>, op: Op, key: &Path) -> Option<Fault> {
    let mut rules = rules.lock().unwrap();
    let rule = rules
        .iter_mut()
        .find(|r| r.op == op && r.remaining > 0 && key.as_ref().contains(r.pattern))?;
    rule.remaining -= 1;
    Some(rule.fault)
}

fn injected(what: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "faulty",
        source: Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            format!("injected fault: connection reset ({what})"),
        )),
    }
}

impl std::fmt::Display for Faulty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Faulty")
    }
}

#[async_trait::async_trait]
impl ObjectStore for Faulty {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        match self.take(Op::Put, location) {
            Some(Fault::LoseResponse) => {
                self.inner.put_opts(location, payload, opts).await?;
                Err(injected("response lost"))
            }
            Some(_) => Err(injected("put")),
            None => self.inner.put_opts(location, payload, opts).await,
        }
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        match self.take(Op::Put, location) {
            Some(_) => Err(injected("multipart put")),
            None => self.inner.put_multipart_opts(location, opts).await,
        }
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let fault = match options.head {
            true => None,
            false => self.take(Op::Get, location),
        };
        let result = match fault {
            Some(Fault::Error) => return Err(injected("get")),
            Some(Fault::Stall) => {
                tokio::time::sleep(STALL).await;
                self.inner.get_opts(location, options).await?
            }
            _ => self.inner.get_opts(location, options).await?,
        };
        match fault {
            Some(Fault::Truncate) => with_body(result, |b| b.slice(..b.len() / 2)).await,
            Some(Fault::Oversize) => {
                with_body(result, |b| {
                    [b.as_ref(), &[0u8; 1 << 20][..]].concat().into()
                })
                .await
            }
            _ => Ok(result),
        }
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let (rules, inner) = (self.rules.clone(), self.inner.clone());
        locations
            .then(move |location| {
                let (rules, inner) = (rules.clone(), inner.clone());
                async move {
                    let location = location?;
                    if take(&rules, Op::Delete, &location).is_some() {
                        return Err(injected("delete"));
                    }
                    inner.delete(&location).await.map(|()| location)
                }
            })
            .boxed()
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        if self
            .take(Op::List, prefix.unwrap_or(&Path::from("")))
            .is_some()
        {
            return futures::stream::once(async { Err(injected("list")) }).boxed();
        }
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// The same result with its body changed by `change`.
async fn with_body(
    result: GetResult,
    change: impl FnOnce(Bytes) -> Bytes,
) -> object_store::Result<GetResult> {
    let (meta, attributes, extensions) = (
        result.meta.clone(),
        result.attributes.clone(),
        result.extensions.clone(),
    );
    let body = change(result.bytes().await?);
    let range = 0..body.len() as u64;
    Ok(GetResult {
        payload: GetResultPayload::Stream(futures::stream::once(async { Ok(body) }).boxed()),
        meta,
        range,
        attributes,
        extensions,
    })
}
