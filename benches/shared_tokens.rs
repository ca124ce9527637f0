//! One token per (identity, region) key, shared: the real (release) operator binary against
//! the Kubernetes stand-in and the ECR stand-in in front of moto, default configuration.
//!
//! 1,000 resources (created before the operator starts) spread evenly over 10 token keys:
//! 5 regions × 2 identities (the operator's own, and a role it assumes through STS), each
//! region with registries of two accounts. Reported: ECR and STS calls until every
//! resource is Ready (the first cycle) and during the next refresh cycle (tokens said to
//! live 130 s, so every resource is due about 65 s after it was served), the time from
//! start to all Ready, and the operator's peak RSS.
//!
//! Run: `cargo bench --bench shared_tokens` (needs the `.venv` with moto, as the tests do).
//! `SHARED_TOKENS_RESOURCES=200` changes the number of resources.

#[allow(dead_code)]
#[path = "../tests/common/ecr/mod.rs"]
mod ecr;
#[allow(dead_code)]
#[path = "../tests/common/moto.rs"]
mod moto;
#[allow(dead_code)]
#[path = "common/operator.rs"]
mod operator;

use operator::{Operator, rss_kib, wait_every};

use std::time::{Duration, Instant};

use kube_standin::StandIn;
use serde_json::{Value, json};

const CRS: &str = "ecr.aws.edenlab.io/v1alpha1/ecrtokenrefreshes";
const REGIONS: [&str; 5] = [
    "us-east-1",
    "us-west-2",
    "eu-west-1",
    "eu-central-1",
    "ap-northeast-1",
];
/// How often the statuses of all resources are read while waiting.
const POLL: Duration = Duration::from_millis(50);
/// The role half of the resources get their tokens with.
const ROLE: &str = "arn:aws:iam::111111111111:role/bench-pull";

/// The resources' statuses: (Ready, lastUpdatedTime) each.
fn statuses(api: &StandIn) -> Vec<(bool, String)> {
    api.list(CRS, Some("default"))
        .iter()
        .map(|cr| {
            let ready = cr["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready").cloned())
                .unwrap_or(Value::Null);
            (
                ready["status"] == "True",
                cr["status"]["lastUpdatedTime"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: usize = std::env::var("SHARED_TOKENS_RESOURCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let moto = moto::Moto::start();
    let ecr = ecr::EcrStandIn::start(&moto).await;
    ecr.set_mode(ecr::Mode::Realistic {
        lifetime: jiff::SignedDuration::from_secs(130),
    });
    let api = StandIn::new().with_bookmark_interval(Duration::from_secs(1));
    api.create(
        "v1/namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}),
    )
    .unwrap();
    for i in 0..n {
        let region = REGIONS[i % REGIONS.len()];
        // Two accounts per region: one key serves both.
        let account = if (i / REGIONS.len()).is_multiple_of(2) {
            "111111111111"
        } else {
            "222222222222"
        };
        let mut spec = json!({"ecrRegistry": format!("{account}.dkr.ecr.{region}.amazonaws.com"),
                              "frequency": "12h"});
        if (i / (2 * REGIONS.len())) % 2 == 1 {
            spec["auth"] = json!({"roleArn": ROLE});
        }
        api.create(
            CRS,
            json!({"apiVersion": "ecr.aws.edenlab.io/v1alpha1", "kind": "ECRTokenRefresh",
                   "metadata": {"name": format!("r{i:04}"), "namespace": "default"},
                   "spec": spec}),
        )
        .unwrap();
    }

    let started = Instant::now();
    let op = Operator::start(
        &api,
        &[
            ("AWS_ENDPOINT_URL_ECR", &ecr.url),
            ("AWS_ENDPOINT_URL_STS", &ecr.url),
        ],
    )
    .await;
    let all_ready = wait_every("all Ready", Duration::from_secs(300), POLL, || {
        let s = statuses(&api);
        s.len() == n && s.iter().all(|(ready, _)| *ready)
    })
    .await;
    let _ = started;
    let first_cycle = ecr.requests();
    let first_sts = ecr.sts_calls().len();
    let served: Vec<String> = statuses(&api).into_iter().map(|(_, t)| t).collect();
    let latest = served.iter().max().cloned().unwrap_or_default();

    // The next cycle: every resource served again with a newer token.
    let second = wait_every(
        "the next refresh cycle",
        Duration::from_secs(300),
        POLL,
        || {
            statuses(&api)
                .iter()
                .all(|(ready, t)| *ready && t.as_str() > latest.as_str())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second_cycle = ecr.requests() - first_cycle;
    let second_sts = ecr.sts_calls().len() - first_sts;
    let peak = rss_kib(op.pid(), "VmHWM:");
    let idle = rss_kib(op.pid(), "VmRSS:");

    println!("| measure | value |\n|---|---:|");
    println!(
        "| resources / token keys | {n} / {} |",
        (2 * REGIONS.len()).min(n)
    );
    println!("| ECR calls until all Ready (first cycle) | {first_cycle} |");
    println!("| STS calls until all Ready (first cycle) | {first_sts} |");
    println!("| ECR calls in the next refresh cycle | {second_cycle} |");
    println!("| STS calls in the next refresh cycle | {second_sts} |");
    println!(
        "| operator start to all Ready | {:.2} s |",
        all_ready.as_secs_f64()
    );
    println!(
        "| all Ready to all refreshed again | {:.1} s |",
        second.as_secs_f64()
    );
    println!(
        "| operator RSS peak / after the second cycle | {:.1} MiB / {:.1} MiB |",
        peak as f64 / 1024.0,
        idle as f64 / 1024.0
    );
}
