"""Every Redis key and channel name the API and the workers share, in one place.

RQ's own keys (``rq:job:*``, ``rq:queue:*``, its registries) are RQ's; these are ours.
"""

from __future__ import annotations

from contract.jobs import JobKind

QUEUE_PREFIX = "editserve"

# workers
HEARTBEAT_KEY = "editserve:workers:heartbeat"  # hash: worker name -> unix time of last beat
MODELS_KEY = "editserve:workers:models"  # hash: worker name -> JSON list of ModelInfo

# jobs
CANCEL_KEY = "editserve:cancel:{id}"  # set by the API; a running job stops at its next step
JOB_EVENTS = "editserve:job-events:{id}"  # pub/sub: JobEvent values, the job's end or retry
# sorted set: every accepted job not yet seen ended, by submit time; a worker's
# maintenance queues again any that says queued while nothing holds it
OPEN_JOBS_KEY = "editserve:open-jobs"
# sorted set: every job of an owner ("-": no API keys), scored by submit time, for listing
JOB_INDEX = "editserve:jobs:{owner}"
# sorted set: an owner's jobs not yet seen ended, scored by when their place was taken
OWNER_JOBS = "editserve:owner-jobs:{owner}"
IDEMPOTENCY_KEY = "editserve:idempotency:{owner}:{key}"  # -> the job id a key first made

# assets
ASSET_KEY = "editserve:asset:{id}"
ASSET_INDEX = "editserve:assets"  # sorted set: id by creation time
ASSET_VERSIONS = "editserve:asset-versions:{owner}:{name}"  # counter per name

# blobs, metrics, retention
IMAGE_OWNERS = "editserve:image-owners:{id}"  # set of owner digests
OUTCOMES_KEY = "editserve:stats:outcomes"
HISTOGRAM_KEY = "editserve:stats:hist:{name}"
GC_LOCK = "editserve:gc:lock"


def doorbell_key(queue_key: str) -> str:
    """A list the API pushes a token to after each submit to ``queue_key`` (the RQ
    queue's Redis key): idle workers block on it. It carries no job."""
    return f"{queue_key}:doorbell"


def queue_name(model: str, kind: JobKind = JobKind.EDIT) -> str:
    """Two RQ queues per model, edits and fits; the workers that hold the model listen on
    every edit queue before any fit queue, so a queued edit never waits behind a queued
    fit (a fit can take minutes; an edit, a second). ``model`` has no ':' (settings)."""
    return f"{QUEUE_PREFIX}:{model}" if kind == JobKind.EDIT else f"{QUEUE_PREFIX}:{model}:fits"
