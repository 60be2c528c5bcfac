//! The primitives, all from AWS-LC (`aws-lc-rs`) and RustCrypto's `argon2`:
//! AES-256-GCM, HKDF-SHA256, HMAC-SHA256, X25519, Argon2id and the system's
//! random numbers. Nothing here is a cipher, MAC or KDF of rockup's own: these
//! are thin, typed wrappers, so that the rest of `crypto` never touches a raw
//! key buffer or a nonce it did not derive.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey, X25519};
use aws_lc_rs::{hkdf, hmac, rand as lc_rand};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Bytes of every key.
pub const KEY_LEN: usize = 32;
/// Bytes of an AES-GCM tag.
pub const TAG_LEN: usize = 16;
/// Bytes of an AES-GCM nonce.
pub const NONCE_LEN: usize = 12;

/// A 256-bit secret: wiped from memory when dropped, never shown.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey([u8; KEY_LEN]);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(…)")
    }
}

impl SecretKey {
    /// The key of these bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// A new random key.
    pub fn random(random: &dyn Random) -> Self {
        let mut bytes = [0u8; KEY_LEN];
        random.fill(&mut bytes);
        Self(bytes)
    }

    /// The key's bytes (to derive from, wrap, or store encrypted).
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

/// Where random bytes come from: the system's generator, or — in tests —
/// one that is made to repeat itself.
pub trait Random: Send + Sync {
    /// Fills `out` with random bytes.
    fn fill(&self, out: &mut [u8]);
}

/// The operating system's generator, through AWS-LC.
pub struct SystemRandom;

impl Random for SystemRandom {
    fn fill(&self, out: &mut [u8]) {
        lc_rand::fill(out).expect("the system's random number generator works");
    }
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-SHA256 (RFC 5869): a key from `ikm`, `salt` and the context `info`.
pub fn hkdf(ikm: &[u8], salt: &[u8], info: &[&[u8]]) -> SecretKey {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm);
    let mut out = [0u8; KEY_LEN];
    prk.expand(info, Len(KEY_LEN))
        .and_then(|okm| okm.fill(&mut out))
        .expect("32 bytes are a valid HKDF-SHA256 output length");
    SecretKey(out)
}

/// HMAC-SHA256 of the concatenation of `parts`.
pub fn hmac(key: &SecretKey, parts: &[&[u8]]) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key.expose());
    let mut context = hmac::Context::with_key(&key);
    for part in parts {
        context.update(part);
    }
    let mut tag = [0u8; 32];
    tag.copy_from_slice(context.sign().as_ref());
    tag
}

/// Whether `tag` is the HMAC-SHA256 of `parts` (compared in constant time).
pub fn hmac_verify(key: &SecretKey, parts: &[&[u8]], tag: &[u8]) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key.expose());
    hmac::verify(&key, &parts.concat(), tag).is_ok()
}

/// An AES-256-GCM key. Every nonce passed to it is derived by the caller from
/// a counter under a key used for one object only.
pub struct Aead(LessSafeKey);

impl Aead {
    pub fn new(key: &SecretKey) -> Self {
        let unbound = UnboundKey::new(&AES_256_GCM, key.expose()).expect("a 256-bit key");
        Self(LessSafeKey::new(unbound))
    }

    /// Encrypts `in_out` in place and appends the tag.
    pub fn seal(&self, nonce: [u8; NONCE_LEN], ad: &[u8], in_out: &mut Vec<u8>) {
        let nonce = Nonce::assume_unique_for_key(nonce);
        self.0
            .seal_in_place_append_tag(nonce, Aad::from(ad), in_out)
            .expect("AES-GCM seals any length rockup uses");
    }

    /// Encrypts `in_out` in place; returns the tag that follows it.
    pub fn seal_separate(
        &self,
        nonce: [u8; NONCE_LEN],
        ad: &[u8],
        in_out: &mut [u8],
    ) -> [u8; TAG_LEN] {
        let nonce = Nonce::assume_unique_for_key(nonce);
        let tag = self
            .0
            .seal_in_place_separate_tag(nonce, Aad::from(ad), in_out)
            .expect("AES-GCM seals any length rockup uses");
        tag.as_ref().try_into().expect("a 16-byte tag")
    }

    /// Decrypts `in_out` (ciphertext and tag) in place; the plaintext's
    /// length, or `None` when it does not authenticate.
    pub fn open(&self, nonce: [u8; NONCE_LEN], ad: &[u8], in_out: &mut [u8]) -> Option<usize> {
        let nonce = Nonce::assume_unique_for_key(nonce);
        self.0
            .open_in_place(nonce, Aad::from(ad), in_out)
            .ok()
            .map(|plain| plain.len())
    }
}

/// The X25519 public key of the secret scalar `secret`.
pub fn x25519_public(secret: &SecretKey) -> [u8; 32] {
    let private = PrivateKey::from_private_key(&X25519, secret.expose())
        .expect("every 32 bytes are an X25519 scalar");
    let public = private.compute_public_key().expect("X25519 public key");
    let mut out = [0u8; 32];
    out.copy_from_slice(public.as_ref());
    out
}

/// The X25519 shared secret of `secret` and `public`; `None` for a public
/// key of low order (an all-zero result).
pub fn x25519(secret: &SecretKey, public: &[u8; 32]) -> Option<SecretKey> {
    let private = PrivateKey::from_private_key(&X25519, secret.expose()).ok()?;
    let peer = UnparsedPublicKey::new(&X25519, public);
    let shared = agreement::agree(&private, peer, (), |shared| {
        let mut out = [0u8; KEY_LEN];
        out.copy_from_slice(shared);
        Ok(out)
    })
    .ok()?;
    (shared != [0u8; KEY_LEN]).then_some(SecretKey(shared))
}

/// Argon2id (RFC 9106) of `passphrase` with these parameters.
pub fn argon2id(
    passphrase: &[u8],
    salt: &[u8],
    (memory_kib, iterations, parallelism): (u32, u32, u32),
) -> Result<SecretKey, String> {
    let params = argon2::Params::new(memory_kib, iterations, parallelism, Some(KEY_LEN))
        .map_err(|e| format!("Argon2id parameters: {e}"))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = [0u8; KEY_LEN];
    argon
        .hash_password_into(passphrase, salt, &mut out)
        .map_err(|e| format!("Argon2id: {e}"))?;
    Ok(SecretKey(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aead_round_trips_and_refuses_another_nonce_or_context() {
        let key = SecretKey::random(&SystemRandom);
        let aead = Aead::new(&key);
        let mut sealed = b"secret".to_vec();
        aead.seal([1; NONCE_LEN], b"ad", &mut sealed);
        assert_eq!(sealed.len(), 6 + TAG_LEN);
        let mut copy = sealed.clone();
        assert_eq!(aead.open([1; NONCE_LEN], b"ad", &mut copy), Some(6));
        assert_eq!(&copy[..6], b"secret");
        assert_eq!(aead.open([2; NONCE_LEN], b"ad", &mut sealed.clone()), None);
        assert_eq!(
            aead.open([1; NONCE_LEN], b"other", &mut sealed.clone()),
            None
        );
    }

    #[test]
    fn x25519_agrees_both_ways_and_refuses_low_order_points() {
        let (a, b) = (
            SecretKey::random(&SystemRandom),
            SecretKey::random(&SystemRandom),
        );
        let ab = x25519(&a, &x25519_public(&b)).unwrap();
        let ba = x25519(&b, &x25519_public(&a)).unwrap();
        assert_eq!(ab, ba);
        assert!(x25519(&a, &[0u8; 32]).is_none());
    }

    #[test]
    fn hkdf_and_hmac_depend_on_every_input() {
        let key = SecretKey::from_bytes([7; 32]);
        assert_ne!(hkdf(b"k", b"s", &[b"a"]), hkdf(b"k", b"s", &[b"b"]));
        assert_ne!(hkdf(b"k", b"s", &[b"a"]), hkdf(b"k", b"t", &[b"a"]));
        let tag = hmac(&key, &[b"ab", b"c"]);
        assert!(hmac_verify(&key, &[b"a", b"bc"], &tag));
        assert!(!hmac_verify(&key, &[b"abd"], &tag));
    }
}
