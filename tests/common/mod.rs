//! Shared helpers of the integration tests: the Kubernetes stand-in, moto, a scripted
//! token source, and the controller running in-process.
#![allow(dead_code)]

pub mod ecr;
pub mod moto;
pub mod otlp;
pub mod plugins;
pub mod registry;
pub mod tokens;
pub mod web;
pub mod world;

use std::sync::Arc;
use std::time::Duration;

use ecr_token_refresh::controller::{self, ScheduleSettings, Settings};
use ecr_token_refresh::ecr::TokenSource;
use ecr_token_refresh::policy::{BuiltinRetry, Policies};
use kube_standin::{RunningServer, StandIn};
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// Plural paths of the stand-in.
pub const CRS: &str = "ecr.aws.edenlab.io/v1alpha1/ecrtokenrefreshes";
pub const SECRETS: &str = "v1/secrets";
pub const EVENTS: &str = "events.k8s.io/v1/events";
pub const HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

/// How long a test waits for the controller to get somewhere.
pub const WAIT: Duration = Duration::from_secs(15);

/// The stand-in API server and a client for it.
pub struct Cluster {
    pub api: StandIn,
    pub server: RunningServer,
    pub client: kube::Client,
}

impl Cluster {
    pub async fn start() -> Self {
        let api = StandIn::new().with_bookmark_interval(Duration::from_millis(200));
        let server = api.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let config = kube::Config::new(server.url.parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        Self {
            api,
            server,
            client,
        }
    }

    /// Creates the original sample `ECRTokenRefresh` in `default`, with `spec` merged in.
    pub fn apply_sample(&self, name: &str, spec: Value) -> Value {
        let mut base = json!({"ecrRegistry": HOST, "frequency": "8h", "region": "us-east-1"});
        merge(&mut base, spec);
        self.api
            .create(
                CRS,
                json!({
                    "apiVersion": "ecr.aws.edenlab.io/v1alpha1",
                    "kind": "ECRTokenRefresh",
                    "metadata": {"name": name, "namespace": "default"},
                    "spec": base,
                }),
            )
            .unwrap()
    }

    pub fn cr(&self, name: &str) -> Value {
        self.api
            .get(CRS, Some("default"), name)
            .unwrap_or(Value::Null)
    }

    pub fn secret(&self, name: &str) -> Option<Value> {
        self.api.get(SECRETS, Some("default"), name)
    }

    /// The `Ready` condition of a resource, or Null.
    pub fn ready(&self, name: &str) -> Value {
        ready_of(&self.cr(name))
    }

    /// Waits until the `Ready` condition of `name` has `status` and `reason`.
    pub async fn wait_ready(&self, name: &str, status: &str, reason: &str) -> Value {
        let ok = self
            .api
            .wait_for(WAIT, |api| {
                let c = ready_of(&api.get(CRS, Some("default"), name).unwrap_or(Value::Null));
                c["status"] == status && c["reason"] == reason
            })
            .await;
        assert!(
            ok,
            "{name} never got Ready={status}/{reason}; last: {:#}",
            self.cr(name)["status"]
        );
        self.ready(name)
    }

    /// Events about `name`, as (type, reason, note).
    pub fn events(&self, name: &str) -> Vec<(String, String, String)> {
        self.api
            .list(EVENTS, Some("default"))
            .into_iter()
            .filter(|e| e["regarding"]["name"] == name)
            .map(|e| {
                let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
                (s("type"), s("reason"), s("note"))
            })
            .collect()
    }
}

impl Cluster {
    /// Waits until an Event of `type_` and `reason` about `name` exists; returns its note.
    pub async fn wait_event(&self, name: &str, type_: &str, reason: &str) -> String {
        let found = |c: &Cluster| {
            c.events(name)
                .into_iter()
                .find(|(t, r, _)| t == type_ && r == reason)
                .map(|(_, _, n)| n)
        };
        let ok = self.api.wait_for(WAIT, |_| found(self).is_some()).await;
        assert!(
            ok,
            "no {type_} event {reason} about {name}; events: {:?}",
            self.events(name)
        );
        found(self).unwrap_or_default()
    }
}

/// Polls `f` every 20 ms until it holds or `timeout` passes; for conditions that do not
/// change stored state (request counters), which `StandIn::wait_for` is not woken by.
pub async fn poll_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the stand-in has seen no request for `quiet` (at most [`WAIT`]), so that
/// what a test measures next is not the tail of earlier work.
pub async fn settle(api: &StandIn, quiet: Duration) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = api.counters().total();
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(quiet).await;
        let now = api.counters().total();
        if now == last {
            return;
        }
        last = now;
    }
    panic!("the controller kept making requests for {WAIT:?}");
}

pub fn ready_of(cr: &Value) -> Value {
    cr["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready").cloned())
        .unwrap_or(Value::Null)
}

fn merge(base: &mut Value, patch: Value) {
    if let (Some(b), Value::Object(p)) = (base.as_object_mut(), patch) {
        for (k, v) in p {
            b.insert(k, v);
        }
    }
}

/// Settings that keep tests fast: a foreign Secret is looked at again every second.
pub fn fast_settings() -> Settings {
    Settings {
        schedule: ScheduleSettings::default(),
        conflict_recheck: Duration::from_secs(1),
        ..Settings::default()
    }
}

/// [`fast_settings`] for short-lived tokens: refreshes may come 1 s apart, so a token that
/// lives 4 s is due 2 s after it was fetched (mid-life).
pub fn expiring_settings() -> Settings {
    Settings {
        schedule: ScheduleSettings {
            min_refresh_interval: Duration::from_secs(1),
            ..ScheduleSettings::default()
        },
        ..fast_settings()
    }
}

/// Built-in policies with retries bounded by 200 ms, doubling up to 2 s.
pub fn fast_policies() -> Arc<Policies> {
    Arc::new(Policies::builtin().with_builtin_retry(BuiltinRetry {
        base: Duration::from_millis(200),
        cap: Duration::from_secs(2),
        ..BuiltinRetry::default()
    }))
}

/// The controller running in-process; stops (gracefully) on [`Running::stop`] or drop.
pub struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("controller stops")
                .unwrap();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

pub fn start_controller(
    client: kube::Client,
    tokens: Arc<dyn TokenSource>,
    settings: Settings,
) -> Running {
    start_controller_with(client, tokens, fast_policies(), settings)
}

pub fn start_controller_with(
    client: kube::Client,
    tokens: Arc<dyn TokenSource>,
    policies: Arc<Policies>,
    settings: Settings,
) -> Running {
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        controller::run(client, tokens, policies, settings, async move {
            let _ = rx.await;
        })
        .await
        .expect("controller starts");
    });
    Running {
        stop: Some(tx),
        task: Some(task),
    }
}
