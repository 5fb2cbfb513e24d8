"""Starting a worker: models loaded and checked, optional judges, compiled U-Nets."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from redis import Redis

from contract.methods import check_editing_defaults
from store.blobs import LocalBlobStore
from worker import rq_compat
from worker.engine import Denoiser, ModelRegistry, ModelSpec
from worker.executor import RunContext
from worker.runner import BatchWorker
from worker.settings import WorkerSettings

log = logging.getLogger("editserve.worker")


def load_classifier(path: str) -> Any:
    """The judge for supervised fits, if this deployment has one."""
    if not path or not Path(path).is_dir():
        return None
    from worker.engine.classifier import AttributeClassifier

    return AttributeClassifier.load(path)


def load_clip(path: str, device: str) -> Any:
    """CLIP for method C's loss, if configured; a configured but missing folder is an error."""
    if not path:
        return None
    if not Path(path).is_dir():
        raise SystemExit(f"EDITSERVE_CLIP: {path} is not a folder")
    from worker.engine.devices import resolve_device
    from worker.engine.methods.mixing import ClipScorer

    return ClipScorer(path, device=resolve_device(device))


def load_vgg(path: str, device: str) -> Any:
    """VGG16 weights for method C's perceptual term, if configured; a missing file stops."""
    if not path:
        return None
    if not Path(path).is_file():
        raise SystemExit(f"EDITSERVE_VGG: {path} is not a file")
    from worker.engine.devices import resolve_device
    from worker.engine.methods.mixing import VggPerceptual

    return VggPerceptual(path, device=resolve_device(device))


def compile_buckets(max_batch: int, conditional: bool) -> list[int]:
    """U-Net batch sizes to compile: powers of two up to the largest batch a call can
    have (2 * max_batch rows under guidance), and that largest batch."""
    top = max_batch * (2 if conditional else 1)
    return sorted({1 << i for i in range(top.bit_length()) if 1 << i <= top} | {top})


def compile_model(denoiser: Denoiser, max_batch: int) -> None:
    """torch.compile the model's plain U-Net calls and compile every bucket before the
    worker says it is ready (CUDA: with CUDA graphs, ``reduce-overhead``)."""
    mode = "reduce-overhead" if denoiser.device.type == "cuda" else None
    denoiser.enable_compile(compile_buckets(max_batch, denoiser.conditional), mode=mode)
    start = time.perf_counter()
    try:
        denoiser.warm_compiled()
    except Exception:  # slower beats down: serve eagerly, and say why loudly
        denoiser.disable_compile()
        log.exception(
            "model %s: torch.compile failed (it needs a C compiler); serving it eagerly",
            denoiser.name,
        )
        return
    log.info(
        "model %s: compiled U-Net batches %s (%s) in %.1f s",
        denoiser.name,
        denoiser.compile_buckets,
        mode or "default",
        time.perf_counter() - start,
    )


def build_worker(settings: WorkerSettings, connection: Redis | None = None) -> BatchWorker:
    specs = [
        ModelSpec(name, path, device=settings.device, dtype=settings.dtype)
        for name, path in settings.model_paths().items()
    ]
    rq_compat.check()  # before the models load: an RQ that moved its internals stops here
    registry = ModelRegistry(specs)
    registry.load_all()  # resident before the first job; a bad model stops the start
    for name in registry.names:  # a model's measured defaults must be values its methods take
        try:
            check_editing_defaults(registry.get(name).editing_defaults)
        except ValueError as exc:
            raise SystemExit(f"model {name}: {exc}") from None
    if settings.compile:
        for name in registry.names:
            compile_model(registry.get(name), settings.max_batch)
    conn = connection or Redis.from_url(settings.redis_url)
    judges = RunContext(
        classifier=load_classifier(settings.classifier),
        clip=load_clip(settings.clip, settings.device),
        vgg=load_vgg(settings.vgg, settings.device),
    )
    return BatchWorker(settings, registry, LocalBlobStore(settings.blob_dir), conn, judges)


def run_worker(settings: WorkerSettings) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    worker = build_worker(settings)
    worker.work(with_scheduler=False)
