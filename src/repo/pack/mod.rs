//! Packs (repository format 2): the content of small files — compressed
//! where that pays — concatenated into pack objects of about [`PACK_TARGET`]
//! bytes, so that thousands of files cost a handful of requests. A pack is
//! `RKPACK01` followed by frames ([`codec`]); its index ([`index`]) says where
//! each piece of content is. [`writer`] fills and stores packs; [`reader`]
//! reads entries back with coalesced range requests.

pub mod codec;
pub mod index;
pub mod reader;
pub mod stored_index;
pub mod writer;

pub use index::{ContentIndex, IndexEntry, Located, Location, PackInfo};
pub use writer::Packer;

/// A pack is sealed once it holds this many bytes.
pub const PACK_TARGET: usize = 16 << 20;
/// Files smaller than this are packed; larger ones are objects of their own.
pub const PACK_BELOW: u64 = 1 << 20;
/// The first bytes of every pack.
pub const PACK_MAGIC: &[u8; 8] = b"RKPACK01";
/// Where a pack's first frame starts.
pub const PACK_HEADER: u64 = PACK_MAGIC.len() as u64;
