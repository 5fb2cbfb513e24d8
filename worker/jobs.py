"""The RQ job function, for workers other than ``editserve worker``.

``editserve worker`` runs jobs in batches and never calls this. A plain
``rq worker --worker-class rq.worker.SimpleWorker`` can still run our jobs one
at a time through it (models load on first use, then stay resident).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from rq import get_current_job

from contract.jobs import JobPayload
from store.blobs import LocalBlobStore
from worker.engine import ModelRegistry, ModelSpec
from worker.executor import JobFailed, prepare, run_batch
from worker.settings import WorkerSettings


@lru_cache(maxsize=1)
def _runtime() -> tuple[ModelRegistry, LocalBlobStore]:
    settings = WorkerSettings()
    specs = [
        ModelSpec(n, p, device=settings.device, dtype=settings.dtype)
        for n, p in settings.model_paths().items()
    ]
    return ModelRegistry(specs), LocalBlobStore(settings.blob_dir)


def perform(payload_json: dict[str, Any]) -> dict[str, Any]:
    payload = JobPayload.model_validate(payload_json)
    registry, blobs = _runtime()
    job = get_current_job()
    denoiser = registry.get(payload.model)
    try:
        prepared = prepare(payload, denoiser, blobs)
    except JobFailed as exc:
        if job is not None:
            job.meta["error"] = {"code": exc.code.value, "message": exc.message, "retryable": False}
            job.save_meta()
        raise

    def progress(step: int, total: int, phase: str | None = None) -> None:
        if job is not None:
            job.meta["progress"] = {"step": step, "total": total, "phase": phase}
            job.save_meta()

    output = run_batch(denoiser, [prepared], progress)[0]
    result = {"outputs": [blobs.put(png) for png in output.images], "metrics": output.metrics}
    if job is not None:
        job.meta["result"] = result
        job.save_meta()
    return result
