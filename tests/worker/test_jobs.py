"""The plain RQ job function (for workers other than `editserve worker`)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from contract.jobs import JobKind, JobPayload
from store.blobs import LocalBlobStore
from worker import jobs


def test_perform_runs_one_job_outside_rq(
    pixel_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDITSERVE_MODELS", f"tiny={pixel_dir}")
    monkeypatch.setenv("EDITSERVE_BLOB_DIR", str(tmp_path))
    monkeypatch.setenv("EDITSERVE_DEVICE", "cpu")
    jobs._runtime.cache_clear()
    buf = io.BytesIO()
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(buf, format="PNG")
    image = LocalBlobStore(tmp_path).put(buf.getvalue())
    payload = JobPayload(id="j", kind=JobKind.EDIT, model="tiny", method="reconstruct",
                         params={"steps": 3}, inputs={"image": image})  # fmt: skip
    try:
        result = jobs.perform(payload.model_dump(mode="json"))
    finally:
        jobs._runtime.cache_clear()
    (output,) = result["outputs"]
    assert Image.open(io.BytesIO(LocalBlobStore(tmp_path).get(output))).size == (16, 16)
    assert "psnr_db" in result["metrics"]
