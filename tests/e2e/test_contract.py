"""The committed OpenAPI document against the real app: schemathesis, all default checks.

A stack of its own (the bundled Redis, one worker holding shapes32, the API over
HTTP), so that what the fuzzer queues cannot hold up the other end-to-end tests.
Before the run, one real job and one real asset exist, and their ids are given to
schemathesis as the path parameters' values, so the job and asset operations are
exercised on resources that exist as well as on ids that do not. Every phase runs
(examples, coverage, fuzzing, stateful), bounded in examples per operation.

The same run by hand, against ``editserve serve``:

    st run openapi/openapi.json --url http://127.0.0.1:8000 -n 50
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from benchmarks import wait_for_job
from service.embedded import LocalStack, RedisProcess
from tests.e2e.conftest import running, stack_env

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    server = RedisProcess(tmp_path_factory.mktemp("contract-redis")).start()
    blob_dir = tmp_path_factory.mktemp("contract-blobs")
    stack = LocalStack(redis_url=server.url, blob_dir=blob_dir, env=stack_env(server.url, blob_dir))
    try:
        with running(stack, "contract"):
            yield stack
    finally:
        server.stop()


def test_schemathesis_finds_no_failure(own_stack: LocalStack, tmp_path: Path) -> None:
    api = own_stack.api_url
    ids = []
    for path in sorted(EXAMPLES.glob("*.png"))[:2]:
        r = httpx.post(f"{api}/v1/images", files={"file": (path.name, path.read_bytes())})
        ids.append(r.json()["id"])
    edit = {"model": "shapes32", "method": "reconstruct", "inputs": {"image": ids[0]},
            "params": {"steps": 2}}  # fmt: skip
    job = wait_for_job(api, httpx.post(f"{api}/v1/edits", json=edit).json()["id"], timeout=300)
    fit = {"model": "shapes32", "method": "style-noise", "params": {"name": "s", "images": ids}}
    fitted = wait_for_job(api, httpx.post(f"{api}/v1/fits", json=fit).json()["id"], timeout=300)
    assert job["status"] == fitted["status"] == "succeeded", (job, fitted)
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        (ROOT / "schemathesis.toml").read_text()
        + f'\n[parameters]\njob_id = "{job["id"]}"\nasset_id = "{fitted["asset"]}"\nn = 0\n'
    )
    st = Path(sys.executable).with_name("st")
    run = subprocess.run(
        [str(st), "--config-file", str(config), "run", str(ROOT / "openapi" / "openapi.json"),
         "--url", api, "--max-examples", "25", "--seed", "1", "--workers", "2", "--no-color"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    out = run.stdout + run.stderr
    cases = re.search(r"(\d+) generated", out)
    print(out[-3000:])
    assert run.returncode == 0 and cases is not None, out[-6000:]
    assert int(cases.group(1)) > 1000  # every operation, every phase: not a token run
    assert "Stateful" in out and "Coverage" in out and "Fuzzing" in out
