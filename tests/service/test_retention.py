"""Blob retention against a real Redis: what jobs and assets name stays, the rest goes."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from contract.jobs import JobKind, JobPayload
from contract.keys import GC_LOCK
from service.embedded import RedisProcess
from service.jobs import JobQueue
from store.assets import AssetIndex
from store.blobs import LocalBlobStore
from store.retention import collect_garbage, maybe_collect
from tests.service.conftest import announce_worker

DAY = 86400.0


@pytest.fixture
def redis(server: RedisProcess) -> Iterator[Redis]:
    client = Redis.from_url(server.url)
    client.flushdb()
    yield client
    client.flushdb()


def _age(store: LocalBlobStore, blob_id: str, seconds: float) -> None:
    path = store.root / blob_id[:2] / blob_id
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_referenced_blobs_stay_and_old_orphans_go(redis: Redis, tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    ids = {name: store.put(name.encode()) for name in
           ("input", "listed", "output", "asset", "orphan-old", "orphan-young")}  # fmt: skip
    queue = JobQueue(redis)
    job = queue.submit(JobPayload(
        id="job1", kind=JobKind.FIT, model="m", method="style-noise",
        params={"images": [ids["listed"]]}, inputs={"image": ids["input"]},
    ))  # fmt: skip
    job.meta["result"] = {"outputs": [ids["output"]], "asset": None}
    job.save_meta()
    AssetIndex(redis).create(name="a", model="m", method="style-noise", blob=ids["asset"],
                             params={}, metrics={})  # fmt: skip
    for blob_id in ids.values():
        _age(store, blob_id, 2 * DAY)
    _age(store, ids["orphan-young"], 60)

    dry = collect_garbage(redis, store.root, min_age_s=DAY, dry_run=True)
    assert (dry.deleted, dry.kept_unreferenced) == (1, 1)
    assert all(store.exists(b) for b in ids.values())  # a dry run deletes nothing

    report = collect_garbage(redis, store.root, min_age_s=DAY)
    assert report.referenced == 4
    assert report.deleted == 1 and report.deleted_bytes == len(b"orphan-old")
    assert not store.exists(ids["orphan-old"])
    for name in ("input", "listed", "output", "asset", "orphan-young"):
        assert store.exists(ids[name]), name


def test_a_job_gone_from_redis_frees_its_blobs(redis: Redis, tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    image = store.put(b"image")
    JobQueue(redis).submit(JobPayload(id="job2", kind=JobKind.EDIT, model="m",
                                      method="reconstruct", inputs={"image": image}))  # fmt: skip
    _age(store, image, 2 * DAY)
    assert collect_garbage(redis, store.root, min_age_s=DAY).deleted == 0
    redis.delete("rq:job:job2")  # RQ's result_ttl ran out
    assert collect_garbage(redis, store.root, min_age_s=DAY).deleted == 1
    assert not store.exists(image)


def test_naming_or_uploading_a_blob_again_restarts_its_clock(redis: Redis, tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    named, uploaded = store.put(b"named"), store.put(b"uploaded")
    _age(store, named, 2 * DAY)
    _age(store, uploaded, 2 * DAY)
    store.touch(named)  # what the API does for every image a request names
    store.put(b"uploaded")
    assert collect_garbage(redis, store.root, min_age_s=DAY).deleted == 0


def test_stale_cached_inversions_go(redis: Redis, tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    fresh, stale = (
        root / "inversions" / "ab" / "fresh.safetensors",
        root / "inversions" / "cd" / "stale.safetensors",
    )
    for path in (fresh, stale):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x" * 10)
    then = time.time() - 8 * DAY
    os.utime(stale, (then, then))
    report = collect_garbage(redis, root, inversion_max_age_s=7 * DAY)
    assert (report.inversions_deleted, report.inversions_deleted_bytes) == (1, 10)
    assert fresh.exists() and not stale.exists()


def test_one_pass_per_interval(redis: Redis, tmp_path: Path) -> None:
    kw = {"interval_s": 3600.0, "min_age_s": DAY, "inversion_max_age_s": DAY}
    assert maybe_collect(redis, tmp_path, **kw) is not None
    assert maybe_collect(redis, tmp_path, **kw) is None  # another worker, same interval
    assert 3500 < redis.ttl(GC_LOCK) <= 3600
    assert maybe_collect(redis, tmp_path, **{**kw, "interval_s": 0.0}) is None  # off


def test_the_api_restarts_the_clock_of_every_image_an_edit_names(
    server: RedisProcess, redis: Redis, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    settings = Settings(blob_dir=tmp_path / "blobs", redis_url=server.url)
    store = LocalBlobStore(settings.blob_dir)
    client = TestClient(create_app(settings, redis=redis))
    png = (Path(__file__).resolve().parents[2] / "examples").glob("*.png").__next__().read_bytes()
    image = client.post("/v1/images", files={"file": ("a.png", png, "image/png")}).json()["id"]
    _age(store, image, 2 * DAY)
    announce_worker(redis)
    r = client.post("/v1/edits", json={"model": "shapes32", "method": "reconstruct",
                                       "inputs": {"image": image}})  # fmt: skip
    assert r.status_code == 202, r.text
    redis.delete(f"rq:job:{r.json()['id']}")  # even with its job gone at once ...
    assert collect_garbage(redis, store.root, min_age_s=DAY).deleted == 0  # ... it was named
    assert store.exists(image)


def test_cli_gc_dry_run_prints_the_report(
    server: RedisProcess, redis: Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from cli.main import main
    from service.settings import get_settings

    store = LocalBlobStore(tmp_path / "blobs")
    orphan = store.put(b"orphan")
    _age(store, orphan, 3 * DAY)
    monkeypatch.setenv("EDITSERVE_REDIS_URL", server.url)
    monkeypatch.setenv("EDITSERVE_BLOB_DIR", str(store.root))
    get_settings.cache_clear()
    try:
        assert main(["gc", "--dry-run", "--min-age-hours", "48"]) == 0
    finally:
        get_settings.cache_clear()
    report = json.loads(capsys.readouterr().out)
    assert report["deleted"] == 1 and report["dry_run"] is True
    assert store.exists(orphan)
