//! Deletion, preconditions, uid immutability and strategic merge patches,
//! through the real kube client over HTTP, as strict as a real API server.

mod support;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
    PostParams, Preconditions,
};
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use support::{WAIT, causes, crm, raw, start, status};

const ECR: &str = "ecr.aws.edenlab.io/v1alpha1/ecrtokenrefreshes";

fn ecr() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("ecr.aws.edenlab.io", "v1alpha1", "ECRTokenRefresh"),
        "ecrtokenrefreshes",
    )
}

fn obj<K: serde::de::DeserializeOwned>(v: Value) -> K {
    serde_json::from_value(v).unwrap()
}

#[tokio::test]
async fn deletion_with_finalizers_is_graceful() {
    let api = start().await;
    let crs: Api<DynamicObject> = Api::default_namespaced_with(api.client.clone(), &ecr());
    let mut cr = DynamicObject::new("r", &ecr());
    cr.metadata.finalizers = Some(vec!["ecr.aws.edenlab.io/cleanup".into()]);
    cr.data = json!({"spec": {"region": "us-east-1"}});
    let created = crs.create(&PostParams::default(), &cr).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));

    let mut stream = watcher(crs.clone(), watcher::Config::default()).boxed();
    loop {
        if let Event::InitDone = tokio::time::timeout(WAIT, stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            break;
        }
    }

    // DELETE marks it: deletionTimestamp, grace period 0, generation + 1
    let marked = crs
        .delete("r", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .expect("the object is returned while finalizers remain");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(marked.metadata.deletion_grace_period_seconds, Some(0));
    assert_eq!(marked.metadata.generation, Some(2));

    // a second DELETE is a no-op 200
    let rv = api.standin.resource_version();
    let again = crs
        .delete("r", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert_eq!(
        again.metadata.deletion_timestamp,
        marked.metadata.deletion_timestamp
    );
    assert_eq!(again.metadata.generation, Some(2));
    assert_eq!(api.standin.resource_version(), rv);

    // no new finalizers once deletion started
    let st = status(
        crs.patch(
            "r",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"finalizers": ["ecr.aws.edenlab.io/cleanup", "other.io/x"]}}),
            ),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(
        st.message,
        "ECRTokenRefresh.ecr.aws.edenlab.io \"r\" is invalid: metadata.finalizers: Forbidden: no new finalizers \
         can be added if the object is being deleted, found new finalizers []string{\"other.io/x\"}"
    );
    // deletionTimestamp and its grace period cannot be changed by writes
    crs.patch(
        "r",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"metadata": {"deletionTimestamp": null, "deletionGracePeriodSeconds": null}}),
        ),
    )
    .await
    .unwrap();
    assert!(
        crs.get("r")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );

    // removing the last finalizer removes the object
    crs.patch(
        "r",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(crm(crs.get("r").await.unwrap_err()).0, 404);
    let mut seen = Vec::new();
    while !seen.iter().any(|e: &String| e.starts_with("delete")) {
        match tokio::time::timeout(WAIT, stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Event::Apply(o) => seen.push(format!("apply:{:?}", o.metadata.generation)),
            Event::Delete(o) => seen.push(format!("delete:{}", o.name_any())),
            _ => {}
        }
    }
    assert_eq!(seen.first().map(String::as_str), Some("apply:Some(2)"));
    assert_eq!(seen.last().map(String::as_str), Some("delete:r"));

    // a live object cannot be given a deletionTimestamp by a write
    let mut live = DynamicObject::new("live", &ecr());
    live.data = json!({"spec": {}});
    crs.create(&PostParams::default(), &live).await.unwrap();
    let st = status(
        crs.patch(
            "live",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"deletionTimestamp": "2030-01-01T00:00:00Z"}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(
        causes(&st),
        [(
            "metadata.deletionTimestamp".to_string(),
            "Invalid value: 2030-01-01 00:00:00 +0000 UTC: field is immutable".to_string()
        )]
    );
}

#[tokio::test]
async fn delete_options_and_preconditions_over_http() {
    let api = start().await;
    let secrets: Api<Secret> = Api::default_namespaced(api.client.clone());
    let s = secrets
        .create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": "s"}})),
        )
        .await
        .unwrap();
    let uid = s.uid().unwrap();
    let rv = s.resource_version().unwrap();

    let with = |uid: Option<String>, rv: Option<String>| DeleteParams {
        preconditions: Some(Preconditions {
            uid,
            resource_version: rv,
        }),
        ..DeleteParams::default()
    };
    let (code, reason, message) = crm(secrets
        .delete("s", &with(Some("other-uid".into()), None))
        .await
        .unwrap_err());
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert_eq!(
        message,
        format!(
            "Operation cannot be fulfilled on Secret \"s\": the UID in the precondition (other-uid) does not match \
             the UID in record ({uid}). The object might have been deleted and then recreated"
        )
    );
    let (code, _, message) = crm(secrets
        .delete("s", &with(None, Some("1".into())))
        .await
        .unwrap_err());
    assert_eq!(code, 409);
    assert_eq!(
        message,
        format!(
            "Operation cannot be fulfilled on Secret \"s\": the ResourceVersion in the precondition (1) does not \
             match the ResourceVersion in record ({rv}). The object might have been modified"
        )
    );
    assert!(
        api.standin
            .get("v1/secrets", Some("default"), "s")
            .is_some()
    );
    secrets
        .delete("s", &with(Some(uid), Some(rv)))
        .await
        .unwrap()
        .right()
        .expect("a Status of success");
    assert!(
        api.standin
            .get("v1/secrets", Some("default"), "s")
            .is_none()
    );

    // propagationPolicy: Orphan keeps dependents; an unknown policy is refused
    let cms: Api<ConfigMap> = Api::default_namespaced(api.client.clone());
    let owner = cms
        .create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": "owner"}})),
        )
        .await
        .unwrap();
    let mut dep: ConfigMap = obj(json!({"metadata": {"name": "dep"}}));
    dep.metadata.owner_references = Some(vec![owner.controller_owner_ref(&()).unwrap()]);
    cms.create(&PostParams::default(), &dep).await.unwrap();
    let r = raw(
        &api,
        "DELETE",
        "/api/v1/namespaces/default/configmaps/owner",
        &[("Content-Type", "application/json")],
        br#"{"propagationPolicy": "Sometimes"}"#.to_vec(),
    )
    .await;
    assert_eq!(r.code, 422);
    assert_eq!(
        r.json()["message"],
        "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: \"Sometimes\": \
         supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
    );
    cms.delete("owner", &DeleteParams::orphan()).await.unwrap();
    assert!(cms.get_opt("dep").await.unwrap().is_some());

    // ServiceAccounts (ReturnDeletedObject) answer with the object
    let sas: Api<ServiceAccount> = Api::default_namespaced(api.client.clone());
    sas.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": "sa"}})),
    )
    .await
    .unwrap();
    let gone = sas.delete("sa", &DeleteParams::default()).await.unwrap();
    assert_eq!(gone.left().map(|o| o.name_any()).as_deref(), Some("sa"));
}

#[tokio::test]
async fn uid_is_immutable_and_patches_never_create() {
    let api = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(api.client.clone());
    let cm = cms
        .create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": "c"}, "data": {"a": "1"}})),
        )
        .await
        .unwrap();
    let uid = cm.uid().unwrap();
    let other = "00000000-0000-0000-0000-000000000000";

    // PUT: a different uid is a failed storage precondition
    let mut put = cm.clone();
    put.metadata.uid = Some(other.into());
    let (code, reason, message) = crm(cms
        .replace("c", &PostParams::default(), &put)
        .await
        .unwrap_err());
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert_eq!(
        message,
        format!(
            "Operation cannot be fulfilled on configmaps \"c\": StorageError: invalid object, Code: 4, \
             Key: /registry/configmaps/default/c, ResourceVersion: 0, AdditionalErrorMsg: Precondition failed: \
             UID in precondition: {other}, UID in object meta: {uid}"
        )
    );

    // every patch type: 422 field is immutable
    let expected = format!(
        "ConfigMap \"c\" is invalid: metadata.uid: Invalid value: \"{other}\": field is immutable"
    );
    let uid_patch = json!({"metadata": {"uid": other}});
    let pp = PatchParams::default();
    assert_eq!(
        crm(cms
            .patch("c", &pp, &Patch::Merge(&uid_patch))
            .await
            .unwrap_err())
        .2,
        expected
    );
    assert_eq!(
        crm(cms
            .patch("c", &pp, &Patch::Strategic(&uid_patch))
            .await
            .unwrap_err())
        .2,
        expected
    );
    let jp: json_patch::Patch =
        serde_json::from_value(json!([{"op": "replace", "path": "/metadata/uid", "value": other}]))
            .unwrap();
    let (code, reason, message) = crm(cms
        .patch("c", &pp, &Patch::<()>::Json(jp))
        .await
        .unwrap_err());
    assert_eq!(
        (code, reason.as_str(), message.as_str()),
        (422, "Invalid", expected.as_str())
    );
    let applied =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "uid": other}});
    assert_eq!(
        crm(cms
            .patch("c", &PatchParams::apply("m"), &Patch::Apply(&applied))
            .await
            .unwrap_err())
        .2,
        expected
    );
    assert_eq!(
        cms.get("c").await.unwrap().uid().as_deref(),
        Some(uid.as_str())
    );

    // a merge patch carrying a stale resourceVersion: 409
    let (code, reason, message) = crm(cms
        .patch(
            "c",
            &pp,
            &Patch::Merge(json!({"metadata": {"resourceVersion": "1"}, "data": {"a": "2"}})),
        )
        .await
        .unwrap_err());
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert_eq!(
        message,
        "Operation cannot be fulfilled on configmaps \"c\": the object has been modified; please apply your \
         changes to the latest version and try again"
    );

    // merge, JSON and strategic patches of a missing object: 404, nothing created
    let (code, _, message) = crm(cms
        .patch("nope", &pp, &Patch::Merge(json!({"data": {}})))
        .await
        .unwrap_err());
    assert_eq!(
        (code, message.as_str()),
        (404, "configmaps \"nope\" not found")
    );
    assert_eq!(
        crm(cms
            .patch("nope", &pp, &Patch::Strategic(json!({})))
            .await
            .unwrap_err())
        .0,
        404
    );
    let jp: json_patch::Patch = serde_json::from_value(json!([])).unwrap();
    assert_eq!(
        crm(cms
            .patch("nope", &pp, &Patch::<()>::Json(jp))
            .await
            .unwrap_err())
        .0,
        404
    );
    assert!(
        api.standin
            .get("v1/configmaps", Some("default"), "nope")
            .is_none()
    );
    // server-side apply creates, but not with a uid of its own
    let applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "nope", "uid": other}});
    let (code, _, message) = crm(cms
        .patch("nope", &PatchParams::apply("m"), &Patch::Apply(&applied))
        .await
        .unwrap_err());
    assert_eq!(code, 409);
    assert!(message.ends_with(&format!(
        "uid mismatch: the provided object specified uid {other}, and no existing object was found"
    )));

    // custom resources cannot be PUT without a resourceVersion
    let crs: Api<DynamicObject> = Api::default_namespaced_with(api.client.clone(), &ecr());
    let mut cr = DynamicObject::new("r", &ecr());
    cr.data = json!({"spec": {}});
    let mut created = crs.create(&PostParams::default(), &cr).await.unwrap();
    created.metadata.resource_version = None;
    let st = status(
        crs.replace("r", &PostParams::default(), &created)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        st.message,
        "ecrtokenrefreshes.ecr.aws.edenlab.io \"r\" is invalid: metadata.resourceVersion: Invalid value: 0x0: \
         must be specified for an update"
    );
    assert!(api.standin.get(ECR, Some("default"), "r").is_some());
}

#[tokio::test]
async fn strategic_merge_patch_follows_the_real_list_strategies() {
    let api = start().await;
    let sas: Api<ServiceAccount> = Api::default_namespaced(api.client.clone());
    sas.create(
        &PostParams::default(),
        &obj(
            json!({"metadata": {"name": "default"}, "imagePullSecrets": [{"name": "theirs"}],
                     "secrets": [{"name": "token-a"}]}),
        ),
    )
    .await
    .unwrap();
    let pp = PatchParams::default();
    // imagePullSecrets is atomic on ServiceAccounts: the list is replaced
    let sa = sas
        .patch(
            "default",
            &pp,
            &Patch::Strategic(
                json!({"imagePullSecrets": [{"name": "ours"}], "secrets": [{"name": "token-b"}]}),
            ),
        )
        .await
        .unwrap();
    let names = |l: &Option<Vec<k8s_openapi::api::core::v1::LocalObjectReference>>| {
        l.iter()
            .flatten()
            .map(|r| r.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&sa.image_pull_secrets), ["ours"]);
    // secrets is keyed by name
    let secret_names: Vec<_> = sa
        .secrets
        .iter()
        .flatten()
        .filter_map(|r| r.name.clone())
        .collect();
    assert_eq!(secret_names, ["token-a", "token-b"]);
    // `$patch: delete` is no directive inside an atomic list: the list
    // becomes the patch's items, the unknown key dropped
    let sa = sas
        .patch(
            "default",
            &pp,
            &Patch::Strategic(json!({"imagePullSecrets": [{"name": "ours", "$patch": "delete"}]})),
        )
        .await
        .unwrap();
    assert_eq!(names(&sa.image_pull_secrets), ["ours"]);
    assert!(!serde_json::to_string(&sa).unwrap().contains("$patch"));
}
