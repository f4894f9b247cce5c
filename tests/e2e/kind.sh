#!/usr/bin/env bash
# End to end on a real cluster, in one script: a kind cluster (tests/e2e/kind-config.yaml), cert-manager, KServe
# (Standard/RawDeployment mode) and Kubeflow Pipelines (standalone, single-user), both images built and loaded,
# the kind overlay applied (kubectl apply -k manifests/overlays/kind), the committed pipeline run with
# `hybridml submit`, then the endpoint called with KServe's V1 protocol.
#
# Needs Docker, kind (v0.27+), kubectl and the project's .venv (make setup) on the machine that runs it.
#   bash tests/e2e/kind.sh                 # everything; the cluster is deleted at the end
#   KEEP=1 bash tests/e2e/kind.sh          # keep the cluster afterwards (kind delete cluster --name hybridml-e2e)
#   STORAGE_URI_PREFIX=s3://bucket/models  # where the kserve target publishes bundles for the predictor (the run's
#                                          # pods and the predictor's service account need credentials for it);
#                                          # unset: the run trains and registers only (auto_approve=false) and
#                                          # no endpoint is called, and the script says so.
set -euo pipefail
cd "$(dirname "$0")/../.."

CLUSTER=${CLUSTER:-hybridml-e2e}
CONFIG=tests/e2e/kind-config.yaml
# Pinned versions (override to test others).
CERT_MANAGER_VERSION=${CERT_MANAGER_VERSION:-v1.16.2}
KSERVE_VERSION=${KSERVE_VERSION:-v0.15.2}
KFP_VERSION=${KFP_VERSION:-2.5.0}
PIPELINE_IMAGE=${PIPELINE_IMAGE:-ghcr.io/hybridml/hybridml:0.1.0}  # the image the compiled pipeline names
PREDICTOR_IMAGE=${PREDICTOR_IMAGE:-localhost/hybridml/predictor:dev}  # the kind overlay's predictor image
NAMESPACE=hybridml
KFP_PORT=${KFP_PORT:-18888}
MODEL=${MODEL:-hybridml-e2e}
HYBRIDML=.venv/bin/hybridml

for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null || { echo "kind.sh: missing $tool" >&2; exit 2; }
done
[ -x "$HYBRIDML" ] || { echo "kind.sh: missing $HYBRIDML (make setup)" >&2; exit 2; }
docker info >/dev/null 2>&1 || { echo "kind.sh: the Docker engine is not running" >&2; exit 2; }

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -n "${KEEP:-}" ] || kind delete cluster --name "$CLUSTER"
}
trap cleanup EXIT
step() { printf '\n== %s\n' "$*"; }

step "cluster $CLUSTER"
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --config "$CONFIG" --wait 180s
kubectl config use-context "kind-$CLUSTER" >/dev/null

step "images: build with Docker from the repository's Containerfiles, load into kind"
docker build -t "$PIPELINE_IMAGE" -f Dockerfile .
docker build -t "$PREDICTOR_IMAGE" -f serving/Dockerfile .
kind load docker-image "$PIPELINE_IMAGE" "$PREDICTOR_IMAGE" --name "$CLUSTER"

step "cert-manager $CERT_MANAGER_VERSION"
kubectl apply -f "https://github.com/cert-manager/cert-manager/releases/download/$CERT_MANAGER_VERSION/cert-manager.yaml"
kubectl -n cert-manager wait --for=condition=Available --timeout=300s deployment --all

step "KServe $KSERVE_VERSION (RawDeployment, no ingress: the script port-forwards the predictor Service)"
kubectl apply --server-side -f "https://github.com/kserve/kserve/releases/download/$KSERVE_VERSION/kserve.yaml"
kubectl -n kserve wait --for=condition=Available --timeout=300s deployment/kserve-controller-manager
kubectl apply --server-side -f \
  "https://github.com/kserve/kserve/releases/download/$KSERVE_VERSION/kserve-cluster-resources.yaml"
kubectl -n kserve get configmap inferenceservice-config -o json | .venv/bin/python -c '
import json, sys
cm = json.load(sys.stdin)
cm["data"]["deploy"] = json.dumps({"defaultDeploymentMode": "RawDeployment"})
ingress = json.loads(cm["data"]["ingress"])
ingress["disableIngressCreation"] = True
cm["data"]["ingress"] = json.dumps(ingress)
for key in ("resourceVersion", "uid", "creationTimestamp", "managedFields"):
    cm["metadata"].pop(key, None)
json.dump(cm, sys.stdout)
' | kubectl apply -f -
kubectl -n kserve rollout restart deployment/kserve-controller-manager
kubectl -n kserve rollout status --timeout=300s deployment/kserve-controller-manager

step "Kubeflow Pipelines $KFP_VERSION (standalone)"
kubectl apply -k "github.com/kubeflow/pipelines/manifests/kustomize/cluster-scoped-resources?ref=$KFP_VERSION"
kubectl wait --for condition=established --timeout=120s crd/applications.app.k8s.io
kubectl apply -k "github.com/kubeflow/pipelines/manifests/kustomize/env/platform-agnostic?ref=$KFP_VERSION"
kubectl -n kubeflow wait --for=condition=Available --timeout=900s deployment/ml-pipeline

step "hybridml manifests (kind overlay)"
# The namespace carries Pod Security labels; create it first so the rest is admitted against them.
kubectl apply -k manifests/overlays/kind
# Kustomize cannot generate a password and keep it: the PostgreSQL for Optuna reads it from this Secret, and the
# HPO steps (in namespace kubeflow) read the same one as PGPASSWORD.
if ! kubectl -n "$NAMESPACE" get secret hybridml-postgresql >/dev/null 2>&1; then
  password=$(openssl rand -hex 24)
  for ns in "$NAMESPACE" kubeflow; do
    kubectl -n "$ns" create secret generic hybridml-postgresql --from-literal=password="$password"
  done
fi
kubectl -n "$NAMESPACE" wait --for=condition=Available --timeout=300s deployment/hybridml-mlflow

step "run the committed pipeline with hybridml submit"
kubectl -n kubeflow port-forward --address 127.0.0.1 svc/ml-pipeline "$KFP_PORT:8888" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 30); do curl -fsS "http://127.0.0.1:$KFP_PORT/apis/v2beta1/healthz" >/dev/null 2>&1 && break; sleep 2; done
params=(--param "model_name=$MODEL" --param n_trials=5 --param ready_timeout_s=600)
if [ -n "${STORAGE_URI_PREFIX:-}" ]; then
  params+=(--param "deploy_config={\"target\": \"kserve\", \"namespace\": \"$NAMESPACE\", \"storage_uri_prefix\": \"$STORAGE_URI_PREFIX\"}")
else
  echo "STORAGE_URI_PREFIX is not set: the run trains and registers only (auto_approve=false); no endpoint is called"
  params+=(--param auto_approve=false)
fi
export HYBRIDML_HOME=${HYBRIDML_HOME:-$(mktemp -d)} HYBRIDML_DAEMON=0
submitted=$("$HYBRIDML" submit --host "http://127.0.0.1:$KFP_PORT" --experiment hybridml-e2e "${params[@]}" --json)
echo "$submitted"
run_id=$(printf '%s' "$submitted" | .venv/bin/python -c 'import json, sys; print(json.load(sys.stdin)["run_id"])')
.venv/bin/python - "$KFP_PORT" "$run_id" <<'PY'
import sys
import warnings

import kfp

warnings.filterwarnings("ignore", category=FutureWarning)
client = kfp.Client(host=f"http://127.0.0.1:{sys.argv[1]}")
result = client.wait_for_run_completion(sys.argv[2], timeout=3600)
print("run state:", result.state)
sys.exit(0 if result.state == "SUCCEEDED" else 1)
PY

[ -n "${STORAGE_URI_PREFIX:-}" ] || { echo "done: pipeline ran; endpoint not called (STORAGE_URI_PREFIX unset)"; exit 0; }

step "call the endpoint (KServe V1, through a port-forward of the predictor Service)"
kubectl -n "$NAMESPACE" wait --for=condition=Ready --timeout=600s "inferenceservice/$MODEL"
kubectl -n "$NAMESPACE" port-forward --address 127.0.0.1 "svc/$MODEL-predictor" 18080:80 >/dev/null 2>&1 &
pids+=($!)
sleep 3
.venv/bin/python - "$MODEL" <<'PY'
import json
import sys
import urllib.request

from sklearn.datasets import load_breast_cancer

model = sys.argv[1]
rows = load_breast_cancer(as_frame=True).frame.drop(columns=["target"]).head(3)
body = json.dumps({"instances": rows.to_dict(orient="records")}).encode()
request = urllib.request.Request(
    f"http://127.0.0.1:18080/v1/models/{model}:predict", body, {"Content-Type": "application/json"}
)
with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback port-forward
    answer = json.load(response)
print("predictions:", answer)
assert len(answer["predictions"]) == 3, answer
PY
echo "done: pipeline ran and the endpoint answered"
