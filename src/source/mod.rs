//! The source side: reading the database being backed up and the files its
//! records reference. Knows RocksDB and the filesystem, nothing of object storage
//! or of the repository format (it imports only `crate::common` and
//! `crate::error`).
//!
//! | module | owns |
//! |---|---|
//! | `checkpoint` | the three ways in ([`Source`]), one read-only checkpoint at a known sequence number |
//! | `held` | checkpoints of a database another process holds and writes: WAL pins, attempts |
//! | `wal` | WAL files copied up to their last complete record, sequence-number gap checks, read batch by batch |
//! | `tail` | a database's WAL followed as it is written (`follow`): batches handed on once, in order, gaps refused |
//! | `watch` | new files under the blob root hard-linked the moment they appear (`follow`) |
//! | `changes` | the references a write batch's puts make |
//! | `sst` | the session id in an SST's properties block |
//! | `scan` | records → references ([`ExternalFiles`]) |
//! | `pin` | references → captured files, by the blob root's rules |
//! | `prelink` | the tree under the blob root hard-linked around the point in time |
//! | `guard` | the [`DeletionGuard`] of library mode |
//! | `workdir` | rockup's run directory and where it may be |

mod changes;
mod checkpoint;
mod guard;
mod held;
mod pin;
mod prelink;
mod scan;
pub mod sst;
mod tail;
mod wal;
mod watch;
mod workdir;

pub use changes::{column_families_written, column_family_id, references};
pub use checkpoint::{
    permission_bits, prepare, CheckpointStats, Origin, Prepared, Snapshot, Source,
};
pub use guard::{DeletionGuard, GuardHold};
pub use pin::{file_stamp, Pin, Pinned, Pinner};
pub use prelink::Prelinks;
pub use scan::{for_each_reference, ExternalFiles};
pub use tail::WalTail;
pub use wal::Batch;
pub use watch::NewFiles;
pub use workdir::{check_work_base, default_work_base, WorkDir};
