//! Store errors as users read them: one line, XML bodies condensed to
//! `Code: Message`, the URL (query strings redacted, never a secret), the kind
//! kept for callers to match on, and a fix naming the right settings for that
//! store.

use super::Repository;
use crate::error::{redact, Error, StoreErrorKind};

impl Repository {
    /// Turns a store error into a one-line message naming the repository and a
    /// fix, keeping its kind.
    pub(crate) fn error(&self, err: object_store::Error) -> Error {
        // One line, whatever the server's error body looked like.
        let one_line = redact(&err.to_string())
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let text = condense_error_body(&one_line);
        let (kind, hint) = diagnose(&err, &text, &StoreSettings::of(&self.name));
        Error::Store {
            url: self.name.clone(),
            kind,
            message: format!("{text}{hint}"),
        }
    }
}

/// The kind of a store error (also where only the server's text tells it) and a
/// hint at the fix.
fn diagnose(
    err: &object_store::Error,
    text: &str,
    settings: &StoreSettings,
) -> (StoreErrorKind, String) {
    let lower = text.to_ascii_lowercase();
    let mentions = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    let kind = StoreErrorKind::of(err);
    if mentions(&[
        "nosuchbucket",
        "containernotfound",
        "bucket does not exist",
        "the specified bucket",
    ]) {
        let hint = "; the bucket or container does not exist: create it first (rockup never creates buckets)";
        (StoreErrorKind::NotFound, hint.to_string())
    } else if kind == StoreErrorKind::Unauthenticated
        || mentions(&[
            "invalidaccesskeyid",
            "signaturedoesnotmatch",
            "authenticationfailed",
            "authorizationfailure",
            "failed to authenticate",
        ])
    {
        let hint = format!(
            "; the credentials were rejected: check {}",
            settings.credentials
        );
        (StoreErrorKind::Unauthenticated, hint)
    } else if kind == StoreErrorKind::PermissionDenied {
        let hint = "; access denied: the credentials lack permission for this bucket and prefix";
        (kind, hint.to_string())
    } else if unsupported_by_store(err) {
        (StoreErrorKind::NotImplemented, String::new())
    } else if mentions(&["error sending request", "connect"]) {
        let hint = format!(
            "; the endpoint is unreachable: check the URL and {}",
            settings.endpoint
        );
        (kind, hint)
    } else {
        (kind, String::new())
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

/// True when the store (or the server behind it) does not implement the
/// operation (a bulk delete).
pub(super) fn unsupported_by_store(err: &object_store::Error) -> bool {
    if matches!(
        err,
        object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. }
    ) {
        return true;
    }
    let text = err.to_string().to_ascii_lowercase();
    text.contains("501") || text.contains("notimplemented") || text.contains("not implemented")
}
