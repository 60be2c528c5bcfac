//! An encrypted repository's config, `rockup.json` at version 3: the only
//! plaintext object of the repository. It holds the repository id, each
//! generation's public key, the keyring (every master key and the naming
//! key, sealed under the newest master key) and the key slots that unlock
//! the newest master key: passphrase slots (Argon2id, parameters recorded,
//! bounded) and recipient slots (an X25519 public key, as age writes them).
//! An HMAC under the naming key covers the repository id and the public keys,
//! so a write-only host never seals for a public key the store substituted.
//! Every field is checked — lengths, counts, bounds — before it is used.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::encoding::{Identity, Recipient, WriteKey};
use super::keys::{
    generation_public, seal_key, unseal_key, unwrap_with, wrap_for, Keyring, Naming, RepoId,
};
use super::primitives::{argon2id, hkdf, hmac, hmac_verify, Aead, Random, SecretKey};

/// The repository format version of an encrypted repository.
pub const ENCRYPTED_VERSION: u32 = 3;
/// The cipher suite, named in the config.
const CIPHER: &str = "aes-256-gcm/stream-64k/x25519/hkdf-sha256";
/// Most key slots, and longest slot name.
const MAX_SLOTS: usize = 64;
const MAX_NAME: usize = 128;
/// Most generations a config may list.
const MAX_GENERATIONS: usize = 1024;

/// Argon2id parameters: memory in KiB, iterations, lanes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory per hash, in KiB.
    pub memory_kib: u32,
    /// Passes over that memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl KdfParams {
    /// The least accepted: OWASP's minimum for Argon2id (19 MiB, 2 passes).
    pub const MIN: KdfParams = KdfParams {
        memory_kib: 19 << 10,
        iterations: 2,
        parallelism: 1,
    };
    /// The most accepted: beyond this a forged config could make a reader
    /// allocate or compute without bound.
    pub const MAX: KdfParams = KdfParams {
        memory_kib: 1 << 20,
        iterations: 32,
        parallelism: 16,
    };

    /// Refuses parameters outside [`KdfParams::MIN`]..=[`KdfParams::MAX`].
    pub fn check(&self) -> Result<(), String> {
        let (min, max) = (Self::MIN, Self::MAX);
        let within = |v: u32, lo: u32, hi: u32| (lo..=hi).contains(&v);
        if within(self.memory_kib, min.memory_kib, max.memory_kib)
            && within(self.iterations, min.iterations, max.iterations)
            && within(self.parallelism, min.parallelism, max.parallelism)
        {
            return Ok(());
        }
        Err(format!(
            "Argon2id with {} KiB, {} iterations, {} lanes is outside what rockup accepts \
             ({}–{} KiB, {}–{} iterations, {}–{} lanes)",
            self.memory_kib,
            self.iterations,
            self.parallelism,
            min.memory_kib,
            max.memory_kib,
            min.iterations,
            max.iterations,
            min.parallelism,
            max.parallelism
        ))
    }
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 1 lane: about a third of a second on a server core.
    fn default() -> Self {
        Self {
            memory_kib: 64 << 10,
            iterations: 3,
            parallelism: 1,
        }
    }
}

/// One key slot as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Slot {
    /// Opened with a passphrase.
    Passphrase {
        name: String,
        kdf: KdfParams,
        salt: String,
        wrapped: String,
    },
    /// Opened with the X25519 identity of `recipient`.
    Recipient {
        name: String,
        recipient: String,
        ephemeral: String,
        wrapped: String,
    },
}

impl Slot {
    /// The slot's name.
    pub fn name(&self) -> &str {
        match self {
            Slot::Passphrase { name, .. } | Slot::Recipient { name, .. } => name,
        }
    }
}

/// A generation's public key, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationKey {
    pub generation: u32,
    pub public_key: String,
}

/// The keyring as stored: sealed under a key derived from the newest
/// master key and a random salt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedKeyring {
    salt: String,
    sealed: String,
}

/// The `encryption` section of the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encryption {
    pub cipher: String,
    pub generation: u32,
    pub public_keys: Vec<GenerationKey>,
    pub keyring: SealedKeyring,
    pub slots: Vec<Slot>,
    pub mac: String,
}

/// The config of an encrypted repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub format: String,
    pub version: u32,
    pub repository_id: String,
    pub encryption: Encryption,
}

/// A new key slot.
#[non_exhaustive]
pub enum NewKey {
    /// A passphrase, with these Argon2id parameters.
    Passphrase {
        /// The slot's name, unique in the repository.
        name: String,
        /// The passphrase itself.
        passphrase: Zeroizing<String>,
        /// How hard the passphrase is stretched.
        kdf: KdfParams,
    },
    /// An X25519 recipient (its identity opens the slot).
    Recipient {
        /// The slot's name, unique in the repository.
        name: String,
        /// The public key the slot is wrapped for.
        recipient: Recipient,
    },
}

impl NewKey {
    fn name(&self) -> &str {
        match self {
            NewKey::Passphrase { name, .. } | NewKey::Recipient { name, .. } => name,
        }
    }
}

/// What unlocked a config: its keys, and by which slot (none for a write key).
pub struct Unlocked {
    pub repo: RepoId,
    pub naming: Naming,
    /// The current generation, and its public key (what sessions are
    /// wrapped for).
    pub generation: u32,
    pub public_key: [u8; 32],
    /// Every generation's master key; `None` on a write-only host.
    pub keyring: Option<Keyring>,
    /// The slot that unlocked it.
    pub slot: Option<String>,
}

/// What may unlock a config: a write key (write-only) if one is given,
/// else an identity, then a passphrase. (`Repository` passes one at a
/// time: an identity, then a passphrase, then a write key.)
pub struct Secrets<'a> {
    pub write_key: Option<&'a WriteKey>,
    pub identity: Option<&'a Identity>,
    pub passphrase: Option<&'a str>,
}

/// Why a config could not be unlocked.
#[derive(Debug)]
pub enum UnlockError {
    /// The config itself is damaged or forged.
    Damaged(String),
    /// None of the secrets given opens a slot.
    WrongKey(String),
}

/// Hex is lowercase only: one spelling per value, so that values compared
/// as text (the MAC's input, recipients) cannot differ from their bytes.
fn lowercase_hex(text: &str, what: &str) -> Result<(), String> {
    match text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        true => Ok(()),
        false => Err(format!("{what} is not lowercase hex")),
    }
}

fn hex32(text: &str, what: &str) -> Result<[u8; 32], String> {
    lowercase_hex(text, what)?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).map_err(|_| format!("{what} is not 32 bytes of hex"))?;
    Ok(out)
}

fn hex_of_len(text: &str, len: usize, what: &str) -> Result<Vec<u8>, String> {
    lowercase_hex(text, what)?;
    let bytes = hex::decode(text).map_err(|_| format!("{what} is not hex"))?;
    match bytes.len() == len {
        true => Ok(bytes),
        false => Err(format!("{what} is {} bytes, not {len}", bytes.len())),
    }
}

fn slot_context(repo: &RepoId, name: &str, generation: u32) -> Vec<u8> {
    let mut context = b"rockup slot".to_vec();
    context.extend_from_slice(repo.as_bytes());
    context.extend_from_slice(&generation.to_be_bytes());
    context.extend_from_slice(name.as_bytes());
    context
}

fn keyring_context(repo: &RepoId, generation: u32) -> Vec<u8> {
    let mut context = b"rockup keyring".to_vec();
    context.extend_from_slice(repo.as_bytes());
    context.extend_from_slice(&generation.to_be_bytes());
    context
}

/// What the keyring's plaintext is.
#[derive(Serialize, Deserialize)]
struct KeyringText {
    naming: Zeroizing<String>,
    masters: BTreeMap<u32, Zeroizing<String>>,
}

impl Config {
    /// A new repository's config and keyring, with one slot.
    pub fn create(random: &dyn Random, slot: NewKey) -> Result<(Self, Keyring), String> {
        let repo = RepoId::random(random);
        let keyring = Keyring {
            naming: SecretKey::random(random),
            masters: BTreeMap::from([(1, SecretKey::random(random))]),
        };
        let mut config = Self {
            format: "rockup-repository".into(),
            version: ENCRYPTED_VERSION,
            repository_id: repo.to_string(),
            encryption: Encryption {
                cipher: CIPHER.into(),
                generation: 1,
                public_keys: Vec::new(),
                keyring: SealedKeyring {
                    salt: String::new(),
                    sealed: String::new(),
                },
                slots: Vec::new(),
                mac: String::new(),
            },
        };
        config.seal_keyring(random, &keyring);
        config.add_slot(random, &keyring, slot)?;
        Ok((config, keyring))
    }

    /// The repository id.
    pub fn repo(&self) -> Result<RepoId, String> {
        RepoId::parse(&self.repository_id)
            .ok_or_else(|| "repository id is not 16 bytes of hex".into())
    }

    /// Checks everything a reader acts on that needs no key: the cipher,
    /// counts, names, lengths, KDF parameters.
    pub fn check(&self) -> Result<(), String> {
        self.repo()?;
        let e = &self.encryption;
        if e.cipher != CIPHER {
            return Err(format!(
                "cipher suite {:?} is not one this rockup knows (upgrade rockup)",
                e.cipher
            ));
        }
        if e.slots.is_empty() || e.slots.len() > MAX_SLOTS {
            return Err(format!(
                "{} key slots (1 to {MAX_SLOTS} allowed)",
                e.slots.len()
            ));
        }
        let listed = e.public_keys.len();
        if listed == 0
            || listed > MAX_GENERATIONS
            || e.public_keys.last().map(|g| g.generation) != Some(e.generation)
        {
            return Err("the public keys do not end with the current generation's".into());
        }
        for pair in e.public_keys.windows(2) {
            if pair[0].generation >= pair[1].generation {
                return Err("the generations are not in order".into());
            }
        }
        for key in &e.public_keys {
            hex32(&key.public_key, "a public key")?;
        }
        hex32(&e.mac, "the MAC")?;
        hex_of_len(&e.keyring.salt, 16, "the keyring's salt")?;
        lowercase_hex(&e.keyring.sealed, "the keyring")?;
        let sealed = hex::decode(&e.keyring.sealed).map_err(|_| "the keyring is not hex")?;
        if sealed.len() > 1 << 20 {
            return Err("the keyring is larger than 1 MiB".into());
        }
        let mut names = std::collections::HashSet::new();
        for slot in &e.slots {
            check_slot(slot)?;
            if !names.insert(slot.name()) {
                return Err(format!("two key slots are named {:?}", slot.name()));
            }
        }
        Ok(())
    }

    /// The current generation's public key, once the MAC under `naming`
    /// proves the list is the repository's own.
    fn public_key(&self, naming: &Naming) -> Result<[u8; 32], String> {
        let mac = hex32(&self.encryption.mac, "the MAC")?;
        if !hmac_verify(naming.config_key(), &[&self.mac_input()?], &mac) {
            return Err(
                "its public keys do not authenticate (forged, or another repository's)".into(),
            );
        }
        let current = self.encryption.public_keys.last().expect("checked");
        hex32(&current.public_key, "a public key")
    }

    fn mac_input(&self) -> Result<Vec<u8>, String> {
        let mut input = b"rockup config v3".to_vec();
        input.extend_from_slice(self.repo()?.as_bytes());
        input.extend_from_slice(&self.encryption.generation.to_be_bytes());
        for key in &self.encryption.public_keys {
            input.extend_from_slice(&key.generation.to_be_bytes());
            input.extend_from_slice(&hex32(&key.public_key, "a public key")?);
        }
        Ok(input)
    }

    /// Unlocks the config with `secrets`.
    pub fn unlock(&self, secrets: &Secrets<'_>) -> Result<Unlocked, UnlockError> {
        self.check().map_err(UnlockError::Damaged)?;
        let repo = self.repo().map_err(UnlockError::Damaged)?;
        if let Some(write) = secrets.write_key {
            if write.repo != repo {
                return Err(UnlockError::WrongKey(format!(
                    "the write key is for repository {}, this is {repo}",
                    write.repo
                )));
            }
            let naming = Naming::new(repo, &write.naming);
            let public_key = self.public_key(&naming).map_err(UnlockError::Damaged)?;
            return Ok(Unlocked {
                repo,
                naming,
                generation: self.encryption.generation,
                public_key,
                keyring: None,
                slot: None,
            });
        }
        let (master, slot) = self.open_slot(&repo, secrets)?;
        let keyring = self
            .open_keyring(&repo, &master)
            .map_err(UnlockError::Damaged)?;
        let naming = Naming::new(repo, &keyring.naming);
        let public_key = self.public_key(&naming).map_err(UnlockError::Damaged)?;
        self.check_public_keys(&repo, &keyring)
            .map_err(UnlockError::Damaged)?;
        Ok(Unlocked {
            repo,
            naming,
            generation: self.encryption.generation,
            public_key,
            keyring: Some(keyring),
            slot: Some(slot),
        })
    }

    /// The newest master key, from the first slot `secrets` open.
    fn open_slot(
        &self,
        repo: &RepoId,
        secrets: &Secrets<'_>,
    ) -> Result<(SecretKey, String), UnlockError> {
        let generation = self.encryption.generation;
        for slot in &self.encryption.slots {
            let context = slot_context(repo, slot.name(), generation);
            let opened = match (slot, secrets.identity, secrets.passphrase) {
                (
                    Slot::Recipient {
                        recipient,
                        ephemeral,
                        wrapped,
                        ..
                    },
                    Some(identity),
                    _,
                ) if *recipient == identity.recipient().to_string() => {
                    let ephemeral =
                        hex32(ephemeral, "an ephemeral key").map_err(UnlockError::Damaged)?;
                    let wrapped =
                        hex_of_len(wrapped, 48, "a wrapped key").map_err(UnlockError::Damaged)?;
                    unwrap_with(&identity.0, &ephemeral, &context, &wrapped)
                }
                (
                    Slot::Passphrase {
                        kdf, salt, wrapped, ..
                    },
                    _,
                    Some(passphrase),
                ) => {
                    let salt = hex_of_len(salt, 16, "a salt").map_err(UnlockError::Damaged)?;
                    let wrapped =
                        hex_of_len(wrapped, 48, "a wrapped key").map_err(UnlockError::Damaged)?;
                    let kek = argon2id(
                        passphrase.as_bytes(),
                        &salt,
                        (kdf.memory_kib, kdf.iterations, kdf.parallelism),
                    )
                    .map_err(UnlockError::Damaged)?;
                    unseal_key(&kek, &context, &wrapped)
                }
                _ => None,
            };
            if let Some(master) = opened {
                return Ok((master, slot.name().to_string()));
            }
        }
        let tried = match (secrets.identity, secrets.passphrase) {
            (Some(identity), _) => {
                format!("the identity of {} opens no key slot", identity.recipient())
            }
            (None, Some(_)) => {
                "the passphrase opens no key slot (wrong passphrase, or its slot was removed)"
                    .into()
            }
            (None, None) => "no key was given".into(),
        };
        Err(UnlockError::WrongKey(tried))
    }

    /// This config's keyring, opened with the newest master key of `known`
    /// (a keyring unlocked earlier): fails if the config changed generation
    /// since, so an edit never drops a generation someone else added.
    pub fn reopen(&self, known: &Keyring) -> Result<Keyring, String> {
        let (generation, master) = known.current();
        if self.encryption.generation != generation {
            return Err(format!(
                "the repository's keys changed while this ran (generation {} is now {}); run again",
                generation, self.encryption.generation
            ));
        }
        self.open_keyring(&self.repo()?, master)
    }

    fn open_keyring(&self, repo: &RepoId, master: &SecretKey) -> Result<Keyring, String> {
        let generation = self.encryption.generation;
        let salt = hex_of_len(&self.encryption.keyring.salt, 16, "the keyring's salt")?;
        let mut sealed =
            hex::decode(&self.encryption.keyring.sealed).map_err(|_| "the keyring is not hex")?;
        let key = hkdf(master.expose(), &salt, &[b"rockup keyring key"]);
        let len = Aead::new(&key)
            .open([0; 12], &keyring_context(repo, generation), &mut sealed)
            .ok_or("the keyring does not open with the key its slot holds (damaged)")?;
        sealed.truncate(len);
        let sealed = Zeroizing::new(sealed);
        let text: KeyringText =
            serde_json::from_slice(&sealed).map_err(|_| "the keyring is unreadable")?;
        let naming = SecretKey::from_bytes(hex32(&text.naming, "the naming key")?);
        let mut masters = BTreeMap::new();
        for (generation, hex) in &text.masters {
            masters.insert(
                *generation,
                SecretKey::from_bytes(hex32(hex, "a master key")?),
            );
        }
        let keyring = Keyring { naming, masters };
        match keyring.masters.keys().next_back() == Some(&generation)
            && &keyring.masters[&generation] == master
        {
            true => Ok(keyring),
            false => Err("the keyring's newest master key is not the slots'".into()),
        }
    }

    /// Every listed public key must be its generation's.
    fn check_public_keys(&self, repo: &RepoId, keyring: &Keyring) -> Result<(), String> {
        for key in &self.encryption.public_keys {
            let master = keyring
                .masters
                .get(&key.generation)
                .ok_or("a generation has no master key")?;
            if hex::encode(generation_public(repo, master)) != key.public_key {
                return Err(format!(
                    "generation {}'s public key is not its master key's",
                    key.generation
                ));
            }
        }
        Ok(())
    }

    /// Seals `keyring` into the config and lists its public keys, authenticated.
    fn seal_keyring(&mut self, random: &dyn Random, keyring: &Keyring) {
        let repo = self.repo().expect("a created config has an id");
        let (generation, master) = keyring.current();
        let text = KeyringText {
            naming: Zeroizing::new(hex::encode(keyring.naming.expose())),
            masters: keyring
                .masters
                .iter()
                .map(|(g, k)| (*g, Zeroizing::new(hex::encode(k.expose()))))
                .collect(),
        };
        let mut sealed = Zeroizing::new(serde_json::to_vec(&text).expect("serializes")).to_vec();
        let mut salt = [0u8; 16];
        random.fill(&mut salt);
        let key = hkdf(master.expose(), &salt, &[b"rockup keyring key"]);
        Aead::new(&key).seal([0; 12], &keyring_context(&repo, generation), &mut sealed);
        let e = &mut self.encryption;
        e.generation = generation;
        e.keyring = SealedKeyring {
            salt: hex::encode(salt),
            sealed: hex::encode(sealed),
        };
        e.public_keys = keyring
            .masters
            .iter()
            .map(|(g, k)| GenerationKey {
                generation: *g,
                public_key: hex::encode(generation_public(&repo, k)),
            })
            .collect();
        let naming = Naming::new(repo, &keyring.naming);
        let mac = hmac(
            naming.config_key(),
            &[&self.mac_input().expect("just listed")],
        );
        self.encryption.mac = hex::encode(mac);
    }

    /// Adds a slot holding the newest master key.
    pub fn add_slot(
        &mut self,
        random: &dyn Random,
        keyring: &Keyring,
        slot: NewKey,
    ) -> Result<(), String> {
        check_name(slot.name())?;
        if self
            .encryption
            .slots
            .iter()
            .any(|s| s.name() == slot.name())
        {
            return Err(format!("a key slot is already named {:?}", slot.name()));
        }
        if self.encryption.slots.len() >= MAX_SLOTS {
            return Err(format!("a repository holds at most {MAX_SLOTS} key slots"));
        }
        let slot = self.make_slot(random, keyring, slot)?;
        self.encryption.slots.push(slot);
        Ok(())
    }

    fn make_slot(
        &self,
        random: &dyn Random,
        keyring: &Keyring,
        slot: NewKey,
    ) -> Result<Slot, String> {
        let repo = self.repo()?;
        let (generation, master) = keyring.current();
        let context = slot_context(&repo, slot.name(), generation);
        Ok(match slot {
            NewKey::Passphrase {
                name,
                passphrase,
                kdf,
            } => {
                kdf.check()?;
                if passphrase.is_empty() {
                    return Err("an empty passphrase protects nothing".into());
                }
                let mut salt = [0u8; 16];
                random.fill(&mut salt);
                let kek = argon2id(
                    passphrase.as_bytes(),
                    &salt,
                    (kdf.memory_kib, kdf.iterations, kdf.parallelism),
                )?;
                let wrapped = hex::encode(seal_key(&kek, &context, master));
                Slot::Passphrase {
                    name,
                    kdf,
                    salt: hex::encode(salt),
                    wrapped,
                }
            }
            NewKey::Recipient { name, recipient } => {
                let (ephemeral, wrapped) = wrap_for(random, &recipient.0, &context, master);
                Slot::Recipient {
                    name,
                    recipient: recipient.to_string(),
                    ephemeral: hex::encode(ephemeral),
                    wrapped: hex::encode(wrapped),
                }
            }
        })
    }

    /// Removes the slot `name`; the last slot is never removed.
    pub fn remove_slot(&mut self, name: &str) -> Result<(), String> {
        let slots = &mut self.encryption.slots;
        let Some(at) = slots.iter().position(|s| s.name() == name) else {
            return Err(format!(
                "no key slot is named {name:?} (`rockup key list` shows them)"
            ));
        };
        if slots.len() == 1 {
            return Err(format!(
                "{name:?} is the only key slot: removing it would lock everybody out; add another first"
            ));
        }
        slots.remove(at);
        Ok(())
    }

    /// Replaces slot `name` with `slot` (same name: a new passphrase).
    pub fn replace_slot(
        &mut self,
        random: &dyn Random,
        keyring: &Keyring,
        slot: NewKey,
    ) -> Result<(), String> {
        let at = self
            .encryption
            .slots
            .iter()
            .position(|s| s.name() == slot.name())
            .ok_or_else(|| format!("no key slot is named {:?}", slot.name()))?;
        self.encryption.slots[at] = self.make_slot(random, keyring, slot)?;
        Ok(())
    }

    /// A new generation: a new master key for everything sealed from now on,
    /// the old ones kept in the keyring. Recipient slots are wrapped again
    /// (their public keys suffice); passphrase slots other than `keep` cannot
    /// be (their passphrases are unknown here) and are removed — their names
    /// are returned. `keep` is re-made with `passphrase`.
    pub fn rotate(
        &mut self,
        random: &dyn Random,
        keyring: &mut Keyring,
        keep: Option<NewKey>,
    ) -> Result<Vec<String>, String> {
        let (generation, _) = keyring.current();
        keyring
            .masters
            .insert(generation + 1, SecretKey::random(random));
        self.seal_keyring(random, keyring);
        let old = std::mem::take(&mut self.encryption.slots);
        let mut dropped = Vec::new();
        let keep_name = keep.as_ref().map(|s| s.name().to_string());
        for slot in old {
            match slot {
                Slot::Recipient {
                    name, recipient, ..
                } => {
                    let recipient = recipient.parse()?;
                    let slot =
                        self.make_slot(random, keyring, NewKey::Recipient { name, recipient })?;
                    self.encryption.slots.push(slot);
                }
                Slot::Passphrase { name, .. } if Some(&name) == keep_name.as_ref() => {}
                Slot::Passphrase { name, .. } => dropped.push(name),
            }
        }
        if let Some(keep) = keep {
            let slot = self.make_slot(random, keyring, keep)?;
            self.encryption.slots.push(slot);
        }
        if self.encryption.slots.is_empty() {
            return Err("rotation would leave no key slot".into());
        }
        Ok(dropped)
    }
}

fn check_name(name: &str) -> Result<(), String> {
    match !name.is_empty() && name.len() <= MAX_NAME && !name.chars().any(char::is_control) {
        true => Ok(()),
        false => Err(format!(
            "key slot name {name:?} must be 1 to {MAX_NAME} printable characters"
        )),
    }
}

fn check_slot(slot: &Slot) -> Result<(), String> {
    check_name(slot.name())?;
    match slot {
        Slot::Passphrase {
            kdf, salt, wrapped, ..
        } => {
            kdf.check()?;
            hex_of_len(salt, 16, "a salt")?;
            hex_of_len(wrapped, 48, "a wrapped key")?;
        }
        Slot::Recipient {
            recipient,
            ephemeral,
            wrapped,
            ..
        } => {
            recipient.parse::<Recipient>()?;
            hex32(ephemeral, "an ephemeral key")?;
            hex_of_len(wrapped, 48, "a wrapped key")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::crypto::primitives::SystemRandom;

    fn passphrase(name: &str, text: &str) -> NewKey {
        NewKey::Passphrase {
            name: name.into(),
            passphrase: Zeroizing::new(text.into()),
            kdf: KdfParams::MIN,
        }
    }

    fn with_passphrase(text: &str) -> Secrets<'_> {
        Secrets {
            write_key: None,
            identity: None,
            passphrase: Some(text),
        }
    }

    #[test]
    fn slots_open_the_newest_master_and_rotation_keeps_the_old_ones() {
        let (mut config, mut keyring) =
            Config::create(&SystemRandom, passphrase("first", "one")).unwrap();
        let unlocked = config.unlock(&with_passphrase("one")).unwrap();
        assert_eq!(unlocked.slot.as_deref(), Some("first"));
        assert!(matches!(
            config.unlock(&with_passphrase("two")),
            Err(UnlockError::WrongKey(_))
        ));
        let identity = Identity::generate();
        let recipient = NewKey::Recipient {
            name: "restore".into(),
            recipient: identity.recipient(),
        };
        config.add_slot(&SystemRandom, &keyring, recipient).unwrap();
        config
            .add_slot(&SystemRandom, &keyring, passphrase("ops", "three"))
            .unwrap();
        let by_identity = Secrets {
            write_key: None,
            identity: Some(&identity),
            passphrase: None,
        };
        assert_eq!(
            config.unlock(&by_identity).unwrap().slot.as_deref(),
            Some("restore")
        );
        let before = unlocked.public_key;
        let dropped = config
            .rotate(
                &SystemRandom,
                &mut keyring,
                Some(passphrase("first", "one")),
            )
            .unwrap();
        assert_eq!(dropped, ["ops"]);
        let rotated = config.unlock(&with_passphrase("one")).unwrap();
        assert_eq!(rotated.generation, 2);
        assert_ne!(rotated.public_key, before);
        assert_eq!(
            rotated.keyring.unwrap().masters.len(),
            2,
            "the old master is kept"
        );
        assert!(
            config.unlock(&by_identity).is_ok(),
            "recipients are wrapped again"
        );
        assert!(
            config.unlock(&with_passphrase("three")).is_err(),
            "a dropped slot no longer opens"
        );
        config.remove_slot("restore").unwrap();
        assert!(config
            .remove_slot("first")
            .unwrap_err()
            .contains("only key slot"));
    }

    #[test]
    fn a_write_key_gets_the_public_key_only_if_the_config_is_authentic() {
        let (config, keyring) = Config::create(&SystemRandom, passphrase("first", "one")).unwrap();
        let write = WriteKey {
            repo: config.repo().unwrap(),
            naming: keyring.naming.clone(),
        };
        let secrets = Secrets {
            write_key: Some(&write),
            identity: None,
            passphrase: None,
        };
        let unlocked = config.unlock(&secrets).unwrap();
        assert!(unlocked.keyring.is_none());
        let mut forged = config.clone();
        forged.encryption.public_keys[0].public_key = hex::encode([9u8; 32]);
        assert!(matches!(
            forged.unlock(&secrets),
            Err(UnlockError::Damaged(_))
        ));
        let elsewhere = WriteKey {
            repo: RepoId::random(&SystemRandom),
            naming: keyring.naming.clone(),
        };
        let secrets = Secrets {
            write_key: Some(&elsewhere),
            identity: None,
            passphrase: None,
        };
        assert!(matches!(
            config.unlock(&secrets),
            Err(UnlockError::WrongKey(_))
        ));
    }

    fn passphrase_slot(config: &mut Config) -> (&mut KdfParams, &mut String, &mut String) {
        match &mut config.encryption.slots[0] {
            Slot::Passphrase {
                kdf, salt, wrapped, ..
            } => (kdf, salt, wrapped),
            Slot::Recipient { .. } => unreachable!("created with a passphrase"),
        }
    }

    /// A change made to a config, and a word the refusal must contain.
    type Forgery = (fn(&mut Config), &'static str);

    #[test]
    fn forged_configs_fail_closed() {
        let (config, _) = Config::create(&SystemRandom, passphrase("first", "one")).unwrap();
        let cases: [Forgery; 8] = [
            (|c| passphrase_slot(c).0.memory_kib = u32::MAX, "outside"),
            (|c| passphrase_slot(c).0.iterations = 1_000_000, "outside"),
            (|c| passphrase_slot(c).0.memory_kib = 8, "outside"),
            (|c| *passphrase_slot(c).1 = "00".into(), "salt"),
            (|c| *passphrase_slot(c).2 = "00".repeat(47), "wrapped"),
            (|c| c.encryption.slots.clear(), "key slots"),
            (|c| c.encryption.cipher = "rot13".into(), "cipher"),
            (|c| c.repository_id = "zz".into(), "repository id"),
        ];
        for (forge, expected) in cases {
            let mut forged = config.clone();
            forge(&mut forged);
            match forged.unlock(&with_passphrase("one")) {
                Err(UnlockError::Damaged(why)) => {
                    assert!(why.contains(expected), "{expected}: {why}")
                }
                other => panic!("{expected}: {:?}", other.err()),
            }
        }
    }
}
