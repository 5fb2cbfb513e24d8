"""Named, versioned assets: directions, boundaries, lam schedules, style distributions.

Fit jobs create them (the worker calls ``AssetIndex.create``); edits reference them
by id. The tensors live in the blob store (safetensors bytes); Redis holds the
metadata only: name, version, model, method, parameters, metrics, owner.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from redis import Redis

from contract.keys import ASSET_INDEX, ASSET_KEY, ASSET_VERSIONS


class AssetIndex:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def create(
        self,
        *,
        name: str,
        model: str,
        method: str,
        blob: str,
        params: dict[str, Any],
        metrics: dict[str, Any],
        owner: str | None = None,
        job: str | None = None,
    ) -> dict[str, Any]:
        """Store a new version of ``name``; versions count up per owner and name."""
        version = int(self.redis.incr(ASSET_VERSIONS.format(owner=owner or "-", name=name)))
        asset_id, created = uuid.uuid4().hex, time.time()
        record: dict[str, Any] = {
            "id": asset_id,
            "name": name,
            "version": version,
            "model": model,
            "method": method,
            "blob": blob,
            "params": params,
            "metrics": metrics,
            "owner": owner,
            "job": job,
            "created_at": created,
        }
        with self.redis.pipeline() as pipe:
            pipe.set(ASSET_KEY.format(id=asset_id), json.dumps(record))
            pipe.zadd(ASSET_INDEX, {asset_id: created})
            pipe.execute()
        return record

    def get(self, asset_id: str) -> dict[str, Any] | None:
        raw = self.redis.get(ASSET_KEY.format(id=asset_id))
        if raw is None:
            return None
        record: dict[str, Any] = json.loads(raw)
        return record

    def list(
        self, *, owner: str | None = None, model: str | None = None, method: str | None = None
    ) -> list[dict[str, Any]]:
        raw_ids: list[Any] = list(self.redis.zrange(ASSET_INDEX, 0, -1))
        ids = [i.decode() if isinstance(i, bytes) else str(i) for i in raw_ids]
        out = []
        for asset_id in ids:
            record = self.get(asset_id)
            if record is None:
                continue
            if owner is not None and record["owner"] != owner:
                continue
            if model is not None and record["model"] != model:
                continue
            if method is not None and record["method"] != method:
                continue
            out.append(record)
        return out

    def delete(self, asset_id: str) -> bool:
        with self.redis.pipeline() as pipe:
            pipe.delete(ASSET_KEY.format(id=asset_id))
            pipe.zrem(ASSET_INDEX, asset_id)
            deleted, _ = pipe.execute()
        return bool(deleted)
