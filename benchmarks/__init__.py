"""Benchmark scripts: each prints its numbers side by side in one run (``--json`` to keep them)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any


def write_json(path: str | None, results: Any) -> None:
    """The results as JSON at ``path`` (the scripts' ``--json``), if one was given."""
    if path:
        with open(path, "w") as fh:
            json.dump(results, fh, indent=2)


def timed(fn: Callable[[], object], sync: Callable[[], None]) -> float:
    """Seconds one call of ``fn`` takes, with the device synchronised on both sides."""
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def model_domain(model: str | Path) -> ModuleType:
    """The generator a model was trained on: ``training.json``'s ``domain`` (the default
    domain for a folder without one, such as a model trained elsewhere)."""
    from worker.training.domains import DEFAULT_DOMAIN, domain

    meta = Path(model) / "training.json"
    name = json.loads(meta.read_text()).get("domain", "") if meta.is_file() else ""
    return domain(name or DEFAULT_DOMAIN)


def wait_for_job(api: str, job_id: str, timeout: float = 3600) -> dict[str, Any]:
    """The job's view once it has ended (long-polling the API); TimeoutError if not."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = httpx.get(
            f"{api}/v1/jobs/{job_id}", params={"wait": 30}, timeout=60
        ).json()
        if job["status"] in ("succeeded", "failed", "canceled"):
            return job
    raise TimeoutError(job_id)
