//! The library's error type: one enum whose variants callers can match on, each
//! carrying the context a user needs (which file, which object, which backup) and,
//! through [`Error::exit_code`], the CLI exit code it maps to. Messages never
//! contain credentials: store errors pass through [`redact`], and so does
//! object_store's error behind them ([`StoreSource`]) wherever it is shown.
//!
//! Also [`Problem`]: one finding about one file or object (a reference that could
//! not be captured, a missing, corrupt or unreadable object), built by one
//! constructor per [`ProblemKind`]. The bottom of the crate, beside `digest`:
//! it imports nothing else of rockup's.

use std::borrow::Cow;
use std::path::PathBuf;

use serde::Serialize;

use crate::digest::Sha256;

/// Result alias used throughout rockup.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in rockup. [`Error::exit_code`] maps it to
/// the CLI's exit code; [`Error::retryable`] says whether the same call may
/// succeed when made again later.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    /// The repository does not exist, or is not a rockup repository (exit
    /// code 6).
    #[error("{0} is not a rockup repository; check --repo, or create one with `rockup init`")]
    RepositoryNotFound(String),
    /// Another run's lock is in the way (exit code 7).
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
    /// This run's lock was removed while it ran (`rockup unlock --force`, or a
    /// prune that found its lease run out), so a prune may have deleted what it
    /// reuses; `outcome` says what became of its commit.
    #[error("this {operation}'s lock {lock} {outcome}")]
    LockLost {
        /// What held the lock: `backup`, `copy`, `prune`.
        operation: &'static str,
        /// The lock's key.
        lock: String,
        /// Whether anything had been committed, and what became of it.
        outcome: LockLoss,
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
        /// What kind of failure the store reported; [`StoreErrorKind::Unavailable`]
        /// is worth retrying.
        kind: StoreErrorKind,
        /// One line, redacted, with the likely fix.
        message: String,
        /// object_store's error, where one was the cause.
        #[source]
        source: Option<StoreSource>,
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
        expected: Sha256,
        /// The hash it had.
        actual: Sha256,
    },
    /// The previous backup of the source could not be read because the store
    /// failed (not because it is damaged: a damaged one is passed over).
    /// Without it every file would be sent again, so the backup stopped.
    #[error(
        "could not read the previous backup {backup}, which tells what the repository already \
         holds ({error}); without it every file would be sent again, so nothing was backed \
         up: try again once the store answers"
    )]
    PreviousUnreadable {
        /// The previous backup's id.
        backup: String,
        /// Why it could not be read (a store error: shown in the message).
        error: Box<Error>,
    },
    /// The repository is encrypted and no key was given.
    #[error(
        "{repo} is encrypted: give its key — a passphrase (ROCKUP_PASSWORD_FILE, \
         ROCKUP_PASSWORD_COMMAND, ROCKUP_PASSWORD, or a prompt on a terminal), an identity \
         (--identity FILE, ROCKUP_IDENTITY_FILE) or, to back up only, a write key \
         (--write-key FILE, ROCKUP_WRITE_KEY_FILE)"
    )]
    KeyNeeded {
        /// The repository URL, redacted.
        repo: String,
    },
    /// The key given opens no key slot of the repository.
    #[error("{repo}: {reason}; nothing was read or written")]
    WrongKey {
        /// The repository URL, redacted.
        repo: String,
        /// Which key did not open what.
        reason: String,
    },
    /// The operation reads what only the full key opens, and this host holds
    /// a write key only.
    #[error(
        "{operation} needs the repository's full key (a passphrase or an identity); this host \
         holds a write key, which backs up but never reads back"
    )]
    WriteOnly {
        /// What was asked.
        operation: &'static str,
    },
    /// No backup with that id (or no backup at all for `latest`).
    #[error("backup {0} not found in the repository; `rockup list` shows the backups it holds")]
    BackupNotFound(String),
    /// The backup holds no external file at that path.
    #[error("backup {backup} holds no external file at {path}; `rockup ls {backup}` lists what it holds")]
    FileNotInBackup {
        /// The backup looked in.
        backup: String,
        /// The path asked for.
        path: String,
    },
    /// A partial restore would replace an existing file.
    #[error("{path} exists; nothing was restored: pass --overwrite to replace existing files, or restore into another --blob-root")]
    TargetExists {
        /// The existing file.
        path: PathBuf,
    },
    /// Restore target is not empty.
    #[error("{path} is not empty; restore only into a missing or empty directory")]
    TargetNotEmpty {
        /// The target directory.
        path: PathBuf,
    },
    /// Integrity or reference problems were found (exit code 3; 4 when every
    /// one is an object that could not be read).
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

/// What became of a locked run when its lock was found removed (or could not
/// be checked).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockLoss {
    /// A writer found it before its commit: nothing was committed.
    BeforeCommit,
    /// A writer found it right after committing this manifest, which was
    /// deleted again.
    Withdrawn(String),
    /// A writer found it right after committing this manifest, which could
    /// not be deleted (why).
    NotWithdrawn(String, String),
    /// A writer could not check it after committing this manifest.
    Unchecked {
        /// The manifest committed.
        key: String,
        /// Why the lock could not be checked.
        why: String,
        /// Whether the manifest was deleted again.
        withdrawn: bool,
    },
    /// A prune found it before a batch of deletions.
    BeforeDeleting,
}

/// Why a lock found gone matters to a writer.
const REMOVED_UNDER_A_WRITER: &str = "was removed while it ran (rockup unlock --force, or a \
     prune that found its lease run out), so a prune may have deleted objects it reuses";

impl std::fmt::Display for LockLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let removed = REMOVED_UNDER_A_WRITER;
        match self {
            LockLoss::BeforeCommit => {
                write!(f, "{removed}; nothing was committed: run it again")
            }
            LockLoss::Withdrawn(key) => write!(
                f,
                "{removed}; {key} had just been committed and was withdrawn (deleted) again: \
                 run it again"
            ),
            LockLoss::NotWithdrawn(key, why) => write!(
                f,
                "{removed}; {key} had just been committed and could not be withdrawn ({why}): \
                 delete it, or `rockup verify` names what a prune deleted"
            ),
            LockLoss::Unchecked {
                key,
                why,
                withdrawn: true,
            } => write!(
                f,
                "could not be checked after {key} was committed ({why}); the manifest was \
                 withdrawn (deleted) again: run it again"
            ),
            LockLoss::Unchecked { key, why, .. } => write!(
                f,
                "could not be checked after {key} was committed ({why}), nor could the \
                 manifest be withdrawn: `rockup verify` names what a prune may have deleted"
            ),
            LockLoss::BeforeDeleting => write!(
                f,
                "was removed while it ran (rockup unlock --force), so a backup may have \
                 started beside it; it stopped before deleting more (what it deleted was \
                 unreferenced while it held the lock): run it again"
            ),
        }
    }
}

/// object_store's error behind a store error, kept for callers to inspect
/// ([`StoreSource::error`]) and shown — also by printers of error chains —
/// only redacted: request URLs may carry signatures.
pub struct StoreSource(Box<object_store::Error>);

impl StoreSource {
    pub(crate) fn new(error: object_store::Error) -> Self {
        Self(Box::new(error))
    }

    /// The error object_store returned.
    pub fn error(&self) -> &object_store::Error {
        &self.0
    }
}

impl std::fmt::Display for StoreSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact(&self.0.to_string()))
    }
}

impl std::fmt::Debug for StoreSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreSource({self})")
    }
}

/// The end of the chain that printers walk: what lies beneath is in
/// [`StoreSource::error`], unredacted.
impl std::error::Error for StoreSource {}

/// What kind of failure an object store reported, decided from object_store's
/// error kinds, the HTTP status of the failed request and the transport error
/// beneath it — never from message text.
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
    /// The store failed for a while — server errors (5xx), throttling (429,
    /// 503), timeouts, dropped or refused connections, answers cut off — and
    /// went on failing through object_store's retries: trying again later may
    /// succeed.
    Unavailable,
    /// Anything else (a request the server refuses, an error nothing tells
    /// the cause of): trying again will not help.
    Other,
}

impl StoreErrorKind {
    /// Whether trying again later may succeed.
    pub fn is_transient(self) -> bool {
        self == Self::Unavailable
    }
}

impl Error {
    /// The CLI exit code for this error: 2 usage, 3 problems found (damage,
    /// references not captured), 4 objects that could not be read and nothing
    /// else (verify again later), 5 no key, a wrong key, or only a write key
    /// where the full key is needed, 6 no repository there, 7 locked by
    /// another run, 130 interrupted by SIGINT, 143 by
    /// SIGTERM (also SIGHUP, SIGQUIT), 1 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => 2,
            Error::RepositoryNotFound(_) => 6,
            Error::Locked { .. } => 7,
            Error::KeyNeeded { .. } | Error::WrongKey { .. } | Error::WriteOnly { .. } => 5,
            Error::Problems { problems, .. } if all_unreadable(problems) => 4,
            Error::Problems { .. } => 3,
            Error::Interrupted("SIGINT") => 130,
            Error::Interrupted(_) => 143,
            _ => 1,
        }
    }

    /// Whether the same call may succeed when made again later, unchanged:
    /// the store was unavailable, another run held a lock (or removed this
    /// run's), the writer outran the checkpoint, or the only problems were
    /// objects that could not be read.
    pub fn retryable(&self) -> bool {
        match self {
            Error::Store { kind, .. } => kind.is_transient(),
            Error::Locked { .. } | Error::LockLost { .. } | Error::CheckpointUnstable { .. } => {
                true
            }
            Error::Problems { problems, .. } => all_unreadable(problems),
            Error::PreviousUnreadable { error, .. } => error.retryable(),
            _ => false,
        }
    }

    /// What this error, met reading an object, says about the object.
    pub(crate) fn read_failure(&self) -> ReadFailure {
        match self {
            Error::Manifest { .. } | Error::BackupNotFound(_) => ReadFailure::Damaged,
            Error::Store { kind, .. } if *kind == StoreErrorKind::NotFound => ReadFailure::Damaged,
            Error::Store { kind, .. } if kind.is_transient() => ReadFailure::Unreadable,
            _ => ReadFailure::Other,
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

/// What a failed read says about the object read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadFailure {
    /// Missing, or its bytes were read and are not what they must be.
    Damaged,
    /// The store was unavailable: nothing is known of the object.
    Unreadable,
    /// Not about the object (credentials, a refused request, a local disk, a
    /// bug): the operation stops.
    Other,
}

fn all_unreadable(problems: &[Problem]) -> bool {
    !problems.is_empty() && problems.iter().all(|p| p.kind == ProblemKind::Unreadable)
}

impl From<tokio::task::JoinError> for Error {
    fn from(err: tokio::task::JoinError) -> Self {
        Error::Task(err.to_string())
    }
}

/// What kind of problem a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
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
    /// An object in the repository has the wrong size or hash: bytes were
    /// read and did not match.
    CorruptObject,
    /// An object could not be read: the store failed, through its retries.
    /// Not damage: verify again later.
    Unreadable,
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

    /// A repository object the store failed to return (not damage: try again).
    pub fn unreadable(key: impl Into<String>, error: &Error) -> Self {
        let detail = format!("could not be read: {error}");
        Self::new(ProblemKind::Unreadable, key, detail)
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

/// `text` with every control character (terminal escape sequences, carriage
/// returns, newlines) shown escaped, for human messages about names that come
/// from records or from a repository.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    text.chars()
        .map(|c| match c.is_control() {
            true => c.escape_debug().to_string(),
            false => c.to_string(),
        })
        .collect::<String>()
        .into()
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
    fn a_store_errors_source_is_shown_redacted() {
        let raw = object_store::Error::Generic {
            store: "Azure",
            source: "Error performing GET https://a.blob.core.windows.net/c/k?sig=SECRET".into(),
        };
        let error = Error::Store {
            url: "az://c".into(),
            kind: StoreErrorKind::Other,
            message: "m".into(),
            source: Some(StoreSource::new(raw)),
        };
        let mut chain = String::new();
        let mut current: Option<&dyn std::error::Error> = Some(&error);
        while let Some(e) = current {
            chain.push_str(&format!("{e} / {e:?} / "));
            current = e.source();
        }
        assert!(!chain.contains("SECRET"), "{chain}");
        let Error::Store {
            source: Some(s), ..
        } = &error
        else {
            unreachable!()
        };
        assert!(
            s.error().to_string().contains("SECRET"),
            "kept for inspection"
        );
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_controls("plain/path"), "plain/path");
        assert_eq!(escape_controls("a\x1b[31mred\r\n"), "a\\u{1b}[31mred\\r\\n");
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
