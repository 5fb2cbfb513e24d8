"""Edit latency while a fit runs, against an idle worker, on the embedded stack.

One worker, the shipped model. Three phases in one run, so machine drift hits all:

1. idle: ``--edits`` 20-step reconstruct edits, one after another; latency is submit
   to the end (``queued`` + ``running``), read from the job views;
2. the same edits submitted one after another while a long fit runs (a PCA
   directions fit over ``--samples`` samples): the fit yields to each at its next
   step boundary;
3. the fit alone, for its own slowdown.

Printed: p50, p95 and max of both latency sets, the ratios, and the fit's run time
with and without the edits. ``--share`` sets the worker's ``fit_yield_share`` (0: the
fit never yields, the behaviour before, for comparison).

    python -m benchmarks.yield_bench --edits 20 --samples 512
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks import wait_for_job, write_json
from service.embedded import LocalStack, RedisProcess

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "small-wide-yellow-circle-on-grey.png"


def _edits(api: str, image: str, count: int, steps: int, seed0: int) -> list[dict[str, Any]]:
    """The views of ``count`` edits submitted one after another (edit-friendly inversion
    with distinct seeds, so no inversion comes from the cache)."""
    out = []
    for i in range(count):
        params = {"steps": steps, "inversion": "ddpm"}
        body = {"model": "shapes32", "method": "reconstruct", "seed": seed0 + i,
                "inputs": {"image": image}, "params": params}  # fmt: skip
        job = wait_for_job(api, httpx.post(f"{api}/v1/edits", json=body).json()["id"])
        assert job["status"] == "succeeded", job
        out.append(job)
    return out


def _latency(jobs: list[dict[str, Any]]) -> list[float]:
    return [job["ended_at"] - job["created_at"] for job in jobs]


def _fit(api: str, samples: int) -> str:
    params = {"name": "bench", "kind": "pca", "samples": samples, "k": 3, "steps": 25}
    body = {"model": "shapes32", "method": "directions", "seed": 1, "params": params}
    return str(httpx.post(f"{api}/v1/fits", json=body).json()["id"])


def _stats(latencies: list[float]) -> dict[str, float]:
    return {
        "p50_s": round(float(np.percentile(latencies, 50)), 3),
        "p95_s": round(float(np.percentile(latencies, 95)), 3),
        "max_s": round(float(np.max(latencies)), 3),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default=str(ROOT / "models" / "shapes32-ddpm"))
    p.add_argument("--edits", type=int, default=20)
    p.add_argument("--edit-steps", type=int, default=20)
    p.add_argument("--samples", type=int, default=512, help="the fit's samples (its length)")
    p.add_argument("--share", type=float, default=0.5, help="the worker's fit_yield_share")
    p.add_argument("--json", dest="json_out")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="editserve-yield-"))
    print(f"logs and data in {tmp}", file=sys.stderr)
    redis = RedisProcess(tmp / "redis").start()
    env = {**os.environ, "EDITSERVE_REDIS_URL": redis.url, "EDITSERVE_BLOB_DIR": str(tmp / "b"),
           "EDITSERVE_MODELS": f"shapes32={args.model}", "EDITSERVE_DEVICE": "cpu",
           "EDITSERVE_FIT_YIELD_SHARE": str(args.share)}  # fmt: skip
    stack = LocalStack(redis_url=redis.url, blob_dir=tmp / "b", env=env, log_dir=tmp)
    try:
        stack.start_worker("bench")
        api = stack.start_api("--no-access-log")
        image = str(
            httpx.post(f"{api}/v1/images", files={"file": ("x.png", EXAMPLE.read_bytes())}).json()[
                "id"
            ]
        )
        _edits(api, image, 2, args.edit_steps, 10_000)  # warm-up
        idle = _latency(_edits(api, image, args.edits, args.edit_steps, 20_000))
        fit_id = _fit(api, args.samples)
        while httpx.get(f"{api}/v1/jobs/{fit_id}").json()["progress"]["step"] == 0:
            time.sleep(0.05)
        during_jobs = _edits(api, image, args.edits, args.edit_steps, 30_000)
        fitted = wait_for_job(api, fit_id)
        during = _latency(during_jobs)
        inside = sum(job["ended_at"] < fitted["ended_at"] for job in during_jobs)
        alone = wait_for_job(api, _fit(api, args.samples))
    finally:
        stack.stop()
        redis.stop()
    results = {
        "edits": args.edits,
        "edit_steps": args.edit_steps,
        "fit_samples": args.samples,
        "fit_yield_share": args.share,
        "idle": _stats(idle),
        "during_fit": _stats(during),
        "p50_ratio": round(float(np.percentile(during, 50) / np.percentile(idle, 50)), 2),
        "p95_ratio": round(float(np.percentile(during, 95) / np.percentile(idle, 95)), 2),
        "fit_run_s_with_edits": round(fitted["ended_at"] - fitted["started_at"], 1),
        "fit_run_s_alone": round(alone["ended_at"] - alone["started_at"], 1),
        "edits_that_ended_before_the_fit": inside,
    }
    results["fit_slowdown"] = round(results["fit_run_s_with_edits"] / results["fit_run_s_alone"], 2)
    print(json.dumps(results, indent=2))
    write_json(args.json_out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
