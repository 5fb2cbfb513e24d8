"""A real stack for end-to-end tests: the bundled Redis, worker processes, the API over HTTP.

Nothing here skips: if Redis, a worker or the API cannot start, the tests error.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from redis import Redis

from service.embedded import RedisProcess, free_port, spawn

ROOT = Path(__file__).resolve().parents[2]
E2E_MODEL = os.environ.get("EDITSERVE_E2E_MODEL", str(ROOT / "models" / "shapes32-ddpm"))


@dataclass
class Stack:
    redis_url: str
    blob_dir: Path
    env: dict[str, str]
    api_url: str = ""
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def redis(self) -> Redis:
        return Redis.from_url(self.redis_url)

    def start_worker(self, name: str, **env: str) -> subprocess.Popen[bytes]:
        worker_env = {**self.env, "EDITSERVE_WORKER_NAME": name, **env}
        proc = spawn([sys.executable, "-m", "service.cli", "worker"], worker_env)
        self.workers[name] = proc
        self.procs.append(proc)
        self.wait_for_worker(name, proc)
        return proc

    def wait_for_worker(
        self, name: str, proc: subprocess.Popen[bytes], timeout: float = 60
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"worker {name} exited with {proc.returncode}")
            if self.redis.hget("editserve:workers:heartbeat", name):
                return
            time.sleep(0.1)
        raise RuntimeError(f"worker {name} did not report in {timeout} s")

    def start_api(self, **env: str) -> str:
        port = free_port()
        proc = spawn(
            [
                sys.executable,
                "-m",
                "service.cli",
                "api",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            {**self.env, **env},
        )
        self.procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"API exited with {proc.returncode}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    return url
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("API did not answer /healthz in 30 s")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def stack(redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    blob_dir = tmp_path_factory.mktemp("blobs")
    env = {
        **os.environ,
        "EDITSERVE_REDIS_URL": redis_server.url,
        "EDITSERVE_BLOB_DIR": str(blob_dir),
        "EDITSERVE_MODELS": f"shapes32={E2E_MODEL}",
        "EDITSERVE_DEVICE": "cpu",
        "EDITSERVE_LEASE_S": "4",
        "EDITSERVE_MAINTENANCE_S": "1",
        "EDITSERVE_MAX_WAIT_MS": "50",
        "EDITSERVE_WORKER_FRESH_S": "5",
        "OMP_NUM_THREADS": "1",
    }
    s = Stack(redis_url=redis_server.url, blob_dir=blob_dir, env=env)
    try:
        s.start_worker("w1")
        s.api_url = s.start_api()
        yield s
    finally:
        s.stop()
