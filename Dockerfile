# The image every pipeline component runs in on Kubeflow (see hybridml.components.image.IMAGE).
# Build: docker build -t ghcr.io/hybridml/hybridml:0.1.0 .
FROM python:3.11-slim AS build
ENV UV_PROJECT_ENVIRONMENT=/opt/venv UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
RUN pip install --no-cache-dir uv==0.13.8
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --extra pipeline --no-install-project
COPY src ./src
RUN uv sync --frozen --no-dev --extra pipeline --no-editable

FROM python:3.11-slim
RUN useradd --uid 1000 --create-home hybridml && apt-get update && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/venv /opt/venv
# KFP runs `python3 -m kfp.dsl.executor_main`: the venv's python3 must come first on PATH.
ENV PATH=/opt/venv/bin:$PATH HYBRIDML_HOME=/tmp/hybridml PYTHONDONTWRITEBYTECODE=1
USER 1000
WORKDIR /home/hybridml
ENTRYPOINT []
