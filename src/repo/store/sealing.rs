//! Sealed objects at the store's boundary. In an encrypted repository every
//! object but the config is sealed (`crypto::sealed`) under a session key of
//! the run that wrote it: the session is made on a writer's first object, its
//! key wrapped for the current generation's public key and stored write-once
//! as `keys/session-<id>` (a session id that exists already means the random
//! number generator repeated itself: nothing is sealed then). Readers open an
//! object with its session's key, unwrapped with their master keys and kept.
//! Content and table files are named by keyed hashes; locks are sealed under
//! a key derived from the naming key, which every writer holds. Plaintext
//! repositories pass through every method here unchanged.

use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;

use super::Repository;
use crate::common::tasks::blocking;
use crate::digest::Sha256;
use crate::error::{Error, Result};
use crate::repo::crypto::keys::{
    unwrap_session, wrap_session, ContentName, SessionId, WRAPPED_SESSION_LEN,
};
use crate::repo::crypto::primitives::SecretKey;
use crate::repo::crypto::sealed::{self, Header, Kind, ObjectKey, Session};
use crate::repo::layout;

impl Repository {
    /// This writer's session, made and stored on first use; `None` in a
    /// plaintext repository.
    pub(crate) async fn session(&self) -> Result<Option<Arc<Session>>> {
        let Some(crypt) = self.crypt() else {
            return Ok(None);
        };
        let session = crypt
            .session
            .get_or_try_init(|| async {
                let random = crypt.random.as_ref();
                let (id, key) = (SessionId::random(random), SecretKey::random(random));
                let wrapped = wrap_session(
                    random,
                    (&crypt.keys.repo, &id),
                    (crypt.keys.generation, &crypt.keys.public_key),
                    &key,
                );
                let object = layout::session(&id);
                let repeated = || {
                    Error::Task(format!(
                        "{object} exists already: the random number generator repeated itself; \
                         nothing was sealed with it"
                    ))
                };
                // Looked for first: a generator that repeats itself also
                // repeats the wrapped bytes, which `create` would take for
                // this run's own retry.
                if self.exists(&object).await? {
                    return Err(repeated());
                }
                match self.create(&object, Bytes::from(wrapped)).await {
                    Ok(_) => Ok(Arc::new(Session::new(id, key, crypt.keys.repo))),
                    Err(Error::Conflict { .. }) => Err(repeated()),
                    Err(e) => Err(e),
                }
            })
            .await?;
        Ok(Some(session.clone()))
    }

    /// The key of the sealed object with `header`, bound to `what`.
    pub(crate) async fn object_key(
        &self,
        header: &Header,
        what: (Kind, &str),
    ) -> Result<ObjectKey> {
        let crypt = self
            .crypt()
            .expect("only encrypted repositories hold sealed objects");
        let Some(keyring) = &crypt.keys.keyring else {
            return Err(Error::WriteOnly {
                operation: "reading a sealed object",
            });
        };
        let session_key = match crypt.cached_session(&header.session) {
            Some(key) => key,
            None => {
                let object = layout::session(&header.session);
                let wrapped = self
                    .get_if_exists(&object, WRAPPED_SESSION_LEN as u64)
                    .await?;
                let damaged = |why: &str| Error::manifest(object.to_string(), why.to_string());
                let wrapped = wrapped.ok_or_else(|| {
                    damaged("is missing: what its session sealed cannot be opened")
                })?;
                let generation = crate::repo::crypto::keys::session_generation(&wrapped)
                    .ok_or_else(|| damaged("is not a wrapped session key"))?;
                let master = keyring.masters.get(&generation).ok_or_else(|| {
                    damaged("is wrapped for a generation this keyring does not hold")
                })?;
                let key = unwrap_session((&crypt.keys.repo, &header.session), master, &wrapped)
                    .ok_or_else(|| {
                        damaged("does not open (damaged, forged, or another repository's)")
                    })?;
                crypt.remember_session(header.session, key.clone());
                key
            }
        };
        Ok(ObjectKey::derive(
            &session_key,
            &crypt.keys.repo,
            header,
            what,
        ))
    }

    /// `bytes` sealed as `what` (unchanged in a plaintext repository).
    pub(crate) async fn seal(&self, what: (Kind, &str), bytes: Bytes) -> Result<Bytes> {
        let Some(session) = self.session().await? else {
            return Ok(bytes);
        };
        let (kind, name) = (what.0, what.1.to_string());
        blocking(move || Ok(Bytes::from(session.seal((kind, &name), &bytes)))).await
    }

    /// Opens the sealed object `bytes` read as `what` (unchanged in a
    /// plaintext repository); damage is an error naming it.
    pub(crate) async fn unseal(&self, what: (Kind, &str), bytes: Bytes) -> Result<Bytes> {
        if self.crypt().is_none() {
            return Ok(bytes);
        }
        let damaged = |why: String| {
            Error::manifest(
                what.1.to_string(),
                format!("{why} (damaged, tampered, moved, or another repository's)"),
            )
        };
        let header = Header::parse(&bytes).map_err(damaged)?;
        let key = self.object_key(&header, what).await?;
        let opened = blocking(move || Ok(sealed::open(&key, &bytes))).await?;
        opened.map(Bytes::from).map_err(damaged)
    }

    /// Writes `bytes` at `key`, sealed as `kind` (bound to the key).
    pub(crate) async fn put_sealed(&self, kind: Kind, key: &Path, bytes: Bytes) -> Result<()> {
        let sealed = self.seal((kind, key.as_ref()), bytes).await?;
        self.put(key, sealed).await
    }

    /// Reads and opens the object at `key` (sealed as `kind`), of at most
    /// `limit` bytes of plaintext; `None` when it does not exist.
    pub(crate) async fn get_opened(
        &self,
        kind: Kind,
        key: &Path,
        limit: u64,
    ) -> Result<Option<Bytes>> {
        let Some(stored) = self.get_if_exists(key, self.stored_len(limit)).await? else {
            return Ok(None);
        };
        self.unseal((kind, key.as_ref()), stored).await.map(Some)
    }

    /// Bytes an object of `plain` bytes takes in the store.
    pub(crate) fn stored_len(&self, plain: u64) -> u64 {
        match self.crypt() {
            Some(_) => sealed::sealed_len(plain),
            None => plain,
        }
    }

    /// What content with this hash is called here.
    pub(crate) fn content_name(&self, sha256: &Sha256) -> ContentName {
        match self.crypt() {
            Some(crypt) => crypt.content_name(sha256),
            None => ContentName(*sha256.as_bytes()),
        }
    }

    /// The key of the content object holding content with this hash.
    pub(crate) fn content_key(&self, sha256: &Sha256) -> Path {
        match self.crypt() {
            Some(crypt) => layout::keyed_content(&crypt.content_name(sha256)),
            None => layout::content_object(sha256),
        }
    }

    /// Where content objects are.
    pub(crate) fn content_prefix(&self) -> &'static str {
        match self.crypt() {
            Some(_) => layout::KEYED_CONTENT,
            None => layout::CONTENT,
        }
    }

    /// The content a content object's key names, if it is one.
    pub(crate) fn parse_content_key(&self, key: &str) -> Option<ContentName> {
        match self.crypt() {
            Some(_) => layout::parse_keyed_content_key(key),
            None => layout::parse_content_key(key).map(|sha| ContentName(*sha.as_bytes())),
        }
    }

    /// The key an object named `logical` in a manifest has here: table files
    /// are named by a keyed hash of their unique name in an encrypted
    /// repository; everything else as it is.
    pub(crate) fn object_key_of(&self, logical: &Path) -> Path {
        let unique = logical
            .as_ref()
            .strip_prefix(layout::TABLES)
            .and_then(|r| r.strip_prefix('/'));
        match (self.crypt(), unique) {
            (Some(crypt), Some(unique)) => layout::table(&crypt.keys.naming.table(unique)),
            _ => logical.clone(),
        }
    }

    /// A lock's contents as stored (sealed under the lock key when encrypted).
    pub(crate) fn seal_lock(&self, key: &Path, plaintext: Vec<u8>) -> Bytes {
        match self.crypt() {
            Some(crypt) => {
                let random = crypt.random.as_ref();
                Bytes::from(
                    crypt
                        .keys
                        .naming
                        .seal_lock(random, key.as_ref(), &plaintext),
                )
            }
            None => Bytes::from(plaintext),
        }
    }

    /// A lock's contents, opened; `None` when they do not authenticate.
    pub(crate) fn open_lock(&self, key: &Path, stored: Bytes) -> Option<Bytes> {
        match self.crypt() {
            Some(crypt) => crypt
                .keys
                .naming
                .open_lock(key.as_ref(), &stored)
                .map(Bytes::from),
            None => Some(stored),
        }
    }
}
