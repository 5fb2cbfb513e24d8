"""A running fit yields to queued edits, and its progress says what it is doing.

A fit can hold a worker for minutes. At each of its step boundaries (a progress
report: a sampling or inversion step, a chunk of samples, an epoch's step) the
worker looks, at most every ``YIELD_CHECK_S``, for queued edits of any model it
holds; if there are some, it runs them as a batch right there, on the resident
model, and then the fit goes on where it stopped. The fit's state stays in its
stack frame, its hooks pause meanwhile (``HookManager.scope``), and every random
draw of a fit comes from its own seeded generator, so its result is bit-identical
to an uninterrupted run.

``YieldBudget`` bounds how much edit time a fit gives away: at most ``share`` of
any ``window_s`` seconds (the check is before a batch starts, so one batch may
overrun it by its own length). Under a steady stream of edits the fit still gets
the rest.

``PhaseProgress`` turns a handler's ``progress(step, total, phase)`` into what the
job view shows: the step, the total, the phase and an estimate of the phase's time
left, from the pace since the phase's first report.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from contract.jobs import JobProgress

YIELD_CHECK_S = 0.25  # how often a fit's step boundary looks for queued edits


@dataclass
class YieldBudget:
    """Edit time a fit may yield: at most ``share`` of any ``window_s`` seconds."""

    share: float
    window_s: float = 60.0
    spans: deque[tuple[float, float]] = field(default_factory=deque)

    def spent(self, now: float) -> float:
        """Seconds of yielded edit time inside the window that ends at ``now``."""
        start = now - self.window_s
        while self.spans and self.spans[0][1] <= start:
            self.spans.popleft()
        return sum(min(end, now) - max(begin, start) for begin, end in self.spans)

    def allows(self, now: float) -> bool:
        return self.share > 0 and self.spent(now) < self.share * self.window_s

    def spend(self, begin: float, end: float) -> None:
        self.spans.append((begin, end))


@dataclass
class PhaseProgress:
    """The job view's progress: step and total of the current phase, the phase's name
    (None for a one-phase job), and ``eta_s``, the phase's time left at its pace so far
    (None until a second report)."""

    clock: Any = time.monotonic
    phase: str | None = None
    first: tuple[float, int] | None = None  # (when, step) of the phase's first report

    def report(self, step: int, total: int, phase: str | None = None) -> JobProgress:
        now = self.clock()
        if phase != self.phase or self.first is None or step < self.first[1]:
            self.phase, self.first = phase, (now, step)
        eta = None
        first_at, first_step = self.first
        if step > first_step and total > 0:
            eta = round((now - first_at) / (step - first_step) * max(total - step, 0), 1)
        return JobProgress(step=step, total=total, phase=phase, eta_s=eta)
