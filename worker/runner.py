"""The worker process: an RQ ``SimpleWorker`` that runs compatible jobs as one batch.

Why not RQ's default worker: it forks a work horse per job, and CUDA does not
survive a fork; the models must stay resident in this one process. So:

- ``SimpleWorker`` runs jobs in-process; models load once at start (``ModelRegistry``).
- ``execute_job`` takes the dequeued job, then gathers up to ``max_batch - 1``
  more queued jobs of the same model with the same batch key within
  ``max_wait_ms`` (``LREM`` makes each claim atomic among workers), and runs them
  as one batch. Each job keeps its own RQ status, progress, outputs and errors.
- A heartbeat thread keeps every running job's lease (RQ's started registry)
  fresh. A killed worker stops beating; within ``lease_s`` its jobs expire, and
  the next maintenance pass of any live worker (every ``maintenance_s``) re-queues
  them while attempts remain, else fails them (``worker_lost`` to the API).
- Cancellation: the API sets a flag; the progress callback sees it at the next step.
- Shutdown (SIGTERM or Ctrl-C, as ``docker stop`` and a rolling deploy send): the
  worker takes no new job. A running batch that will end within ``shutdown_grace_s``
  (projected from its progress so far) runs to the end; one that will not is handed
  back at its next step: its jobs go to the front of their queue with no attempt
  spent, and another worker starts them at once instead of after a lease. A second
  signal hands the batch back at the next step; a third exits at once, as RQ does.
- Blob retention (``store.retention``): every ``gc_interval_s`` one worker deletes
  the blobs no job or asset references that nothing named for ``gc_min_age_s``.
- Redis unreachable mid-batch (a restart, a failover): the batch computes on; its
  progress and cancel checks are skipped until Redis answers, and its outcome is
  written with retries for up to ``store_retry_s``, so a blip costs no work.
- Fencing: before it writes an outcome, a worker checks that it still holds the job's
  lease (``fence``); one cut off past its lease drops its run if another worker took
  the job over, or takes the job back out of its queue if nobody has picked it up.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from functools import partial
from typing import Any

from redis import Redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.worker import WorkerStatus

from contract.jobs import META_PROGRESS, ErrorCode, JobKind
from contract.keys import CANCEL_KEY, HEARTBEAT_KEY, MODELS_KEY, queue_name
from contract.models import encode_models
from store.assets import AssetIndex
from store.blobs import BlobStore
from store.metrics import record_observation
from store.retention import maybe_collect
from worker.batching import Batching, payload_of
from worker.dequeue import claiming_queue, recover_claims, recover_stranded, start_claimed
from worker.engine import ModelRegistry
from worker.executor import JobFailed, PreparedJob, RunContext, prepare, run_batch
from worker.inversion_cache import InversionCache
from worker.lease import LeaseKeeping, fence_script
from worker.lease_types import RunningJob
from worker.outcomes import Outcomes
from worker.resilience import STORE_DOWN, StoreDownTolerant
from worker.settings import WorkerSettings
from worker.shutdown import BatchCanceled, BatchHandedBack, Shutdown, outlasts_grace
from worker.yielding import PhaseProgress, YieldBudget

log = logging.getLogger("editserve.worker")


class WorkerNameTaken(RuntimeError):
    """Another live worker already uses this name."""


class BatchWorker(Outcomes, Shutdown, LeaseKeeping, Batching, StoreDownTolerant):
    """An in-process RQ worker with resident models and batching; each concern is one
    base class in its own module (``outcomes``, ``shutdown``, ``lease``, ``batching``,
    ``resilience``), and every RQ private API it touches sits in ``rq_compat``."""

    def __init__(
        self,
        settings: WorkerSettings,
        registry: ModelRegistry,
        blobs: BlobStore,
        connection: Redis,
        judges: RunContext | None = None,
    ) -> None:
        """``judges``: the classifier, CLIP and VGG handlers may use (``boot``)."""
        # every model's edits before any model's fits (RQ dequeues in this order), unless
        # a fit is overdue (see _order_queues)
        # a dequeued job waits in an intermediate list; a stop ends the idle wait
        self._stop = threading.Event()  # set by a stop signal
        queue_class = claiming_queue(self._stop)
        queues = [
            queue_class(queue_name(name, kind), connection=connection, serializer=JSONSerializer)
            for kind in (JobKind.EDIT, JobKind.FIT)
            for name in registry.names
        ]
        self._edit_queues = queues[: len(registry.names)]
        self._fit_queues = queues[len(registry.names) :]
        super().__init__(
            queues,
            name=settings.worker_name,
            connection=connection,
            serializer=JSONSerializer,
            queue_class=queue_class,
            maintenance_interval=settings.maintenance_s,
            # RQ blocks in dequeue for worker_ttl - 15 s; 1 s keeps maintenance on time
            worker_ttl=16,
        )
        self.settings = settings
        self.registry = registry
        self.blobs = blobs
        self.cache = InversionCache(
            settings.inversion_cache_mb * 1024 * 1024, folder=settings.blob_dir / "inversions"
        )
        self._running: dict[str, RunningJob] = {}
        self.asset_index = AssetIndex(connection)
        judges = judges or RunContext()
        self.context = RunContext(
            cache=self.cache,
            blobs=blobs,
            assets=self.asset_index,
            classifier=judges.classifier,
            clip=judges.clip,
            vgg=judges.vgg,
        )
        # Claim a queued job for this batch: out of the queue and into RQ's intermediate
        # queue in one step, so if we die before starting it, recover_claims gives it back.
        self._claim = connection.register_script(
            "local n = redis.call('LREM', KEYS[1], 1, ARGV[1]) "
            "if n == 1 then redis.call('RPUSH', KEYS[2], ARGV[1]) end "
            "return n"
        )
        self._fence = fence_script(connection)
        self._lock = threading.Lock()
        self._stop_beat = threading.Event()
        self._shutdown_deadline: float | None = None  # time.monotonic(); set by a signal
        self._signals = 0
        self._first_signal = float("-inf")
        self._store_down_logged = float("-inf")
        self._sweep_offset = 0  # where the next stranded-job sweep starts (dequeue)
        self._yield_budget = YieldBudget(settings.fit_yield_share)
        self._last_yield_check = float("-inf")

    # ------------------------------------------------------------------ liveness
    def register_birth(self) -> None:
        """Take the worker's name, also from a predecessor that died without a word.

        A SIGKILLed or OOM-killed worker leaves its RQ registration behind for
        ``worker_ttl + 60`` s, and RQ refuses a new worker of the same name until
        then: a container restarted under a fixed name would crash-loop. Our own
        heartbeat says whether that predecessor is alive: a name whose owner has
        not beaten for a lease belongs to nobody and is taken over (waiting out
        the rest of the lease if needed); a live worker of the same name is refused.
        """
        if self.connection.exists(self.key) and not self.connection.hexists(self.key, "death"):
            silent_s = self._wait_for_silence()
            log.warning(
                "taking over the name %s from a dead worker (silent %.1f s)", self.name, silent_s
            )
            self.connection.delete(self.key)
        super().register_birth()
        # ready only once the name is ours: the heartbeat is what /readyz reads
        self.publish_presence()
        self.start_heartbeats()
        log.info("worker %s ready: models %s", self.name, ", ".join(self.registry.names))

    def _wait_for_silence(self) -> float:
        """Seconds the name's last owner has been silent, once that exceeds the lease.

        Raises ``WorkerNameTaken`` if the owner beats meanwhile: it is alive.
        """
        raw = self.connection.hget(HEARTBEAT_KEY, self.name)
        if raw is None:
            return float("inf")
        last = float(raw)
        while (silent_s := time.time() - last) < self.settings.lease_s:
            time.sleep(min(self.settings.heartbeat_s, self.settings.lease_s - silent_s) + 0.05)
            raw = self.connection.hget(HEARTBEAT_KEY, self.name)
            if raw is not None and float(raw) > last:
                raise WorkerNameTaken(
                    f"a live worker named {self.name!r} is beating; "
                    "give each worker its own EDITSERVE_WORKER_NAME"
                )
        return silent_s

    def publish_presence(self) -> None:
        """Heartbeat and model list for the API's /readyz and /v1/models."""
        models = [self.registry.get(name).describe() for name in self.registry.names]
        with self.connection.pipeline() as pipe:
            pipe.hset(HEARTBEAT_KEY, self.name, time.time())
            pipe.hset(MODELS_KEY, self.name, encode_models(models))
            pipe.execute()

    def run_maintenance_tasks(self) -> None:
        """Claims that never started and stranded jobs back to their queue (``dequeue``),
        RQ's (expired leases back to the queue), then blob retention when it is due."""
        queues = [*self._edit_queues, *self._fit_queues]
        try:
            recover_claims(self.connection, queues, self.settings.lease_s)
            _, self._sweep_offset = recover_stranded(
                self.connection, queues, self.settings.lease_s, offset=self._sweep_offset
            )
        except STORE_DOWN as exc:
            self._store_down(exc)
            return
        except Exception:  # a recovery bug must not stop the worker; the next pass retries
            log.exception("claim or stranded-job recovery failed")
        try:
            super().run_maintenance_tasks()
        except STORE_DOWN as exc:
            self._store_down(exc)
            return
        try:
            maybe_collect(
                self.connection,
                self.settings.blob_dir,
                interval_s=self.settings.gc_interval_s,
                min_age_s=self.settings.gc_min_age_s,
                inversion_max_age_s=self.settings.inversion_max_age_s,
            )
        except Exception:  # retention must never stop a worker; the next interval retries
            log.exception("blob retention pass failed")

    # ------------------------------------------------------------------ batching
    def execute_job(self, job: Job, queue: Queue) -> None:
        # busy from the dequeue on: a shutdown signal while the batch gathers must let
        # it run (or hand it back), not abort with the dequeued job in RQ's hands
        self.set_state(WorkerStatus.BUSY)
        batch = [job, *self._gather(job, queue)]
        try:
            self._run_batch(batch, queue)
        finally:
            self.set_state(WorkerStatus.IDLE)

    def _run_batch(self, jobs: list[Job], queue: Queue) -> None:
        runs: list[RunningJob] = []
        for job in jobs:
            # into the started registry (with a lease), then out of the intermediate list
            # where the dequeue or the claim put it: always in one recoverable place
            execution = self.prepare_execution(job)
            if not start_claimed(self.connection, job, queue):
                # given back to its queue while this worker was cut off: not ours now
                self._cleanup_execution(job, execution)
                log.warning("job %s: given back to its queue before it started; let go", job.id)
                continue
            self.prepare_job_execution(job, remove_from_intermediate_queue=False)
            runs.append(RunningJob(job=job, execution=execution, payload=payload_of(job)))
        if not runs:
            return
        with self._lock:
            self._running.update({r.job.id: r for r in runs})
        try:
            self._execute(runs, queue)
        finally:
            with self._lock:
                for run in runs:
                    self._running.pop(run.job.id, None)

    def _execute(self, runs: list[RunningJob], queue: Queue) -> None:
        model = runs[0].payload.model
        try:
            denoiser = self.registry.get(model)
        except Exception as exc:
            for run in runs:
                self._fail(run, queue, ErrorCode.MODEL_UNAVAILABLE, str(exc), retry=False)
            return
        prepared: list[tuple[RunningJob, PreparedJob[Any]]] = []
        for run in runs:
            try:
                prepared.append((run, prepare(run.payload, denoiser, self.blobs)))
            except JobFailed as exc:
                self._fail(run, queue, exc.code, exc.message, retry=False)
        if not prepared:
            return
        live = [run for run, _ in prepared]
        progress = self._progress_callback(live, queue)
        start = time.time()
        try:
            outputs = run_batch(denoiser, [p for _, p in prepared], progress, context=self.context)
        except BatchCanceled:
            return
        except BatchHandedBack:
            for run in live:
                if not run.canceled:
                    self._retrying("handing a job back", partial(self._hand_back, run, queue))
            log.info("handed %d job(s) back to the queue for shutdown", len(live))
            return
        except JobFailed as exc:  # the batch's shared input (an asset, say) is wrong
            for run in live:
                if not run.canceled:
                    fail = partial(self._fail, run, queue, exc.code, exc.message, retry=False)
                    self._retrying("recording a failure", fail)
            return
        except Exception as exc:
            log.exception("batch of %d failed", len(live))
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            for run in live:
                if not run.canceled:
                    fail = partial(self._fail, run, queue, ErrorCode.INTERNAL, detail, retry=True)
                    self._retrying("recording a failure", fail)
            return
        run_ms = 1e3 * (time.time() - start)
        try:
            record_observation(self.connection, "batch_size", len(live))
        except STORE_DOWN as exc:  # a metric is not worth the batch's results
            self._store_down(exc)
        for run, output in zip(live, outputs, strict=True):
            if not run.canceled:
                succeed = partial(self._succeed, run, queue, output, run_ms, len(live))
                self._retrying("recording a result", succeed)

    # ----------------------------------------------------------- progress, cancel
    def _progress_callback(self, runs: list[RunningJob], queue: Queue) -> Any:
        last_write = 0.0
        shown = PhaseProgress()
        is_fit = runs[0].payload.kind == JobKind.FIT

        def progress(step: int, total: int, phase: str | None = None) -> None:
            nonlocal last_write
            keys = [CANCEL_KEY.format(id=run.job.id) for run in runs]
            try:
                flags = self.connection.mget(keys)
                for run, flag in zip(runs, flags, strict=True):
                    if flag and not run.canceled:
                        self._cancel(run, queue)
            except STORE_DOWN as exc:  # compute on; the next step looks again
                self._store_down(exc)
            if all(run.canceled or run.lost for run in runs):
                raise BatchCanceled
            now = time.monotonic()
            view = shown.report(step, total, phase)
            # the pace counts from the phase's first report (each phase has its own steps)
            first = shown.first or (now, step)
            if outlasts_grace(now, *first, step, total, self._shutdown_deadline):
                raise BatchHandedBack
            if now - last_write >= 0.2 or step == total:
                last_write = now
                try:
                    for run in runs:
                        if not run.canceled:
                            run.job.meta[META_PROGRESS] = view.model_dump(mode="json")
                            run.job.save_meta()
                except STORE_DOWN as exc:
                    self._store_down(exc)
            if is_fit:
                self._yield_to_edits()

        return progress
