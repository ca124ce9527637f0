#!/usr/bin/env bash
# Runs the real operator on the original sample against stand-ins: a small ECR endpoint
# (scripts/ecr-demo-server.py: GetAuthorizationToken with realistic tokens, a fresh password
# per call expiring 12 hours later, as ECR answers) and kube-standin for the Kubernetes API.
# Prints the resulting Secret and status, then stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v kubectl >/dev/null || { echo "make demo needs kubectl on PATH" >&2; exit 1; }
cargo build --quiet --bin ecr-token-refresh && cargo build --quiet -p kube-standin --bin kube-standin

bin="${CARGO_TARGET_DIR:-target}/debug"
work=$(mktemp -d)
pids=()
cleanup() {
  status=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$status" -ne 0 ]; then
    for log in "$work"/*.log; do echo "== $log"; tail -n 30 "$log"; done >&2
  fi
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 scripts/ecr-demo-server.py "$port" >"$work/ecr.log" 2>&1 &
pids+=($!)

"$bin/kube-standin" --kubeconfig "$work/kubeconfig" \
  --apply config/crd/ecr.aws.edenlab.io_ecrtokenrefreshes.yaml >"$work/standin.log" 2>&1 &
pids+=($!)

wait_for() { # seconds, description, command...
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then echo "timed out waiting for $what" >&2; exit 1; fi
    sleep 0.2
  done
}
wait_for 30 "the ECR stand-in" python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)"
wait_for 30 "kube-standin" grep -q listening "$work/standin.log"

export KUBECONFIG="$work/kubeconfig"
echo "== kubectl apply -f config/samples/ecr_v1alpha1_ecrtokenrefresh.yaml"
# The stand-in serves no OpenAPI document, so kubectl's client-side validation is off.
kubectl apply --validate=false -f config/samples/ecr_v1alpha1_ecrtokenrefresh.yaml

echo "== ecr-token-refresh run   (AWS_ENDPOINT_URL_ECR=http://127.0.0.1:$port, scripts/ecr-demo-server.py)"
start=$(date +%s.%N)
AWS_ENDPOINT_URL_ECR="http://127.0.0.1:$port" AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
  AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true \
  ECR_TOKEN_REFRESH_SERVER__LISTEN=127.0.0.1:0 "$bin/ecr-token-refresh" run >"$work/operator.log" 2>&1 &
operator=$!
pids+=($operator)

wait_for 30 "the Secret" kubectl get secret ecr-credentials
ready() { [ "$(kubectl get ecrtokenrefreshes ecr-credentials -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]; }
wait_for 30 "Ready=True" ready
echo "Secret written $(python3 -c "print(f'{$(date +%s.%N) - $start:.2f}')") s after start"

echo; echo "== kubectl get ecrtokenrefreshes"
kubectl get ecrtokenrefreshes -o custom-columns='NAME:.metadata.name,READY:.status.conditions[?(@.type=="Ready")].status,REASON:.status.conditions[?(@.type=="Ready")].reason,REGISTRY:.spec.ecrRegistry,EXPIRES:.status.expiresAt,LAST REFRESH:.status.lastUpdatedTime'
echo; echo "== kubectl get secret ecr-credentials -o yaml"
kubectl get secret ecr-credentials -o yaml
echo "== .dockerconfigjson, decoded (the password shortened here; it is the stand-in's fresh token)"
kubectl get secret ecr-credentials -o jsonpath='{.data.\.dockerconfigjson}' | base64 -d |
  python3 -c 'import json,sys; d=json.load(sys.stdin)
for e in d["auths"].values(): e["password"]=e["password"][:12]+"…"; e["auth"]=e["auth"][:12]+"…"
print(json.dumps(d, indent=2))'
echo; echo "== kubectl get ecrtokenrefreshes ecr-credentials -o jsonpath={.status}"
kubectl get ecrtokenrefreshes ecr-credentials -o jsonpath='{.status}' | python3 -m json.tool
echo; echo "== operator log"
cat "$work/operator.log"

kill -TERM "$operator"
wait "$operator" && echo "== operator stopped cleanly on SIGTERM"
