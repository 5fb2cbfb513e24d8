"""Assets made by fit jobs: list, read, delete."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel

from service.deps import OwnerDep, RedisDep
from service.errors import ApiError, ErrorResponse
from store.assets import AssetIndex

router = APIRouter(prefix="/v1/assets", tags=["assets"])


class AssetPublic(BaseModel):
    id: str
    name: str
    version: int
    model: str
    method: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    job: str | None
    created_at: float


_ERRORS: dict[int | str, dict[str, Any]] = {c: {"model": ErrorResponse} for c in (401, 404)}


def _public(record: dict[str, Any]) -> AssetPublic:
    return AssetPublic.model_validate(record)


def _owned(index: AssetIndex, asset_id: str, owner: str | None) -> dict[str, Any]:
    record = index.get(asset_id)
    if record is None or (owner is not None and record["owner"] != owner):
        raise ApiError(404, "not_found", f"no asset {asset_id!r}", "id")
    return record


@router.get("", response_model=list[AssetPublic], responses=_ERRORS)
def list_assets(
    redis: RedisDep,
    owner: OwnerDep,
    model: Annotated[str | None, Query(max_length=200)] = None,
    method: Annotated[str | None, Query(max_length=100)] = None,
) -> list[AssetPublic]:
    """Assets you can use, oldest first; filter by model or method."""
    records = AssetIndex(redis).list(owner=owner, model=model, method=method)
    return [_public(r) for r in records]


@router.get("/{asset_id}", response_model=AssetPublic, responses=_ERRORS)
def get_asset(asset_id: str, redis: RedisDep, owner: OwnerDep) -> AssetPublic:
    """One asset's metadata: what it was fitted on, with what, and how well."""
    return _public(_owned(AssetIndex(redis), asset_id, owner))


@router.delete("/{asset_id}", status_code=204, response_class=Response, responses=_ERRORS)
def delete_asset(asset_id: str, redis: RedisDep, owner: OwnerDep) -> Response:
    """Delete an asset (edits that referenced it keep their outputs)."""
    index = AssetIndex(redis)
    _owned(index, asset_id, owner)
    index.delete(asset_id)
    return Response(status_code=204)
