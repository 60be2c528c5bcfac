//! A native S3 server on loopback: `s3s-fs` (a Rust S3 server over a directory,
//! from crates.io; `scripts/bench.sh` installs it), keeping a bucket as a directory
//! (the benchmark creates and empties buckets with mkdir and rm), and the
//! environment each client needs to reach it. Every client writes to a bucket's
//! root: s3s-fs answers a HEAD of a key that is a directory on its disk (what
//! `s3:bucket/dir` makes rclone and the AWS CLI ask) with 500, which they
//! retry for a minute and more.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "rockupbench";
const SECRET: &str = "rockupbenchsecret";

/// The running server; killed on drop.
pub struct Server {
    child: Child,
    pub endpoint: String,
}

impl Server {
    /// Starts `binary` serving `root` on a free loopback port.
    pub fn start(binary: &Path, root: &Path) -> Self {
        std::fs::create_dir_all(root).expect("server root");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new(binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", KEY, "--secret-key", SECRET])
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the S3 server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    /// The environment rockup (object_store), rclone (remote `s3:`) and the
    /// AWS CLI need to reach the server.
    pub fn client_env(&self) -> Vec<(String, String)> {
        let pairs = [
            ("AWS_ENDPOINT", self.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET),
            ("RCLONE_CONFIG_S3_TYPE", "s3"),
            ("RCLONE_CONFIG_S3_PROVIDER", "Other"),
            ("RCLONE_CONFIG_S3_ENDPOINT", self.endpoint.as_str()),
            ("RCLONE_CONFIG_S3_ACCESS_KEY_ID", KEY),
            ("RCLONE_CONFIG_S3_SECRET_ACCESS_KEY", SECRET),
            ("RCLONE_CONFIG_S3_REGION", "us-east-1"),
        ];
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
