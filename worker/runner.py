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
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Queue
from rq.executions import Execution
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.utils import now as utcnow
from rq.utils import utcformat
from rq.worker import SimpleWorker, WorkerStatus

from contract.jobs import (
    META_ERROR,
    META_PROGRESS,
    META_RESULT,
    ErrorCode,
    JobError,
    JobEvent,
    JobKind,
    JobPayload,
    JobResult,
)
from contract.keys import CANCEL_KEY, HEARTBEAT_KEY, JOB_EVENTS, MODELS_KEY, queue_name
from contract.methods import check_editing_defaults
from contract.models import encode_models
from store.assets import AssetIndex
from store.blobs import BlobStore, LocalBlobStore
from store.metrics import record_observation, record_outcome
from store.retention import maybe_collect
from worker.batching import batch_key
from worker.dequeue import (
    claiming_queue,
    recover_claims,
    recover_stranded,
    start_claimed,
)
from worker.engine import Denoiser, ModelRegistry, ModelSpec
from worker.executor import JobFailed, JobOutput, PreparedJob, RunContext, prepare, run_batch
from worker.inversion_cache import InversionCache
from worker.settings import WorkerSettings
from worker.yielding import YIELD_CHECK_S, PhaseProgress, YieldBudget

log = logging.getLogger("editserve.worker")
STORE_DOWN = (RedisConnectionError, RedisTimeoutError)


class BatchCanceled(Exception):
    """Every job of the batch was canceled or taken over by another worker: stop computing."""


class BatchHandedBack(Exception):
    """The worker is shutting down and this batch would not end in time: re-queue it."""


def outlasts_grace(
    now: float, first_at: float, first_step: int, step: int, total: int, deadline: float | None
) -> bool:
    """Whether a batch should be handed back: a shutdown is due and it would end after it.

    The end is projected from the pace since the batch's first progress report
    (``first_step`` at ``first_at``), not since step 0: a cached inversion makes the
    progress jump at once. Until a second report the pace is unknown and only the
    deadline itself counts.
    """
    if deadline is None or (total > 0 and step >= total):
        return False  # no shutdown, or the batch has computed its last step
    if now >= deadline:
        return True
    if step <= first_step:
        return False
    pace = (now - first_at) / (step - first_step)
    return now + pace * (total - step) > deadline


def retry_while_store_down(
    what: str, write: Any, budget_s: float, sleep: Any = time.sleep, clock: Any = time.monotonic
) -> None:
    """``write()``, retried with backoff while Redis is unreachable, for up to ``budget_s``."""
    deadline = clock() + budget_s
    delay = 0.25
    while True:
        try:
            write()
            return
        except STORE_DOWN as exc:
            if clock() + delay > deadline:
                log.error("Redis unreachable while %s: gave up after %.0f s", what, budget_s)
                raise
            log.warning("Redis unreachable while %s (%s); retrying in %.2f s", what, exc, delay)
            sleep(delay)
            delay = min(2 * delay, 5.0)


# Fencing: whether this worker still holds a job's lease when it writes the job's
# outcome. A worker frozen for longer than the lease (a Redis outage, a VM pause,
# SIGSTOP) finds on waking that another worker's maintenance took the job back:
#   its execution is still in the started registry -> still ours (lease renewed, so
#     no cleanup can take it between this check and the write);                1
#   else, if ``reclaim`` and the job waits in its queue (re-queued, not yet picked):
#     take it out and back into the registry: our finished run stands, none repeats; 2
#   else (another worker runs it, or it ended): the outcome is not ours to write. 0
_FENCE = """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  return 1
end
if ARGV[4] == '1' and redis.call('LREM', KEYS[2], 1, ARGV[2]) == 1 then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  return 2
end
return 0
"""
FENCE_OURS, FENCE_RECLAIMED, FENCE_LOST = 1, 2, 0


def fence_script(connection: Redis) -> Any:
    """``_FENCE`` registered on ``connection`` (once per worker), for ``fence``."""
    return connection.register_script(_FENCE)


def fence(
    script: Any, job: Job, execution: Execution, queue: Queue, lease_s: float, reclaim: bool
) -> int:
    """One of ``FENCE_OURS``, ``FENCE_RECLAIMED``, ``FENCE_LOST`` (see ``_FENCE``)."""
    keys = [queue.started_job_registry.key, queue.key]
    args = [execution.composite_key, job.id, time.time() + lease_s, "1" if reclaim else "0"]
    return int(script(keys=keys, args=args))


@dataclass
class RunningJob:
    job: Job
    execution: Execution
    payload: JobPayload
    canceled: bool = False
    done: bool = False
    started: float = field(default_factory=time.time)
    asset_id: str | None = None  # set once, so a retried success makes no second asset
    fenced: bool = False  # the lease was checked before the outcome's first write
    lost: bool = False  # another worker took the job over: its outcome is not ours


class WorkerNameTaken(RuntimeError):
    """Another live worker already uses this name."""


def payload_of(job: Job) -> JobPayload:
    return JobPayload.model_validate(job.args[0])


class BatchWorker(SimpleWorker):  # type: ignore[misc]  # rq's classes are Any to mypy
    """An in-process RQ worker with resident models and batching."""

    def __init__(
        self,
        settings: WorkerSettings,
        registry: ModelRegistry,
        blobs: BlobStore,
        connection: Redis,
    ) -> None:
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
        self.context = RunContext(
            cache=self.cache,
            blobs=blobs,
            assets=self.asset_index,
            classifier=_load_classifier(settings.classifier),
            clip=_load_clip(settings.clip, settings.device),
            vgg=_load_vgg(settings.vgg, settings.device),
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

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """A job's lease: renewed every ``heartbeat_s`` by the heartbeat thread."""
        return self.settings.lease_s

    def publish_presence(self) -> None:
        """Heartbeat and model list for the API's /readyz and /v1/models."""
        models = [self.registry.get(name).describe() for name in self.registry.names]
        with self.connection.pipeline() as pipe:
            pipe.hset(HEARTBEAT_KEY, self.name, time.time())
            pipe.hset(MODELS_KEY, self.name, encode_models(models))
            pipe.execute()

    def _beat_forever(self) -> None:
        while not self._stop_beat.wait(self.settings.heartbeat_s):
            try:
                self.connection.hset(HEARTBEAT_KEY, self.name, time.time())
                # under the lock: a job handed back or ended meanwhile must not get its
                # lease renewed after its execution was deleted
                with self._lock:
                    live = [run for run in self._running.values() if not run.done]
                    for run in live:
                        self.maintain_heartbeats(run.job, run.execution)
                    self._notice_lost_leases(live)
            except STORE_DOWN as exc:  # the next beat retries
                self._store_down(exc)
            except Exception:  # nothing must kill the beat; the next one retries
                log.exception("heartbeat failed")

    def _notice_lost_leases(self, runs: list[RunningJob]) -> None:
        """Runs whose lease another worker's maintenance took (this worker was cut off
        past it) and whose job another worker now runs, or that ended: stop spending
        compute on them (the batch stops if none is left). A job re-queued but not yet
        picked up stays: its run can still take it back when it ends (``fence``)."""
        if not runs:
            return
        with self.connection.pipeline() as pipe:
            for run in runs:
                pipe.zscore(run.job.started_job_registry.key, run.execution.composite_key)
                pipe.hget(run.job.key, "status")
            replies = pipe.execute()
        for i, run in enumerate(runs):
            score, status = replies[2 * i], replies[2 * i + 1]
            if run.fenced:  # the main thread is writing its outcome (and may have ended it)
                continue
            if score is not None or status in (b"queued", b"deferred", b"scheduled"):
                continue
            run.lost = run.done = True
            log.warning(
                "job %s: this worker lost its lease (cut off for more than %s s) and the "
                "job is %s; this run stops and its outcome is dropped",
                run.job.id,
                self.settings.lease_s,
                "run by another worker" if status == b"started" else "over",
            )
            record_outcome(self.connection, "lease_lost")

    def start_heartbeats(self) -> threading.Thread:
        thread = threading.Thread(target=self._beat_forever, name="heartbeat", daemon=True)
        thread.start()
        return thread

    # RQ's loop quits on a Redis error outside its dequeue (which retries by itself);
    # these bookkeeping writes wait for the next round instead, so an idle worker
    # outlives a Redis restart
    def set_state(self, state: str, pipeline: Any = None) -> None:
        try:
            super().set_state(state, pipeline=pipeline)
        except STORE_DOWN as exc:
            self._store_down(exc)

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        try:
            super().heartbeat(timeout, pipeline=pipeline)
        except STORE_DOWN as exc:
            self._store_down(exc)

    def check_for_suspension(self, burst: bool) -> None:
        try:
            super().check_for_suspension(burst)
        except STORE_DOWN as exc:
            self._store_down(exc)

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

    # ------------------------------------------------------------------ shutdown
    def request_stop(self, signum: int, frame: Any) -> None:
        """First SIGTERM/SIGINT: no new jobs; the running batch gets ``shutdown_grace_s``."""
        self._signals = 1
        self._first_signal = time.monotonic()
        self._shutdown_deadline = self._first_signal + self.settings.shutdown_grace_s
        log.info(
            "shutdown requested: a running batch that ends within %.1f s finishes, "
            "a longer one is handed back to the queue",
            self.settings.shutdown_grace_s,
        )
        super().request_stop(signum, frame)

    def _shutdown(self) -> None:
        """The first signal's effect, in the signal handler: stop after the running batch,
        or, idle, at the dequeue's next poll (within ``DOORBELL_POLL_S``).

        RQ raises ``StopRequested`` from the handler when idle. That lands wherever the
        main thread is, such as inside a maintenance pass whose ``except Exception``
        (recovery and retention must not end a worker) swallowed it: the worker then
        ran on with its shutdown deadline passed and handed every job back at once,
        forever. Here the handler only sets flags.
        """
        self._stop_requested = True
        self._stop.set()

    def request_force_stop(self, signum: int, frame: Any) -> None:
        """Second signal: hand the running batch back at its next step; third: exit now."""
        if time.monotonic() - self._first_signal < 1.0:
            return  # the same stop delivered twice (Ctrl-C to the group, then the parent)
        self._signals += 1
        # no lock here: a signal handler runs in the main thread, which may hold it
        if self._running and self._signals == 2:
            log.warning("second signal: handing the running batch back at its next step")
            self._shutdown_deadline = time.monotonic()
            return
        super().request_force_stop(signum, frame)

    def teardown(self) -> None:
        self._stop_beat.set()
        try:
            self.connection.hdel(HEARTBEAT_KEY, self.name)
            self.connection.hdel(MODELS_KEY, self.name)
        finally:
            super().teardown()

    # ------------------------------------------------------------------ ordering
    def dequeue_job_and_maintain_ttl(self, timeout: Any, max_idle_time: Any = None) -> Any:
        self._order_queues()
        return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)

    def reorder_queues(self, reference_queue: Queue) -> None:
        """Ours is set before each dequeue (``_order_queues``), not after."""

    def _order_queues(self) -> None:
        """Edits first; fits first while the oldest queued fit has waited ``fit_max_wait_s``."""
        try:
            fits_first = any(
                self._waited_s(queue) >= self.settings.fit_max_wait_s for queue in self._fit_queues
            )
        except STORE_DOWN as exc:  # keep the last order; the dequeue waits for Redis
            self._store_down(exc)
            return
        first, then = (
            (self._fit_queues, self._edit_queues)
            if fits_first
            else (self._edit_queues, self._fit_queues)
        )
        self._ordered_queues = [*first, *then]

    def _waited_s(self, queue: Queue) -> float:
        """How long the job at the head of ``queue`` (the next RQ pops) has waited; 0 if none."""
        head = self.connection.lindex(queue.key, 0)
        job = queue.fetch_job(head.decode()) if head else None
        if job is None or job.enqueued_at is None:
            return 0.0
        return time.time() - float(job.enqueued_at.timestamp())

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

    def _gather(self, first: Job, queue: Queue) -> list[Job]:
        """Claim up to max_batch - 1 more queued jobs with the first one's batch key."""
        want = self.settings.max_batch - 1
        key = self._batch_key(first)
        if want <= 0 or key is None:  # a fit, or a method this worker does not know
            return []
        deadline = time.monotonic() + self.settings.max_wait_ms / 1000
        taken: list[Job] = []
        seen: set[str] = set()
        while len(taken) < want:
            for job_id in queue.get_job_ids(0, 4 * self.settings.max_batch):
                if job_id in seen or len(taken) >= want:
                    continue
                seen.add(job_id)
                job = queue.fetch_job(job_id)
                if job is None or self._batch_key(job) != key:
                    continue
                if self._claim(keys=[queue.key, queue.intermediate_queue_key], args=[job_id]):
                    taken.append(job)
            if len(taken) >= want or time.monotonic() >= deadline:
                break
            time.sleep(0.002)
        return taken

    @staticmethod
    def _batch_key(job: Job) -> str | None:
        payload = payload_of(job)
        return batch_key(payload.method, payload.params)

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

    def _yield_to_edits(self) -> None:
        """At a fit's step boundary: run the edits queued for any model this worker holds,
        batch by batch, within the yield budget; then the fit goes on (``yielding``)."""
        now = time.monotonic()
        if now - self._last_yield_check < YIELD_CHECK_S or self._stop.is_set():
            return
        self._last_yield_check = now
        while self._yield_budget.allows(now):
            try:
                taken = self.queue_class.dequeue_any(
                    self._edit_queues, None, connection=self.connection
                )
            except STORE_DOWN as exc:  # the fit computes on; the next boundary looks again
                self._store_down(exc)
                return
            if taken is None:
                return
            job, queue = taken
            log.info("fit yields to edit %s", job.id)
            try:
                self._run_batch([job, *self._gather(job, queue)], queue)
            except Exception:  # an edit's bookkeeping must not end the fit; an unstarted
                # claim goes back to its queue at the next maintenance pass
                log.exception("running edit %s inside a fit failed", job.id)
                return
            finally:
                began, now = self._last_yield_check, time.monotonic()
                self._yield_budget.spend(began, now)
                self._last_yield_check = now
            try:
                record_observation(self.connection, "fit_yield_seconds", now - began)
            except STORE_DOWN as exc:
                self._store_down(exc)

    def _store_down(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._store_down_logged >= 5:
            self._store_down_logged = now
            log.warning("Redis unreachable (%s); waiting for it (a running batch computes on)", exc)

    def _retrying(self, what: str, write: Any) -> None:
        retry_while_store_down(what, write, self.settings.store_retry_s)

    def _holds(self, run: RunningJob, queue: Queue, *, reclaim: bool) -> bool:
        """Whether this worker may write the job's outcome (see ``fence``); checked once
        per outcome, so a write retried through a Redis blip is not refused by itself."""
        if run.fenced:
            return True
        if run.lost:  # the heartbeat found it run elsewhere (and counted it)
            return False
        verdict = fence(self._fence, run.job, run.execution, queue, self.settings.lease_s, reclaim)
        if verdict == FENCE_LOST:
            with self._lock:
                run.done = True
            log.warning(
                "job %s: this worker lost its lease (paused or cut off for more than %s s) "
                "and the job was taken over or has ended; this run's outcome is dropped",
                run.job.id,
                self.settings.lease_s,
            )
            record_outcome(self.connection, "lease_lost")
            return False
        if verdict == FENCE_RECLAIMED:
            log.warning(
                "job %s: this worker lost its lease, but the job was still queued: "
                "taken back, this run's outcome stands",
                run.job.id,
            )
            record_outcome(self.connection, "reclaimed")
        run.fenced = True
        return True

    def _cancel(self, run: RunningJob, queue: Queue) -> None:
        if not self._holds(run, queue, reclaim=True):
            run.canceled = True
            return
        run.canceled = run.done = True
        error = JobError(code=ErrorCode.CANCELED, message="canceled while running", retryable=False)
        run.job.meta[META_ERROR] = error.model_dump(mode="json")
        run.job.save_meta()
        run.job.ended_at = None
        run.job.cancel()
        # RQ's cancel leaves ended_at empty; the job view shows when it ended
        self.connection.hset(run.job.key, "ended_at", utcformat(utcnow()))
        self._cleanup_execution(run.job, run.execution)
        self._announce(run, JobEvent.CANCELED)
        record_outcome(self.connection, "canceled")

    def _hand_back(self, run: RunningJob, queue: Queue) -> None:
        """Re-queue a job at the front of its queue, no attempt spent: this worker is leaving."""
        if not self._holds(run, queue, reclaim=False):
            return  # already back in the queue or running elsewhere
        with self._lock:
            run.done = True  # the heartbeat thread renews its lease no more
        job = run.job
        job.meta.pop(META_PROGRESS, None)
        job.meta["handed_back"] = int(job.meta.get("handed_back", 0)) + 1
        job.started_at = None
        job.worker_name = None
        with self.connection.pipeline() as pipe:
            run.execution.delete(job=job, pipeline=pipe)
            queue._enqueue_job(job, pipeline=pipe, at_front=True)
            pipe.execute()
        record_outcome(self.connection, "handed_back")

    def _cleanup_execution(self, job: Job, execution: Execution) -> None:
        with self.connection.pipeline() as pipe:
            execution.delete(job=job, pipeline=pipe)
            pipe.execute()
        self.executions.pop(execution.id, None)

    # ------------------------------------------------------------------ outcomes
    def _announce(self, run: RunningJob, event: JobEvent) -> None:
        """Wake the API's long-polls waiting on this job."""
        self.connection.publish(JOB_EVENTS.format(id=run.job.id), event.value)

    def _succeed(
        self, run: RunningJob, queue: Queue, output: JobOutput, run_ms: float, batch: int
    ) -> None:
        if not self._holds(run, queue, reclaim=True):
            return
        ids = [self.blobs.put(png) for png in output.images]
        if output.asset is not None and run.asset_id is None:
            asset = output.asset
            run.asset_id = self.asset_index.create(
                name=asset.name,
                model=run.payload.model,
                method=run.payload.method,
                blob=self.blobs.put(asset.data),
                params=asset.params,
                metrics=asset.metrics,
                owner=run.payload.owner,
                job=run.job.id,
            )["id"]
        enqueued = run.job.enqueued_at.timestamp() if run.job.enqueued_at else run.started
        queue_ms = 1e3 * (run.started - enqueued)
        result = JobResult(
            outputs=ids,
            asset=run.asset_id,
            metrics={
                **output.metrics,
                "queue_ms": round(queue_ms, 1),
                "run_ms": round(run_ms, 1),
                "batch_size": batch,
            },
        ).model_dump(mode="json")
        run.job.meta[META_RESULT] = result
        run.job.save_meta()
        run.done = True
        self._finalize_success(run.job, queue, run.execution, result)
        self._announce(run, JobEvent.SUCCEEDED)
        record_outcome(self.connection, "succeeded")
        record_observation(self.connection, "run_seconds", run_ms / 1e3)
        record_observation(self.connection, "queue_seconds", queue_ms / 1e3)

    def _fail(
        self, run: RunningJob, queue: Queue, code: ErrorCode, message: str, *, retry: bool
    ) -> None:
        # a retryable failure of a lost lease was already counted by whoever took it back
        if not self._holds(run, queue, reclaim=not retry):
            return
        run.done = True
        if not retry:
            run.job.retries_left = 0
        run.job.meta[META_ERROR] = JobError(code=code, message=message, retryable=retry).model_dump(
            mode="json"
        )
        run.job.save_meta()
        self.handle_execution_ended(run.job, queue, self.settings.lease_s)
        self.handle_job_failure(
            job=run.job,
            queue=queue,
            started_job_registry=queue.started_job_registry,
            exc_string=f"{code.value}: {message}",
            execution=run.execution,
        )
        self._announce(run, JobEvent.RETRYING if retry else JobEvent.FAILED)
        record_outcome(self.connection, "failed" if not retry else "failed_attempt")


def _load_classifier(path: str) -> Any:
    """The judge for supervised fits, if this deployment has one."""
    if not path or not Path(path).is_dir():
        return None
    from worker.engine.classifier import AttributeClassifier

    return AttributeClassifier.load(path)


def _load_clip(path: str, device: str) -> Any:
    """CLIP for method C's loss, if configured; a configured but missing folder is an error."""
    if not path:
        return None
    if not Path(path).is_dir():
        raise SystemExit(f"EDITSERVE_CLIP: {path} is not a folder")
    from worker.engine.devices import resolve_device
    from worker.engine.methods.mixing import ClipScorer

    return ClipScorer(path, device=resolve_device(device))


def _load_vgg(path: str, device: str) -> Any:
    """VGG16 weights for method C's perceptual term, if configured; a missing file stops."""
    if not path:
        return None
    if not Path(path).is_file():
        raise SystemExit(f"EDITSERVE_VGG: {path} is not a file")
    from worker.engine.devices import resolve_device
    from worker.engine.methods.mixing import VggPerceptual

    return VggPerceptual(path, device=resolve_device(device))


def compile_buckets(max_batch: int, conditional: bool) -> list[int]:
    """U-Net batch sizes to compile: powers of two up to the largest batch a call can
    have (2 * max_batch rows under guidance), and that largest batch."""
    top = max_batch * (2 if conditional else 1)
    return sorted({1 << i for i in range(top.bit_length()) if 1 << i <= top} | {top})


def compile_model(denoiser: Denoiser, max_batch: int) -> None:
    """torch.compile the model's plain U-Net calls and compile every bucket before the
    worker says it is ready (CUDA: with CUDA graphs, ``reduce-overhead``)."""
    mode = "reduce-overhead" if denoiser.device.type == "cuda" else None
    denoiser.enable_compile(compile_buckets(max_batch, denoiser.conditional), mode=mode)
    start = time.perf_counter()
    try:
        denoiser.warm_compiled()
    except Exception:  # slower beats down: serve eagerly, and say why loudly
        denoiser.disable_compile()
        log.exception(
            "model %s: torch.compile failed (it needs a C compiler); serving it eagerly",
            denoiser.name,
        )
        return
    log.info(
        "model %s: compiled U-Net batches %s (%s) in %.1f s",
        denoiser.name,
        denoiser.compile_buckets,
        mode or "default",
        time.perf_counter() - start,
    )


def build_worker(settings: WorkerSettings, connection: Redis | None = None) -> BatchWorker:
    specs = [
        ModelSpec(name, path, device=settings.device, dtype=settings.dtype)
        for name, path in settings.model_paths().items()
    ]
    registry = ModelRegistry(specs)
    registry.load_all()  # resident before the first job; a bad model stops the start
    for name in registry.names:  # a model's measured defaults must be values its methods take
        try:
            check_editing_defaults(registry.get(name).editing_defaults)
        except ValueError as exc:
            raise SystemExit(f"model {name}: {exc}") from None
    if settings.compile:
        for name in registry.names:
            compile_model(registry.get(name), settings.max_batch)
    conn = connection or Redis.from_url(settings.redis_url)
    return BatchWorker(settings, registry, LocalBlobStore(settings.blob_dir), conn)


def run_worker(settings: WorkerSettings) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    worker = build_worker(settings)
    worker.work(with_scheduler=False)
