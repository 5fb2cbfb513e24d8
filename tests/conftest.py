from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from service.embedded import RedisProcess
from tests.engine.tiny_models import save_cond_pipeline, save_pixel_model
from worker.engine import Denoiser, load_denoiser

# what `pytest -m "not slow"` leaves out: real processes (e2e, chaos), the shipped
# models, torch.compile; CI runs everything
SLOW = ("tests/e2e/", "tests/models/", "tests/engine/test_compile.py")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # the test script runs one pytest worker per core (pytest-xdist): one torch thread
    # each, so two workers' OpenMP pools never contend for the same two cores
    import torch

    torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = Path(__file__).resolve().parent.parent
    for item in items:
        where = Path(str(item.fspath)).resolve().relative_to(root).as_posix()
        if where.startswith(SLOW):
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    """Under EDITSERVE_STRICT_SKIPS=1 (the test script, CI) a skipped test fails the run."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("EDITSERVE_STRICT_SKIPS") == "1":
        report.outcome = "failed"
        report.longrepr = f"skipped, which EDITSERVE_STRICT_SKIPS=1 forbids: {report.longrepr}"


@pytest.fixture(scope="session")
def pixel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_pixel_model(tmp_path_factory.mktemp("pixel"))


@pytest.fixture(scope="session")
def cond_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_cond_pipeline(tmp_path_factory.mktemp("cond"))


@pytest.fixture(scope="session")
def pixel(pixel_dir: Path) -> Denoiser:
    return load_denoiser(pixel_dir, name="tiny-pixel", device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def cond(cond_dir: Path) -> Denoiser:
    return load_denoiser(cond_dir, name="tiny-cond", device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """A real Redis (the bundled server), started once per session for the tests that need one."""
    proc = RedisProcess(tmp_path_factory.mktemp("redis")).start()
    yield proc
    proc.stop()
