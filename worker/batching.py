"""Which queued jobs may run together: the handler's batch fields, equal."""

from __future__ import annotations

from typing import Any

from contract.methods import METHODS
from worker.methods import HANDLERS


def batch_key(method: str, params: dict[str, Any]) -> str | None:
    """Jobs of one model with equal keys run together as one batch; None: the job runs
    alone (a fit, or a method this worker does not know)."""
    handler, spec = HANDLERS.get(method), METHODS.get(method)
    if handler is None or spec is None or handler.batch_fields is None:
        return None
    defaults = spec.defaults()
    values = [f"{name}={params.get(name, defaults.get(name))}" for name in handler.batch_fields]
    return ":".join([method, *values])
