"""The worker process's settings: one class, read from the environment (``EDITSERVE_*``)."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_name() -> str:
    return f"{socket.gethostname()}.{os.getpid()}"


class WorkerSettings(BaseSettings):
    """One worker process per device; all of them share one Redis and one blob store."""

    model_config = SettingsConfigDict(env_prefix="EDITSERVE_", env_file=None, extra="ignore")

    redis_url: str = Field("redis://localhost:6379/0")
    blob_dir: Path = Field(Path("var/blobs"))
    models: str = Field(
        "shapes32=models/shapes32-ddpm,shapes32-text=models/shapes32-text",
        description="comma-separated name=path (a diffusers folder or hub id) pairs",
    )
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N")
    dtype: str = Field("auto", description="auto (fp16 on CUDA, fp32 on CPU), float32, bfloat16")
    max_batch: int = Field(8, ge=1, le=64)
    compile: bool = Field(
        False,
        description="torch.compile each model's plain U-Net calls, padded to power-of-two "
        "batch buckets, compiled before the worker is ready (CUDA: with CUDA graphs)",
    )
    fit_max_wait_s: float = Field(
        60.0,
        ge=0,
        description="edits are taken before fits, unless the oldest queued fit has waited "
        "this long (so a steady stream of edits cannot starve fits)",
    )
    fit_yield_share: float = Field(
        0.5,
        ge=0,
        le=1,
        description="a running fit runs queued edits at its step boundaries, for at most "
        "this share of any minute (0: fits never yield)",
    )
    max_wait_ms: int = Field(25, ge=0, le=5000, description="how long to gather a batch")
    lease_s: int = Field(8, ge=2, description="a job whose worker is silent this long is lost")
    maintenance_s: int = Field(3, ge=1, description="how often lost jobs are looked for")
    heartbeat_s: float = Field(1.0, gt=0)
    shutdown_grace_s: float = Field(
        10.0,
        ge=0,
        description="on SIGTERM, a running batch projected to end within this many seconds "
        "finishes; a longer one goes back to the queue (no attempt spent)",
    )
    store_retry_s: float = Field(
        120.0,
        ge=0,
        description="how long a finished batch retries writing its outcome while Redis "
        "is unreachable",
    )
    gc_interval_s: float = Field(
        3600.0, ge=0, description="blob retention pass, by one worker per interval (0: never)"
    )
    gc_min_age_s: float = Field(
        86400.0, ge=60, description="an unreferenced blob goes once nothing named it this long"
    )
    inversion_max_age_s: float = Field(
        7 * 86400.0, ge=60, description="a cached inversion file not read this long goes"
    )
    inversion_cache_mb: int = Field(512, ge=0, description="per-worker inversion cache")
    classifier: str = Field(
        "models/shapes32-classifier",
        description="attribute classifier folder that labels samples for supervised fits "
        "('' for none; a missing folder is none)",
    )
    clip: str = Field(
        "",
        description="folder of a transformers CLIPModel and its tokenizer: the scorer of "
        "method C fits that ask for scorer 'clip' ('' for none)",
    )
    vgg: str = Field(
        "",
        description="a safetensors file of torchvision's VGG16 features: method C fits with "
        "content 'vgg' use it as the perceptual term ('' for none)",
    )
    worker_name: str = Field(default_factory=_default_name)

    @field_validator("models")
    @classmethod
    def _parse_check(cls, value: str) -> str:
        parse_models(value)
        return value

    def model_paths(self) -> dict[str, str]:
        return parse_models(self.models)


def parse_models(value: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ValueError(f"models: expected name=path pairs, got {item!r}")
        if not re.fullmatch(r"[A-Za-z0-9._-]+", name.strip()):
            raise ValueError(f"models: a name is letters, digits, '.', '_' or '-', got {name!r}")
        pairs[name.strip()] = path.strip()
    if not pairs:
        raise ValueError("models: at least one name=path pair is needed")
    return pairs
