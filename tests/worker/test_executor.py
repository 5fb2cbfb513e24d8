"""The executor on a tiny model: a batch of jobs, a bad job failing alone, method A end to end."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.blobs import LocalBlobStore
from service.contract import ErrorCode, JobKind, JobPayload
from worker.engine import Denoiser
from worker.executor import JobFailed, prepare, run_batch
from worker.inversion_cache import InversionCache


def _blob(store: LocalBlobStore, seed: int, size: int = 16) -> str:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return store.put(buf.getvalue())


def _payload(method: str, inputs: dict[str, str], **params: object) -> JobPayload:
    return JobPayload(
        id="j", kind=JobKind.EDIT, model="tiny", method=method, params=params, inputs=inputs
    )


def test_inject_batch_gives_one_png_per_job(pixel: Denoiser, tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    jobs = [
        prepare(_payload("inject", {"content": _blob(store, i), "style": _blob(store, 10 + i)},
                         steps=6, t_edit=300, t_boost=100), pixel, store)
        for i in range(2)
    ]  # fmt: skip
    seen: list[tuple[int, int]] = []
    outputs = run_batch(pixel, jobs, lambda i, n: seen.append((i, n)))
    assert len(outputs) == 2
    for out in outputs:
        assert Image.open(io.BytesIO(out.images[0])).size == (16, 16)
    assert seen[-1][0] == seen[-1][1] == 3 * 6 - 2
    assert pixel.hooks.active == []


def test_prepare_refuses_with_the_field_named(pixel: Denoiser, tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    content = _blob(store, 0)
    with pytest.raises(JobFailed, match=r"inputs\.style: missing") as missing:
        prepare(_payload("inject", {"content": content}), pixel, store)
    assert missing.value.code == ErrorCode.INVALID_INPUT
    with pytest.raises(JobFailed, match=r"params\.g"):
        prepare(_payload("inject", {"content": content, "style": content}, g=2), pixel, store)
    with pytest.raises(JobFailed, match="takes 16x16 images, got 24x24"):
        prepare(_payload("reconstruct", {"image": _blob(store, 1, size=24)}), pixel, store)


def test_inject_is_for_pixel_models(cond: Denoiser, tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    blob = _blob(store, 0)
    with pytest.raises(JobFailed, match="needs a pixel model"):
        prepare(_payload("inject", {"content": blob, "style": blob}), cond, store)


def test_a_worker_with_an_empty_memory_cache_reads_the_shared_folder(
    pixel: Denoiser, tmp_path: Path
) -> None:
    # an InversionCache with nothing in memory has len() 0: it must still be consulted
    store = LocalBlobStore(tmp_path)
    job = prepare(_payload("reconstruct", {"image": _blob(store, 3)}, steps=5), pixel, store)
    first = run_batch(pixel, [job], lambda i, n: None, InversionCache(folder=tmp_path / "inv"))
    other_worker = InversionCache(folder=tmp_path / "inv")
    second = run_batch(pixel, [job], lambda i, n: None, other_worker)
    assert first[0].metrics["inversion_cached"] is False
    assert second[0].metrics["inversion_cached"] is True
    assert other_worker.hits == 1 and first[0].images == second[0].images
