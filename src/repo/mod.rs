//! The repository side: object storage and the repository format. Knows
//! `object_store`, the key layout, manifests and locks, nothing of RocksDB or of
//! the database being backed up (it imports only `crate::common` and
//! `crate::error`). The object encoding (packs, compression; later encryption)
//! lives here too.
//!
//! | module | owns |
//! |---|---|
//! | `store` | URL + options → [`Repository`]; reads, writes, write-once create, LIST, bulk delete, the marker, store errors |
//! | `ids` | backup ids, pack ids, format versions: parsed once, typed |
//! | `layout` | every object key, formatted and parsed |
//! | `manifest` | the header and its sorted, hash-named parts; load, validate, commit, list; what a backup references |
//! | `lock` | repository locks that keep prune and backups apart, and the locked commit |
//! | `upload` | streaming upload of local files with hashing, multipart and a memory budget |
//! | `pack` | packs of small files' content: frames and codecs, indexes, writing, coalesced reading |
//! | `content` | content by SHA-256 for a writer: deduplicated, a pack entry when small, a content object when large |
//! | `segment` | `follow`'s WAL segments: format, checks, listing, restore plans |

pub mod content;
pub mod crypto;
pub mod ids;
pub mod layout;
pub mod lock;
pub mod manifest;
pub mod pack;
pub mod segment;
mod store;
pub mod upload;

pub use store::{Created, RateLimiter, Repository, Traffic};
pub(crate) use store::{Fetched, RangeFetched, RangeKey};
