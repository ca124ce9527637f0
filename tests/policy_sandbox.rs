//! The plugin sandbox and the isolation between plugins, against real
//! components: fixed clocks and random and nothing else (a probe plugin reads
//! them), the determinism guard, the memory limit over all of an instance's
//! memories, each plugin's share of the instance pool, the component size
//! limit and the compiled-component cache.

#[path = "common/plugins.rs"]
mod plugins;

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ecr_token_refresh::policy::sandbox::{INSECURE_SEED, random_bytes};
use ecr_token_refresh::policy::{
    CompileStats, CrInfo, Hook, HostConfig, Limits, LimitsOverride, LoadError, PluginHost,
    PluginRegistration, PluginRegistry, Policies, PolicyError, PolicySelection, Violation,
};
use sha2::Digest as _;

const PROBE: &str = "clock-random-probe";

fn cr() -> CrInfo {
    CrInfo {
        name: "ecr-credentials".into(),
        namespace: "apps".into(),
        registry: "123456789012.dkr.ecr.us-east-1.amazonaws.com".into(),
        account_id: "123456789012".into(),
        region: "us-east-1".into(),
        ..Default::default()
    }
}

fn naming(plugin: &str) -> PolicySelection {
    PolicySelection {
        naming: Some(plugin.into()),
        ..Default::default()
    }
}

fn registration(
    crate_name: &str,
    settings: serde_json::Value,
    limits: LimitsOverride,
) -> PluginRegistration {
    let path = plugins::wasm(crate_name);
    PluginRegistration {
        sha256: plugins::sha256_of(&path),
        path,
        settings: Some(settings),
        limits,
    }
}

fn policies(host: PluginHost, plugins: &[(&str, LimitsOverride)]) -> Policies {
    let plugins = plugins
        .iter()
        .map(|(name, limits)| {
            let settings = if *name == "naming-prefix" {
                serde_json::json!({"prefix": "team-a"})
            } else {
                serde_json::json!({})
            };
            (name.to_string(), registration(name, settings, *limits))
        })
        .collect();
    let registry = PluginRegistry {
        plugins,
        ..Default::default()
    };
    let p = Policies::with_host(&registry, Arc::new(host));
    assert!(p.load_errors().is_empty(), "{:?}", p.load_errors());
    p
}

/// The probe and naming-prefix in a host with the default (deterministic) sandbox.
fn sandboxed() -> &'static Policies {
    static P: OnceLock<Policies> = OnceLock::new();
    P.get_or_init(|| {
        let host = PluginHost::new(HostConfig::default()).expect("plugin host");
        policies(
            host,
            &[
                (PROBE, LimitsOverride::default()),
                ("naming-prefix", LimitsOverride::default()),
            ],
        )
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Polls `f` until it holds, failing after `within`.
async fn eventually(within: Duration, what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_sees_fixed_clocks_fixed_random_and_nothing_else() {
    let p = sandboxed();
    let name = p.secret_name(&naming(PROBE), &cr(), "apps").await.unwrap();
    let parts: Vec<&str> = name.split('.').collect();
    assert_eq!(parts.len(), 8, "{name}");
    // Wall clock: the Unix epoch, through std and directly; monotonic clock at 0, and no
    // time passes between two reads around some work.
    assert_eq!(parts[0], "w0-0-0-0", "{name}");
    assert_eq!(parts[1], "m0-e0", "{name}");
    // Both random sources draw from the documented sequence from its start, in every
    // instance (wasmtime-wasi makes each random byte from one u32 of it, keeping the low
    // byte; a u64 is two u32s, big-endian).
    let seq = random_bytes();
    let bytes: Vec<u8> = (0..8).map(|i| seq[i * 4 + 3]).collect();
    assert_eq!(parts[2], format!("r{}", hex(&bytes)), "{name}");
    assert_eq!(
        parts[3],
        format!("i{:016x}", u64::from_be_bytes(seq[..8].try_into().unwrap())),
        "{name}"
    );
    assert_eq!(
        parts[4],
        format!(
            "s{:016x}-{:016x}",
            INSECURE_SEED as u64,
            (INSECURE_SEED >> 64) as u64
        ),
        "{name}"
    );
    assert!(parts[5].starts_with('h'), "{name}");
    // No environment, arguments, working directory or preopened directories; TCP, UDP and
    // name lookups refused.
    assert_eq!(parts[6], "v0-a0-c0-d0", "{name}");
    assert_eq!(parts[7], "t1-u1-l1", "{name}");

    // Same input, same answer, whatever instance answers (std's HashMap keys included).
    for _ in 0..3 {
        assert_eq!(
            p.secret_name(&naming(PROBE), &cr(), "apps").await.unwrap(),
            name
        );
    }
    assert_eq!(
        p.secret_name_checked(&naming(PROBE), &cr(), "apps")
            .await
            .unwrap(),
        name
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_naming_answer_that_changes_between_identical_calls_is_rejected() {
    // Only a host with the real clocks and random can run a plugin that changes its mind.
    let host = PluginHost::new(HostConfig {
        pooling: false,
        deterministic: false,
        ..HostConfig::default()
    })
    .unwrap();
    let p = policies(host, &[(PROBE, LimitsOverride::default())]);
    let a = p.secret_name(&naming(PROBE), &cr(), "apps").await.unwrap();
    let b = p.secret_name(&naming(PROBE), &cr(), "apps").await.unwrap();
    assert_ne!(a, b, "the real clock and random differ between calls");
    let err = p
        .secret_name_checked(&naming(PROBE), &cr(), "apps")
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            PolicyError::Guardrail {
                hook: Hook::Naming,
                violation: Violation::Unstable { .. },
                ..
            }
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("\"clock-random-probe\"") && msg.contains("different answers"),
        "{msg}"
    );
    assert_eq!(err.reason(), "PluginAnswerRejected");

    // A deterministic plugin passes the same check in the same host.
    let host = PluginHost::new(HostConfig {
        pooling: false,
        deterministic: false,
        ..HostConfig::default()
    })
    .unwrap();
    let p = policies(host, &[("naming-prefix", LimitsOverride::default())]);
    assert_eq!(
        p.secret_name_checked(&naming("naming-prefix"), &cr(), "apps")
            .await
            .unwrap(),
        "team-a-123456789012-us-east-1"
    );
}

/// A component exporting `settings` whose core module has two linear memories
/// (one page each). `validate-settings(s)` grows each memory by `len(s)` pages
/// and traps if a growth is refused. No Rust guest can have two memories, so the
/// module is written with wasm-encoder and wrapped by wit-component.
fn two_memory_component() -> Vec<u8> {
    use wasm_encoder::{BlockType, CustomSection};
    use wasm_encoder::{
        CodeSection, ConstExpr, ExportKind, ExportSection, Function, FunctionSection,
        GlobalSection, GlobalType, MemArg, MemorySection, MemoryType, Module, TypeSection, ValType,
    };
    let mut m = Module::new();
    let mut types = TypeSection::new();
    types.ty().function([ValType::I32; 4], [ValType::I32]); // cabi_realloc
    types.ty().function([ValType::I32; 2], [ValType::I32]); // validate-settings
    m.section(&types);
    let mut funcs = FunctionSection::new();
    funcs.function(0);
    funcs.function(1);
    m.section(&funcs);
    let mut mems = MemorySection::new();
    for _ in 0..2 {
        mems.memory(MemoryType {
            minimum: 1,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
    }
    m.section(&mems);
    let mut globals = GlobalSection::new();
    globals.global(
        GlobalType {
            val_type: ValType::I32,
            mutable: true,
            shared: false,
        },
        &ConstExpr::i32_const(1024),
    );
    m.section(&globals);
    let mut exports = ExportSection::new();
    exports.export("memory", ExportKind::Memory, 0);
    exports.export("cabi_realloc", ExportKind::Func, 0);
    exports.export(
        "ecr-token-refresh:policy/settings@0.1.0#validate-settings",
        ExportKind::Func,
        1,
    );
    m.section(&exports);
    let mut code = CodeSection::new();
    // cabi_realloc(old, old_size, align, size): a bump allocator in memory 0, aligned to 8.
    let mut realloc = Function::new([(1, ValType::I32)]);
    realloc
        .instructions()
        .global_get(0)
        .i32_const(7)
        .i32_add()
        .i32_const(-8)
        .i32_and()
        .local_tee(4)
        .local_get(3)
        .i32_add()
        .global_set(0)
        .local_get(4)
        .end();
    code.function(&realloc);
    // validate-settings(ptr, len): grow both memories by `len` pages; ok = a zero byte at 16.
    let mut validate = Function::new([]);
    let mut body = validate.instructions();
    for memory in 0..2 {
        body.local_get(1)
            .memory_grow(memory)
            .i32_const(-1)
            .i32_eq()
            .if_(BlockType::Empty)
            .unreachable()
            .end();
    }
    body.i32_const(16)
        .i32_const(0)
        .i32_store8(MemArg {
            offset: 0,
            align: 0,
            memory_index: 0,
        })
        .i32_const(16)
        .end();
    code.function(&validate);
    m.section(&code);
    m.section(&CustomSection {
        name: Cow::Borrowed("note"),
        data: Cow::Borrowed(b"two memories"),
    });
    let mut module = m.finish();

    let mut resolve = wit_parser::Resolve::default();
    resolve
        .push_dir(plugins::repo_root().join("wit"))
        .expect("parse wit/");
    let pkg = resolve
        .push_str(
            "two-memories.wit",
            "package test:two-memories;\nworld settings-only { export ecr-token-refresh:policy/settings@0.1.0; }\n",
        )
        .expect("parse the test world");
    let world = resolve
        .select_world(&[pkg], Some("settings-only"))
        .expect("world");
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .expect("embed component metadata");
    wit_component::ComponentEncoder::default()
        .module(&module)
        .expect("module")
        .validate(true)
        .encode()
        .expect("encode component")
}

#[test]
fn memory_limit_bounds_all_memories_of_an_instance_together() {
    let bytes = two_memory_component();
    let sha = hex(&sha2::Sha256::digest(&bytes));
    let host = PluginHost::new(HostConfig::default()).unwrap();
    // 4 MiB = 64 pages for the instance: 2 initial pages, then `n` more in each memory.
    let limits = Limits {
        memory_bytes: 4 << 20,
        ..Limits::default()
    };
    let settings = |n: usize| "x".repeat(n);
    // 2 + 2 * 31 = 64 pages: exactly the limit.
    let plugin = host
        .load_bytes("two-memories", &bytes, &sha, settings(31), limits)
        .expect("64 pages in all fit");
    assert!(plugin.hooks().is_empty());
    // 2 + 2 * 32 = 66 pages: over, though each memory (33 pages, 2.1 MiB) is far below
    // 4 MiB on its own; the second growth is refused and the module traps.
    let err = host
        .load_bytes("two-memories", &bytes, &sha, settings(32), limits)
        .unwrap_err();
    assert!(
        matches!(&err, LoadError::SettingsCheckFailed(m) if m.contains("exceeded its memory limit (4194304 bytes)")),
        "{err}"
    );
    // Without pooling too (the limiter, not the pool's slot size, is what bounds it).
    let on_demand = PluginHost::new(HostConfig {
        pooling: false,
        ..HostConfig::default()
    })
    .unwrap();
    assert!(
        on_demand
            .load_bytes("two-memories", &bytes, &sha, settings(31), limits)
            .is_ok()
    );
    let err = on_demand
        .load_bytes("two-memories", &bytes, &sha, settings(32), limits)
        .unwrap_err();
    assert!(
        matches!(&err, LoadError::SettingsCheckFailed(m) if m.contains("memory limit")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_saturating_its_share_of_the_pool_fails_only_its_own_calls() {
    // A pool of 4 instances, 2 per plugin. loop-forever holds its 2 until the deadline.
    let host = PluginHost::new(HostConfig {
        max_instances: 4,
        max_instances_per_plugin: 2,
        ..HostConfig::default()
    })
    .unwrap();
    let slow = LimitsOverride {
        fuel: Some(u64::MAX / 2),
        timeout_ms: Some(4_000),
        ..Default::default()
    };
    let p = Arc::new(policies(
        host,
        &[
            ("loop-forever", slow),
            ("naming-prefix", LimitsOverride::default()),
        ],
    ));
    let looping = p.plugin("loop-forever").unwrap().clone();
    let slow_calls: Vec<_> = (0..3)
        .map(|_| {
            let p = Arc::clone(&p);
            tokio::spawn(async move { p.secret_name(&naming("loop-forever"), &cr(), "apps").await })
        })
        .collect();
    eventually(
        Duration::from_secs(10),
        "loop-forever to fill its share",
        || looping.calls_in_flight() == 2,
    )
    .await;

    // The rest of the pool still serves naming-prefix, many calls at once, while
    // loop-forever's calls run (the third waits for its own share, not for the pool).
    let started = Instant::now();
    let good: Vec<_> = (0..16)
        .map(|_| {
            let p = Arc::clone(&p);
            tokio::spawn(
                async move { p.secret_name(&naming("naming-prefix"), &cr(), "apps").await },
            )
        })
        .collect();
    for g in good {
        assert_eq!(g.await.unwrap().unwrap(), "team-a-123456789012-us-east-1");
    }
    assert!(
        slow_calls.iter().all(|c| !c.is_finished()) && looping.calls_in_flight() == 2,
        "the good calls finished after {:?}, while loop-forever still held its share",
        started.elapsed()
    );

    // loop-forever's own calls fail, each at its deadline.
    for c in slow_calls {
        let err = c.await.unwrap().unwrap_err();
        assert!(matches!(err, PolicyError::Timeout { .. }), "{err}");
        assert_eq!(err.plugin(), "loop-forever");
    }
    assert_eq!(looping.calls_in_flight(), 0);
}

#[test]
fn a_component_over_the_size_limit_is_refused_before_compiling() {
    let path = plugins::wasm("naming-prefix");
    let size = std::fs::metadata(&path).unwrap().len();
    let host = PluginHost::new(HostConfig {
        pooling: false,
        max_component_bytes: size - 1,
        ..HostConfig::default()
    })
    .unwrap();
    let sha = plugins::sha256_of(&path);
    let err = host
        .load_file("naming-prefix", &path, &sha, "{}".into(), Limits::default())
        .unwrap_err();
    assert_eq!(
        err,
        LoadError::TooLarge {
            bytes: size,
            limit: size - 1
        }
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&size.to_string())
            && msg.contains(&(size - 1).to_string())
            && msg.contains("max_component_bytes"),
        "{msg}"
    );
    let bytes = std::fs::read(&path).unwrap();
    assert!(matches!(
        host.load_bytes(
            "naming-prefix",
            &bytes,
            &sha,
            "{}".into(),
            Limits::default()
        ),
        Err(LoadError::TooLarge { .. })
    ));
    assert_eq!(host.compile_stats(), CompileStats::default());
    // At the limit it loads.
    let host = PluginHost::new(HostConfig {
        pooling: false,
        max_component_bytes: size,
        ..HostConfig::default()
    })
    .unwrap();
    host.load_file(
        "naming-prefix",
        &path,
        &sha,
        r#"{"prefix":"a"}"#.into(),
        Limits::default(),
    )
    .unwrap();
    // The default is 32 MiB.
    assert_eq!(HostConfig::default().max_component_bytes, 32 << 20);
}

#[test]
fn compiled_components_are_cached_across_restarts_and_bad_entries_are_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache"); // created by the host
    let host_with_cache = || {
        PluginHost::new(HostConfig {
            pooling: false,
            cache_directory: Some(cache.clone()),
            ..HostConfig::default()
        })
        .unwrap()
    };
    let path = plugins::wasm("naming-prefix");
    let sha = plugins::sha256_of(&path);
    let load_and_call = |host: &PluginHost| {
        let plugin = host
            .load_file(
                "naming-prefix",
                &path,
                &sha,
                r#"{"prefix":"team-a"}"#.into(),
                Limits::default(),
            )
            .unwrap();
        assert_eq!(
            plugin.session().secret_name(&cr(), "apps").unwrap(),
            "team-a-123456789012-us-east-1"
        );
    };

    // First start: compiled and written.
    let first = host_with_cache();
    load_and_call(&first);
    assert_eq!(
        first.compile_stats(),
        CompileStats {
            compiled: 1,
            loaded_from_cache: 0
        }
    );
    let entry = first.cache_entry(&sha).unwrap();
    assert!(
        entry.starts_with(&cache)
            && entry
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&sha)
    );
    let written = std::fs::read(&entry).unwrap();
    assert!(written.len() > 1000);

    // Restart: loaded, not compiled.
    let second = host_with_cache();
    load_and_call(&second);
    assert_eq!(
        second.compile_stats(),
        CompileStats {
            compiled: 0,
            loaded_from_cache: 1
        }
    );

    // A damaged entry (one byte flipped) is not run: compiled again, and rewritten.
    let mut damaged = written.clone();
    let mid = damaged.len() / 2;
    damaged[mid] ^= 0xff;
    std::fs::write(&entry, &damaged).unwrap();
    let third = host_with_cache();
    load_and_call(&third);
    assert_eq!(
        third.compile_stats(),
        CompileStats {
            compiled: 1,
            loaded_from_cache: 0
        }
    );
    assert_ne!(std::fs::read(&entry).unwrap(), damaged);

    // A torn entry (half a file) likewise; the rewritten one serves the next start.
    std::fs::write(&entry, &written[..written.len() / 2]).unwrap();
    let fourth = host_with_cache();
    load_and_call(&fourth);
    assert_eq!(
        fourth.compile_stats(),
        CompileStats {
            compiled: 1,
            loaded_from_cache: 0
        }
    );
    let fifth = host_with_cache();
    load_and_call(&fifth);
    assert_eq!(
        fifth.compile_stats(),
        CompileStats {
            compiled: 0,
            loaded_from_cache: 1
        }
    );

    // Only finished entries in the directory: no temporary files left behind.
    let names: Vec<String> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| n.ends_with(".cwasm") && !n.starts_with('.')),
        "{names:?}"
    );
}

#[test]
fn without_a_cache_directory_nothing_is_written() {
    let host = PluginHost::new(HostConfig {
        pooling: false,
        ..HostConfig::default()
    })
    .unwrap();
    assert!(host.cache_entry(&"0".repeat(64)).is_none());
}
