//! Metadata-only requests, the new fault actions and the request log,
//! through the real kube client over HTTP.

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, Config, ResourceExt};
use kube_standin::{Fault, FaultRule, Verb};
use serde_json::{Value, json};
use support::{WAIT, crm, raw, start, status};

const TOKEN: &str = "c3VwZXItc2VjcmV0LXRva2Vu"; // base64 of the secret payload

fn secret(name: &str) -> Secret {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {"app": "x"}}, "data": {"token": TOKEN}}),
    )
    .unwrap()
}

const META: &str = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
const META_LIST: &str = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";

#[tokio::test]
async fn metadata_only_requests_never_carry_data() {
    let api = start().await;
    let secrets: Api<Secret> = Api::default_namespaced(api.client.clone());
    secrets
        .create(&PostParams::default(), &secret("a"))
        .await
        .unwrap();

    // the raw protocol: get, list and watch
    let r = raw(
        &api,
        "GET",
        "/api/v1/namespaces/default/secrets/a",
        &[("Accept", META)],
        vec![],
    )
    .await;
    assert_eq!(r.code, 200);
    let v = r.json();
    assert_eq!(
        (v["kind"].as_str(), v["apiVersion"].as_str()),
        (Some("PartialObjectMetadata"), Some("meta.k8s.io/v1"))
    );
    assert_eq!(v["metadata"]["name"], "a");
    assert_eq!(v["metadata"]["labels"]["app"], "x");
    assert_eq!(
        v.as_object().unwrap().len(),
        3,
        "kind, apiVersion, metadata only: {v}"
    );
    let r = raw(
        &api,
        "GET",
        "/api/v1/namespaces/default/secrets",
        &[("Accept", META_LIST)],
        vec![],
    )
    .await;
    let v = r.json();
    assert_eq!(v["kind"], "PartialObjectMetadataList");
    assert!(v["metadata"]["resourceVersion"].is_string());
    assert_eq!(v["items"][0]["kind"], "PartialObjectMetadata");
    assert!(!r.body.contains(TOKEN) && !r.body.contains("\"data\""));
    // asking for the wrong shape is a 406 like the real server
    let r = raw(
        &api,
        "GET",
        "/api/v1/namespaces/default/secrets",
        &[("Accept", META)],
        vec![],
    )
    .await;
    assert_eq!(
        (r.code, r.json()["reason"].as_str()),
        (406, Some("NotAcceptable"))
    );
    let r = raw(
        &api,
        "GET",
        "/api/v1/namespaces/default/secrets?watch=true&timeoutSeconds=1",
        &[("Accept", META)],
        vec![],
    )
    .await;
    let first: Value = serde_json::from_str(r.body.lines().next().unwrap()).unwrap();
    assert_eq!(
        (first["type"].as_str(), first["object"]["kind"].as_str()),
        (Some("ADDED"), Some("PartialObjectMetadata"))
    );
    assert!(!r.body.contains(TOKEN));

    // kube's typed metadata API
    let meta = secrets.get_metadata("a").await.unwrap();
    assert_eq!(meta.name_any(), "a");
    let listed = secrets.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);

    // a reflector over PartialObjectMeta<Secret> sees names and labels, never data
    let (reader, writer) = reflector::store::<PartialObjectMeta<Secret>>();
    let metadata_api: Api<PartialObjectMeta<Secret>> = Api::default_namespaced(api.client.clone());
    let stream = reflector(writer, watcher(metadata_api, watcher::Config::default()))
        .applied_objects()
        .boxed();
    let task = tokio::spawn(stream.for_each(|_| async {}));
    secrets
        .create(&PostParams::default(), &secret("b"))
        .await
        .unwrap();
    secrets
        .patch(
            "b",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"token": "bmV3"}})),
        )
        .await
        .unwrap();
    tokio::time::timeout(WAIT, async {
        while reader.state().len() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the reflector sees both Secrets");
    let mut names: Vec<String> = reader.state().iter().map(|m| m.name_any()).collect();
    names.sort();
    assert_eq!(names, ["a", "b"]);
    for m in reader.state() {
        let text = serde_json::to_string(&*m).unwrap();
        assert!(!text.contains(TOKEN) && !text.contains("bmV3"), "{text}");
    }
    task.abort();
}

fn ecr() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("ecr.aws.edenlab.io", "v1alpha1", "ECRTokenRefresh"),
        "ecrtokenrefreshes",
    )
}

#[tokio::test]
async fn garbled_answers_hide_a_successful_write() {
    let api = start().await;
    let secrets: Api<Secret> = Api::default_namespaced(api.client.clone());
    api.standin
        .faults()
        .add(FaultRule::garble().verb(Verb::Create).name("g").times(1));
    let err = secrets
        .create(&PostParams::default(), &secret("g"))
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::SerdeError(_)), "{err:?}");
    assert!(
        api.standin
            .get("v1/secrets", Some("default"), "g")
            .is_some(),
        "the write happened"
    );
    // the raw answer: the right code, the object's text minus its end
    api.standin
        .faults()
        .add(FaultRule::garble().verb(Verb::Get).times(1));
    let r = raw(
        &api,
        "GET",
        "/api/v1/namespaces/default/secrets/g",
        &[],
        vec![],
    )
    .await;
    assert_eq!(r.code, 200);
    assert!(r.body.starts_with("{") && r.body.contains("\"name\":\"g\""));
    assert!(serde_json::from_str::<Value>(&r.body).is_err());
    assert_eq!(api.standin.faults().active_rules(), 0);
}

#[tokio::test]
async fn retry_after_plain_text_and_delays() {
    let api = start().await;
    let secrets: Api<Secret> = Api::default_namespaced(api.no_retry.clone());
    // 429 with Retry-After and details.retryAfterSeconds
    api.standin
        .faults()
        .add(FaultRule::new(429).verb(Verb::Get).retry_after(7).times(1));
    let r = raw(
        &api,
        "GET",
        "/api/v1/namespaces/default/secrets/x",
        &[],
        vec![],
    )
    .await;
    assert_eq!(r.code, 429);
    assert_eq!(r.headers.get("retry-after").unwrap(), "7");
    let v = r.json();
    assert_eq!(
        (
            v["reason"].as_str(),
            v["details"]["retryAfterSeconds"].as_u64()
        ),
        (Some("TooManyRequests"), Some(7))
    );
    // kube's default client waits as long as the server asks before retrying
    api.standin.faults().add(
        FaultRule::new(429)
            .verb(Verb::Create)
            .retry_after(1)
            .times(1),
    );
    let t = Instant::now();
    Api::<Secret>::default_namespaced(api.client.clone())
        .create(&PostParams::default(), &secret("after"))
        .await
        .unwrap();
    assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());
    // API Priority and Fairness answers in plain text
    api.standin
        .faults()
        .add(FaultRule::new(429).retry_after(2).plain_text().times(1));
    let r = raw(
        &api,
        "GET",
        "/api/v1/namespaces/default/secrets",
        &[],
        vec![],
    )
    .await;
    assert_eq!(r.code, 429);
    assert_eq!(r.body, "Too many requests, please try again later.\n");
    assert!(
        r.headers
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(r.headers.get("retry-after").unwrap(), "2");
    // kube turns the text into a Status of its own
    api.standin
        .faults()
        .add(FaultRule::new(429).plain_text().times(1));
    let s = status(secrets.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(
        (s.code, s.message.as_str()),
        (429, "Too many requests, please try again later.")
    );

    // delay: the write happens, the answer comes late (a client timeout fires)
    api.standin.faults().add(
        FaultRule::pass()
            .verb(Verb::Create)
            .delay(Duration::from_millis(600))
            .times(1),
    );
    let mut config = Config::new(api.server.url.parse().unwrap());
    config.read_timeout = Some(Duration::from_millis(200));
    config.default_retry = false;
    let impatient: Api<Secret> = Api::default_namespaced(Client::try_from(config).unwrap());
    let err = impatient
        .create(&PostParams::default(), &secret("late"))
        .await
        .unwrap_err();
    assert!(
        !matches!(err, kube::Error::Api(_)),
        "a timeout, not an answer: {err:?}"
    );
    assert!(
        api.standin
            .get("v1/secrets", Some("default"), "late")
            .is_some()
    );
    // a delayed failure
    api.standin.faults().add(
        FaultRule::new(503)
            .verb(Verb::Get)
            .delay(Duration::from_millis(150))
            .times(1),
    );
    let t = Instant::now();
    assert_eq!(crm(secrets.get("late").await.unwrap_err()).0, 503);
    assert!(t.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn rules_by_namespace_and_exact_resource() {
    let api = start().await;
    let pp = PostParams::default();
    api.standin
        .faults()
        .add(FaultRule::new(500).verb(Verb::Create).namespace("a"));
    let in_a: Api<ConfigMap> = Api::namespaced(api.no_retry.clone(), "a");
    let in_b: Api<ConfigMap> = Api::namespaced(api.no_retry.clone(), "b");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "c"}})).unwrap();
    assert_eq!(crm(in_a.create(&pp, &cm).await.unwrap_err()).0, 500);
    in_b.create(&pp, &cm).await.unwrap();
    api.standin.faults().clear();

    // exact resource: the main resource fails, its status subresource does not
    let crs: Api<DynamicObject> = Api::default_namespaced_with(api.no_retry.clone(), &ecr());
    let mut cr = DynamicObject::new("r", &ecr());
    cr.data = json!({"spec": {}});
    crs.create(&pp, &cr).await.unwrap();
    api.standin.faults().add(
        Fault::fail(409)
            .verb(Verb::Patch)
            .gvr_exact("ecr.aws.edenlab.io/v1alpha1/ecrtokenrefreshes"),
    );
    let p = PatchParams::default();
    assert_eq!(
        crm(crs
            .patch("r", &p, &Patch::Merge(json!({"spec": {"a": 1}})))
            .await
            .unwrap_err())
        .0,
        409
    );
    crs.patch_status(
        "r",
        &p,
        &Patch::Merge(json!({"status": {"phase": "Ready"}})),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn request_log_records_every_resource_request() {
    let api = start().await;
    let secrets: Api<Secret> = Api::default_namespaced(api.client.clone());
    let t0 = Instant::now();
    let mut generated = secret("");
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("gen-".into());
    let created = secrets
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    secrets
        .patch(
            &created.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "dg=="}})),
        )
        .await
        .unwrap();
    assert_eq!(crm(secrets.get("missing").await.unwrap_err()).0, 404);
    let t1 = Instant::now();
    secrets.list(&ListParams::default()).await.unwrap();
    secrets
        .delete(&created.name_any(), &DeleteParams::default())
        .await
        .unwrap();

    let log = api.standin.requests();
    let summary: Vec<(Verb, Option<String>, u16)> = log
        .iter()
        .map(|r| (r.verb, r.name.clone(), r.status))
        .collect();
    let name = created.name_any();
    assert_eq!(
        summary,
        [
            (Verb::Create, Some(name.clone()), 201),
            (Verb::Patch, Some(name.clone()), 200),
            (Verb::Get, Some("missing".into()), 404),
            (Verb::List, None, 200),
            (Verb::Delete, Some(name.clone()), 200),
        ]
    );
    assert!(
        log.iter()
            .all(|r| r.gvr == "v1/secrets" && r.namespace.as_deref() == Some("default"))
    );
    assert!(log.windows(2).all(|w| w[0].at <= w[1].at) && log[0].at >= t0);
    let writes_after_t1 = log
        .iter()
        .filter(|r| r.at >= t1 && r.is_write() && r.is_for("v1/secrets", Some("default"), &name))
        .count();
    assert_eq!(writes_after_t1, 1, "only the delete");
    // subresources are recorded as such
    let crs: Api<DynamicObject> = Api::default_namespaced_with(api.client.clone(), &ecr());
    let mut cr = DynamicObject::new("r", &ecr());
    cr.data = json!({"spec": {}});
    crs.create(&PostParams::default(), &cr).await.unwrap();
    crs.patch_status(
        "r",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {}})),
    )
    .await
    .unwrap();
    let last = api.standin.requests().pop().unwrap();
    assert_eq!(last.subresource.as_deref(), Some("status"));
    assert_eq!(last.verb, Verb::Patch);
    api.standin.clear_requests();
    assert!(api.standin.requests().is_empty());
}
