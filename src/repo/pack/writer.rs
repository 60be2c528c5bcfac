//! Writing packs: frames are appended to the pack being filled; a pack is
//! sealed at [`PACK_TARGET`] bytes or [`MAX_ENTRIES`] entries and stored by a
//! task — the pack in one PUT, then its index — while the next one fills. At
//! most [`PACKS_IN_FLIGHT`] sealed packs are held at once (adding waits), so
//! memory stays within `(PACKS_IN_FLIGHT + 1) × PACK_TARGET`.
//! [`Packer::finish`] returns once every pack and index is stored; only then
//! may a manifest reference their content.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::index::{IndexEntry, PackIndex, MAX_ENTRIES};
use super::{PACK_MAGIC, PACK_TARGET};
use crate::digest::Sha256;
use crate::error::Result;
use crate::repo::ids::PackId;
use crate::repo::layout;
use crate::repo::Repository;

/// Sealed packs being stored at once.
pub const PACKS_IN_FLIGHT: usize = 2;

/// The pack being filled.
struct Filling {
    id: PackId,
    bytes: Vec<u8>,
    entries: Vec<IndexEntry>,
}

impl Filling {
    fn new() -> Self {
        let mut bytes = Vec::with_capacity(PACK_TARGET + (1 << 20));
        bytes.extend_from_slice(PACK_MAGIC);
        Self {
            id: PackId::random(),
            bytes,
            entries: Vec::new(),
        }
    }

    fn is_full(&self) -> bool {
        self.bytes.len() >= PACK_TARGET || self.entries.len() >= MAX_ENTRIES
    }
}

/// What the packer stored.
#[derive(Debug, Default, Clone)]
pub struct PackStats {
    /// Packs stored.
    pub packs: u64,
    /// Their bytes, indexes included.
    pub bytes: u64,
    /// Their ids.
    pub ids: Vec<PackId>,
}

/// Fills and stores packs for one run.
pub struct Packer {
    repo: Repository,
    filling: Mutex<Filling>,
    uploads: Mutex<JoinSet<Result<(PackId, u64)>>>,
    slots: Arc<Semaphore>,
    stored: Mutex<PackStats>,
}

impl Packer {
    pub fn new(repo: &Repository) -> Self {
        Self {
            repo: repo.clone(),
            filling: Mutex::new(Filling::new()),
            uploads: Mutex::new(JoinSet::new()),
            slots: Arc::new(Semaphore::new(PACKS_IN_FLIGHT)),
            stored: Mutex::default(),
        }
    }

    /// Appends one frame holding content `sha256` of `size` bytes. Waits
    /// while [`PACKS_IN_FLIGHT`] sealed packs are being stored.
    pub async fn add(&self, sha256: &Sha256, size: u64, frame: &[u8]) -> Result<()> {
        let sealed = {
            let mut filling = self.filling.lock().expect("not poisoned");
            let offset = filling.bytes.len() as u64;
            filling.bytes.extend_from_slice(frame);
            filling.entries.push(IndexEntry {
                sha256: *sha256,
                offset,
                length: frame.len() as u64,
                size,
            });
            filling
                .is_full()
                .then(|| std::mem::replace(&mut *filling, Filling::new()))
        };
        match sealed {
            Some(sealed) => self.store(sealed).await,
            None => Ok(()),
        }
    }

    /// Stores the last pack; returns once every pack and index is stored.
    pub async fn finish(&self) -> Result<PackStats> {
        let last = std::mem::replace(
            &mut *self.filling.lock().expect("not poisoned"),
            Filling::new(),
        );
        if !last.entries.is_empty() {
            self.store(last).await?;
        }
        let mut uploads = std::mem::take(&mut *self.uploads.lock().expect("not poisoned"));
        while let Some(done) = uploads.join_next().await {
            self.count(done??);
        }
        Ok(self.stored.lock().expect("not poisoned").clone())
    }

    fn count(&self, (id, bytes): (PackId, u64)) {
        let mut stored = self.stored.lock().expect("not poisoned");
        stored.packs += 1;
        stored.bytes += bytes;
        stored.ids.push(id);
    }

    /// Hands a sealed pack to a storing task, once a slot is free; fails
    /// early with the error of a pack stored before.
    async fn store(&self, sealed: Filling) -> Result<()> {
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");
        let repo = self.repo.clone();
        let mut uploads = self.uploads.lock().expect("not poisoned");
        while let Some(done) = uploads.try_join_next() {
            self.count(done??);
        }
        uploads.spawn(store_pack(repo, sealed, slot));
        Ok(())
    }
}

/// Stores a pack, then its index; returns its id and the bytes sent.
async fn store_pack(
    repo: Repository,
    sealed: Filling,
    _slot: OwnedSemaphorePermit,
) -> Result<(PackId, u64)> {
    let pack_size = sealed.bytes.len() as u64;
    repo.put(&layout::pack(sealed.id), Bytes::from(sealed.bytes))
        .await?;
    let index = PackIndex::new(sealed.id, pack_size, sealed.entries);
    let stored = super::stored_index::encode(&repo, &index).await?;
    let index_size = stored.len() as u64;
    repo.put(&layout::pack_index(index.pack), stored).await?;
    Ok((index.pack, pack_size + index_size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::pack::codec;

    #[tokio::test]
    async fn packs_hold_what_their_indexes_say() {
        let repo = Repository::from_store(Arc::new(object_store::memory::InMemory::new()), "m");
        let packer = Packer::new(&repo);
        let content = vec![7u8; 300 << 10];
        let mut contents = std::collections::HashMap::new();
        for i in 0..120u32 {
            let mut c = content.clone();
            c[..4].copy_from_slice(&i.to_le_bytes());
            let sha = Sha256::of(&c);
            packer
                .add(&sha, c.len() as u64, &codec::encode(&c, 0))
                .await
                .unwrap();
            contents.insert(sha, c);
        }
        let stats = packer.finish().await.unwrap();
        assert_eq!(stats.packs, 3, "36 MB in packs of 16 MiB");
        let mut found = 0;
        for meta in repo.list(layout::INDEX).await.unwrap() {
            let id = layout::parse_index_key(meta.location.as_ref()).unwrap();
            let index =
                PackIndex::parse(id, &repo.get(&meta.location, 1 << 20).await.unwrap()).unwrap();
            let pack = repo.get(&layout::pack(id), 1 << 30).await.unwrap();
            assert_eq!(index.pack_size, pack.len() as u64);
            for e in index.entries {
                let frame = &pack[e.offset as usize..(e.offset + e.length) as usize];
                assert_eq!(
                    codec::decode(frame, e.size, None).unwrap(),
                    contents[&e.sha256]
                );
                found += 1;
            }
        }
        assert_eq!(found, 120);
    }
}
