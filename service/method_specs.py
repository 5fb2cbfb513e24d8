"""Every method's parameters, defaults and inputs, in one torch-free place.

The API validates requests against these models and publishes their JSON schemas
at ``GET /v1/methods``; the worker validates again and hands the engine the
validated values. A new method is one ``MethodSpec`` here plus its engine module:
no new route.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.contract import JobKind


class MethodParams(BaseModel):
    """Base of every method's parameters: unknown fields are refused, not ignored."""

    model_config = ConfigDict(extra="forbid")


class ReconstructParams(MethodParams):
    """Invert the image and sample it back; the round trip every edit stands on."""

    steps: int = Field(50, ge=1, le=1000, description="inversion and sampling steps")
    inversion: Literal["ddim", "ddpm"] = Field(
        "ddim", description="ddim: deterministic; ddpm: edit-friendly, exact"
    )
    grid: Literal["leading", "linspace"] = Field("leading", description="timestep grid")
    fit: Literal["error", "resize", "crop"] = Field(
        "error", description="how an image of another size is fitted to the model"
    )
    prompt: str = Field("", max_length=500, description="prompt, for text-conditioned models")


class InjectParams(MethodParams):
    """Method A (DiffStyle / InjectFusion): the content image's h injected into the style
    image's generation. Defaults from the reference scripts; timesteps in the model's scale."""

    steps: int = Field(50, ge=2, le=1000, description="inversion and generation steps")
    grid: Literal["leading", "linspace"] = Field("linspace", description="timestep grid")
    g: float = Field(0.3, ge=0.0, le=1.0, description="content ratio of the slerp (0.4: art)")
    t_edit: int = Field(400, ge=0, le=1000, description="inject at t >= t_edit")
    t_boost: int = Field(200, ge=0, le=1000, description="eta = 1 at t <= t_boost (0: off)")
    w: float = Field(0.0, ge=0.0, le=10.0, description="skip-calibration strength")
    lam: float = Field(0.9985, gt=0.0, le=1.0, description="damping at t >= t_damp (1: off)")
    t_damp: int = Field(950, ge=0, le=1000, description="damping from this timestep up")
    fit: Literal["error", "resize", "crop"] = Field(
        "error", description="how an image of another size is fitted to the model"
    )


@dataclass(frozen=True)
class MethodSpec:
    name: str
    kind: JobKind
    summary: str
    params: type[MethodParams]
    inputs: tuple[str, ...]  # image roles, each a content id from POST /v1/images
    families: tuple[str, ...] = ("pixel", "latent")
    # parameters that must be equal for jobs to share a batch (one grid, one schedule)
    batch_fields: tuple[str, ...] = ("steps",)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind.value,
            "summary": self.summary,
            "inputs": list(self.inputs),
            "families": list(self.families),
            "params_schema": self.params.model_json_schema(),
            "defaults": self.params().model_dump(),
        }


METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec(
            name="reconstruct",
            kind=JobKind.EDIT,
            summary="Invert an image and regenerate it (DDIM or edit-friendly DDPM inversion).",
            params=ReconstructParams,
            inputs=("image",),
            batch_fields=("steps", "inversion", "grid"),
        ),
        MethodSpec(
            name="inject",
            kind=JobKind.EDIT,
            summary="Content injection in h-space: the content image in the style image's style.",
            params=InjectParams,
            inputs=("content", "style"),
            families=("pixel",),
            batch_fields=("steps", "grid", "g", "t_edit", "t_boost", "w", "lam", "t_damp"),
        ),
    )
}


def batch_key(method: str, params: dict[str, Any]) -> str:
    """Jobs of one model with equal keys run together as one batch."""
    spec = METHODS.get(method)
    fields = spec.batch_fields if spec else ()
    defaults = spec.params().model_dump() if spec else {}
    values = [f"{name}={params.get(name, defaults.get(name))}" for name in fields]
    return ":".join([method, *values])
