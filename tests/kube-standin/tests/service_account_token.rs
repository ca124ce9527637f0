//! The ServiceAccount `token` subresource (TokenRequest API) through kube's
//! `Api::<ServiceAccount>::create_token_request` and raw requests: answered like the real
//! API server, strict about the body, 404 for a missing ServiceAccount, recorded.

mod support;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use kube_standin::{FaultRule, ISSUER, Verb, decode_token_claims};
use serde_json::json;
use support::{causes, crm, raw, start, status};

const PATH: &str = "/api/v1/namespaces/team-a/serviceaccounts/builder/token";
const JSON: (&str, &str) = ("content-type", "application/json");

fn request(audiences: &[&str], seconds: Option<i64>) -> TokenRequest {
    TokenRequest {
        spec: TokenRequestSpec {
            audiences: audiences.iter().map(|a| a.to_string()).collect(),
            expiration_seconds: seconds,
            bound_object_ref: None,
        },
        ..TokenRequest::default()
    }
}

fn with_builder(api: &support::Api) {
    api.standin
        .create(
            "v1/serviceaccounts",
            json!({"metadata": {"name": "builder", "namespace": "team-a"}}),
        )
        .unwrap();
}

#[tokio::test]
async fn a_token_names_its_service_account_and_audience_and_is_recorded() {
    let api = start().await;
    with_builder(&api);
    let sas: Api<ServiceAccount> = Api::namespaced(api.client.clone(), "team-a");
    let before = chrono::Utc::now().timestamp();
    let answer = sas
        .create_token_request(
            "builder",
            &PostParams::default(),
            &request(&["sts.amazonaws.com"], Some(600)),
        )
        .await
        .expect("a token");
    let status = answer.status.expect("status");
    let claims = decode_token_claims(&status.token).expect("JWT-shaped");
    assert_eq!(claims["sub"], "system:serviceaccount:team-a:builder");
    assert_eq!(claims["aud"], json!(["sts.amazonaws.com"]));
    assert_eq!(claims["kubernetes.io"]["namespace"], "team-a");
    let exp = claims["exp"].as_i64().unwrap();
    assert!((before + 600..=before + 602).contains(&exp), "{exp}");
    assert_eq!(status.expiration_timestamp.0.as_second(), exp);
    assert_eq!(answer.spec.expiration_seconds, Some(600));

    // A second token differs.
    let again = sas
        .create_token_request(
            "builder",
            &PostParams::default(),
            &request(&["sts.amazonaws.com"], Some(600)),
        )
        .await
        .unwrap();
    assert_ne!(again.status.unwrap().token, status.token);

    let recorded = api.standin.token_requests();
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[0].namespace, "team-a");
    assert_eq!(recorded[0].service_account, "builder");
    assert_eq!(recorded[0].audiences, ["sts.amazonaws.com"]);
    assert_eq!(recorded[0].expiration_seconds, Some(600));
    assert_eq!(recorded[0].token, status.token);

    // In the request log and counters as a create of the subresource.
    let log = api.standin.requests();
    let last = log.last().unwrap();
    assert_eq!(last.verb, Verb::Create);
    assert_eq!(last.gvr, "v1/serviceaccounts");
    assert_eq!(last.subresource.as_deref(), Some("token"));
    assert_eq!(last.name.as_deref(), Some("builder"));
    assert_eq!(last.status, 201);
    assert_eq!(
        api.standin
            .counters()
            .get_count("create", "v1/serviceaccounts/token"),
        2
    );
}

#[tokio::test]
async fn defaults_without_audiences_or_expiry() {
    let api = start().await;
    with_builder(&api);
    let sas: Api<ServiceAccount> = Api::namespaced(api.client.clone(), "team-a");
    let answer = sas
        .create_token_request("builder", &PostParams::default(), &request(&[], None))
        .await
        .unwrap();
    assert_eq!(answer.spec.expiration_seconds, Some(3600));
    let claims = decode_token_claims(&answer.status.unwrap().token).unwrap();
    assert_eq!(claims["aud"], json!([ISSUER]));
}

#[tokio::test]
async fn a_missing_service_account_is_not_found() {
    let api = start().await;
    let sas: Api<ServiceAccount> = Api::namespaced(api.no_retry.clone(), "team-a");
    let err = sas
        .create_token_request(
            "builder",
            &PostParams::default(),
            &request(&["sts.amazonaws.com"], Some(600)),
        )
        .await
        .unwrap_err();
    assert_eq!(
        crm(err),
        (
            404,
            "NotFound".into(),
            "serviceaccounts \"builder\" not found".into()
        )
    );
    assert!(api.standin.token_requests().is_empty());
}

#[tokio::test]
async fn the_body_is_checked_like_the_api_server() {
    let api = start().await;
    with_builder(&api);
    let sas: Api<ServiceAccount> = Api::namespaced(api.no_retry.clone(), "team-a");

    let err = sas
        .create_token_request(
            "builder",
            &PostParams::default(),
            &request(&["sts.amazonaws.com"], Some(599)),
        )
        .await
        .unwrap_err();
    let s = status(err);
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        s.message,
        "TokenRequest.authentication.k8s.io \"builder\" is invalid: spec.expirationSeconds: \
         Invalid value: 599: may not specify a duration less than 10 minutes"
    );
    assert_eq!(causes(&s)[0].0, "spec.expirationSeconds");

    let post =
        |body: serde_json::Value| raw(&api, "POST", PATH, &[JSON], body.to_string().into_bytes());
    let wrong_kind = post(json!({"apiVersion": "v1", "kind": "Secret"})).await;
    assert_eq!(wrong_kind.code, 400, "{}", wrong_kind.body);
    assert!(
        wrong_kind.body.contains("authentication.k8s.io/v1"),
        "{}",
        wrong_kind.body
    );
    let wrong_kind =
        post(json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview"})).await;
    assert_eq!(wrong_kind.code, 400, "{}", wrong_kind.body);

    let numbers = post(json!({"spec": {"audiences": [42]}})).await;
    assert_eq!(numbers.code, 400, "{}", numbers.body);
    assert!(
        numbers.body.contains("cannot be handled as a TokenRequest"),
        "{}",
        numbers.body
    );

    let other_name = post(json!({"metadata": {"name": "deployer"}})).await;
    assert_eq!(other_name.code, 422, "{}", other_name.body);
    assert!(
        other_name
            .body
            .contains("must match the service account name"),
        "{}",
        other_name.body
    );

    // Only POST.
    let get = raw(&api, "GET", PATH, &[], Vec::new()).await;
    assert_eq!(get.code, 405, "{}", get.body);
    // Only ServiceAccounts have it.
    let secret = raw(
        &api,
        "POST",
        "/api/v1/namespaces/team-a/secrets/builder/token",
        &[JSON],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(secret.code, 404, "{}", secret.body);

    assert!(api.standin.token_requests().is_empty());
}

#[tokio::test]
async fn faults_apply_to_the_subresource() {
    let api = start().await;
    with_builder(&api);
    api.standin
        .faults()
        .add(FaultRule::new(403).gvr("v1/serviceaccounts/token").times(1));
    let sas: Api<ServiceAccount> = Api::namespaced(api.no_retry.clone(), "team-a");
    let (pp, body) = (
        PostParams::default(),
        request(&["sts.amazonaws.com"], Some(600)),
    );
    let ask = || sas.create_token_request("builder", &pp, &body);
    assert_eq!(crm(ask().await.unwrap_err()).0, 403);
    ask().await.expect("the fault fired once");
    assert_eq!(api.standin.token_requests().len(), 1);
}
