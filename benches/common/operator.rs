//! What the benchmarks share: the release operator binary started against a stand-in, its
//! RSS, and polling.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube_standin::{RunningServer, StandIn};

/// The static credentials the operator signs AWS requests with (the ECR stand-in's).
pub use super::ecr::{ACCESS_KEY_ID, SECRET_ACCESS_KEY};

/// `field` (`VmRSS:`, `VmHWM:`) of process `pid`, in KiB (0 when unreadable).
pub fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Polls `f` every 5 ms until it holds, and says how long that took; panics after
/// `timeout`.
pub async fn wait(what: &str, timeout: Duration, f: impl FnMut() -> bool) -> Duration {
    wait_every(what, timeout, Duration::from_millis(5), f).await
}

/// Polls `f` every `poll` until it holds, and says how long that took; panics after
/// `timeout`.
pub async fn wait_every(
    what: &str,
    timeout: Duration,
    poll: Duration,
    mut f: impl FnMut() -> bool,
) -> Duration {
    let started = Instant::now();
    while !f() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(poll).await;
    }
    started.elapsed()
}

/// The operator binary (`run`, default configuration, logs off) against `api`, with
/// static AWS credentials and the endpoint overrides `aws_endpoints` (e.g.
/// `("AWS_ENDPOINT_URL_ECR", url)`); killed on drop.
pub struct Operator {
    pub child: Child,
    _server: RunningServer,
    _dir: tempfile::TempDir,
}

impl Operator {
    pub async fn start(api: &StandIn, aws_endpoints: &[(&str, &str)]) -> Self {
        let server = api.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("kubeconfig"), server.kubeconfig_yaml()).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_ecr-token-refresh"));
        command
            .arg("run")
            .env_clear()
            .env("ECR_TOKEN_REFRESH_SERVER__LISTEN", "127.0.0.1:0")
            .env("KUBECONFIG", dir.path().join("kubeconfig"))
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (name, value) in aws_endpoints {
            command.env(name, value);
        }
        Self {
            child: command.spawn().unwrap(),
            _server: server,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
