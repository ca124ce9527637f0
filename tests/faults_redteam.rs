//! Red team: combinations the fault matrix (`tests/faults*.rs`) does not cover, tried
//! against the hardened operator. Each case runs the real controller against the
//! Kubernetes stand-in (most on the [`World`] harness) and asserts what the operator should
//! do. Cases that show a real problem are `#[ignore = "BUG: …"]`, with the cause; the
//! others add coverage the matrix lacked.
//!
//! Run the ignored ones with `cargo test --test faults_redteam -- --ignored`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::tokens::ScriptedTokens;
use common::world::*;
use common::*;
use ecr_token_refresh::ecr::FailureKind;
use ecr_token_refresh::policy::{BuiltinRetry, Jitter, Policies};
use kube_standin::{FaultRule, Verb};
use serde_json::{Value, json};

/// The status subresource of the resources.
const STATUS: &str = "ecr.aws.edenlab.io/v1alpha1/ecrtokenrefreshes/status";
const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
const OWNER_UID: &str = "ecr.aws.edenlab.io/owner-uid";
const OWNER_NAMESPACE: &str = "ecr.aws.edenlab.io/owner-namespace";
const OWNER_NAME: &str = "ecr.aws.edenlab.io/owner-name";
/// A registry host in a region no other case uses, for spec changes.
const MOVED_HOST: &str = "123456789012.dkr.ecr.ap-south-1.amazonaws.com";

/// Built-in policies whose retries are deterministic and grow: bounds 200 ms, 400 ms,
/// 800 ms, … up to 4 s, no jitter (every delay is then clamped to at least 500 ms). Under
/// a persistent failure that the backoff counts, an 8 s window holds at most 6 attempts
/// (0.5 + 0.5 + 0.8 + 1.6 + 3.2 s); at the first step for ever it holds 16.
fn growing_policies() -> Arc<Policies> {
    Arc::new(Policies::builtin().with_builtin_retry(BuiltinRetry {
        base: Duration::from_millis(200),
        cap: Duration::from_secs(4),
        jitter: Jitter::None,
    }))
}

/// The window over which [`growing_policies`] allow at most [`GROWING_BOUND`] attempts.
const GROWING_WINDOW: Duration = Duration::from_secs(8);
/// At most this many attempts in [`GROWING_WINDOW`] with a growing backoff (6, plus slack
/// for one attempt at each end of the window).
const GROWING_BOUND: usize = 8;

/// Requests with `verb` that reached `gvr` `namespace/name` since `since`.
fn requests_to(
    world: &World,
    verb: Verb,
    gvr: &str,
    namespace: &str,
    name: &str,
    since: Instant,
) -> usize {
    world
        .cluster
        .api
        .requests()
        .into_iter()
        .filter(|r| r.at >= since && r.verb == verb && r.is_for(gvr, Some(namespace), name))
        .count()
}

/// Status PATCHes of `namespace/name` since `since`.
fn status_patches(world: &World, namespace: &str, name: &str, since: Instant) -> usize {
    world
        .cluster
        .api
        .requests()
        .into_iter()
        .filter(|r| {
            r.at >= since
                && r.verb == Verb::Patch
                && r.subresource.as_deref() == Some("status")
                && r.is_for(CRS, Some(namespace), name)
        })
        .count()
}

// ---------------------------------------------------------------------------------------
// (a) ECR calls and retries beyond the backoff

/// The status subresource refuses every write of one resource (a 422, e.g. an admission
/// policy or a CRD schema the status does not fit). Each attempt is a failure the backoff
/// must count: the status write is retried less and less often.
#[tokio::test]
async fn a_refused_status_write_is_retried_with_a_growing_backoff() {
    let mut world = World::start_with(
        fast_settings(),
        growing_policies(),
        ScriptedTokens::default(),
    )
    .await;
    world.cluster.api.faults().add(
        FaultRule::new(422)
            .verb(Verb::Patch)
            .gvr(STATUS)
            .name("victim"),
    );
    let calls = world.ecr_calls();
    world.apply("default", "victim", spec_for(HOST));
    world
        .wait_secret("default", "victim", "written", |s| s.is_some())
        .await;
    let since = Instant::now();
    tokio::time::sleep(GROWING_WINDOW).await;
    let patches = status_patches(&world, "default", "victim", since);
    assert!(
        patches <= GROWING_BOUND,
        "{patches} status writes in {GROWING_WINDOW:?}: the backoff does not grow (bound {GROWING_BOUND})"
    );
    assert_eq!(
        world.ecr_calls() - calls,
        1,
        "the held token serves the retries"
    );
    world.cluster.api.faults().clear();
    world
        .wait_ready("default", "victim", "True", "TokenRefreshed")
        .await;
    world.keep("default", "victim");
    world.check().await;
    world.stop().await;
}

/// ECR denies access and the status cannot be written either: the failure never reaches
/// the status, but the backoff must hold all the same (issue item 1: 355 calls in 45 s).
#[tokio::test]
async fn ecr_failures_back_off_while_status_writes_are_refused() {
    let mut world = World::start_with(
        fast_settings(),
        growing_policies(),
        ScriptedTokens::default(),
    )
    .await;
    world.cluster.api.faults().add(
        FaultRule::new(422)
            .verb(Verb::Patch)
            .gvr(STATUS)
            .name("victim"),
    );
    world.tokens.fail_in("us-east-1", FailureKind::AccessDenied);
    let before = world.tokens.attempts();
    world.apply("default", "victim", spec_for(HOST));
    assert!(poll_until(WAIT, || world.tokens.attempts() > before).await);
    let first = world.tokens.attempts();
    tokio::time::sleep(GROWING_WINDOW).await;
    let attempts = (world.tokens.attempts() - first) as usize;
    assert!(
        attempts <= GROWING_BOUND,
        "{attempts} ECR calls in {GROWING_WINDOW:?} under AccessDenied: the backoff does not hold (bound {GROWING_BOUND})"
    );
    world.cluster.api.faults().clear();
    world.tokens.fail(false);
    world
        .wait_ready("default", "victim", "True", "TokenRefreshed")
        .await;
    world.keep("default", "victim");
    world.check().await;
    world.stop().await;
}

/// A fan-out resource naming `default` in `spec.serviceAccounts` fails to get a token. A
/// tenant edits the `default` ServiceAccount of its own namespace — one the resource does
/// not even serve — again and again: that must not make the operator call ECR before the
/// retry is due.
#[tokio::test]
async fn a_tenant_editing_its_service_account_cannot_make_a_failing_resource_call_ecr() {
    let mut world = World::start_fanout().await;
    world.tokens.fail_in("us-east-1", FailureKind::AccessDenied);
    world.apply(
        PLATFORM,
        "pull",
        fanout_spec(json!({"serviceAccounts": ["default"]})),
    );
    world
        .wait_ready(PLATFORM, "pull", "False", "ECRAccessDenied")
        .await;
    // "tenant" is not labelled: the resource does not serve it.
    world.service_account("tenant", "default", &[]);
    let first = world.tokens.attempts();
    let started = Instant::now();
    for i in 0..40 {
        world
            .cluster
            .api
            .merge_patch(
                SERVICE_ACCOUNTS,
                Some("tenant"),
                "default",
                json!({"metadata": {"annotations": {"touch": i.to_string()}}}),
                false,
            )
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let attempts = world.tokens.attempts() - first;
    // Every delay of the built-in backoff is at least 500 ms.
    let bound = 1 + (started.elapsed().as_millis() / 500) as u32;
    assert!(
        attempts <= bound,
        "{attempts} ECR calls in {:?} while a tenant edited its ServiceAccount (bound {bound})",
        started.elapsed()
    );
    world.tokens.fail(false);
    world.wait_holders("pull", &["a", "b"]).await;
    world.keep("a", "pull");
    world.keep("b", "pull");
    world.check().await;
    world.stop().await;
}

// ---------------------------------------------------------------------------------------
// (g) ServiceAccounts that refuse the operator's patch

/// A home resource naming the ServiceAccount `builder`, Ready; then `builder` appears and
/// refuses every patch of the operator (403, as a webhook or policy would).
async fn refusing_service_account_world() -> World {
    let world = World::start_with(
        fast_settings(),
        growing_policies(),
        ScriptedTokens::default(),
    )
    .await;
    let mut spec = spec_for(HOST);
    spec["serviceAccounts"] = json!(["builder"]);
    world.apply("default", "victim", spec);
    world
        .wait_ready("default", "victim", "True", "TokenRefreshed")
        .await;
    world.cluster.api.faults().add(
        FaultRule::new(403)
            .verb(Verb::Patch)
            .gvr(SERVICE_ACCOUNTS)
            .name("builder"),
    );
    world.service_account("default", "builder", &[]);
    world
}

/// The failure shows in the status or an Event.
#[tokio::test]
async fn a_service_account_refusing_our_entry_is_reported() {
    let mut world = refusing_service_account_world().await;
    let since = Instant::now();
    assert!(
        poll_until(WAIT, || requests_to(
            &world,
            Verb::Patch,
            SERVICE_ACCOUNTS,
            "default",
            "builder",
            since
        ) >= 2)
        .await,
        "the operator never tried to add its entry"
    );
    let reported = |w: &World| {
        let cr = w.cr("default", "victim");
        cr["status"].to_string().contains("builder")
            || w.events_about("default", "victim")
                .iter()
                .any(|(t, _, note)| t == "Warning" && note.contains("builder"))
    };
    assert!(
        poll_until(Duration::from_secs(5), || reported(&world)).await,
        "the refused ServiceAccount is in neither status nor Events: {:#} {:?}",
        world.cr("default", "victim")["status"],
        world.events_about("default", "victim")
    );
    world.cluster.api.faults().clear();
    world.wait_pulls("default", "builder", &["victim"]).await;
    world.keep("default", "victim");
    world.check().await;
    world.stop().await;
}

/// The refused patch is retried with a growing backoff, not at the first step for ever.
#[tokio::test]
async fn a_service_account_refusing_our_entry_is_retried_with_a_growing_backoff() {
    let mut world = refusing_service_account_world().await;
    let started = Instant::now();
    assert!(
        poll_until(WAIT, || requests_to(
            &world,
            Verb::Patch,
            SERVICE_ACCOUNTS,
            "default",
            "builder",
            started
        ) >= 1)
        .await
    );
    let since = Instant::now();
    tokio::time::sleep(GROWING_WINDOW).await;
    let patches = requests_to(
        &world,
        Verb::Patch,
        SERVICE_ACCOUNTS,
        "default",
        "builder",
        since,
    );
    assert!(
        patches <= GROWING_BOUND,
        "{patches} ServiceAccount patches in {GROWING_WINDOW:?} (bound {GROWING_BOUND})"
    );
    world.cluster.api.faults().clear();
    world.wait_pulls("default", "builder", &["victim"]).await;
    world.keep("default", "victim");
    world.check().await;
    world.stop().await;
}

// ---------------------------------------------------------------------------------------
// (h) Spec changes during an ECR outage

/// The registry moves to another region while ECR is down there: once ECR is back, the
/// Secret gets the new registry (status must not claim the new generation is served
/// before it is).
#[tokio::test]
async fn a_spec_change_made_during_an_ecr_outage_is_applied_once_ecr_is_back() {
    let mut world = World::start().await;
    world.apply("default", "victim", spec_for(HOST));
    world
        .wait_ready("default", "victim", "True", "TokenRefreshed")
        .await;
    world.tokens.fail_in("ap-south-1", FailureKind::Network);
    world
        .cluster
        .api
        .merge_patch(
            CRS,
            Some("default"),
            "victim",
            json!({"spec": {"ecrRegistry": MOVED_HOST, "region": "ap-south-1"}}),
            false,
        )
        .unwrap();
    world
        .wait_ready("default", "victim", "False", "ECRUnreachable")
        .await;
    world.tokens.fail(false);
    // Ready again: the Secret must hold what the new generation asks for.
    let c = world
        .wait_ready("default", "victim", "True", "TokenRefreshed")
        .await;
    assert_eq!(c["observedGeneration"], 2, "{c}");
    let s = world.secret("default", "victim").unwrap();
    assert!(
        !password_in(&s, MOVED_HOST).is_empty(),
        "Ready for generation 2, but the Secret still holds only the old registry: {}",
        c["message"]
    );
    world.keep("default", "victim");
    world.check().await;
    world.stop().await;
}

/// Same move; the Secret is deleted while ECR is still down. No token for the new region
/// exists, so nothing may be written under the new registry with the old region's token.
#[tokio::test]
async fn a_secret_recreated_during_an_outage_never_holds_another_regions_token() {
    let mut world = World::start().await;
    world.apply("default", "victim", spec_for(HOST));
    world
        .wait_ready("default", "victim", "True", "TokenRefreshed")
        .await;
    let old = password_in(&world.secret("default", "victim").unwrap(), HOST);
    world.tokens.fail_in("ap-south-1", FailureKind::Network);
    world
        .cluster
        .api
        .merge_patch(
            CRS,
            Some("default"),
            "victim",
            json!({"spec": {"ecrRegistry": MOVED_HOST, "region": "ap-south-1"}}),
            false,
        )
        .unwrap();
    world
        .wait_ready("default", "victim", "False", "ECRUnreachable")
        .await;
    world
        .cluster
        .api
        .delete(SECRETS, Some("default"), "victim")
        .unwrap();
    let old_token_written = poll_until(Duration::from_secs(4), || {
        world
            .secret("default", "victim")
            .is_some_and(|s| password_in(&s, MOVED_HOST) == old)
    })
    .await;
    assert!(
        !old_token_written,
        "the us-east-1 token was written for {MOVED_HOST}"
    );
    world.tokens.fail(false);
    world
        .wait_secret(
            "default",
            "victim",
            "holding a token of the new region",
            |s| {
                s.is_some_and(|s| {
                    let p = password_in(s, MOVED_HOST);
                    !p.is_empty() && p != old
                })
            },
        )
        .await;
    world.keep("default", "victim");
    world.check().await;
    world.stop().await;
}

// ---------------------------------------------------------------------------------------
// (f)/(h) Deletion

/// Tenants put Opaque Secrets carrying a copy's labels into their namespaces: one with the
/// owner-uid label (in a served namespace, where the uid is on the tenant's copy), one with
/// the legacy owner name and namespace labels (in a namespace the resource does not
/// serve: knowing `platform/pull` is enough). The operator never wrote them and may not
/// delete them — the installed ValidatingAdmissionPolicy (config/admission/
/// secrets_policy.yaml) refuses the operator's DELETE of anything but a labelled
/// dockerconfigjson Secret with 403, modelled here by a fault — and they must not hold up
/// the resource's deletion.
#[tokio::test]
async fn a_tenant_cannot_block_the_deletion_of_a_fanout_resource() {
    let mut world = World::start_fanout().await;
    world.apply(PLATFORM, "pull", fanout_spec(json!({})));
    world.wait_holders("pull", &["a", "b"]).await;
    let uid = world.uid(PLATFORM, "pull");
    let blob = json!({"token": "dHJhcA=="});
    world.add_foreign(
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "trap", "namespace": "a",
                     "labels": {MANAGED_BY: "ecr-token-refresh", OWNER_UID: uid,
                                OWNER_NAMESPACE: PLATFORM}},
        "data": blob}),
    );
    world.add_foreign(
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "legacy-trap", "namespace": "tenant",
                     "labels": {MANAGED_BY: "ecr-token-refresh", OWNER_NAME: "pull",
                                OWNER_NAMESPACE: PLATFORM}},
        "data": blob}),
    );
    for name in ["trap", "legacy-trap"] {
        world.cluster.api.faults().add(
            FaultRule::new(403)
                .verb(Verb::Delete)
                .gvr(SECRETS)
                .name(name),
        );
    }
    let since = Instant::now();
    world
        .cluster
        .api
        .delete(CRS, Some(PLATFORM), "pull")
        .unwrap();
    world.wait_gone(PLATFORM, "pull").await;
    assert_eq!(world.holders("pull"), Default::default(), "copies left");
    let asked = requests_to(&world, Verb::Delete, SECRETS, "a", "trap", since)
        + requests_to(
            &world,
            Verb::Delete,
            SECRETS,
            "tenant",
            "legacy-trap",
            since,
        );
    assert_eq!(
        asked, 0,
        "the operator tried to delete Secrets it never wrote"
    );
    world.check().await;
    world.stop().await;
}

// ---------------------------------------------------------------------------------------
// Restarts: what the operator can and cannot know afterwards

/// The controller stopped; started again on the same cluster with `settings`.
fn restart(
    cluster: &Cluster,
    tokens: Arc<ScriptedTokens>,
    policies: Arc<Policies>,
    settings: ecr_token_refresh::controller::Settings,
) -> Running {
    start_controller_with(cluster.client.clone(), tokens, policies, settings)
}

/// Creates a namespace (labelled for the `fanout-label` plugin or not).
fn namespace(cluster: &Cluster, name: &str, labelled: bool) {
    let labels = if labelled {
        json!({FANOUT_LABEL: FANOUT_VALUE})
    } else {
        json!({})
    };
    let _ = cluster.api.create(
        NAMESPACES,
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": name, "labels": labels}}),
    );
}

/// The resource's own Secret is blanked (data replaced, the operator's annotations left
/// as they were) while the operator is down, e.g. during a leader hand-over or an
/// upgrade. Once it runs again, the Secret must serve again.
#[tokio::test]
async fn a_secret_blanked_while_the_operator_was_down_is_repaired_after_a_restart() {
    let cluster = Cluster::start().await;
    let tokens = Arc::new(ScriptedTokens::default());
    let running = restart(&cluster, tokens.clone(), fast_policies(), fast_settings());
    cluster.apply_sample("victim", json!({}));
    cluster.wait_ready("victim", "True", "TokenRefreshed").await;
    running.stop().await;

    let mut s = cluster.secret("victim").unwrap();
    let (blank, _) = docker_config(HOST, "");
    s["data"][".dockerconfigjson"] = json!(blank);
    cluster.api.replace(SECRETS, s).unwrap();

    let running = restart(&cluster, tokens.clone(), fast_policies(), fast_settings());
    let repaired = cluster
        .api
        .wait_for(WAIT, |api| {
            api.get(SECRETS, Some("default"), "victim")
                .is_some_and(|s| !password_in(&s, HOST).is_empty())
        })
        .await;
    running.stop().await;
    assert!(
        repaired,
        "the blanked Secret was never repaired; status: {}",
        cluster.ready("victim")
    );
    assert_pull_secret_sound(&cluster.secret("victim").unwrap());
}

/// The cluster owner stops letting `platform` fan out (config change, restart): the
/// copies in other namespaces — which the resource may no longer write — go, as a
/// namespace that stops being selected loses its copy and its ServiceAccount entry.
#[tokio::test]
async fn copies_go_when_the_namespace_may_no_longer_fan_out() {
    let cluster = Cluster::start().await;
    for (ns, labelled) in [
        ("default", false),
        (PLATFORM, false),
        ("a", true),
        ("b", true),
    ] {
        namespace(&cluster, ns, labelled);
    }
    let tokens = Arc::new(ScriptedTokens::default());
    let policies = label_policies().await;
    let running = restart(
        &cluster,
        tokens.clone(),
        policies.clone(),
        fanout_settings(),
    );
    cluster
        .api
        .create(
            SERVICE_ACCOUNTS,
            json!({"apiVersion": "v1", "kind": "ServiceAccount",
                   "metadata": {"name": "default", "namespace": "a"}}),
        )
        .unwrap();
    cluster
        .api
        .create(
            CRS,
            json!({"apiVersion": "ecr.aws.edenlab.io/v1alpha1", "kind": "ECRTokenRefresh",
                   "metadata": {"name": "pull", "namespace": PLATFORM},
                   "spec": fanout_spec(json!({"serviceAccounts": ["default"]}))}),
        )
        .unwrap();
    let copies = |api: &kube_standin::StandIn| {
        ["a", "b"]
            .iter()
            .filter(|ns| api.get(SECRETS, Some(ns), "pull").is_some())
            .count()
    };
    assert!(cluster.api.wait_for(WAIT, |api| copies(api) == 2).await);
    let listed = |api: &kube_standin::StandIn| {
        api.get(SERVICE_ACCOUNTS, Some("a"), "default")
            .is_some_and(|sa| sa["imagePullSecrets"].to_string().contains("pull"))
    };
    assert!(cluster.api.wait_for(WAIT, listed).await);
    running.stop().await;

    // Same operator, `platform` no longer allowed to fan out.
    let running = restart(&cluster, tokens.clone(), policies, fast_settings());
    let cleaned = cluster
        .api
        .wait_for(WAIT, |api| copies(api) == 0 && !listed(api))
        .await;
    running.stop().await;
    let cr = cluster.api.get(CRS, Some(PLATFORM), "pull").unwrap();
    assert!(
        cleaned,
        "copies left in {} namespace(s), ServiceAccount entry left: {}; status: {}",
        copies(&cluster.api),
        listed(&cluster.api),
        ready_of(&cr)
    );
}

// ---------------------------------------------------------------------------------------
// Resources sharing one token

/// ECR denying access to the operator's identity, slowly (each call takes a second): every
/// resource of a region fails alike, whatever its registry.
#[derive(Default)]
struct SlowDenied {
    started: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl ecr_token_refresh::ecr::TokenSource for SlowDenied {
    async fn authorization_token(
        &self,
        request: &ecr_token_refresh::ecr::TokenRequest,
    ) -> Result<ecr_token_refresh::ecr::AuthorizationToken, ecr_token_refresh::ecr::EcrError> {
        self.started
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(1)).await;
        Err(ecr_token_refresh::ecr::EcrError {
            kind: FailureKind::AccessDenied,
            registry_id: request.registry_id.clone(),
            region: request.region.clone(),
            message: "not authorized to perform: ecr:GetAuthorizationToken".into(),
        })
    }
}

/// Two tenants' resources share the region's token (and its failures). What one tenant
/// reads in its status names its own registry, never the other tenant's account.
#[tokio::test]
async fn a_shared_failure_does_not_show_another_tenants_account() {
    let cluster = Cluster::start().await;
    for ns in ["default", "tenant"] {
        namespace(&cluster, ns, false);
    }
    let tokens = Arc::new(SlowDenied::default());
    let running = start_controller(cluster.client.clone(), tokens.clone(), fast_settings());
    let other = "999999999999.dkr.ecr.us-east-1.amazonaws.com";
    cluster
        .api
        .create(
            CRS,
            json!({"apiVersion": "ecr.aws.edenlab.io/v1alpha1", "kind": "ECRTokenRefresh",
                   "metadata": {"name": "theirs", "namespace": "tenant"},
                   "spec": spec_for(other)}),
        )
        .unwrap();
    // While the other tenant's call is under way, ours joins it.
    assert!(
        poll_until(WAIT, || tokens
            .started
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 1)
        .await
    );
    cluster.apply_sample("ours", json!({}));
    let c = cluster.wait_ready("ours", "False", "ECRAccessDenied").await;
    running.stop().await;
    let seen = format!(
        "{} {:?}",
        cluster.cr("ours")["status"],
        cluster.events("ours")
    );
    assert!(
        !seen.contains("999999999999"),
        "our status names the other tenant's account: {}",
        c["message"]
    );
}

// ---------------------------------------------------------------------------------------
// (d) Memory: what tenants create must not grow the operator

/// The operator binary (default configuration) against the stand-in and moto; killed on
/// drop. Its RSS is what the cluster's memory limit (256 MiB in config/manager) sees.
struct OperatorProcess {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl OperatorProcess {
    fn start(cluster: &Cluster, ecr_url: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, cluster.server.kubeconfig_yaml()).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_ecr-token-refresh"))
            .arg("run")
            .env_clear()
            .env("ECR_TOKEN_REFRESH_SERVER__LISTEN", "127.0.0.1:0")
            .env("KUBECONFIG", &kubeconfig)
            .env("AWS_ENDPOINT_URL_ECR", ecr_url)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RUST_LOG", "error")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Self { child, _dir: dir }
    }

    /// Resident memory, in MiB.
    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How many objects of [`JUNK_BYTES`] each a case creates: 60 MB in all.
const JUNK_OBJECTS: usize = 300;
/// The size of the one large annotation value each junk object carries (annotations may
/// hold 256 KiB in all).
const JUNK_BYTES: usize = 200_000;
/// What the junk may add to the operator's RSS (a few hundred bytes per object kept, plus
/// the transient decoding of one object at a time and allocator slack).
const JUNK_RSS_BOUND_MIB: f64 = 24.0;

/// The binary serving `default/victim` (which names the ServiceAccount `marker`), settled.
async fn memory_world() -> (common::moto::Moto, Cluster, OperatorProcess) {
    let moto = common::moto::Moto::start();
    let cluster = Cluster::start().await;
    for ns in ["default", "tenant"] {
        namespace(&cluster, ns, false);
    }
    cluster.apply_sample("victim", json!({"serviceAccounts": ["marker"]}));
    let op = OperatorProcess::start(&cluster, &moto.url());
    cluster.wait_ready("victim", "True", "TokenRefreshed").await;
    settle(&cluster.api, Duration::from_millis(500)).await;
    (moto, cluster, op)
}

/// `JUNK_OBJECTS` labelled junk pull Secrets in `tenant`, each with one large value under
/// the annotation `key`: the operator's RSS grows by less than [`JUNK_RSS_BOUND_MIB`].
async fn junk_secrets_cost_no_memory(key: &str) {
    let (_moto, cluster, op) = memory_world().await;
    let before = op.rss_mib();
    let big = "y".repeat(JUNK_BYTES);
    let data = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        r#"{"auths":{}}"#,
    );
    for i in 0..JUNK_OBJECTS {
        cluster
            .api
            .create(
                SECRETS,
                json!({"apiVersion": "v1", "kind": "Secret",
                       "type": "kubernetes.io/dockerconfigjson",
                       "metadata": {"name": format!("junk-{i}"), "namespace": "tenant",
                                    "labels": {MANAGED_BY: "ecr-token-refresh",
                                               OWNER_UID: format!("forged-{i}")},
                                    "annotations": {key: big}},
                       "data": {".dockerconfigjson": data}}),
            )
            .unwrap();
    }
    // The Secret watch has seen all of them once it sees this deletion (events in order).
    cluster
        .api
        .delete(SECRETS, Some("default"), "victim")
        .unwrap();
    assert!(
        cluster
            .api
            .wait_for(WAIT, |api| api
                .get(SECRETS, Some("default"), "victim")
                .is_some())
            .await
    );
    let grown = op.rss_mib() - before;
    eprintln!("RSS {before:.1} MiB, then +{grown:.1} MiB");
    assert!(
        grown < JUNK_RSS_BOUND_MIB,
        "RSS grew by {grown:.1} MiB for {JUNK_OBJECTS} junk Secrets of {JUNK_BYTES} bytes"
    );
}

/// The hardened case, measured on the binary (the matrix counts requests only): labelled
/// junk with large annotations of its own costs no memory.
#[tokio::test]
async fn junk_secrets_with_large_annotations_of_their_own_cost_no_memory() {
    junk_secrets_cost_no_memory("example.com/junk").await;
}

/// Tenants label junk pull Secrets as the operator's, with one large value under one of
/// the operator's own annotation keys (which the cache keeps).
#[tokio::test]
async fn junk_secrets_with_large_values_under_our_annotations_cost_no_memory() {
    junk_secrets_cost_no_memory(OWNER_NAME).await;
}

/// `JUNK_OBJECTS` ServiceAccounts in `tenant` (an ordinary namespace permission), each
/// with one large value under the annotation `key`: the operator's RSS grows by less than
/// [`JUNK_RSS_BOUND_MIB`].
async fn tenant_service_accounts_cost_no_memory(key: &str) {
    let (_moto, cluster, op) = memory_world().await;
    let before = op.rss_mib();
    let big = "z".repeat(JUNK_BYTES);
    for i in 0..JUNK_OBJECTS {
        cluster
            .api
            .create(
                SERVICE_ACCOUNTS,
                json!({"apiVersion": "v1", "kind": "ServiceAccount",
                       "metadata": {"name": format!("junk-{i}"), "namespace": "tenant",
                                    "annotations": {key: big}}}),
            )
            .unwrap();
    }
    // The ServiceAccount watch has seen all of them once it sees this one (in order).
    cluster
        .api
        .create(
            SERVICE_ACCOUNTS,
            json!({"apiVersion": "v1", "kind": "ServiceAccount",
                   "metadata": {"name": "marker", "namespace": "default"}}),
        )
        .unwrap();
    assert!(
        cluster
            .api
            .wait_for(WAIT, |api| api
                .get(SERVICE_ACCOUNTS, Some("default"), "marker")
                .is_some_and(|sa| sa["imagePullSecrets"]
                    .to_string()
                    .contains("victim")))
            .await,
        "the operator never listed its Secret in the marker ServiceAccount"
    );
    let grown = op.rss_mib() - before;
    eprintln!("RSS {before:.1} MiB, then +{grown:.1} MiB");
    assert!(
        grown < JUNK_RSS_BOUND_MIB,
        "RSS grew by {grown:.1} MiB for {JUNK_OBJECTS} ServiceAccounts of {JUNK_BYTES} bytes"
    );
}

/// ServiceAccounts with large annotations of their own cost no memory (they are cut down
/// before they are cached).
#[tokio::test]
async fn tenant_service_accounts_with_large_annotations_of_their_own_cost_no_memory() {
    tenant_service_accounts_cost_no_memory("example.com/junk").await;
}

/// ServiceAccounts with a large value under the operator's own annotation key.
#[tokio::test]
async fn tenant_service_accounts_with_large_values_under_our_annotation_cost_no_memory() {
    tenant_service_accounts_cost_no_memory("ecr.aws.edenlab.io/image-pull-secrets").await;
}

// ---------------------------------------------------------------------------------------
// Combinations that hold up (coverage the matrix lacked)

/// What the `naming-prefix` plugin (prefix `team`) names the Secret of a resource for
/// [`HOST`].
const PREFIXED: &str = "team-123456789012-us-east-1";

/// Fan-out with ServiceAccounts, then the naming plugin is dropped from the spec: the
/// copies move to the new name in every namespace, the ServiceAccounts list exactly the
/// new name (recorded as ours), the old copies go, and no new token is fetched.
#[tokio::test]
async fn fanout_with_service_accounts_survives_a_naming_change() {
    let mut world = World::start_fanout().await;
    for ns in ["a", "b"] {
        world.service_account(ns, "default", &["user-own"]);
    }
    let calls = world.ecr_calls();
    let mut spec = fanout_spec(json!({"serviceAccounts": ["default"]}));
    spec["policy"]["naming"] = json!("prefixed-names");
    world.apply(PLATFORM, "pull", spec.clone());
    world.wait_holders(PREFIXED, &["a", "b"]).await;
    for ns in ["a", "b"] {
        world
            .wait_pulls(ns, "default", &["user-own", PREFIXED])
            .await;
    }
    world
        .cluster
        .api
        .merge_patch(
            CRS,
            Some(PLATFORM),
            "pull",
            json!({"spec": {"policy": {"naming": null}}}),
            false,
        )
        .unwrap();
    world.wait_holders("pull", &["a", "b"]).await;
    world.wait_holders(PREFIXED, &[]).await;
    let uid = world.uid(PLATFORM, "pull");
    for ns in ["a", "b"] {
        world.wait_pulls(ns, "default", &["user-own", "pull"]).await;
        assert_eq!(
            world.pull_record(ns, "default"),
            std::collections::BTreeMap::from([("pull".to_string(), uid.clone())])
        );
    }
    world
        .wait_cr(PLATFORM, "pull", "Ready for generation 2", |cr| {
            let c = ready_of(cr);
            c["status"] == "True" && c["observedGeneration"] == 2
        })
        .await;
    assert_eq!(
        world.ecr_calls() - calls,
        1,
        "the held token serves the new names"
    );
    world.keep("a", "pull");
    world.keep("b", "pull");
    world.check().await;
    world.stop().await;
}

/// A namespace is deleted while the operator's create of its copy is in flight (the
/// create is done, its answer late): the operator ends consistent — the others served,
/// nothing reported for the gone namespace, nothing left, no further writes.
#[tokio::test]
async fn a_namespace_deleted_while_its_copy_is_written_leaves_nothing_behind() {
    let mut world = World::start_fanout().await;
    world.apply(PLATFORM, "pull", fanout_spec(json!({})));
    world.wait_holders("pull", &["a", "b"]).await;
    world.cluster.api.faults().add(
        FaultRule::pass()
            .verb(Verb::Create)
            .gvr(SECRETS)
            .namespace("c")
            .delay(Duration::from_secs(1))
            .times(1),
    );
    world.namespace("c", true);
    assert!(
        world
            .cluster
            .api
            .wait_for(WAIT, |api| api.get(SECRETS, Some("c"), "pull").is_some())
            .await
    );
    world.cluster.api.delete(NAMESPACES, None, "c").unwrap();
    // The late answer comes a second after the create; then the operator settles.
    world.quiet(Duration::from_millis(1500)).await;
    world.wait_holders("pull", &["a", "b"]).await;
    let cr = world.cr(PLATFORM, "pull");
    assert_eq!(
        ready_of(&cr)["reason"],
        "TokenRefreshed",
        "{}",
        cr["status"]
    );
    assert_eq!(cr["status"]["servedNamespaces"], 2, "{}", cr["status"]);
    assert_eq!(
        cr["status"]["failedNamespaces"],
        Value::Null,
        "{}",
        cr["status"]
    );
    let since = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writes: Vec<String> = world
        .cluster
        .api
        .requests()
        .into_iter()
        .filter(|r| r.at >= since && r.is_write())
        .map(|r| format!("{:?} {} {:?} {:?}", r.verb, r.gvr, r.namespace, r.name))
        .collect();
    assert!(writes.is_empty(), "the operator kept writing: {writes:#?}");
    world.keep("a", "pull");
    world.keep("b", "pull");
    world.check().await;
    world.stop().await;
}

/// A foreign pull Secret at the target name gets the managed-by label (but no owner
/// label): it is still someone else's, reported and never written.
#[tokio::test]
async fn a_foreign_secret_that_gets_the_managed_by_label_is_still_not_ours() {
    let mut world = World::start().await;
    let (data, _) = docker_config("example.com", "theirs");
    world.add_foreign(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "victim", "namespace": "default"},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": data}}));
    world.apply("default", "victim", spec_for(HOST));
    world
        .wait_ready("default", "victim", "False", "SecretConflict")
        .await;
    world
        .cluster
        .api
        .merge_patch(
            SECRETS,
            Some("default"),
            "victim",
            json!({"metadata": {"labels": {MANAGED_BY: "ecr-token-refresh"}}}),
            false,
        )
        .unwrap();
    world.adopt_foreign("default", "victim");
    let since = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        requests_to(&world, Verb::Patch, SECRETS, "default", "victim", since)
            + requests_to(&world, Verb::Delete, SECRETS, "default", "victim", since),
        0
    );
    world
        .wait_ready("default", "victim", "False", "SecretConflict")
        .await;
    world.check().await;
    world.stop().await;
}

/// Five resources of one region share one token; one of them selects a plugin that is not
/// registered. It alone fails; the others are served by one ECR call.
#[tokio::test]
async fn one_misconfigured_resource_among_many_sharing_a_token_fails_alone() {
    let mut world = World::start().await;
    let calls = world.ecr_calls();
    let mut bad = spec_for(HOST);
    bad["policy"] = json!({"naming": "not-registered"});
    world.apply("tenant", "bad", bad);
    for i in 0..4 {
        world.apply("default", &format!("good-{i}"), spec_for(HOST));
    }
    for i in 0..4 {
        world
            .wait_ready("default", &format!("good-{i}"), "True", "TokenRefreshed")
            .await;
        world.keep("default", &format!("good-{i}"));
    }
    world
        .wait_ready("tenant", "bad", "False", "PolicyFailed")
        .await;
    assert_eq!(world.ecr_calls() - calls, 1, "one call serves them all");
    assert!(world.secret("tenant", "bad").is_none());
    world.check().await;
    world.stop().await;
}

/// Tokens that live 4 s (refreshed at mid-life, every 2 s) shared by three resources:
/// single flight holds, about one ECR call per refresh in all, not one per resource.
#[tokio::test]
async fn short_lived_tokens_shared_by_three_resources_cost_one_call_per_refresh() {
    let mut world = World::start_with(
        expiring_settings(),
        fast_policies(),
        ScriptedTokens::with_lifetime(4),
    )
    .await;
    for name in ["one", "two", "three"] {
        world.apply("default", name, spec_for(HOST));
    }
    for name in ["one", "two", "three"] {
        world
            .wait_ready("default", name, "True", "TokenRefreshed")
            .await;
        world.keep("default", name);
    }
    let first = world.tokens.attempts();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let calls = world.tokens.attempts() - first;
    let seconds = started.elapsed().as_secs() as u32;
    assert!(
        calls <= seconds / 2 + 3,
        "{calls} ECR calls in {seconds} s for three resources sharing one token"
    );
    assert!(calls >= 2, "the short-lived tokens are refreshed: {calls}");
    world.check().await;
    world.stop().await;
}

// ---------------------------------------------------------------------------------------
// Two instances over one namespace

/// A second instance reconciles the resources of `default` next to the world's
/// cluster-wide one, with its own token source: the namespaced overlay installed beside
/// the cluster-wide one, or `cargo run -- run` against a cluster where the operator runs
/// (README, "Run locally against a cluster"; leader election is off by default). Someone
/// then edits the Secret: each instance repairs it with the token it holds, and sees the
/// other's repair as the next edit. Repairs must not turn into a write loop: an edit right
/// after the operator's own write means another writer competes, and each instance's
/// repairs then follow its growing backoff (two instances: at most twice the attempts one
/// backoff allows; it was 430-835 writes in 4 s).
#[tokio::test]
async fn two_instances_over_one_namespace_do_not_fight_over_an_edited_secret() {
    let mut world = World::start_with(
        fast_settings(),
        growing_policies(),
        ScriptedTokens::default(),
    )
    .await;
    let second = start_controller_with(
        world.cluster.client.clone(),
        Arc::new(ScriptedTokens::with_lifetime(11 * 3600)),
        growing_policies(),
        ecr_token_refresh::controller::Settings {
            namespaces: vec!["default".into()],
            ..fast_settings()
        },
    );
    world.apply("default", "victim", spec_for(HOST));
    world
        .wait_ready("default", "victim", "True", "TokenRefreshed")
        .await;
    world.quiet(Duration::from_millis(500)).await;
    let mut s = world.secret("default", "victim").unwrap();
    let (edited, _) = docker_config(HOST, "edited-by-hand");
    s["data"][".dockerconfigjson"] = json!(edited);
    world.cluster.api.replace(SECRETS, s).unwrap();
    let since = Instant::now();
    tokio::time::sleep(GROWING_WINDOW).await;
    let writes = requests_to(&world, Verb::Patch, SECRETS, "default", "victim", since);
    second.stop().await;
    assert!(
        writes <= 2 * GROWING_BOUND,
        "{writes} writes of one Secret in {GROWING_WINDOW:?} after one edit: the instances fight"
    );
    let c = world
        .wait_event("default", "victim", "Warning", "SecretContested")
        .await;
    assert!(c.contains("another writer"), "{c}");
    world.keep("default", "victim");
    world.check().await;
    world.stop().await;
}

// ---------------------------------------------------------------------------------------
// After a restart: the seeding path

/// `platform/pull` serving its own namespace and `a` (both labelled), written by a
/// controller that was then stopped; namespace `b` exists, not labelled yet.
async fn fanout_served_then_stopped() -> (Cluster, Arc<ScriptedTokens>, Arc<Policies>) {
    let cluster = Cluster::start().await;
    for (ns, labelled) in [
        ("default", false),
        (PLATFORM, true),
        ("a", true),
        ("b", false),
    ] {
        namespace(&cluster, ns, labelled);
    }
    let tokens = Arc::new(ScriptedTokens::default());
    let policies = label_policies().await;
    let running = restart(
        &cluster,
        tokens.clone(),
        policies.clone(),
        fanout_settings(),
    );
    cluster
        .api
        .create(
            CRS,
            json!({"apiVersion": "ecr.aws.edenlab.io/v1alpha1", "kind": "ECRTokenRefresh",
                   "metadata": {"name": "pull", "namespace": PLATFORM},
                   "spec": fanout_spec(json!({}))}),
        )
        .unwrap();
    assert!(
        cluster
            .api
            .wait_for(WAIT, |api| api.get(SECRETS, Some("a"), "pull").is_some()
                && api.get(SECRETS, Some(PLATFORM), "pull").is_some()
                && ready_of(
                    &api.get(CRS, Some(PLATFORM), "pull").unwrap_or(Value::Null)
                )["reason"]
                    == "TokenRefreshed")
            .await
    );
    running.stop().await;
    (cluster, tokens, policies)
}

fn label(cluster: &Cluster, namespace: &str) {
    cluster
        .api
        .merge_patch(
            NAMESPACES,
            None,
            namespace,
            json!({"metadata": {"labels": {FANOUT_LABEL: FANOUT_VALUE}}}),
            false,
        )
        .unwrap();
}

/// A tracing writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// After a restart a new namespace needs a copy: the token is seeded from the resource's
/// own Secret with one GET, whose answer (the Secret with its data) cannot be decoded.
/// Everything logged at `trace` (through the operator's own event guard) holds no token
/// material; the copy is made with a token from ECR instead.
#[tokio::test]
async fn a_garbled_answer_to_the_seeding_read_leaks_nothing_and_falls_back_to_ecr() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::{Layer as _, filter};
    let (cluster, tokens, policies) = fanout_served_then_stopped().await;
    let own = cluster.api.get(SECRETS, Some(PLATFORM), "pull").unwrap();
    let data = own["data"][".dockerconfigjson"]
        .as_str()
        .unwrap()
        .to_string();
    cluster
        .api
        .faults()
        .add(FaultRule::garble().verb(Verb::Get).gvr(SECRETS));

    let captured = Captured::default();
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(captured.clone())
        .with_ansi(false)
        .with_filter(
            filter::Targets::new()
                .with_default(tracing::Level::TRACE)
                .with_target("kube_standin", tracing::level_filters::LevelFilter::OFF),
        )
        .with_filter(filter::filter_fn(ecr_token_refresh::telemetry::is_loggable));
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));

    let calls = tokens.calls();
    let running = restart(&cluster, tokens.clone(), policies, fanout_settings());
    label(&cluster, "b");
    assert!(
        cluster
            .api
            .wait_for(WAIT, |api| api.get(SECRETS, Some("b"), "pull").is_some())
            .await
    );
    running.stop().await;
    let gets = cluster
        .api
        .requests()
        .iter()
        .filter(|r| r.verb == Verb::Get && r.is_for(SECRETS, Some(PLATFORM), "pull"))
        .count();
    assert_eq!(gets, 1, "the own Secret is read once, to seed");
    assert_eq!(
        tokens.calls() - calls,
        1,
        "an unreadable seed costs one ECR call"
    );
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        log.len() > 10_000,
        "trace logging is on: {} bytes",
        log.len()
    );
    assert!(
        log.contains("cannot read the resource's own Secret"),
        "the failed seed is logged"
    );
    let b64 = base64::engine::general_purpose::STANDARD;
    for needle in [
        ScriptedTokens::password(1),
        base64::Engine::encode(&b64, format!("AWS:{}", ScriptedTokens::password(1))),
        data.clone(),
        data[..40].to_string(),
    ] {
        assert!(
            !log.contains(&needle),
            "token material {needle:?} in the log"
        );
    }
}

/// After a restart the operator verifies the resource's own Secret; then someone forges
/// it (data, a matching hash, the expiry status expects). A new namespace needs a copy:
/// the forged Secret must not seed it (it changed since it was verified), and it is
/// repaired.
#[tokio::test]
async fn the_own_secret_forged_after_a_restart_never_seeds_a_copy() {
    let (cluster, tokens, policies) = fanout_served_then_stopped().await;
    // A status field only a reconcile rewrites: shows when the restarted one has run.
    cluster
        .api
        .merge_patch(
            CRS,
            Some(PLATFORM),
            "pull",
            json!({"status": {"servedNamespaces": 4242}}),
            true,
        )
        .unwrap();
    let running = restart(&cluster, tokens.clone(), policies, fanout_settings());
    assert!(
        cluster
            .api
            .wait_for(WAIT, |api| api
                .get(CRS, Some(PLATFORM), "pull")
                .is_some_and(|cr| cr["status"]["servedNamespaces"] == 2))
            .await,
        "the restarted controller never reconciled"
    );
    let mut own = cluster.api.get(SECRETS, Some(PLATFORM), "pull").unwrap();
    let (forged, hash) = docker_config(HOST, "forged-password");
    own["data"][".dockerconfigjson"] = json!(forged);
    own["metadata"]["annotations"]["ecr.aws.edenlab.io/data-sha256"] = json!(hash);
    cluster.api.replace(SECRETS, own).unwrap();
    label(&cluster, "b");
    let done = cluster
        .api
        .wait_for(WAIT, |api| {
            let pw = |ns: &str| {
                api.get(SECRETS, Some(ns), "pull")
                    .map(|s| password_in(&s, HOST))
                    .unwrap_or_default()
            };
            !pw("b").is_empty() && pw(PLATFORM) != "forged-password"
        })
        .await;
    running.stop().await;
    assert!(
        done,
        "b never got a copy, or the own Secret was never repaired"
    );
    let copy = cluster.api.get(SECRETS, Some("b"), "pull").unwrap();
    assert_ne!(
        password_in(&copy, HOST),
        "forged-password",
        "the forgery was fanned out"
    );
    for ns in [PLATFORM, "a", "b"] {
        assert_pull_secret_sound(&cluster.api.get(SECRETS, Some(ns), "pull").unwrap());
    }
}

// ---------------------------------------------------------------------------------------
// One resource must not stop the others

/// Someone who may write a resource's status (a tenant granted `ecrtokenrefreshes/*`, or
/// a tool restoring a backup) sets a counter the CRD's schema admits (`type: integer`,
/// `format: uint32`, `minimum: 0`, no maximum) beyond what the operator's type holds. That
/// resource may fail; every other resource must still be served, also after the operator
/// restarts (or its watch lists again).
#[tokio::test]
async fn a_resource_with_an_out_of_range_status_does_not_stop_the_others() {
    let cluster = Cluster::start().await;
    for ns in ["default", "tenant"] {
        namespace(&cluster, ns, false);
    }
    let tokens = Arc::new(ScriptedTokens::default());
    let running = restart(&cluster, tokens.clone(), fast_policies(), fast_settings());
    cluster
        .api
        .create(
            CRS,
            json!({"apiVersion": "ecr.aws.edenlab.io/v1alpha1", "kind": "ECRTokenRefresh",
                   "metadata": {"name": "odd", "namespace": "tenant"},
                   "spec": spec_for(HOST)}),
        )
        .unwrap();
    assert!(
        cluster
            .api
            .wait_for(WAIT, |api| api
                .get(SECRETS, Some("tenant"), "odd")
                .is_some())
            .await
    );
    cluster
        .api
        .merge_patch(
            CRS,
            Some("tenant"),
            "odd",
            json!({"status": {"consecutiveFailures": 5_000_000_000u64}}),
            true,
        )
        .unwrap();
    running.stop().await;
    // The operator restarts (an upgrade, a new leader): a new resource is served.
    let task = tokio::spawn({
        let client = cluster.client.clone();
        let tokens = tokens.clone();
        async move {
            ecr_token_refresh::controller::run(
                client,
                tokens,
                fast_policies(),
                fast_settings(),
                futures::future::pending(),
            )
            .await
        }
    });
    cluster.apply_sample("after", json!({}));
    let served = cluster
        .api
        .wait_for(WAIT, |api| {
            api.get(SECRETS, Some("default"), "after").is_some()
        })
        .await;
    let ended = task.is_finished();
    task.abort();
    assert!(
        served,
        "no resource is served any more (controller {})",
        if ended { "exited" } else { "running" }
    );
}
