//! The real token source (`AwsTokenSource`, aws-sdk-ecr) against the ECR stand-in in
//! front of moto: how each failure is classified, how many HTTP requests the SDK's
//! standard retries make, realistic tokens, and that errors never carry a token.
//!
//! Needs `moto_server` (`MOTO_SERVER` or `.venv/bin/moto_server`).

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::ecr::{ACCESS_KEY_ID, EcrStandIn, Fault, GARBAGE_TOKEN, Mode, SECRET_ACCESS_KEY};
use common::moto::Moto;
use common::poll_until;
use ecr_token_refresh::ecr::{
    AuthorizationToken, AwsTokenSource, EcrError, FailureKind, TokenRequest, TokenSource,
};
use jiff::{SignedDuration, Timestamp};
use secrecy::ExposeSecret;

const REGISTRY: &str = "123456789012";
/// moto's fixed token for [`REGISTRY`], base64 and decoded password.
const MOTO_TOKEN: &str = "QVdTOjEyMzQ1Njc4OTAxMi1hdXRoLXRva2Vu";
const MOTO_PASSWORD: &str = "123456789012-auth-token";

fn request() -> TokenRequest {
    TokenRequest {
        region: "us-east-1".into(),
        registry_id: REGISTRY.into(),
        fips: false,
        identity: Default::default(),
        kind: Default::default(),
    }
}

async fn source(
    standin: &EcrStandIn,
    max_attempts: u32,
    attempt_timeout: Duration,
) -> AwsTokenSource {
    AwsTokenSource::new(standin.sdk_config(max_attempts, attempt_timeout).await)
}

/// Fails the test if the error's message or debug form carries a secret.
fn assert_no_secrets(err: &EcrError, also: &[&str]) {
    let text = format!("{err} {err:?}");
    let garbage_password = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(GARBAGE_TOKEN)
            .expect("base64"),
    )
    .expect("utf-8");
    for secret in [
        MOTO_TOKEN,
        MOTO_PASSWORD,
        GARBAGE_TOKEN,
        garbage_password.as_str(),
        SECRET_ACCESS_KEY,
    ]
    .iter()
    .chain(also)
    {
        assert!(
            !text.contains(secret),
            "the error carries {secret:?}: {text}"
        );
    }
}

/// A `GetAuthorizationToken` without a signature; returns status and body.
async fn post_unsigned(url: &str, body: &'static str) -> (u16, String) {
    use http_body_util::{BodyExt, Full};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<axum::body::Bytes>>();
    let request = hyper::Request::post(format!("{url}/"))
        .header("x-amz-target", common::ecr::TARGET)
        .header("content-type", common::ecr::CONTENT_TYPE)
        .body(Full::new(axum::body::Bytes::from_static(body.as_bytes())))
        .expect("request");
    let response = client.request(request).await.expect("the stand-in answers");
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// For each fault: the kind the operator's classifier gives, and how many HTTP requests
/// one `authorization_token` call makes with the SDK's standard retries (3 attempts).
#[tokio::test]
async fn each_fault_is_classified_and_retried_as_against_ecr() {
    let moto = Moto::start();
    let cases = [
        // (fault, kind, requests with max_attempts = 3, what the message names)
        (
            Fault::AccessDenied,
            FailureKind::AccessDenied,
            1,
            "AccessDeniedException",
        ),
        (
            Fault::Throttling,
            FailureKind::Throttled,
            3,
            "ThrottlingException",
        ),
        (
            Fault::ServerError,
            FailureKind::ServerError,
            3,
            "ServerException: ",
        ),
        (
            Fault::ExpiredCredentials,
            FailureKind::AccessDenied,
            1,
            "ExpiredTokenException",
        ),
        (
            Fault::UnrecognizedClient,
            FailureKind::AccessDenied,
            1,
            "UnrecognizedClientException",
        ),
        (
            Fault::Garbage,
            FailureKind::InvalidResponse,
            1,
            "failed to parse JSON",
        ),
    ];
    let mut seen = Vec::new();
    for (fault, _, _, named) in cases {
        let standin = EcrStandIn::start(&moto).await;
        standin.set_mode(Mode::Fail(fault));
        let tokens = source(&standin, 3, Duration::from_secs(5)).await;
        let err = tokens
            .authorization_token(&request())
            .await
            .expect_err("a failing ECR gives no token");
        assert_no_secrets(&err, &[]);
        assert!(err.message.contains(named), "{fault:?}: {}", err.message);
        assert_eq!(
            (err.registry_id.as_str(), err.region.as_str()),
            (REGISTRY, "us-east-1")
        );
        seen.push((fault, err.kind, standin.requests()));
        assert!(
            standin.outcomes().iter().all(|o| *o == fault.label()),
            "{fault:?}: {:?}",
            standin.outcomes()
        );
        if fault == Fault::AccessDenied {
            assert!(
                err.message
                    .contains("is not authorized to perform: ecr:GetAuthorizationToken"),
                "IAM's message is kept: {}",
                err.message
            );
        }
    }
    let expected: Vec<_> = cases.iter().map(|(f, k, n, _)| (*f, *k, *n)).collect();
    assert_eq!(seen, expected, "(fault, kind, HTTP requests)");
}

/// A request that ECR never answers: each attempt times out, the SDK retries, and the
/// failure is `Network`.
#[tokio::test]
async fn a_hang_past_the_attempt_timeout_is_a_network_failure() {
    let moto = Moto::start();
    let standin = EcrStandIn::start(&moto).await;
    standin.set_mode(Mode::Fail(Fault::Hang));
    let tokens = source(&standin, 3, Duration::from_millis(300)).await;
    let err = tokens
        .authorization_token(&request())
        .await
        .expect_err("no answer, no token");
    assert_eq!(err.kind, FailureKind::Network, "{err}");
    assert_no_secrets(&err, &[]);
    assert_eq!(standin.requests(), 3, "{:?}", standin.outcomes());
    let times = standin.request_times();
    for pair in times.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(300),
            "each retry comes after the attempt timed out: {times:?}"
        );
    }
    standin.release_hung();
    standin.set_mode(Mode::Pass);
    let token = tokens
        .authorization_token(&request())
        .await
        .expect("the stand-in answers again");
    assert_eq!(token.password.expose_secret(), MOTO_PASSWORD);
}

/// `release_hung` answers a held request, which then succeeds within its attempt.
#[tokio::test]
async fn release_hung_answers_a_held_request() {
    let moto = Moto::start();
    let standin = EcrStandIn::start(&moto).await;
    standin.fail_next(1, Fault::Hang);
    let tokens = source(&standin, 1, Duration::from_secs(20)).await;
    let call = tokio::spawn(async move { tokens.authorization_token(&request()).await });
    assert!(
        poll_until(Duration::from_secs(10), || standin.requests() == 1).await,
        "the request arrives"
    );
    assert!(!call.is_finished(), "held until released");
    standin.release_hung();
    let token = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("answered after the release")
        .expect("task")
        .expect("a token");
    assert_eq!(token.password.expose_secret(), MOTO_PASSWORD);
    assert_eq!(standin.outcomes(), ["Hang"]);
}

/// `Realistic`: a new token on every call, living `lifetime` from now.
#[tokio::test]
async fn realistic_tokens_change_and_expire_after_their_lifetime() {
    let moto = Moto::start();
    let standin = EcrStandIn::start(&moto).await;
    let lifetime = SignedDuration::from_hours(12);
    standin.set_mode(Mode::Realistic { lifetime });
    let tokens = source(&standin, 1, Duration::from_secs(5)).await;
    let mut got: Vec<AuthorizationToken> = Vec::new();
    for _ in 0..3 {
        let before = Timestamp::now();
        let token = tokens
            .authorization_token(&request())
            .await
            .expect("a token");
        let after = Timestamp::now();
        assert!(
            token.expires_at >= before + lifetime - SignedDuration::from_secs(1)
                && token.expires_at <= after + lifetime + SignedDuration::from_secs(1),
            "expiresAt {} is about now + 12 h ({before} .. {after})",
            token.expires_at
        );
        assert_eq!(token.username, "AWS");
        got.push(token);
    }
    let passwords: Vec<&str> = got.iter().map(|t| t.password.expose_secret()).collect();
    assert_eq!(
        passwords,
        [
            "123456789012-auth-token-1",
            "123456789012-auth-token-2",
            "123456789012-auth-token-3"
        ]
    );
    assert_eq!(
        got[0].proxy_endpoint.as_deref(),
        Some("https://123456789012.dkr.ecr.us-east-1.amazonaws.com")
    );
    assert_eq!(standin.outcomes(), ["ok", "ok", "ok"]);
}

/// `Pass` hands moto's answer through: its fixed token and its 2015 expiry.
#[tokio::test]
async fn pass_is_moto_unchanged() {
    let moto = Moto::start();
    let standin = EcrStandIn::start(&moto).await;
    let tokens = source(&standin, 1, Duration::from_secs(5)).await;
    let token = tokens
        .authorization_token(&request())
        .await
        .expect("a token");
    assert_eq!(token.password.expose_secret(), MOTO_PASSWORD);
    assert_eq!(
        token.expires_at,
        "2015-01-01T00:00:00Z".parse::<Timestamp>().unwrap()
    );
    assert_eq!(standin.requests(), 1);
}

/// `fail_next(2, …)`: two failures, then the mode again — within one call when the SDK
/// retries, across calls when it does not.
#[tokio::test]
async fn fail_next_then_back_to_the_mode() {
    let moto = Moto::start();
    let standin = EcrStandIn::start(&moto).await;
    standin.set_mode(Mode::Realistic {
        lifetime: SignedDuration::from_hours(12),
    });

    // Throttling is retried: one call, three requests, a token.
    standin.fail_next(2, Fault::Throttling);
    let retrying = source(&standin, 3, Duration::from_secs(5)).await;
    let token = retrying
        .authorization_token(&request())
        .await
        .expect("the third attempt succeeds");
    assert_eq!(token.password.expose_secret(), "123456789012-auth-token-1");
    assert_eq!(standin.outcomes(), ["Throttling", "Throttling", "ok"]);

    // Without retries, each call sees one failure.
    standin.fail_next(2, Fault::ServerError);
    let once = source(&standin, 1, Duration::from_secs(5)).await;
    for _ in 0..2 {
        let err = once
            .authorization_token(&request())
            .await
            .expect_err("a pending fault");
        assert_eq!(err.kind, FailureKind::ServerError);
        assert_no_secrets(&err, &["123456789012-auth-token-1"]);
    }
    let token = once
        .authorization_token(&request())
        .await
        .expect("back to the mode");
    assert_eq!(token.password.expose_secret(), "123456789012-auth-token-2");
    assert_eq!(
        standin.outcomes(),
        [
            "Throttling",
            "Throttling",
            "ok",
            "ServerError",
            "ServerError",
            "ok"
        ]
    );
    // The SDK waited (jittered backoff) between the throttled attempts.
    let times = standin.request_times();
    assert!(times[1] > times[0] && times[2] > times[1]);
}

/// The stand-in rejects what ECR rejects, and counts only `GetAuthorizationToken`.
#[tokio::test]
async fn the_standin_is_as_strict_as_ecr() {
    let moto = Moto::start();
    let standin = EcrStandIn::start(&moto).await;
    let tokens = source(&standin, 1, Duration::from_secs(5)).await;
    let err = tokens
        .authorization_token(&TokenRequest {
            registry_id: "12345".into(),
            ..request()
        })
        .await
        .expect_err("ECR refuses a registry ID that is not 12 digits");
    assert_eq!(err.kind, FailureKind::Other, "{err}");
    assert!(err.message.contains("InvalidParameterException"), "{err}");
    assert_eq!(standin.outcomes(), ["Rejected"]);

    // Unsigned requests are refused before any fault or mode applies.
    let raw = post_unsigned(&standin.url, "{}").await;
    assert_eq!(raw.0, 400);
    assert!(
        raw.1.contains("MissingAuthenticationTokenException"),
        "{}",
        raw.1
    );
    assert_eq!(standin.outcomes(), ["Rejected", "Rejected"]);

    // Another operation goes to moto and is not counted.
    let ecr = aws_sdk_ecr::Client::new(&standin.sdk_config(1, Duration::from_secs(5)).await);
    let repos = ecr
        .describe_repositories()
        .send()
        .await
        .expect("moto lists repositories");
    assert!(repos.repositories().is_empty());
    assert_eq!(standin.requests(), 2);
}

/// `AWS_ENDPOINT_URL_ECR` wins over FIPS for `AwsTokenSource::from_env`: the SDK's rules
/// alone would refuse the pair. Runs itself in a child process, so that the environment
/// variables touch no other test.
#[tokio::test]
async fn the_endpoint_override_from_the_environment_wins_over_fips() {
    const CHILD: &str = "ECR_STANDIN_OVERRIDE_CHILD";
    if std::env::var_os(CHILD).is_some() {
        let tokens = AwsTokenSource::from_env().await;
        let token = tokens
            .authorization_token(&TokenRequest {
                fips: true,
                ..request()
            })
            .await
            .expect("a FIPS request goes to the endpoint override");
        assert_eq!(token.password.expose_secret(), MOTO_PASSWORD);
        return;
    }
    let moto = Moto::start();
    let standin = EcrStandIn::start(&moto).await;
    let exe = std::env::current_exe().expect("test binary");
    let url = standin.url.clone();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(exe)
            .args([
                "the_endpoint_override_from_the_environment_wins_over_fips",
                "--exact",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .env("AWS_ENDPOINT_URL_ECR", url)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", "/nonexistent/aws-config")
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                "/nonexistent/aws-credentials",
            )
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_USE_FIPS_ENDPOINT")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
            .output()
            .expect("run the child test")
    })
    .await
    .expect("join");
    assert!(
        output.status.success(),
        "child failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("1 passed"),
        "the child ran the test: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert_eq!(
        standin.outcomes(),
        ["ok"],
        "the call went through the stand-in"
    );
}
