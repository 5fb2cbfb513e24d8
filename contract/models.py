"""What a worker says of each model it holds (in ``MODELS_KEY``), as the API reads it."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, Field, TypeAdapter


class ModelInfo(BaseModel):
    """One resident model: its shape, its schedule and its measured editing defaults."""

    name: str
    family: Literal["pixel", "latent"]
    conditional: bool = False
    image_size: list[int] = Field(description="[height, width] of the images it takes")
    channels: int
    sample_shape: list[int] = Field(description="(C, H, W) of x_t (latents for latent models)")
    h_shape: list[int] = Field(description="(C, H, W) of h, the U-Net's bottleneck")
    num_train_timesteps: int
    prediction_type: str
    device: str
    dtype: str
    editing_defaults: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="per method, the defaults measured on this model; they replace the "
        "method's own defaults, and a request's values replace both",
    )


_MODELS: TypeAdapter[list[ModelInfo]] = TypeAdapter(list[ModelInfo])


def encode_models(models: list[ModelInfo]) -> str:
    """A worker's entry in ``MODELS_KEY``."""
    return json.dumps(_MODELS.dump_python(models, mode="json"))


def decode_models(raw: bytes | str) -> list[ModelInfo]:
    """The models of one worker's entry in ``MODELS_KEY`` (ValidationError if malformed)."""
    return _MODELS.validate_json(raw)
