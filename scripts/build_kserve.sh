#!/usr/bin/env bash
# Build KServe's controller (github.com/kserve/kserve/cmd/manager) from the version pinned in tools/kserve/go.mod.
#
#   scripts/build_kserve.sh          build .tools/k8s/kserve-manager (default $K8S_BIN) if missing or stale
#   scripts/build_kserve.sh check    exit 0 when it is built and current, 1 otherwise
#
# Beside the binary, kserve-crds/ gets the CRDs the manager watches that ../shared/crds/ lacks (TrainedModel,
# ClusterStorageContainer), from the same module version: without them it cannot resolve a storageUri.
#
# KServe is its own module graph (it pins controller-runtime v0.22 and k8s.io/* v0.34, not the control plane's
# release), so it cannot share tools/k8s/go.mod. Go's module and build caches (GOMODCACHE, GOCACHE) are reused.
# The binary is stamped with the go.mod/go.sum hash and the flags, so a re-pin rebuilds it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MOD="$ROOT/tools/kserve"
BIN="${K8S_BIN:-$ROOT/.tools/k8s}"
# The machine is shared: one package at a time, at low priority, unless the caller says otherwise.
NICE="${K8S_NICE:-10}"
PARALLEL="${K8S_BUILD_P:-1}"
OUT="$BIN/kserve-manager"

command -v go >/dev/null || { echo "build_kserve: go is not installed" >&2; exit 127; }

flags=(-trimpath -buildvcs=false -ldflags=-s)
stamp="$( (cat "$MOD/go.mod" "$MOD/go.sum" && echo "${flags[*]}") | sha256sum | cut -c1-16)"
CRDS=(serving.kserve.io_trainedmodels.yaml clusterstoragecontainer/serving.kserve.io_clusterstoragecontainers.yaml)
current() {
    [ -x "$OUT" ] && [ "$(cat "$OUT.stamp" 2>/dev/null)" = "$stamp" ] || return 1
    for crd in "${CRDS[@]}"; do [ -f "$BIN/kserve-crds/$(basename "$crd")" ] || return 1; done
}

if [ "${1:-}" = "check" ]; then
    current
    exit
fi

if current; then
    echo "build_kserve: kserve-manager up to date"
    exit 0
fi
mkdir -p "$BIN"
cd "$MOD"
start=$(date +%s)
# -mod=mod: go.sum may gain the checksums of modules only the build (not tidy) lists; go.mod is not rewritten.
GOFLAGS="${GOFLAGS:-} -mod=mod" nice -n "$NICE" go build -p "$PARALLEL" "${flags[@]}" -o "$OUT.tmp" \
    github.com/kserve/kserve/cmd/manager
dir="$(GOFLAGS="${GOFLAGS:-} -mod=mod" go list -m -f '{{.Dir}}' github.com/kserve/kserve)"
rm -rf "$BIN/kserve-crds" && mkdir -p "$BIN/kserve-crds"
for crd in "${CRDS[@]}"; do cp "$dir/config/crd/full/$crd" "$BIN/kserve-crds/"; done
mv "$OUT.tmp" "$OUT"
echo "$stamp" >"$OUT.stamp"
echo "build_kserve: kserve-manager built in $(($(date +%s) - start))s"
