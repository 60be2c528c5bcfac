//! How records name external files: a [`ReferenceExtractor`] maps one record to
//! the [`Reference`]s it makes; [`ResolverConfig`] is the built-in extractor the
//! CLI configures (`key`, `value` or `json:/pointer`, a key prefix, pointers to the
//! expected SHA-256 and size). Pure functions of bytes: the source side runs them
//! over the checkpoint, a restore re-runs them over the restored database, and the
//! manifest records the configuration.

use serde::{Deserialize, Serialize};

use crate::digest::Sha256;

/// A reference a record makes to an external file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Path relative to the blob root, as the record states it.
    pub path: String,
    /// SHA-256 the record says the file has, if it says.
    pub sha256: Option<Sha256>,
    /// Size the record says the file has, if it says.
    pub size: Option<u64>,
}

/// Maps a record to the external files it references. Implement it to teach
/// rockup your application's record format.
pub trait ReferenceExtractor: Send + Sync {
    /// The references of one record: empty for none, `Err(reason)` when the record
    /// holds a reference that cannot be valid.
    fn extract(&self, key: &[u8], value: &[u8]) -> std::result::Result<Vec<Reference>, String>;

    /// The built-in configuration this extractor is, if it is one; recorded in the
    /// manifest so that a restore can re-check references without your code.
    fn config(&self) -> Option<ResolverConfig> {
        None
    }
}

/// Where the reference is in a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum RefSource {
    /// The key (after `key_prefix`) is the path.
    Key,
    /// The whole value is the path.
    Value,
    /// The value is JSON; the path is the string at this JSON pointer.
    Json(String),
}

impl TryFrom<String> for RefSource {
    type Error = String;
    fn try_from(text: String) -> std::result::Result<Self, String> {
        text.parse()
    }
}

impl From<RefSource> for String {
    fn from(source: RefSource) -> String {
        match source {
            RefSource::Key => "key".into(),
            RefSource::Value => "value".into(),
            RefSource::Json(pointer) => format!("json:{pointer}"),
        }
    }
}

impl std::str::FromStr for RefSource {
    type Err = String;
    fn from_str(text: &str) -> std::result::Result<Self, String> {
        match text {
            "key" => Ok(RefSource::Key),
            "value" => Ok(RefSource::Value),
            _ => match text.strip_prefix("json:") {
                Some(pointer) => Ok(RefSource::Json(parse_pointer(pointer)?)),
                None => Err(format!("{text:?} is not key, value or json:/pointer")),
            },
        }
    }
}

/// Checks a JSON pointer (`/a/b`, RFC 6901).
fn parse_pointer(pointer: &str) -> std::result::Result<String, String> {
    if pointer.starts_with('/') {
        Ok(pointer.to_string())
    } else {
        Err(format!(
            "{pointer:?} is not a JSON pointer (it must start with /)"
        ))
    }
}

/// The built-in extractor: where the path is, optional key prefix filter, and
/// optional pointers to the expected SHA-256 and size in a JSON value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolverConfig {
    /// Where the path is in a record.
    pub reference: RefSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Only keys with this prefix reference files (stripped for `key`).
    pub key_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// JSON pointer to the file's expected SHA-256 (hex) in the value.
    pub sha256_pointer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// JSON pointer to the file's expected size in the value.
    pub size_pointer: Option<String>,
}

impl ResolverConfig {
    /// A resolver reading the path from `reference`, for every key, with no
    /// expected size or hash.
    pub fn new(reference: RefSource) -> Self {
        Self {
            reference,
            key_prefix: None,
            sha256_pointer: None,
            size_pointer: None,
        }
    }

    /// Only keys starting with `prefix` reference files (stripped for `key`).
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = Some(prefix.into());
        self
    }

    /// The file's expected SHA-256 (hex) is at this JSON pointer in the value.
    pub fn with_sha256_pointer(mut self, pointer: impl Into<String>) -> Self {
        self.sha256_pointer = Some(pointer.into());
        self
    }

    /// The file's expected size is at this JSON pointer in the value.
    pub fn with_size_pointer(mut self, pointer: impl Into<String>) -> Self {
        self.size_pointer = Some(pointer.into());
        self
    }
}

impl ReferenceExtractor for ResolverConfig {
    fn extract(&self, key: &[u8], value: &[u8]) -> std::result::Result<Vec<Reference>, String> {
        let key = match &self.key_prefix {
            Some(prefix) => match key.strip_prefix(prefix.as_bytes()) {
                Some(rest) => rest,
                None => return Ok(Vec::new()),
            },
            None => key,
        };
        let json = match (&self.reference, &self.sha256_pointer, &self.size_pointer) {
            (RefSource::Json(_), _, _) | (_, Some(_), _) | (_, _, Some(_)) => {
                match serde_json::from_slice::<serde_json::Value>(value) {
                    Ok(json) => Some(json),
                    Err(_) if matches!(self.reference, RefSource::Json(_)) => return Ok(Vec::new()),
                    Err(_) => None,
                }
            }
            _ => None,
        };
        let path = match &self.reference {
            RefSource::Key => {
                String::from_utf8(key.to_vec()).map_err(|_| "key is not UTF-8".to_string())?
            }
            RefSource::Value => {
                String::from_utf8(value.to_vec()).map_err(|_| "value is not UTF-8".to_string())?
            }
            RefSource::Json(pointer) => match json.as_ref().and_then(|j| j.pointer(pointer)) {
                None | Some(serde_json::Value::Null) => return Ok(Vec::new()),
                Some(serde_json::Value::String(path)) => path.clone(),
                Some(other) => return Err(format!("{pointer} is not a string but {other}")),
            },
        };
        let lookup =
            |pointer: &Option<String>| pointer.as_ref().and_then(|p| json.as_ref()?.pointer(p));
        let sha256 = match lookup(&self.sha256_pointer) {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(hex)) => match Sha256::parse_any_case(hex) {
                Ok(sha256) => Some(sha256),
                Err(_) => return Err(format!("expected SHA-256 is not 64 hex digits: {hex:?}")),
            },
            Some(other) => return Err(format!("expected SHA-256 is not 64 hex digits: {other}")),
        };
        let size = match lookup(&self.size_pointer) {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
            Some(other) => {
                return Err(format!(
                    "expected size is not a non-negative integer: {other}"
                ))
            }
        };
        Ok(vec![Reference { path, sha256, size }])
    }

    fn config(&self) -> Option<ResolverConfig> {
        Some(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_resolver() -> ResolverConfig {
        ResolverConfig {
            reference: "json:/path".parse().unwrap(),
            key_prefix: Some("file:".into()),
            sha256_pointer: Some("/sha256".into()),
            size_pointer: Some("/size".into()),
        }
    }

    #[test]
    fn resolver_rules() {
        let r = json_resolver();
        let refs = r.extract(b"file:1", br#"{"path":"a/b.bin","size":3,"sha256":"AB"}"#);
        assert!(refs.unwrap_err().contains("SHA-256"));
        let sha = "ab".repeat(32);
        let value = format!(
            r#"{{"path":"a/b.bin","size":3,"sha256":"{}"}}"#,
            sha.to_uppercase()
        );
        let refs = r.extract(b"file:1", value.as_bytes()).unwrap();
        assert_eq!(
            refs,
            vec![Reference {
                path: "a/b.bin".into(),
                sha256: Some(sha.parse().unwrap()),
                size: Some(3)
            }]
        );
        assert!(
            r.extract(b"other:1", br#"{"path":"x"}"#)
                .unwrap()
                .is_empty(),
            "prefix filters"
        );
        assert!(
            r.extract(b"file:1", b"not json").unwrap().is_empty(),
            "non-JSON means no reference"
        );
        assert!(r
            .extract(b"file:1", br#"{"path":null}"#)
            .unwrap()
            .is_empty());
        assert!(r.extract(b"file:1", br#"{"other":1}"#).unwrap().is_empty());
        assert!(
            r.extract(b"file:1", br#"{"path":7}"#).is_err(),
            "non-string pointer is invalid"
        );
        let by_key = ResolverConfig {
            reference: RefSource::Key,
            key_prefix: Some("f/".into()),
            sha256_pointer: None,
            size_pointer: None,
        };
        assert_eq!(by_key.extract(b"f/x/y", b"").unwrap()[0].path, "x/y");
        assert!(by_key.extract(b"f/\xff", b"").is_err());
        assert!("json:path".parse::<RefSource>().is_err());
        assert_eq!(
            String::from("json:/a/b".parse::<RefSource>().unwrap()),
            "json:/a/b"
        );
    }
}
