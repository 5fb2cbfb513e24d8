"""`editserve serve`: the embedded stack starts, serves, and Ctrl-C leaves nothing running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from service.embedded import free_port
from tests.e2e.conftest import E2E_MODEL


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_serve_then_ctrl_c_stops_everything(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "serve", "--port", str(port),
         "--data-dir", str(tmp_path), "--models", f"shapes32={E2E_MODEL}"],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, "editserve serve exited early"
            time.sleep(0.2)
        else:
            raise AssertionError("the embedded stack was not ready in 90 s")
        children = _children(proc.pid)
        assert len(children) == 3  # redis-server, worker, api
        aof = tmp_path / "redis"
        assert (aof / "appendonly.aof").exists() or (aof / "appendonlydir").exists()  # AOF on
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert proc.wait(30) == 0
        deadline = time.monotonic() + 10
        while any(_alive(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [c for c in children if _alive(c)], "a child outlived editserve serve"
    finally:
        if proc.poll() is None:
            proc.kill()


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def _child(parent: int, marker: str, timeout: float = 60) -> int:
    """The live child of ``parent`` whose command line holds ``marker``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [c for c in _children(parent) if _alive(c) and marker in _cmdline(c)]
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no child {marker!r} of {parent} after {timeout} s")


def _ready_within(url: str, seconds: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"not ready again within {seconds} s")


def _reconstruct(url: str) -> str:
    png = (Path(__file__).resolve().parents[2] / "examples").glob("*.png")
    data = next(iter(sorted(png))).read_bytes()
    image = httpx.post(f"{url}/v1/images", files={"file": ("a.png", data)}).json()["id"]
    body = {"model": "shapes32", "method": "reconstruct", "inputs": {"image": image},
            "params": {"steps": 5}}  # fmt: skip
    r = httpx.post(f"{url}/v1/edits", json=body)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def _succeeds(url: str, job_id: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        view = httpx.get(f"{url}/v1/jobs/{job_id}", params={"wait": 2}, timeout=10).json()
        if view["status"] in ("succeeded", "failed", "canceled"):
            assert view["status"] == "succeeded", view
            return
    raise AssertionError(f"job {job_id} did not end within {seconds} s")


def test_serve_restarts_a_dead_worker_and_a_dead_redis(tmp_path: Path) -> None:
    """A worker crash and a Redis crash are not outages: the API stays up (503 while
    Redis is away), each dead child is restarted, accepted jobs survive on the AOF."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "serve", "--port", str(port),
         "--data-dir", str(tmp_path), "--models", f"shapes32={E2E_MODEL}"],
        env={**os.environ, "OMP_NUM_THREADS": "1", "EDITSERVE_WORKER_FRESH_S": "3"},
    )  # fmt: skip
    try:
        _ready_within(url, 90)
        worker = _child(proc.pid, "cli.main worker")
        os.kill(worker, signal.SIGKILL)
        killed = time.monotonic()
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200  # the API stays up
        queued = _reconstruct(url)  # accepted while no worker runs
        new_worker = _child(proc.pid, "cli.main worker")
        assert new_worker != worker
        _succeeds(url, queued)
        took_worker = time.monotonic() - killed

        accepted = _reconstruct(url)
        _succeeds(url, accepted)
        time.sleep(1.5)  # the AOF is fsynced every second
        redis = _child(proc.pid, "redis-server")
        os.kill(redis, signal.SIGKILL)
        down = httpx.get(f"{url}/v1/jobs/{accepted}", timeout=5)
        assert down.status_code == 503 and down.json()["error"]["code"] == "unavailable"
        took_redis = _ready_within(url, 60)
        assert _child(proc.pid, "redis-server") != redis
        assert httpx.get(f"{url}/v1/jobs/{accepted}").json()["status"] == "succeeded"
        _succeeds(url, _reconstruct(url))
        assert proc.poll() is None, "serve exited"
        print(f"a job queued after the worker kill succeeded {took_worker:.1f} s after it; "
              f"ready again {took_redis:.1f} s after the Redis kill")  # fmt: skip
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
