//! Identities and ECR Public at the token-source level: the real `AwsTokenSource`
//! (aws-sdk-sts, aws-sdk-ecr, aws-sdk-ecrpublic, kube's TokenRequest) against the ECR
//! stand-in in front of moto (which also stands in for STS and ECR Public) and the
//! Kubernetes stand-in (ServiceAccount `token` subresource).
//!
//! Needs `moto_server` (`MOTO_SERVER` or `.venv/bin/moto_server`).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::ecr::{ACCESS_KEY_ID, EcrStandIn, Fault, Mode, SECRET_ACCESS_KEY, StsCall, StsFault};
use common::moto::Moto;
use ecr_token_refresh::ecr::{
    AuthorizationToken, AwsTokenSource, DEFAULT_SESSION_NAME, EcrError, FailureKind, Identity,
    RegistryKind, TokenRequest, TokenSource, WEB_IDENTITY_AUDIENCE,
};
use ecr_token_refresh::metrics::{Metrics, encode_text};
use jiff::{SignedDuration, Timestamp};
use kube_standin::{RunningServer, StandIn, decode_token_claims};
use secrecy::ExposeSecret;
use serde_json::json;
use tracing_subscriber::layer::SubscriberExt as _;

const REGISTRY: &str = "123456789012";
const ROLE: &str = "arn:aws:iam::111111111111:role/puller";
const EXTERNAL_ID: &str = "tenant-42-external";

/// The stand-ins and a token source pointed at them.
struct Env {
    _moto: Moto,
    ecr: EcrStandIn,
    api: StandIn,
    _server: RunningServer,
    kube: kube::Client,
    metrics: Arc<Metrics>,
}

impl Env {
    /// ECR answers realistically (12-hour tokens); no SDK retries.
    async fn start() -> Self {
        let moto = Moto::start();
        let ecr = EcrStandIn::start(&moto).await;
        ecr.set_mode(Mode::Realistic {
            lifetime: SignedDuration::from_hours(12),
        });
        let api = StandIn::new();
        let server = api.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let kube = kube::Client::try_from(kube::Config::new(server.url.parse().unwrap())).unwrap();
        Self {
            _moto: moto,
            ecr,
            api,
            _server: server,
            kube,
            metrics: Arc::new(Metrics::default()),
        }
    }

    /// A source with the Kubernetes client and metrics.
    async fn source(&self) -> AwsTokenSource {
        self.bare_source()
            .await
            .with_kube_client(self.kube.clone())
            .with_metrics(Arc::clone(&self.metrics))
    }

    /// A source without a Kubernetes client or metrics.
    async fn bare_source(&self) -> AwsTokenSource {
        AwsTokenSource::new(self.ecr.sdk_config(1, Duration::from_secs(5)).await)
    }

    fn service_account(&self, namespace: &str, name: &str) {
        self.api
            .create(
                "v1/serviceaccounts",
                json!({"metadata": {"name": name, "namespace": namespace}}),
            )
            .unwrap();
    }

    fn sts_calls_metric(&self, operation: &str, outcome: &str) -> f64 {
        let text = encode_text(&self.metrics.registry());
        let series = format!(
            "ecr_token_refresh_sts_calls_total{{operation=\"{operation}\",outcome=\"{outcome}\"}}"
        );
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// The one STS call made so far.
    fn only_sts_call(&self) -> StsCall {
        let calls = self.ecr.sts_calls();
        assert_eq!(calls.len(), 1, "{calls:#?}");
        calls.into_iter().next().unwrap()
    }
}

fn request(region: &str, identity: Identity, kind: RegistryKind) -> TokenRequest {
    TokenRequest {
        region: region.into(),
        registry_id: REGISTRY.into(),
        fips: false,
        identity,
        kind,
    }
}

fn role(external_id: Option<&str>, session_name: Option<&str>) -> Identity {
    Identity::Role {
        arn: ROLE.into(),
        external_id: external_id.map(str::to_string),
        session_name: session_name.map(str::to_string),
    }
}

fn web_identity(service_account: &str) -> Identity {
    Identity::WebIdentity {
        namespace: "team-a".into(),
        service_account: service_account.into(),
        role_arn: ROLE.into(),
        session_name: None,
    }
}

/// Fails when the error (Display and Debug) carries any of `secrets`.
fn assert_no_secrets(err: &EcrError, secrets: &[&str]) {
    let text = format!("{err} {err:?}");
    for secret in secrets.iter().chain(&[SECRET_ACCESS_KEY]) {
        assert!(!secret.is_empty());
        assert!(!text.contains(secret), "{secret:?} leaked into {text}");
    }
}

#[tokio::test]
async fn a_role_is_assumed_and_ecr_is_asked_with_its_credentials() {
    let env = Env::start().await;
    let source = env.source().await;
    let token = source
        .authorization_token(&request(
            "eu-west-1",
            role(Some(EXTERNAL_ID), Some("team-a-session")),
            RegistryKind::Private,
        ))
        .await
        .expect("a token as the role");

    // STS got the role, the external ID and the session name, signed with the operator's
    // own credentials and scoped to the request's region (its regional endpoint).
    let sts = env.only_sts_call();
    assert_eq!(sts.action, "AssumeRole");
    assert_eq!(sts.role_arn.as_deref(), Some(ROLE));
    assert_eq!(sts.external_id.as_deref(), Some(EXTERNAL_ID));
    assert_eq!(sts.role_session_name.as_deref(), Some("team-a-session"));
    let scope = sts.signed.expect("AssumeRole is signed");
    assert_eq!(
        (
            scope.access_key_id.as_str(),
            scope.region.as_str(),
            scope.service.as_str()
        ),
        (ACCESS_KEY_ID, "eu-west-1", "sts")
    );
    let issued = sts.issued.expect("moto issued credentials");
    assert_ne!(issued.access_key_id, ACCESS_KEY_ID);

    // ECR was asked once, signed with the role's access key, not the operator's.
    assert_eq!(env.ecr.signers(), [Some(issued.access_key_id.clone())]);
    assert_eq!(token.username, "AWS");
    assert!(
        token
            .password
            .expose_secret()
            .starts_with("123456789012-auth-token-")
    );
    assert_eq!(env.sts_calls_metric("AssumeRole", "success"), 1.0);
}

#[tokio::test]
async fn the_default_session_name_and_no_external_id() {
    let env = Env::start().await;
    env.source()
        .await
        .authorization_token(&request(
            "us-east-1",
            role(None, None),
            RegistryKind::Private,
        ))
        .await
        .expect("a token");
    let sts = env.only_sts_call();
    assert_eq!(sts.role_session_name.as_deref(), Some(DEFAULT_SESSION_NAME));
    assert_eq!(sts.external_id, None, "no ExternalId parameter at all");
}

#[tokio::test]
async fn web_identity_through_a_service_account_token() {
    let env = Env::start().await;
    env.service_account("team-a", "builder");
    let token = env
        .source()
        .await
        .authorization_token(&request(
            "us-west-2",
            web_identity("builder"),
            RegistryKind::Private,
        ))
        .await
        .expect("a token as the role, through the ServiceAccount");

    // One TokenRequest for the ServiceAccount, audience sts.amazonaws.com, 10 minutes.
    let asked = env.api.token_requests();
    assert_eq!(asked.len(), 1);
    assert_eq!(
        (
            asked[0].namespace.as_str(),
            asked[0].service_account.as_str()
        ),
        ("team-a", "builder")
    );
    assert_eq!(asked[0].audiences, [WEB_IDENTITY_AUDIENCE]);
    assert_eq!(WEB_IDENTITY_AUDIENCE, "sts.amazonaws.com");
    assert_eq!(asked[0].expiration_seconds, Some(600));

    // STS got exactly that token, unsigned, for the role.
    let sts = env.only_sts_call();
    assert_eq!(sts.action, "AssumeRoleWithWebIdentity");
    assert_eq!(sts.role_arn.as_deref(), Some(ROLE));
    assert_eq!(
        sts.web_identity_token.as_deref(),
        Some(asked[0].token.as_str())
    );
    assert!(
        sts.signed.is_none(),
        "AssumeRoleWithWebIdentity is unsigned"
    );
    let claims = decode_token_claims(sts.web_identity_token.as_deref().unwrap()).unwrap();
    assert_eq!(claims["sub"], "system:serviceaccount:team-a:builder");
    assert_eq!(claims["aud"], json!(["sts.amazonaws.com"]));

    // ECR was asked with the credentials STS returned.
    let issued = sts.issued.expect("moto issued credentials");
    assert_eq!(env.ecr.signers(), [Some(issued.access_key_id)]);
    assert_eq!(token.username, "AWS");
    assert_eq!(
        env.sts_calls_metric("AssumeRoleWithWebIdentity", "success"),
        1.0
    );
}

#[tokio::test]
async fn a_missing_service_account_is_a_clear_error_and_no_aws_call() {
    let env = Env::start().await;
    let err = env
        .source()
        .await
        .authorization_token(&request(
            "us-east-1",
            web_identity("ghost"),
            RegistryKind::Private,
        ))
        .await
        .expect_err("no ServiceAccount, no token");
    assert_eq!(err.kind, FailureKind::Other);
    assert!(
        err.message
            .starts_with("requesting a token of ServiceAccount team-a/ghost: "),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("not found (404 NotFound)"),
        "{}",
        err.message
    );
    assert!(env.ecr.sts_calls().is_empty());
    assert_eq!(env.ecr.requests(), 0);
}

#[tokio::test]
async fn web_identity_without_a_kubernetes_client_is_refused() {
    let env = Env::start().await;
    env.service_account("team-a", "builder");
    let err = env
        .bare_source()
        .await
        .authorization_token(&request(
            "us-east-1",
            web_identity("builder"),
            RegistryKind::Private,
        ))
        .await
        .expect_err("no Kubernetes client");
    assert_eq!(err.kind, FailureKind::Other);
    assert!(
        err.message.contains("no Kubernetes client") && err.message.contains(ROLE),
        "{}",
        err.message
    );
    assert!(env.api.token_requests().is_empty());
    assert!(env.ecr.sts_calls().is_empty());
    assert_eq!(env.ecr.requests(), 0);
}

#[tokio::test]
async fn sts_failures_are_classified_name_the_role_and_skip_ecr() {
    let env = Env::start().await;
    env.service_account("team-a", "builder");
    let source = env.source().await;
    let assume = request(
        "us-east-1",
        role(Some(EXTERNAL_ID), None),
        RegistryKind::Private,
    );

    env.ecr.fail_next_sts(1, StsFault::AccessDenied);
    let err = source.authorization_token(&assume).await.unwrap_err();
    assert_eq!(err.kind, FailureKind::AccessDenied);
    assert!(
        err.message
            .starts_with(&format!("assuming role {ROLE}: AccessDenied: User: ")),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("(HTTP 403, request ID "),
        "{}",
        err.message
    );
    assert!(err.to_string().contains(REGISTRY), "{err}");
    assert_eq!(env.ecr.requests(), 0, "no ECR call without the role");
    assert_eq!(env.sts_calls_metric("AssumeRole", "access_denied"), 1.0);

    env.ecr.fail_next_sts(1, StsFault::Throttling);
    let err = source.authorization_token(&assume).await.unwrap_err();
    assert_eq!(err.kind, FailureKind::Throttled, "{}", err.message);

    env.ecr.fail_next_sts(1, StsFault::ExpiredToken);
    let err = source.authorization_token(&assume).await.unwrap_err();
    assert_eq!(err.kind, FailureKind::AccessDenied, "{}", err.message);

    // A refused ServiceAccount token: classified, names the role and the ServiceAccount,
    // never quotes the token.
    env.ecr.fail_next_sts(1, StsFault::InvalidIdentityToken);
    let err = source
        .authorization_token(&request(
            "us-east-1",
            web_identity("builder"),
            RegistryKind::Private,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::AccessDenied, "{}", err.message);
    assert!(
        err.message.starts_with(&format!(
            "assuming role {ROLE} with the token of ServiceAccount team-a/builder: InvalidIdentityToken"
        )),
        "{}",
        err.message
    );
    let jwt = env.api.token_requests()[0].token.clone();
    assert_no_secrets(&err, &[&jwt]);
    assert_eq!(env.ecr.requests(), 0);
    assert_eq!(
        env.sts_calls_metric("AssumeRoleWithWebIdentity", "access_denied"),
        1.0
    );

    // STS unreachable: a network failure.
    let unreachable = AwsTokenSource::new(
        aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:9")
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(
                    aws_credential_types::Credentials::new(
                        ACCESS_KEY_ID,
                        SECRET_ACCESS_KEY,
                        None,
                        None,
                        "t",
                    ),
                ),
            )
            .build(),
    );
    let err = unreachable.authorization_token(&assume).await.unwrap_err();
    assert_eq!(err.kind, FailureKind::Network, "{}", err.message);
    assert!(
        err.message.starts_with(&format!("assuming role {ROLE}: ")),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn an_ecr_failure_as_a_role_names_the_role_and_leaks_no_credential() {
    let env = Env::start().await;
    env.ecr.fail_next(1, Fault::AccessDenied);
    let err = env
        .source()
        .await
        .authorization_token(&request(
            "us-east-1",
            role(Some(EXTERNAL_ID), None),
            RegistryKind::Private,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::AccessDenied);
    assert!(
        err.message
            .starts_with(&format!("as role {ROLE}: AccessDeniedException: ")),
        "{}",
        err.message
    );
    let issued = env.only_sts_call().issued.unwrap();
    assert_no_secrets(&err, &[&issued.secret_access_key, &issued.session_token]);
    // The identity's Debug shows the role, not the external ID.
    let debug = format!("{:?}", role(Some(EXTERNAL_ID), None));
    assert!(
        debug.contains(ROLE) && !debug.contains(EXTERNAL_ID),
        "{debug}"
    );
}

#[tokio::test]
async fn ecr_public_tokens_for_every_identity() {
    let env = Env::start().await;
    env.service_account("team-a", "builder");
    let source = env.source().await;

    // The operator's own identity.
    let token = source
        .authorization_token(&request(
            "us-east-1",
            Identity::Operator,
            RegistryKind::Public,
        ))
        .await
        .expect("an ECR Public token");
    let calls = env.ecr.public_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].access_key_id.as_deref(), Some(ACCESS_KEY_ID));
    assert_eq!(token.username, "AWS");
    assert_eq!(
        Some(token.password.expose_secret()),
        calls[0].password.as_deref()
    );
    assert_eq!(Some(token.expires_at), calls[0].expires_at);
    assert_eq!(token.proxy_endpoint, None);
    assert_eq!(env.ecr.requests(), 0, "no private ECR call");

    // A role: STS in us-east-1 (ECR Public's region, whatever the request says), then
    // ECR Public signed with the role's credentials.
    source
        .authorization_token(&request(
            "eu-central-1",
            role(None, None),
            RegistryKind::Public,
        ))
        .await
        .expect("an ECR Public token as the role");
    let sts = env.only_sts_call();
    assert_eq!(sts.signed.as_ref().unwrap().region, "us-east-1");
    let issued = sts.issued.unwrap();
    assert_eq!(
        env.ecr.public_calls()[1].access_key_id.as_deref(),
        Some(issued.access_key_id.as_str())
    );

    // Web identity.
    source
        .authorization_token(&request(
            "us-east-1",
            web_identity("builder"),
            RegistryKind::Public,
        ))
        .await
        .expect("an ECR Public token through the ServiceAccount");
    let sts = env.ecr.sts_calls();
    assert_eq!(sts[1].action, "AssumeRoleWithWebIdentity");
    assert_eq!(
        env.ecr.public_calls()[2].access_key_id,
        sts[1].issued.as_ref().map(|i| i.access_key_id.clone())
    );

    // ECR Public failures are classified too.
    env.ecr.fail_next_public(1, Fault::Throttling);
    let err = source
        .authorization_token(&request(
            "us-east-1",
            Identity::Operator,
            RegistryKind::Public,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::Throttled, "{}", err.message);
}

#[tokio::test]
async fn the_expiry_is_the_earlier_of_ecr_and_the_role_credentials() {
    let env = Env::start().await;
    let source = env.source().await;
    let private = |identity| request("us-east-1", identity, RegistryKind::Private);

    // ECR says 12 hours, the role's credentials (moto: an hour) end first.
    let before = Timestamp::now();
    let token = source
        .authorization_token(&private(role(None, None)))
        .await
        .unwrap();
    let credentials_end = env.only_sts_call().issued.unwrap().expiration;
    assert_eq!(token.expires_at, credentials_end);
    assert!(
        token.expires_at < before + SignedDuration::from_hours(2),
        "{}",
        token.expires_at
    );

    // Credentials that live 3 hours, a token that lives 30 minutes: the token's.
    env.ecr
        .set_sts_credential_lifetime(Some(SignedDuration::from_hours(3)));
    env.ecr.set_mode(Mode::Realistic {
        lifetime: SignedDuration::from_mins(30),
    });
    let token = source
        .authorization_token(&private(role(None, None)))
        .await
        .unwrap();
    let credentials_end = env.ecr.sts_calls()[1].issued.clone().unwrap().expiration;
    assert!(credentials_end > Timestamp::now() + SignedDuration::from_mins(170));
    assert_within(
        token.expires_at,
        Timestamp::now() + SignedDuration::from_mins(30),
    );

    // ECR Public likewise.
    env.ecr
        .set_sts_credential_lifetime(Some(SignedDuration::from_mins(20)));
    let token = source
        .authorization_token(&request(
            "us-east-1",
            role(None, None),
            RegistryKind::Public,
        ))
        .await
        .unwrap();
    let credentials_end = env.ecr.sts_calls()[2].issued.clone().unwrap().expiration;
    assert_eq!(token.expires_at, credentials_end);
    assert_within(
        token.expires_at,
        Timestamp::now() + SignedDuration::from_mins(20),
    );

    // The operator's own identity: ECR's expiry, unclamped.
    env.ecr.set_mode(Mode::Realistic {
        lifetime: SignedDuration::from_hours(12),
    });
    let token: AuthorizationToken = source
        .authorization_token(&private(Identity::Operator))
        .await
        .unwrap();
    assert_within(
        token.expires_at,
        Timestamp::now() + SignedDuration::from_hours(12),
    );
}

fn assert_within(actual: Timestamp, expected: Timestamp) {
    let off = actual.duration_since(expected).abs();
    assert!(
        off < SignedDuration::from_secs(10),
        "{actual} is not within 10 s of {expected}"
    );
}

/// Runs the test `name` of this binary alone in a child process with `child_env` set (and
/// the parent's environment), and fails unless it passed.
async fn run_alone(name: &'static str, child_env: &'static str) {
    let exe = std::env::current_exe().expect("test binary");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(exe)
            .args([name, "--exact", "--test-threads=1"])
            .env(child_env, "1")
            .output()
            .expect("run the child test")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "the child test failed or did not run:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Spans and their fields, as a tracing layer sees them.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<(String, SpanFields)>>>);

/// A span's fields as (name, value), in the order recorded.
type SpanFields = Vec<(String, String)>;

struct Fields<'a>(&'a mut Vec<(String, String)>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0
            .push((field.name().to_string(), format!("{value:?}")));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.push((field.name().to_string(), value.to_string()));
    }
}

impl<S> tracing_subscriber::Layer<S> for Spans
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = Vec::new();
        attrs.record(&mut Fields(&mut fields));
        let mut spans = self.0.lock().unwrap();
        spans.push((
            format!("{}#{}", attrs.metadata().name(), id.into_u64()),
            fields,
        ));
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut spans = self.0.lock().unwrap();
        let suffix = format!("#{}", id.into_u64());
        if let Some((_, fields)) = spans.iter_mut().rev().find(|(n, _)| n.ends_with(&suffix)) {
            values.record(&mut Fields(fields));
        }
    }
}

#[tokio::test]
async fn spans_name_the_role_and_outcome_and_never_a_credential() {
    // tracing caches each callsite's interest process-wide: a test running in parallel
    // without a subscriber can leave a span of ours "never interesting" for this one's
    // scoped subscriber. So the test body runs alone, in a child process.
    const CHILD: &str = "IDENTITY_SPANS_CHILD";
    if std::env::var_os(CHILD).is_none() {
        run_alone(
            "spans_name_the_role_and_outcome_and_never_a_credential",
            CHILD,
        )
        .await;
        return;
    }
    let env = Env::start().await;
    env.service_account("team-a", "builder");
    let source = env.source().await;
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(spans.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    source
        .authorization_token(&request(
            "us-east-1",
            role(Some(EXTERNAL_ID), None),
            RegistryKind::Private,
        ))
        .await
        .unwrap();
    env.ecr.fail_next_sts(1, StsFault::AccessDenied);
    source
        .authorization_token(&request(
            "us-east-1",
            web_identity("builder"),
            RegistryKind::Public,
        ))
        .await
        .unwrap_err();
    source
        .authorization_token(&request(
            "us-east-1",
            Identity::Operator,
            RegistryKind::Public,
        ))
        .await
        .unwrap();

    let named = |prefix: &str| -> Vec<SpanFields> {
        let all = spans.0.lock().unwrap().clone();
        all.into_iter()
            .filter(|(n, _)| n.split('#').next() == Some(prefix))
            .map(|(_, f)| f)
            .collect()
    };
    let field = |fields: &[(String, String)], key: &str| {
        fields
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let assume = named("sts.assume_role");
    assert_eq!(assume.len(), 1, "{assume:?}");
    assert_eq!(field(&assume[0], "role_arn").as_deref(), Some(ROLE));
    assert_eq!(field(&assume[0], "outcome").as_deref(), Some("success"));
    let web = named("sts.assume_role_with_web_identity");
    assert_eq!(web.len(), 1, "{web:?}");
    assert_eq!(field(&web[0], "role_arn").as_deref(), Some(ROLE));
    assert_eq!(field(&web[0], "outcome").as_deref(), Some("access_denied"));
    let public = named("ecr_public.get_authorization_token");
    assert_eq!(public.len(), 1, "{public:?}");
    assert_eq!(field(&public[0], "outcome").as_deref(), Some("success"));
    let private = named("ecr.get_authorization_token");
    assert_eq!(private.len(), 1);
    let token_request = named("k8s.write");
    assert_eq!(
        field(&token_request[0], "kind").as_deref(),
        Some("ServiceAccount/token")
    );
    assert_eq!(
        field(&token_request[0], "outcome").as_deref(),
        Some("success")
    );

    // No credential, token or external ID in any span field.
    let issued = env.ecr.sts_calls()[0].issued.clone().unwrap();
    let jwt = env.api.token_requests()[0].token.clone();
    let everything = format!("{:?}", spans.0.lock().unwrap());
    for secret in [
        SECRET_ACCESS_KEY,
        issued.secret_access_key.as_str(),
        issued.session_token.as_str(),
        jwt.as_str(),
        EXTERNAL_ID,
    ] {
        assert!(
            !everything.contains(secret),
            "{secret} in spans: {everything}"
        );
    }
}

/// `AWS_ENDPOINT_URL_STS` and `AWS_ENDPOINT_URL_ECR_PUBLIC` reach `AwsTokenSource::from_env`
/// (no `AWS_ENDPOINT_URL`): a role assumed and an ECR Public token, both through the
/// stand-in. Runs itself in a child process, so that the environment variables touch no
/// other test.
#[tokio::test]
async fn the_service_endpoint_overrides_from_the_environment() {
    const CHILD: &str = "IDENTITY_OVERRIDE_CHILD";
    if std::env::var_os(CHILD).is_some() {
        let tokens = AwsTokenSource::from_env().await;
        tokens
            .authorization_token(&request(
                "us-east-1",
                role(None, None),
                RegistryKind::Public,
            ))
            .await
            .expect("STS and ECR Public at their endpoint overrides");
        return;
    }
    let env = Env::start().await;
    let exe = std::env::current_exe().expect("test binary");
    let url = env.ecr.url.clone();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(exe)
            .args([
                "the_service_endpoint_overrides_from_the_environment",
                "--exact",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .env("AWS_ENDPOINT_URL_STS", &url)
            .env("AWS_ENDPOINT_URL_ECR_PUBLIC", &url)
            // Nothing listens there: a call that ignored the service variables fails.
            .env("AWS_ENDPOINT_URL_ECR", "http://127.0.0.1:9")
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
    let sts = env.only_sts_call();
    assert_eq!(sts.outcome, "ok");
    let public = env.ecr.public_calls();
    assert_eq!(public.len(), 1);
    assert_eq!(public[0].access_key_id, sts.issued.map(|i| i.access_key_id));
}
