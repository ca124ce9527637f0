//! Per-call cost of each policy hook: built-in Rust policy vs the example
//! plugin (limits on), on a warm instance and on a fresh Store + instance,
//! and fan-out over 10, 1,000 and 10,000 candidate namespaces.
//!
//! `cargo bench --bench policy` (builds the plugins for wasm32-wasip2 first).

#[path = "../tests/common/plugins.rs"]
mod plugins;

#[path = "common/inputs.rs"]
mod inputs;
use inputs::{cr, namespaces};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ecr_token_refresh::policy::{
    AllowedNamespaces, BuiltinFanout, BuiltinNaming, BuiltinRetry, Failure, FailureKind,
    FanoutPolicy, HostConfig, Limits, LimitsOverride, LoadedPlugin, NamingPolicy, PluginHost,
    PluginRegistration, PluginRegistry, Policies, PolicySelection, RetryPolicy,
};

fn load(host: &PluginHost, crate_name: &str, settings: &str, limits: Limits) -> LoadedPlugin {
    let path = plugins::wasm(crate_name);
    host.load_file(
        crate_name,
        &path,
        &plugins::sha256_of(&path),
        settings.into(),
        limits,
    )
    .expect("load plugin")
}

fn bench(c: &mut Criterion) {
    let host = Arc::new(PluginHost::new(HostConfig::default()).expect("host"));
    eprintln!("pooling allocator: {}", host.is_pooling());
    let limits = Limits::default();
    let naming = load(&host, "naming-prefix", r#"{"prefix":"team-a"}"#, limits);
    let retry = load(&host, "retry-linear", "{}", limits);
    let fanout = load(
        &host,
        "fanout-label",
        r#"{"label":"ecr-pull","value":"enabled"}"#,
        limits,
    );
    let cr = cr();
    let failure = Failure {
        kind: FailureKind::Throttled,
        message: "Rate exceeded".into(),
        attempt: 3,
    };
    let expires = Some(Duration::from_secs(3600));

    let mut g = c.benchmark_group("naming");
    g.bench_function("builtin", |b| {
        b.iter(|| BuiltinNaming.secret_name(black_box(&cr), "apps"))
    });
    let mut warm = naming.session();
    g.bench_function("plugin-warm", |b| {
        b.iter(|| warm.secret_name(black_box(&cr), "apps").expect("name"))
    });
    eprintln!(
        "naming fuel per warm call: {}",
        warm.last_call().fuel_consumed
    );
    g.bench_function("plugin-fresh", |b| {
        b.iter(|| {
            naming
                .session()
                .secret_name(black_box(&cr), "apps")
                .expect("name")
        })
    });
    // Through the façade: fresh instance + spawn_blocking + guardrails.
    let registry = PluginRegistry {
        defaults: LimitsOverride::default(),
        plugins: BTreeMap::from([(
            "naming-prefix".to_owned(),
            PluginRegistration {
                path: plugins::wasm("naming-prefix"),
                sha256: plugins::sha256_of(&plugins::wasm("naming-prefix")),
                settings: Some(serde_json::json!({"prefix": "team-a"})),
                limits: LimitsOverride::default(),
            },
        )]),
        ..Default::default()
    };
    let policies = Policies::with_host(&registry, Arc::clone(&host));
    let sel = PolicySelection {
        naming: Some("naming-prefix".into()),
        ..Default::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    g.bench_function("plugin-facade", |b| {
        b.iter(|| {
            rt.block_on(policies.secret_name(&sel, black_box(&cr), "apps"))
                .expect("name")
        })
    });
    g.finish();

    let mut g = c.benchmark_group("retry");
    let builtin = BuiltinRetry::default();
    g.bench_function("builtin", |b| {
        b.iter(|| builtin.decide(black_box(&cr), &failure, expires))
    });
    let mut warm = retry.session();
    g.bench_function("plugin-warm", |b| {
        b.iter(|| {
            warm.decide_retry(black_box(&cr), &failure, expires)
                .expect("decision")
        })
    });
    eprintln!(
        "retry fuel per warm call: {}",
        warm.last_call().fuel_consumed
    );
    g.bench_function("plugin-fresh", |b| {
        b.iter(|| {
            retry
                .session()
                .decide_retry(black_box(&cr), &failure, expires)
                .expect("decision")
        })
    });
    g.finish();

    let mut g = c.benchmark_group("fanout");
    let allowed = AllowedNamespaces::Any;
    for n in [10usize, 1_000, 10_000] {
        let cands = namespaces(n);
        g.bench_with_input(BenchmarkId::new("builtin", n), &cands, |b, cands| {
            b.iter(|| BuiltinFanout.select(black_box(&cr), cands))
        });
        let mut warm = fanout.session();
        g.bench_with_input(BenchmarkId::new("plugin-warm", n), &cands, |b, cands| {
            b.iter(|| {
                let chosen = warm
                    .select_namespaces(black_box(&cr), cands)
                    .expect("fanout");
                ecr_token_refresh::policy::guard::check_fanout(
                    chosen,
                    cands.iter().map(|c| c.name.as_str()),
                    &|ns| allowed.allows(ns),
                )
                .expect("guardrails")
            })
        });
        let st = warm.last_call();
        eprintln!(
            "fanout {n}: fuel {} per warm call, last {:?}",
            st.fuel_consumed, st.elapsed
        );
        g.bench_with_input(BenchmarkId::new("plugin-fresh", n), &cands, |b, cands| {
            b.iter(|| {
                fanout
                    .session()
                    .select_namespaces(black_box(&cr), cands)
                    .expect("fanout")
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
