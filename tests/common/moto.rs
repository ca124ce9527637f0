//! moto's ECR server (`moto_server`), started per test on a free port.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `moto_server`; killed on drop.
pub struct Moto {
    child: Option<Child>,
    pub port: u16,
}

fn moto_server_path() -> PathBuf {
    if let Ok(p) = std::env::var("MOTO_SERVER") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Moto {
    /// Starts moto on a free port and waits (up to 30 s) until it answers.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts moto on `port`, e.g. again after [`Moto::stop`].
    pub fn start_on(port: u16) -> Self {
        let path = moto_server_path();
        let child = Command::new(&path)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}); create the venv with `python3 -m venv .venv && \
                     .venv/bin/pip install 'moto[server]>=5.2,<5.3'` or set MOTO_SERVER",
                    path.display()
                )
            });
        let moto = Self {
            child: Some(child),
            port,
        };
        moto.wait_ready();
        moto
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "moto_server did not listen on port {} within 30 s",
            self.port
        );
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Sets up `cmd` (the operator binary) to run against this moto and the cluster of
    /// `kubeconfig`: a cleared environment, fixed test credentials, no instance metadata.
    pub fn operator_env<'a>(
        &self,
        cmd: &'a mut std::process::Command,
        kubeconfig: &std::path::Path,
    ) -> &'a mut std::process::Command {
        cmd.env_clear()
            .env("KUBECONFIG", kubeconfig)
            .env("AWS_ENDPOINT_URL_ECR", self.url())
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
    }

    /// Kills moto; the port is free again afterwards.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// An SDK config pointed at this moto with static test credentials.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(self.url())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_credential_types::Credentials::new(
                "test", "test", None, None, "tests",
            ))
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(1))
            .load()
            .await
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}
