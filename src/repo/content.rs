//! Content by SHA-256, as a writer (backup, copy) stores it: never twice —
//! what the repository's indexes or content objects hold, or this run stored
//! already, is not sent again — a pack entry when smaller than
//! [`PACK_BELOW`](crate::repo::pack::PACK_BELOW) (zstd where it shrinks), a
//! content object `blobs/sha256/<aa>/<sha256>` otherwise. Content is
//! referenced by hash only, so where it lives can change (repacking) without
//! touching a manifest.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;

use bytes::Bytes;

use crate::common::tasks::blocking;
use crate::digest::Sha256;
use crate::error::Result;
use crate::repo::crypto::sealed::Kind;
use crate::repo::pack::{codec, writer::PackStats, ContentIndex, Packer, PACK_BELOW};
use crate::repo::upload::{check_expected, Content, Uploader, MIN_CHUNK};
use crate::repo::Repository;

/// zstd level used unless configured.
pub const DEFAULT_COMPRESSION_LEVEL: i32 = 3;

/// How content is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentOptions {
    /// zstd level for packed content (1–22); 0 stores it uncompressed.
    pub compression_level: i32,
    /// Pack small files (format 2); without, every file is a content object
    /// (format 1).
    pub pack: bool,
}

impl Default for ContentOptions {
    fn default() -> Self {
        Self {
            compression_level: DEFAULT_COMPRESSION_LEVEL,
            pack: true,
        }
    }
}

/// Stores content for one run.
pub struct ContentStore {
    /// What the repository holds, and what this run added.
    pub index: ContentIndex,
    packer: Packer,
    uploader: Uploader,
    /// Content being stored right now, so that two files with the same
    /// content are not both sent.
    claims: Mutex<HashSet<Sha256>>,
    options: ContentOptions,
}

/// The right to store one piece of content; given up when dropped.
struct Claim<'a> {
    store: &'a ContentStore,
    sha256: Sha256,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.store
            .claims
            .lock()
            .expect("not poisoned")
            .remove(&self.sha256);
    }
}

impl ContentStore {
    /// Loads what `repo` holds into a scratch index in `dir`.
    pub async fn open(
        repo: &Repository,
        uploader: Uploader,
        dir: &Path,
        options: ContentOptions,
    ) -> Result<Self> {
        let index = ContentIndex::load(repo, dir, true).await?;
        Ok(Self::with_index(index, uploader, options))
    }

    /// A store that takes for stored only what it stored itself (its
    /// scratch index in `dir`): for a writer that holds no lock against
    /// `prune`, which may delete content no backup references.
    pub fn own_only(uploader: Uploader, dir: &Path, options: ContentOptions) -> Result<Self> {
        let index = ContentIndex::empty(uploader.repository(), dir)?;
        Ok(Self::with_index(index, uploader, options))
    }

    fn with_index(index: ContentIndex, uploader: Uploader, options: ContentOptions) -> Self {
        Self {
            index,
            packer: Packer::new(uploader.repository()),
            uploader,
            claims: Mutex::default(),
            options,
        }
    }

    /// The uploader whole files go through.
    pub fn uploader(&self) -> &Uploader {
        &self.uploader
    }

    /// Stores the file at `path` (`size` bytes) unless the repository holds
    /// its content; returns its SHA-256. With `expect`, content that does not
    /// hash to it is an [`Error::HashMismatch`](crate::Error::HashMismatch)
    /// and stored nowhere.
    pub async fn store_file(
        &self,
        path: &Path,
        size: u64,
        expect: Option<&Sha256>,
    ) -> Result<Sha256> {
        // A large file whose hash is known ahead: read once, straight to its object.
        if let Some(expected) = expect.filter(|_| size > MIN_CHUNK) {
            if let Some(claim) = self.claim(expected)? {
                let key = self.uploader.repository().content_key(expected);
                let (sha256, _) = self
                    .uploader
                    .upload_file(path, (Kind::Content, &key), Some(expected))
                    .await?;
                self.index.note_held(&sha256)?;
                drop(claim);
                return Ok(sha256);
            }
        }
        let content = self.uploader.load(path, size).await?;
        check_expected(path, &content.sha256(), expect)?;
        self.store_loaded(path, &content).await?;
        Ok(content.sha256())
    }

    /// Stores content loaded from `path`, unless the repository holds it.
    pub async fn store_loaded(&self, path: &Path, content: &Content) -> Result<()> {
        let Some(claim) = self.claim(&content.sha256())? else {
            return Ok(());
        };
        let repo = self.uploader.repository();
        let key = repo.content_key(&content.sha256());
        match content {
            Content::Small { bytes, sha256, .. } if self.packs(bytes.len() as u64) => {
                let frame = self.entry_frame(bytes.clone(), sha256).await?;
                self.packer.add(sha256, bytes.len() as u64, &frame).await?;
            }
            Content::Small { .. } => {
                self.uploader
                    .put_small((Kind::Content, &key), content)
                    .await?
            }
            Content::Large { sha256, .. } => {
                let target = (Kind::Content, &key);
                self.uploader
                    .upload_file(path, target, Some(sha256))
                    .await?;
            }
        }
        self.index.note_held(&content.sha256())?;
        drop(claim);
        Ok(())
    }

    /// The pack frame of `plain`: compressed where that pays, then sealed
    /// (bound to its content name) where the repository is encrypted.
    async fn entry_frame(&self, plain: Bytes, sha256: &Sha256) -> Result<Vec<u8>> {
        let level = self.options.compression_level;
        let repo = self.uploader.repository();
        let session = repo.session().await?;
        let name = repo.content_name(sha256).to_string();
        blocking(move || {
            let frame = codec::encode(&plain, level);
            Ok(match session {
                Some(session) => codec::seal(&frame, &session, &name),
                None => frame,
            })
        })
        .await
    }

    /// Whether content of `size` bytes goes into a pack.
    fn packs(&self, size: u64) -> bool {
        self.options.pack && size < PACK_BELOW
    }

    /// Stores the last pack; returns once every pack is stored.
    pub async fn finish(&self) -> Result<PackStats> {
        self.packer.finish().await
    }

    fn claim(&self, sha256: &Sha256) -> Result<Option<Claim<'_>>> {
        let mut claims = self.claims.lock().expect("not poisoned");
        if claims.contains(sha256) || self.index.holds(sha256)? {
            return Ok(None);
        }
        claims.insert(*sha256);
        Ok(Some(Claim {
            store: self,
            sha256: *sha256,
        }))
    }
}
