//! Running one contender and what it cost: wall time, CPU seconds (user +
//! system, the child and everything it waited for) and peak RSS, from `wait4`.

use std::process::Command;
use std::time::Instant;

/// What one run cost.
#[derive(Clone, Copy, Debug)]
pub struct Cost {
    pub secs: f64,
    pub cpu_secs: f64,
    pub peak_rss_mib: f64,
}

/// Runs `script` with `sh -e -c` and measures it; panics with its output when
/// it fails (a contender that fails has no figure worth printing).
#[allow(
    clippy::zombie_processes,
    reason = "reaped by wait4, which also reports rusage"
)]
pub fn measure(script: &str, env: &[(String, String)]) -> Cost {
    let mut command = Command::new("sh");
    command
        .arg("-e")
        .arg("-c")
        .arg(script)
        .envs(env.iter().cloned());
    command.stdout(std::process::Stdio::null());
    command.stdin(std::process::Stdio::null());
    let start = Instant::now();
    let child = command.spawn().expect("spawn sh");
    let (status, usage) = wait4(child.id() as libc::pid_t);
    let secs = start.elapsed().as_secs_f64();
    assert!(status == 0, "failed (wait status {status}): {script}");
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Cost {
        secs,
        cpu_secs: seconds(usage.ru_utime) + seconds(usage.ru_stime),
        peak_rss_mib: usage.ru_maxrss as f64 / 1024.0,
    }
}

/// Runs `script` unmeasured (set-up and clean-up between runs).
pub fn run(script: &str, env: &[(String, String)]) {
    let status = Command::new("sh")
        .arg("-e")
        .arg("-c")
        .arg(script)
        .envs(env.iter().cloned())
        .stdin(std::process::Stdio::null())
        .status()
        .expect("spawn sh");
    assert!(status.success(), "failed: {script}");
}

fn wait4(pid: libc::pid_t) -> (i32, libc::rusage) {
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4: {}", std::io::Error::last_os_error());
    (status, usage)
}

/// Best and median of several runs of one contender.
pub struct Summary {
    pub best: Cost,
    pub median_secs: f64,
}

impl Summary {
    pub fn of(runs: &[Cost]) -> Self {
        let mut secs: Vec<f64> = runs.iter().map(|c| c.secs).collect();
        secs.sort_by(f64::total_cmp);
        let best = *runs
            .iter()
            .min_by(|a, b| a.secs.total_cmp(&b.secs))
            .expect("at least one run");
        Self {
            best,
            median_secs: secs[secs.len() / 2],
        }
    }
}
