"""Architecture rules that a test holds."""

from __future__ import annotations

import subprocess
import sys


def test_service_cli_does_not_import_torch() -> None:
    code = "import sys, service.cli; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_engine_imports_no_queue_or_http() -> None:
    code = (
        "import sys, worker.engine, worker.engine.reconstruct; "
        "bad = [m for m in ('redis', 'rq', 'fastapi', 'httpx', 'service') if m in sys.modules]; "
        "sys.exit(1 if bad else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_service_app_does_not_import_torch_or_the_engine() -> None:
    code = (
        "import sys, service.app; service.app.create_app(); "
        "bad = [m for m in ('torch', 'diffusers', 'worker.engine') if m in sys.modules]; "
        "sys.exit(1 if bad else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
