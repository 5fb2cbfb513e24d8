"""A client generated from the committed document drives the service, typed, end to end.

openapi-python-client generates the client from ``openapi/openapi.json`` with
``openapi/client-config.yaml``; the test then uploads with it, submits an edit or a
fit of each method family the e2e stack's model runs (A: inject, B: boundary and
boundary-edit, D: style-noise and style-generate, E: directions and direction, and
reconstruct), polls and downloads, through the generated calls and request classes
only: no hand-written HTTP. (C, lam and mix, needs a text-conditioned model, which
this stack does not hold; its request classes are generated all the same.)
"""

from __future__ import annotations

import importlib
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from PIL import Image

from service.embedded import LocalStack as Stack

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.png"))
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client_package(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    out = tmp_path_factory.mktemp("generated")
    bin_dir = Path(sys.executable).parent
    subprocess.run(
        [str(bin_dir / "openapi-python-client"), "generate",
         "--path", str(ROOT / "openapi" / "openapi.json"),
         "--config", str(ROOT / "openapi" / "client-config.yaml"),
         "--meta", "none", "--output-path", str(out / "editserve_client")],
        check=True, cwd=out, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"},
    )  # fmt: skip
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module("editserve_client")
    finally:
        sys.path.remove(str(out))
        for name in [n for n in sys.modules if n.split(".")[0] == "editserve_client"]:
            del sys.modules[name]


def _models(pkg: ModuleType) -> Any:
    return importlib.import_module(f"{pkg.__name__}.models")


def _call(pkg: ModuleType, group: str, name: str) -> Any:
    return importlib.import_module(f"{pkg.__name__}.api.{group}.{name}")


def test_a_generated_client_uploads_edits_fits_polls_and_downloads(
    stack: Stack, client_package: ModuleType
) -> None:
    pkg, m = client_package, _models(client_package)
    client = pkg.Client(base_url=stack.api_url, raise_on_unexpected_status=True, timeout=60)
    types = importlib.import_module(f"{pkg.__name__}.types")

    def upload(path: Path) -> str:
        body = m.UploadImageFilesBody(
            file=types.File(
                payload=io.BytesIO(path.read_bytes()), file_name=path.name, mime_type="image/png"
            ),
        )
        image = _call(pkg, "images", "upload_image").sync(client=client, body=body)
        assert isinstance(image, m.ImagePublic) and (image.width, image.height) == (32, 32)
        return str(image.id)

    def run(route: str, request: Any) -> Any:
        accepted = _call(pkg, "edits", route).sync(client=client, body=request)
        assert isinstance(accepted, m.JobAccepted), accepted
        get_job = _call(pkg, "jobs", "get_job")
        for _ in range(120):
            job = get_job.sync(accepted.id, client=client, wait=5)
            if job.status in (m.JobStatus.SUCCEEDED, m.JobStatus.FAILED, m.JobStatus.CANCELED):
                break
        assert job.status == m.JobStatus.SUCCEEDED, job
        return job

    def download(job: Any) -> Image.Image:
        out = _call(pkg, "jobs", "get_output").sync(job.id, 0, client=client)
        assert isinstance(out, types.File), out
        image = Image.open(out.payload)
        assert image.format == "PNG" and image.size == (32, 32)
        return image

    ids = [upload(path) for path in EXAMPLES[:4]]
    edits = [
        m.ReconstructRequest(method="reconstruct", model="shapes32",
                             inputs=m.ReconstructInputs(image=ids[0]),
                             params=m.ReconstructParams(steps=2)),
        m.InjectRequest(method="inject", model="shapes32",
                        inputs=m.InjectInputs(content=ids[0], style=ids[1]),
                        params=m.InjectParams(steps=2)),
    ]  # fmt: skip
    style = run("create_fit", m.StyleNoiseRequest(
        method="style-noise", model="shapes32", params=m.StyleNoiseFitParams(name="s", images=ids)
    ))  # fmt: skip
    directions = run("create_fit", m.DirectionsRequest(
        method="directions", model="shapes32",
        params=m.DirectionFitParams(name="d", kind=m.DirectionFitParamsKind.PCA, samples=8,
                                    steps=2, k=1),
    ))  # fmt: skip
    boundary = run("create_fit", m.BoundaryRequest(
        method="boundary", model="shapes32",
        params=m.BoundaryFitParams(name="b", positives=ids[:2], negatives=ids[2:], t0=500,
                                   steps=2, held_out=0.0),
    ))  # fmt: skip
    assert all(isinstance(j.asset, str) for j in (style, directions, boundary))
    edits += [
        m.StyleGenerateRequest(method="style-generate", model="shapes32",
                               params=m.StyleGenerateParams(asset=style.asset, steps=2)),
        m.DirectionRequest(method="direction", model="shapes32",
                           inputs=m.DirectionInputs(image=ids[2]),
                           params=m.DirectionEditParams(asset=directions.asset, scale=1.0)),
        m.BoundaryEditRequest(method="boundary-edit", model="shapes32",
                              inputs=m.BoundaryEditInputs(image=ids[3]),
                              params=m.BoundaryEditParams(asset=boundary.asset, distance=1.0)),
    ]  # fmt: skip
    for request in edits:
        download(run("create_edit", request))
    # the service's refusals come back typed too, in the one error shape
    refused = _call(pkg, "edits", "create_edit").sync(
        client=client,
        body=m.ReconstructRequest(method="reconstruct", model="nope",
                                  inputs=m.ReconstructInputs(image=ids[0])),
    )  # fmt: skip
    assert isinstance(refused, m.ErrorResponse) and refused.error.field == "model"
