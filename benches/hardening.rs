//! The hardening numbers: the real (release) operator binary against the Kubernetes
//! stand-in and the ECR stand-in in front of moto, with its default configuration.
//!
//! 1. ECR calls during 45 s of persistent `AccessDeniedException` (default backoff).
//! 2. ECR calls when the first 6 status writes of a resource fail (500).
//! 3. Operator RSS before and after 100 MiB of labelled foreign Secrets (100 Opaque Secrets
//!    of ~1 MiB carrying the managed-by label) plus 100 labelled pull Secrets with 200 KiB
//!    of annotations each, and the requests the operator made because of them.
//! 4. Time from creating a resource with a 75-character name to its Secret.
//!
//! Run: `cargo bench --bench hardening` (needs the `.venv` with moto, as the tests do).
//! `HARDENING_WINDOW=10` shortens the 45 s window.

#[allow(dead_code)]
#[path = "../tests/common/ecr/mod.rs"]
mod ecr;
#[allow(dead_code)]
#[path = "../tests/common/moto.rs"]
mod moto;
#[allow(dead_code)]
#[path = "common/operator.rs"]
mod operator;

use operator::{Operator, rss_kib, wait};

use std::time::{Duration, Instant};

use base64::Engine as _;
use kube_standin::{FaultRule, StandIn, Verb};
use serde_json::{Value, json};

const CRS: &str = "ecr.aws.edenlab.io/v1alpha1/ecrtokenrefreshes";
const SECRETS: &str = "v1/secrets";
const HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

fn ready(api: &StandIn, name: &str) -> Value {
    api.get(CRS, Some("default"), name)
        .and_then(|cr| {
            cr["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready").cloned())
        })
        .unwrap_or(Value::Null)
}

fn apply(api: &StandIn, name: &str) {
    api.create(
        CRS,
        json!({"apiVersion": "ecr.aws.edenlab.io/v1alpha1", "kind": "ECRTokenRefresh",
               "metadata": {"name": name, "namespace": "default"},
               "spec": {"ecrRegistry": HOST, "frequency": "8h", "region": "us-east-1"}}),
    )
    .unwrap();
}

fn standin() -> StandIn {
    let api = StandIn::new().with_bookmark_interval(Duration::from_secs(1));
    api.create(
        "v1/namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}),
    )
    .unwrap();
    api
}

async fn access_denied(moto: &moto::Moto, window: Duration) -> (u32, Vec<f64>) {
    let ecr = ecr::EcrStandIn::start(moto).await;
    ecr.set_mode(ecr::Mode::Fail(ecr::Fault::AccessDenied));
    let api = standin();
    let _op = Operator::start(&api, &[("AWS_ENDPOINT_URL_ECR", &ecr.url)]).await;
    apply(&api, "denied");
    wait("the first attempt", Duration::from_secs(30), || {
        ecr.requests() >= 1
    })
    .await;
    let first = ecr.requests();
    let start = Instant::now();
    tokio::time::sleep(window).await;
    let times: Vec<f64> = ecr
        .request_times()
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    let _ = start;
    (ecr.requests() - first + 1, times)
}

async fn failing_status(moto: &moto::Moto) -> u32 {
    let ecr = ecr::EcrStandIn::start(moto).await;
    ecr.set_mode(ecr::Mode::Realistic {
        lifetime: jiff::SignedDuration::from_hours(12),
    });
    let api = standin();
    api.faults().add(
        FaultRule::new(500)
            .verb(Verb::Patch)
            .gvr("ecr.aws.edenlab.io/v1alpha1/ecrtokenrefreshes/status")
            .times(6),
    );
    let _op = Operator::start(&api, &[("AWS_ENDPOINT_URL_ECR", &ecr.url)]).await;
    apply(&api, "status-fails");
    wait("Ready", Duration::from_secs(120), || {
        ready(&api, "status-fails")["status"] == "True"
    })
    .await;
    let patches = api.counters().get_count(
        "patch",
        "ecr.aws.edenlab.io/v1alpha1/ecrtokenrefreshes/status",
    );
    println!("  status patches until Ready: {patches} (6 failed)");
    ecr.requests()
}

async fn junk(moto: &moto::Moto) -> (u64, u64, u64, u64) {
    let ecr = ecr::EcrStandIn::start(moto).await;
    ecr.set_mode(ecr::Mode::Realistic {
        lifetime: jiff::SignedDuration::from_hours(12),
    });
    let api = standin();
    let op = Operator::start(&api, &[("AWS_ENDPOINT_URL_ECR", &ecr.url)]).await;
    apply(&api, "served");
    wait("Ready", Duration::from_secs(60), || {
        ready(&api, "served")["status"] == "True"
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rss_kib(op.pid(), "VmRSS:");
    api.reset_counters();
    let mib = base64::engine::general_purpose::STANDARD.encode(vec![b'x'; 1_040_000]);
    for i in 0..100 {
        api.create(
            SECRETS,
            json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                   "metadata": {"name": format!("junk-{i}"), "namespace": "default",
                                "labels": {"app.kubernetes.io/managed-by": "ecr-token-refresh",
                                           "ecr.aws.edenlab.io/owner-uid": format!("forged-{i}")}},
                   "data": {"blob": mib}}),
        )
        .unwrap();
    }
    let big = "y".repeat(200_000);
    let pull = base64::engine::general_purpose::STANDARD.encode(r#"{"auths":{}}"#);
    for i in 0..100 {
        api.create(
            SECRETS,
            json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
                   "metadata": {"name": format!("junk-pull-{i}"), "namespace": "default",
                                "labels": {"app.kubernetes.io/managed-by": "ecr-token-refresh",
                                           "ecr.aws.edenlab.io/owner-uid": format!("forged-{i}")},
                                "annotations": {"junk": big}},
                   "data": {".dockerconfigjson": pull}}),
        )
        .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = rss_kib(op.pid(), "VmRSS:");
    let peak = rss_kib(op.pid(), "VmHWM:");
    let writes = api.counters().writes();
    (before, after, peak, writes)
}

async fn long_name(moto: &moto::Moto) -> Duration {
    let ecr = ecr::EcrStandIn::start(moto).await;
    ecr.set_mode(ecr::Mode::Realistic {
        lifetime: jiff::SignedDuration::from_hours(12),
    });
    let api = standin();
    let _op = Operator::start(&api, &[("AWS_ENDPOINT_URL_ECR", &ecr.url)]).await;
    apply(&api, "warm-up");
    wait("Ready", Duration::from_secs(60), || {
        ready(&api, "warm-up")["status"] == "True"
    })
    .await;
    let name = "a".repeat(75);
    let started = Instant::now();
    apply(&api, &name);
    wait("the Secret", Duration::from_secs(60), || {
        api.get(SECRETS, Some("default"), &name).is_some()
    })
    .await;
    started.elapsed()
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let window = std::env::var("HARDENING_WINDOW")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(45), Duration::from_secs);
    let moto = moto::Moto::start();
    println!("| measure | value |\n|---|---:|");
    let (calls, gaps) = access_denied(&moto, window).await;
    let gaps: Vec<String> = gaps.iter().map(|g| format!("{g:.1}")).collect();
    println!(
        "| ECR calls during {} s of AccessDenied (default backoff) | {calls} (gaps s: {}) |",
        window.as_secs(),
        gaps.join(", ")
    );
    println!(
        "| ECR calls when the first 6 status writes fail | {} |",
        failing_status(&moto).await
    );
    let (before, after, peak, writes) = junk(&moto).await;
    println!(
        "| RSS before / after 100 MiB of labelled foreign Secrets (+100 labelled pull Secrets with 200 KiB annotations) | {:.1} MiB / {:.1} MiB (peak {:.1} MiB) |",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    println!("| writes the operator made because of them | {writes} |");
    println!(
        "| 75-character resource name: creation to Secret | {:.0} ms |",
        long_name(&moto).await.as_secs_f64() * 1000.0
    );
}
