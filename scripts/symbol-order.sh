#!/usr/bin/env bash
# Regenerates link/symbol-order.txt (or the file named by the first argument): the functions
# the operator executes, which build.rs has the linker (rust-lld) place first and together in
# release builds for x86_64-unknown-linux-gnu, so the code the operator runs fills as few
# pages as it can.
#
# Run it after a toolchain or dependency update (Cargo.lock): mangled names carry the
# crates' hashes, and names the linker no longer finds are skipped, so a stale list makes
# the binary less compact, never wrong.
#
# Needs valgrind, strace, python3, the .venv with moto (scripts/setup-test-env.sh) and the
# wasm32-wasip2 target. About 45 minutes on 2 cores: two release builds with fat LTO.
#
# Two builds are profiled because their mangled names differ: `cargo build --release` (the
# image's build) and `cargo bench` (there dependencies' features are unified with the
# dev-dependencies', which changes the crate hashes in the names). The list is the union;
# each build's linker skips the other's names.
#
# How: each build runs the fan-out benchmark at 100 namespaces under callgrind (start-up,
# plugin load from the compile cache, a fan-out, watch events, a no-op resync, /metrics
# scrapes, SIGTERM), and every function of the operator's executable callgrind saw goes in
# the list. The plugin is compiled beforehand, under valgrind too (`compile-plugin`), into
# the compile cache: wasmtime keys a compiled artifact by the CPU features it detects, which
# differ under valgrind, and valgrind cannot run the operator's compile child
# (/proc/self/exe). The pooling allocator cannot reserve its address space under valgrind
# either (the operator falls back to on-demand allocation there), so its functions are added
# by name.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$ROOT/target/release/ecr-token-refresh
ORDER=${1:-$ROOT/link/symbol-order.txt}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

for tool in valgrind strace python3; do
  command -v "$tool" >/dev/null || { echo "symbol-order.sh needs $tool" >&2; exit 1; }
done

CARGO_TARGET_DIR=plugins/target cargo build --release --locked --target wasm32-wasip2 \
  --manifest-path plugins/Cargo.toml -p fanout-label
WASM=$ROOT/plugins/target/wasm32-wasip2/release/fanout_label.wasm
SHA=$(sha256sum "$WASM" | cut -d' ' -f1)

cat > "$WORK/kubeconfig" <<'EOF'
apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "http://127.0.0.1:1"}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
users: [{name: none, user: {}}]
EOF

# profile NAME: profiles the executable at $BIN and appends its executed functions to
# $WORK/names.
profile() {
  local name=$1 exe=$WORK/$1 cache=$WORK/cache-$1
  cp "$BIN" "$exe"
  mkdir -p "$cache"
  # 1. The file name under which the operator, under valgrind, looks for the compiled
  #    plugin: start it against an unreachable API server (it looks the plugin up at
  #    start-up, then stops) and see what it opens.
  printf 'server:\n  listen: 127.0.0.1:0\npolicy:\n  cache_directory: %s\n  plugins:\n    labelled:\n      path: %s\n      sha256: %s\n      settings: {label: ecr-pull, value: enabled}\n' \
    "$cache" "$WASM" "$SHA" > "$WORK/probe.yaml"
  KUBECONFIG=$WORK/kubeconfig AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true \
    strace -f -qq -e trace=openat -o "$WORK/strace-$name" \
    valgrind -q --tool=none "$exe" run --config "$WORK/probe.yaml" >/dev/null 2>&1 || true
  local entry
  entry=$(grep -o "$cache/[^\"]*\.cwasm" "$WORK/strace-$name" | head -1)
  [ -n "$entry" ] || { echo "the operator did not look in the compile cache" >&2; exit 1; }
  # 2. The entry: the artifact compiled under valgrind, then its SHA-256 (the cache's format).
  valgrind -q --tool=none "$exe" compile-plugin --max-bytes 268435456 < "$WASM" > "$WORK/artifact"
  python3 -c 'import hashlib, sys
b = open(sys.argv[1], "rb").read()
open(sys.argv[2], "wb").write(b + hashlib.sha256(b).digest())' "$WORK/artifact" "$entry"
  # 3. The fan-out benchmark with the operator under callgrind.
  cat > "$WORK/operator-$name" <<EOF
#!/bin/sh
exec valgrind -q --tool=callgrind --callgrind-out-file=$WORK/callgrind-$name.%p \
  --dump-instr=no --compress-strings=no --demangle=no "$exe" "\$@"
EOF
  chmod +x "$WORK/operator-$name"
  FANOUT_OPERATOR=$WORK/operator-$name FANOUT_COMPILE_CACHE=$cache FANOUT_SIZES=100 \
    FANOUT_SERIAL=0 FANOUT_RUNS=1 cargo bench --locked --bench fanout
  # 4. The functions of the executable callgrind saw (the recursion suffix 'N removed), and
  #    the pooling allocator's.
  python3 - "$exe" "$WORK"/callgrind-"$name".* >> "$WORK/names" <<'EOF'
import subprocess, sys
exe, outputs = sys.argv[1], sys.argv[2:]
symbols = subprocess.run(["nm", exe], capture_output=True, text=True, check=True).stdout
text = {p[2] for p in (l.split() for l in symbols.splitlines()) if len(p) == 3 and p[1] in "tT"}
names = set()
for path in outputs:
    obj = None
    for line in open(path, errors="replace"):
        if line.startswith("ob="):
            obj = line[3:].strip()
        elif line.startswith("fn=") and obj == exe:
            names.add(line[3:].strip().split("'")[0])
mangled = subprocess.run(["nm", "-n", exe], capture_output=True, text=True, check=True).stdout.splitlines()
demangled = subprocess.run(["nm", "-n", "-C", exe], capture_output=True, text=True, check=True).stdout.splitlines()
for m, d in zip(mangled, demangled):
    m, d = m.split(None, 2), d.split(None, 2)
    if len(m) == 3 and m[1] in "tT" and "allocator::pooling" in d[2]:
        names.add(m[2])
found = sorted(names & text)
print(f"{exe}: {len(found)} functions executed", file=sys.stderr)
print("\n".join(found))
EOF
}

cargo build --release --locked --bin ecr-token-refresh
profile release
cargo bench --locked --bench fanout --no-run
profile bench
sort -u "$WORK/names" > "$ORDER"
echo "wrote $(wc -l < "$ORDER") names to $ORDER"
