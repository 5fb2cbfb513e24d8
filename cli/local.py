"""``--local``: run one method's job in this process, through the worker's own
executor (the same validation, preparation and handler as a queued job), with the
model folder's editing defaults. An asset parameter takes a ``.safetensors`` path
(a local fit writes one)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from contract.jobs import JobPayload
from contract.spec import MethodSpec, Refused, resolve_params


class LocalFailure(Exception):
    """The job cannot run as given (the model will not load, or the job was refused)."""


class LocalAssets:
    """The asset index of a local run: asset files given by path, read into the blob store."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}

    def get(self, asset_id: str) -> dict[str, Any] | None:
        return self.records.get(asset_id)

    def add(self, blobs: Any, path: Path, method: str) -> str:
        from worker.engine.assets import metadata

        data = path.read_bytes()
        blob: str = blobs.put(data)
        model = metadata(data, method).get("model", "")
        self.records[blob] = {"id": blob, "method": method, "model": model, "blob": blob}
        return blob


def run_local(
    spec: MethodSpec,
    model: str,
    inputs: dict[str, str],
    params: dict[str, Any],
    *,
    seed: int,
    out: Path,
    device: str,
    dtype: str,
) -> tuple[list[Path], dict[str, Any], Path | None]:
    """(written images, metrics, the asset file or None) of one local job."""
    from store.blobs import LocalBlobStore
    from worker.engine import EngineError, load_denoiser
    from worker.executor import JobFailed, RunContext

    try:
        denoiser = load_denoiser(model, device=device, dtype=dtype)
    except EngineError as exc:
        raise LocalFailure(f"model: {exc}") from exc
    with tempfile.TemporaryDirectory() as tmp:
        blobs = LocalBlobStore(Path(tmp))
        assets = LocalAssets()
        ids = {role: blobs.put(Path(path).read_bytes()) for role, path in inputs.items()}
        params = dict(params)
        for name in spec.image_list_params:
            if name in params:
                params[name] = [blobs.put(Path(p).read_bytes()) for p in params[name]]
        try:
            for name, method in spec.asset_params.items():
                value = params.get(name)
                if isinstance(value, str):
                    params[name] = assets.add(blobs, Path(value), method)
                elif isinstance(value, list):
                    params[name] = [assets.add(blobs, Path(v), method) for v in value]
            # checked as the API checks a request, then run as the worker runs a job
            merged = resolve_params(
                spec, params, denoiser.editing_defaults,
                conditional=denoiser.conditional, model=denoiser.name, family=denoiser.family,
                inputs=frozenset(ids),
            )  # fmt: skip
            payload = JobPayload(
                id="local", kind=spec.kind, model=denoiser.name, method=spec.name, seed=seed,
                params=merged.model_dump(mode="json"), inputs=ids,
            )  # fmt: skip
            context = RunContext(blobs=blobs, assets=assets, classifier=_classifier())
            output = _run(denoiser, payload, blobs, context)
        except (JobFailed, EngineError, Refused) as exc:
            raise LocalFailure(str(exc)) from exc
    return _write(output, out, spec)


def _run(denoiser: Any, payload: JobPayload, blobs: Any, context: Any) -> Any:
    """The job through the worker's own preparation and handler, with a progress bar."""
    import torch
    from tqdm import tqdm

    from worker.executor import prepare, run_batch

    job = prepare(payload, denoiser, blobs)
    with tqdm(total=1, desc=payload.method, unit="step") as bar:

        def progress(step: int, total: int, phase: str | None = None) -> None:
            bar.set_description(phase or payload.method)
            bar.total, bar.n = total, step
            bar.refresh()

        with torch.no_grad():
            (output,) = run_batch(denoiser, [job], progress, context=context)
    return output


def _classifier() -> Any:
    """The worker's classifier (EDITSERVE_CLASSIFIER), for fits that label samples."""
    from worker.engine.classifier import AttributeClassifier
    from worker.settings import WorkerSettings

    folder = WorkerSettings().classifier
    return AttributeClassifier.load(folder) if folder and Path(folder).is_dir() else None


def _write(
    output: Any, out: Path, spec: MethodSpec
) -> tuple[list[Path], dict[str, Any], Path | None]:
    written = []
    single = out.suffix.lower() == ".png" and len(output.images) == 1
    for n, png in enumerate(output.images):
        path = out if single else out / f"{spec.name}-{n}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
        written.append(path)
    asset_path = None
    if output.asset is not None:
        folder = out.parent if out.suffix else out
        folder.mkdir(parents=True, exist_ok=True)
        asset_path = folder / f"{output.asset.name}.safetensors"
        asset_path.write_bytes(output.asset.data)
    return written, output.metrics, asset_path
