"""Method D (Diffusion in Style): a style's initial-noise distribution."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from contract.jobs import JobKind
from contract.params import AssetName, FitField, MethodParams
from contract.rules import Applies
from contract.spec import MethodSpec


class StyleNoiseFitParams(MethodParams):
    """Method D fit (Diffusion in Style): the style images' latent distribution, as an asset."""

    name: AssetName
    images: list[str] = Field(
        min_length=2, max_length=256, description="uploaded style image ids (2 or more)"
    )
    dct_k: int = Field(0, ge=0, le=16, description="full covariance of the lowest k x k DCT")
    fit: FitField = "error"


class StyleGenerateParams(MethodParams):
    """Method D: generate starting from a fitted style distribution instead of N(0, I)."""

    asset: str = Field(min_length=1, max_length=64, description="a style-noise asset id")
    form: Literal["direct", "signal_leak"] = Field(
        "direct", description="x_T = mu + sigma z, or sqrt(ab_T)(mu + sigma z) + sqrt(1-ab_T) eps"
    )
    steps: int = Field(50, ge=1, le=1000, description="sampling steps")
    grid: Literal["leading", "linspace"] = Field("leading", description="timestep grid")
    eta: float = Field(0.0, ge=0.0, le=1.0, description="0: DDIM, 1: DDPM-like")
    prompt: str = Field("", max_length=500, description="prompt, for text-conditioned models")
    guidance_scale: float = Field(1.0, ge=1.0, le=30.0, description="classifier-free guidance")
    t_start: int | None = Field(
        None,
        ge=1,
        le=999,
        description=(
            "signal_leak only: start sampling at this timestep (the model's scale) instead of "
            "the grid's top; the leak sqrt(ab_t)(mu + sigma z) is then large enough to be read "
            "(at T it is sqrt(ab_T) = 0.006 of the signal for linear betas)"
        ),
    )

    # a request's own t_start with the direct form is refused; a model's default
    # t_start (editing_defaults.json) yields to a request that asks for direct
    RULES = (
        Applies("t_start", ({"form": {"enum": ["signal_leak"]}},),
                "only with form signal_leak (the direct form starts at T)"),
    )  # fmt: skip


STYLE_NOISE = MethodSpec(
    name="style-noise",
    kind=JobKind.FIT,
    summary="Fit a style's initial-noise distribution from a few style images.",
    params=StyleNoiseFitParams,
    inputs=(),
    image_list_params=("images",),
)

STYLE_GENERATE = MethodSpec(
    name="style-generate",
    kind=JobKind.EDIT,
    asset_params={"asset": "style-noise"},
    summary="Generate in a style: sampling starts from its fitted noise distribution.",
    params=StyleGenerateParams,
    inputs=(),
)
