# The image every pipeline component runs in on Kubeflow (see hybridml.components.image.IMAGE).
#   docker build -t ghcr.io/hybridml/hybridml:0.1.0 .
#   make images    (no Docker engine: buildah on a Debian 12 base bootstrapped here, scripts/build_images.sh)
# BASE_IMAGE is any Debian 12 image with python3.11 and python3-venv on PATH (the official Python image has both).
# Components run as non-root with a read-only root filesystem: HYBRIDML_HOME and HOME point at /tmp (an emptyDir).
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ENV UV_PROJECT_ENVIRONMENT=/opt/venv UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON=python3.11 \
    UV_PYTHON_DOWNLOADS=never UV_NO_CACHE=1
# Behind a proxy that re-signs TLS, pass its CA bundle's path (pip and uv read it; scripts/build_images.sh mounts
# the host's bundle there). Unset, the default trust store applies. Build stage only: nothing of it is copied out.
ARG SSL_CERT_FILE
# uv in a venv of its own: Debian's python has no pip, and the venv it builds is the only thing copied out.
RUN python3.11 -m venv /opt/uv \
    && /opt/uv/bin/pip install --no-cache-dir --disable-pip-version-check ${SSL_CERT_FILE:+--cert "$SSL_CERT_FILE"} \
    uv==0.13.8
WORKDIR /src
# The dependencies first, from the lock alone: a change to the code or the README reuses this layer.
COPY pyproject.toml uv.lock ./
RUN /opt/uv/bin/uv sync --frozen --no-dev --extra pipeline --no-install-project
COPY README.md ./
COPY src ./src
RUN /opt/uv/bin/uv sync --frozen --no-dev --extra pipeline --no-editable

FROM ${BASE_IMAGE}
# A passwd entry for UID 1000: MLflow and Optuna ask getpass.getuser() for the run's user.
# libgomp1: XGBoost's OpenMP runtime (its wheel does not bundle it).
# Written directly: a minimal Debian has no useradd.
RUN echo 'hybridml:x:1000:1000:hybridml:/tmp:/usr/sbin/nologin' >>/etc/passwd \
    && echo 'hybridml:x:1000:' >>/etc/group \
    && apt-get update && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
COPY --from=build /opt/venv /opt/venv
# KFP runs `python3 -m kfp.dsl.executor_main`: the venv's python3 must come first on PATH.
ENV PATH=/opt/venv/bin:/usr/local/bin:/usr/bin:/bin HYBRIDML_HOME=/tmp/hybridml HOME=/tmp TMPDIR=/tmp \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 1000:1000
WORKDIR /tmp
ENTRYPOINT []
CMD ["hybridml", "--help"]
