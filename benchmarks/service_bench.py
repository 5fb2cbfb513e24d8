"""Service benchmark: what HTTP + Redis + the worker cost, and what batching and caching buy.

Starts its own stack (bundled Redis, worker processes, the API over HTTP) on the
shipped model and prints, side by side from one run:

1. latency of one edit through HTTP + Redis + worker vs the same edit called on the
   engine directly (target <= 1.15x);
2. throughput with 16 concurrent clients, batching on (max_batch 8) vs off (1)
   (target >= 2x);
3. a cached re-edit vs a first edit of the same image (target >= 1.8x);
4. submit-to-start p50 with an idle worker (target < 50 ms).

    python -m benchmarks.service_bench                  # about 3 minutes on 2 CPU cores
    python -m benchmarks.service_bench --steps 50 --jobs-per-client 4
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from contract.methods.reconstruct import ReconstructParams
from service.embedded import LocalStack as Stack
from worker.training.aligned import generate

# the service's default inversion (refine 1), so the engine side does the same work
SERVICE_REFINE: int = ReconstructParams.model_fields["refine"].default
MODEL = str(Path(__file__).resolve().parents[1] / "models" / "shapes32-ddpm")


def _pngs(count: int, seed: int) -> list[bytes]:
    images, _ = generate(seed, count)
    out = []
    for array in images:
        buf = io.BytesIO()
        Image.fromarray(array).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def _upload(api: str, data: bytes) -> str:
    r = httpx.post(f"{api}/v1/images", files={"file": ("x.png", data, "image/png")})
    r.raise_for_status()
    return str(r.json()["id"])


def _edit_and_wait(client: httpx.Client, image: str, steps: int) -> dict[str, Any]:
    """Submit, then one long-poll (``?wait=``) until the job ends: no polling loop."""
    body = {"model": "shapes32", "method": "reconstruct", "inputs": {"image": image},
            "params": {"steps": steps}}  # fmt: skip
    r = client.post("/v1/edits", json=body)
    r.raise_for_status()
    job_id = r.json()["id"]
    while True:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}", params={"wait": 60}).json()
        if job["status"] in ("succeeded", "failed", "canceled"):
            if job["status"] != "succeeded":
                raise RuntimeError(f"job {job_id} {job['status']}: {job['error']}")
            return job


def engine_once(dn: Any, data: bytes, steps: int) -> float:
    """The same edit called on the engine in this process: decode, invert, sample, PNG."""
    import torch

    from worker.engine.images import to_pil, to_tensor
    from worker.engine.reconstruct import reconstruct

    start = time.perf_counter()
    with Image.open(io.BytesIO(data)) as im:
        x = to_tensor([im.convert("RGB")])
    result = reconstruct(
        dn, x, steps=steps, refine=SERVICE_REFINE, generator=torch.Generator().manual_seed(0)
    )
    buf = io.BytesIO()
    to_pil(result.images)[0].save(buf, format="PNG")
    return time.perf_counter() - start


def executor_once(dn: Any, data: bytes, steps: int, context: Any) -> float:
    """The worker's own code in this process, no HTTP or Redis: blob in, job, PNG out."""
    from contract.jobs import JobKind, JobPayload
    from worker.executor import prepare, run_batch

    blob = context.blobs.put(data)
    start = time.perf_counter()
    payload = JobPayload(id="bench", kind=JobKind.EDIT, model="shapes32", method="reconstruct",
                         params={"steps": steps}, inputs={"image": blob})  # fmt: skip
    run_batch(dn, [prepare(payload, dn, context.blobs)], lambda *_: None, context=context)
    return time.perf_counter() - start


def service_once(client: httpx.Client, image: str, steps: int) -> tuple[float, dict[str, Any]]:
    start = time.perf_counter()
    job = _edit_and_wait(client, image, steps)
    return time.perf_counter() - start, job


def throughput(api: str, images: list[str], clients: int, per_client: int, steps: int) -> float:
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            with httpx.Client(base_url=api, timeout=120) as client:
                for k in range(per_client):
                    image = images[(index * per_client + k) % len(images)]
                    _edit_and_wait(client, image, steps)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return clients * per_client / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default=MODEL, help="a folder of the shapes32 architecture")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument(
        "--device", default="cpu", help="cpu or cuda: the worker's and the engine's (dtype auto)"
    )
    p.add_argument("--latency-runs", type=int, default=8)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--jobs-per-client", type=int, default=2)
    p.add_argument("--throughput-steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=2, help="throughput rounds per setting")
    args = p.parse_args(argv)
    from service.embedded import RedisProcess

    tmp = Path(tempfile.mkdtemp(prefix="editserve-bench-"))
    print(f"logs and data in {tmp}", file=sys.stderr)
    redis = RedisProcess(tmp / "redis").start()
    env = {**os.environ, "EDITSERVE_REDIS_URL": redis.url, "EDITSERVE_BLOB_DIR": str(tmp / "blobs"),
           "EDITSERVE_MODELS": f"shapes32={args.model}", "EDITSERVE_DEVICE": args.device,
           "EDITSERVE_INVERSION_CACHE_MB": "512"}  # fmt: skip
    results: dict[str, Any] = {}
    from worker.engine import load_denoiser

    dn = load_denoiser(args.model, device=args.device, dtype="auto")
    try:
        stack = Stack(redis_url=redis.url, blob_dir=tmp / "blobs", env=env, log_dir=tmp)
        try:
            stack.start_worker("bench-1", EDITSERVE_MAX_BATCH="1")
            api = stack.start_api("--no-access-log")
            # interleaved, so machine drift hits all three alike: the engine in this
            # process, a first edit through the service, and its cached re-edit
            from store.blobs import LocalBlobStore
            from worker.executor import RunContext
            from worker.inversion_cache import InversionCache

            # the executor as the worker runs it: blob store and an on-disk inversion cache
            context = RunContext(cache=InversionCache(folder=tmp / "bench-inversions"),
                                 blobs=LocalBlobStore(tmp / "bench-blobs"))  # fmt: skip
            engine, executor, first, cached, starts, runs = [], [], [], [], [], []
            direct_images = _pngs(args.latency_runs + 1, 11)
            executor_images = _pngs(args.latency_runs + 1, 13)
            service_images = [_upload(api, d) for d in _pngs(args.latency_runs + 1, 12)]
            with httpx.Client(base_url=api, timeout=90) as client:
                for k in range(args.latency_runs + 1):
                    t_engine = engine_once(dn, direct_images[k], args.steps)
                    t_executor = executor_once(dn, executor_images[k], args.steps, context)
                    t_first, job = service_once(client, service_images[k], args.steps)
                    t_cached, again = service_once(client, service_images[k], args.steps)
                    if k == 0 or not again["metrics"]["inversion_cached"]:
                        continue  # the first round warms up
                    engine.append(t_engine)
                    executor.append(t_executor)
                    first.append(t_first)
                    cached.append(t_cached)
                    starts.append(job["started_at"] - job["created_at"])
                    runs.append(job["metrics"]["run_ms"] / 1e3)
            results["engine_ms"] = 1e3 * statistics.median(engine)
            results["executor_ms"] = 1e3 * statistics.median(executor)
            results["service_ms"] = 1e3 * statistics.median(first)
            results["cached_ms"] = 1e3 * statistics.median(cached)
            results["worker_run_ms"] = 1e3 * statistics.median(runs)
            results["submit_to_start_p50_ms"] = 1e3 * statistics.median(starts)
            results["submit_to_start_p90_ms"] = 1e3 * float(np.percentile(starts, 90))

            # throughput, batching off and on, alternated over rounds (fresh images each run)
            per_config: dict[int, list[float]] = {1: [], 8: []}
            stack.workers.pop("bench-1").terminate()
            for round_ in range(args.rounds):
                for max_batch in (1, 8):
                    name = f"bench-{round_}-{max_batch}"
                    stack.start_worker(name, EDITSERVE_MAX_BATCH=str(max_batch))
                    count = args.clients * args.jobs_per_client
                    seed = 1000 + 10 * round_ + max_batch
                    ids = [_upload(api, d) for d in _pngs(count, seed)]
                    per_config[max_batch].append(
                        throughput(
                            api, ids, args.clients, args.jobs_per_client, args.throughput_steps
                        )
                    )
                    stack.workers.pop(name).terminate()
            results["throughput_batch1"] = statistics.median(per_config[1])
            results["throughput_batch8"] = statistics.median(per_config[8])
        finally:
            stack.stop()
    finally:
        redis.stop()

    r = results
    label = f"2. jobs/s, {args.clients} clients, max_batch 8 vs 1"
    where = f"{args.device}, {dn.dtype}".replace("torch.", "")
    print(f"\nservice benchmark on shapes32 ({where}, {args.steps}-step DDIM reconstruct)")
    print(f"{'measure':<44}{'value':>12}{'vs':>12}{'ratio':>9}  target")
    print(
        f"{'1. one edit via HTTP+Redis+worker (ms)':<44}{r['service_ms']:>12.1f}"
        f"{r['engine_ms']:>12.1f}{r['service_ms'] / r['engine_ms']:>8.3f}x  <= 1.15x vs engine"
    )
    print(f"{'   the worker ran it for (ms, median)':<44}{r['worker_run_ms']:>12.1f}")
    print(
        f"{'   its executor in this process (ms)':<44}{r['executor_ms']:>12.1f}"
        f"{r['engine_ms']:>12.1f}{r['executor_ms'] / r['engine_ms']:>8.3f}x  (no HTTP, no Redis)"
    )
    print(
        f"{label:<44}{r['throughput_batch8']:>12.2f}"
        f"{r['throughput_batch1']:>12.2f}{r['throughput_batch8'] / r['throughput_batch1']:>8.2f}x"
        f"  >= 2x ({args.throughput_steps} steps)"
    )
    print(
        f"{'3. first edit vs cached re-edit (ms)':<44}{r['service_ms']:>12.1f}"
        f"{r['cached_ms']:>12.1f}{r['service_ms'] / r['cached_ms']:>8.2f}x  >= 1.8x"
    )
    print(f"{'4. submit-to-start p50 / p90, idle (ms)':<44}{r['submit_to_start_p50_ms']:>12.1f}"
          f"{r['submit_to_start_p90_ms']:>12.1f}{'':>9}  p50 < 50 ms")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
