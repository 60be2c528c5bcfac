//! Store errors as users read them and callers match on them: one line, XML
//! bodies condensed to `Code: Message`, the URL (query strings redacted, never
//! a secret), a fix naming the right settings for that store, object_store's
//! error kept as the source, and the kind — decided from object_store's error
//! kinds, the HTTP status of the failed request (`status`) and the transport
//! error beneath it, never from message text.

use object_store::client::{HttpError, HttpErrorKind};

use super::status::status_of;
use super::Repository;
use crate::error::{redact, Error, StoreErrorKind, StoreSource};

impl Repository {
    /// Turns a store error into a one-line message naming the repository and a
    /// fix, keeping it as the source and its kind.
    pub(crate) fn error(&self, err: object_store::Error) -> Error {
        // One line, whatever the server's error body looked like.
        let one_line = redact(&err.to_string())
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let text = condense_error_body(&one_line);
        let kind = kind_of(&err);
        let hint = hint(kind, &text, &StoreSettings::of(&self.name));
        Error::Store {
            url: self.name.clone(),
            kind,
            message: format!("{text}{hint}"),
            source: Some(StoreSource::new(err)),
        }
    }

    /// A store error rockup itself finds (no object_store error behind it).
    pub(crate) fn failure(&self, kind: StoreErrorKind, message: String) -> Error {
        Error::Store {
            url: self.name.clone(),
            kind,
            message,
            source: None,
        }
    }
}

/// What kind of failure `err` is.
pub(super) fn kind_of(err: &object_store::Error) -> StoreErrorKind {
    use object_store::Error as E;
    match err {
        E::NotFound { .. } => StoreErrorKind::NotFound,
        E::AlreadyExists { .. } => StoreErrorKind::AlreadyExists,
        E::Precondition { .. } => StoreErrorKind::Precondition,
        E::NotImplemented { .. } | E::NotSupported { .. } => StoreErrorKind::NotImplemented,
        E::Unauthenticated { .. } => StoreErrorKind::Unauthenticated,
        E::PermissionDenied { .. } => StoreErrorKind::PermissionDenied,
        _ => match status_of(err) {
            Some(status) => kind_of_status(status),
            None if transport_failed(err) => StoreErrorKind::Unavailable,
            None => StoreErrorKind::Other,
        },
    }
}

/// The kind of a request that failed with HTTP `status`.
fn kind_of_status(status: u16) -> StoreErrorKind {
    match status {
        401 => StoreErrorKind::Unauthenticated,
        403 => StoreErrorKind::PermissionDenied,
        404 => StoreErrorKind::NotFound,
        409 => StoreErrorKind::AlreadyExists,
        412 => StoreErrorKind::Precondition,
        // 405: how some S3-compatible servers answer a bulk delete they lack.
        405 | 501 => StoreErrorKind::NotImplemented,
        408 | 429 | 500..=599 => StoreErrorKind::Unavailable,
        _ => StoreErrorKind::Other,
    }
}

/// Whether the chain of `err` holds a connection or timeout failure: a
/// request that got no whole answer.
fn transport_failed(err: &object_store::Error) -> bool {
    use std::io::ErrorKind as Io;
    let mut current: &(dyn std::error::Error + 'static) = err;
    loop {
        if let Some(http) = current.downcast_ref::<HttpError>() {
            return matches!(
                http.kind(),
                HttpErrorKind::Connect
                    | HttpErrorKind::Request
                    | HttpErrorKind::Timeout
                    | HttpErrorKind::Interrupted
                    | HttpErrorKind::Decode
            );
        }
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                Io::TimedOut
                    | Io::ConnectionReset
                    | Io::ConnectionAborted
                    | Io::ConnectionRefused
                    | Io::NotConnected
                    | Io::BrokenPipe
                    | Io::Interrupted
                    | Io::UnexpectedEof
            );
        }
        match current.source() {
            Some(source) => current = source,
            None => return false,
        }
    }
}

/// A hint at the fix for a failure of `kind`; the server's words (`text`)
/// only choose between hints.
fn hint(kind: StoreErrorKind, text: &str, settings: &StoreSettings) -> String {
    let lower = text.to_ascii_lowercase();
    let mentions = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    match kind {
        StoreErrorKind::NotFound
            if mentions(&[
                "nosuchbucket",
                "containernotfound",
                "bucket does not exist",
                "the specified bucket",
            ]) =>
        {
            "; the bucket or container does not exist: create it first (rockup never creates buckets)".into()
        }
        // Azure answers a wrong key with 403 and says it failed to authenticate.
        StoreErrorKind::Unauthenticated | StoreErrorKind::PermissionDenied
            if kind == StoreErrorKind::Unauthenticated
                || mentions(&[
                    "invalidaccesskeyid",
                    "signaturedoesnotmatch",
                    "authenticationfailed",
                    "failed to authenticate",
                ]) =>
        {
            format!(
                "; the credentials were rejected: check {}",
                settings.credentials
            )
        }
        StoreErrorKind::PermissionDenied => {
            "; access denied: the credentials lack permission for this bucket and prefix".into()
        }
        StoreErrorKind::Unavailable if mentions(&["error sending request", "connect"]) => format!(
            "; the endpoint is unreachable: check the URL and {}",
            settings.endpoint
        ),
        StoreErrorKind::Unavailable => "; the store kept failing through rockup's retries: try again later".into(),
        _ => String::new(),
    }
}

/// Shortens a server's XML error body (S3, Azure) to `Code: Message`.
fn condense_error_body(text: &str) -> String {
    let element = |name: &str| {
        let (open, close) = (format!("<{name}>"), format!("</{name}>"));
        let start = text.find(&open)? + open.len();
        let len = text[start..].find(&close)?;
        Some(text[start..start + len].trim())
    };
    let body = text.find("<?xml").or_else(|| text.find("<Error>"));
    match (body, element("Code")) {
        (Some(at), Some(code)) => {
            let message = element("Message").unwrap_or_default();
            // Azure appends request ids and times to the message.
            let message = message.split(" RequestId:").next().unwrap_or(message);
            format!("{}{code}: {message}", &text[..at])
        }
        _ => text.to_string(),
    }
}

/// Where a user fixes endpoint and credential settings, per kind of store.
pub(super) struct StoreSettings {
    /// Display name of a cloud store, `None` for local and memory.
    pub(super) cloud: Option<&'static str>,
    pub(super) endpoint: &'static str,
    pub(super) credentials: &'static str,
}

impl StoreSettings {
    pub(super) fn of(url: &str) -> Self {
        let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
        match scheme {
            "s3" | "s3a" => Self {
                cloud: Some("S3"),
                endpoint: "AWS_ENDPOINT (and AWS_ALLOW_HTTP for http://)",
                credentials: "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)",
            },
            "az" | "adl" | "azure" | "abfs" | "abfss" => Self {
                cloud: Some("Azure"),
                endpoint: "AZURE_STORAGE_ACCOUNT_NAME (AZURITE_BLOB_STORAGE_URL for the emulator)",
                credentials: "AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_KEY",
            },
            "gs" => Self {
                cloud: Some("GCS"),
                endpoint: "GOOGLE_BASE_URL / --store-option google_base_url",
                credentials: "GOOGLE_SERVICE_ACCOUNT or GOOGLE_APPLICATION_CREDENTIALS",
            },
            _ => Self {
                cloud: None,
                endpoint: "the endpoint settings (AWS_ENDPOINT, AZURE_*, GOOGLE_*)",
                credentials: "the AWS_*/AZURE_*/GOOGLE_* variables",
            },
        }
    }
}

/// Names the error of a bulk delete the server does not implement.
pub(super) const BULK_DELETE_UNSUPPORTED: &str = "bulk delete not implemented by the server";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_come_from_statuses_and_transport_errors_not_from_text() {
        for (status, kind) in [
            (503, StoreErrorKind::Unavailable),
            (429, StoreErrorKind::Unavailable),
            (500, StoreErrorKind::Unavailable),
            (501, StoreErrorKind::NotImplemented),
            (400, StoreErrorKind::Other),
            (416, StoreErrorKind::Other),
            (404, StoreErrorKind::NotFound),
        ] {
            assert_eq!(kind_of_status(status), kind, "{status}");
        }
        let reset = object_store::Error::Generic {
            store: "S3",
            source: Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
        };
        assert_eq!(kind_of(&reset), StoreErrorKind::Unavailable);
        // Words alone decide nothing.
        let worded = object_store::Error::Generic {
            store: "S3",
            source: "503 Service Unavailable, 501 not implemented".into(),
        };
        assert_eq!(kind_of(&worded), StoreErrorKind::Other);
    }
}
