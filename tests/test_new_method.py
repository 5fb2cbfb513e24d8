"""A new method, built in this test, registered with one call and run end to end:
the real API (its schemas, its validation), a real Redis and RQ queue, and the real
worker (its batching, its outcome writing). ``docs/new-method.md`` walks through it."""

from __future__ import annotations

import io
import math
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from pydantic import Field

from contract.jobs import JobKind
from contract.params import FitField, MethodParams
from contract.spec import MethodSpec
from service.app import create_app
from service.embedded import RedisProcess
from service.settings import Settings
from worker.boot import build_worker
from worker.engine import Denoiser
from worker.engine.images import to_pil, to_tensor
from worker.engine.noise import Generators
from worker.engine.sampling import predict_x0
from worker.methods import register, unregister
from worker.methods.handler import Batch, Handler, JobOutput, ProgressFn, RunContext, png
from worker.settings import WorkerSettings


# 1. the parameters (torch-free; in contract/methods/<name>.py for a real method)
class RenoiseParams(MethodParams):
    """Noise the image to t, then denoise it in one step (x0_hat of the U-Net's eps)."""

    t: int = Field(300, ge=1, le=999, description="the noise level, a timestep")
    fit: FitField = "error"


RENOISE = MethodSpec(
    name="toy-renoise",
    kind=JobKind.EDIT,
    summary="Noise an image to t and denoise it in one step.",
    params=RenoiseParams,
    inputs=("image",),
)


# 2. the engine function (worker/engine/methods/<name>.py): it reads its settings object
def renoise(
    denoiser: Denoiser, x0: torch.Tensor, settings: RenoiseParams, generator: Generators
) -> torch.Tensor:
    """x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) z, then x0_hat from the U-Net's eps at t."""
    ab_t = float(denoiser.schedule.alphas_cumprod[settings.t])
    z = denoiser.noise(x0.shape, generator, x0.device)
    x_t = math.sqrt(ab_t) * x0 + math.sqrt(1 - ab_t) * z
    return predict_x0(x_t, denoiser.eps(x_t, settings.t), ab_t)


# 3. the handler (worker/methods/<name>.py), typed to the parameters
def run_renoise(
    denoiser: Denoiser, batch: Batch[RenoiseParams], progress: ProgressFn, ctx: RunContext
) -> list[JobOutput]:
    x0 = denoiser.encode(batch.stack("image"))
    out = renoise(denoiser, x0, batch.shared, batch.generators())
    progress(1, 1)
    images = to_pil(denoiser.decode(out))
    return [JobOutput(images=[png(im)], metrics={"t": batch.shared.t}) for im in images]


HANDLER = Handler(RENOISE, RenoiseParams, run_renoise, batch_fields=("t",))


@pytest.fixture
def registered() -> Iterator[None]:
    register(HANDLER)  # 4. the one registration (a line in contract/methods/__init__.py)
    yield
    unregister(RENOISE.name)


def _image(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_a_registered_method_runs_through_the_api_queue_and_worker(
    registered: None, server: RedisProcess, pixel_dir: Path, tmp_path: Path, pixel: Denoiser
) -> None:
    model = f"tiny-{uuid.uuid4().hex[:8]}"
    worker = build_worker(WorkerSettings(
        redis_url=server.url, blob_dir=tmp_path / "blobs", models=f"{model}={pixel_dir}",
        worker_name=f"toy-{uuid.uuid4().hex[:8]}", device="cpu", dtype="float32",
        max_batch=4, max_wait_ms=0, gc_interval_s=0,
    ))  # fmt: skip
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        worker.publish_presence()  # the API serves the models workers announce
        api = TestClient(create_app(Settings(redis_url=server.url, blob_dir=tmp_path / "blobs")))
        listed = {m["name"]: m for m in api.get("/v1/methods").json()}
        assert listed["toy-renoise"]["inputs"] == ["image"]
        assert "t" in listed["toy-renoise"]["params_schema"]["properties"]

        ids = [api.post("/v1/images", files={"file": ("a.png", _image(n))}).json()["id"]
               for n in (1, 2)]  # fmt: skip
        # the API validates with the method's own parameter class, naming the field
        too_far = {"model": model, "method": "toy-renoise", "inputs": {"image": ids[0]},
                   "params": {"t": 5000}}  # fmt: skip
        bad = api.post("/v1/edits", json=too_far)
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "params.t"
        jobs = []
        for image, seed in zip(ids, (7, 8), strict=True):
            body = {"model": model, "method": "toy-renoise", "inputs": {"image": image},
                    "params": {"t": 400}, "seed": seed}  # fmt: skip
            accepted = api.post("/v1/edits", json=body)
            assert accepted.status_code == 202, accepted.text
            jobs.append(accepted.json()["id"])

        assert worker.work(burst=True)  # takes both queued jobs as one batch (t is equal)
        views = [api.get(f"/v1/jobs/{job}").json() for job in jobs]
        assert [v["status"] for v in views] == ["succeeded", "succeeded"], views
        assert all(v["metrics"]["t"] == 400 and v["metrics"]["batch_size"] == 2 for v in views)
        outputs = [np.asarray(Image.open(io.BytesIO(api.get(v["output_links"][0]).content)))
                   for v in views]  # fmt: skip
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        worker.connection.close()

    # the same computation here, on the same batch: the worker ran this method's code
    x0 = to_tensor([Image.open(io.BytesIO(_image(n))) for n in (1, 2)], 3)
    gens = [torch.Generator().manual_seed(seed) for seed in (7, 8)]
    with torch.no_grad():
        expected = to_pil(pixel.decode(renoise(pixel, x0, RenoiseParams(t=400), gens)))
    for got, want in zip(outputs, expected, strict=True):
        # identical fp32 arithmetic on one batch; a value on a rounding edge of the
        # 8-bit output may still land one level apart
        assert np.abs(got.astype(int) - np.asarray(want).astype(int)).max() <= 1
    assert not np.array_equal(outputs[0], outputs[1])


def test_the_registry_refuses_a_name_twice(registered: None) -> None:
    with pytest.raises(ValueError, match="registered already"):
        register(HANDLER)
