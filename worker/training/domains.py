"""The generators the trainers can draw from, by name.

``quadrants`` is the shipped v2 domain (``shapes.py``: an object in one of four
quadrants); ``aligned`` is generator v3 (``aligned.py``: one centred object). Both
modules expose the same names: ``FACTORS``, ``CONTENT_FACTORS``, ``STYLE_FACTORS``,
``Labels``, ``generate``, ``render``, ``label_array``.
"""

from __future__ import annotations

from types import ModuleType

from worker.training import aligned, shapes

DOMAINS: dict[str, ModuleType] = {"quadrants": shapes, "aligned": aligned}


def domain(name: str) -> ModuleType:
    try:
        return DOMAINS[name]
    except KeyError:
        raise SystemExit(f"--domain: one of {sorted(DOMAINS)}, not {name!r}") from None
