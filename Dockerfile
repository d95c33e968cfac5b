# AI Factory Engine in a container: `docker compose up -d` (compose.yaml) runs it with PostgreSQL and
# Adminer. CPU PyTorch by default; for an NVIDIA GPU build with
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t aifactory:cuda .
# (the CUDA wheels carry their own CUDA libraries; the host needs the NVIDIA driver and the NVIDIA
# Container Toolkit, and compose's `gpus: all`).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATA_DIR=/data \
    HOST=0.0.0.0 \
    PORT=8000

# pg_dump / pg_restore for `aifactory backup` on PostgreSQL; tini reaps the engines' processes and
# passes SIGTERM on, so a stop lets the trainer save its checkpoint.
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client tini \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# Dependencies first (a layer that survives source edits), then the package itself.
COPY pyproject.toml README.md ./
RUN pip install "torch==${TORCH_VERSION}" --extra-index-url "${TORCH_INDEX}"
COPY src ./src
RUN pip install .

# Not root: the data volume belongs to this user.
RUN useradd --system --uid 10001 --create-home --home-dir /home/factory factory \
    && mkdir -p /data && chown factory:factory /data
USER factory
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\", \"8000\")}/healthz', timeout=4)" || exit 1

ENTRYPOINT ["tini", "--", "aifactory"]
CMD ["up"]
