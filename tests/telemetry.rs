//! Traces and metrics of a real reconcile: the operator (server + controller) runs
//! in-process against the Kubernetes stand-in and moto, exporting spans over OTLP/HTTP
//! to a receiver on 127.0.0.1; `/metrics` is scraped after the reconcile.
//!
//! This binary holds a single test: it sets `OTEL_*` variables and installs the global
//! subscriber, both process-wide.

mod common;
use common::plugins;

use std::sync::Arc;

use common::moto::Moto;
use common::otlp::{OtlpReceiver, RecordedSpan};
use common::web::{get, poll_async, sample};
use common::*;
use ecr_token_refresh::config::{LogConfig, OperatorConfig, TelemetryConfig};
use ecr_token_refresh::ecr::AwsTokenSource;
use ecr_token_refresh::operator::{self, Handles};
use ecr_token_refresh::policy::{CrInfo, HostConfig, PluginRegistry, Policies, PolicySelection};
use ecr_token_refresh::telemetry;
use serde_json::json;

fn by_name<'a>(spans: &'a [RecordedSpan], name: &str) -> Vec<&'a RecordedSpan> {
    spans.iter().filter(|s| s.name == name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_is_traced_over_otlp_and_measured() {
    let receiver = OtlpReceiver::start().await;
    // SAFETY: the only test of this binary; set before any thread reads the environment.
    unsafe {
        std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint());
        std::env::set_var("OTEL_SERVICE_NAME", "ecr-token-refresh-test");
        std::env::set_var("OTEL_RESOURCE_ATTRIBUTES", "k8s.pod.name=test-pod");
        std::env::set_var("OTEL_TRACES_SAMPLER", "always_on");
        // A long batch delay: the spans arrive only because shutdown flushes them.
        std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "600000");
        std::env::remove_var("OTEL_EXPORTER_OTLP_PROTOCOL");
        std::env::remove_var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        std::env::remove_var("RUST_LOG");
    }
    let telemetry = telemetry::init(&LogConfig::default(), &TelemetryConfig::default()).unwrap();
    assert!(telemetry.exporting());

    let moto = Moto::start();
    let cluster = Cluster::start().await;
    let tokens = Arc::new(AwsTokenSource::new(moto.sdk_config().await));
    let config = OperatorConfig::default();
    let handles = Handles::new(&config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(operator::run(
        config,
        cluster.client.clone(),
        tokens,
        listener,
        handles.clone(),
        async move {
            let _ = stopped.await;
        },
    ));

    assert_eq!(get(addr, "/healthz").await.0, 200);
    let ready = poll_async(WAIT, || async { get(addr, "/readyz").await.0 == 200 }).await;
    assert!(
        ready,
        "/readyz never became 200: {:?}",
        get(addr, "/readyz").await
    );

    cluster.apply_sample("ecr-credentials", json!({}));
    cluster
        .wait_ready("ecr-credentials", "True", "TokenRefreshed")
        .await;
    let expires_at: jiff::Timestamp = cluster.cr("ecr-credentials")["status"]["expiresAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    // Metrics, scraped over HTTP (the reconcile is counted when it returns, just after
    // the status write the wait above saw).
    let refreshed = r#"ecr_token_refresh_reconciles_total{outcome="refreshed"}"#;
    let counted = poll_async(WAIT, || async {
        sample(&get(addr, "/metrics").await.1, refreshed).is_some()
    })
    .await;
    let (status, page) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(counted, "no {refreshed} in\n{page}");
    let value =
        |series: &str| sample(&page, series).unwrap_or_else(|| panic!("no {series} in\n{page}"));
    assert!(value(r#"ecr_token_refresh_reconciles_total{outcome="refreshed"}"#) >= 1.0);
    assert!(
        value(r#"ecr_token_refresh_reconcile_duration_seconds_count{outcome="refreshed"}"#) >= 1.0
    );
    let took = value(r#"ecr_token_refresh_reconcile_duration_seconds_sum{outcome="refreshed"}"#);
    assert!(took > 0.0 && took < 30.0, "{took}");
    assert!(value(r#"ecr_token_refresh_ecr_requests_total{outcome="success"}"#) >= 1.0);
    assert_eq!(
        value(r#"ecr_token_refresh_secrets_written_total{reason="Created"}"#),
        1.0
    );
    assert_eq!(value("ecr_token_refresh_leader"), 1.0);
    // moto's tokens "expire" on 2015-01-01: the gauge is that far in the past.
    let left = value(
        r#"ecr_token_refresh_token_expires_in_seconds{namespace="default",name="ecr-credentials"}"#,
    );
    let expected = expires_at
        .duration_since(jiff::Timestamp::now())
        .as_secs_f64();
    assert!(
        (left - expected).abs() < 5.0,
        "gauge {left}, expiresAt - now {expected}"
    );
    let at = value(
        r#"ecr_token_refresh_token_expiry_timestamp_seconds{namespace="default",name="ecr-credentials"}"#,
    );
    assert_eq!(at, expires_at.as_second() as f64);
    // No plugin is registered, so no plugin series exist.
    assert!(
        !page.contains("ecr_token_refresh_plugin_calls_total{"),
        "{page}"
    );
    assert!(
        !page.contains("auth-token"),
        "the token leaked into /metrics"
    );

    // A policy plugin call (the naming hook of the example plugin) is a span and a metric.
    let wasm = plugins::wasm("naming-prefix");
    let registry = PluginRegistry::from_yaml(
        &format!(
            "plugins:\n  prefixed:\n    path: {}\n    sha256: {}\n    settings:\n      prefix: team-a\n",
            wasm.display(),
            plugins::sha256_of(&wasm)
        ),
        std::path::Path::new("/"),
    )
    .unwrap();
    let metrics = handles.metrics.clone();
    let policies = tokio::task::spawn_blocking(move || {
        Policies::load(&registry, HostConfig::default()).with_metrics(metrics)
    })
    .await
    .unwrap();
    let selection = PolicySelection {
        naming: Some("prefixed".into()),
        ..Default::default()
    };
    let cr = CrInfo {
        name: "ecr-credentials".into(),
        namespace: "default".into(),
        registry: HOST.into(),
        account_id: "123456789012".into(),
        region: "us-east-1".into(),
        ..Default::default()
    };
    let named = policies
        .secret_name(&selection, &cr, "default")
        .await
        .unwrap();
    assert!(named.starts_with("team-a-"), "{named}");
    let page = get(addr, "/metrics").await.1;
    let calls =
        r#"ecr_token_refresh_plugin_calls_total{plugin="prefixed",hook="naming",outcome="ok"}"#;
    assert_eq!(sample(&page, calls), Some(1.0), "{page}");
    let timed =
        r#"ecr_token_refresh_plugin_call_duration_seconds_count{plugin="prefixed",hook="naming"}"#;
    assert_eq!(sample(&page, timed), Some(1.0), "{page}");

    // Stop, flush, and look at the trace.
    stop.send(()).unwrap();
    tokio::time::timeout(WAIT, running)
        .await
        .expect("operator stops")
        .unwrap()
        .unwrap();
    telemetry.shutdown().await;
    let got = receiver
        .wait_for(WAIT, |spans| {
            spans.iter().any(|s| {
                s.name == "reconcile"
                    && s.attributes
                        .get("outcome")
                        .is_some_and(|o| o == "refreshed")
            })
        })
        .await;
    let spans = receiver.spans();
    assert!(
        got,
        "no reconcile span with outcome=refreshed; got {:#?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );

    let reconcile = by_name(&spans, "reconcile")
        .into_iter()
        .find(|s| {
            s.attributes
                .get("outcome")
                .is_some_and(|o| o == "refreshed")
        })
        .unwrap();
    assert_eq!(reconcile.parent_span_id, "", "reconcile is a root span");
    assert_eq!(reconcile.attributes["namespace"], "default");
    assert_eq!(reconcile.attributes["name"], "ecr-credentials");
    assert_eq!(reconcile.attributes["generation"], "1");
    assert_eq!(reconcile.resource["service.name"], "ecr-token-refresh-test");
    assert_eq!(reconcile.resource["k8s.pod.name"], "test-pod");
    assert_eq!(reconcile.transport, "http");
    let children: Vec<&RecordedSpan> = spans
        .iter()
        .filter(|s| s.trace_id == reconcile.trace_id && s.parent_span_id == reconcile.span_id)
        .collect();

    let ecr = children
        .iter()
        .find(|s| s.name == "ecr.get_authorization_token")
        .unwrap_or_else(|| panic!("no ECR span under reconcile: {children:#?}"));
    assert_eq!(ecr.attributes["region"], "us-east-1");
    assert_eq!(ecr.attributes["registry_id"], "123456789012");
    assert_eq!(ecr.attributes["outcome"], "success");

    let write = |kind: &str| {
        children
            .iter()
            .find(|s| s.name == "k8s.write" && s.attributes.get("kind").is_some_and(|k| k == kind))
            .unwrap_or_else(|| panic!("no k8s.write of {kind} under reconcile: {children:#?}"))
    };
    let secret = write("Secret");
    assert_eq!(secret.attributes["namespace"], "default");
    assert_eq!(secret.attributes["name"], "ecr-credentials");
    assert_eq!(secret.attributes["verb"], "create");
    assert_eq!(secret.attributes["outcome"], "success");
    assert_eq!(
        write("ECRTokenRefresh/status").attributes["outcome"],
        "success"
    );
    assert_eq!(write("Event").attributes["verb"], "create");

    let plugin_call = by_name(&spans, "policy.plugin_call");
    let plugin_call = plugin_call
        .first()
        .unwrap_or_else(|| panic!("no policy.plugin_call span"));
    assert_eq!(plugin_call.attributes["plugin"], "prefixed");
    assert_eq!(plugin_call.attributes["hook"], "naming");
    assert_eq!(plugin_call.attributes["outcome"], "ok");
    assert!(plugin_call.attributes["fuel"].parse::<u64>().unwrap() > 0);
    assert!(plugin_call.attributes.contains_key("elapsed_us"));

    // No span, attribute or span event carries the token (moto's password is
    // "<registry>-auth-token"; the auth field is base64 of "AWS:<password>").
    for s in &spans {
        let text = s.all_text();
        assert!(
            !text.contains("auth-token"),
            "token in span {}: {text}",
            s.name
        );
        assert!(
            !text.contains("QVdTOjEyMzQ1Njc4OTAxMi1hdXRoLXRva2Vu"),
            "token (base64) in span {}: {text}",
            s.name
        );
    }
}
