//! SHA-256 digests: the one type for content hashes. Parsed once — 64
//! lowercase hex digits, as rockup writes them — and held as 32 bytes;
//! shown, stored and sent as hex.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest;

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256([u8; 32]);

impl Sha256 {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(sha2::Sha256::digest(bytes).into())
    }

    /// The 32 bytes of the digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The digest of these 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Parses 64 hex digits in either case (as an application's records may
    /// write them); [`FromStr`] accepts lowercase only, as rockup writes them.
    pub fn parse_any_case(text: &str) -> Result<Self, String> {
        text.to_ascii_lowercase().parse()
    }

    /// The first byte as two hex digits (the fan-out directory of a key).
    pub fn prefix(&self) -> String {
        hex::encode(&self.0[..1])
    }
}

impl FromStr for Sha256 {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let lowercase_hex = text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let mut bytes = [0u8; 32];
        match text.len() == 64 && lowercase_hex {
            true => hex::decode_to_slice(text, &mut bytes).map_err(|e| e.to_string())?,
            false => {
                return Err(format!(
                    "{text:?} is not a SHA-256 (64 lowercase hex digits)"
                ))
            }
        }
        Ok(Self(bytes))
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&hex::encode(self.0))
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({self})")
    }
}

impl Serialize for Sha256 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Sha256 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// SHA-256 over bytes given piece by piece.
#[derive(Clone, Default)]
pub struct Hasher(sha2::Sha256);

impl Hasher {
    /// Adds `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The digest of everything added.
    pub fn finish(self) -> Sha256 {
        Sha256(self.0.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_only_lowercase_parses() {
        let digest = Sha256::of(b"abc");
        let hex = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(digest.to_string(), hex);
        assert_eq!(hex.parse::<Sha256>(), Ok(digest));
        assert_eq!(
            serde_json::to_string(&digest).unwrap(),
            format!("\"{hex}\"")
        );
        let json = format!("\"{hex}\"");
        assert_eq!(serde_json::from_str::<Sha256>(&json).unwrap(), digest);
        assert_eq!(digest.prefix(), "ba");
        for bad in [
            "",
            "ab",
            &hex.to_uppercase(),
            &format!("{hex}0"),
            &hex.replace('a', "g"),
        ] {
            assert!(bad.parse::<Sha256>().is_err(), "{bad:?}");
        }
        assert_eq!(Sha256::parse_any_case(&hex.to_uppercase()), Ok(digest));
        let mut hasher = Hasher::default();
        hasher.update(b"a");
        hasher.update(b"bc");
        assert_eq!(hasher.finish(), digest);
    }
}
