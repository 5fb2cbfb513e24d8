"""Commands that start things: the embedded stack, the API, a worker, a retention pass."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def serve(args: argparse.Namespace) -> int:
    from service.embedded import run_stack

    env = {}
    if args.models:
        env["EDITSERVE_MODELS"] = args.models
    return run_stack(args.host, args.port, Path(args.data_dir), env)


def api(args: argparse.Namespace) -> int:
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


def worker(_args: argparse.Namespace) -> int:
    from worker.boot import run_worker
    from worker.runner import WorkerNameTaken
    from worker.settings import WorkerSettings

    try:
        run_worker(WorkerSettings())
    except WorkerNameTaken as exc:
        print(f"editserve worker: {exc}", file=sys.stderr)
        return 2
    return 0


def gc(args: argparse.Namespace) -> int:
    """One retention pass with the workers' own settings (``EDITSERVE_REDIS_URL``,
    ``_BLOB_DIR``, ``_GC_MIN_AGE_S``, ``_INVERSION_MAX_AGE_S``); flags override the ages."""
    from redis import Redis

    from store.retention import collect_garbage
    from worker.settings import WorkerSettings

    settings = WorkerSettings()
    min_age = settings.gc_min_age_s if args.min_age_hours is None else args.min_age_hours * 3600
    inversions = (
        settings.inversion_max_age_s
        if args.inversion_max_age_days is None
        else args.inversion_max_age_days * 86400
    )
    report = collect_garbage(
        Redis.from_url(settings.redis_url),
        settings.blob_dir,
        min_age_s=min_age,
        inversion_max_age_s=inversions,
        dry_run=args.dry_run,
    )
    print(json.dumps(report.as_dict(), indent=2))
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="embedded stack: bundled Redis + API + one worker")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--data-dir", default="var", help="Redis AOF and blob store live here")
    p.add_argument("--models", default="", help="name=path,... (default: shipped models)")
    p.set_defaults(handler=serve)

    p = sub.add_parser("api", help="the HTTP API (needs EDITSERVE_REDIS_URL)")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--no-access-log", action="store_true", help="no line per request")
    p.set_defaults(handler=api)

    p = sub.add_parser("worker", help="a worker: one per device (settings: EDITSERVE_*)")
    p.set_defaults(handler=worker)

    p = sub.add_parser("gc", help="delete blobs no job or asset references (the workers' settings)")
    p.add_argument("--min-age-hours", type=float, help="default: EDITSERVE_GC_MIN_AGE_S")
    p.add_argument(
        "--inversion-max-age-days", type=float, help="default: EDITSERVE_INVERSION_MAX_AGE_S"
    )
    p.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    p.set_defaults(handler=gc)
