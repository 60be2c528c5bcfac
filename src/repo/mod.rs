//! The repository side: object storage and the repository format. Knows
//! `object_store`, the key layout, manifests and locks, nothing of RocksDB or of
//! the database being backed up (it imports only `crate::common` and
//! `crate::error`). Later the object encoding (packs, compression, encryption)
//! lives here too.
//!
//! | module | owns |
//! |---|---|
//! | `store` | URL + options → [`Repository`]; reads, writes, write-once create, LIST, bulk delete, the marker, store errors |
//! | `layout` | every object key, formatted and parsed |
//! | `manifest` | the header and its sorted, hash-named parts; load, validate, commit, list |
//! | `lock` | repository locks that keep prune and backups apart |
//! | `upload` | streaming upload of local files with hashing, multipart and a memory budget |

pub mod layout;
pub mod lock;
pub mod manifest;
mod store;
pub mod upload;

pub use store::{Created, Repository, Traffic};
pub(crate) use store::{Fetched, RangeRead};
