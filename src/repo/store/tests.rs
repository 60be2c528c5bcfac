//! The repository primitives: write-once create on stores that honour, ignore
//! or refuse conditional writes, bulk-delete fallback, the marker.

use super::*;
use crate::repo::ids::Format;
use crate::repo::layout;
use object_store::memory::InMemory;

#[tokio::test]
async fn create_is_write_once_and_recognises_our_own_retry() {
    let repo = Repository::from_store(Arc::new(InMemory::new()), "memory://");
    let key = Path::from("backups/x/manifest.json");
    assert_eq!(
        repo.create(&key, Bytes::from_static(b"a")).await.unwrap(),
        Created::New
    );
    assert_eq!(
        repo.create(&key, Bytes::from_static(b"a")).await.unwrap(),
        Created::AlreadyOurs
    );
    let err = repo
        .create(&key, Bytes::from_static(b"b"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("refusing to overwrite"), "{err}");
    assert_eq!(
        repo.get(&key, 1 << 30).await.unwrap(),
        Bytes::from_static(b"a")
    );
}

/// How a test server treats `If-None-Match: *`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Condition {
    /// Accepted, and the object overwritten anyway.
    Ignored,
    /// "Not implemented" (and so are bulk deletes).
    NotImplemented,
    /// A 400 naming the header.
    Refused,
}

#[derive(Debug)]
struct NoConditionalPut {
    inner: Arc<InMemory>,
    condition: Condition,
}

impl std::fmt::Display for NoConditionalPut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NoConditionalPut({:?})", self.condition)
    }
}

#[async_trait::async_trait]
impl ObjectStore for NoConditionalPut {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        if opts.mode != PutMode::Overwrite {
            match self.condition {
                Condition::Ignored => {}
                Condition::NotImplemented => {
                    return Err(object_store::Error::NotImplemented {
                        operation: "conditional put".into(),
                        implementer: self.to_string(),
                    })
                }
                Condition::Refused => return Err(object_store::Error::Generic {
                    store: "S3",
                    source:
                        "400 Bad Request: InvalidArgument: header If-None-Match is not supported"
                            .into(),
                }),
            }
        }
        self.inner
            .put_opts(location, payload, PutOptions::default())
            .await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<'static, object_store::Result<Path>>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<Path>> {
        if self.condition != Condition::NotImplemented {
            return self.inner.delete_stream(locations);
        }
        let implementer = self.to_string();
        locations
            .map(move |_| {
                Err(object_store::Error::NotImplemented {
                    operation: "bulk delete".into(),
                    implementer: implementer.clone(),
                })
            })
            .boxed()
    }
    fn list(
        &self,
        prefix: Option<&Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(
        &self,
        prefix: Option<&Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[tokio::test]
async fn create_never_overwrites_on_stores_without_conditional_put() {
    for condition in [
        Condition::Ignored,
        Condition::NotImplemented,
        Condition::Refused,
    ] {
        let store = NoConditionalPut {
            inner: Arc::new(InMemory::new()),
            condition,
        };
        let repo = Repository::from_store(Arc::new(store), "no-conditional-put://");
        let key = Path::from("backups/x/manifest.json");
        assert_eq!(
            repo.create(&key, Bytes::from_static(b"first"))
                .await
                .unwrap(),
            Created::New
        );
        let err = repo
            .create(&key, Bytes::from_static(b"second"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("refusing to overwrite"), "{err}");
        assert_eq!(
            repo.get(&key, 1 << 30).await.unwrap(),
            Bytes::from_static(b"first")
        );
        assert_eq!(
            repo.create(&key, Bytes::from_static(b"first"))
                .await
                .unwrap(),
            Created::AlreadyOurs
        );
    }
}

#[tokio::test]
async fn deletes_fall_back_to_one_request_per_object() {
    let inner = Arc::new(InMemory::new());
    let store = NoConditionalPut {
        inner: inner.clone(),
        condition: Condition::NotImplemented,
    };
    let keys: Vec<Path> = (0..5).map(|i| Path::from(format!("sst/{i}"))).collect();
    let without_fallback = Repository::from_store(Arc::new(store), "no-bulk://");
    for key in &keys {
        without_fallback
            .put(key, Bytes::from_static(b"x"))
            .await
            .unwrap();
    }
    let err = without_fallback.delete_all(&keys).await.unwrap_err();
    assert!(err.to_string().contains(BULK_DELETE_UNSUPPORTED), "{err}");

    let repo = without_fallback.with_single_deletes(inner.clone());
    repo.delete_all(&keys).await.unwrap();
    assert!(repo.list("sst").await.unwrap().is_empty());
    repo.delete_all(&keys).await.unwrap(); // missing objects count as deleted
}

#[tokio::test]
async fn marker_rejects_unknown_versions() {
    let repo = Repository::from_store(Arc::new(InMemory::new()), "memory://");
    assert!(repo.check_marker(None).await.is_err());
    assert_eq!(
        repo.check_marker(Some(Format::V1)).await.unwrap(),
        Format::V1
    );
    assert_eq!(repo.check_marker(None).await.unwrap(), Format::V1);
    assert_eq!(
        repo.check_marker(Some(Format::V2)).await.unwrap(),
        Format::V2,
        "raised"
    );
    assert_eq!(
        repo.check_marker(Some(Format::V1)).await.unwrap(),
        Format::V2,
        "never lowered"
    );
    repo.put(
        &layout::marker(),
        Bytes::from_static(br#"{"format":"rockup-repository","version":9}"#),
    )
    .await
    .unwrap();
    let err = repo.check_marker(None).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("version 9 was written by a newer rockup"),
        "{err}"
    );
}

/// An HTTP server on loopback that answers every request with `status`.
fn answering(status: u16) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut connection in listener.incoming().flatten() {
            let mut request = [0u8; 4096];
            let _ = connection.read(&mut request);
            let answer = format!(
                "HTTP/1.1 {status} Status\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = connection.write_all(answer.as_bytes());
        }
    });
    format!("http://{address}")
}

/// The status a real HTTP answer carries — through reqwest, the throttled
/// connector and the metered store — decides the kind of the error.
#[tokio::test]
async fn http_statuses_decide_the_kind_of_a_store_error() {
    use object_store::aws::AmazonS3Builder;
    let cases = [
        (503, StoreErrorKind::Unavailable),
        (500, StoreErrorKind::Unavailable),
        (400, StoreErrorKind::Other),
        (501, StoreErrorKind::NotImplemented),
    ];
    for (status, kind) in cases {
        let no_retries = object_store::RetryConfig {
            max_retries: 0,
            ..Default::default()
        };
        let s3 = AmazonS3Builder::new()
            .with_bucket_name("b")
            .with_region("us-east-1")
            .with_endpoint(answering(status))
            .with_allow_http(true)
            .with_access_key_id("k")
            .with_secret_access_key("s")
            .with_retry(no_retries)
            .with_http_connector(super::throttle::ThrottledConnector::new(
                super::throttle::Adaptive::new(),
            ))
            .build()
            .unwrap();
        let repo = Repository::from_store(Arc::new(s3), "s3://b");
        let err = repo.get(&Path::from("k"), 10).await.unwrap_err();
        assert!(
            matches!(&err, Error::Store { kind: found, .. } if *found == kind),
            "{status}: {err:?}"
        );
        assert_eq!(err.retryable(), kind.is_transient(), "{status}");
    }
}

/// A generator that gives the same bytes every time it is asked.
struct Repeating;

impl Random for Repeating {
    fn fill(&self, out: &mut [u8]) {
        out.fill(7);
    }
}

#[tokio::test]
async fn a_random_number_generator_that_repeats_itself_is_caught_before_sealing() {
    use crate::repo::crypto::sealed::Kind;
    let store = Arc::new(InMemory::new());
    let credentials = Credentials::passphrase("correct horse");
    let handle = |credentials: &Credentials| {
        Repository::from_store(store.clone(), "memory://")
            .with_credentials(credentials.clone())
            .with_random(Arc::new(Repeating))
    };
    let first = handle(&credentials);
    first.encrypt_for_tests("correct horse").await;
    let sealed = first
        .seal((Kind::Part, "one"), Bytes::from_static(b"one"))
        .await;
    assert!(sealed.is_ok(), "the first session is new");

    let second = handle(&credentials);
    second.check_marker(Some(Format::V2)).await.unwrap();
    let err = second
        .seal((Kind::Part, "two"), Bytes::from_static(b"two"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("repeated itself"), "{err}");
    let sessions = first.list(layout::KEYS).await.unwrap();
    assert_eq!(sessions.len(), 1, "the second session was never stored");
}
