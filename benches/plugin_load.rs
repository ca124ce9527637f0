//! Load time and per-call time of each example plugin, as a table:
//!
//! - load (compile): `PluginHost::load_file` in a fresh host without a cache
//!   (read, sha256, compile, pre-instantiate, `validate-settings`);
//! - load (cache): the same in a fresh host whose cache directory already holds
//!   the compiled component (a restart with `policy.cache_directory`);
//! - call: one hook call in a fresh `Store` + instance, as the controller makes
//!   it (mean over many calls), and the fuel it used.
//!
//! `cargo bench --bench plugin_load` (builds the plugins for wasm32-wasip2 first).
//! More plugins (e.g. the JavaScript examples) can be added with
//! `BENCH_EXTRA_PLUGINS`, one per line: `NAME PATH HOOK SETTINGS-JSON`, where HOOK
//! is `naming`, `fanout` or `retry`.

#[path = "../tests/common/plugins.rs"]
mod plugins;

#[allow(dead_code)] // namespaces(): the other benches use it
#[path = "common/inputs.rs"]
mod inputs;
use inputs::cr;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ecr_token_refresh::policy::{
    Failure, FailureKind, HostConfig, Limits, LoadedPlugin, NamespaceInfo, PluginHost,
};

struct Case {
    name: String,
    path: PathBuf,
    hook: String,
    settings: String,
}

fn candidates() -> Vec<NamespaceInfo> {
    (0..10)
        .map(|i| NamespaceInfo {
            name: format!("ns-{i}"),
            labels: BTreeMap::from([(
                "ecr-pull".into(),
                if i % 2 == 0 { "enabled" } else { "disabled" }.into(),
            )]),
            annotations: BTreeMap::new(),
        })
        .collect()
}

fn cases() -> Vec<Case> {
    let rust = |name: &str, hook: &str, settings: &str| Case {
        name: name.into(),
        path: plugins::wasm(name),
        hook: hook.into(),
        settings: settings.into(),
    };
    let mut cases = vec![
        rust("naming-prefix", "naming", r#"{"prefix":"team-a"}"#),
        rust(
            "fanout-label",
            "fanout",
            r#"{"label":"ecr-pull","value":"enabled"}"#,
        ),
        rust(
            "retry-linear",
            "retry",
            r#"{"step_ms":2000,"max_ms":30000,"give_up_after":3}"#,
        ),
    ];
    if let Ok(extra) = std::env::var("BENCH_EXTRA_PLUGINS") {
        for line in extra.lines().filter(|l| !l.trim().is_empty()) {
            let mut f = line.trim().splitn(4, ' ');
            let (Some(name), Some(path), Some(hook)) = (f.next(), f.next(), f.next()) else {
                panic!("BENCH_EXTRA_PLUGINS: {line:?} is not `NAME PATH HOOK SETTINGS-JSON`");
            };
            cases.push(Case {
                name: name.into(),
                path: path.into(),
                hook: hook.into(),
                settings: f.next().unwrap_or("{}").into(),
            });
        }
    }
    cases
}

fn load(host: &PluginHost, case: &Case) -> (LoadedPlugin, Duration) {
    let started = Instant::now();
    let plugin = host
        .load_file(
            &case.name,
            &case.path,
            &plugins::sha256_of(&case.path),
            case.settings.clone(),
            Limits::default(),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", case.name));
    (plugin, started.elapsed())
}

/// One call of the plugin's hook in a fresh instance; the fuel it used.
fn call(plugin: &LoadedPlugin, hook: &str) -> u64 {
    let cr = cr();
    let mut s = plugin.session();
    match hook {
        "naming" => {
            s.secret_name(&cr, "apps").expect("naming");
        }
        "fanout" => {
            s.select_namespaces(&cr, &candidates()).expect("fanout");
        }
        "retry" => {
            let f = Failure {
                kind: FailureKind::Throttled,
                message: "Rate exceeded".into(),
                attempt: 3,
            };
            s.decide_retry(&cr, &f, Some(Duration::from_secs(3600)))
                .expect("retry");
        }
        other => panic!("unknown hook {other}"),
    }
    s.last_call().fuel_consumed
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to filter here.
    let cache = tempfile::tempdir().expect("temporary cache directory");
    let config = |cached: bool| HostConfig {
        cache_directory: cached.then(|| cache.path().to_owned()),
        ..HostConfig::default()
    };
    println!(
        "| plugin | hook | size | load (compile) | load (from cache) | call (fresh instance) | fuel per call |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for case in cases() {
        let size = std::fs::metadata(&case.path).expect("plugin file").len();
        // Compile without a cache, in a host of its own (nothing compiled before).
        let (_, compile) = load(&PluginHost::new(config(false)).expect("host"), &case);
        // Fill the cache, then load from it in a new host (a restart).
        let _ = load(&PluginHost::new(config(true)).expect("host"), &case);
        let host = PluginHost::new(config(true)).expect("host");
        let (plugin, cached) = load(&host, &case);
        assert_eq!(host.compile_stats().loaded_from_cache, 1, "{}", case.name);
        // Per call: warm up, then the mean over enough calls to take ~1 s.
        let fuel = call(&plugin, &case.hook);
        let probe = Instant::now();
        for _ in 0..10 {
            call(&plugin, &case.hook);
        }
        let n = (Duration::from_secs(1).as_nanos() / (probe.elapsed().as_nanos() / 10).max(1))
            .clamp(10, 20_000) as u32;
        let started = Instant::now();
        for _ in 0..n {
            call(&plugin, &case.hook);
        }
        let per_call = started.elapsed() / n;
        println!(
            "| {} | {} | {:.1} KiB | {:.1} ms | {:.2} ms | {:.1} µs | {} |",
            case.name,
            case.hook,
            size as f64 / 1024.0,
            compile.as_secs_f64() * 1e3,
            cached.as_secs_f64() * 1e3,
            per_call.as_secs_f64() * 1e6,
            fuel
        );
    }
}
