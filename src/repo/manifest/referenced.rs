//! What a backup needs from the repository, walked in one place: its parts,
//! then every database file and every external file they list, each with
//! where its bytes are (an object of its own, or content by hash), its size
//! and its SHA-256. Prune marks what it walks, verify checks it, copy sends
//! it, restore writes it; each keeps only its own decision.
//!
//! Parts are read one at a time (a part holds at most 100,000 entries), so a
//! million files never sit in memory. A part that cannot be read is one
//! error in the stream, which goes on with the next part: verify reports it
//! and carries on, the others stop at it.

use futures::{Stream, StreamExt};

use super::{DbFileEntry, ExternalEntry, Header, PartEntry, PartKind, PartRef, Stored};
use crate::digest::Sha256;
use crate::error::Result;
use crate::repo::crypto::sealed::Kind;
use crate::repo::layout;
use crate::repo::Repository;

/// One thing a backup needs: where its bytes are, how many, their hash, and
/// the entry that needs it.
#[derive(Debug, Clone)]
pub struct Referenced {
    /// An object of its own (its key in this repository), or content by hash.
    pub stored: Stored,
    /// Bytes as stored (a part) or as restored (a file's content).
    pub size: u64,
    /// SHA-256 of those bytes.
    pub sha256: Sha256,
    /// What needs it.
    pub entry: Entry,
}

impl Referenced {
    /// What its object is sealed as, in an encrypted repository.
    pub fn kind(&self) -> Kind {
        match (&self.entry, &self.stored) {
            (Entry::Part(_), _) => Kind::Part,
            (_, Stored::Object(_)) => Kind::Table,
            (_, Stored::Content) => Kind::Content,
        }
    }

    /// Bytes its object (not content in a pack) takes in `repo`: a part's as
    /// recorded, a file's as sealed where the repository is encrypted.
    pub fn object_size(&self, repo: &Repository) -> u64 {
        match self.entry {
            Entry::Part(_) => self.size,
            _ => repo.stored_len(self.size),
        }
    }
}

/// What needs a [`Referenced`].
#[derive(Debug, Clone)]
pub enum Entry {
    /// The manifest: one of its parts.
    Part(PartKind),
    /// A database file.
    Db(DbFileEntry),
    /// An external file.
    External(ExternalEntry),
}

impl Header {
    /// Everything this backup needs: its parts, then its database files, then
    /// its external files, part by part.
    pub fn referenced<'a>(
        &'a self,
        repo: &'a Repository,
    ) -> impl Stream<Item = Result<Referenced>> + Send + 'a {
        let parts = self.parts.iter().map(|part| Ok(self.part_needed(part)));
        let db = self
            .entry_stream(repo)
            .map(|e| e.map(|db| db_needed(repo, db)));
        let external = self.entry_stream(repo).map(|e| e.map(external_needed));
        futures::stream::iter(parts).chain(db).chain(external)
    }

    fn part_needed(&self, part: &PartRef) -> Referenced {
        Referenced {
            stored: Stored::Object(layout::part(&self.backup_id, &part.sha256)),
            size: part.bytes,
            sha256: part.sha256,
            entry: Entry::Part(part.kind),
        }
    }

    /// Every entry of type `T`, one part read at a time; a part that cannot
    /// be read is an error item, and the walk goes on with the next.
    fn entry_stream<'a, T: PartEntry + Send + 'a>(
        &'a self,
        repo: &'a Repository,
    ) -> impl Stream<Item = Result<T>> + Send + 'a {
        futures::stream::iter(self.parts_of::<T>())
            .then(move |part| self.read_part::<T>(repo, part))
            .flat_map(|read| {
                let items: Vec<Result<T>> = match read {
                    Ok(entries) => entries.into_iter().map(Ok).collect(),
                    Err(e) => vec![Err(e)],
                };
                futures::stream::iter(items)
            })
    }
}

fn db_needed(repo: &Repository, entry: DbFileEntry) -> Referenced {
    let stored = match entry.stored() {
        Stored::Object(logical) => Stored::Object(repo.object_key_of(&logical)),
        Stored::Content => Stored::Content,
    };
    Referenced {
        stored,
        size: entry.size,
        sha256: entry.sha256,
        entry: Entry::Db(entry),
    }
}

fn external_needed(entry: ExternalEntry) -> Referenced {
    Referenced {
        stored: Stored::Content,
        size: entry.size,
        sha256: entry.sha256,
        entry: Entry::External(entry),
    }
}
