"""The state the worker's parts share, declared once (``BatchWorker.__init__`` sets it).

Each concern of the worker is a base class of ``BatchWorker`` in its own module; they
all derive from ``WorkerState``, so each reads the same typed attributes.
"""

from __future__ import annotations

import threading
from typing import Any

from rq import Queue
from rq.worker import SimpleWorker

from store.assets import AssetIndex
from store.blobs import BlobStore
from worker.engine import ModelRegistry
from worker.executor import RunContext
from worker.inversion_cache import InversionCache
from worker.lease_types import RunningJob
from worker.settings import WorkerSettings
from worker.yielding import YieldBudget


class WorkerState(SimpleWorker):  # type: ignore[misc]  # rq's classes are Any to mypy
    settings: WorkerSettings
    registry: ModelRegistry
    blobs: BlobStore
    asset_index: AssetIndex
    cache: InversionCache
    context: RunContext
    _edit_queues: list[Queue]
    _fit_queues: list[Queue]
    _running: dict[str, RunningJob]  # job id -> run, while its batch runs
    _lock: threading.Lock  # guards _running and run.done against the heartbeat thread
    _claim: Any  # the claim script (batching)
    _fence: Any  # the fence script (lease)
    _stop: threading.Event  # set by a stop signal: the idle dequeue ends
    _stop_beat: threading.Event
    _shutdown_deadline: float | None  # time.monotonic(); set by a stop signal
    _signals: int
    _first_signal: float
    _store_down_logged: float
    _sweep_offset: int
    _yield_budget: YieldBudget
    _last_yield_check: float
