//! URL + options → store: the one place object stores are built. `s3://`, `gs://`,
//! `az://` (and object_store's other spellings), `file://`, `memory://`, plain
//! paths (created; durable at each commit, `local`). Settings come from the environment through the
//! builders' `from_env`, `--store-option` on top; request and connect timeouts and
//! retries have defaults that ride out a store restarting or throttling, and
//! requests over HTTP go through an adaptive limit (`throttle`).

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreScheme};
use url::Url;

use super::errors::StoreSettings;
use super::local::NoSymlinks;
use super::throttle::{Adaptive, ThrottledConnector};
use super::Repository;
use crate::error::{redact, Error, Result, StoreErrorKind, StoreSource};

/// Request timeout applied unless the user sets `timeout`: generous enough for a
/// 128 MiB multipart part over a slow link (object_store's default of 30 s covers
/// the whole request, body included).
const DEFAULT_TIMEOUT: &str = "600s";
const DEFAULT_CONNECT_TIMEOUT: &str = "15s";

/// Retries of one request (connection errors, 5xx, throttling), with
/// object_store's exponential backoff: up to 10 attempts within 10 minutes, so a
/// backup rides out a store restarting or throttling instead of failing at once.
fn retry_config() -> object_store::RetryConfig {
    object_store::RetryConfig {
        max_retries: 10,
        retry_timeout: std::time::Duration::from_secs(600),
        ..Default::default()
    }
}

/// What a repository URL names, once parsed.
struct Parsed<'a> {
    url: &'a str,
    name: String,
    settings: StoreSettings,
    prefix: Path,
    options: Vec<(String, String)>,
}

impl Parsed<'_> {
    fn usage(&self, reason: impl std::fmt::Display) -> Error {
        Error::Usage(format!("repository URL {}: {reason}", self.name))
    }
}

impl Repository {
    /// Opens the repository at `url` (`s3://bucket/prefix`, `gs://…`, `az://…`,
    /// `file:///abs/path`, `memory://`, or a plain local path, created if missing).
    /// Store settings come from the environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`) and
    /// from `options` (`key=value` pairs as object_store's config keys name them),
    /// which take precedence.
    pub fn open(url: &str, options: &[(String, String)]) -> Result<Self> {
        Self::open_with(url, options, true)
    }

    /// Opens the repository at `url` as [`Repository::open`] does, but a
    /// local directory that does not exist is [`Error::RepositoryNotFound`]
    /// rather than created: for everything that only reads or changes a
    /// repository, so a mistyped path creates nothing.
    pub fn open_existing(url: &str, options: &[(String, String)]) -> Result<Self> {
        Self::open_with(url, options, false)
    }

    fn open_with(url: &str, options: &[(String, String)], create: bool) -> Result<Self> {
        let name = redact(url);
        if url.is_empty() {
            return Err(Error::Usage(
                "no repository given: pass --repo URL (-r) or set ROCKUP_REPOSITORY".into(),
            ));
        }
        if !url.contains("://") {
            if looks_like_a_scheme(url) {
                return Err(Error::Usage(format!("repository URL {name}: looks like a URL but lacks \"://\" (e.g. s3://bucket/prefix); use ./ for a local path with a colon")));
            }
            return Self::local(PathBuf::from(url), name, create);
        }
        let usage = |reason: String| Error::Usage(format!("repository URL {name}: {reason}"));
        let parsed = Url::parse(url).map_err(|e| usage(e.to_string()))?;
        let settings = StoreSettings::of(url);
        if settings.cloud.is_some() && parsed.host_str().is_none_or(str::is_empty) {
            return Err(usage(
                "names no bucket or container (e.g. s3://bucket/prefix)".into(),
            ));
        }
        let (scheme, prefix) = ObjectStoreScheme::parse(&parsed).map_err(|_| {
            usage("unknown scheme; use s3://, gs://, az://, file:// or a local path".into())
        })?;
        if scheme == ObjectStoreScheme::Local {
            let path = parsed
                .to_file_path()
                .map_err(|_| usage("a file:// URL needs an absolute path".into()))?;
            return Self::local(path, name, create);
        }
        let parsed = Parsed {
            url,
            name,
            settings,
            prefix,
            options: with_default_timeouts(options),
        };
        Self::cloud(scheme, parsed)
    }

    /// A store reached over the network (or the in-memory one).
    fn cloud(scheme: ObjectStoreScheme, parsed: Parsed<'_>) -> Result<Self> {
        let limit = Adaptive::new();
        let store: Arc<dyn ObjectStore> = match scheme {
            ObjectStoreScheme::Memory => Arc::new(InMemory::new()),
            ObjectStoreScheme::AmazonS3 => return Self::s3(parsed, limit),
            ObjectStoreScheme::GoogleCloudStorage => configured(
                GoogleCloudStorageBuilder::from_env()
                    .with_url(parsed.url)
                    .with_retry(retry_config())
                    .with_http_connector(ThrottledConnector::new(limit)),
                &parsed.options,
                &parsed.settings,
                |b, k: GoogleConfigKey, v| b.with_config(k, v),
                |b| b.build(),
            )
            .map_err(|e| parsed.usage(e))?,
            ObjectStoreScheme::MicrosoftAzure => configured(
                MicrosoftAzureBuilder::from_env()
                    .with_url(parsed.url)
                    .with_retry(retry_config())
                    .with_http_connector(ThrottledConnector::new(limit)),
                &parsed.options,
                &parsed.settings,
                |b, k: AzureConfigKey, v| b.with_config(k, v),
                |b| b.build(),
            )
            .map_err(|e| parsed.usage(e))?,
            _ => return Err(parsed.usage("this scheme is not supported as a repository")),
        };
        Ok(Self::from_store(scoped(store, parsed.prefix), parsed.name))
    }

    /// S3, with a second client without bulk deletes for servers that lack
    /// them; both share one adaptive request limit.
    fn s3(parsed: Parsed<'_>, limit: Arc<Adaptive>) -> Result<Self> {
        let s3 = |options: &[(String, String)]| {
            configured(
                AmazonS3Builder::from_env()
                    .with_url(parsed.url)
                    .with_retry(retry_config())
                    .with_http_connector(ThrottledConnector::new(limit.clone())),
                options,
                &parsed.settings,
                |b, k: AmazonS3ConfigKey, v| b.with_config(k, v),
                |b| b.build(),
            )
            .map_err(|e| parsed.usage(e))
        };
        let mut single = parsed.options.clone();
        single.push(("aws_disable_bulk_delete".into(), "true".into()));
        let single_deletes = scoped(s3(&single)?, parsed.prefix.clone());
        let store = scoped(s3(&parsed.options)?, parsed.prefix.clone());
        Ok(Self::from_store(store, parsed.name).with_single_deletes(single_deletes))
    }

    fn local(path: PathBuf, name: String, create: bool) -> Result<Self> {
        if !create && std::fs::symlink_metadata(&path).is_err() {
            return Err(Error::RepositoryNotFound(name));
        }
        std::fs::create_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        let root = path.canonicalize().map_err(|e| Error::io(&path, e))?;
        let store = NoSymlinks::new(root.clone()).map_err(|e| Error::Store {
            url: name.clone(),
            kind: StoreErrorKind::Other,
            message: e.to_string(),
            source: Some(StoreSource::new(e)),
        })?;
        let mut repo = Self::from_store(Arc::new(store), name);
        repo.local_root = Some(root);
        Ok(repo)
    }
}

/// `scheme:rest` without `//`: a mistyped URL rather than a local path.
fn looks_like_a_scheme(url: &str) -> bool {
    url.split_once(':').is_some_and(|(scheme, _)| {
        scheme.len() > 1
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+.-".contains(&b))
    })
}

/// Applies `key=value` options to a cloud store builder (parsed as that store's
/// config keys) and builds it; errors are redacted.
fn configured<B, K: FromStr, S: ObjectStore>(
    mut builder: B,
    options: &[(String, String)],
    settings: &StoreSettings,
    set: fn(B, K, String) -> B,
    build: fn(B) -> object_store::Result<S>,
) -> std::result::Result<Arc<dyn ObjectStore>, String> {
    let cloud = settings.cloud.unwrap_or("this");
    for (key, value) in options {
        let parsed =
            K::from_str(key).map_err(|_| format!("unknown {cloud} store option {key:?}"))?;
        builder = set(builder, parsed, value.clone());
    }
    let store = build(builder).map_err(|e| {
        let text = redact(&e.to_string());
        if text.to_ascii_lowercase().contains("credential") {
            format!("{text}; check {}", settings.credentials)
        } else {
            text
        }
    })?;
    Ok(Arc::new(store))
}

fn scoped(store: Arc<dyn ObjectStore>, prefix: Path) -> Arc<dyn ObjectStore> {
    if prefix.as_ref().is_empty() {
        store
    } else {
        Arc::new(PrefixStore::new(store, prefix))
    }
}

fn with_default_timeouts(options: &[(String, String)]) -> Vec<(String, String)> {
    let mut all = Vec::with_capacity(options.len() + 2);
    let set = |name: &str| {
        options.iter().any(|(k, _)| {
            k.trim_start_matches("aws_")
                .trim_start_matches("azure_")
                .trim_start_matches("google_")
                == name
        }) || ["AWS", "AZURE", "GOOGLE"].iter().any(|cloud| {
            std::env::var_os(format!("{cloud}_{}", name.to_ascii_uppercase())).is_some()
        })
    };
    if !set("timeout") {
        all.push(("timeout".to_string(), DEFAULT_TIMEOUT.to_string()));
    }
    if !set("connect_timeout") {
        all.push((
            "connect_timeout".to_string(),
            DEFAULT_CONNECT_TIMEOUT.to_string(),
        ));
    }
    all.extend(options.iter().cloned());
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_urls_are_usage_errors() {
        for url in ["nope://x", "s3:/bucket", "", "ftp://host/x"] {
            let err = Repository::open(url, &[]).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{url}: {err}");
        }
        assert!(
            !std::path::Path::new("s3:").exists(),
            "a mistyped URL creates no local directory"
        );
        let err = Repository::open("s3://bucket/p", &[("no_such_option".into(), "1".into())])
            .unwrap_err();
        assert!(err.to_string().contains("no_such_option"), "{err}");
    }

    fn options(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// GCS cannot be exercised against an emulator here (none speaks the XML API
    /// object_store uses), so its configuration path is checked offline: URL and
    /// options reach the builder, requests go where they were sent, and every error
    /// names the URL and the fix but never the secret.
    #[tokio::test]
    async fn gcs_configuration_offline() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base_url = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let repo = Repository::open(
            "gs://bucket/prefix",
            &options(&[
                ("google_bearer_token", "SECRET-TOKEN"),
                ("google_base_url", &base_url),
                ("allow_http", "true"),
            ]),
        )
        .unwrap();
        let err = repo.check_marker(None).await.unwrap_err().to_string();
        assert!(err.starts_with("gs://bucket/prefix: "), "{err}");
        assert!(
            err.contains(&base_url),
            "the request went to the base URL: {err}"
        );
        assert!(
            err.contains("unreachable") && err.contains("google_base_url"),
            "{err}"
        );
        assert!(!err.contains("SECRET-TOKEN"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");

        let missing = Repository::open(
            "gs://bucket/prefix",
            &options(&[("google_service_account", "/nonexistent/sa.json")]),
        )
        .unwrap_err();
        assert_eq!(missing.exit_code(), 2, "{missing}");
        let text = missing.to_string();
        assert!(
            text.contains("gs://bucket/prefix") && text.contains("sa.json"),
            "{text}"
        );

        let both = Repository::open(
            "gs://bucket/prefix",
            &options(&[
                ("google_service_account", "/nonexistent/sa.json"),
                (
                    "google_service_account_key",
                    "{\"private_key\": \"SECRET-KEY\"}",
                ),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(!both.contains("SECRET-KEY"), "{both}");

        let unknown =
            Repository::open("gs://bucket/p", &options(&[("google_bukket", "x")])).unwrap_err();
        assert!(
            unknown
                .to_string()
                .contains("unknown GCS store option \"google_bukket\""),
            "{unknown}"
        );
        let no_bucket = Repository::open("gs://", &[]).unwrap_err();
        assert_eq!(no_bucket.exit_code(), 2, "{no_bucket}");
    }
}
