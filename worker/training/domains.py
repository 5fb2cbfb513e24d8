"""The generator the trainers and benchmarks draw from, by name.

One domain: ``aligned``, generator v3 (``aligned.py``: one centred object, aligned like
the papers' faces). The quadrant domain of v2 went with its models: an object in any
quadrant put every factor wherever its object was, and no h-space method could edit
it. The name stays in each model's ``training.json`` (``domain``).
"""

from __future__ import annotations

from types import ModuleType

from worker.training import aligned

DOMAINS: dict[str, ModuleType] = {"aligned": aligned}
DEFAULT_DOMAIN = "aligned"


def domain(name: str) -> ModuleType:
    try:
        return DOMAINS[name]
    except KeyError:
        raise SystemExit(f"--domain: one of {sorted(DOMAINS)}, not {name!r}") from None
