"""Architecture rules that a test holds."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports_none_of(setup: str, banned: tuple[str, ...]) -> bool:
    """Run ``setup`` in a fresh interpreter; True when no banned module got imported."""
    code = f"import sys; {setup}; sys.exit(1 if [m for m in {banned!r} if m in sys.modules] else 0)"
    return subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def _imports(folder: str) -> list[tuple[str, str]]:
    """(file, imported module) for every import statement under ``folder``, lazy ones too."""
    found = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found += [(str(path.relative_to(ROOT)), alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.append((str(path.relative_to(ROOT)), node.module))
    return found


def _from(folder: str, packages: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(f, m) for f, m in _imports(folder) if m.split(".")[0] in packages]


def test_the_processes_share_only_the_contract_and_the_store() -> None:
    assert _from("worker", ("service", "cli")) == []  # the worker never imports the API
    assert _from("service", ("worker", "cli")) == []
    assert _from("store", ("service", "worker", "cli")) == []
    assert _from("contract", ("service", "worker", "store", "cli", "torch", "redis", "rq")) == []


def test_the_engine_imports_only_the_contract() -> None:
    assert _from("worker/engine", ("service", "store", "cli", "redis", "rq", "httpx")) == []
    inside = [(f, m) for f, m in _imports("worker/engine") if m.startswith("worker.")]
    assert all(m.startswith("worker.engine") for _, m in inside), inside


def test_no_handler_takes_untyped_params() -> None:
    for path in sorted((ROOT / "worker" / "methods").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("run_"):
                batch = next(a for a in node.args.args if a.arg == "batch")
                assert isinstance(batch.annotation, ast.Subscript), (path.name, node.name)
                assert ast.unparse(batch.annotation.slice) != "Any", (path.name, node.name)
            if isinstance(node, ast.AnnAssign) and ast.unparse(node.target) == "params":
                assert ast.unparse(node.annotation) != "Any", path.name


def test_only_the_settings_classes_read_the_environment() -> None:
    readers = []
    for folder in ("cli", "contract", "service", "store", "worker"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            text = path.read_text()
            if ("os.environ" in text or "os.getenv" in text) and path.name != "settings.py":
                readers.append(str(path.relative_to(ROOT)))
    assert readers == []


def test_the_cli_does_not_import_torch() -> None:
    assert _imports_none_of("import cli.main; cli.main.build_parser()", ("torch",))


def test_engine_imports_no_queue_or_http() -> None:
    setup = (
        "import worker.engine, worker.engine.reconstruct, worker.engine.methods.inject, "
        "worker.engine.methods.directions"
    )
    assert _imports_none_of(setup, ("redis", "rq", "fastapi", "starlette", "httpx", "service"))


def test_service_app_does_not_import_torch_or_the_engine() -> None:
    setup = "import service.app; service.app.create_app()"
    assert _imports_none_of(setup, ("torch", "diffusers", "worker.engine"))
