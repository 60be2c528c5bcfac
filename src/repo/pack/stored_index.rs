//! How a pack index is stored. In a plaintext repository: its JSON. In an
//! encrypted one:
//!
//! ```text
//! "RKN1" | count (4, big-endian) | count content names (32 each) | HMAC (32) | sealed JSON
//! ```
//!
//! The names — keyed hashes, which say nothing of the content — let a
//! write-only host deduplicate against what the packs hold without opening
//! anything; the HMAC (under a key derived from the naming key, over the
//! repository id, the pack id and the names) keeps the store from adding
//! names that would make such a host skip content. The JSON, sealed as kind
//! `Index` bound to `index/<pack id>`, is what a full key reads; its entries
//! must be the names' content.

use bytes::Bytes;

use super::index::{PackIndex, MAX_ENTRIES};
use crate::error::Result;
use crate::repo::crypto::keys::ContentName;
use crate::repo::crypto::sealed::Kind;
use crate::repo::ids::PackId;
use crate::repo::layout;
use crate::repo::Repository;

const MAGIC: &[u8; 4] = b"RKN1";

/// What an index object tells this host.
pub enum IndexRead {
    /// Everything: a plaintext index, or a sealed one opened with the full key.
    Full(PackIndex),
    /// The content names only (a write-only host).
    Names(Vec<ContentName>),
}

/// `index` as `repo` stores it.
pub async fn encode(repo: &Repository, index: &PackIndex) -> Result<Bytes> {
    let json = Bytes::from(serde_json::to_vec(index).expect("index serializes"));
    let Some(crypt) = repo.crypt() else {
        return Ok(json);
    };
    let names: Vec<u8> = index
        .entries
        .iter()
        .flat_map(|e| crypt.content_name(&e.sha256).0)
        .collect();
    let mac = crypt
        .keys
        .naming
        .index_names_mac(&index.pack.to_bytes(), &names);
    let key = layout::pack_index(index.pack);
    let sealed = repo.seal((Kind::Index, key.as_ref()), json).await?;
    let count = (index.entries.len() as u32).to_be_bytes();
    Ok(Bytes::from(
        [MAGIC.as_slice(), &count, &names, &mac, &sealed].concat(),
    ))
}

/// Reads the index object of pack `id`; `Err(why)` when it is unusable.
pub async fn decode(
    repo: &Repository,
    id: PackId,
    bytes: Bytes,
) -> Result<std::result::Result<IndexRead, String>> {
    let Some(crypt) = repo.crypt() else {
        return Ok(PackIndex::parse(id, &bytes).map(IndexRead::Full));
    };
    let section = match names_section(&bytes) {
        Ok(section) => section,
        Err(why) => return Ok(Err(why)),
    };
    let (names, sealed) = (section.names, section.sealed);
    if !crypt
        .keys
        .naming
        .verify_index_names(&id.to_bytes(), section.listed, section.mac)
    {
        return Ok(Err(
            "its content names do not authenticate (forged, or another pack's)".into(),
        ));
    }
    if crypt.keys.keyring.is_none() {
        return Ok(Ok(IndexRead::Names(names)));
    }
    let key = layout::pack_index(id);
    let json = match repo.unseal((Kind::Index, key.as_ref()), sealed).await {
        Ok(json) => json,
        Err(e @ crate::error::Error::Manifest { .. }) => return Ok(Err(e.to_string())),
        Err(e) => return Err(e),
    };
    let index = match PackIndex::parse(id, &json) {
        Ok(index) => index,
        Err(why) => return Ok(Err(why)),
    };
    let named = index.entries.iter().map(|e| crypt.content_name(&e.sha256));
    match named.eq(names.iter().copied()) {
        true => Ok(Ok(IndexRead::Full(index))),
        false => Ok(Err("its content names are not its entries' content".into())),
    }
}

/// A stored index's parts: its names (parsed, and as listed), their MAC,
/// and the sealed JSON after them.
struct NamesSection<'a> {
    names: Vec<ContentName>,
    listed: &'a [u8],
    mac: &'a [u8],
    sealed: Bytes,
}

fn names_section(bytes: &Bytes) -> std::result::Result<NamesSection<'_>, String> {
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err("not a sealed pack index (no RKN1 header)".into());
    }
    let count = u32::from_be_bytes(bytes[4..8].try_into().expect("4 bytes")) as usize;
    if count == 0 || count > MAX_ENTRIES {
        return Err(format!(
            "lists {count} content names (1 to {MAX_ENTRIES} allowed)"
        ));
    }
    let end = 8 + count * 32;
    if bytes.len() < end + 32 {
        return Err(format!(
            "is {} bytes, too short for {count} names",
            bytes.len()
        ));
    }
    let listed = &bytes[8..end];
    let names = listed
        .chunks_exact(32)
        .map(|name| ContentName(name.try_into().expect("32 bytes")))
        .collect();
    Ok(NamesSection {
        names,
        listed,
        mac: &bytes[end..end + 32],
        sealed: bytes.slice(end + 32..),
    })
}
