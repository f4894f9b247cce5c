#!/usr/bin/env bash
# Build both images (pipeline components: Dockerfile; predictor: serving/Dockerfile) without a Docker engine.
#
#   scripts/build_images.sh              the base (if missing), then both images; prints each image's size
#   scripts/build_images.sh base         only the Debian 12 base image
#   scripts/build_images.sh sizes        print the sizes of the images already built
#   scripts/build_images.sh buildah ARGS run buildah on this script's storage (e.g. `buildah images`)
#   scripts/build_images.sh clean        remove the storage and the bootstrapped tree
#
# The base is Debian 12 bootstrapped with debootstrap (minbase + python3.11, python3-venv, ca-certificates), put
# into an empty image with `buildah from scratch` and committed as $BASE_IMAGE; both images are then built from the
# repository's Dockerfiles with `--build-arg BASE_IMAGE=$BASE_IMAGE` (Docker users keep the default, the public
# python:3.11-slim-bookworm). buildah runs with the vfs storage driver and chroot isolation (no overlay, no user
# namespaces, no daemon), with its storage, run state and temporary files under $IMAGES_DIR (default build/images),
# so nothing is left elsewhere on the machine and `clean` removes it all. Layers are cached (`--layers`): a warm
# build after a source change only re-runs the project install. Needs root (debootstrap, chroot).
#
# Settings (environment): IMAGES_DIR, DEBIAN_MIRROR (default http://deb.debian.org/debian), BASE_IMAGE,
# PIPELINE_IMAGE, PREDICTOR_IMAGE.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGES_DIR="$(mkdir -p "${IMAGES_DIR:-$ROOT/build/images}" && cd "${IMAGES_DIR:-$ROOT/build/images}" && pwd)"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
BASE_IMAGE="${BASE_IMAGE:-localhost/hybridml-base:bookworm}"
PIPELINE_IMAGE="${PIPELINE_IMAGE:-ghcr.io/hybridml/hybridml:0.1.0}"
PREDICTOR_IMAGE="${PREDICTOR_IMAGE:-ghcr.io/hybridml/predictor:0.1.0}"
ROOTFS="$IMAGES_DIR/rootfs"

# buildah's temporary files (build contexts, layer blobs) go under IMAGES_DIR too, not /var/tmp.
export TMPDIR="$IMAGES_DIR/tmp"
mkdir -p "$TMPDIR"

bah() {
    buildah --root "$IMAGES_DIR/storage" --runroot "$IMAGES_DIR/run" --storage-driver vfs "$@"
}

need() {
    local missing=()
    for tool in "$@"; do command -v "$tool" >/dev/null || missing+=("$tool"); done
    if ((${#missing[@]})); then
        echo "build_images: missing ${missing[*]} (Debian: apt-get install buildah debootstrap)" >&2
        exit 127
    fi
    [ "$(id -u)" = 0 ] || { echo "build_images: needs root (debootstrap and chroot isolation)" >&2; exit 1; }
}

has_image() { bah inspect --type image "$1" >/dev/null 2>&1; }

base() {
    if has_image "$BASE_IMAGE"; then
        echo "base: $BASE_IMAGE is already built"
        return
    fi
    echo "base: debootstrap Debian 12 (minbase + python3.11) from $MIRROR"
    rm -rf "$ROOTFS"
    debootstrap --variant=minbase --include=python3.11,python3-venv,ca-certificates \
        bookworm "$ROOTFS" "$MIRROR" >"$IMAGES_DIR/debootstrap.log" 2>&1 \
        || { tail -20 "$IMAGES_DIR/debootstrap.log" >&2; exit 1; }
    # The images' own apt-get (libgomp1, tini) sees the main suite, its updates and security fixes.
    cat >"$ROOTFS/etc/apt/sources.list" <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
    rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/log/*.log
    local ctr mnt
    ctr="$(bah from scratch)"
    mnt="$(bah mount "$ctr")"
    cp -a "$ROOTFS/." "$mnt/"
    bah umount "$ctr" >/dev/null
    bah config --env PATH=/usr/local/bin:/usr/bin:/bin --env LANG=C.UTF-8 --cmd /usr/bin/python3.11 \
        --label org.opencontainers.image.description="Debian 12 minbase with python3.11 (debootstrap)" "$ctr"
    bah commit --quiet --rm "$ctr" "$BASE_IMAGE" >/dev/null
    rm -rf "$ROOTFS"  # the image holds it now
    echo "base: committed $BASE_IMAGE"
}

# A digest of everything an image is built from: the Containerfile, the build context and the base image's id.
inputs() {
    (
        cd "$ROOT"
        sha256sum "$1" pyproject.toml uv.lock README.md
        find src -name __pycache__ -prune -o -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
        bah inspect --type image --format '{{.FromImageID}}' "$BASE_IMAGE"
    ) | sha256sum | cut -d' ' -f1
}

image() {
    local file="$1" tag="$2" log digest
    log="$IMAGES_DIR/$(basename "${tag%%:*}").log"
    digest="$(inputs "$file")"
    # Even a build whose every step is cached costs minutes on vfs (each stage copies its base): skip it when
    # the image was built from exactly these inputs.
    if has_image "$tag" && [ "$(bah inspect --type image --format \
        '{{index .OCIv1.Config.Labels "dev.hybridml.inputs"}}' "$tag")" = "$digest" ]; then
        echo "image: $tag is up to date"
        return
    fi
    echo "image: $tag from ${file#"$ROOT"/} (log: ${log#"$ROOT"/})"
    local tls=()
    # A host behind a TLS-re-signing proxy names its CA bundle in SSL_CERT_FILE: the build's RUN steps see the
    # host's bundle in place of the image's own (a mount, so no layer keeps it) and pip and uv are told to use it.
    if [ -n "${SSL_CERT_FILE:-}" ] && [ -f "$SSL_CERT_FILE" ]; then
        tls=(-v "$SSL_CERT_FILE:/etc/ssl/certs/ca-certificates.crt:ro"
            --build-arg SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt)
    fi
    bah bud --isolation chroot --layers --pull=never "${tls[@]}" \
        --build-arg "BASE_IMAGE=$BASE_IMAGE" --label "dev.hybridml.inputs=$digest" \
        -f "$file" -t "$tag" "$ROOT" >"$log" 2>&1 \
        || { tail -30 "$log" >&2; exit 1; }
}

sizes() {
    local tag
    for tag in "$BASE_IMAGE" "$PIPELINE_IMAGE" "$PREDICTOR_IMAGE"; do
        if has_image "$tag"; then
            printf '%-40s %s\n' "$tag" "$(bah images --format '{{.Size}}' "$tag" | head -1)"
        else
            printf '%-40s %s\n' "$tag" "not built"
        fi
    done
}

case "${1:-all}" in
    all)
        need buildah debootstrap
        start=$SECONDS
        base
        image "$ROOT/Dockerfile" "$PIPELINE_IMAGE"
        image "$ROOT/src/hybridml/serving/Dockerfile" "$PREDICTOR_IMAGE"
        echo "built in $((SECONDS - start)) s; image sizes (uncompressed):"
        sizes
        ;;
    base) need buildah debootstrap; base ;;
    sizes) need buildah; sizes ;;
    buildah) shift; need buildah; bah "$@" ;;
    clean)
        need buildah
        bah rm --all >/dev/null 2>&1 || true
        rm -rf "$IMAGES_DIR"
        ;;
    *) sed -n '2,8p' "$0" >&2; exit 2 ;;
esac
