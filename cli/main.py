"""The ``editserve`` command line (see ``cli/__init__.py`` for its parts).

editserve serve                      # embedded stack: bundled Redis + API + one worker
editserve api | worker | gc
editserve models | methods [--json]
editserve edit inject --model shapes32 --content a.png --style b.png --out c.png
editserve edit reconstruct --local --model models/shapes32-ddpm --image a.png --out b.png
editserve fit directions --model shapes32 --name red --kind supervised --factor colour ...
editserve submit --model M --method NAME --image role=path --param key=value
editserve status ID
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cli import launch, methods
from cli.client import ApiFailure, Client
from cli.settings import CliSettings


def _client(args: argparse.Namespace) -> Client:
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
        columns = ["name", "family", "image_size", "h_shape", "dtype", "device", "workers"]
        _print_table(models, columns)
    return 0


def _methods(args: argparse.Namespace) -> int:
    found = _client(args).methods()
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    for m in found:
        print(f"{m['name']} ({m['kind']}; inputs: {', '.join(m['inputs'])}): {m['summary']}")
        for name, prop in m["params_schema"].get("properties", {}).items():
            allowed = prop.get("enum") or [
                v for v in (prop.get("minimum"), prop.get("maximum")) if v is not None
            ]
            default, note = m["defaults"].get(name), prop.get("description", "")
            print(f"    {name} = {default!r}  {allowed or ''}  {note}")
    return 0


def _status(args: argparse.Namespace) -> int:
    print(json.dumps(_client(args).job(args.id), indent=2))
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


def _through_service(args: argparse.Namespace, body: dict[str, Any], fit: bool) -> int:
    """Submit, print the id, follow it with a progress bar, write the outputs."""
    client = _client(args)
    accepted = client.submit(body, idempotency_key=args.idempotency_key, fit=fit)
    print(accepted["id"])
    if args.no_wait:
        return 0
    update, close = _progress_printer()
    try:
        job: dict[str, Any] = client.wait(accepted["id"], on_update=update)
    finally:
        close()
    if job["status"] != "succeeded":
        print(f"{job['status']}: {job.get('error')}", file=sys.stderr)
        return 1
    out = Path(args.out)
    single = out.suffix.lower() == ".png" and len(job["outputs"]) == 1
    for n in range(len(job["outputs"])):
        path = out if single else out / f"{job['id']}-{n}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(client.output(job["id"], n))
        print(path)
    print(methods.describe_outputs(job["metrics"], job.get("asset")))
    return 0


def _method(args: argparse.Namespace) -> int:
    """``edit <method>`` / ``fit <method>``: through the service, or ``--local``."""
    spec = args.spec
    inputs, params = methods.collect(args, spec)
    if args.local:
        from cli.local import LocalFailure, run_local

        try:
            written, metrics, asset = run_local(
                spec, args.model, inputs, params, seed=args.seed, out=Path(args.out),
                device=args.device, dtype=args.dtype,
            )  # fmt: skip
        except LocalFailure as exc:  # the engine's refusal, naming the field
            print(f"error: {exc}", file=sys.stderr)
            return 2
        for path in written:
            print(path)
        print(methods.describe_outputs(metrics, str(asset) if asset else None))
        return 0
    client = _client(args)
    uploaded = {role: client.upload(Path(path)) for role, path in inputs.items()}
    for name in spec.image_list_params:
        if name in params:
            params[name] = [client.upload(Path(p)) for p in params[name]]
    body = {"model": args.model, "method": spec.name, "inputs": uploaded, "params": params,
            "seed": args.seed}  # fmt: skip
    return _through_service(args, body, fit=spec.kind.value == "fit")


def _submit(args: argparse.Namespace) -> int:
    """Any method by name, images as role=path and parameters as key=value."""
    client = _client(args)
    inputs = {}
    for item in args.image:
        role, _, path = item.rpartition("=")
        inputs[role or "image"] = client.upload(Path(path))
    params = methods.parse_params(args.param)
    body = {"model": args.model, "method": args.method, "inputs": inputs, "params": params,
            "seed": args.seed}  # fmt: skip
    return _through_service(args, body, fit=args.fit)


def _client_args(p: argparse.ArgumentParser) -> None:
    settings = CliSettings()
    p.add_argument("--url", default=settings.url, help=f"the API (default {settings.url})")
    p.add_argument("--api-key", default=settings.api_key, help="default: EDITSERVE_API_KEY")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="editserve", description="Training-free image edits on frozen diffusion U-Nets."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    launch.add_commands(sub)
    for name, handler, helptext in (
        ("models", _models, "models the running service holds"),
        ("methods", _methods, "methods with their parameters and defaults"),
    ):
        p = sub.add_parser(name, help=helptext)
        _client_args(p)
        p.add_argument("--json", action="store_true")
        p.set_defaults(handler=handler)
    p = sub.add_parser("status", help="a job's status as JSON")
    _client_args(p)
    p.add_argument("id")
    p.set_defaults(handler=_status)
    methods.add_commands(sub, _method, _client_args)
    p = sub.add_parser("submit", help="any method by name: upload, submit, wait, download")
    _client_args(p)
    p.add_argument("--model", required=True)
    p.add_argument("--method", required=True)
    p.add_argument("--fit", action="store_true", help="a fit (POST /v1/fits)")
    p.add_argument("--image", action="append", default=[], help="role=path (or just path)")
    p.add_argument("--param", action="append", default=[], help="key=value (JSON values)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--idempotency-key")
    p.add_argument("--out", default=".", help="a .png file (one output) or a folder")
    p.add_argument("--no-wait", action="store_true", help="print the job id and return")
    p.set_defaults(handler=_submit)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except ApiFailure as exc:  # the API's own error, as it said it (no traceback)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # a malformed --param
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # httpx's connection errors are OSErrors underneath
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        if type(exc).__module__.startswith("httpx"):
            url = getattr(args, "url", CliSettings().url)
            print(f"error: cannot reach the API at {url} ({exc}); is it running? "
                  "(`editserve serve` starts one here)", file=sys.stderr)  # fmt: skip
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
