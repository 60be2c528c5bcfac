//! The repository: an object store scoped to the repository URL's prefix, and the
//! primitives every operation shares — reads, overwriting writes of immutable
//! objects, the write-once create used for commits, listing, bulk deletes, and the
//! repository marker. Stores are built in `open`; their errors are worded in
//! `errors`, with the HTTP status `status` carries to them.

mod dryrun;
mod errors;
mod local;
mod marker;
mod metered;
mod open;
mod reading;
mod sealing;
mod status;
mod throttle;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
};

use crate::common::progress::Progress;
use crate::repo::crypto::primitives::{Random, SystemRandom};
use crate::repo::crypto::{Credentials, Crypt};

use crate::error::{Error, Result, StoreErrorKind};
use errors::{kind_of, BULK_DELETE_UNSUPPORTED};
use metered::{Counters, Metered};
pub use metered::{RateLimiter, Traffic};
pub(crate) use reading::{Fetched, RangeFetched, RangeKey};

/// A backup repository: an object store scoped to the repository URL's prefix.
#[derive(Clone)]
pub struct Repository {
    /// The store as every request sees it: counted, and paced with a rate limit.
    store: Arc<dyn ObjectStore>,
    /// The store as given, for pacing it later.
    unmetered: Arc<dyn ObjectStore>,
    counters: Arc<Counters>,
    progress: Arc<Progress>,
    name: String,
    /// The same bucket without bulk deletes (S3 only), for servers that lack
    /// `DeleteObjects`; switched to on the first "not implemented".
    single_deletes: Option<Arc<dyn ObjectStore>>,
    bulk_delete_unsupported: Arc<AtomicBool>,
    /// The directory of a local repository.
    local_root: Option<std::path::PathBuf>,
    /// What may unlock the repository, if it is encrypted.
    credentials: Credentials,
    /// The keys of an encrypted repository, once its config was unlocked.
    crypt: Arc<OnceLock<Arc<Crypt>>>,
    /// Where random numbers (session keys and ids, salts) come from.
    random: Arc<dyn Random>,
    /// Writes go to an overlay, never to the store.
    dry_run: bool,
}

/// Outcome of a write-once create.
#[derive(Debug, PartialEq, Eq)]
pub enum Created {
    /// The object did not exist and now holds our bytes.
    New,
    /// The object already held exactly our bytes (an earlier attempt of ours).
    AlreadyOurs,
}

/// Shows the redacted URL only: object_store's builders keep credentials in
/// their `Debug` output.
impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Repository {
    /// Wraps an already-built store (e.g. `InMemory` in tests, or a store the
    /// application configured itself). `name` is used in messages.
    pub fn from_store(store: Arc<dyn ObjectStore>, name: impl Into<String>) -> Self {
        let counters = Arc::new(Counters::default());
        Self {
            store: Arc::new(Metered::new(
                store.clone(),
                counters.clone(),
                RateLimiter::default(),
            )),
            unmetered: store,
            counters,
            progress: Arc::default(),
            name: name.into(),
            single_deletes: None,
            bulk_delete_unsupported: Arc::new(AtomicBool::new(false)),
            local_root: None,
            credentials: Credentials::default(),
            crypt: Arc::default(),
            random: Arc::new(SystemRandom),
            dry_run: false,
        }
    }

    /// What unlocks the repository if it is encrypted (a passphrase, an
    /// identity, a write key). A handle given a key refuses plaintext
    /// repositories (a passphrase prompt alone is not a key). The handle
    /// forgets keys it had unlocked (its clones keep theirs).
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self.crypt = Arc::default();
        self
    }

    /// Random numbers from `random` instead of the system's (tests: a
    /// generator that repeats itself).
    #[cfg(test)]
    pub(crate) fn with_random(mut self, random: Arc<dyn Random>) -> Self {
        self.random = random;
        self
    }

    /// The same repository as a store that deletes one object per request, used
    /// when the main store's bulk delete is not implemented by the server
    /// (`open` sets it up for S3).
    pub(crate) fn with_single_deletes(mut self, store: Arc<dyn ObjectStore>) -> Self {
        self.single_deletes = Some(Arc::new(Metered::new(
            store,
            self.counters.clone(),
            RateLimiter::default(),
        )));
        self
    }

    /// The same repository with nothing written to its store: writes land
    /// in an overlay this handle reads back (see `dryrun`), deletes touch
    /// only the overlay; requests are counted as they would be sent.
    pub(crate) fn dry_run(mut self) -> Self {
        let overlay: Arc<dyn ObjectStore> = Arc::new(dryrun::DryRun::new(self.unmetered.clone()));
        self.store = Arc::new(Metered::new(
            overlay.clone(),
            self.counters.clone(),
            RateLimiter::default(),
        ));
        self.unmetered = overlay;
        self.single_deletes = None;
        self.local_root = None;
        self.dry_run = true;
        self
    }

    /// Whether this handle writes nothing ([`Repository::dry_run`]).
    pub(crate) fn is_dry_run(&self) -> bool {
        self.dry_run
    }

    /// Paces uploads and downloads to the rates of `limits` over the run
    /// (`--rate-limit`, `--limit-upload`, `--limit-download`).
    pub fn with_rate_limits(mut self, limits: RateLimiter) -> Self {
        self.store = Arc::new(Metered::new(
            self.unmetered.clone(),
            self.counters.clone(),
            limits,
        ));
        self
    }

    /// How far the operation running on this handle (or a clone) is.
    pub fn progress(&self) -> &Arc<Progress> {
        &self.progress
    }

    /// The requests and bytes this repository handle has sent so far.
    pub fn traffic(&self) -> Traffic {
        self.counters.snapshot()
    }

    /// Deletes `keys` (missing ones count as deleted): in bulk requests where the
    /// store has them (S3 `DeleteObjects`, Azure blob batch), one request per
    /// object where the server answers that bulk deletes are not implemented.
    pub async fn delete_all(&self, keys: &[Path]) -> Result<()> {
        let single = self.single_deletes.as_ref();
        let bulk_failed = match single {
            Some(single) if self.bulk_delete_unsupported.load(Ordering::Relaxed) => {
                Self::delete_with(single, keys).await
            }
            _ => Self::delete_with(&self.store, keys).await,
        };
        let unsupported = |e: &object_store::Error| kind_of(e) == StoreErrorKind::NotImplemented;
        match (bulk_failed, single) {
            (Ok(()), _) => Ok(()),
            (Err(e), Some(single)) if unsupported(&e) => {
                tracing::info!(repo = %self.name, "the server has no bulk delete; deleting one object per request");
                self.bulk_delete_unsupported.store(true, Ordering::Relaxed);
                Self::delete_with(single, keys)
                    .await
                    .map_err(|e| self.error(e))
            }
            (Err(e), None) if unsupported(&e) => {
                let message = format!("{BULK_DELETE_UNSUPPORTED}: {e}");
                Err(self.failure(StoreErrorKind::NotImplemented, message))
            }
            (Err(e), _) => Err(self.error(e)),
        }
    }

    /// Deletes `keys` through `store`; missing objects count as deleted.
    async fn delete_with(store: &Arc<dyn ObjectStore>, keys: &[Path]) -> object_store::Result<()> {
        let owned: Vec<object_store::Result<Path>> = keys.iter().cloned().map(Ok).collect();
        let mut deleted = store.delete_stream(futures::stream::iter(owned).boxed());
        while let Some(result) = deleted.next().await {
            match result {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The store, scoped to the repository prefix.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The repository URL as shown to users (query strings redacted).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads a whole object of at most `limit` bytes.
    pub(crate) async fn get(&self, key: &Path, limit: u64) -> Result<Bytes> {
        self.get_if_exists(key, limit)
            .await?
            .ok_or_else(|| self.failure(StoreErrorKind::NotFound, format!("{key} not found")))
    }

    /// Reads a whole object of at most `limit` bytes, `None` when it does not
    /// exist. Repository content is untrusted: nothing is allocated from the size
    /// the store reports, and a larger object is an error after at most `limit`
    /// bytes were read.
    pub(crate) async fn get_if_exists(&self, key: &Path, limit: u64) -> Result<Option<Bytes>> {
        let Some(result) = self.fetch(key, GetOptions::default()).await? else {
            return Ok(None);
        };
        let too_large = || {
            Error::manifest(
                key.to_string(),
                format!("is larger than the {limit} bytes it may have (damaged, or not rockup's)"),
            )
        };
        if result.meta.size > limit {
            return Err(too_large());
        }
        let mut bytes = BytesMut::new();
        let mut stream = result.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.error(e))?;
            if (bytes.len() + chunk.len()) as u64 > limit {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Some(bytes.freeze()))
    }

    /// Writes an immutable object whose key is derived from its content or
    /// identity (so overwriting it with the same bytes is harmless).
    pub(crate) async fn put(&self, key: &Path, bytes: Bytes) -> Result<()> {
        self.store
            .put(key, PutPayload::from(bytes))
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Writes `bytes` at `key` once and reads it back. Safe on stores that ignore
    /// or reject `If-None-Match` and across retries: an existing object is checked
    /// first; after `AlreadyExists` or any failed request the object is read back
    /// and compared, so an earlier attempt of ours is recognised and anybody
    /// else's is never overwritten. When the conditional write failed and the
    /// object is still absent (a server that does not implement or refuses the
    /// condition), a plain write follows. Either way the stored bytes are read
    /// back and must be ours.
    pub async fn create(&self, key: &Path, bytes: Bytes) -> Result<Created> {
        // Anything longer than ours is not ours: read no further than that.
        let limit = bytes.len() as u64 + 1;
        if let Some(existing) = self.get_if_exists_or_longer(key, limit).await? {
            return self.compare_existing(key, &existing, &bytes);
        }
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let written = self
            .store
            .put_opts(key, PutPayload::from(bytes.clone()), opts)
            .await;
        if let Err(err) = written {
            // AlreadyExists, a lost response, or a server that refuses or does not
            // implement conditional writes (501, or a 400 naming the header).
            match self.get_if_exists_or_longer(key, limit).await? {
                Some(existing) => return self.compare_existing(key, &existing, &bytes),
                None => {
                    tracing::debug!(%key, "conditional write failed ({err}); plain write after the existence check");
                    self.put(key, bytes.clone()).await?;
                }
            }
        }
        match self.get_if_exists_or_longer(key, limit).await? {
            Some(stored) if stored == bytes => Ok(Created::New),
            Some(_) => Err(Error::Conflict {
                key: key.to_string(),
                reason: "was written concurrently by somebody else (the store ignored If-None-Match); ours was not kept".into(),
            }),
            None => Err(self.failure(
                StoreErrorKind::Unavailable,
                format!("{key} was written but cannot be read back"),
            )),
        }
    }

    /// Whether `key` exists (one HEAD).
    pub(crate) async fn exists(&self, key: &Path) -> Result<bool> {
        let head = GetOptions {
            head: true,
            ..Default::default()
        };
        Ok(self.fetch(key, head).await?.is_some())
    }

    /// One GET: `None` when there is no such object.
    pub(crate) async fn fetch(&self, key: &Path, options: GetOptions) -> Result<Option<GetResult>> {
        match self.store.get_opts(key, options).await {
            Ok(result) => Ok(Some(result)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(e)),
        }
    }

    /// The object's first `limit` bytes (all of it when shorter), `None` when
    /// it does not exist; reading stops there.
    async fn get_if_exists_or_longer(&self, key: &Path, limit: u64) -> Result<Option<Bytes>> {
        let Some(result) = self.fetch(key, GetOptions::default()).await? else {
            return Ok(None);
        };
        let mut bytes = BytesMut::new();
        let mut stream = result.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.error(e))?;
            let room = limit as usize - bytes.len();
            bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if bytes.len() as u64 == limit {
                break;
            }
        }
        Ok(Some(bytes.freeze()))
    }

    fn compare_existing(&self, key: &Path, existing: &[u8], ours: &[u8]) -> Result<Created> {
        if existing == ours {
            Ok(Created::AlreadyOurs)
        } else {
            Err(Error::Conflict {
                key: key.to_string(),
                reason: "already exists with other content; refusing to overwrite it".into(),
            })
        }
    }

    /// In a local repository, removes the staging files of writes a crash
    /// interrupted, older than `cutoff` (see `local::sweep_staged`); returns
    /// the files and bytes removed. Object stores abort or expire incomplete
    /// uploads themselves (README: lifecycle rules).
    pub(crate) async fn sweep_staged_uploads(
        &self,
        cutoff: chrono::DateTime<chrono::Utc>,
        dry_run: bool,
    ) -> Result<(u64, u64)> {
        let Some(root) = self.local_root.clone() else {
            return Ok((0, 0));
        };
        let cutoff = std::time::SystemTime::from(cutoff);
        crate::common::tasks::blocking(move || {
            local::sweep_staged(&root, cutoff, dry_run).map_err(|e| Error::io(&root, e))
        })
        .await
    }

    /// Lists every object under `prefix` (one LIST, paginated by the store).
    pub(crate) async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let prefix = Path::from(prefix);
        self.store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| self.error(e))
    }
}

#[cfg(test)]
mod tests;
