"""The ``editserve`` command line.

This module stays torch-free: commands that need the engine import it lazily,
so the API image (no torch) can still run the HTTP and client commands.

    editserve serve                 # embedded stack: bundled Redis + API + one worker
    editserve api | editserve worker
    editserve models | methods [--json]
    editserve submit --model M --method reconstruct --image image=in.png --out outdir
    editserve status ID
    editserve reconstruct --model DIR --image in.png --out out.png   # local, no service
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

DEFAULT_URL = os.environ.get("EDITSERVE_URL", "http://127.0.0.1:8000")


def _reconstruct(args: argparse.Namespace) -> int:
    from worker.commands import reconstruct_command

    return reconstruct_command(args)


def _edit_inject(args: argparse.Namespace) -> int:
    from worker.commands import inject_command

    return inject_command(args)


def _serve(args: argparse.Namespace) -> int:
    from service.embedded import run_stack

    env = {}
    if args.models:
        env["EDITSERVE_MODELS"] = args.models
    return run_stack(args.host, args.port, Path(args.data_dir), env)


def _api(args: argparse.Namespace) -> int:
    import uvicorn

    from service.app import create_app
    from service.settings import get_settings

    settings = get_settings()
    if not settings.redis_url:
        print("error: set EDITSERVE_REDIS_URL (e.g. redis://localhost:6379/0)", file=sys.stderr)
        return 2
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_level="info",
        access_log=not args.no_access_log,
    )
    return 0


def _worker(_args: argparse.Namespace) -> int:
    from worker.runner import WorkerNameTaken, run_worker
    from worker.settings import WorkerSettings

    try:
        run_worker(WorkerSettings())
    except WorkerNameTaken as exc:
        print(f"editserve worker: {exc}", file=sys.stderr)
        return 2
    return 0


def _gc(args: argparse.Namespace) -> int:
    from redis import Redis

    from service.settings import get_settings
    from store.retention import collect_garbage

    settings = get_settings()
    if not settings.redis_url:
        print("error: set EDITSERVE_REDIS_URL (e.g. redis://localhost:6379/0)", file=sys.stderr)
        return 2
    report = collect_garbage(
        Redis.from_url(settings.redis_url),
        settings.blob_dir,
        min_age_s=args.min_age_hours * 3600,
        inversion_max_age_s=args.inversion_max_age_days * 86400,
        dry_run=args.dry_run,
    )
    print(json.dumps(report.as_dict(), indent=2))
    return 0


def _client(args: argparse.Namespace) -> Any:
    from service.client import Client

    return Client(args.url, api_key=args.api_key)


def _print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(w) for c, w in zip(columns, widths, strict=True)))


def _models(args: argparse.Namespace) -> int:
    models = _client(args).models()
    if args.json:
        print(json.dumps(models, indent=2))
    else:
        _print_table(
            models, ["name", "family", "image_size", "h_shape", "dtype", "device", "workers"]
        )
    return 0


def _methods(args: argparse.Namespace) -> int:
    methods = _client(args).methods()
    if args.json:
        print(json.dumps(methods, indent=2))
        return 0
    for m in methods:
        print(f"{m['name']} ({m['kind']}; inputs: {', '.join(m['inputs'])}): {m['summary']}")
        for name, prop in m["params_schema"].get("properties", {}).items():
            allowed = prop.get("enum") or [
                v for v in (prop.get("minimum"), prop.get("maximum")) if v is not None
            ]
            default, note = m["defaults"].get(name), prop.get("description", "")
            print(f"    {name} = {default!r}  {allowed or ''}  {note}")
    return 0


def _progress_printer() -> tuple[Callable[[dict[str, Any]], None], Callable[[], None]]:
    from tqdm import tqdm

    bar = tqdm(total=1, desc="queued", unit="step", file=sys.stderr)

    def update(job: dict[str, Any]) -> None:
        progress = job["progress"]
        phase = progress.get("phase")  # a fit's stage: its steps are the phase's own
        bar.set_description(f"{job['status']}: {phase}" if phase else job["status"])
        if progress["total"]:
            bar.total = progress["total"]
            bar.n = progress["step"]
        eta = progress.get("eta_s")
        bar.set_postfix_str("" if eta is None else f"phase left ~{eta:.0f} s", refresh=False)
        bar.refresh()

    return update, bar.close


def _params(items: list[str]) -> dict[str, Any]:
    from service.client import parse_value

    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--param wants key=value, got {item!r}")
        params[key] = parse_value(value)
    return params


def _run_job(
    client: Any, body: dict[str, Any], args: argparse.Namespace, *, fit: bool = False
) -> dict[str, Any] | None:
    """Submit, print the id, follow it with a progress bar; the final view (None: no wait)."""
    accepted = client.submit(body, idempotency_key=getattr(args, "idempotency_key", None), fit=fit)
    print(accepted["id"])
    if getattr(args, "no_wait", False):
        return None
    update, close = _progress_printer()
    try:
        job: dict[str, Any] = client.wait(accepted["id"], on_update=update)
    finally:
        close()
    if job["status"] != "succeeded":
        print(f"{job['status']}: {job.get('error')}", file=sys.stderr)
    return job


def _write_outputs(client: Any, job: dict[str, Any], out: Path, single: bool = False) -> None:
    for n in range(len(job["outputs"])):
        path = out if single else out / f"{job['id']}-{n}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(client.output(job["id"], n))
        print(path)
    print(json.dumps(job["metrics"]))


def _submit(args: argparse.Namespace) -> int:
    from service.client import ApiFailure

    client = _client(args)
    try:
        inputs = {}
        for item in args.image:
            role, _, path = item.rpartition("=")
            inputs[role or "image"] = client.upload(Path(path))
        body = {
            "model": args.model,
            "method": args.method,
            "inputs": inputs,
            "params": _params(args.param),
            "seed": args.seed,
        }
        job = _run_job(client, body, args)
        if job is None:
            return 0
        if job["status"] != "succeeded":
            return 1
        _write_outputs(client, job, Path(args.out))
        return 0
    except (ApiFailure, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _fit(args: argparse.Namespace) -> int:
    """Any fit: labelled images, style images or one image uploaded first, then the job."""
    from service.client import ApiFailure

    client = _client(args)
    try:
        params = {"name": args.name, **_params(args.param)}
        if getattr(args, "kind", None):
            params["kind"] = args.kind
        if getattr(args, "positive", None) or getattr(args, "negative", None):
            params["positives"] = [client.upload(Path(p)) for p in args.positive]
            params["negatives"] = [client.upload(Path(p)) for p in args.negative]
        inputs = {}
        if args.what == "style-noise":
            params["images"] = [client.upload(Path(p)) for p in args.image]
        elif getattr(args, "image", None):
            inputs["image"] = client.upload(Path(args.image))
        body = {"model": args.model, "method": args.what, "inputs": inputs,
                "params": params, "seed": args.seed}  # fmt: skip
        job = _run_job(client, body, args, fit=True)
        if job is None or job["status"] != "succeeded":
            return 0 if job is None else 1
        print(json.dumps({"asset": job["asset"], "metrics": job["metrics"]}))
        return 0
    except (ApiFailure, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _edit_direction(args: argparse.Namespace) -> int:
    from service.client import ApiFailure

    client = _client(args)
    try:
        params = {"asset": args.asset, **_params(args.param)}
        body = {"model": args.model, "method": "direction",
                "inputs": {"image": client.upload(Path(args.image))},
                "params": params, "seed": args.seed}  # fmt: skip
        job = _run_job(client, body, args)
        if job is None or job["status"] != "succeeded":
            return 0 if job is None else 1
        _write_outputs(client, job, Path(args.out), single=True)
        return 0
    except (ApiFailure, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _status(args: argparse.Namespace) -> int:
    from service.client import ApiFailure

    try:
        print(json.dumps(_client(args).job(args.id), indent=2))
    except ApiFailure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _add_client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=DEFAULT_URL, help=f"the API (default {DEFAULT_URL})")
    p.add_argument("--api-key", default=os.environ.get("EDITSERVE_API_KEY"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="editserve", description="Training-free image edits on frozen diffusion U-Nets."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="embedded stack: bundled Redis + API + one worker")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--data-dir", default="var", help="Redis AOF and blob store live here")
    serve.add_argument("--models", default="", help="name=path,... (default: shipped models)")
    serve.set_defaults(handler=_serve)

    api = sub.add_parser("api", help="the HTTP API (needs EDITSERVE_REDIS_URL)")
    api.add_argument("--host", default="0.0.0.0")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--no-access-log", action="store_true", help="no line per request")
    api.set_defaults(handler=_api)

    worker = sub.add_parser("worker", help="a worker: one per device (settings: EDITSERVE_*)")
    worker.set_defaults(handler=_worker)

    gc = sub.add_parser(
        "gc", help="delete blobs no job or asset references (EDITSERVE_REDIS_URL, _BLOB_DIR)"
    )
    gc.add_argument(
        "--min-age-hours",
        type=float,
        default=24.0,
        help="keep unreferenced blobs that a request named more recently",
    )
    gc.add_argument(
        "--inversion-max-age-days",
        type=float,
        default=7.0,
        help="keep cached inversions read more recently",
    )
    gc.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    gc.set_defaults(handler=_gc)

    for name, handler, helptext in (
        ("models", _models, "models the running service holds"),
        ("methods", _methods, "methods with their parameters and defaults"),
    ):
        p = sub.add_parser(name, help=helptext)
        _add_client_args(p)
        p.add_argument("--json", action="store_true")
        p.set_defaults(handler=handler)

    submit = sub.add_parser(
        "submit", help="upload images, submit an edit, wait with a progress bar"
    )
    _add_client_args(submit)
    submit.add_argument("--model", required=True)
    submit.add_argument("--method", required=True)
    submit.add_argument("--image", action="append", default=[], help="role=path (or just path)")
    submit.add_argument("--param", action="append", default=[], help="key=value (JSON values)")
    submit.add_argument("--seed", type=int, default=0)
    submit.add_argument("--idempotency-key")
    submit.add_argument("--out", default=".", help="folder for the output PNGs")
    submit.add_argument("--no-wait", action="store_true", help="print the job id and return")
    submit.set_defaults(handler=_submit)

    status = sub.add_parser("status", help="a job's status as JSON")
    _add_client_args(status)
    status.add_argument("id")
    status.set_defaults(handler=_status)

    edit = sub.add_parser("edit", help="one edit: inject locally, direction through the service")
    edit_sub = edit.add_subparsers(dest="method", required=True, metavar="METHOD")
    inject = edit_sub.add_parser(
        "inject", help="method A: the content image in the style image's style"
    )
    inject.add_argument("--model", required=True, help="a diffusers model folder or a hub id")
    inject.add_argument("--content", required=True, help="the content image")
    inject.add_argument("--style", required=True, help="the style image")
    inject.add_argument("--out", required=True, help="where to write the result (PNG)")
    inject.add_argument(
        "--param", action="append", default=[], help="key=value, as `editserve methods` lists"
    )
    inject.add_argument("--seed", type=int, default=0)
    inject.add_argument("--device", default="auto")
    inject.add_argument("--dtype", default="auto")
    inject.set_defaults(handler=_edit_inject)

    direction = edit_sub.add_parser(
        "direction", help="method E through the service: move an image along a fitted direction"
    )
    _add_client_args(direction)
    direction.add_argument("--model", required=True, help="a model the service holds")
    direction.add_argument("--image", required=True)
    direction.add_argument("--asset", required=True, help="asset id from `editserve fit ...`")
    direction.add_argument("--out", required=True, help="where to write the result (PNG)")
    direction.add_argument(
        "--param", action="append", default=[], help="key=value: scale, component, t_edit, ..."
    )
    direction.add_argument("--seed", type=int, default=0)
    direction.set_defaults(handler=_edit_direction)

    fit = sub.add_parser("fit", help="fit an asset through the service")
    fit_sub = fit.add_subparsers(dest="what", required=True, metavar="ASSET")
    dirs = fit_sub.add_parser("directions", help="method E: PCA, supervised or Jacobian directions")
    _add_client_args(dirs)
    dirs.add_argument("--model", required=True, help="a model the service holds")
    dirs.add_argument("--name", required=True, help="the asset's name")
    dirs.add_argument("--kind", choices=("pca", "supervised", "jacobian"), default="pca")
    dirs.add_argument("--positive", action="append", default=[], help="labelled image (repeat)")
    dirs.add_argument("--negative", action="append", default=[], help="labelled image (repeat)")
    dirs.add_argument("--image", help="the image (jacobian)")
    dirs.add_argument(
        "--param", action="append", default=[], help="key=value: steps, samples, k, factor, ..."
    )
    dirs.add_argument("--seed", type=int, default=0)
    dirs.add_argument("--no-wait", action="store_true", help="print the job id and return")
    dirs.set_defaults(handler=_fit)

    style = fit_sub.add_parser("style-noise", help="method D: a style's initial-noise distribution")
    _add_client_args(style)
    style.add_argument("--model", required=True, help="a model the service holds")
    style.add_argument("--name", required=True, help="the asset's name")
    style.add_argument("--image", action="append", required=True, help="style image (2 or more)")
    style.add_argument("--param", action="append", default=[], help="key=value: dct_k, fit")
    style.add_argument("--seed", type=int, default=0)
    style.add_argument("--no-wait", action="store_true", help="print the job id and return")
    style.set_defaults(handler=_fit)

    bound = fit_sub.add_parser("boundary", help="method B: SVM boundaries at the mixing step")
    _add_client_args(bound)
    bound.add_argument("--model", required=True, help="a model the service holds")
    bound.add_argument("--name", required=True, help="the asset's name")
    bound.add_argument("--positive", action="append", default=[], help="labelled image (repeat)")
    bound.add_argument("--negative", action="append", default=[], help="labelled image (repeat)")
    bound.add_argument(
        "--param", action="append", default=[], help="key=value: factor, value, t0, steps, ..."
    )
    bound.add_argument("--seed", type=int, default=0)
    bound.add_argument("--no-wait", action="store_true", help="print the job id and return")
    bound.set_defaults(handler=_fit)

    rec = sub.add_parser(
        "reconstruct",
        help="invert an image and regenerate it locally; print the reconstruction PSNR",
        description="Invert one image with DDIM or edit-friendly DDPM inversion, sample it "
        "back, write the result and print the PSNR against the input. No service needed.",
    )
    rec.add_argument("--model", required=True, help="a diffusers model folder or a hub id")
    rec.add_argument("--image", required=True, help="input image (PNG, JPEG, ...)")
    rec.add_argument("--out", required=True, help="where to write the reconstruction (PNG)")
    rec.add_argument("--steps", type=int, default=50, help="inversion and sampling steps (50)")
    rec.add_argument("--inversion", choices=("ddim", "ddpm"), default="ddim")
    rec.add_argument("--grid", choices=("leading", "linspace"), default="leading")
    rec.add_argument(
        "--refine",
        type=int,
        default=1,
        help="fixed-point iterations per DDIM inversion step (1; 0: plain DDIM)",
    )
    rec.add_argument(
        "--fit",
        choices=("error", "resize", "crop"),
        default="error",
        help="how an image of another size is fitted to the model (default: refuse)",
    )
    rec.add_argument("--prompt", default="", help="prompt for text-conditioned models")
    rec.add_argument("--seed", type=int, default=0, help="seed of the edit-friendly inversion")
    rec.add_argument("--device", default="auto")
    rec.add_argument(
        "--dtype", default="auto", help="auto (fp16 on CUDA, fp32 on CPU), float32, bfloat16"
    )
    rec.set_defaults(handler=_reconstruct)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    from service.client import ApiFailure

    try:
        return handler(args)
    except ApiFailure as exc:  # the API's own error, as it said it (no traceback)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # httpx's connection errors are OSErrors underneath
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        if type(exc).__module__.startswith("httpx"):
            url = getattr(args, "url", DEFAULT_URL)
            print(f"error: cannot reach the API at {url} ({exc}); is it running? "
                  "(`editserve serve` starts one here)", file=sys.stderr)  # fmt: skip
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
