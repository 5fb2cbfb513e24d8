"""Reconstruct: invert an image and sample it back, the round trip every edit stands on."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from contract.jobs import JobKind
from contract.params import FitField, MethodParams, Refine
from contract.rules import Applies
from contract.spec import MethodSpec


class ReconstructParams(MethodParams):
    """Invert the image and sample it back; the round trip every edit stands on."""

    RULES = (
        Applies("refine", ({"inversion": {"enum": ["ddim"]}},),
                "refines DDIM inversion steps; edit-friendly inversion is exact"),
    )  # fmt: skip

    steps: int = Field(50, ge=1, le=1000, description="inversion and sampling steps")
    inversion: Literal["ddim", "ddpm"] = Field(
        "ddim", description="ddim: deterministic; ddpm: edit-friendly, exact"
    )
    grid: Literal["leading", "linspace"] = Field("leading", description="timestep grid")
    refine: Refine = 1
    fit: FitField = "error"
    prompt: str = Field("", max_length=500, description="prompt, for text-conditioned models")


RECONSTRUCT = MethodSpec(
    name="reconstruct",
    kind=JobKind.EDIT,
    summary="Invert an image and regenerate it (DDIM or edit-friendly DDPM inversion).",
    params=ReconstructParams,
    inputs=("image",),
)
