//! The stand-in driven by the real kube 5 client, watcher, controller and
//! event recorder.

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event as RecorderEvent, EventType, Recorder, Reporter};
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Client, Config, Resource, ResourceExt};
use kube_standin::{FaultRule, RunningServer, StandIn, Verb};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

async fn start(standin: StandIn) -> (StandIn, RunningServer, Client) {
    let server = standin.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let config = Config::new(server.url.parse().unwrap());
    let client = Client::try_from(config).unwrap();
    (standin, server, client)
}

fn secret(name: &str, labels: Value) -> Secret {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "stringData": {"k": "v"},
        "data": {"token": "dG9rZW4="},
    }))
    .unwrap()
}

fn api_code(err: &kube::Error) -> (u16, String) {
    match err {
        kube::Error::Api(s) => (s.code, s.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn ecr_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("ecr.aws.edenlab.io", "v1alpha1", "ECRTokenRefresh"),
        "ecrtokenrefreshes",
    )
}

const ECR_GVR: &str = "ecr.aws.edenlab.io/v1alpha1/ecrtokenrefreshes";

async fn next_event<S, K>(stream: &mut S) -> Event<K>
where
    S: Stream<Item = Result<Event<K>, watcher::Error>> + Unpin,
{
    match tokio::time::timeout(WAIT, stream.next()).await {
        Ok(Some(Ok(ev))) => ev,
        other => panic!(
            "expected a watcher event, got {:?}",
            other.map(|o| o.map(|r| r.map(|_| ())))
        ),
    }
}

/// Skip Init..InitDone, returning the objects listed.
async fn drain_init<S, K: Resource>(stream: &mut S) -> Vec<String>
where
    S: Stream<Item = Result<Event<K>, watcher::Error>> + Unpin,
{
    let mut names = Vec::new();
    loop {
        match next_event(stream).await {
            Event::Init => {}
            Event::InitApply(o) => names.push(o.meta().name.clone().unwrap_or_default()),
            Event::InitDone => return names,
            Event::Apply(_) | Event::Delete(_) => panic!("unexpected event before InitDone"),
        }
    }
}

fn applied_name<K: Resource>(ev: Event<K>) -> String {
    match ev {
        Event::Apply(o) => format!("apply:{}", o.meta().name.clone().unwrap_or_default()),
        Event::Delete(o) => format!("delete:{}", o.meta().name.clone().unwrap_or_default()),
        Event::Init => "init".into(),
        Event::InitApply(o) => format!("initapply:{}", o.meta().name.clone().unwrap_or_default()),
        Event::InitDone => "initdone".into(),
    }
}

#[tokio::test]
async fn crud_with_kube_client() {
    let (standin, server, client) = start(StandIn::new()).await;
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());

    let created = secrets
        .create(&PostParams::default(), &secret("s1", json!({"app": "web"})))
        .await
        .unwrap();
    let meta = &created.metadata;
    assert!(meta.uid.is_some() && meta.creation_timestamp.is_some());
    assert_eq!(meta.generation, Some(1));
    assert_eq!(meta.namespace.as_deref(), Some("default"));
    let rv1: u64 = meta.resource_version.as_deref().unwrap().parse().unwrap();

    let err = secrets
        .create(&PostParams::default(), &secret("s1", json!({})))
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), (409, "AlreadyExists".into()));
    let err = secrets.get("missing").await.unwrap_err();
    assert_eq!(api_code(&err), (404, "NotFound".into()));
    assert!(secrets.get_opt("missing").await.unwrap().is_none());

    let got = secrets.get("s1").await.unwrap();
    assert_eq!(got.metadata.uid, meta.uid);
    let listed = secrets
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert!(listed.metadata.resource_version.is_some());
    assert!(
        secrets
            .list(&ListParams::default().labels("app!=web"))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let by_field = secrets
        .list(&ListParams::default().fields("metadata.name=s1"))
        .await
        .unwrap();
    assert_eq!(by_field.items.len(), 1);

    // replace, then a stale replace conflicts
    let mut replaced = got.clone();
    replaced.labels_mut().insert("v".into(), "2".into());
    let replaced = secrets
        .replace("s1", &PostParams::default(), &replaced)
        .await
        .unwrap();
    let rv2: u64 = replaced.resource_version().unwrap().parse().unwrap();
    assert!(rv2 > rv1);
    let err = secrets
        .replace("s1", &PostParams::default(), &got)
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), (409, "Conflict".into()));

    // merge patch; a no-op merge patch does not bump the resourceVersion
    let pp = PatchParams::default();
    let patched = secrets
        .patch(
            "s1",
            &pp,
            &Patch::Merge(json!({"metadata": {"annotations": {"a": "1"}}})),
        )
        .await
        .unwrap();
    let rv3 = patched.resource_version().unwrap();
    let again = secrets
        .patch(
            "s1",
            &pp,
            &Patch::Merge(json!({"metadata": {"annotations": {"a": "1"}}})),
        )
        .await
        .unwrap();
    assert_eq!(again.resource_version().unwrap(), rv3);

    // JSON patch, with a failing test op giving 422
    let jp: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/labels/app", "value": "web"},
        {"op": "replace", "path": "/metadata/labels/app", "value": "api"},
    ]))
    .unwrap();
    let patched = secrets
        .patch("s1", &pp, &Patch::<()>::Json(jp))
        .await
        .unwrap();
    assert_eq!(patched.labels()["app"], "api");
    let jp: json_patch::Patch = serde_json::from_value(
        json!([{"op": "test", "path": "/metadata/labels/app", "value": "web"}]),
    )
    .unwrap();
    let err = secrets
        .patch("s1", &pp, &Patch::<()>::Json(jp))
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), (422, "Invalid".into()));

    // strategic merge patch on a built-in type merges finalizers as a set
    secrets
        .patch(
            "s1",
            &pp,
            &Patch::Merge(json!({"metadata": {"finalizers": ["a/one"]}})),
        )
        .await
        .unwrap();
    let patched = secrets
        .patch(
            "s1",
            &pp,
            &Patch::Strategic(json!({"metadata": {"finalizers": ["b/two"]}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.finalizers(), ["a/one", "b/two"]);
    secrets
        .patch(
            "s1",
            &pp,
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();

    // generateName
    let mut gen_secret = secret("", json!({}));
    gen_secret.metadata.name = None;
    gen_secret.metadata.generate_name = Some("gen-".into());
    let generated = secrets
        .create(&PostParams::default(), &gen_secret)
        .await
        .unwrap();
    assert!(generated.name_any().starts_with("gen-") && generated.name_any().len() == 9);

    // an immediate delete of a Secret answers with a Status of success
    // (the Secret registry does not return the deleted object); afterwards 404
    let deleted = secrets
        .delete("s1", &DeleteParams::default())
        .await
        .unwrap();
    let status = deleted
        .right()
        .expect("a Status for a Secret deleted at once");
    assert_eq!(
        status.status,
        Some(kube::core::response::StatusSummary::Success)
    );
    let details = status.details.unwrap();
    assert_eq!(
        (details.name.as_str(), details.kind.as_str()),
        ("s1", "secrets")
    );
    assert_eq!(Some(details.uid), meta.uid.clone());
    assert!(standin.get("v1/secrets", Some("default"), "s1").is_none());
    let err = secrets
        .delete("s1", &DeleteParams::default())
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), (404, "NotFound".into()));

    // a stale resourceVersion in a patch is a failed precondition
    let err = secrets
        .patch(
            &generated.name_any(),
            &pp,
            &Patch::Merge(json!({"metadata": {"resourceVersion": "1"}})),
        )
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), (409, "Conflict".into()));

    // the library view sees the same state
    assert_eq!(standin.list("v1/secrets", None).len(), 1);

    // delete a collection by label
    for (n, l) in [("c1", "x"), ("c2", "x"), ("c3", "y")] {
        secrets
            .create(&PostParams::default(), &secret(n, json!({"grp": l})))
            .await
            .unwrap();
    }
    secrets
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("grp=x"),
        )
        .await
        .unwrap();
    assert_eq!(standin.list_selected("v1/secrets", None, "grp").len(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn server_side_apply() {
    let (standin, server, client) = start(StandIn::new()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "apps");
    let ssa = PatchParams::apply("mgr-a");
    let body = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cm", "labels": {"a": "1", "keep": "yes"}},
        "data": {"x": "1", "y": "2"},
    });
    let created = cms.patch("cm", &ssa, &Patch::Apply(&body)).await.unwrap();
    assert_eq!(created.metadata.namespace.as_deref(), Some("apps"));
    let rv = created.resource_version().unwrap();

    // the same apply again is a no-op: same resourceVersion, no write event
    let log_rv = standin.resource_version();
    let again = cms.patch("cm", &ssa, &Patch::Apply(&body)).await.unwrap();
    assert_eq!(again.resource_version().unwrap(), rv);
    assert_eq!(standin.resource_version(), log_rv);

    // another manager adds a label; manager A dropping fields removes only its own
    let ssb = PatchParams::apply("mgr-b");
    cms.patch(
        "cm",
        &ssb,
        &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "labels": {"b": "2", "keep": "yes"}}})),
    )
    .await
    .unwrap();
    let body2 = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cm", "labels": {"a": "1"}},
        "data": {"x": "10"},
    });
    let applied = cms.patch("cm", &ssa, &Patch::Apply(&body2)).await.unwrap();
    assert_eq!(applied.data.as_ref().unwrap().len(), 1);
    assert_eq!(applied.data.as_ref().unwrap()["x"], "10");
    let labels = applied.labels();
    assert_eq!(labels.get("a").map(String::as_str), Some("1"));
    assert_eq!(labels.get("b").map(String::as_str), Some("2"));
    assert_eq!(
        labels.get("keep").map(String::as_str),
        Some("yes"),
        "still applied by mgr-b"
    );

    // fieldManager is required for apply
    let req = http::Request::patch(format!(
        "{}/api/v1/namespaces/apps/configmaps/cm",
        server.url
    ))
    .header("Content-Type", "application/apply-patch+yaml")
    .body(serde_json::to_vec(&body2).unwrap())
    .unwrap();
    let err = client.request_text(req).await.unwrap_err();
    assert_eq!(api_code(&err), (400, "BadRequest".into()));

    // YAML bodies are accepted too
    let req = http::Request::patch(format!(
        "{}/api/v1/namespaces/apps/configmaps/cm2?fieldManager=yaml&force=true",
        server.url
    ))
    .header("Content-Type", "application/apply-patch+yaml")
    .body(b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm2\ndata:\n  k: v\n".to_vec())
    .unwrap();
    client.request_text(req).await.unwrap();
    assert_eq!(
        standin.get("v1/configmaps", Some("apps"), "cm2").unwrap()["data"]["k"],
        "v"
    );
}

#[tokio::test]
async fn status_subresource_and_generation() {
    let (standin, _server, client) = start(StandIn::new()).await;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ecr_resource());
    let mut obj = DynamicObject::new("r1", &ecr_resource());
    obj.data = json!({"spec": {"registry": "a"}, "status": {"ignored": true}});
    let created = api.create(&PostParams::default(), &obj).await.unwrap();
    assert!(
        created.data.get("status").is_none(),
        "status is dropped on create"
    );
    assert_eq!(created.metadata.generation, Some(1));

    let pp = PatchParams::default();
    let st = api
        .patch_status(
            "r1",
            &pp,
            &Patch::Merge(json!({"status": {"phase": "Ready"}, "spec": {"registry": "x"}})),
        )
        .await
        .unwrap();
    assert_eq!(st.data["status"]["phase"], "Ready");
    assert_eq!(
        st.data["spec"]["registry"], "a",
        "status writes only change status"
    );
    assert_eq!(st.metadata.generation, Some(1));

    // main-resource writes ignore status, bump generation on spec change only
    let p = api
        .patch(
            "r1",
            &pp,
            &Patch::Merge(json!({"status": {"phase": "Gone"}, "metadata": {"labels": {"l": "1"}}})),
        )
        .await
        .unwrap();
    assert_eq!(p.data["status"]["phase"], "Ready");
    assert_eq!(p.metadata.generation, Some(1));
    let p = api
        .patch("r1", &pp, &Patch::Merge(json!({"spec": {"registry": "b"}})))
        .await
        .unwrap();
    assert_eq!(p.metadata.generation, Some(2));

    // replace_status + SSA on status
    let mut cur = api.get("r1").await.unwrap();
    cur.data["status"] = json!({"phase": "Replaced"});
    let r = api
        .replace_status("r1", &PostParams::default(), &cur)
        .await
        .unwrap();
    assert_eq!(r.data["status"]["phase"], "Replaced");
    // custom resources need a resourceVersion on PUT
    let mut unconditional = r.clone();
    unconditional.metadata.resource_version = None;
    let err = api
        .replace("r1", &PostParams::default(), &unconditional)
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), (422, "Invalid".into()));
    let apply = json!({"apiVersion": "ecr.aws.edenlab.io/v1alpha1", "kind": "ECRTokenRefresh",
                       "metadata": {"name": "r1"}, "status": {"phase": "Applied", "n": 1}});
    let r = api
        .patch_status("r1", &PatchParams::apply("op"), &Patch::Apply(&apply))
        .await
        .unwrap();
    assert_eq!(r.data["status"], json!({"phase": "Applied", "n": 1}));
    let apply = json!({"apiVersion": "ecr.aws.edenlab.io/v1alpha1", "kind": "ECRTokenRefresh",
                       "metadata": {"name": "r1"}, "status": {"phase": "Applied"}});
    let rv_before = standin.resource_version();
    let r = api
        .patch_status("r1", &PatchParams::apply("op"), &Patch::Apply(&apply))
        .await
        .unwrap();
    assert_eq!(
        r.data["status"],
        json!({"phase": "Applied"}),
        "field dropped from apply is removed"
    );
    assert_eq!(standin.resource_version(), rv_before + 1);
    assert_eq!(r.metadata.generation, Some(2));

    // strategic merge patch is refused for custom resources, like the real server
    let err = api
        .patch("r1", &pp, &Patch::Strategic(json!({"spec": {}})))
        .await
        .unwrap_err();
    assert_eq!(api_code(&err).0, 415);

    // cluster-scoped type
    let car = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("ecr.aws.edenlab.io", "v1alpha1", "ClusterECRTokenRefresh"),
        "clusterecrtokenrefreshes",
    );
    let capi: Api<DynamicObject> = Api::all_with(client, &car);
    let mut c = DynamicObject::new("c1", &car);
    c.data = json!({"spec": {}});
    let created = capi.create(&PostParams::default(), &c).await.unwrap();
    assert!(created.metadata.namespace.is_none());
    assert!(
        standin
            .get(
                "ecr.aws.edenlab.io/v1alpha1/clusterecrtokenrefreshes",
                None,
                "c1"
            )
            .is_some()
    );
}

#[tokio::test]
async fn label_selected_watcher_sees_transitions() {
    let (standin, _server, client) = start(StandIn::new()).await;
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    secrets
        .create(
            &PostParams::default(),
            &secret("pre", json!({"app": "web"})),
        )
        .await
        .unwrap();
    secrets
        .create(
            &PostParams::default(),
            &secret("other", json!({"app": "db"})),
        )
        .await
        .unwrap();

    let mut stream = watcher(
        secrets.clone(),
        watcher::Config::default().labels("app=web"),
    )
    .boxed();
    assert_eq!(drain_init(&mut stream).await, vec!["pre".to_string()]);

    let pp = PatchParams::default();
    secrets
        .create(
            &PostParams::default(),
            &secret("ignored", json!({"app": "db"})),
        )
        .await
        .unwrap();
    secrets
        .create(
            &PostParams::default(),
            &secret("new", json!({"app": "web"})),
        )
        .await
        .unwrap();
    assert_eq!(applied_name(next_event(&mut stream).await), "apply:new");
    secrets
        .patch("new", &pp, &Patch::Merge(json!({"data": {"x": "eQ=="}})))
        .await
        .unwrap();
    assert_eq!(applied_name(next_event(&mut stream).await), "apply:new");
    // stops matching -> DELETED, starts matching -> ADDED
    secrets
        .patch(
            "new",
            &pp,
            &Patch::Merge(json!({"metadata": {"labels": {"app": "db"}}})),
        )
        .await
        .unwrap();
    assert_eq!(applied_name(next_event(&mut stream).await), "delete:new");
    secrets
        .patch(
            "other",
            &pp,
            &Patch::Merge(json!({"metadata": {"labels": {"app": "web"}}})),
        )
        .await
        .unwrap();
    assert_eq!(applied_name(next_event(&mut stream).await), "apply:other");
    secrets
        .delete("pre", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(applied_name(next_event(&mut stream).await), "delete:pre");

    // connection drop: the watcher resumes from its resourceVersion without re-listing
    let lists = standin.counters().get_count("list", "v1/secrets");
    standin.close_watches();
    secrets
        .create(
            &PostParams::default(),
            &secret("after-drop", json!({"app": "web"})),
        )
        .await
        .unwrap();
    assert_eq!(
        applied_name(next_event(&mut stream).await),
        "apply:after-drop"
    );
    assert_eq!(standin.counters().get_count("list", "v1/secrets"), lists);
    assert!(standin.counters().get_count("watch", "v1/secrets") >= 2);

    // the streaming-list mode (sendInitialEvents) works too
    let mut streaming = watcher(
        secrets.clone(),
        watcher::Config::default()
            .labels("app=web")
            .streaming_lists(),
    )
    .boxed();
    let mut names = drain_init(&mut streaming).await;
    names.sort();
    assert_eq!(names, vec!["after-drop".to_string(), "other".to_string()]);
    secrets
        .create(
            &PostParams::default(),
            &secret("streamed", json!({"app": "web"})),
        )
        .await
        .unwrap();
    assert_eq!(
        applied_name(next_event(&mut streaming).await),
        "apply:streamed"
    );
}

#[tokio::test]
async fn too_old_resource_version_gets_410_and_watcher_relists() {
    let (standin, server, client) = start(StandIn::new().with_event_retention(5)).await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let cm = |name: &str, app: &str| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": app}}})).unwrap()
    };
    let mut stream = watcher(
        cms.clone(),
        watcher::Config::default()
            .labels("app=web")
            .disable_bookmarks(),
    )
    .boxed();
    assert!(drain_init(&mut stream).await.is_empty());
    cms.create(&PostParams::default(), &cm("web-1", "web"))
        .await
        .unwrap();
    assert_eq!(applied_name(next_event(&mut stream).await), "apply:web-1");

    // many writes the watcher does not see, then the connection drops:
    // resuming from its old resourceVersion is no longer possible
    for i in 0..10 {
        cms.create(&PostParams::default(), &cm(&format!("db-{i}"), "db"))
            .await
            .unwrap();
    }
    let lists = standin.counters().get_count("list", "v1/configmaps");
    standin.close_watches();
    match tokio::time::timeout(WAIT, stream.next()).await {
        Ok(Some(Err(watcher::Error::WatchError(status)))) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
        }
        other => panic!(
            "expected a 410 watch error, got {:?}",
            other.map(|o| o.map(|r| r.map(|_| ())))
        ),
    }
    assert_eq!(drain_init(&mut stream).await, vec!["web-1".to_string()]);
    assert_eq!(
        standin.counters().get_count("list", "v1/configmaps"),
        lists + 1
    );
    cms.create(&PostParams::default(), &cm("web-2", "web"))
        .await
        .unwrap();
    assert_eq!(applied_name(next_event(&mut stream).await), "apply:web-2");

    // the raw protocol: an ERROR event carrying a 410 Status, then the stream ends
    let req = http::Request::get(format!(
        "{}/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=1&timeoutSeconds=5",
        server.url
    ))
    .body(Vec::new())
    .unwrap();
    let text = client.request_text(req).await.unwrap();
    let ev: Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(ev["type"], "ERROR");
    assert_eq!(ev["object"]["code"], 410);

    // so does a resourceVersion from the future (e.g. after a stand-in restart)
    let req = http::Request::get(format!(
        "{}/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=999999&timeoutSeconds=5",
        server.url
    ))
    .body(Vec::new())
    .unwrap();
    let text = client.request_text(req).await.unwrap();
    let ev: Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(
        (ev["type"].as_str(), ev["object"]["reason"].as_str()),
        (Some("ERROR"), Some("Expired"))
    );
}

#[tokio::test]
async fn watch_bookmarks_and_timeout() {
    let (standin, server, client) =
        start(StandIn::new().with_bookmark_interval(Duration::from_millis(50))).await;
    let req = http::Request::get(format!(
        "{}/api/v1/namespaces/default/secrets?watch=1&allowWatchBookmarks=true&timeoutSeconds=1",
        server.url
    ))
    .body(Vec::new())
    .unwrap();
    let started = std::time::Instant::now();
    let text = tokio::time::timeout(WAIT, client.request_text(req))
        .await
        .unwrap()
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(900));
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 2, "bookmarks expected: {text}");
    assert!(
        lines
            .iter()
            .all(|l| l["type"] == "BOOKMARK" && l["object"]["kind"] == "Secret")
    );

    // like the real server, a watch without resourceVersion (or "0") starts with
    // the current objects as ADDED events
    standin
        .create("v1/secrets", json!({"metadata": {"name": "present"}}))
        .unwrap();
    let secrets: Api<Secret> = Api::default_namespaced(client);
    let mut events = secrets
        .watch(&kube::api::WatchParams::default().timeout(1), "0")
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(WAIT, events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        kube::api::WatchEvent::Added(s) => assert_eq!(s.name_any(), "present"),
        other => panic!("expected ADDED, got {other:?}"),
    }
}

#[tokio::test]
async fn finalizers_and_garbage_collection() {
    let (standin, _server, client) = start(StandIn::new()).await;
    let owners: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &ecr_resource());
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());

    // finalizer blocks deletion until removed
    let mut s = secret("fin", json!({}));
    s.metadata.finalizers = Some(vec!["example.com/cleanup".into()]);
    secrets.create(&PostParams::default(), &s).await.unwrap();
    let res = secrets
        .delete("fin", &DeleteParams::default())
        .await
        .unwrap();
    let marked = res.left().expect("object returned");
    assert!(marked.metadata.deletion_timestamp.is_some());
    let still = secrets.get("fin").await.unwrap();
    assert_eq!(
        still.metadata.deletion_timestamp,
        marked.metadata.deletion_timestamp
    );
    // a second delete changes nothing
    let rv = standin.resource_version();
    secrets
        .delete("fin", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(standin.resource_version(), rv);
    secrets
        .patch(
            "fin",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    assert!(secrets.get_opt("fin").await.unwrap().is_none());

    // owner -> secret -> configmap chain, plus a multi-owner dependent
    let mut owner = DynamicObject::new("owner", &ecr_resource());
    owner.data = json!({"spec": {}});
    let owner = owners.create(&PostParams::default(), &owner).await.unwrap();
    let other = owners
        .create(&PostParams::default(), &{
            let mut o = DynamicObject::new("other-owner", &ecr_resource());
            o.data = json!({"spec": {}});
            o
        })
        .await
        .unwrap();
    let oref = owner.controller_owner_ref(&ecr_resource()).unwrap();
    let mut dep = secret("dep", json!({}));
    dep.metadata.owner_references = Some(vec![oref.clone()]);
    let dep = secrets.create(&PostParams::default(), &dep).await.unwrap();
    let mut grand: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "grand"}})).unwrap();
    grand.metadata.owner_references = Some(vec![dep.controller_owner_ref(&()).unwrap()]);
    cms.create(&PostParams::default(), &grand).await.unwrap();
    let mut shared: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "shared"}})).unwrap();
    shared.metadata.owner_references = Some(vec![
        oref.clone(),
        other.owner_ref(&ecr_resource()).unwrap(),
    ]);
    cms.create(&PostParams::default(), &shared).await.unwrap();
    let mut held = secret("held", json!({}));
    held.metadata.owner_references = Some(vec![oref]);
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    secrets.create(&PostParams::default(), &held).await.unwrap();

    owners
        .delete("owner", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        standin
            .wait_for(WAIT, |s| s
                .get("v1/secrets", Some("default"), "dep")
                .is_none()
                && s.get("v1/configmaps", Some("default"), "grand").is_none())
            .await
    );
    let shared = cms.get("shared").await.unwrap();
    assert_eq!(
        shared.owner_references().len(),
        1,
        "dangling reference removed"
    );
    assert_eq!(shared.owner_references()[0].name, "other-owner");
    let held = secrets.get("held").await.unwrap();
    assert!(
        held.metadata.deletion_timestamp.is_some(),
        "dependent with finalizer is marked"
    );

    // orphan propagation keeps dependents
    let mut dep2 = secret("orphan", json!({}));
    dep2.metadata.owner_references = Some(vec![other.owner_ref(&ecr_resource()).unwrap()]);
    secrets.create(&PostParams::default(), &dep2).await.unwrap();
    owners
        .delete("other-owner", &DeleteParams::orphan())
        .await
        .unwrap();
    assert!(secrets.get_opt("orphan").await.unwrap().is_some());

    // deleting a namespace deletes what is in it
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "tmp"}})).unwrap(),
    )
    .await
    .unwrap();
    let tmp: Api<Secret> = Api::namespaced(client.clone(), "tmp");
    tmp.create(&PostParams::default(), &secret("inside", json!({})))
        .await
        .unwrap();
    assert_eq!(
        nss.get("tmp")
            .await
            .unwrap()
            .status
            .unwrap()
            .phase
            .as_deref(),
        Some("Active")
    );
    nss.delete("tmp", &DeleteParams::default()).await.unwrap();
    assert!(tmp.get_opt("inside").await.unwrap().is_none());

    // the library delete has the same semantics
    standin
        .create(
            ECR_GVR,
            json!({"metadata": {"name": "lib-owner", "namespace": "default"}, "spec": {}}),
        )
        .unwrap();
    let uid =
        standin.get(ECR_GVR, Some("default"), "lib-owner").unwrap()["metadata"]["uid"].clone();
    standin
        .create(
            "v1/secrets",
            json!({"metadata": {"name": "lib-dep", "ownerReferences": [
                {"apiVersion": "ecr.aws.edenlab.io/v1alpha1", "kind": "ECRTokenRefresh", "name": "lib-owner", "uid": uid}]}}),
        )
        .unwrap();
    standin
        .delete(ECR_GVR, Some("default"), "lib-owner")
        .unwrap();
    assert!(
        standin
            .get("v1/secrets", Some("default"), "lib-dep")
            .is_none()
    );
}

#[tokio::test]
async fn faults_and_counters() {
    let (standin, server, client) = start(StandIn::new()).await;
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    secrets
        .create(&PostParams::default(), &secret("s", json!({})))
        .await
        .unwrap();
    standin.reset_counters();

    standin.faults().add(
        FaultRule::new(500)
            .verb(Verb::Get)
            .gvr("v1/secrets")
            .times(1),
    );
    let err = secrets.get("s").await.unwrap_err();
    assert_eq!(api_code(&err), (500, "InternalError".into()));
    secrets.get("s").await.unwrap();

    standin.faults().add(FaultRule {
        verb: Some(Verb::Patch),
        gvr: None,
        name: Some("s".into()),
        status: 409,
        times: None,
    });
    for _ in 0..2 {
        let err = secrets
            .patch("s", &PatchParams::default(), &Patch::Merge(json!({})))
            .await
            .unwrap_err();
        assert_eq!(api_code(&err), (409, "Conflict".into()));
    }
    standin.faults().clear();
    secrets
        .patch("s", &PatchParams::default(), &Patch::Merge(json!({})))
        .await
        .unwrap();

    // kube's default client retries 429 by itself...
    standin
        .faults()
        .add(FaultRule::new(429).verb(Verb::Create).name("t").times(1));
    secrets
        .create(&PostParams::default(), &secret("t", json!({})))
        .await
        .unwrap();
    // ...without retries the TooManyRequests Status surfaces
    let mut config = Config::new(server.url.parse().unwrap());
    config.default_retry = false;
    let no_retry: Api<Secret> = Api::default_namespaced(Client::try_from(config).unwrap());
    standin
        .faults()
        .add(FaultRule::new(429).verb(Verb::Create).name("u"));
    let err = no_retry
        .create(&PostParams::default(), &secret("u", json!({})))
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), (429, "TooManyRequests".into()));
    standin.faults().clear();

    let c = standin.counters();
    assert_eq!(c.get_count("get", "v1/secrets"), 2);
    assert_eq!(c.get_count("patch", "v1/secrets"), 3);
    assert_eq!(c.get_count("create", "v1/secrets"), 3);
    assert_eq!(c.writes(), 6);
    secrets.list(&ListParams::default()).await.unwrap();
    assert_eq!(standin.counters().get_count("list", "v1/secrets"), 1);
    standin.reset_counters();
    assert_eq!(standin.counters().total(), 0);

    // latency applies to every request
    standin.faults().set_latency(Duration::from_millis(150));
    let t = std::time::Instant::now();
    secrets.get("s").await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(150));
    standin.faults().set_latency(Duration::ZERO);
}

#[tokio::test]
async fn event_recorder_creates_then_patches() {
    let (standin, _server, client) = start(StandIn::new()).await;
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let s = secrets
        .create(&PostParams::default(), &secret("target", json!({})))
        .await
        .unwrap();
    let recorder = Recorder::new(client.clone(), Reporter::from("kube-standin-test"));
    let ev = RecorderEvent {
        type_: EventType::Normal,
        reason: "Refreshed".into(),
        note: Some("token refreshed".into()),
        action: "Refresh".into(),
        secondary: None,
    };
    recorder.publish(&ev, &s.object_ref(&())).await.unwrap();
    recorder.publish(&ev, &s.object_ref(&())).await.unwrap();
    let events: Api<K8sEvent> = Api::default_namespaced(client);
    let list = events.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].series.as_ref().map(|s| s.count), Some(2));
    let c = standin.counters();
    assert_eq!(c.get_count("create", "events.k8s.io/v1/events"), 1);
    assert_eq!(c.get_count("patch", "events.k8s.io/v1/events"), 1);
}

#[tokio::test]
async fn controller_reconciles_against_standin() {
    let (standin, server, client) = start(StandIn::new()).await;
    let cms: Api<ConfigMap> = Api::all(client.clone());
    let secrets: Api<Secret> = Api::all(client.clone());
    struct Ctx {
        client: Client,
    }
    async fn reconcile(cm: Arc<ConfigMap>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
        let ns = cm.namespace().unwrap();
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
        let mut s = secret(
            &format!("{}-copy", cm.name_any()),
            json!({"copied": "true"}),
        );
        s.metadata.owner_references = Some(vec![cm.controller_owner_ref(&()).unwrap()]);
        s.string_data = cm.data.clone();
        s.data = None;
        let body = serde_json::to_value(&s).unwrap();
        let mut body = body;
        body["apiVersion"] = json!("v1");
        body["kind"] = json!("Secret");
        api.patch(
            &s.name_any(),
            &PatchParams::apply("ctrl").force(),
            &Patch::Apply(&body),
        )
        .await?;
        Ok(Action::await_change())
    }
    fn error_policy(_: Arc<ConfigMap>, _: &kube::Error, _: Arc<Ctx>) -> Action {
        Action::requeue(Duration::from_millis(100))
    }
    let ctrl = Controller::new(cms.clone(), watcher::Config::default())
        .owns(secrets, watcher::Config::default())
        .run(
            reconcile,
            error_policy,
            Arc::new(Ctx {
                client: client.clone(),
            }),
        )
        .for_each(|_| async {});
    let handle = tokio::spawn(ctrl);

    let ns_cms: Api<ConfigMap> = Api::namespaced(client.clone(), "team");
    ns_cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "conf"}, "data": {"a": "b"}}))
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(
        standin
            .wait_for(WAIT, |s| s
                .get("v1/secrets", Some("team"), "conf-copy")
                .is_some())
            .await
    );
    // the controller's no-op re-applies do not cause write churn
    let rv = standin.resource_version();
    let settled = standin
        .wait_for(Duration::from_millis(500), |s| s.resource_version() != rv)
        .await;
    assert!(!settled, "no further writes expected once reconciled");

    // deleting the owner garbage-collects the copy
    ns_cms
        .delete("conf", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        standin
            .wait_for(WAIT, |s| s
                .get("v1/secrets", Some("team"), "conf-copy")
                .is_none())
            .await
    );
    handle.abort();
    server.shutdown().await;
}

#[tokio::test]
async fn kubeconfig_discovery_and_crd_registration() {
    let standin = StandIn::new();
    let server = standin.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&server.kubeconfig_yaml()).unwrap();
    assert_eq!(kubeconfig.current_context.as_deref(), Some("kube-standin"));
    let config = Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    assert_eq!(config.default_namespace, "default");
    let client = Client::try_from(config).unwrap();
    let info = client.apiserver_version().await.unwrap();
    assert_eq!(info.major, "1");

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
            "scope": "Namespaced",
            "versions": [{"name": "v1", "served": true, "storage": true,
                          "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                          "subresources": {"status": {}}}],
        }
    }))
    .unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let established = kube::runtime::wait::await_condition(
        crds.clone(),
        "widgets.example.com",
        kube::runtime::wait::conditions::is_crd_established(),
    );
    tokio::time::timeout(WAIT, established)
        .await
        .unwrap()
        .unwrap();

    let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
    let (ar, caps) = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .find(|(ar, _)| ar.kind == "Widget")
        .expect("Widget discovered");
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    let widgets: Api<DynamicObject> = Api::namespaced_with(client, "default", &ar);
    let mut w = DynamicObject::new("w1", &ar);
    w.data = json!({"spec": {"size": 3}});
    widgets.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(standin.list("example.com/v1/widgets", None).len(), 1);
    let missing: Api<DynamicObject> = Api::all_with(
        Client::try_from(Config::new(server.url.parse().unwrap())).unwrap(),
        &ApiResource::from_gvk(&GroupVersionKind::gvk("nope.io", "v1", "Nope")),
    );
    assert_eq!(
        api_code(&missing.list(&ListParams::default()).await.unwrap_err()).0,
        404
    );
}

#[tokio::test]
async fn list_pagination() {
    let (standin, _server, client) = start(StandIn::new()).await;
    for i in 0..7 {
        standin
            .create(
                "v1/configmaps",
                json!({"metadata": {"name": format!("cm-{i}"), "namespace": "p"}}),
            )
            .unwrap();
    }
    let cms: Api<ConfigMap> = Api::namespaced(client, "p");
    let page = cms.list(&ListParams::default().limit(3)).await.unwrap();
    assert_eq!(page.items.len(), 3);
    let token = page.metadata.continue_.clone().unwrap();
    let page2 = cms
        .list(&ListParams::default().limit(3).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(page2.items[0].name_any(), "cm-3");
    let page3 = cms
        .list(
            &ListParams::default()
                .limit(3)
                .continue_token(page2.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(page3.items.len(), 1);
    assert!(page3.metadata.continue_.is_none());
    // the watcher pages with limit=500 by default; a small page size works too
    let mut stream = watcher(cms, watcher::Config::default().page_size(2)).boxed();
    assert_eq!(drain_init(&mut stream).await.len(), 7);
}

#[tokio::test]
async fn wait_for_times_out_without_change() {
    let standin = StandIn::new();
    assert!(
        !standin
            .wait_for(Duration::from_millis(50), |s| s.resource_version() > 1)
            .await
    );
    let s2 = standin.clone();
    let waiter = tokio::spawn(async move {
        s2.wait_for(WAIT, |s| s.list("v1/secrets", None).len() == 1)
            .await
    });
    tokio::task::yield_now().await;
    standin
        .create("v1/secrets", json!({"metadata": {"name": "x"}}))
        .unwrap();
    assert!(waiter.await.unwrap());
}

#[tokio::test]
async fn watch_streams_end_on_disconnect_and_shutdown() {
    let (standin, server, client) = start(StandIn::new()).await;
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let config = || watcher::Config::default().disable_bookmarks();

    // the watch request is made once the stream is polled past InitDone
    let mut stream = watcher(secrets.clone(), config()).boxed();
    drain_init(&mut stream).await;
    secrets
        .create(&PostParams::default(), &secret("a", json!({})))
        .await
        .unwrap();
    assert_eq!(applied_name(next_event(&mut stream).await), "apply:a");
    assert_eq!(standin.active_watches(), 1);
    drop(stream);
    assert!(
        standin.wait_for(WAIT, |s| s.active_watches() == 0).await,
        "the watch stream ends when the client goes away"
    );

    let mut stream = watcher(secrets.clone(), config()).boxed();
    drain_init(&mut stream).await;
    secrets
        .create(&PostParams::default(), &secret("b", json!({})))
        .await
        .unwrap();
    assert_eq!(applied_name(next_event(&mut stream).await), "apply:b");
    assert_eq!(standin.active_watches(), 1);
    tokio::time::timeout(WAIT, server.shutdown())
        .await
        .expect("shutdown does not hang on open watches");
    assert!(standin.wait_for(WAIT, |s| s.active_watches() == 0).await);
}
