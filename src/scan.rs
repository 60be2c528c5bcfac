//! Records → external files. A [`ReferenceExtractor`] maps each record of the
//! configured column family to the files it references ([`ResolverConfig`] is the
//! built-in one the CLI configures); each reference is checked against the blob
//! root's rules and **pinned at once** — hard-linked into rockup's work directory,
//! or, where a link is impossible (another filesystem, EPERM), read later with a
//! before/after size+mtime check. What cannot be captured becomes a [`Problem`]
//! naming the path and the record key, never a silent skip.
//!
//! Out of process, where nothing can hold the application's deletions back,
//! [`Prelinks`] hard-link the whole blob tree into the work directory just before
//! and just after the backup's point in time is fixed (before the slow part:
//! opening the checkpoint and reading its records); a referenced file deleted
//! after that is pinned from its pre-link.
//!
//! The [`DeletionGuard`] lets an application that backs itself up in-process defer
//! its removals of external files while a backup is between its checkpoint and
//! the end of pinning, which makes the captured file set exact.

use std::collections::HashSet;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Problem, ProblemKind, Result};

/// A reference a record makes to an external file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Path relative to the blob root, as the record states it.
    pub path: String,
    /// SHA-256 (hex) the record says the file has, if it says.
    pub sha256: Option<String>,
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
pub fn parse_pointer(pointer: &str) -> std::result::Result<String, String> {
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
    pub reference: RefSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256_pointer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_pointer: Option<String>,
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
            Some(serde_json::Value::String(hex))
                if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                Some(hex.to_ascii_lowercase())
            }
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

/// Which external files a backup captures: the root they live under, the column
/// family whose records reference them, and how to read the references.
#[derive(Clone)]
pub struct ExternalFiles {
    pub blob_root: PathBuf,
    pub column_family: String,
    pub extractor: Arc<dyn ReferenceExtractor>,
}

/// What the manifest records about external files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalInfo {
    pub column_family: String,
    /// `None` for an application's own extractor.
    pub resolver: Option<ResolverConfig>,
}

impl ExternalFiles {
    /// External files found with the built-in resolver.
    pub fn new(
        blob_root: impl Into<PathBuf>,
        column_family: impl Into<String>,
        resolver: ResolverConfig,
    ) -> Self {
        Self {
            blob_root: blob_root.into(),
            column_family: column_family.into(),
            extractor: Arc::new(resolver),
        }
    }

    /// What the manifest records.
    pub fn info(&self) -> ExternalInfo {
        ExternalInfo {
            column_family: self.column_family.clone(),
            resolver: self.extractor.config(),
        }
    }
}

/// Normalizes a reference path: relative, UTF-8, `/`-separated, without `.`,
/// empty components or `..`. Absolute paths and `..` are invalid references.
pub fn normalize_relative_path(path: &str) -> std::result::Result<String, String> {
    if path.starts_with('/') {
        return Err("absolute path".into());
    }
    if path.contains('\0') {
        return Err("path contains a NUL byte".into());
    }
    let mut parts = Vec::new();
    for component in path.split('/') {
        match component {
            "" | "." => {}
            ".." => return Err("path contains ..".into()),
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err("empty path".into());
    }
    Ok(parts.join("/"))
}

/// A record key shown to humans, losslessly: UTF-8 text, or `0x` + hex.
pub fn display_key(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(text) if !text.starts_with("0x") && !text.chars().any(char::is_control) => {
            text.to_string()
        }
        _ => format!("0x{}", hex::encode(key)),
    }
}

/// An external file captured at the backup's point in time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pinned {
    /// Normalized path relative to the blob root.
    pub path: String,
    /// Where to read it: the pin (hard link) or, unlinked, the live file.
    pub read_from: PathBuf,
    pub size: u64,
    pub mtime_ns: i64,
    pub mode: u32,
    /// What the record says the file should hash to.
    pub expected_sha256: Option<String>,
    pub record_key: String,
}

impl Pinned {
    /// A [`Problem`] about this file.
    pub fn problem(&self, kind: ProblemKind, detail: impl Into<String>) -> Problem {
        Problem {
            kind,
            path: self.path.clone(),
            record_key: Some(self.record_key.clone()),
            detail: detail.into(),
        }
    }
}

/// Size, mtime and mode of a file, as compared before and after reading it.
pub fn file_stamp(meta: &std::fs::Metadata) -> (u64, i64, u32) {
    (
        meta.len(),
        meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        meta.mode() & 0o7777,
    )
}

/// Pins referenced files into a directory on the blob root's filesystem.
pub struct Pinner {
    root: PathBuf,
    pins: PathBuf,
    link: bool,
    seen_unlinked: HashSet<String>,
    prelinks: Option<Prelinks>,
    /// Files pinned from their pre-link because the live file was gone.
    pub rescued: u64,
}

/// What became of one reference.
pub enum Pin {
    /// Newly captured.
    Captured(Pinned),
    /// Already captured for an earlier record (and nothing new to check).
    Duplicate,
    /// Could not be captured.
    Problem(Problem),
}

impl Pinner {
    /// A pinner for files under `root`, linking into `pins` (created) when both are
    /// on one filesystem.
    pub fn new(root: &Path, pins: PathBuf) -> Result<Self> {
        let root = root.canonicalize().map_err(|e| Error::io(root, e))?;
        std::fs::create_dir_all(&pins).map_err(|e| Error::io(&pins, e))?;
        let root_dev = std::fs::metadata(&root)
            .map_err(|e| Error::io(&root, e))?
            .dev();
        let pins_dev = std::fs::metadata(&pins)
            .map_err(|e| Error::io(&pins, e))?
            .dev();
        Ok(Self {
            root,
            pins,
            link: root_dev == pins_dev,
            seen_unlinked: HashSet::new(),
            prelinks: None,
            rescued: 0,
        })
    }

    /// Resolves references from `prelinks` first, then from the live tree.
    pub fn with_prelinks(mut self, prelinks: Option<Prelinks>) -> Self {
        self.prelinks = prelinks.filter(|p| p.files > 0);
        self
    }

    /// The pre-link of `path`, if the tree had a regular file there.
    fn prelinked(&self, path: &str) -> Option<PathBuf> {
        let link = self.prelinks.as_ref()?.dir.join(path);
        std::fs::symlink_metadata(&link)
            .is_ok_and(|m| m.is_file())
            .then_some(link)
    }

    /// Checks one reference against the rules and pins the file.
    pub fn pin(&mut self, record_key: &[u8], reference: Reference) -> Pin {
        let record_key = display_key(record_key);
        let problem = |kind, path: &str, detail: String| {
            Pin::Problem(Problem {
                kind,
                path: path.to_string(),
                record_key: Some(record_key.clone()),
                detail,
            })
        };
        let path = match normalize_relative_path(&reference.path) {
            Ok(path) => path,
            Err(reason) => return problem(ProblemKind::Invalid, &reference.path, reason),
        };
        // A pre-link holds the file as it was at the point in time (regular files
        // only, reached without symlinks); the live tree may have lost it since.
        let real = if let Some(link) = self.prelinked(&path) {
            if std::fs::symlink_metadata(self.root.join(&path)).is_err() {
                self.rescued += 1;
            }
            link
        } else {
            match self.root.join(&path).canonicalize() {
                Ok(real) if real.starts_with(&self.root) => real,
                Ok(_) => {
                    return problem(
                        ProblemKind::Invalid,
                        &path,
                        "resolves outside the blob root (symlink)".into(),
                    )
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return problem(ProblemKind::Missing, &path, "file does not exist".into())
                }
                Err(e) => return problem(ProblemKind::Missing, &path, e.to_string()),
            }
        };
        let read_from = if self.link {
            let pin = self
                .pins
                .join(&hex::encode(Sha256::digest(path.as_bytes()))[..40]);
            match std::fs::hard_link(&real, &pin) {
                Ok(()) => pin,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return self.duplicate(record_key, path, pin, reference)
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return problem(
                        ProblemKind::Missing,
                        &path,
                        "deleted before it could be pinned".into(),
                    )
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::EXDEV | libc::EPERM)) => {
                    self.link = false;
                    return self.pin_unlinked(record_key.clone(), path, real, reference);
                }
                Err(e) => return problem(ProblemKind::Missing, &path, format!("cannot pin: {e}")),
            }
        } else {
            return self.pin_unlinked(record_key.clone(), path, real, reference);
        };
        self.captured(record_key, path, read_from, reference)
    }

    fn pin_unlinked(
        &mut self,
        record_key: String,
        path: String,
        real: PathBuf,
        reference: Reference,
    ) -> Pin {
        if !self.seen_unlinked.insert(path.clone()) {
            return self.duplicate(record_key, path, real, reference);
        }
        self.captured(record_key, path, real, reference)
    }

    /// A file an earlier record already referenced: nothing more to capture,
    /// unless this record states a size or hash of its own to check.
    fn duplicate(
        &self,
        record_key: String,
        path: String,
        read_from: PathBuf,
        reference: Reference,
    ) -> Pin {
        if reference.sha256.is_none() && reference.size.is_none() {
            return Pin::Duplicate;
        }
        self.captured(record_key, path, read_from, reference)
    }

    fn captured(
        &self,
        record_key: String,
        path: String,
        read_from: PathBuf,
        reference: Reference,
    ) -> Pin {
        let problem = |kind, detail: String| {
            Pin::Problem(Problem {
                kind,
                path: path.clone(),
                record_key: Some(record_key.clone()),
                detail,
            })
        };
        let meta = match std::fs::symlink_metadata(&read_from) {
            Ok(meta) => meta,
            Err(e) => return problem(ProblemKind::Missing, format!("vanished while pinning: {e}")),
        };
        if !meta.is_file() {
            return problem(ProblemKind::Invalid, "not a regular file".into());
        }
        let (size, mtime_ns, mode) = file_stamp(&meta);
        if let Some(expected) = reference.size {
            if expected != size {
                return problem(
                    ProblemKind::Mismatch,
                    format!("record says {expected} bytes, file has {size}"),
                );
            }
        }
        Pin::Captured(Pinned {
            path,
            read_from,
            size,
            mtime_ns,
            mode,
            expected_sha256: reference.sha256,
            record_key,
        })
    }
}

/// The blob tree hard-linked into the work directory at one moment: every
/// regular file, reached without following symlinks.
pub struct Prelinks {
    dir: PathBuf,
    /// Files linked.
    pub files: u64,
    /// Links proved impossible (another filesystem, EPERM): nothing more is tried.
    unlinkable: bool,
}

impl Prelinks {
    /// An empty set of pre-links in `dir` (created).
    pub fn new(dir: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(Self {
            dir,
            files: 0,
            unlinkable: false,
        })
    }

    /// Links every regular file under `root` not linked yet. Files that vanish
    /// during the walk are skipped; when links are impossible (another
    /// filesystem, EPERM) nothing is linked and references resolve from the live
    /// tree alone.
    pub fn link_tree(&mut self, root: &Path) -> Result<()> {
        if self.unlinkable {
            return Ok(());
        }
        for entry in walkdir::WalkDir::new(root).min_depth(1) {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e)
                    if e.io_error()
                        .is_some_and(|e| e.kind() == io::ErrorKind::NotFound) =>
                {
                    continue
                }
                Err(e) => return Err(Error::io(root, io::Error::other(e))),
            };
            let rel = entry.path().strip_prefix(root).expect("under the root");
            let target = self.dir.join(rel);
            let made = if entry.file_type().is_dir() {
                std::fs::create_dir_all(&target)
            } else if entry.file_type().is_file() {
                std::fs::hard_link(entry.path(), &target)
            } else {
                continue;
            };
            match made {
                Ok(()) => self.files += u64::from(entry.file_type().is_file()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EXDEV | libc::EPERM)) => {
                    tracing::warn!(root = %root.display(), error = %e, "cannot hard-link the blob tree into the work directory (put --work-dir on the blob root's filesystem); files deleted during the backup may be missed");
                    self.files = 0;
                    self.unlinkable = true;
                    return Ok(());
                }
                Err(e) => return Err(Error::io(&target, e)),
            }
        }
        Ok(())
    }
}

/// Iterates the external-files column family of an open (checkpoint) database and
/// hands every extracted reference, or problem, to `each`; stops early when `each`
/// returns false. Returns the number of records read.
pub fn for_each_reference(
    db: &rocksdb::DB,
    files: &ExternalFiles,
    mut each: impl FnMut(&[u8], std::result::Result<Reference, Problem>) -> bool,
) -> Result<u64> {
    let cf = db.cf_handle(&files.column_family).ok_or_else(|| {
        Error::Usage(format!(
            "column family {:?} (--blob-cf) does not exist in the database",
            files.column_family
        ))
    })?;
    let mut iter = db.raw_iterator_cf(&cf);
    iter.seek_to_first();
    let mut records = 0;
    while iter.valid() {
        let (key, value) = (
            iter.key().unwrap_or_default(),
            iter.value().unwrap_or_default(),
        );
        records += 1;
        let outcome = match files.extractor.extract(key, value) {
            Ok(refs) => refs.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(reason) => vec![Err(Problem {
                kind: ProblemKind::Invalid,
                path: String::new(),
                record_key: Some(display_key(key)),
                detail: reason,
            })],
        };
        for item in outcome {
            if !each(key, item) {
                return Ok(records);
            }
        }
        iter.next();
    }
    iter.status().map_err(|e| {
        Error::rocks(
            format!("reading column family {:?}", files.column_family),
            e,
        )
    })?;
    Ok(records)
}

/// Lets an application defer removals of external files while a backup pins them.
///
/// Route every removal of an external file through [`DeletionGuard::remove`]. While
/// a backup holds the guard (from just before its checkpoint until every
/// referenced file is pinned), removals are recorded and carried out when the
/// backup lets go; otherwise they happen at once. A file "removed" during a backup
/// is therefore still there for the backup to pin, and gone right after.
#[derive(Clone, Default)]
pub struct DeletionGuard {
    state: Arc<Mutex<GuardState>>,
}

#[derive(Default)]
struct GuardState {
    holds: usize,
    deferred: Vec<PathBuf>,
}

impl DeletionGuard {
    /// A guard no backup holds yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Removes `path` now, or when the backup that holds the guard lets go.
    pub fn remove(&self, path: impl AsRef<Path>) -> io::Result<()> {
        let path = path.as_ref();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.holds == 0 {
            return std::fs::remove_file(path);
        }
        std::fs::symlink_metadata(path)?;
        state.deferred.push(path.to_path_buf());
        Ok(())
    }

    /// Number of removals waiting for a backup to let go.
    pub fn deferred(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .deferred
            .len()
    }

    pub(crate) fn hold(&self) -> GuardHold {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).holds += 1;
        GuardHold {
            guard: self.clone(),
        }
    }
}

/// A backup's hold on a [`DeletionGuard`]; dropping it carries out deferred removals.
pub(crate) struct GuardHold {
    guard: DeletionGuard,
}

impl Drop for GuardHold {
    fn drop(&mut self) {
        let mut state = self.guard.state.lock().unwrap_or_else(|e| e.into_inner());
        state.holds -= 1;
        if state.holds == 0 {
            for path in std::mem::take(&mut state.deferred) {
                if let Err(e) = std::fs::remove_file(&path) {
                    if e.kind() != io::ErrorKind::NotFound {
                        tracing::warn!(path = %path.display(), error = %e, "deferred removal failed");
                    }
                }
            }
        }
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
                sha256: Some(sha),
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

    #[test]
    fn paths_are_normalized_and_confined() {
        assert_eq!(normalize_relative_path("./a//b/./c").unwrap(), "a/b/c");
        for bad in ["/etc/passwd", "a/../../b", "..", "", "./", "a/\0"] {
            assert!(normalize_relative_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pinning_rejects_symlink_escapes_and_non_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(dir.path().join("secret"), b"s").unwrap();
        std::fs::write(root.join("ok.bin"), b"data").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("escape")).unwrap();
        let mut pinner = Pinner::new(&root, dir.path().join("pins")).unwrap();
        let reference = |p: &str| Reference {
            path: p.into(),
            sha256: None,
            size: None,
        };
        let kind = |pin: Pin| match pin {
            Pin::Problem(p) => Some(p.kind),
            _ => None,
        };
        assert_eq!(
            kind(pinner.pin(b"k", reference("escape"))),
            Some(ProblemKind::Invalid)
        );
        assert_eq!(
            kind(pinner.pin(b"k", reference("sub"))),
            Some(ProblemKind::Invalid)
        );
        assert_eq!(
            kind(pinner.pin(b"k", reference("nope"))),
            Some(ProblemKind::Missing)
        );
        assert_eq!(
            kind(pinner.pin(b"k", reference("../secret"))),
            Some(ProblemKind::Invalid)
        );
        match pinner.pin(b"k", reference("./ok.bin")) {
            Pin::Captured(p) => {
                assert_eq!(p.path, "ok.bin");
                assert_eq!(std::fs::read(&p.read_from).unwrap(), b"data");
            }
            _ => panic!("ok.bin not captured"),
        }
        assert!(matches!(
            pinner.pin(b"k2", reference("ok.bin")),
            Pin::Duplicate
        ));
        let checked_again = Reference {
            path: "ok.bin".into(),
            sha256: None,
            size: Some(4),
        };
        assert!(
            matches!(pinner.pin(b"k3", checked_again), Pin::Captured(_)),
            "a duplicate with its own expectations is checked"
        );
        let wrong_size = Reference {
            path: "ok.bin".into(),
            sha256: None,
            size: Some(9),
        };
        let mut fresh = Pinner::new(&root, dir.path().join("pins2")).unwrap();
        assert_eq!(
            kind(fresh.pin(b"k", wrong_size)),
            Some(ProblemKind::Mismatch)
        );
    }

    #[test]
    fn guard_defers_removals_while_held() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"a").unwrap();
        std::fs::write(&b, b"b").unwrap();
        let guard = DeletionGuard::new();
        guard.remove(&a).unwrap();
        assert!(!a.exists());
        let hold = guard.hold();
        guard.remove(&b).unwrap();
        assert!(b.exists(), "deferred while held");
        assert_eq!(guard.deferred(), 1);
        assert!(
            guard.remove(&a).is_err(),
            "removing a missing file still fails"
        );
        drop(hold);
        assert!(!b.exists(), "carried out on release");
    }

    #[test]
    fn keys_display_losslessly() {
        assert_eq!(display_key(b"file:1"), "file:1");
        assert_eq!(display_key(b"\x00\xff"), "0x00ff");
        assert_eq!(display_key(b"0x12"), "0x30783132");
    }
}
