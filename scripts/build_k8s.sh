#!/usr/bin/env bash
# Build the test control plane (etcd, kube-apiserver) from the Go modules pinned in tools/k8s/go.mod.
#
#   scripts/build_k8s.sh                 build what is missing or stale into $K8S_BIN (default .tools/k8s)
#   scripts/build_k8s.sh check           exit 0 when every component is built and current, 1 otherwise
#   scripts/build_k8s.sh pin K8S [ETCD]  re-pin: k8s.io/kubernetes@K8S with every k8s.io/* staging module
#                                        replaced by the same release (v1.X.Y -> v0.X.Y), then go mod tidy
#   K8S_COMPONENTS="etcd kube-apiserver kube-controller-manager kube-scheduler kwok" scripts/build_k8s.sh
#
# etcd and the Kubernetes commands share one module graph (tools/k8s/go.mod, go.sum); kwok is its own module
# (it pins older k8s.io/* releases and has no replace lines), installed at KWOK_VERSION and checked by go.sum's
# checksum database like any other module.
#
# Go's module and build caches (GOMODCACHE, GOCACHE) are reused across runs: a warm rebuild only links.
# The binaries are stamped with the go.mod/go.sum hash, so a re-pin rebuilds them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MOD="$ROOT/tools/k8s"
BIN="${K8S_BIN:-$ROOT/.tools/k8s}"
COMPONENTS="${K8S_COMPONENTS:-etcd kube-apiserver}"
# The machine is shared: one package at a time, at low priority, unless the caller says otherwise.
NICE="${K8S_NICE:-10}"
PARALLEL="${K8S_BUILD_P:-1}"
KWOK_VERSION=v0.8.0

command -v go >/dev/null || { echo "build_k8s: go is not installed" >&2; exit 127; }

pin() {
    local k8s="$1" etcd="${2:-}"
    local staging="v0.${k8s#v1.}"
    local kmod
    kmod="$(cd "$MOD" && go mod download -json "k8s.io/kubernetes@$k8s" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
    {
        echo "module hybridml.dev/tools/k8s"
        echo
        grep -m1 '^go ' "$kmod"
        grep -m1 '^godebug ' "$kmod" || true
        echo
        echo "require k8s.io/kubernetes $k8s"
        [ -n "$etcd" ] && echo "require go.etcd.io/etcd/server/v3 $etcd"
        echo
        echo "tool k8s.io/kubernetes/cmd/kube-apiserver"
        echo "tool k8s.io/kubernetes/cmd/kube-controller-manager"
        echo "tool k8s.io/kubernetes/cmd/kube-scheduler"
        echo
        echo "// k8s.io/kubernetes points its staging modules at ./staging; pin each at the same release instead."
        echo "replace ("
        # Only staging modules published for this release (a few samples are not on the proxy).
        sed -n 's#^\t\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\1#p' "$kmod" | while read -r m; do
            if (cd "$MOD" && go mod download "$m@$staging" 2>/dev/null); then
                printf '\t%s => %s %s\n' "$m" "$m" "$staging"
            fi
        done
        echo ")"
    } >"$MOD/go.mod.new"
    mv "$MOD/go.mod.new" "$MOD/go.mod"
    (cd "$MOD" && go mod tidy)
}

if [ "${1:-}" = "pin" ]; then
    shift
    pin "$@"
    exit 0
fi

# -trimpath and no VCS stamping keep the output independent of where the checkout lives.
flags=(-trimpath -buildvcs=false -ldflags=-s)
# What a binary is built from: the pins, etcd's main, kwok's version and the flags (not -p, not this file).
stamp="$( (cat "$MOD/go.mod" "$MOD/go.sum" "$MOD"/etcd/*.go && echo "$KWOK_VERSION ${flags[*]}") | sha256sum | cut -c1-16)"
current() { [ -x "$BIN/$1" ] && [ "$(cat "$BIN/$1.stamp" 2>/dev/null)" = "$stamp" ]; }

if [ "${1:-}" = "check" ]; then
    for c in $COMPONENTS; do current "$c" || exit 1; done
    exit 0
fi

mkdir -p "$BIN"
cd "$MOD"
for c in $COMPONENTS; do
    if current "$c"; then
        echo "build_k8s: $c up to date"
        continue
    fi
    start=$(date +%s)
    case "$c" in
        etcd) nice -n "$NICE" go build -p "$PARALLEL" "${flags[@]}" -o "$BIN/$c.tmp" ./etcd ;;
        kwok)
            rm -rf "$BIN/.kwok"
            GOBIN="$BIN/.kwok" nice -n "$NICE" go install -p "$PARALLEL" "${flags[@]}" \
                "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
            mv "$BIN/.kwok/kwok" "$BIN/$c.tmp" && rm -rf "$BIN/.kwok"
            # kwok does nothing without stages: its own "fast" ones (node ready + heartbeat, pod ready,
            # complete, delete), from the same module version.
            dir="$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
            for f in node/fast/node-initialize node/heartbeat/node-heartbeat pod/fast/pod-ready \
                pod/fast/pod-complete pod/fast/pod-delete; do
                echo "---"
                cat "$dir/kustomize/stage/$f.yaml"
            done >"$BIN/kwok-stages.yaml"
            ;;
        *) nice -n "$NICE" go build -p "$PARALLEL" "${flags[@]}" -o "$BIN/$c.tmp" "k8s.io/kubernetes/cmd/$c" ;;
    esac
    mv "$BIN/$c.tmp" "$BIN/$c"
    echo "$stamp" >"$BIN/$c.stamp"
    echo "build_k8s: $c built in $(($(date +%s) - start))s"
done
