//! Client-side encryption (repository format 3). The store sees one
//! plaintext object, the config (`config`); everything else is sealed
//! (`sealed`: AES-256-GCM in 64 KiB chunks, bound to what it is) or named by
//! a keyed hash (`keys::Naming`). Keys (`keys`): master keys per generation,
//! their X25519 key pairs, a session key per writing run wrapped for the
//! current public key, and the naming key that write-only hosts hold.
//! `encoding` reads and writes the keys people handle; `primitives` wraps
//! AWS-LC and Argon2id, the only cryptographic code.
//!
//! [`Credentials`] says what may unlock a repository; [`Crypt`] is an
//! unlocked repository's keys, shared by a `Repository`'s clones.

pub mod config;
pub mod encoding;
pub mod keys;
pub mod primitives;
pub mod sealed;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use zeroize::Zeroizing;

pub use config::KdfParams;
pub use encoding::{Identity, Recipient, WriteKey};
use keys::{ContentName, SessionId};
use primitives::{Random, SecretKey};
use sealed::Session;

use crate::digest::Sha256;

/// Where a passphrase comes from, asked only when a repository needs one.
pub type PassphraseSource = Arc<dyn Fn() -> Result<Zeroizing<String>, String> + Send + Sync>;

/// What may unlock an encrypted repository: a passphrase, an X25519 identity
/// (a recipient key slot), or a write key (write-only: back up, never read
/// back). Plaintext repositories need none.
#[derive(Clone, Default)]
pub struct Credentials {
    pub(crate) passphrase: Option<PassphraseSource>,
    /// The passphrase would only be asked for (a prompt on a terminal): no
    /// key was named, so a plaintext repository is fine.
    pub(crate) prompt_only: bool,
    pub(crate) identity: Option<Identity>,
    pub(crate) write_key: Option<WriteKey>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("passphrase", &self.passphrase.as_ref().map(|_| "…"))
            .field("identity", &self.identity)
            .field("write_key", &self.write_key)
            .field("prompt_only", &self.prompt_only)
            .finish()
    }
}

impl Credentials {
    /// Unlocks with this passphrase.
    pub fn passphrase(passphrase: impl Into<String>) -> Self {
        let passphrase = Zeroizing::new(passphrase.into());
        Self::default().with_passphrase_from(move || Ok(passphrase.clone()))
    }

    /// Also a passphrase, from `source`, called only when one is needed and
    /// then remembered (a prompt asks once).
    pub fn with_passphrase_from(
        mut self,
        source: impl Fn() -> Result<Zeroizing<String>, String> + Send + Sync + 'static,
    ) -> Self {
        let known = Mutex::new(None::<Zeroizing<String>>);
        self.passphrase = Some(Arc::new(move || {
            let mut known = known.lock().expect("not poisoned");
            if let Some(passphrase) = known.as_ref() {
                return Ok(passphrase.clone());
            }
            let passphrase = source()?;
            *known = Some(passphrase.clone());
            Ok(passphrase)
        }));
        self
    }

    /// A passphrase asked for only if an encrypted repository needs one (a
    /// prompt): unlike a passphrase given, it does not make the handle refuse
    /// plaintext repositories.
    pub fn with_passphrase_prompt(
        self,
        ask: impl Fn() -> Result<Zeroizing<String>, String> + Send + Sync + 'static,
    ) -> Self {
        let mut credentials = self.with_passphrase_from(ask);
        credentials.prompt_only = true;
        credentials
    }

    /// Also an X25519 identity.
    pub fn with_identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Also a write key: a host holding only this backs up without being
    /// able to read the repository.
    pub fn with_write_key(mut self, key: WriteKey) -> Self {
        self.write_key = Some(key);
        self
    }

    /// Whether any secret was given.
    pub fn is_empty(&self) -> bool {
        self.passphrase.is_none() && self.identity.is_none() && self.write_key.is_none()
    }

    /// Whether a key was named (not merely a prompt): such a handle works on
    /// encrypted repositories only.
    pub fn names_a_key(&self) -> bool {
        self.identity.is_some()
            || self.write_key.is_some()
            || self.passphrase.is_some() && !self.prompt_only
    }
}

/// An unlocked encrypted repository's keys.
pub struct Crypt {
    /// What the config gave up to the handle's credentials.
    pub keys: config::Unlocked,
    /// This process's writing session, once it wrote.
    pub session: tokio::sync::OnceCell<Arc<Session>>,
    /// Session keys opened so far.
    sessions: Mutex<HashMap<SessionId, SecretKey>>,
    pub random: Arc<dyn Random>,
}

impl Crypt {
    pub fn new(unlocked: config::Unlocked, random: Arc<dyn Random>) -> Self {
        Self {
            keys: unlocked,
            session: tokio::sync::OnceCell::new(),
            sessions: Mutex::default(),
            random,
        }
    }

    /// The name of content with this hash.
    pub fn content_name(&self, sha256: &Sha256) -> ContentName {
        self.keys.naming.content(sha256)
    }

    /// A session key opened before.
    pub fn cached_session(&self, id: &SessionId) -> Option<SecretKey> {
        self.sessions.lock().expect("not poisoned").get(id).cloned()
    }

    /// Remembers an opened session key.
    pub fn remember_session(&self, id: SessionId, key: SecretKey) {
        self.sessions.lock().expect("not poisoned").insert(id, key);
    }
}
