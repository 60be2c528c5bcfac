//! Helpers at the bottom, shared by both sides: the source side (`crate::source`)
//! and the repository side (`crate::repo`) import from here and never from each
//! other. Nothing here knows object storage; `rocks` and `spool` know RocksDB only
//! as a library (opening a database read-only with its own OPTIONS; a scratch
//! sorted map), not the database being backed up.

pub mod cleanup;
pub mod durable;
pub mod glob;
pub mod names;
pub mod nofollow;
pub mod progress;
pub mod references;
pub mod rocks;
pub mod spool;
pub mod tasks;
pub mod units;
