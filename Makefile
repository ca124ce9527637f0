.PHONY: demo test lint crd plugins plugins-js bench

# Run the operator on the sample against the stand-ins (no cluster, no AWS account).
demo:
	scripts/demo.sh

# Everything CI runs: install test prerequisites, then the whole test suite.
test:
	scripts/setup-test-env.sh
	cargo test --workspace

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

# Regenerate the committed CRD from the Rust types.
crd:
	cargo run --quiet -- crd > config/crd/ecr.aws.edenlab.io_ecrtokenrefreshes.yaml

# Build the example and test policy plugins (wasm32-wasip2 components).
plugins:
	cargo build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml

# Build the JavaScript example plugins into plugins/js/dist (componentize-qjs as pinned in
# plugins/js/package-lock.json; needs Node.js >= 18 and npm).
plugins-js:
	cd plugins/js && npm ci --no-audit --no-fund && ./build.sh

# Benchmarks (not run by CI): plugin hooks, fan-out, hardening and the shared token cache
# against the stand-ins.
bench:
	cargo bench --bench policy
	cargo bench --bench policy_js
	cargo bench --bench fanout
	cargo bench --bench hardening
	cargo bench --bench shared_tokens
