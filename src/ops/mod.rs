//! The operations a user runs, each reading top to bottom as its pipeline. They
//! are the only modules that import both sides (`crate::source` and
//! `crate::repo`).
//!
//! | module | owns |
//! |---|---|
//! | `backup` | checkpoint → pin → transfer (dedup + upload) → commit |
//! | `follow` | continuous protection: base backups, then WAL segments and new files as they are written; merging; lag |
//! | `inspect` | looking inside backups without restoring: `ls`, `find`, `diff` |
//! | `restore` | verified parallel download into staging, placement, post-restore checks; `dump` of one file |
//! | `verify` | existence and size by LIST; `--deep` re-hashing |
//! | `prune` | retention per policy, garbage collection with a grace period |
//! | `copy` | committed backups copied, verified (re-encrypted where keys differ), to a second repository |
//! | `keys` | `init` (encrypted by default) and key slots: add, remove, passwd, rotate, write keys |

pub mod backup;
pub mod copy;
pub mod follow;
pub mod inspect;
pub mod keys;
pub mod prune;
pub mod restore;
pub mod verify;
