//! The key hierarchy of an encrypted repository.
//!
//! - A **master key** per generation (32 random bytes). `rockup key rotate`
//!   makes a new generation; every key of every generation stays in the
//!   keyring, encrypted under the newest, so what older generations sealed
//!   stays readable.
//! - Each generation's **X25519 key pair**: the secret derived from its master
//!   key, the public key in the repository's config. Writers seal data for
//!   the public key, so a host that holds no master key can write what it
//!   cannot read back.
//! - A **session** per writing run: a random key, wrapped for the current
//!   generation's public key (an ephemeral X25519 agreement, HKDF-SHA256,
//!   AES-256-GCM) and stored once as `keys/session-<id>`; the run's objects
//!   are sealed under keys derived from it (`sealed`).
//! - The **naming key** (random, one per repository, kept across rotations):
//!   HMAC-SHA256 keys derived from it name content (`ContentName`) and table
//!   files, authenticate the config and the pack indexes' name lists, and
//!   seal locks — everything a writer must compute or read without the
//!   master key. It is what a write-only host holds (`WriteKey`).

use std::collections::BTreeMap;

use super::primitives::{
    hkdf, hmac, hmac_verify, x25519, x25519_public, Aead, Random, SecretKey, TAG_LEN,
};
use crate::digest::Sha256;

/// Random bytes naming a repository: bound into everything sealed in it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoId([u8; 16]);

/// Random bytes naming a writer's session.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId([u8; 16]);

macro_rules! id_of_16_bytes {
    ($name:ident) => {
        impl $name {
            pub fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(bytes)
            }
            pub fn random(random: &dyn Random) -> Self {
                let mut bytes = [0u8; 16];
                random.fill(&mut bytes);
                Self(bytes)
            }
            pub fn as_bytes(&self) -> &[u8; 16] {
                &self.0
            }
            /// Parses 32 lowercase hex digits.
            pub fn parse(text: &str) -> Option<Self> {
                let lowercase = text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
                let mut bytes = [0u8; 16];
                (text.len() == 32 && lowercase && hex::decode_to_slice(text, &mut bytes).is_ok())
                    .then_some(Self(bytes))
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(&hex::encode(self.0))
            }
        }
        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}({self})", stringify!($name))
            }
        }
    };
}

id_of_16_bytes!(RepoId);
id_of_16_bytes!(SessionId);

/// What a piece of content is called in a repository: its SHA-256 where the
/// repository is plaintext, an HMAC of it under the naming key where it is
/// encrypted (the name then says nothing of the content to whoever lacks the
/// key).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ContentName(pub [u8; 32]);

impl std::fmt::Display for ContentName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(&hex::encode(self.0))
    }
}

/// In spools by its bytes.
impl crate::common::spool::SpoolKey for ContentName {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
    fn decode(bytes: &mut &[u8]) -> Option<Self> {
        let (name, rest) = bytes.split_first_chunk::<32>()?;
        *bytes = rest;
        Some(Self(*name))
    }
}

impl crate::common::spool::FixedKey for ContentName {}

impl ContentName {
    /// Parses 64 lowercase hex digits.
    pub fn parse(text: &str) -> Option<Self> {
        text.parse::<Sha256>().ok().map(|s| Self(*s.as_bytes()))
    }

    /// The first byte as two hex digits (the fan-out directory of its key).
    pub fn prefix(&self) -> String {
        hex::encode(&self.0[..1])
    }
}

/// The keys derived from the naming key, each for one purpose.
#[derive(Clone)]
pub struct Naming {
    repo: RepoId,
    content: SecretKey,
    tables: SecretKey,
    index_names: SecretKey,
    config: SecretKey,
    locks: SecretKey,
}

impl Naming {
    pub fn new(repo: RepoId, naming_key: &SecretKey) -> Self {
        let derive = |purpose: &[u8]| hkdf(naming_key.expose(), repo.as_bytes(), &[purpose]);
        Self {
            repo,
            content: derive(b"rockup content names"),
            tables: derive(b"rockup table names"),
            index_names: derive(b"rockup index names"),
            config: derive(b"rockup config"),
            locks: derive(b"rockup locks"),
        }
    }

    /// The name of content with this hash.
    pub fn content(&self, sha256: &Sha256) -> ContentName {
        ContentName(hmac(&self.content, &[sha256.as_bytes()]))
    }

    /// The object name of the table file with this unique name.
    pub fn table(&self, unique_name: &str) -> String {
        hex::encode(hmac(&self.tables, &[unique_name.as_bytes()]))
    }

    /// The MAC of a pack index's list of content names.
    pub fn index_names_mac(&self, pack: &[u8], names: &[u8]) -> [u8; 32] {
        hmac(&self.index_names, &[self.repo.as_bytes(), pack, names])
    }

    /// Whether `mac` is that of a pack index's list of content names
    /// (compared in constant time).
    pub fn verify_index_names(&self, pack: &[u8], names: &[u8], mac: &[u8]) -> bool {
        hmac_verify(&self.index_names, &[self.repo.as_bytes(), pack, names], mac)
    }

    /// The key authenticating the config's public parts.
    pub fn config_key(&self) -> &SecretKey {
        &self.config
    }

    /// Seals the contents of lock `name` (random salt: locks are few and
    /// small), bound to its name.
    pub fn seal_lock(&self, random: &dyn Random, name: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut salt = [0u8; 16];
        random.fill(&mut salt);
        let mut out = salt.to_vec();
        let mut body = plaintext.to_vec();
        self.lock_aead(&salt)
            .seal([0; 12], &lock_ad(name), &mut body);
        out.extend(body);
        out
    }

    /// Opens the contents of lock `name`; `None` when they do not
    /// authenticate (damaged, forged, or another lock's).
    pub fn open_lock(&self, name: &str, sealed: &[u8]) -> Option<Vec<u8>> {
        let (salt, body) = sealed.split_at_checked(16)?;
        let mut body = body.to_vec();
        let len = self
            .lock_aead(salt)
            .open([0; 12], &lock_ad(name), &mut body)?;
        body.truncate(len);
        Some(body)
    }

    fn lock_aead(&self, salt: &[u8]) -> Aead {
        Aead::new(&hkdf(self.locks.expose(), salt, &[b"rockup lock key"]))
    }
}

/// The X25519 secret of a generation's master key.
pub fn generation_secret(repo: &RepoId, master: &SecretKey) -> SecretKey {
    hkdf(
        master.expose(),
        repo.as_bytes(),
        &[b"rockup generation x25519"],
    )
}

/// The public key of a generation's master key.
pub fn generation_public(repo: &RepoId, master: &SecretKey) -> [u8; 32] {
    x25519_public(&generation_secret(repo, master))
}

/// Bytes of a wrapped session key: generation, ephemeral public key, the
/// encrypted session key and its tag.
pub const WRAPPED_SESSION_LEN: usize = 4 + 32 + 32 + TAG_LEN;

/// Wraps a 32-byte key for the holder of the X25519 secret behind `public`:
/// an ephemeral key agreement, HKDF-SHA256 over the shared secret and both
/// public keys, AES-256-GCM under that one-time key. `context` is bound in.
pub fn wrap_for(
    random: &dyn Random,
    public: &[u8; 32],
    context: &[u8],
    key: &SecretKey,
) -> ([u8; 32], Vec<u8>) {
    let ephemeral = SecretKey::random(random);
    let ephemeral_public = x25519_public(&ephemeral);
    let shared = x25519(&ephemeral, public).expect("a generation's public key has full order");
    let wrap = hkdf(
        shared.expose(),
        &[ephemeral_public, *public].concat(),
        &[b"rockup wrap", context],
    );
    let mut sealed = key.expose().to_vec();
    Aead::new(&wrap).seal([0; 12], context, &mut sealed);
    (ephemeral_public, sealed)
}

/// Unwraps what [`wrap_for`] wrapped for `secret`; `None` when it does not
/// authenticate.
pub fn unwrap_with(
    secret: &SecretKey,
    ephemeral_public: &[u8; 32],
    context: &[u8],
    sealed: &[u8],
) -> Option<SecretKey> {
    let public = x25519_public(secret);
    let shared = x25519(secret, ephemeral_public)?;
    let wrap = hkdf(
        shared.expose(),
        &[*ephemeral_public, public].concat(),
        &[b"rockup wrap", context],
    );
    unseal_key(&wrap, context, sealed)
}

/// Opens a 32-byte key sealed with AES-256-GCM (nonce 0) under the one-time
/// key `wrap`.
pub fn unseal_key(wrap: &SecretKey, context: &[u8], sealed: &[u8]) -> Option<SecretKey> {
    let mut body = sealed.to_vec();
    let len = Aead::new(wrap).open([0; 12], context, &mut body)?;
    let bytes: [u8; 32] = body.get(..len)?.try_into().ok()?;
    Some(SecretKey::from_bytes(bytes))
}

/// Seals a 32-byte key with AES-256-GCM (nonce 0) under the one-time key
/// `wrap`.
pub fn seal_key(wrap: &SecretKey, context: &[u8], key: &SecretKey) -> Vec<u8> {
    let mut sealed = key.expose().to_vec();
    Aead::new(wrap).seal([0; 12], context, &mut sealed);
    sealed
}

/// What binds a wrapped session key.
fn session_context(repo: &RepoId, session: &SessionId, generation: u32) -> Vec<u8> {
    let mut context = b"rockup session".to_vec();
    context.extend_from_slice(repo.as_bytes());
    context.extend_from_slice(session.as_bytes());
    context.extend_from_slice(&generation.to_be_bytes());
    context
}

/// A session key wrapped for generation `generation`'s public key: the body
/// of `keys/session-<id>`.
pub fn wrap_session(
    random: &dyn Random,
    (repo, session): (&RepoId, &SessionId),
    (generation, public): (u32, &[u8; 32]),
    key: &SecretKey,
) -> Vec<u8> {
    let context = session_context(repo, session, generation);
    let (ephemeral, sealed) = wrap_for(random, public, &context, key);
    let mut out = generation.to_be_bytes().to_vec();
    out.extend_from_slice(&ephemeral);
    out.extend(sealed);
    out
}

/// The generation a wrapped session key is for.
pub fn session_generation(wrapped: &[u8]) -> Option<u32> {
    (wrapped.len() == WRAPPED_SESSION_LEN)
        .then(|| u32::from_be_bytes(wrapped[..4].try_into().expect("4 bytes")))
}

/// Unwraps a session key with the master key of its generation.
pub fn unwrap_session(
    (repo, session): (&RepoId, &SessionId),
    master: &SecretKey,
    wrapped: &[u8],
) -> Option<SecretKey> {
    let generation = session_generation(wrapped)?;
    let ephemeral: [u8; 32] = wrapped[4..36].try_into().ok()?;
    let context = session_context(repo, session, generation);
    unwrap_with(
        &generation_secret(repo, master),
        &ephemeral,
        &context,
        &wrapped[36..],
    )
}

/// The master keys of every generation, and the naming key: what the keyring
/// holds and a full key opens.
#[derive(Clone)]
pub struct Keyring {
    pub naming: SecretKey,
    pub masters: BTreeMap<u32, SecretKey>,
}

impl Keyring {
    /// The newest generation and its master key.
    pub fn current(&self) -> (u32, &SecretKey) {
        let (generation, key) = self
            .masters
            .iter()
            .next_back()
            .expect("a keyring has a master key");
        (*generation, key)
    }
}

/// The associated data of lock `name`'s contents.
fn lock_ad(name: &str) -> Vec<u8> {
    [b"rockup lock\0".as_slice(), name.as_bytes()].concat()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::crypto::primitives::SystemRandom;

    #[test]
    fn a_session_key_unwraps_only_with_its_generations_master_and_context() {
        let (repo, session) = (
            RepoId::random(&SystemRandom),
            SessionId::random(&SystemRandom),
        );
        let master = SecretKey::random(&SystemRandom);
        let public = generation_public(&repo, &master);
        let key = SecretKey::random(&SystemRandom);
        let wrapped = wrap_session(&SystemRandom, (&repo, &session), (3, &public), &key);
        assert_eq!(wrapped.len(), WRAPPED_SESSION_LEN);
        assert_eq!(session_generation(&wrapped), Some(3));
        assert_eq!(
            unwrap_session((&repo, &session), &master, &wrapped),
            Some(key)
        );
        let other = SessionId::random(&SystemRandom);
        assert!(
            unwrap_session((&repo, &other), &master, &wrapped).is_none(),
            "moved"
        );
        let stranger = SecretKey::random(&SystemRandom);
        assert!(unwrap_session((&repo, &session), &stranger, &wrapped).is_none());
        let mut flipped = wrapped.clone();
        flipped[2] ^= 1; // another generation claimed
        assert!(unwrap_session((&repo, &session), &master, &flipped).is_none());
    }

    #[test]
    fn names_hide_content_and_locks_open_only_with_the_naming_key() {
        let repo = RepoId::random(&SystemRandom);
        let naming = Naming::new(repo, &SecretKey::random(&SystemRandom));
        let sha = Sha256::of(b"known file");
        assert_ne!(naming.content(&sha).0, *sha.as_bytes());
        assert_eq!(naming.content(&sha), naming.content(&sha));
        let other = Naming::new(repo, &SecretKey::random(&SystemRandom));
        assert_ne!(naming.content(&sha), other.content(&sha));
        let lock = "locks/backup-1.json";
        let sealed = naming.seal_lock(&SystemRandom, lock, b"{\"kind\":\"backup\"}");
        assert_eq!(
            naming.open_lock(lock, &sealed).unwrap(),
            b"{\"kind\":\"backup\"}"
        );
        assert!(other.open_lock(lock, &sealed).is_none());
        assert!(
            naming.open_lock("locks/backup-2.json", &sealed).is_none(),
            "moved"
        );
    }
}
