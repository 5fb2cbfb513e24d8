"""The worker's side of each method: its handler, found by the method module's name.

For every module in ``contract.methods.MODULES`` this package has a module of the
same name whose ``HANDLERS`` holds one ``Handler`` per spec of it. The registry is
built from those, so a spec without a handler (or the reverse) fails at import, and
``tests/worker/test_method_units.py`` holds the rest (parameter classes, batch fields).
"""

from __future__ import annotations

import importlib
from typing import Any

from contract import methods as contract_methods
from worker.methods.handler import Handler


def _discover() -> dict[str, Handler[Any]]:
    found: dict[str, Handler[Any]] = {}
    for module in contract_methods.MODULES:
        name = module.__name__.rsplit(".", 1)[-1]
        own = importlib.import_module(f"{__name__}.{name}")
        for handler in own.HANDLERS:
            found[handler.spec.name] = handler
        specs = {spec.name for spec in contract_methods.specs_of(module)}
        handled = {h.spec.name for h in own.HANDLERS}
        if specs != handled:
            raise RuntimeError(
                f"{own.__name__}: handlers for {sorted(handled)}, specs {sorted(specs)}"
            )
    return found


HANDLERS: dict[str, Handler[Any]] = _discover()


def register(handler: Handler[Any]) -> None:
    """Add a method at run time, its spec and its handler (a plug-in, a test's toy method)."""
    contract_methods.register(handler.spec)
    HANDLERS[handler.spec.name] = handler


def unregister(name: str) -> None:
    contract_methods.unregister(name)
    HANDLERS.pop(name, None)
