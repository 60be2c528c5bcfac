//! `rockup init` and `rockup key`: creating a repository — encrypted by
//! default — and managing its keys: slots added and removed (never the
//! last), passphrases changed, a new generation of master key
//! (`rotate`), and the write key a write-only host backs up with. Every
//! change to the config happens under an exclusive lock, by a holder of the
//! full key; the config is rewritten whole and read back.

use serde::Serialize;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
pub use crate::repo::crypto::config::NewKey;
use crate::repo::crypto::config::{Config, Slot};
use crate::repo::crypto::{Identity, KdfParams, Recipient, WriteKey};
use crate::repo::ids::{BackupId, Format};
use crate::repo::lock::{locked, LockKind, LockRequest, DEFAULT_LEASE};
use crate::repo::Repository;

/// How to create a repository: [`InitOptions::default`] (encrypted, one
/// passphrase slot named `default` holding the handle's passphrase), then
/// the fields that differ.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct InitOptions {
    /// Encrypt it (the default); `false` makes a plaintext repository.
    pub encryption: bool,
    /// Argon2id parameters of the passphrase slot.
    pub kdf: KdfParams,
    /// Recipients given a slot each (`recipient-1`, …), besides the passphrase.
    pub recipients: Vec<Recipient>,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            encryption: true,
            kdf: KdfParams::default(),
            recipients: Vec::new(),
        }
    }
}

/// One key slot as `rockup key list` shows it (no secret).
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct SlotInfo {
    /// Its name.
    pub name: String,
    /// `passphrase` or `recipient`.
    pub kind: &'static str,
    /// The recipient it is wrapped for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// The passphrase slot's Argon2id parameters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kdf: Option<KdfParams>,
}

/// What `init` made, or what `rockup key` found or changed.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct KeysReport {
    /// The repository's id (encrypted repositories).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository_id: Option<String>,
    /// Whether it is encrypted.
    pub encrypted: bool,
    /// The current generation of master key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<u32>,
    /// Its key slots.
    pub slots: Vec<SlotInfo>,
    /// Passphrase slots a rotation removed (their passphrases were not at
    /// hand to wrap the new master key).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
}

/// Creates a repository: a plaintext marker, or an encrypted one's config
/// with its first slots.
pub async fn init(repo: &Repository, options: &InitOptions) -> Result<KeysReport> {
    if !options.encryption {
        if repo.names_a_key() {
            return Err(Error::Usage(
                "--no-encryption, but a key was given (passphrase, identity or write key): \
                 a plaintext repository is used without any key; unset ROCKUP_PASSWORD* \
                 and the key flags, or leave out --no-encryption"
                    .into(),
            ));
        }
        repo.create_plain(Format::NEWEST).await?;
        return Ok(PLAINTEXT);
    }
    let random = repo.random();
    let mut slots = Vec::new();
    if let Some(passphrase) = repo.passphrase()? {
        let kdf = options.kdf;
        slots.push(NewKey::Passphrase {
            name: "default".into(),
            passphrase,
            kdf,
        });
    }
    for (n, recipient) in options.recipients.iter().enumerate() {
        let name = format!("recipient-{}", n + 1);
        slots.push(NewKey::Recipient {
            name,
            recipient: *recipient,
        });
    }
    let mut slots = slots.into_iter();
    let Some(first) = slots.next() else {
        return Err(Error::Usage(
            "an encrypted repository needs a passphrase (ROCKUP_PASSWORD_FILE, ROCKUP_PASSWORD_COMMAND, \
             ROCKUP_PASSWORD, or a prompt on a terminal) or a --recipient; --no-encryption makes a \
             plaintext one"
                .into(),
        ));
    };
    let (mut config, keyring) = Config::create(random, first).map_err(Error::Usage)?;
    for slot in slots {
        config
            .add_slot(random, &keyring, slot)
            .map_err(Error::Usage)?;
    }
    repo.create_config(&config).await?;
    Ok(report(&config, Vec::new()))
}

/// The key slots of an encrypted repository (no key needed: the config is
/// plaintext).
pub async fn list(repo: &Repository) -> Result<KeysReport> {
    match repo.read_config().await? {
        Some(config) => Ok(report(&config, Vec::new())),
        None => Ok(PLAINTEXT),
    }
}

/// Adds a key slot holding the current master key.
pub async fn add(repo: &Repository, key: NewKey) -> Result<KeysReport> {
    change(repo, "add a key", move |config, keyring, random| {
        config.add_slot(random, keyring, key).map(|()| Vec::new())
    })
    .await
}

/// Removes the key slot `name`; the last one is never removed.
pub async fn remove(repo: &Repository, name: &str) -> Result<KeysReport> {
    let name = name.to_string();
    change(repo, "remove a key", move |config, _, _| {
        config.remove_slot(&name).map(|()| Vec::new())
    })
    .await
}

/// Gives passphrase slot `name` (by default the one that unlocked the
/// repository) a new passphrase.
pub async fn passwd(
    repo: &Repository,
    name: Option<&str>,
    passphrase: Zeroizing<String>,
    kdf: KdfParams,
) -> Result<KeysReport> {
    let name = match name {
        Some(name) => name.to_string(),
        None => unlocking_slot(repo).await?,
    };
    change(
        repo,
        "change a passphrase",
        move |config, keyring, random| {
            let slot = NewKey::Passphrase {
                name,
                passphrase,
                kdf,
            };
            config
                .replace_slot(random, keyring, slot)
                .map(|()| Vec::new())
        },
    )
    .await
}

/// A new generation of master key for everything written from now on; the
/// old ones are kept for reading. Recipient slots are wrapped again; the
/// passphrase slot that unlocked the repository is re-made with its
/// passphrase. Other passphrase slots cannot be (their passphrases are not
/// known here): with `remove_other_passphrases` they are removed (and
/// reported), without it rotation refuses and changes nothing.
pub async fn rotate(repo: &Repository, remove_other_passphrases: bool) -> Result<KeysReport> {
    let slot = unlocking_slot(repo).await?;
    let config = repo
        .read_config()
        .await?
        .ok_or_else(|| not_encrypted(repo))?;
    let others: Vec<&str> = config
        .encryption
        .slots
        .iter()
        .filter(|s| matches!(s, Slot::Passphrase { .. }) && s.name() != slot)
        .map(Slot::name)
        .collect();
    if !others.is_empty() && !remove_other_passphrases {
        return Err(Error::Usage(format!(
            "passphrase slot(s) {others:?} cannot hold the new master key (their passphrases are \
             not known here); pass --remove-other-passphrases to remove them, and add them back \
             afterwards with `rockup key add`; nothing was changed"
        )));
    }
    let passphrase = match find_slot(&config, &slot) {
        Some(Slot::Passphrase { kdf, .. }) => {
            let passphrase = repo.passphrase()?;
            passphrase.map(|passphrase| NewKey::Passphrase {
                name: slot,
                passphrase,
                kdf,
            })
        }
        _ => None,
    };
    change(
        repo,
        "rotate the master key",
        move |config, keyring, random| config.rotate(random, keyring, passphrase),
    )
    .await
}

/// The write key of an encrypted repository: what a write-only host holds.
pub async fn write_key(repo: &Repository) -> Result<WriteKey> {
    repo.check_marker(None).await?;
    repo.require_full_key("making a write key")?;
    let crypt = repo.crypt().ok_or_else(|| not_encrypted(repo))?;
    let keyring = crypt.keys.keyring.as_ref().expect("a full key");
    Ok(WriteKey {
        repo: crypt.keys.repo,
        naming: keyring.naming.clone(),
    })
}

/// A new X25519 identity (for `rockup key add --recipient`).
pub fn new_identity() -> Identity {
    Identity::generate()
}

/// Changes the config under an exclusive lock with the full key.
async fn change(
    repo: &Repository,
    operation: &'static str,
    edit: impl FnOnce(
        &mut Config,
        &mut crate::repo::crypto::keys::Keyring,
        &dyn crate::repo::crypto::primitives::Random,
    ) -> std::result::Result<Vec<String>, String>,
) -> Result<KeysReport> {
    repo.check_marker(None).await?;
    repo.require_full_key(operation)?;
    let crypt = repo.crypt().ok_or_else(|| not_encrypted(repo))?.clone();
    let request = LockRequest {
        kind: LockKind::Prune,
        operation: "key change",
        id: BackupId::new(chrono::Utc::now()),
        lease: DEFAULT_LEASE,
        wait: std::time::Duration::ZERO,
    };
    locked(repo, request, async |_| {
        let mut config = repo
            .read_config()
            .await?
            .ok_or_else(|| not_encrypted(repo))?;
        let known = crypt.keys.keyring.as_ref().expect("a full key");
        let mut keyring = config.reopen(known).map_err(Error::Usage)?;
        let removed =
            edit(&mut config, &mut keyring, crypt.random.as_ref()).map_err(Error::Usage)?;
        config.check().map_err(Error::Usage)?;
        repo.replace_config(&config).await?;
        Ok(report(&config, removed))
    })
    .await
}

async fn unlocking_slot(repo: &Repository) -> Result<String> {
    repo.check_marker(None).await?;
    repo.require_full_key("changing keys")?;
    let crypt = repo.crypt().ok_or_else(|| not_encrypted(repo))?;
    Ok(crypt
        .keys
        .slot
        .clone()
        .expect("a full key came from a slot"))
}

fn find_slot(config: &Config, name: &str) -> Option<Slot> {
    config
        .encryption
        .slots
        .iter()
        .find(|s| s.name() == name)
        .cloned()
}

fn not_encrypted(repo: &Repository) -> Error {
    Error::Usage(format!("{} is not encrypted: it has no keys", repo.name()))
}

/// The report on a plaintext repository: no id, no keys.
const PLAINTEXT: KeysReport = KeysReport {
    repository_id: None,
    encrypted: false,
    generation: None,
    slots: Vec::new(),
    removed: Vec::new(),
};

fn report(config: &Config, removed: Vec<String>) -> KeysReport {
    let slots = config
        .encryption
        .slots
        .iter()
        .map(|slot| match slot {
            Slot::Passphrase { name, kdf, .. } => SlotInfo {
                name: name.clone(),
                kind: "passphrase",
                recipient: None,
                kdf: Some(*kdf),
            },
            Slot::Recipient {
                name, recipient, ..
            } => SlotInfo {
                name: name.clone(),
                kind: "recipient",
                recipient: Some(recipient.clone()),
                kdf: None,
            },
        })
        .collect();
    KeysReport {
        repository_id: Some(config.repository_id.clone()),
        encrypted: true,
        generation: Some(config.encryption.generation),
        slots,
        removed,
    }
}
