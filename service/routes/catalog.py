"""What can be asked for: the models live workers hold, and the methods with their schemas."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from contract.methods import METHODS
from contract.models import ModelInfo
from service.deps import QueueDep, SettingsDep
from service.jobs import JobQueue

router = APIRouter(prefix="/v1", tags=["catalog"])


class ModelPublic(ModelInfo):
    """A model, as the live workers that hold it describe it."""

    workers: int = Field(description="live workers that hold it")


class MethodPublic(BaseModel):
    name: str
    kind: str
    summary: str
    inputs: list[str] = Field(description="the image roles the method requires")
    optional_inputs: list[str] = Field(
        default_factory=list, description="roles it may take (some settings require them)"
    )
    families: list[str]
    params_schema: dict[str, Any]
    defaults: dict[str, Any] = Field(description="the method's documented (reference) defaults")
    model_defaults: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="per model a live worker holds, the defaults measured on it for this method",
    )


@router.get("/models", response_model=list[ModelPublic])
def list_models(queue: QueueDep, settings: SettingsDep) -> list[ModelPublic]:
    """Models held by workers with a fresh heartbeat."""
    models = queue.model_descriptions(fresh_s=settings.worker_fresh_s)
    return [
        ModelPublic(**held.info.model_dump(), workers=held.workers)
        for _, held in sorted(models.items())
    ]


@router.get("/methods", response_model=list[MethodPublic])
def list_methods(request: Request, settings: SettingsDep) -> list[MethodPublic]:
    """Every method with its parameter JSON schema, its defaults, and each live model's."""
    redis = request.app.state.redis  # without one (no Redis configured): no live models
    models = {} if redis is None else JobQueue(redis).model_descriptions(settings.worker_fresh_s)
    out = []
    for spec in METHODS.values():
        per_model = {
            name: held.info.editing_defaults[spec.name]
            for name, held in sorted(models.items())
            if spec.name in held.info.editing_defaults
        }
        out.append(MethodPublic.model_validate({**spec.describe(), "model_defaults": per_model}))
    return out
