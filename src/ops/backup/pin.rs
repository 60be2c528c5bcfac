//! Stage 2: every reference of the checkpoint pinned first (links are cheap, and
//! the deletion guard or the writer's deletions wait on it), on a blocking
//! thread, into a spool in scan order; the deletion guard is released as soon as
//! that is done. Then the pinned files (and the references that could not be
//! captured) are fed to the transfer through a bounded channel.

use std::sync::Arc;

use futures::channel::mpsc;
use futures::SinkExt;
use rocksdb::DB;
use tokio::task::JoinHandle;

use crate::common::spool::Spool;
use crate::error::{Error, Problem, Result};
use crate::source::{
    for_each_reference, ExternalFiles, GuardHold, Pin, Pinned, Pinner, Prelinks, WorkDir,
};

use super::BackupOptions;

/// Pinned files waiting for the transfer at most.
const QUEUE: usize = 1024;

/// What the pin stage hands to the transfer.
pub(super) enum Job {
    /// A database file of the checkpoint, by name.
    Db(String),
    /// A pinned external file.
    External(Pinned),
    /// A reference that could not be captured.
    Problem(Problem),
}

/// The running pin stage: the jobs it feeds, and its task, which returns the
/// number of files rescued by pre-links.
pub(super) struct Pinning {
    pub jobs: mpsc::Receiver<Job>,
    pub task: JoinHandle<Result<u64>>,
}

/// Starts pinning the references of `db` (none without external files).
pub(super) fn start(
    db: DB,
    prelinks: Option<Prelinks>,
    options: &BackupOptions,
    work: &Arc<WorkDir>,
    hold: Option<GuardHold>,
) -> Pinning {
    let (sender, jobs) = mpsc::channel(QUEUE);
    let (external, work) = (options.external.clone(), work.clone());
    let task = tokio::task::spawn_blocking(move || {
        let Some(external) = external else {
            return Ok(0);
        };
        let pinner = Pinner::new(&external.blob_root, work.path().join("pins"))?
            .with_prelinks(prelinks)
            .with_guard(hold);
        let spool: Spool<u64, Pinned> = Spool::create(&work.path().join("pinned"))?;
        let (pinner, problems) = pin_all(&db, &external, pinner, &spool)?;
        let rescued = pinner.finish(); // every reference is pinned: lets go of the guard
        drop(db);
        feed(sender, problems, &spool)?;
        Ok(rescued)
    });
    Pinning { jobs, task }
}

/// Pins every reference into `spool` (scan order); returns the problems.
fn pin_all(
    db: &DB,
    external: &ExternalFiles,
    mut pinner: Pinner,
    spool: &Spool<u64, Pinned>,
) -> Result<(Pinner, Vec<Problem>)> {
    let mut problems = Vec::new();
    let mut spool_error = None;
    let mut count = 0u64;
    for_each_reference(db, external, |key, item| {
        match item.map(|reference| pinner.pin(key, reference)) {
            Ok(Pin::Captured(file)) => {
                if let Err(e) = spool.put(&count, &file) {
                    spool_error = Some(e);
                    return false;
                }
                count += 1;
            }
            Ok(Pin::Duplicate) => {}
            Ok(Pin::Problem(problem)) | Err(problem) => problems.push(problem),
        }
        true
    })?;
    if let Some(e) = spool_error {
        return Err(e);
    }
    tracing::info!(
        files = count,
        problems = problems.len(),
        rescued = pinner.rescued,
        "references pinned"
    );
    Ok((pinner, problems))
}

/// Sends the problems, then the pinned files, to the transfer; stops when it
/// has gone away.
fn feed(
    mut sender: mpsc::Sender<Job>,
    problems: Vec<Problem>,
    spool: &Spool<u64, Pinned>,
) -> Result<()> {
    let problems = problems
        .into_iter()
        .map(|p| Ok::<_, Error>(Job::Problem(p)));
    let files = spool
        .iter()
        .map(|pinned| pinned.map(|(_, file)| Job::External(file)));
    for job in problems.chain(files) {
        if futures::executor::block_on(sender.send(job?)).is_err() {
            break;
        }
    }
    Ok(())
}
