"""Workers stopped and killed while a stream of edits runs: every job still succeeds once.

A deploy stops workers (SIGTERM), a crash kills them (SIGKILL), replacements start;
meanwhile clients keep submitting edits of mixed batch keys. What must hold: every
job ends ``succeeded`` with its PNG, none is lost or failed, none is left in RQ's
registries, and only the SIGKILLs spent attempts (at most a batch each).
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from service.embedded import LocalStack, RedisProcess
from tests.e2e.conftest import E2E_MODEL, outcomes_when

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
JOBS = 32


def _submit_all(api: str, images: list[str], ids: list[str], errors: list[BaseException]) -> None:
    try:
        with httpx.Client(base_url=api, timeout=30) as client:
            for k in range(JOBS):
                body = {"model": "shapes32", "method": "reconstruct",
                        "inputs": {"image": images[k % len(images)]},
                        "params": {"steps": (40, 60, 80)[k % 3]}}  # fmt: skip
                r = client.post("/v1/edits", json=body)
                assert r.status_code == 202, r.text
                ids.append(r.json()["id"])
                time.sleep(0.15)  # a stream, not one burst
    except BaseException as exc:
        errors.append(exc)


def test_jobs_survive_workers_stopped_and_killed_under_load(tmp_path: Path) -> None:
    redis = RedisProcess(tmp_path / "redis").start()
    env = {**os.environ, "EDITSERVE_REDIS_URL": redis.url,
           "EDITSERVE_BLOB_DIR": str(tmp_path / "blobs"),
           "EDITSERVE_MODELS": f"shapes32={E2E_MODEL}", "EDITSERVE_DEVICE": "cpu",
           "EDITSERVE_LEASE_S": "4", "EDITSERVE_MAINTENANCE_S": "1",
           "EDITSERVE_SHUTDOWN_GRACE_S": "0.5", "EDITSERVE_MAX_BATCH": "4",
           "EDITSERVE_JOB_ATTEMPTS": "4", "OMP_NUM_THREADS": "1"}  # fmt: skip
    stack = LocalStack(redis_url=redis.url, blob_dir=tmp_path / "blobs", env=env)
    names = (f"c{i}" for i in itertools.count())
    try:
        for _ in range(2):
            stack.start_worker(next(names))
        api = stack.start_api()
        images = []
        for png in sorted(EXAMPLES.glob("*.png"))[:4]:
            r = httpx.post(f"{api}/v1/images", files={"file": (png.name, png.read_bytes())})
            images.append(r.json()["id"])
        ids: list[str] = []
        errors: list[BaseException] = []
        submitter = threading.Thread(target=_submit_all, args=(api, images, ids, errors))
        submitter.start()

        # the chaos: SIGTERM, SIGKILL, SIGTERM, SIGKILL, each to a busy worker, a
        # replacement started after each
        killed = 0
        for sig in (signal.SIGTERM, signal.SIGKILL, signal.SIGTERM, signal.SIGKILL):
            deadline = time.monotonic() + 30
            victim = None
            while victim is None and time.monotonic() < deadline:
                jobs = [Job.fetch(i, connection=stack.redis, serializer=JSONSerializer)
                        for i in list(ids)]  # fmt: skip
                busy = {j.worker_name for j in jobs if j.get_status() == "started"}
                busy &= set(stack.workers)
                victim = next(iter(busy), None)
                time.sleep(0.2)
            if victim is None:
                break  # nothing running any more: the stream is done
            proc = stack.workers.pop(victim)
            proc.send_signal(sig)
            proc.wait(timeout=30)
            killed += 1
            stack.start_worker(next(names))
        submitter.join()
        assert not errors, errors
        assert killed >= 2, "the chaos found too few busy workers to mean anything"

        views: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + 240
        while len(views) < len(ids) and time.monotonic() < deadline:
            for job_id in ids:
                if job_id not in views:
                    view = httpx.get(f"{api}/v1/jobs/{job_id}", params={"wait": 1}).json()
                    if view["status"] in ("succeeded", "failed", "canceled"):
                        views[job_id] = view
        assert len(views) == JOBS, f"{JOBS - len(views)} jobs never ended"
        failed = {k: v["error"] for k, v in views.items() if v["status"] != "succeeded"}
        assert not failed, failed
        for job_id in ids:
            r = httpx.get(f"{api}/v1/jobs/{job_id}/outputs/0")
            assert r.status_code == 200 and r.content[:4] == b"\x89PNG"
        queue = Queue("editserve:shapes32", connection=stack.redis, serializer=JSONSerializer)
        assert queue.count == 0 and queue.started_job_registry.count == 0
        assert stack.redis.llen(queue.intermediate_queue_key) == 0
        rq_jobs = [Job.fetch(i, connection=stack.redis, serializer=JSONSerializer) for i in ids]
        handed_back = sum(j.meta.get("handed_back", 0) for j in rq_jobs)
        # attempts: only a SIGKILL spends one, for each job of the batch it killed
        spent = sum(3 - (j.retries_left or 0) for j in rq_jobs)
        assert spent <= 2 * 4, spent
        # every job succeeded exactly once; no worker was cut off and came back, so the
        # lease fence dropped or took back nothing
        outcomes = outcomes_when(stack.redis, {"succeeded": JOBS})
        assert outcomes.get("succeeded") == JOBS, outcomes
        assert "lease_lost" not in outcomes and "reclaimed" not in outcomes, outcomes
        print(f"{JOBS} jobs, {killed} workers stopped or killed, "
              f"{handed_back} hand-backs, {spent} attempts spent")  # fmt: skip
    finally:
        stack.stop()
        redis.stop()
