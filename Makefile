.PHONY: demo test lint crd plugins bench

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
