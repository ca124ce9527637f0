//! Reconcile steps against a scripted API server (kube-rs's `tower-test` pattern): each
//! test states the exact requests one reconcile must make, in order, and nothing else.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::tokens::ScriptedTokens;
use ecr_token_refresh::api::ECRTokenRefresh;
use ecr_token_refresh::controller::{Context, Settings, reconcile};
use http::{Method, Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn cr(spec: Value) -> ECRTokenRefresh {
    let mut base = json!({"ecrRegistry": common::HOST, "frequency": "8h", "region": "us-east-1"});
    if let (Some(b), Value::Object(p)) = (base.as_object_mut(), spec) {
        b.extend(p);
    }
    serde_json::from_value(json!({
        "apiVersion": "ecr.aws.edenlab.io/v1alpha1", "kind": "ECRTokenRefresh",
        "metadata": {"name": "ecr-credentials", "namespace": "default", "uid": "uid-1", "generation": 1},
        "spec": base,
    }))
    .unwrap()
}

fn context(tokens: Arc<ScriptedTokens>) -> (Arc<Context>, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let policies = Arc::new(ecr_token_refresh::policy::Policies::builtin());
    (
        Arc::new(Context::new(client, tokens, policies, Settings::default())),
        handle,
    )
}

fn respond(send: tower_test::mock::SendResponse<Response<Body>>, status: u16, body: Value) {
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap(),
    );
}

/// Takes the next request, checks its method and path, returns its JSON body.
async fn expect(
    handle: &mut Handle,
    method: Method,
    path: &str,
) -> (Value, tower_test::mock::SendResponse<Response<Body>>) {
    let (request, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .unwrap_or_else(|_| panic!("expected {method} {path}, got no request"))
        .expect("service not dropped");
    assert_eq!(request.method(), method, "for {}", request.uri());
    assert_eq!(request.uri().path(), path);
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (body, send)
}

async fn expect_no_more_requests(handle: &mut Handle) {
    let next = tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await;
    if let Ok(Some((req, _))) = next {
        panic!("unexpected request {} {}", req.method(), req.uri());
    }
}

const STATUS_PATH: &str =
    "/apis/ecr.aws.edenlab.io/v1alpha1/namespaces/default/ecrtokenrefreshes/ecr-credentials/status";
const SECRET_PATH: &str = "/api/v1/namespaces/default/secrets/ecr-credentials";
const SECRETS_PATH: &str = "/api/v1/namespaces/default/secrets";
const EVENTS_PATH: &str = "/apis/events.k8s.io/v1/namespaces/default/events";

#[tokio::test]
async fn invalid_spec_writes_only_status_and_an_event() {
    let tokens = Arc::new(ScriptedTokens::default());
    let (ctx, mut handle) = context(tokens.clone());
    let obj = Arc::new(cr(json!({"frequency": "soon"})));
    let task = tokio::spawn(reconcile(obj.clone(), ctx));

    let (patch, send) = expect(&mut handle, Method::PATCH, STATUS_PATH).await;
    let cond = &patch["status"]["conditions"][0];
    assert_eq!(cond["reason"], "InvalidSpec");
    assert!(
        cond["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.frequency: \"soon\""),
        "{cond}"
    );
    respond(send, 200, serde_json::to_value(obj.as_ref()).unwrap());
    let (event, send) = expect(&mut handle, Method::POST, EVENTS_PATH).await;
    assert_eq!(
        (event["type"].as_str(), event["reason"].as_str()),
        (Some("Warning"), Some("InvalidSpec"))
    );
    respond(send, 201, event);

    let action = task.await.unwrap().unwrap();
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    expect_no_more_requests(&mut handle).await;
    assert_eq!(tokens.attempts(), 0);
}

#[tokio::test]
async fn a_foreign_secret_is_read_and_left_alone() {
    let tokens = Arc::new(ScriptedTokens::default());
    let (ctx, mut handle) = context(tokens.clone());
    let obj = Arc::new(cr(json!({})));
    let task = tokio::spawn(reconcile(obj.clone(), ctx));

    let (_, send) = expect(&mut handle, Method::GET, SECRET_PATH).await;
    respond(
        send,
        200,
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
               "metadata": {"name": "ecr-credentials", "namespace": "default"}}),
    );
    let (patch, send) = expect(&mut handle, Method::PATCH, STATUS_PATH).await;
    assert_eq!(patch["status"]["conditions"][0]["reason"], "SecretConflict");
    respond(send, 200, serde_json::to_value(obj.as_ref()).unwrap());
    let (event, send) = expect(&mut handle, Method::POST, EVENTS_PATH).await;
    respond(send, 201, event);

    task.await.unwrap().unwrap();
    expect_no_more_requests(&mut handle).await;
    assert_eq!(tokens.attempts(), 0, "no token is fetched");
}

#[tokio::test]
async fn a_missing_secret_is_created_with_our_field_manager_then_status() {
    let tokens = Arc::new(ScriptedTokens::default());
    let (ctx, mut handle) = context(tokens.clone());
    let obj = Arc::new(cr(json!({})));
    let task = tokio::spawn(reconcile(obj.clone(), ctx));

    let (_, send) = expect(&mut handle, Method::GET, SECRET_PATH).await;
    respond(
        send,
        404,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
    );
    // A missing Secret is created (a 409 would be a conflict, never an overwrite), asking
    // for a metadata-only answer so that no answer carries the token back.
    let (request, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(request.method(), Method::POST);
    assert_eq!(request.uri().path(), SECRETS_PATH);
    let query = request.uri().query().unwrap_or_default().to_string();
    assert!(query.contains("fieldManager=ecr-token-refresh"), "{query}");
    assert!(
        request.headers()["accept"]
            .to_str()
            .unwrap()
            .contains("as=PartialObjectMetadata"),
        "{:?}",
        request.headers()
    );
    let secret: Value =
        serde_json::from_slice(&request.into_body().collect_bytes().await.unwrap()).unwrap();
    assert_eq!(secret["type"], "kubernetes.io/dockerconfigjson");
    assert_eq!(secret["metadata"]["ownerReferences"][0]["uid"], "uid-1");
    assert_eq!(
        secret["metadata"]["labels"]["ecr.aws.edenlab.io/owner-uid"],
        "uid-1"
    );
    let mut answer = json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                            "metadata": secret["metadata"].clone()});
    answer["metadata"]["uid"] = json!("secret-uid");
    answer["metadata"]["resourceVersion"] = json!("7");
    respond(send, 201, answer);

    let (patch, send) = expect(&mut handle, Method::PATCH, STATUS_PATH).await;
    let st = &patch["status"];
    assert_eq!(st["phase"], "Ready");
    assert!(st["error"].is_null());
    assert_eq!(st["observedGeneration"], 1);
    assert!(
        !patch.to_string().contains("secret-password"),
        "no token in status"
    );
    respond(send, 200, serde_json::to_value(obj.as_ref()).unwrap());
    let (event, send) = expect(&mut handle, Method::POST, EVENTS_PATH).await;
    assert_eq!(event["reason"], "Created");
    respond(send, 201, event);

    let action = task.await.unwrap().unwrap();
    // Next refresh at frequency (8h) since the scripted token lives 12h (to the second: the
    // token's fetch time and now are whole seconds, a second boundary may fall between).
    let requeue = (8 * 3600 - 1..=8 * 3600 + 1)
        .map(|s| kube::runtime::controller::Action::requeue(Duration::from_secs(s)))
        .collect::<Vec<_>>();
    assert!(requeue.contains(&action), "{action:?}");
    expect_no_more_requests(&mut handle).await;
    assert_eq!(tokens.calls(), 1);
}
