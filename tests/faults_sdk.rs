//! The fault matrix, ECR through the real SDK: the controller in-process with
//! `AwsTokenSource` (aws-sdk-ecr, its own error parsing and retries) against the ECR
//! stand-in in front of moto, which answers as ECR does when it fails. HTTP requests are
//! counted at the stand-in, so the SDK's own retries count too.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::ecr::{EcrStandIn, Fault, Mode};
use common::moto::Moto;
use common::world::assert_pull_secret_sound;
use common::*;
use ecr_token_refresh::ecr::AwsTokenSource;
use serde_json::json;

/// ECR failing with `fault` for good: requests over a 5 s window stay within the backoff
/// (each operator attempt is at most `attempts` HTTP requests, attempts at least 500 ms
/// apart), the reason is in status, the secret key and no token anywhere.
async fn persistent(fault: Fault, attempts: u32, reason: &str) {
    let moto = Moto::start();
    let ecr = EcrStandIn::start(&moto).await;
    ecr.set_mode(Mode::Fail(fault));
    let cluster = Cluster::start().await;
    let tokens = Arc::new(AwsTokenSource::new(
        ecr.sdk_config(attempts, Duration::from_secs(2)).await,
    ));
    let running = start_controller(cluster.client.clone(), tokens, fast_settings());
    cluster.apply_sample("denied", json!({}));
    let c = cluster.wait_ready("denied", "False", reason).await;
    let first = ecr.requests();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let made = ecr.requests() - first;
    let bound = attempts * (1 + (started.elapsed().as_millis() / 500) as u32);
    assert!(made >= 1, "retries go on");
    assert!(made <= bound, "{made} ECR requests in 5 s (bound {bound})");
    let everything = format!("{} {:?}", cluster.cr("denied"), cluster.events("denied"));
    assert!(!everything.contains(common::ecr::SECRET_ACCESS_KEY));
    assert!(!everything.contains("auth-token"));
    assert!(cluster.secret("denied").is_none(), "nothing written: {c}");
    // ECR comes back: served, with one more call.
    ecr.set_mode(Mode::Realistic {
        lifetime: jiff::SignedDuration::from_hours(12),
    });
    cluster.wait_ready("denied", "True", "TokenRefreshed").await;
    assert_pull_secret_sound(&cluster.secret("denied").unwrap());
    running.stop().await;
}

#[tokio::test]
async fn access_denied_through_the_sdk_backs_off() {
    // The SDK does not retry AccessDenied: one request per attempt.
    persistent(Fault::AccessDenied, 1, "ECRAccessDenied").await;
}

#[tokio::test]
async fn throttling_through_the_sdk_backs_off() {
    // The SDK retries throttling itself (3 attempts): at most 3 requests per attempt.
    persistent(Fault::Throttling, 3, "ECRThrottled").await;
}

#[tokio::test]
async fn expired_credentials_through_the_sdk_back_off() {
    persistent(Fault::ExpiredCredentials, 3, "ECRAccessDenied").await;
}

#[tokio::test]
async fn a_hanging_ecr_times_out_and_backs_off() {
    let moto = Moto::start();
    let ecr = EcrStandIn::start(&moto).await;
    ecr.set_mode(Mode::Fail(Fault::Hang));
    let cluster = Cluster::start().await;
    let tokens = Arc::new(AwsTokenSource::new(
        ecr.sdk_config(1, Duration::from_millis(300)).await,
    ));
    let running = start_controller(cluster.client.clone(), tokens, fast_settings());
    cluster.apply_sample("hung", json!({}));
    cluster.wait_ready("hung", "False", "ECRUnreachable").await;
    ecr.release_hung();
    ecr.set_mode(Mode::Realistic {
        lifetime: jiff::SignedDuration::from_hours(12),
    });
    cluster.wait_ready("hung", "True", "TokenRefreshed").await;
    running.stop().await;
}

#[tokio::test]
async fn resources_of_one_region_share_one_token_through_the_sdk() {
    let moto = Moto::start();
    let ecr = EcrStandIn::start(&moto).await;
    ecr.set_mode(Mode::Realistic {
        lifetime: jiff::SignedDuration::from_hours(12),
    });
    let cluster = Cluster::start().await;
    let tokens = Arc::new(AwsTokenSource::new(
        ecr.sdk_config(1, Duration::from_secs(2)).await,
    ));
    let running = start_controller(cluster.client.clone(), tokens, fast_settings());
    for name in ["a", "b", "c", "d", "e"] {
        cluster.apply_sample(name, json!({}));
    }
    for name in ["a", "b", "c", "d", "e"] {
        cluster.wait_ready(name, "True", "TokenRefreshed").await;
    }
    assert_eq!(
        ecr.requests(),
        1,
        "one call for five resources of one region"
    );
    running.stop().await;
}
