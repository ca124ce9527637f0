//! What the stand-in refuses to store, like a real API server: names,
//! labels, annotations, Secrets, Events, field selectors and size limits,
//! through the real kube client over HTTP, with the real codes, reasons and
//! messages.

mod support;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
    WatchParams,
};
use kube::runtime::events::{Event as RecorderEvent, EventType, Recorder, Reporter};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use support::{NAME_PART_MSG, SUBDOMAIN_MSG, causes, crm, raw, start, status};

fn obj<K: serde::de::DeserializeOwned>(v: Value) -> K {
    serde_json::from_value(v).unwrap()
}

fn ecr() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("ecr.aws.edenlab.io", "v1alpha1", "ECRTokenRefresh"),
        "ecrtokenrefreshes",
    )
}

#[tokio::test]
async fn object_names_follow_dns_rules() {
    let api = start().await;
    let secrets: Api<Secret> = Api::default_namespaced(api.client.clone());
    let pp = PostParams::default();

    let err = secrets
        .create(&pp, &obj(json!({"metadata": {"name": "Bad_Name"}})))
        .await
        .unwrap_err();
    let s = status(err);
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        s.message,
        format!(
            "Secret \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": {SUBDOMAIN_MSG}"
        )
    );
    let d = s.details.as_ref().unwrap();
    assert_eq!((d.kind.as_str(), d.name.as_str()), ("Secret", "Bad_Name"));
    assert_eq!(d.causes[0].reason, "FieldValueInvalid");
    assert_eq!(causes(&s)[0].0, "metadata.name");

    let long = "a".repeat(254);
    let (code, _, message) = crm(secrets
        .create(&pp, &obj(json!({"metadata": {"name": long}})))
        .await
        .unwrap_err());
    assert_eq!(code, 422);
    assert_eq!(
        message,
        format!(
            "Secret \"{long}\" is invalid: metadata.name: Invalid value: \"{long}\": must be no more than 253 characters"
        )
    );
    secrets
        .create(&pp, &obj(json!({"metadata": {"name": "a".repeat(253)}})))
        .await
        .unwrap();

    // Namespaces are DNS-1123 labels
    let nss: Api<Namespace> = Api::all(api.client.clone());
    let (code, reason, message) = crm(nss
        .create(&pp, &obj(json!({"metadata": {"name": "a.b"}})))
        .await
        .unwrap_err());
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert_eq!(
        message,
        "Namespace \"a.b\" is invalid: metadata.name: Invalid value: \"a.b\": must not contain dots"
    );
    let (code, _, message) = crm(nss
        .create(&pp, &obj(json!({"metadata": {"name": "n".repeat(64)}})))
        .await
        .unwrap_err());
    assert_eq!(code, 422);
    assert!(
        message.contains("must be no more than 63 characters"),
        "{message}"
    );

    // generateName: a long prefix is cut so that the name fits; a bad one is refused
    let generated = secrets
        .create(
            &pp,
            &obj(json!({"metadata": {"generateName": format!("{}-", "g".repeat(70))}})),
        )
        .await
        .unwrap();
    assert_eq!(generated.name_any().len(), 63);
    assert!(generated.name_any().starts_with(&"g".repeat(58)));
    let s = status(
        secrets
            .create(&pp, &obj(json!({"metadata": {"generateName": "Bad-"}})))
            .await
            .unwrap_err(),
    );
    assert_eq!(s.code, 422);
    assert_eq!(causes(&s)[0].0, "metadata.generateName");
    assert!(
        causes(&s).iter().any(|(f, _)| f == "metadata.name"),
        "the generated name is invalid too"
    );

    // the namespace in the URL of a namespaced object must be a DNS label
    let bad_ns: Api<Secret> = Api::namespaced(api.client.clone(), "Bad_NS");
    let s = status(
        bad_ns
            .create(&pp, &obj(json!({"metadata": {"name": "s"}})))
            .await
            .unwrap_err(),
    );
    assert_eq!(s.code, 422);
    assert_eq!(causes(&s)[0].0, "metadata.namespace");
    assert!(
        causes(&s)[0]
            .1
            .starts_with("Invalid value: \"Bad_NS\": a lowercase RFC 1123 label")
    );

    // custom resources: DNS subdomain names, the kind qualified by its group
    let crs: Api<DynamicObject> = Api::default_namespaced_with(api.client.clone(), &ecr());
    let mut cr = DynamicObject::new("UPPER", &ecr());
    cr.data = json!({"spec": {}});
    let s = status(crs.create(&pp, &cr).await.unwrap_err());
    assert!(
        s.message
            .starts_with("ECRTokenRefresh.ecr.aws.edenlab.io \"UPPER\" is invalid: metadata.name:"),
        "{}",
        s.message
    );
    assert_eq!(s.details.unwrap().group, "ecr.aws.edenlab.io");
}

#[tokio::test]
async fn labels_are_checked_on_every_write_path() {
    let api = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(api.client.clone());
    let pp = PostParams::default();

    let s = status(
        cms.create(
            &pp,
            &obj(json!({"metadata": {"name": "c", "labels": {"bad key": "v"}}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(
        s.message,
        format!(
            "ConfigMap \"c\" is invalid: metadata.labels: Invalid value: \"bad key\": {NAME_PART_MSG}"
        )
    );
    let value = "v".repeat(64);
    let s = status(
        cms.create(
            &pp,
            &obj(json!({"metadata": {"name": "c", "labels": {"k": value}}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(
        s.message,
        format!(
            "ConfigMap \"c\" is invalid: metadata.labels: Invalid value: \"{value}\": must be no more than 63 characters"
        )
    );
    let s = status(
        cms.create(
            &pp,
            &obj(json!({"metadata": {"name": "c", "labels": {"example.com/": "v"}}})),
        )
        .await
        .unwrap_err(),
    );
    assert!(
        s.message
            .contains("\"example.com/\": name part must be non-empty"),
        "{}",
        s.message
    );
    let prefix = format!("{}.com", "p".repeat(250));
    let s = status(
        cms.create(
            &pp,
            &obj(json!({"metadata": {"name": "c", "labels": {format!("{prefix}/k"): "v"}}})),
        )
        .await
        .unwrap_err(),
    );
    assert!(
        s.message
            .contains("prefix part must be no more than 253 characters"),
        "{}",
        s.message
    );

    let ok = cms
        .create(&pp, &obj(json!({"metadata": {"name": "c", "labels": {"example.com/App_1": "", "a": "B.c-d_E"}}})))
        .await
        .unwrap();
    let bad_labels = json!({"metadata": {"labels": {"-bad": "x"}}});
    let rv = api.standin.resource_version();

    // PUT
    let mut replaced = ok.clone();
    replaced.labels_mut().insert("-bad".into(), "x".into());
    assert_eq!(
        crm(cms.replace("c", &pp, &replaced).await.unwrap_err()).0,
        422
    );
    // merge, strategic and JSON patches
    let p = PatchParams::default();
    assert_eq!(
        crm(cms
            .patch("c", &p, &Patch::Merge(&bad_labels))
            .await
            .unwrap_err())
        .0,
        422
    );
    assert_eq!(
        crm(cms
            .patch("c", &p, &Patch::Strategic(&bad_labels))
            .await
            .unwrap_err())
        .0,
        422
    );
    let jp: json_patch::Patch = serde_json::from_value(
        json!([{"op": "add", "path": "/metadata/labels/-bad", "value": "x"}]),
    )
    .unwrap();
    assert_eq!(
        crm(cms
            .patch("c", &p, &Patch::<()>::Json(jp))
            .await
            .unwrap_err())
        .0,
        422
    );
    // server-side apply, on an existing and on a new object
    let applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"-bad": "x"}}});
    assert_eq!(
        crm(cms
            .patch("c", &PatchParams::apply("t"), &Patch::Apply(&applied))
            .await
            .unwrap_err())
        .0,
        422
    );
    let applied_new = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "new", "labels": {"-bad": "x"}}});
    assert_eq!(
        crm(cms
            .patch("new", &PatchParams::apply("t"), &Patch::Apply(&applied_new))
            .await
            .unwrap_err())
        .0,
        422
    );
    assert_eq!(api.standin.resource_version(), rv, "nothing was written");
    assert!(
        api.standin
            .get("v1/configmaps", Some("default"), "new")
            .is_none()
    );
}

#[tokio::test]
async fn annotations_keys_and_total_size() {
    let api = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(api.client.clone());
    let pp = PostParams::default();
    // keys are checked lower-cased: an upper-case prefix is fine
    cms.create(
        &pp,
        &obj(json!({"metadata": {"name": "a", "annotations": {"Example.COM/Key": "v"}}})),
    )
    .await
    .unwrap();
    let s = status(
        cms.create(
            &pp,
            &obj(json!({"metadata": {"name": "b", "annotations": {"a b": "v"}}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(
        causes(&s),
        [(
            "metadata.annotations".to_string(),
            format!("Invalid value: \"a b\": {NAME_PART_MSG}")
        )]
    );

    // 256 KiB of keys and values together
    let at_limit = "v".repeat(262_144 - 1);
    cms.create(
        &pp,
        &obj(json!({"metadata": {"name": "c", "annotations": {"k": at_limit}}})),
    )
    .await
    .unwrap();
    let s = status(
        cms.patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"k2": "x"}}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        s.message,
        "ConfigMap \"c\" is invalid: metadata.annotations: Too long: may not be more than 262144 bytes"
    );
    assert_eq!(s.details.unwrap().causes[0].reason, "FieldValueTooLong");
}

#[tokio::test]
async fn secrets_data_types_and_selectors() {
    let api = start().await;
    let secrets: Api<Secret> = Api::default_namespaced(api.client.clone());
    let pp = PostParams::default();

    // stringData is merged into data and not stored; type defaults to Opaque
    let s = secrets
        .create(
            &pp,
            &obj(
                json!({"metadata": {"name": "s"}, "data": {"a": "eQ=="}, "stringData": {"b": "x"}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(s.type_.as_deref(), Some("Opaque"));
    assert!(s.string_data.is_none());
    let stored = api.standin.get("v1/secrets", Some("default"), "s").unwrap();
    assert_eq!(stored["data"], json!({"a": "eQ==", "b": "eA=="}));
    assert!(stored.get("stringData").is_none());

    // data keys
    let st = status(
        secrets
            .create(
                &pp,
                &obj(json!({"metadata": {"name": "k"}, "stringData": {"bad key": "x"}})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(st.code, 422);
    assert_eq!(causes(&st)[0].0, "data[bad key]");
    assert!(causes(&st)[0].1.starts_with(
        "Invalid value: \"bad key\": a valid config key must consist of alphanumeric characters"
    ));

    // invalid base64: 400 from the decoder on create, 422 on a patch
    let r = raw(
        &api,
        "POST",
        "/api/v1/namespaces/default/secrets",
        &[("Content-Type", "application/json")],
        br#"{"metadata": {"name": "b64"}, "data": {"k": "abc!"}}"#.to_vec(),
    )
    .await;
    assert_eq!(r.code, 400);
    assert_eq!(r.json()["reason"], "BadRequest");
    assert_eq!(
        r.json()["message"],
        "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data at input byte 3"
    );
    let (code, reason, message) = crm(secrets
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "abc"}})),
        )
        .await
        .unwrap_err());
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert!(
        message.ends_with("illegal base64 data at input byte 0"),
        "{message}"
    );

    // 1 MiB of decoded data at most
    let mib = "x".repeat(1024 * 1024);
    secrets
        .create(
            &pp,
            &obj(json!({"metadata": {"name": "big"}, "stringData": {"k": mib}})),
        )
        .await
        .unwrap();
    let st = status(
        secrets
            .patch(
                "big",
                &PatchParams::default(),
                &Patch::Merge(json!({"stringData": {"k2": "y"}})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(
        st.message,
        "Secret \"big\" is invalid: data: Too long: may not be more than 1048576 bytes"
    );

    // dockerconfigjson needs its key holding a JSON object
    let docker = |data: Value| {
        obj::<Secret>(
            json!({"metadata": {"name": "pull"}, "type": "kubernetes.io/dockerconfigjson", "stringData": data}),
        )
    };
    let st = status(
        secrets
            .create(&pp, &docker(json!({"other": "{}"})))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        st.message,
        "Secret \"pull\" is invalid: data[.dockerconfigjson]: Required value"
    );
    let st = status(
        secrets
            .create(&pp, &docker(json!({".dockerconfigjson": "{not json"})))
            .await
            .unwrap_err(),
    );
    assert_eq!(st.code, 422);
    assert!(st.message.starts_with(
        "Secret \"pull\" is invalid: data[.dockerconfigjson]: Invalid value: \"<secret contents redacted>\": invalid character"
    ));
    let pull = secrets
        .create(&pp, &docker(json!({".dockerconfigjson": "{\"auths\":{}}"})))
        .await
        .unwrap();

    // type is immutable, also when a PUT leaves it out (it defaults to Opaque)
    let st = status(
        secrets
            .patch(
                "pull",
                &PatchParams::default(),
                &Patch::Merge(json!({"type": "kubernetes.io/tls"})),
            )
            .await
            .unwrap_err(),
    );
    // (the new type's own rules are checked too, as ValidateSecretUpdate does)
    assert_eq!(
        st.message,
        "Secret \"pull\" is invalid: [type: Invalid value: \"kubernetes.io/tls\": field is immutable, \
         data[tls.crt]: Required value, data[tls.key]: Required value]"
    );
    let mut untyped = pull.clone();
    untyped.type_ = None;
    let st = status(secrets.replace("pull", &pp, &untyped).await.unwrap_err());
    assert_eq!(
        st.message,
        "Secret \"pull\" is invalid: type: Invalid value: \"Opaque\": field is immutable"
    );

    // basic-auth needs a username or a password
    let st = status(
        secrets
            .create(
                &pp,
                &obj(json!({"metadata": {"name": "basic"}, "type": "kubernetes.io/basic-auth"})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(
        st.message,
        "Secret \"basic\" is invalid: [data[username]: Required value, data[password]: Required value]"
    );

    // the field selectors of Secrets
    let selected = secrets
        .list(
            &ListParams::default()
                .fields("type=kubernetes.io/dockerconfigjson,metadata.namespace=default"),
        )
        .await
        .unwrap();
    assert_eq!(
        selected
            .items
            .iter()
            .map(ResourceExt::name_any)
            .collect::<Vec<_>>(),
        ["pull"]
    );
    let (code, reason, message) = crm(secrets
        .list(&ListParams::default().fields("data.k=x"))
        .await
        .unwrap_err());
    assert_eq!(
        (code, reason.as_str(), message.as_str()),
        (400, "BadRequest", "field label not supported: data.k")
    );
}

#[tokio::test]
async fn field_selectors_are_strict_per_type() {
    let api = start().await;
    let lp = |f: &str| ListParams::default().fields(f);
    let crs: Api<DynamicObject> = Api::default_namespaced_with(api.client.clone(), &ecr());
    assert!(
        crs.list(&lp("metadata.name=x,metadata.namespace=default"))
            .await
            .is_ok()
    );
    assert_eq!(
        crm(crs.list(&lp("spec.region=us-east-1")).await.unwrap_err()),
        (
            400,
            "BadRequest".into(),
            "field label not supported: spec.region".into()
        )
    );
    let nss: Api<Namespace> = Api::all(api.client.clone());
    api.standin
        .create("v1/namespaces", json!({"metadata": {"name": "n1"}}))
        .unwrap();
    assert_eq!(
        nss.list(&lp("status.phase=Active"))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert_eq!(
        crm(nss.list(&lp("metadata.namespace=x")).await.unwrap_err()).0,
        400
    );
    let events: Api<K8sEvent> = Api::default_namespaced(api.client.clone());
    assert!(
        events
            .list(&lp(
                "regarding.name=s,reason=R,type=Normal,reportingController=c"
            ))
            .await
            .is_ok()
    );
    assert_eq!(
        crm(events.list(&lp("involvedObject.name=s")).await.unwrap_err()).2,
        "field label not supported: involvedObject.name"
    );
    let core_events: Api<k8s_openapi::api::core::v1::Event> =
        Api::default_namespaced(api.client.clone());
    assert!(
        core_events
            .list(&lp("involvedObject.name=s,source=x"))
            .await
            .is_ok()
    );
    // watches and deletecollection check them too
    let cms: Api<ConfigMap> = Api::default_namespaced(api.client.clone());
    let err = cms
        .watch(&WatchParams::default().fields("data.x=1").timeout(1), "0")
        .await
        .err()
        .expect("a bad field selector fails the watch");
    assert_eq!(crm(err).0, 400);
    assert_eq!(
        crm(cms
            .delete_collection(&Default::default(), &lp("spec.x=1"))
            .await
            .unwrap_err())
        .0,
        400
    );
}

fn event(name: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "default"},
        "eventTime": "2025-01-01T00:00:00.000000Z",
        "reportingController": "example.com/ctl", "reportingInstance": "ctl-0",
        "action": "Refresh", "reason": "Refreshed", "type": "Normal", "note": "ok",
        "regarding": {"apiVersion": "v1", "kind": "Secret", "name": "s", "namespace": "default"},
    })
}

#[tokio::test]
async fn events_v1_are_validated_strictly() {
    let api = start().await;
    let events: Api<K8sEvent> = Api::default_namespaced(api.client.clone());
    let pp = PostParams::default();
    events.create(&pp, &obj(event("ok.1"))).await.unwrap();

    let mut e = event("note");
    e["note"] = json!("n".repeat(1025));
    let st = status(events.create(&pp, &obj(e)).await.unwrap_err());
    assert_eq!((st.code, st.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        st.message,
        "Event \"note\" is invalid: message: Invalid value: \"\": can have at most 1024 characters"
    );
    let mut e = event("note-ok");
    e["note"] = json!("n".repeat(1024));
    events.create(&pp, &obj(e)).await.unwrap();

    let mut e = event("long");
    e["reason"] = json!("r".repeat(129));
    e["action"] = json!("a".repeat(129));
    let st = status(events.create(&pp, &obj(e)).await.unwrap_err());
    assert_eq!(
        st.message,
        "Event \"long\" is invalid: [action: Invalid value: \"\": can have at most 128 characters, \
         reason: Invalid value: \"\": can have at most 128 characters]"
    );

    let mut e = event("missing");
    for k in ["reportingInstance", "action", "reason"] {
        e.as_object_mut().unwrap().remove(k);
    }
    e["type"] = json!("Info");
    let st = status(events.create(&pp, &obj(e)).await.unwrap_err());
    assert_eq!(
        causes(&st),
        [
            (
                "reportingInstance".to_string(),
                "Required value".to_string()
            ),
            ("action".to_string(), "Required value".to_string()),
            ("reason".to_string(), "Required value".to_string()),
            (
                "type".to_string(),
                "Invalid value: \"\": has invalid value: Info".to_string()
            ),
        ]
    );
    let mut e = event("no-time");
    e.as_object_mut().unwrap().remove("eventTime");
    let st = status(events.create(&pp, &obj(e)).await.unwrap_err());
    assert_eq!(
        causes(&st),
        [("eventTime".to_string(), "Required value".to_string())]
    );

    // after creation only the series may change
    let st = status(
        events
            .patch(
                "ok.1",
                &PatchParams::default(),
                &Patch::Merge(json!({"note": "changed"})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(
        st.message,
        "Event \"ok.1\" is invalid: message: Invalid value: \"changed\": field is immutable"
    );
    events
        .patch(
            "ok.1",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"series": {"count": 2, "lastObservedTime": "2025-01-01T00:00:01.000000Z"}}),
            ),
        )
        .await
        .unwrap();
    let st = status(
        events
            .patch(
                "ok.1",
                &PatchParams::default(),
                &Patch::Merge(json!({"series": {"count": 1}})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(
        causes(&st),
        [(
            "series.count".to_string(),
            "Invalid value: \"\": should be at least 2".to_string()
        )]
    );
}

#[tokio::test]
async fn recorder_series_work_and_long_notes_are_refused() {
    let api = start().await;
    let secrets: Api<Secret> = Api::default_namespaced(api.client.clone());
    let s = secrets
        .create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": "target"}})),
        )
        .await
        .unwrap();
    let recorder = Recorder::new(api.client.clone(), Reporter::from("ecr-token-refresh"));
    let ev = |note: String| RecorderEvent {
        type_: EventType::Warning,
        reason: "RefreshFailed".into(),
        note: Some(note),
        action: "Refresh".into(),
        secondary: None,
    };
    for _ in 0..3 {
        recorder
            .publish(&ev("short".into()), &s.object_ref(&()))
            .await
            .unwrap();
    }
    let listed = api.standin.list("events.k8s.io/v1/events", Some("default"));
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["series"]["count"], 3);
    // a new event (the Recorder's key ignores the note) with a note over 1024 bytes
    let mut long = ev("x".repeat(1025));
    long.reason = "Other".into();
    let err = recorder
        .publish(&long, &s.object_ref(&()))
        .await
        .unwrap_err();
    assert_eq!(crm(err).0, 422);
}

#[tokio::test]
async fn request_and_object_size_limits() {
    let api = start().await;
    // a body over 3 MiB: 413 before anything is decoded
    let big = vec![b' '; 3 * 1024 * 1024 + 1];
    let r = raw(
        &api,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        &[("Content-Type", "application/json")],
        big,
    )
    .await;
    assert_eq!(r.code, 413);
    assert_eq!(r.json()["reason"], "RequestEntityTooLarge");
    assert_eq!(
        r.json()["message"],
        "Request entity too large: limit is 3145728"
    );

    // an object over etcd's 1.5 MiB: the raw etcd error, 500 without a reason
    let crs: Api<DynamicObject> = Api::default_namespaced_with(api.client.clone(), &ecr());
    let mut cr = DynamicObject::new("huge", &ecr());
    cr.data = json!({"spec": {"blob": "b".repeat(1_600_000)}});
    let st = status(
        api_no_retry(&api)
            .create(&PostParams::default(), &cr)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (st.code, st.reason.as_str(), st.message.as_str()),
        (500, "", "etcdserver: request is too large")
    );
    // growing an object past it through its status fails the same way
    let mut cr = DynamicObject::new("grows", &ecr());
    cr.data = json!({"spec": {}});
    crs.create(&PostParams::default(), &cr).await.unwrap();
    let st = status(
        api_no_retry(&api)
            .patch_status(
                "grows",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"blob": "b".repeat(1_600_000)}})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(st.code, 500);
    assert!(
        api.standin
            .get(
                "ecr.aws.edenlab.io/v1alpha1/ecrtokenrefreshes",
                Some("default"),
                "grows"
            )
            .unwrap()
            .get("status")
            .is_none()
    );
}

fn api_no_retry(api: &support::Api) -> Api<DynamicObject> {
    Api::default_namespaced_with(api.no_retry.clone(), &ecr())
}
