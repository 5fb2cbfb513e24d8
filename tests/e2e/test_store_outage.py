"""Redis goes away mid-batch and comes back: the batch's work is kept, nothing is re-run."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx
from rq.job import Job
from rq.serializers import JSONSerializer

from service.embedded import LocalStack, RedisProcess
from tests.e2e.conftest import E2E_MODEL

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE = EXAMPLES / "small-wide-yellow-circle-on-grey.png"


def _job(api: str, job_id: str) -> dict[str, Any] | None:
    try:
        r = httpx.get(f"{api}/v1/jobs/{job_id}", timeout=10)
    except httpx.HTTPError:
        return None
    return r.json() if r.status_code == 200 else None  # 503 while Redis is away


def _succeeded(api: str, job_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not ((j := _job(api, job_id)) and j["status"] in ("succeeded", "failed")):
        assert time.monotonic() < deadline, f"the job did not end: {j}"
        time.sleep(0.1)
    assert j["status"] == "succeeded", j
    return j


def test_a_redis_restart_mid_batch_costs_no_work(tmp_path: Path) -> None:
    redis = RedisProcess(tmp_path / "redis").start()
    env = {**os.environ, "EDITSERVE_REDIS_URL": redis.url,
           "EDITSERVE_BLOB_DIR": str(tmp_path / "blobs"),
           "EDITSERVE_MODELS": f"shapes32={E2E_MODEL}",
           "EDITSERVE_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}  # fmt: skip
    stack = LocalStack(redis_url=redis.url, blob_dir=tmp_path / "blobs", env=env)
    try:
        worker = stack.start_worker("outage")
        api = stack.start_api()
        data = EXAMPLE.read_bytes()
        image = httpx.post(f"{api}/v1/images", files={"file": ("a.png", data, "image/png")})
        body = {"model": "shapes32", "method": "reconstruct",
                "inputs": {"image": image.json()["id"]}, "params": {"steps": 300}}  # fmt: skip
        job_id = httpx.post(f"{api}/v1/edits", json=body).json()["id"]
        deadline = time.monotonic() + 60
        while not ((j := _job(api, job_id)) and (j.get("progress") or {}).get("step", 0) > 0):
            assert time.monotonic() < deadline, "the job did not start"
            time.sleep(0.05)
        step_before = j["progress"]["step"]

        redis.stop()  # SIGTERM: Redis writes its AOF and exits
        time.sleep(3)  # the worker computes on, Redis away (lease 8 s)
        assert worker.poll() is None, "the worker died with Redis away"
        redis.start()  # same port, same AOF

        j = _succeeded(api, job_id, timeout=120)
        assert worker.poll() is None
        rq_job = Job.fetch(job_id, connection=stack.redis, serializer=JSONSerializer)
        assert rq_job.worker_name == "outage"
        assert rq_job.retries_left == 2  # no attempt spent: it ran once, through the outage
        assert "handed_back" not in rq_job.meta
        print(f"step {step_before} of {j['progress']['total']} when Redis went away; "
              f"run {j['metrics']['run_ms']:.0f} ms")  # fmt: skip
    finally:
        stack.stop()
        redis.stop()


def test_an_idle_worker_outlives_a_redis_restart(tmp_path: Path) -> None:
    redis = RedisProcess(tmp_path / "redis").start()
    env = {**os.environ, "EDITSERVE_REDIS_URL": redis.url,
           "EDITSERVE_BLOB_DIR": str(tmp_path / "blobs"),
           "EDITSERVE_MODELS": f"shapes32={E2E_MODEL}", "EDITSERVE_MAINTENANCE_S": "1",
           "EDITSERVE_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}  # fmt: skip
    stack = LocalStack(redis_url=redis.url, blob_dir=tmp_path / "blobs", env=env)
    try:
        worker = stack.start_worker("idle")
        api = stack.start_api()
        redis.stop()
        time.sleep(4)  # several rounds of the idle loop: heartbeat, maintenance, dequeue
        assert worker.poll() is None, "the idle worker died with Redis away"
        redis.start()
        data = EXAMPLE.read_bytes()
        deadline = time.monotonic() + 30
        while True:  # the API answers 503 until its connection is back
            r = httpx.post(f"{api}/v1/images", files={"file": ("a.png", data, "image/png")})
            if r.status_code == 201:
                break
            assert time.monotonic() < deadline, r.text
            time.sleep(0.2)
        body = {"model": "shapes32", "method": "reconstruct",
                "inputs": {"image": r.json()["id"]}, "params": {"steps": 10}}  # fmt: skip
        deadline = time.monotonic() + 30
        while (r := httpx.post(f"{api}/v1/edits", json=body)).status_code != 202:
            assert time.monotonic() < deadline, r.text  # 422 until the worker beats again
            time.sleep(0.2)
        job_id = r.json()["id"]
        _succeeded(api, job_id, timeout=60)
        assert worker.poll() is None
        assert (
            Job.fetch(job_id, connection=stack.redis, serializer=JSONSerializer).worker_name
            == "idle"
        )
    finally:
        stack.stop()
        redis.stop()
