//! Clean-up that outlives a cancelled operation: when a backup or prune is
//! dropped mid-way (a signal), its lock must still be removed and its multipart
//! uploads aborted. Those requests run as tracked tasks, so that the caller can
//! give them the time they need — bounded — before the process exits.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::task::JoinHandle;

static TASKS: Mutex<Vec<JoinHandle<()>>> = Mutex::new(Vec::new());

/// Runs `work` on the current Tokio runtime (if there is one) as tracked
/// clean-up; [`wait`] waits for it.
pub fn spawn(work: impl Future<Output = ()> + Send + 'static) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let task = runtime.spawn(work);
    let mut tasks = TASKS.lock().unwrap_or_else(|e| e.into_inner());
    tasks.retain(|t| !t.is_finished());
    tasks.push(task);
}

/// Waits until the clean-up started by cancelled operations (lock removal,
/// multipart aborts, retries included) has finished, or `limit` has passed;
/// returns how many clean-up tasks were still running then. Call it after
/// dropping an operation's future, e.g. on a signal, before exiting.
pub async fn wait(limit: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let task = {
            let mut tasks = TASKS.lock().unwrap_or_else(|e| e.into_inner());
            tasks.retain(|t| !t.is_finished());
            tasks.pop()
        };
        let Some(task) = task else {
            return 0;
        };
        if tokio::time::timeout_at(deadline, task).await.is_err() {
            let tasks = TASKS.lock().unwrap_or_else(|e| e.into_inner());
            return 1 + tasks.iter().filter(|t| !t.is_finished()).count();
        }
    }
}
