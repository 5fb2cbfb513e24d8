"""A job this worker runs, with its lease and what it has done."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rq.executions import Execution
from rq.job import Job

from contract.jobs import JobPayload


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
