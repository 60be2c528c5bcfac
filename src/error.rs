//! The library's error type: one enum whose variants callers can match on, each
//! carrying the context a user needs (which file, which object, which backup) and,
//! through [`Error::exit_code`], the CLI exit code it maps to. Messages never
//! contain credentials: store errors pass through [`redact`].
//!
//! Also [`Problem`]: one finding about one file or object (a reference that could
//! not be captured, a missing or corrupt object), built by one constructor per
//! [`ProblemKind`].

use std::path::PathBuf;

use serde::Serialize;

use crate::common::names::escape_controls;

/// Result alias used throughout rockup.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in rockup.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad arguments or an impossible combination of them (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// The database directory does not exist or holds no RocksDB database.
    #[error("no RocksDB database at {path}: {reason}; check the --db path")]
    DatabaseNotFound {
        /// The directory given.
        path: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// Another run's lock is in the way.
    #[error(
        "cannot {what}: {lock}; wait for it to finish, or, if that process is gone (killed, \
         host lost), remove the lock with `rockup unlock --repo URL` (--force for another \
         host's)"
    )]
    Locked {
        /// What this run tried to do.
        what: &'static str,
        /// The lock in the way, described.
        lock: String,
    },
    /// This host's clock is too far off the store's for time-based decisions.
    #[error(
        "this host's clock ({local}) is more than 5 minutes off the store's ({store}); \
         retention and grace periods follow the store's clock, so fix this host's time \
         (NTP) before pruning"
    )]
    ClockSkew {
        /// This host's time.
        local: chrono::DateTime<chrono::Utc>,
        /// The store's time.
        store: chrono::DateTime<chrono::Utc>,
    },
    /// This run's lock was removed while it ran (`rockup unlock --force`), so a
    /// prune may have deleted what it reuses: nothing was committed.
    #[error(
        "this backup's lock {lock} was removed while it ran (rockup unlock --force?), so a \
         prune may have deleted objects it reuses; nothing was committed: run the backup again"
    )]
    LockLost {
        /// The lock's key.
        lock: String,
    },
    /// The writer kept changing the database faster than a consistent
    /// out-of-process checkpoint could be taken.
    #[error(
        "no consistent checkpoint of {path} after {attempts} attempts (last: {reason}); the \
         process writing it deletes WAL files faster than rockup can pin them. Back it up from \
         inside the application (library API, rockup::backup_live) or from a checkpoint the \
         application makes (--checkpoint DIR)"
    )]
    CheckpointUnstable {
        /// The database directory.
        path: PathBuf,
        /// Attempts made.
        attempts: usize,
        /// Why the last attempt was not consistent.
        reason: String,
    },
    /// A column family needs a comparator the CLI cannot provide.
    #[error(
        "column family {column_family:?} of {path} uses comparator {comparator:?}, which the \
         rockup CLI cannot provide; back it up with the library API (rockup::backup_live or \
         Source::Checkpoint with the application's own rocksdb::Options)"
    )]
    UnsupportedComparator {
        /// The database directory.
        path: PathBuf,
        /// The column family using it.
        column_family: String,
        /// The comparator's name.
        comparator: String,
    },
    /// A database layout rockup does not support.
    #[error("database at {path} is not supported: {reason}")]
    Unsupported {
        /// The database directory.
        path: PathBuf,
        /// What is not supported, and the alternative.
        reason: String,
    },
    /// RocksDB refused an operation.
    #[error("{what}: {source}")]
    Rocks {
        /// The operation.
        what: String,
        /// RocksDB's error.
        source: rocksdb::Error,
    },
    /// A local file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The object store failed.
    #[error("{url}: {message}")]
    Store {
        /// The repository URL, redacted.
        url: String,
        /// What kind of failure the store reported.
        kind: StoreErrorKind,
        /// One line, redacted, with the likely fix.
        message: String,
    },
    /// A manifest (or part, or repository marker) is unreadable, tampered or unsupported.
    #[error("{key}: {reason}")]
    Manifest {
        /// The object key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A write-once object (a manifest, the marker) already holds other content;
    /// it was not overwritten.
    #[error("{key}: {reason}")]
    Conflict {
        /// The object key.
        key: String,
        /// What was found there.
        reason: String,
    },
    /// Content does not hash to the SHA-256 it was expected to have.
    #[error("{path}: content hashes to {actual}, not the expected SHA-256 {expected}")]
    HashMismatch {
        /// The file read.
        path: PathBuf,
        /// The hash it should have had.
        expected: String,
        /// The hash it had.
        actual: String,
    },
    /// No backup with that id (or no backup at all for `latest`).
    #[error("backup {0} not found in the repository; `rockup list` shows the backups it holds")]
    BackupNotFound(String),
    /// Restore target is not empty.
    #[error("{path} is not empty; restore only into a missing or empty directory")]
    TargetNotEmpty {
        /// The target directory.
        path: PathBuf,
    },
    /// Integrity or reference problems were found (exit code 3).
    #[error("{summary}")]
    Problems {
        /// One line about all of them.
        summary: String,
        /// Each problem.
        problems: Vec<Problem>,
    },
    /// Stopped by a signal.
    #[error("interrupted by {0}")]
    Interrupted(&'static str),
    /// A background task of rockup's panicked or was cancelled (a bug).
    #[error("internal task failed: {0}")]
    Task(String),
}

/// What kind of failure an object store reported, as far as it said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The object (or bucket) does not exist.
    NotFound,
    /// A conditional create found the object present.
    AlreadyExists,
    /// A precondition (such as `If-Match`) failed.
    Precondition,
    /// The store or the server does not implement the operation.
    NotImplemented,
    /// The credentials were rejected.
    Unauthenticated,
    /// The credentials lack permission.
    PermissionDenied,
    /// Anything else: network errors, server errors after retries, bad responses.
    Other,
}

impl StoreErrorKind {
    /// The kind of an `object_store` error.
    pub(crate) fn of(err: &object_store::Error) -> Self {
        use object_store::Error as E;
        match err {
            E::NotFound { .. } => Self::NotFound,
            E::AlreadyExists { .. } => Self::AlreadyExists,
            E::Precondition { .. } => Self::Precondition,
            E::NotImplemented { .. } | E::NotSupported { .. } => Self::NotImplemented,
            E::Unauthenticated { .. } => Self::Unauthenticated,
            E::PermissionDenied { .. } => Self::PermissionDenied,
            _ => Self::Other,
        }
    }
}

impl Error {
    /// The CLI exit code for this error: 2 usage, 3 problems found, 130
    /// interrupted by SIGINT, 143 by SIGTERM (also SIGHUP, SIGQUIT), 1 for
    /// everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => 2,
            Error::Problems { .. } => 3,
            Error::Interrupted("SIGINT") => 130,
            Error::Interrupted(_) => 143,
            _ => 1,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn rocks(what: impl Into<String>, source: rocksdb::Error) -> Self {
        Error::Rocks {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn manifest(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Manifest {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(err: tokio::task::JoinError) -> Self {
        Error::Task(err.to_string())
    }
}

/// What kind of problem a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// A record references a file that does not exist (or vanished before it was pinned).
    Missing,
    /// A reference that is not a safe relative path to a regular file under the root.
    Invalid,
    /// The file's size or hash contradicts what the record says it should be.
    Mismatch,
    /// The file changed while it was being read.
    Changed,
    /// An object in the repository is missing.
    MissingObject,
    /// An object in the repository has the wrong size or hash.
    CorruptObject,
}

/// One problem, named by path (and record key where a record is involved).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Problem {
    /// What kind of problem.
    pub kind: ProblemKind,
    /// Relative path of the external file, or object key / file name.
    pub path: String,
    /// Key of the record that references it (lossless: UTF-8 or `0x…` hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_key: Option<String>,
    /// What exactly is wrong.
    pub detail: String,
}

impl Problem {
    fn new(kind: ProblemKind, path: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            kind,
            path: path.into(),
            record_key: None,
            detail: detail.into(),
        }
    }

    /// A referenced file that does not exist (or vanished before it was captured).
    pub fn missing(path: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(ProblemKind::Missing, path, detail)
    }

    /// A reference that cannot be valid.
    pub fn invalid(path: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(ProblemKind::Invalid, path, detail)
    }

    /// A file whose size or hash contradicts its record.
    pub fn mismatch(path: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(ProblemKind::Mismatch, path, detail)
    }

    /// A file that changed while it was read.
    pub fn changed(path: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(ProblemKind::Changed, path, detail)
    }

    /// A repository object that is missing.
    pub fn missing_object(key: impl Into<String>) -> Self {
        Self::new(ProblemKind::MissingObject, key, "object is missing")
    }

    /// A repository object (or restored result) with the wrong size or content.
    pub fn corrupt_object(key: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(ProblemKind::CorruptObject, key, detail)
    }

    /// The same problem, naming the record that references the file.
    pub fn in_record(mut self, record_key: impl Into<String>) -> Self {
        self.record_key = Some(record_key.into());
        self
    }
}

/// Shown to humans: paths, keys and details come from records or from a
/// repository, so control characters are escaped.
impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} {}", self.kind, escape_controls(&self.path))?;
        if let Some(key) = &self.record_key {
            write!(f, " (record {})", escape_controls(key))?;
        }
        write!(f, ": {}", escape_controls(&self.detail))
    }
}

/// Removes query strings (SAS tokens, presigned signatures) and user info
/// (`scheme://user:password@`) from text that may contain URLs, so store
/// errors can be shown without leaking credentials.
pub(crate) fn redact(text: &str) -> String {
    redact_query_strings(&redact_userinfo(text))
}

/// `scheme://user:password@host` → `scheme://<redacted>@host`.
fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let authority_end = after
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace())
            .unwrap_or(after.len());
        match after[..authority_end].rfind('@') {
            Some(userinfo_end) => {
                out.push_str("<redacted>");
                rest = &after[userinfo_end..];
            }
            None => rest = after,
        }
    }
    out.push_str(rest);
    out
}

fn redact_query_strings(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word_start = 0; // where the current whitespace-separated word begins in `out`
    let mut in_query = false;
    for c in text.chars() {
        if in_query {
            if c.is_whitespace() || c == '"' || c == ')' || c == ',' {
                in_query = false;
            } else {
                continue;
            }
        }
        if c == '?' && out[word_start..].contains("://") {
            out.push_str("?<redacted>");
            in_query = true;
            continue;
        }
        if c.is_whitespace() {
            word_start = out.len() + c.len_utf8();
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_strips_query_strings() {
        let text = "error sending request for url (https://acct.blob.core.windows.net/c/x?sv=2020&sig=SECRET): timeout";
        let redacted = redact(text);
        assert!(!redacted.contains("SECRET"), "{redacted}");
        assert!(redacted.contains("/c/x?<redacted>): timeout"), "{redacted}");
        assert_eq!(redact("is this fine?"), "is this fine?");
        assert_eq!(
            redact("GET http://h/b?list-type=2 - <?xml version"),
            "GET http://h/b?<redacted> - <?xml version"
        );
        assert_eq!(
            redact("s3://AKIA:SECRET@minio:9000/bucket and https://u@h/p"),
            "s3://<redacted>@minio:9000/bucket and https://<redacted>@h/p"
        );
        assert_eq!(redact("mail me@example.com"), "mail me@example.com");
    }

    #[test]
    fn problems_escape_control_characters() {
        let problem = Problem::missing("a\x1b]0;owned\x07", "x").in_record("k\r");
        let shown = problem.to_string();
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
    }

    #[test]
    fn problems_name_their_record() {
        let problem = Problem::missing("a/b", "file does not exist").in_record("file:1");
        assert_eq!(problem.kind, ProblemKind::Missing);
        assert_eq!(
            problem.to_string(),
            "Missing a/b (record file:1): file does not exist"
        );
    }
}
