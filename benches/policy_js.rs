//! The JavaScript example plugins (`plugins/js`, componentize-qjs) beside their Rust
//! twins: load time (read, sha256, compile, pre-instantiate, validate the settings) on
//! a host that has not compiled the component yet, and the per-call time of each hook on
//! a fresh instance (as the operator calls them), with the fuel each call used.
//!
//! `cargo bench --bench policy_js` (needs `npm ci` in plugins/js; builds both kinds of
//! plugins first).

#[path = "../tests/common/js_plugins.rs"]
mod js_plugins;
#[path = "../tests/common/plugins.rs"]
mod plugins;

#[path = "common/inputs.rs"]
mod inputs;
use inputs::{cr, namespaces};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ecr_token_refresh::policy::{
    Failure, FailureKind, HostConfig, Limits, LoadedPlugin, PluginHost,
};

/// (label, path, settings) of each example, JS and Rust.
fn examples() -> Vec<(String, PathBuf, &'static str)> {
    let settings = |name: &str| match name {
        "naming-prefix" => r#"{"prefix":"team-a"}"#,
        "fanout-label" => r#"{"label":"ecr-pull","value":"enabled"}"#,
        _ => "{}",
    };
    let mut out = Vec::new();
    for name in ["naming-prefix", "fanout-label", "retry-linear"] {
        out.push((
            format!("js/{name}"),
            js_plugins::js_wasm(name),
            settings(name),
        ));
        out.push((format!("rust/{name}"), plugins::wasm(name), settings(name)));
    }
    out
}

/// Fan-outs over 10,000 candidates take longer than the default 100 ms in JS.
fn bench_limits() -> Limits {
    Limits {
        timeout: Duration::from_secs(10),
        ..Limits::default()
    }
}

fn load(host: &PluginHost, path: &Path, settings: &str) -> LoadedPlugin {
    host.load_file(
        "bench",
        path,
        &plugins::sha256_of(path),
        settings.into(),
        bench_limits(),
    )
    .expect("load plugin")
}

fn bench(c: &mut Criterion) {
    let examples = examples();
    for (label, path, _) in &examples {
        eprintln!(
            "{label}: {} bytes",
            std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
        );
    }

    // Load: a new host per iteration, so that nothing is compiled yet.
    let mut g = c.benchmark_group("load");
    g.sample_size(10);
    for (label, path, settings) in &examples {
        g.bench_function(label.as_str(), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let host = PluginHost::new(HostConfig::default()).expect("host");
                    let started = Instant::now();
                    black_box(load(&host, path, settings));
                    total += started.elapsed();
                }
                total
            })
        });
    }
    g.finish();

    // Calls on a fresh Store + instance, as the operator makes them.
    let host = PluginHost::new(HostConfig::default()).expect("host");
    eprintln!("pooling allocator: {}", host.is_pooling());
    let cr = cr();
    let failure = Failure {
        kind: FailureKind::Throttled,
        message: "Rate exceeded".into(),
        attempt: 3,
    };
    let expires = Some(Duration::from_secs(3600));
    let mut g = c.benchmark_group("call-fresh");
    for (label, path, settings) in &examples {
        let plugin = load(&host, path, settings);
        if label.ends_with("naming-prefix") {
            g.bench_function(label.as_str(), |b| {
                b.iter(|| {
                    plugin
                        .session()
                        .secret_name(black_box(&cr), "apps")
                        .expect("name")
                })
            });
            let mut s = plugin.session();
            s.secret_name(&cr, "apps").expect("name");
            eprintln!("{label} naming: fuel {}", s.last_call().fuel_consumed);
        } else if label.ends_with("retry-linear") {
            g.bench_function(label.as_str(), |b| {
                b.iter(|| {
                    plugin
                        .session()
                        .decide_retry(black_box(&cr), &failure, expires)
                        .expect("decision")
                })
            });
            let mut s = plugin.session();
            s.decide_retry(&cr, &failure, expires).expect("decision");
            eprintln!("{label} retry: fuel {}", s.last_call().fuel_consumed);
        } else {
            for n in [10usize, 1_000, 10_000] {
                let cands = namespaces(n);
                g.bench_with_input(BenchmarkId::new(label.as_str(), n), &cands, |b, cands| {
                    b.iter(|| {
                        plugin
                            .session()
                            .select_namespaces(black_box(&cr), cands)
                            .expect("fanout")
                    })
                });
                let mut s = plugin.session();
                s.select_namespaces(&cr, &cands).expect("fanout");
                eprintln!(
                    "{label} fanout {n}: fuel {} ({} per candidate)",
                    s.last_call().fuel_consumed,
                    s.last_call().fuel_consumed / n as u64
                );
            }
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
