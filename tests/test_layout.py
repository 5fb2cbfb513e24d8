"""Architecture rules that a test holds."""

from __future__ import annotations

import subprocess
import sys


def _imports_none_of(setup: str, banned: tuple[str, ...]) -> bool:
    """Run ``setup`` in a fresh interpreter; True when no banned module got imported."""
    code = f"import sys; {setup}; sys.exit(1 if [m for m in {banned!r} if m in sys.modules] else 0)"
    return subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_service_cli_does_not_import_torch() -> None:
    assert _imports_none_of("import service.cli", ("torch",))


def test_engine_imports_no_queue_or_http() -> None:
    # the engine may read the torch-free method specs; it never reaches Redis or HTTP
    setup = (
        "import worker.engine, worker.engine.reconstruct, worker.engine.methods.inject, "
        "worker.engine.methods.directions"
    )
    assert _imports_none_of(setup, ("redis", "rq", "fastapi", "starlette", "httpx", "service.app"))


def test_service_app_does_not_import_torch_or_the_engine() -> None:
    setup = "import service.app; service.app.create_app()"
    assert _imports_none_of(setup, ("torch", "diffusers", "worker.engine"))
