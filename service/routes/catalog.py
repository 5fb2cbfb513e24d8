"""What can be asked for: the models live workers hold, and the methods with their schemas."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from service.deps import QueueDep, SettingsDep
from service.method_specs import METHODS

router = APIRouter(prefix="/v1", tags=["catalog"])


class ModelPublic(BaseModel):
    name: str
    family: str
    conditional: bool
    image_size: list[int]
    channels: int
    h_shape: list[int]
    num_train_timesteps: int
    prediction_type: str
    dtype: str
    device: str
    workers: int


class MethodPublic(BaseModel):
    name: str
    kind: str
    summary: str
    inputs: list[str]
    families: list[str]
    params_schema: dict[str, Any]
    defaults: dict[str, Any]


@router.get("/models", response_model=list[ModelPublic])
def list_models(queue: QueueDep, settings: SettingsDep) -> list[ModelPublic]:
    """Models held by workers with a fresh heartbeat."""
    models = queue.model_descriptions(fresh_s=settings.worker_fresh_s)
    return [ModelPublic.model_validate(m) for _, m in sorted(models.items())]


@router.get("/methods", response_model=list[MethodPublic])
def list_methods() -> list[MethodPublic]:
    """Every method with its parameter JSON schema and defaults."""
    return [MethodPublic.model_validate(spec.describe()) for spec in METHODS.values()]
