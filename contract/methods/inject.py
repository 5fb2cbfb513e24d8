"""Method A (DiffStyle / InjectFusion): content injection in h-space."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from contract.jobs import JobKind
from contract.params import FitField, MethodParams, Refine
from contract.rules import Applies
from contract.spec import MethodSpec


class InjectParams(MethodParams):
    """Method A (DiffStyle / InjectFusion): the content image's h injected into the style
    image's generation. Defaults from the reference scripts; timesteps in the model's scale."""

    RULES = (
        Applies("clip_x0", ({"w": {"enum": [0]}, "asymmetric": {"enum": [True]}},),
                "clamps the asymmetric step's x0_hat; a calibrated step (w > 0) takes a "
                "plain DDIM step, a symmetric one none"),
        Applies("asymmetric", ({"w": {"enum": [0]}},),
                "a calibrated step (w > 0) takes a plain DDIM step"),
    )  # fmt: skip

    steps: int = Field(50, ge=2, le=1000, description="inversion and generation steps")
    grid: Literal["leading", "linspace"] = Field("linspace", description="timestep grid")
    g: float = Field(0.3, ge=0.0, le=1.0, description="content ratio of the slerp (0.4: art)")
    t_edit: int = Field(400, ge=0, le=1000, description="inject at t >= t_edit")
    t_boost: int = Field(200, ge=0, le=1000, description="eta = 1 at t <= t_boost (0: off)")
    w: float = Field(0.0, ge=0.0, le=10.0, description="skip-calibration strength")
    lam: float = Field(0.9985, gt=0.0, le=1.0, description="damping at t >= t_damp (1: off)")
    t_damp: int = Field(950, ge=0, le=1000, description="damping from this timestep up")
    clip_x0: bool = Field(
        False, description="pixel models: clamp x0_hat of the edited eps to [-1, 1]"
    )
    asymmetric: bool = Field(
        True,
        description="the reference's asymmetric step (x0_hat from the injected h', the "
        "direction from h); false: both from h' (outside the reference; see the README)",
    )
    replace_steps: int = Field(
        50, ge=1, le=1000, description="injections at this many evenly spaced steps of the "
        "generation (every step when steps is no more); the rest are plain DDIM steps, as in "
        "the reference (1000 steps, 50 replace steps)",
    )  # fmt: skip
    refine: Refine = 1
    fit: FitField = "error"


INJECT = MethodSpec(
    name="inject",
    kind=JobKind.EDIT,
    summary="Content injection in h-space: the content image in the style image's style.",
    params=InjectParams,
    inputs=("content", "style"),
    optional_inputs=("mask",),
    mask_inputs=("mask",),
    families=("pixel",),
)
