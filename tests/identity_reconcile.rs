//! Identities end to end: the real controller with the real `AwsTokenSource` against the
//! Kubernetes stand-in (ServiceAccount `token` subresource) and the ECR stand-in in front of
//! moto (which also stands in for STS and ECR Public).
//!
//! Needs `moto_server` (`MOTO_SERVER` or `.venv/bin/moto_server`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::ecr::{EcrStandIn, Mode, StsFault};
use common::moto::Moto;
use common::world::password_in;
use common::*;
use ecr_token_refresh::ecr::{AwsTokenSource, WEB_IDENTITY_AUDIENCE};
use jiff::SignedDuration;
use serde_json::{Value, json};

const ROLE: &str = "arn:aws:iam::111111111111:role/team-a-pull";
const EXTERNAL_ID: &str = "team-a-external";
const WEST: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";

struct Env {
    cluster: Cluster,
    ecr: EcrStandIn,
    _moto: Moto,
    running: Option<Running>,
}

impl Env {
    /// The stand-ins and the controller with an `AwsTokenSource` pointed at them (no SDK
    /// retries, so every STS or ECR answer is one reconcile's).
    async fn start() -> Self {
        let moto = Moto::start();
        let ecr = EcrStandIn::start(&moto).await;
        ecr.set_mode(Mode::Realistic {
            lifetime: SignedDuration::from_hours(12),
        });
        let cluster = Cluster::start().await;
        let source = AwsTokenSource::new(ecr.sdk_config(1, Duration::from_secs(5)).await)
            .with_kube_client(cluster.client.clone());
        let running = start_controller(cluster.client.clone(), Arc::new(source), fast_settings());
        Self {
            cluster,
            ecr,
            _moto: moto,
            running: Some(running),
        }
    }

    async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }
}

/// A resource with a role, three registries (two regions, ECR Public): the role is assumed
/// once per token key with the external ID, and every token — private and public — is
/// asked with the role's credentials, never the operator's.
#[tokio::test]
async fn a_role_gets_every_token_of_the_secret() {
    let env = Env::start().await;
    env.cluster.apply_sample(
        "as-role",
        json!({"additionalRegistries": [WEST, "public.ecr.aws"],
               "auth": {"roleArn": ROLE, "externalId": EXTERNAL_ID}}),
    );
    env.cluster
        .wait_ready("as-role", "True", "TokenRefreshed")
        .await;
    let secret = env.cluster.secret("as-role").unwrap();
    let sts = env.ecr.sts_calls();
    let signers = env.ecr.signers();
    let public = env.ecr.public_calls();
    env.stop().await;

    assert_eq!(sts.len(), 3, "one AssumeRole per token key: {sts:#?}");
    for call in &sts {
        assert_eq!(call.action, "AssumeRole");
        assert_eq!(call.role_arn.as_deref(), Some(ROLE));
        assert_eq!(call.external_id.as_deref(), Some(EXTERNAL_ID));
        assert!(
            call.signed.is_some(),
            "AssumeRole is signed by the operator"
        );
    }
    let issued: Vec<String> = sts
        .iter()
        .map(|c| c.issued.as_ref().unwrap().access_key_id.clone())
        .collect();
    assert_eq!(signers.len(), 2, "two private regions: {signers:?}");
    for signer in signers
        .iter()
        .chain(public.iter().map(|p| &p.access_key_id))
    {
        let key = signer.as_deref().expect("signed");
        assert!(
            issued.iter().any(|i| i == key),
            "signed with {key}, not an assumed role's key ({issued:?})"
        );
        assert_ne!(key, common::ecr::ACCESS_KEY_ID);
    }
    assert_eq!(public.len(), 1);
    assert_eq!(
        password_in(&secret, "public.ecr.aws"),
        public[0].password.clone().unwrap()
    );
    assert!(!password_in(&secret, HOST).is_empty());
    assert!(!password_in(&secret, WEST).is_empty());
    assert_ne!(password_in(&secret, HOST), password_in(&secret, WEST));
    world::assert_pull_secret_sound(&secret);
}

/// `serviceAccountRef`: a token of the resource's namespace's ServiceAccount (audience
/// `sts.amazonaws.com`) is exchanged with `AssumeRoleWithWebIdentity`; a ServiceAccount that
/// does not exist is named in the status and nothing is asked of AWS.
#[tokio::test]
async fn web_identity_through_the_namespaces_service_account() {
    let env = Env::start().await;
    env.cluster
        .api
        .create(
            "v1/serviceaccounts",
            json!({"metadata": {"name": "puller", "namespace": "default"}}),
        )
        .unwrap();
    let auth = json!({"auth": {"roleArn": ROLE, "sessionName": "team-a-ci",
                               "serviceAccountRef": {"name": "puller"}}});
    env.cluster.apply_sample("wi", auth);
    env.cluster.wait_ready("wi", "True", "TokenRefreshed").await;
    let asked = env.cluster.api.token_requests();
    assert_eq!(asked.len(), 1, "one TokenRequest");
    assert_eq!(
        (
            asked[0].namespace.as_str(),
            asked[0].service_account.as_str()
        ),
        ("default", "puller")
    );
    assert_eq!(asked[0].audiences, [WEB_IDENTITY_AUDIENCE]);
    let sts = env.ecr.sts_calls();
    assert_eq!(sts.len(), 1);
    assert_eq!(sts[0].action, "AssumeRoleWithWebIdentity");
    assert_eq!(sts[0].role_session_name.as_deref(), Some("team-a-ci"));
    assert_eq!(
        sts[0].web_identity_token.as_deref(),
        Some(asked[0].token.as_str())
    );
    assert_eq!(
        env.ecr.signers(),
        [Some(sts[0].issued.as_ref().unwrap().access_key_id.clone())]
    );

    // A ServiceAccount that is not there: a clear status, no AWS call, no token in it.
    let before = (env.ecr.sts_calls().len(), env.ecr.requests());
    env.cluster.apply_sample(
        "wi-missing",
        json!({"auth": {"roleArn": ROLE, "serviceAccountRef": {"name": "nobody"}}}),
    );
    let ready = env
        .cluster
        .wait_ready("wi-missing", "False", "ECRRequestFailed")
        .await;
    let message = ready["message"].as_str().unwrap().to_string();
    assert!(message.contains("nobody"), "{message}");
    assert_eq!((env.ecr.sts_calls().len(), env.ecr.requests()), before);
    assert!(env.cluster.secret("wi-missing").is_none());
    env.stop().await;
}

/// STS refuses the role: `ECRAccessDenied` naming the role (never a credential), no ECR
/// call, retried with backoff (attempts counted in status), then served once STS allows it.
#[tokio::test]
async fn an_sts_failure_is_classified_named_and_retried_with_backoff() {
    let env = Env::start().await;
    env.ecr.fail_next_sts(2, StsFault::AccessDenied);
    env.cluster.apply_sample(
        "denied",
        json!({"auth": {"roleArn": ROLE, "externalId": EXTERNAL_ID}}),
    );
    let ready = env
        .cluster
        .wait_ready("denied", "False", "ECRAccessDenied")
        .await;
    let message = ready["message"].as_str().unwrap().to_string();
    assert!(message.contains(ROLE), "{message}");
    assert!(!message.contains(EXTERNAL_ID), "{message}");
    assert!(
        !message.contains(common::ecr::SECRET_ACCESS_KEY),
        "{message}"
    );
    assert_eq!(env.ecr.requests(), 0, "no ECR call without the role");
    // The second failure, after a backoff, is counted in status.
    let counted = env
        .cluster
        .api
        .wait_for(WAIT, |api| {
            api.get(CRS, Some("default"), "denied")
                .is_some_and(|cr| cr["status"]["consecutiveFailures"] == 2)
        })
        .await;
    assert!(counted, "{:#}", env.cluster.cr("denied")["status"]);

    env.cluster
        .wait_ready("denied", "True", "TokenRefreshed")
        .await;
    let outcomes: Vec<String> = env
        .ecr
        .sts_calls()
        .iter()
        .map(|c| c.outcome.clone())
        .collect();
    assert_eq!(outcomes, ["AccessDenied", "AccessDenied", "ok"]);
    let events = env.cluster.events("denied");
    let warning = events
        .iter()
        .find(|(t, reason, _)| t == "Warning" && reason == "ECRAccessDenied")
        .unwrap_or_else(|| panic!("no ECRAccessDenied Warning: {events:?}"));
    assert!(warning.2.contains(ROLE), "{warning:?}");
    assert!(
        env.cluster.secret("denied").is_some(),
        "served after the failures"
    );
    let cr: Value = env.cluster.cr("denied");
    assert_eq!(cr["status"]["consecutiveFailures"], Value::Null, "{cr:#}");
    env.stop().await;
}
