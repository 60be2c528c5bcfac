//! Keys as people handle them: X25519 identities and recipients in age's
//! encoding (`AGE-SECRET-KEY-1…`, `age1…`: bech32), so that `age-keygen`'s
//! keys work, and a write-only host's key (`rockup-write1…`: bech32m of the
//! repository id and the naming key).

use bech32::{Bech32, Bech32m, Hrp};
use zeroize::Zeroizing;

use super::keys::RepoId;
use super::primitives::{x25519_public, SecretKey};

const IDENTITY_HRP: &str = "age-secret-key-";
const RECIPIENT_HRP: &str = "age";
const WRITE_KEY_HRP: &str = "rockup-write";

/// An X25519 identity: the secret that opens recipient key slots.
#[derive(Clone)]
pub struct Identity(pub(crate) SecretKey);

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({})", self.recipient())
    }
}

impl Identity {
    /// A new random identity.
    pub fn generate() -> Self {
        Self(SecretKey::random(&super::primitives::SystemRandom))
    }

    /// Reads an identity from the text of an identity file: the first line
    /// that is not a comment (`#`), as `age-keygen` writes them.
    pub fn parse(text: &str) -> Result<Self, String> {
        let line = key_line(text, "identity")?;
        let bytes = decode32(line, IDENTITY_HRP)
            .ok_or("not an X25519 identity (AGE-SECRET-KEY-1…, as age-keygen writes it)")?;
        Ok(Self(SecretKey::from_bytes(*bytes)))
    }

    /// The identity as an identity file line.
    pub fn encode(&self) -> Zeroizing<String> {
        let hrp = Hrp::parse(IDENTITY_HRP).expect("a valid prefix");
        Zeroizing::new(bech32::encode_upper::<Bech32>(hrp, self.0.expose()).expect("32 bytes"))
    }

    /// The recipient whose slots this identity opens.
    pub fn recipient(&self) -> Recipient {
        Recipient(x25519_public(&self.0))
    }
}

/// An X25519 recipient: the public key a recipient key slot is wrapped for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Recipient(pub(crate) [u8; 32]);

impl std::fmt::Debug for Recipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Recipient({self})")
    }
}

impl std::fmt::Display for Recipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hrp = Hrp::parse(RECIPIENT_HRP).expect("a valid prefix");
        f.write_str(&bech32::encode_lower::<Bech32>(hrp, &self.0).expect("32 bytes"))
    }
}

impl std::str::FromStr for Recipient {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        decode32(text.trim(), RECIPIENT_HRP)
            .map(|bytes| Self(*bytes))
            .ok_or_else(|| format!("{text:?} is not an X25519 recipient (age1…)"))
    }
}

/// What a write-only host holds: which repository, and its naming key. It
/// names, seals (for the repository's public key) and deduplicates what it
/// writes; it opens nothing that was sealed.
#[derive(Clone)]
pub struct WriteKey {
    pub(crate) repo: RepoId,
    pub(crate) naming: SecretKey,
}

impl std::fmt::Debug for WriteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WriteKey(repository {})", self.repo)
    }
}

impl WriteKey {
    /// Reads a write key from the text of its file.
    pub fn parse(text: &str) -> Result<Self, String> {
        let line = key_line(text, "write key")?;
        let (hrp, data) = bech32::decode(line).map_err(|_| "not a rockup write key")?;
        let hrp_ok = hrp.to_lowercase() == WRITE_KEY_HRP;
        let data: Zeroizing<Vec<u8>> = Zeroizing::new(data);
        if !hrp_ok || data.len() != 48 {
            return Err("not a rockup write key (rockup-write1…)".into());
        }
        let repo = RepoId::from_bytes(data[..16].try_into().expect("16 bytes"));
        let naming = SecretKey::from_bytes(data[16..].try_into().expect("32 bytes"));
        Ok(Self { repo, naming })
    }

    /// The key as its file's line.
    pub fn encode(&self) -> Zeroizing<String> {
        let hrp = Hrp::parse(WRITE_KEY_HRP).expect("a valid prefix");
        let data = Zeroizing::new([self.repo.as_bytes().as_slice(), self.naming.expose()].concat());
        Zeroizing::new(bech32::encode_lower::<Bech32m>(hrp, &data).expect("48 bytes"))
    }
}

/// Decodes 32 bytes of bech32 with prefix `hrp` (either case).
fn decode32(text: &str, hrp: &str) -> Option<Zeroizing<[u8; 32]>> {
    let (found, data) = bech32::decode(text).ok()?;
    let data = Zeroizing::new(data);
    if found.to_lowercase() != hrp {
        return None;
    }
    let bytes: [u8; 32] = data.as_slice().try_into().ok()?;
    Some(Zeroizing::new(bytes))
}

/// The key in a key file's text: its first line that is not empty or a
/// comment (`#`), as `age-keygen` writes them.
fn key_line<'a>(text: &'a str, what: &str) -> Result<&'a str, String> {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or_else(|| format!("the {what} file holds no key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_their_text() {
        let identity = Identity::generate();
        let text = format!(
            "# created: now\n# public key: {}\n{}\n",
            identity.recipient(),
            *identity.encode()
        );
        let read = Identity::parse(&text).unwrap();
        assert_eq!(read.recipient(), identity.recipient());
        assert!(identity.encode().starts_with("AGE-SECRET-KEY-1"));
        let recipient = identity.recipient().to_string();
        assert!(recipient.starts_with("age1"), "{recipient}");
        assert_eq!(
            recipient.parse::<Recipient>().unwrap(),
            identity.recipient()
        );
        assert!("age1qqqq".parse::<Recipient>().is_err());
        assert!(
            Identity::parse(&recipient).is_err(),
            "a recipient is not an identity"
        );
        let write = WriteKey {
            repo: RepoId::from_bytes([3; 16]),
            naming: SecretKey::from_bytes([4; 32]),
        };
        let encoded = write.encode();
        assert!(encoded.starts_with("rockup-write1"), "{}", *encoded);
        let back = WriteKey::parse(&encoded).unwrap();
        assert_eq!((back.repo, back.naming), (write.repo, write.naming));
        assert!(WriteKey::parse(&identity.encode()).is_err());
    }

    #[test]
    fn an_age_keygen_identity_is_accepted() {
        // From age's own test vectors (an X25519 identity and its recipient).
        let identity = Identity::parse(
            "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX",
        )
        .unwrap();
        assert_eq!(
            identity.recipient().to_string(),
            "age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj"
        );
    }
}
