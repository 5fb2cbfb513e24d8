# syntax=docker/dockerfile:1
# Two images from one file:
#   docker build --target api    -t editserve-api .     # slim: FastAPI + Redis client, no torch
#   docker build --target worker -t editserve-worker .  # CUDA torch + diffusers, models resident
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN useradd --create-home --uid 10001 editserve \
    && mkdir -p /data/blobs && chown editserve /data/blobs
WORKDIR /app
COPY pyproject.toml README.md ./
COPY contract ./contract
COPY store ./store
COPY cli ./cli
COPY service ./service
COPY worker ./worker

FROM base AS api
RUN pip install --no-cache-dir .
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"]
CMD ["editserve", "api", "--host", "0.0.0.0", "--port", "8000"]

FROM base AS worker
# a C compiler: torch.compile (EDITSERVE_COMPILE) builds Triton's launchers and Inductor's kernels
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc g++ libc6-dev \
    && rm -rf /var/lib/apt/lists/*
# torch from PyPI on linux/x86_64 is the CUDA build; pin it for reproducible images.
# The project itself is installed from source (".[worker]"): its ranges live in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir "torch==2.13.0" && pip install --no-cache-dir ".[worker]"
COPY models ./models
USER 10001
ENV EDITSERVE_DEVICE=cuda \
    EDITSERVE_DTYPE=float16
CMD ["editserve", "worker"]
