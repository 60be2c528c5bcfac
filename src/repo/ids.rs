//! The repository's typed names: [`BackupId`], [`PackId`] and the [`Format`]
//! version, each parsed and validated once — from a manifest, a key, a
//! command line — and shown the way keys and manifests spell them.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime, Utc};
use rand::Rng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::common::spool::{FixedKey, SpoolKey};

const ID_TIME_FORMAT: &str = "%Y%m%dT%H%M%S%.3fZ";

/// A backup id: `<UTC time to the millisecond>-<8 hex digits>`, so ids sort by
/// creation time (also two backups in one second).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackupId(String);

impl BackupId {
    /// A new id for a backup created at `now`.
    pub fn new(now: DateTime<Utc>) -> Self {
        let suffix: u32 = rand::rng().random();
        Self(format!("{}-{suffix:08x}", now.format(ID_TIME_FORMAT)))
    }

    /// When the backup was created, by the creating host's clock.
    pub fn created_at(&self) -> DateTime<Utc> {
        created_at(&self.0).expect("validated when made")
    }

    /// The id as its keys spell it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The creation time an id names, `None` when it is not an id.
fn created_at(id: &str) -> Option<DateTime<Utc>> {
    let (time, suffix) = id.split_once('-')?;
    // `%Y%m%dT%H%M%S.mmmZ` is 20 characters (chrono would also accept fewer).
    if time.len() != 20 || suffix.len() != 8 || !suffix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    NaiveDateTime::parse_from_str(time, ID_TIME_FORMAT)
        .ok()
        .map(|t| t.and_utc())
}

impl FromStr for BackupId {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match created_at(text) {
            Some(_) => Ok(Self(text.to_string())),
            None => Err(format!(
                "{text:?} is not a backup id (like 20261125T130500.123Z-1a2b3c4d)"
            )),
        }
    }
}

/// A pack id: 128 random bits, written as 32 lowercase hex digits. Random,
/// not a content hash, so that pack names never reveal content.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackId(u128);

impl PackId {
    /// A new random id.
    pub fn random() -> Self {
        Self(rand::rng().random())
    }

    /// The first two hex digits (the fan-out directory of its key).
    pub fn prefix(&self) -> String {
        self.to_string()[..2].to_string()
    }

    /// The id as 16 big-endian bytes (sorting as the hex does).
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// The id of 16 big-endian bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(u128::from_be_bytes(bytes))
    }
}

/// In spools by its bytes: packs sort as their ids do.
impl SpoolKey for PackId {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bytes());
    }
    fn decode(bytes: &mut &[u8]) -> Option<Self> {
        let (id, rest) = bytes.split_first_chunk::<16>()?;
        *bytes = rest;
        Some(Self::from_bytes(*id))
    }
}

impl FixedKey for PackId {}

impl FromStr for PackId {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let lowercase_hex = text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        match text.len() == 32 && lowercase_hex {
            true => u128::from_str_radix(text, 16)
                .map(Self)
                .map_err(|e| e.to_string()),
            false => Err(format!(
                "{text:?} is not a pack id (32 lowercase hex digits)"
            )),
        }
    }
}

impl fmt::Display for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl fmt::Display for PackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&format!("{:032x}", self.0))
    }
}

impl fmt::Debug for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BackupId({self})")
    }
}

impl fmt::Debug for PackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PackId({self})")
    }
}

/// Serialized as its text, parsed (and so validated) when read.
macro_rules! as_text {
    ($name:ident) => {
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

as_text!(BackupId);
as_text!(PackId);

/// A version of the repository format, as the marker and manifests record it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Format {
    /// Every file an object of its own; per-backup database files under the
    /// backup (readable by rockup 0.1).
    V1,
    /// Small files' content in packs, compressed; database files other than
    /// tables by content; manifest parts as frames.
    V2,
}

impl Format {
    /// The newest format this build reads and writes.
    pub const NEWEST: Format = Format::V2;

    /// The version number the marker and manifests record.
    pub fn number(self) -> u32 {
        match self {
            Format::V1 => 1,
            Format::V2 => 2,
        }
    }

    /// The format with this version number, if this build knows it.
    pub fn from_number(number: u32) -> Option<Self> {
        match number {
            1 => Some(Format::V1),
            2 => Some(Format::V2),
            _ => None,
        }
    }

    /// Whether small files' content goes into packs (and database files other
    /// than tables are content by hash, and parts are frames).
    pub fn packs(self) -> bool {
        match self {
            Format::V1 => false,
            Format::V2 => true,
        }
    }

    /// The message for a version number this build does not know.
    pub fn unknown(what: &str, number: u32) -> String {
        format!(
            "{what} version {number} was written by a newer rockup (rockup {} reads versions 1 to {}); upgrade rockup",
            env!("CARGO_PKG_VERSION"),
            Self::NEWEST.number()
        )
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.number())
    }
}

impl Serialize for Format {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u32(self.number())
    }
}

impl<'de> Deserialize<'de> for Format {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let number = u32::deserialize(deserializer)?;
        Self::from_number(number)
            .ok_or_else(|| serde::de::Error::custom(Self::unknown("format", number)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_ids_round_trip_and_sort_by_time() {
        let at = |t: &str| DateTime::parse_from_rfc3339(t).unwrap().to_utc();
        let (t1, t2) = (
            at("2026-11-25T13:05:00.998Z"),
            at("2026-11-25T13:05:00.999Z"),
        );
        let (a, b) = (BackupId::new(t1), BackupId::new(t2));
        assert!(a.as_str().starts_with("20261125T130500.998Z-"), "{a}");
        assert!(a < b);
        assert_eq!(a.created_at(), t1);
        assert_eq!(a.to_string().parse::<BackupId>(), Ok(a.clone()));
        for bad in [
            "../etc",
            "20261125T130500.000Z-zzzzzzzz",
            "20261125T130500Z-0000000a",
        ] {
            assert!(bad.parse::<BackupId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn pack_ids_are_32_lowercase_hex_digits() {
        let id = PackId::random();
        assert_eq!(id.to_string().len(), 32);
        assert_eq!(id.to_string().parse::<PackId>(), Ok(id));
        assert_eq!(PackId::from_bytes(id.to_bytes()), id);
        for bad in ["0f0f", &"0F".repeat(16), &"0f".repeat(17), &"zz".repeat(16)] {
            assert!(bad.parse::<PackId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_are_numbers_and_newer_ones_are_named() {
        assert_eq!(serde_json::to_string(&Format::V2).unwrap(), "2");
        assert_eq!(serde_json::from_str::<Format>("1").unwrap(), Format::V1);
        let err = serde_json::from_str::<Format>("3").unwrap_err();
        assert!(err.to_string().contains("newer rockup"), "{err}");
    }
}
