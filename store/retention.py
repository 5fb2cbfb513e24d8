"""Blob-store retention: what no job or asset references any more goes, after a while.

Uploads, outputs and asset tensors live in the blob store; Redis says who needs them.
A job keeps its inputs and outputs for as long as RQ keeps the job (``result_ttl``,
7 days); an asset keeps its tensors until it is deleted. A blob nothing references
is deleted once it is older than ``min_age_s``: an upload waiting for its first job
is not taken from under it, because the API refreshes a blob's time whenever a
request names it (``LocalBlobStore.touch``), so only blobs that nothing named for
``min_age_s`` can go. Cached inversions (``inversions/`` beside the blobs) are a
cache: a file not read for ``inversion_max_age_s`` goes.

Workers run a pass every ``gc_interval_s`` (one worker per interval, under a Redis
lock); ``editserve gc`` runs one by hand (``--dry-run`` to only count).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from redis import Redis
from rq.job import Job
from rq.serializers import JSONSerializer

from contract.keys import GC_LOCK
from store.assets import AssetIndex
from store.blobs import is_content_id
from store.ownership import forget_image

log = logging.getLogger("editserve.retention")


INVERSIONS = "inversions"


@dataclass
class GcReport:
    referenced: int = 0  # blob ids named by a job or an asset
    kept_unreferenced: int = 0  # unreferenced but younger than min_age_s
    deleted: int = 0
    deleted_bytes: int = 0
    inversions_deleted: int = 0
    inversions_deleted_bytes: int = 0
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _content_ids(value: Any) -> Iterator[str]:
    """Every content id anywhere in a JSON-like value (inputs, image lists, outputs)."""
    if isinstance(value, str):
        if is_content_id(value):
            yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _content_ids(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _content_ids(item)


def _job_ids(redis: Redis) -> list[str]:
    ids = []
    for raw in redis.scan_iter(match="rq:job:*", count=1000):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        parts = key.split(":")
        if len(parts) == 3:  # rq:job:<id>, not rq:job:<id>:dependents and the like
            ids.append(parts[2])
    return ids


def referenced_blobs(redis: Redis) -> set[str]:
    """Blob ids that a job Redis still holds (any status) or an asset names."""
    refs: set[str] = set()
    ids = _job_ids(redis)
    for start in range(0, len(ids), 500):
        jobs = Job.fetch_many(ids[start : start + 500], connection=redis, serializer=JSONSerializer)
        for job in jobs:
            if job is None:
                continue
            try:
                refs.update(_content_ids(list(job.args)))
            except Exception:  # a job of another app in the same Redis: not ours to read
                log.debug("job %s: unreadable arguments", job.id, exc_info=True)
            refs.update(_content_ids(job.meta.get("result")))
    for record in AssetIndex(redis).list():
        refs.update(_content_ids(record.get("blob")))
    return refs


def _blob_files(root: Path) -> Iterator[Path]:
    if not root.is_dir():
        return
    for fan in root.iterdir():
        if fan.is_dir() and len(fan.name) == 2:  # the blob fan-out, not inversions/
            for path in fan.iterdir():
                if path.is_file() and is_content_id(path.name):
                    yield path


def collect_garbage(
    redis: Redis,
    blob_root: Path,
    *,
    min_age_s: float = 86400.0,
    inversion_max_age_s: float = 7 * 86400.0,
    dry_run: bool = False,
    now: float | None = None,
) -> GcReport:
    """One pass: unreferenced blobs older than ``min_age_s``, stale cached inversions."""
    now = time.time() if now is None else now
    report = GcReport(dry_run=dry_run)
    refs = referenced_blobs(redis)
    report.referenced = len(refs)
    for path in _blob_files(Path(blob_root)):
        if path.name in refs:
            continue
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        if now - stat.st_mtime < min_age_s:
            report.kept_unreferenced += 1
            continue
        report.deleted += 1
        report.deleted_bytes += stat.st_size
        if not dry_run:
            path.unlink(missing_ok=True)
            forget_image(redis, path.name)
    inversions = Path(blob_root) / INVERSIONS
    if inversions.is_dir():
        for path in inversions.glob("*/*.safetensors"):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            if now - stat.st_mtime >= inversion_max_age_s:
                report.inversions_deleted += 1
                report.inversions_deleted_bytes += stat.st_size
                if not dry_run:
                    path.unlink(missing_ok=True)
    log.info("blob gc: %s", report.as_dict())
    return report


def maybe_collect(
    redis: Redis,
    blob_root: Path,
    *,
    interval_s: float,
    min_age_s: float,
    inversion_max_age_s: float,
) -> GcReport | None:
    """A pass if no one ran one in the last ``interval_s`` (one runner per interval)."""
    if interval_s <= 0 or not redis.set(GC_LOCK, str(time.time()), nx=True, ex=int(interval_s)):
        return None
    return collect_garbage(
        redis, blob_root, min_age_s=min_age_s, inversion_max_age_s=inversion_max_age_s
    )
