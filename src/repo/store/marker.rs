//! The repository marker, `rockup.json`: its format and version, and — for an
//! encrypted repository (version 3) — its config (`crypto::config`), which is
//! unlocked here with the repository handle's credentials. Writers of a newer
//! plaintext format raise the marker, so older rockups refuse instead of
//! misreading; encrypted repositories are created explicitly (`init`).

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::Repository;
use crate::common::tasks::blocking;
use crate::error::{Error, Result};
use crate::repo::crypto::config::{Config, Secrets, UnlockError, ENCRYPTED_VERSION};
use crate::repo::crypto::Crypt;
use crate::repo::ids::Format;
use crate::repo::layout;

/// Repository format name, stored in `rockup.json` with its version.
const REPOSITORY_FORMAT: &str = "rockup-repository";
/// Largest marker or config read.
const MARKER_LIMIT: u64 = 1 << 20;

#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    format: String,
    version: u32,
}

impl Repository {
    /// Checks the repository marker and returns the format of its objects;
    /// an encrypted repository is unlocked (its objects are format 2,
    /// sealed). With `write = Some(f)`, a writer of format `f`: the marker
    /// is created in a new repository (plaintext, by a handle given no key),
    /// and raised to `f` in an
    /// older one — so that older rockups, which do not know format `f`,
    /// refuse the repository instead of misreading it. A repository of a
    /// newer format is refused.
    pub(crate) async fn check_marker(&self, write: Option<Format>) -> Result<Format> {
        let key = layout::marker();
        let Some(bytes) = self.get_if_exists(&key, MARKER_LIMIT).await? else {
            return match write {
                Some(format) => {
                    self.refuse_plaintext_with_a_key("there is no repository yet")?;
                    self.create_marker(format).await
                }
                None => Err(self.not_a_repository().await),
            };
        };
        let marker = parse_marker(&bytes)?;
        if marker.format != REPOSITORY_FORMAT {
            return Err(Error::manifest(
                layout::MARKER,
                format!("not a rockup repository (format {:?})", marker.format),
            ));
        }
        if marker.version == ENCRYPTED_VERSION {
            if write == Some(Format::V1) {
                return Err(Error::Usage(
                    "this repository is encrypted; format 1 (--format-version 1) is never encrypted".into(),
                ));
            }
            self.unlock(&bytes).await?;
            return Ok(Format::V2);
        }
        let Some(found) = Format::from_number(marker.version) else {
            let why = Format::unknown("repository format", marker.version);
            return Err(Error::manifest(layout::MARKER, why));
        };
        self.refuse_plaintext_with_a_key("it is not encrypted")?;
        match write {
            Some(format) if format > found => {
                tracing::info!(
                    from = %found,
                    to = %format,
                    "repository format raised; rockup older than 0.2 will refuse it"
                );
                self.put(&key, marker_bytes(format)).await?;
                Ok(format)
            }
            _ => Ok(found),
        }
    }

    /// The handle's passphrase, if it was given one (asked for now).
    pub(crate) fn passphrase(&self) -> Result<Option<zeroize::Zeroizing<String>>> {
        match &self.credentials.passphrase {
            Some(source) => source().map(Some).map_err(Error::Usage),
            None => Ok(None),
        }
    }

    /// Where the handle's random numbers come from.
    pub(crate) fn random(&self) -> &dyn crate::repo::crypto::primitives::Random {
        self.random.as_ref()
    }

    /// Whether the repository is encrypted (known once its marker was checked).
    pub fn is_encrypted(&self) -> bool {
        self.crypt.get().is_some()
    }

    /// The unlocked keys of an encrypted repository.
    pub(crate) fn crypt(&self) -> Option<&Arc<Crypt>> {
        self.crypt.get()
    }

    /// Fails unless this handle can read what it seals: a plaintext
    /// repository, or an encrypted one unlocked with its full key.
    pub(crate) fn require_full_key(&self, operation: &'static str) -> Result<()> {
        match self.is_write_only() {
            true => Err(Error::WriteOnly { operation }),
            false => Ok(()),
        }
    }

    /// Whether the handle was given a key (not merely a prompt): it then
    /// works on encrypted repositories only.
    pub(crate) fn names_a_key(&self) -> bool {
        self.credentials.names_a_key()
    }

    /// Whether the handle unlocked an encrypted repository with a write key
    /// only.
    pub(crate) fn is_write_only(&self) -> bool {
        self.crypt()
            .is_some_and(|crypt| crypt.keys.keyring.is_none())
    }

    /// Unlocks the config in `bytes` with this handle's credentials: an
    /// identity, then a passphrase, then a write key (write-only).
    async fn unlock(&self, bytes: &[u8]) -> Result<()> {
        if self.crypt.get().is_some() {
            return Ok(());
        }
        let config = parse_config(bytes)?;
        let credentials = &self.credentials;
        if credentials.is_empty() {
            return Err(Error::KeyNeeded {
                repo: self.name.clone(),
            });
        }
        let mut refused = Vec::new();
        let mut unlocked = None;
        if let Some(identity) = &credentials.identity {
            let secrets = Secrets {
                write_key: None,
                identity: Some(identity),
                passphrase: None,
            };
            unlocked = self.try_unlock(&config, &secrets, &mut refused)?;
        }
        if let (None, Some(source)) = (&unlocked, &credentials.passphrase) {
            let passphrase = source().map_err(Error::Usage)?;
            let (config, passphrase) = (config.clone(), passphrase.clone());
            let found = blocking(move || {
                let secrets = Secrets {
                    write_key: None,
                    identity: None,
                    passphrase: Some(&passphrase),
                };
                Ok(config.unlock(&secrets))
            })
            .await?;
            unlocked = self.judge(found, &mut refused)?;
        }
        if let (None, Some(write_key)) = (&unlocked, &credentials.write_key) {
            let secrets = Secrets {
                write_key: Some(write_key),
                identity: None,
                passphrase: None,
            };
            unlocked = self.try_unlock(&config, &secrets, &mut refused)?;
        }
        let Some(unlocked) = unlocked else {
            return Err(Error::WrongKey {
                repo: self.name.clone(),
                reason: refused.join("; "),
            });
        };
        let _ = self
            .crypt
            .set(Arc::new(Crypt::new(unlocked, self.random.clone())));
        Ok(())
    }

    fn try_unlock(
        &self,
        config: &Config,
        secrets: &Secrets<'_>,
        refused: &mut Vec<String>,
    ) -> Result<Option<crate::repo::crypto::config::Unlocked>> {
        self.judge(config.unlock(secrets), refused)
    }

    /// A damaged config is an error; a key that opens nothing is noted.
    fn judge(
        &self,
        found: std::result::Result<crate::repo::crypto::config::Unlocked, UnlockError>,
        refused: &mut Vec<String>,
    ) -> Result<Option<crate::repo::crypto::config::Unlocked>> {
        match found {
            Ok(unlocked) => Ok(Some(unlocked)),
            Err(UnlockError::WrongKey(why)) => {
                refused.push(why);
                Ok(None)
            }
            Err(UnlockError::Damaged(why)) => Err(Error::manifest(
                layout::MARKER,
                format!("the repository's config is damaged or forged: {why}"),
            )),
        }
    }

    /// Reads the config of an encrypted repository (`None`: plaintext).
    pub(crate) async fn read_config(&self) -> Result<Option<Config>> {
        let Some(bytes) = self.get_if_exists(&layout::marker(), MARKER_LIMIT).await? else {
            return Err(self.not_a_repository().await);
        };
        let marker = parse_marker(&bytes)?;
        if marker.version != ENCRYPTED_VERSION {
            return Ok(None);
        }
        let config = parse_config(&bytes)?;
        config
            .check()
            .map_err(|why| Error::manifest(layout::MARKER, why))?;
        Ok(Some(config))
    }

    /// Creates the config of a new encrypted repository (write-once).
    pub(crate) async fn create_config(&self, config: &Config) -> Result<()> {
        self.create_repository(config_bytes(config)).await
    }

    /// Makes this an encrypted repository with one passphrase slot
    /// (cheapest Argon2id), then unlocks it with the handle's credentials:
    /// what the repository layer's own tests start from.
    #[cfg(test)]
    pub(crate) async fn encrypt_for_tests(&self, passphrase: &str) {
        use crate::repo::crypto::config::{KdfParams, NewKey};
        let slot = NewKey::Passphrase {
            name: "default".into(),
            passphrase: zeroize::Zeroizing::new(passphrase.into()),
            kdf: KdfParams::MIN,
        };
        let (config, _) = Config::create(self.random(), slot).unwrap();
        self.create_config(&config).await.unwrap();
        self.check_marker(Some(Format::V2)).await.unwrap();
    }

    /// Replaces the config (key management, under an exclusive lock), and
    /// reads it back.
    pub(crate) async fn replace_config(&self, config: &Config) -> Result<()> {
        let key = layout::marker();
        let bytes = config_bytes(config);
        self.put(&key, bytes.clone()).await?;
        match self.get_if_exists(&key, MARKER_LIMIT).await? {
            Some(stored) if stored == bytes => Ok(()),
            _ => Err(self.failure(
                crate::error::StoreErrorKind::Unavailable,
                format!("{key} was written but does not read back as written"),
            )),
        }
    }

    /// Creates a plaintext repository's marker (write-once).
    pub(crate) async fn create_plain(&self, format: Format) -> Result<()> {
        self.create_repository(marker_bytes(format)).await
    }

    /// Writes `bytes` as the marker (or config) of a new repository; one that
    /// exists already is refused.
    async fn create_repository(&self, bytes: Bytes) -> Result<()> {
        match self.create(&layout::marker(), bytes).await {
            Ok(_) => Ok(()),
            Err(Error::Conflict { .. }) => Err(self.already_a_repository()),
            Err(e) => Err(e),
        }
    }

    /// A handle given a key works on encrypted repositories only: a
    /// plaintext marker where an encrypted config was expected (replaced or
    /// removed by whoever can write the bucket) must not make it write, or
    /// believe, plaintext.
    fn refuse_plaintext_with_a_key(&self, what: &str) -> Result<()> {
        if !self.names_a_key() {
            return Ok(());
        }
        Err(Error::WrongKey {
            repo: self.name.clone(),
            reason: format!(
                "{what}, but a key was given (passphrase, identity or write key), so rockup \
                 will not use it as a plaintext repository; `rockup init` makes an encrypted \
                 one; if this one was encrypted, its config was replaced or removed; for a \
                 plaintext repository give no key"
            ),
        })
    }

    fn already_a_repository(&self) -> Error {
        Error::Usage(format!(
            "{} is a rockup repository already ({} exists)",
            self.name,
            layout::MARKER
        ))
    }

    async fn create_marker(&self, format: Format) -> Result<Format> {
        let key = layout::marker();
        match self.create(&key, marker_bytes(format)).await {
            Ok(_) => Ok(format),
            // Another run created it concurrently: check theirs.
            Err(Error::Conflict { .. }) => Box::pin(self.check_marker(Some(format))).await,
            Err(e) => Err(e),
        }
    }

    /// Tells a missing bucket (or wrong credentials) from a prefix that
    /// simply holds no repository: one LIST request.
    async fn not_a_repository(&self) -> Error {
        if let Err(e) = self.store.list_with_delimiter(None).await {
            return self.error(e);
        }
        Error::RepositoryNotFound(format!("{} (it has no {})", self.name, layout::MARKER))
    }
}

fn parse_marker(bytes: &[u8]) -> Result<Marker> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::manifest(layout::MARKER, format!("unreadable repository marker: {e}")))
}

fn parse_config(bytes: &[u8]) -> Result<Config> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::manifest(layout::MARKER, format!("unreadable repository config: {e}")))
}

fn config_bytes(config: &Config) -> Bytes {
    Bytes::from(serde_json::to_vec_pretty(config).expect("config serializes"))
}

fn marker_bytes(format: Format) -> Bytes {
    let marker = Marker {
        format: REPOSITORY_FORMAT.into(),
        version: format.number(),
    };
    Bytes::from(serde_json::to_vec_pretty(&marker).expect("marker serializes"))
}
