"""Method C (Wu et al.): learned per-step mixing weights between two prompts."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from contract.jobs import JobKind
from contract.params import AssetName, FitField, MethodParams, Refine
from contract.rules import Applies, Needs
from contract.spec import MethodSpec


class LamFitParams(MethodParams):
    """Method C fit (Wu et al.): per-step mixing weights between two prompts, as an asset."""

    PIXEL_ONLY = ("clip_x0",)
    RULES = (
        Needs("eta", {"sampler": {"enum": ["plms"]}}, {"eta": {"enum": [0]}},
              "PLMS steps are deterministic; eta > 0 needs sampler ddim"),
        Applies("temperature", ({"scorer": {"enum": ["classifier"]}},),
                "for scorer classifier: it softens the classifier's softmax"),
    )  # fmt: skip

    name: AssetName
    neutral: str = Field(min_length=1, max_length=500, description="neutral prompt c_n")
    target: str = Field(min_length=1, max_length=500, description="target prompt c_t")
    steps: int = Field(50, ge=2, le=200, description="sampling steps (one lam per step)")
    epochs: int = Field(10, ge=1, le=100, description="Adam epochs (full sampling runs)")
    lr: float = Field(0.05, gt=0.0, le=1.0, description="Adam learning rate")
    content_weight: float = Field(0.05, ge=0.0, le=100.0, description="content term weight")
    guidance_scale: float = Field(1.0, ge=1.0, le=30.0, description="classifier-free guidance")
    sampler: Literal["ddim", "plms"] = Field(
        "ddim",
        description="the sampler lam is learned through (and that mix then uses): DDIM, or "
        "PLMS as the reference's Stable Diffusion sampler (one more U-Net call at the first "
        "step)",
    )
    clip_x0: bool = Field(
        False,
        description="pixel models: clamp every step's x0 estimate to [-1, 1] while sampling, "
        "as diffusers' clip_sample (on in the google/ddpm-* scheduler configs); lam is "
        "learned with it and mix then uses it. The reference (Stable Diffusion, latent) has "
        "none",
    )
    eta: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="0: deterministic DDIM (or PLMS); above 0 (DDIM only) each step adds "
        "noise, drawn once from the job's seed as x_T is (each seed's own with seeds > 1), "
        "the same in the neutral run and the mix (METHODS.md: x_T and all noises fixed); "
        "lam is learned with it and mix then uses it",
    )
    noisy_share: float = Field(0.4, ge=0.0, le=1.0, description="init: lam = 1 on this share")
    seeds: int = Field(
        1,
        ge=1,
        le=16,
        description="fit on this many seeds at once (the job's seed and the next ones), the "
        "loss their mean, so lam is learned for the prompts rather than for one sample; "
        "the reference fits one image. Not used with inputs.image",
    )
    scorer: Literal["classifier", "clip"] = Field(
        "classifier",
        description="image-text scorer of the loss: the worker's attribute classifier, or "
        "CLIP from the worker's local folder (EDITSERVE_CLIP)",
    )
    temperature: float = Field(
        1.0,
        gt=0.0,
        le=100.0,
        description="scorer classifier: its logits are divided by this before the softmax "
        "of E_I. A classifier sure of a clean drawing gives the loss almost no gradient "
        "(p (1 - p) near 0); above 1 the factors the edit keeps or changes pull on lam",
    )
    content: Literal["scorer", "vgg"] = Field(
        "scorer",
        description="the loss's content term: the scorer's own (pixel MSE for the "
        "classifier, CLIP features for clip), or VGG16 perceptual features as the reference "
        "(the worker's local weights, EDITSERVE_VGG)",
    )
    refine: Refine = 1
    fit: FitField = "error"


class MixParams(MethodParams):
    """Method C edit: sample with a learned lam (on a seed, or on inputs.image when given)."""

    asset: str = Field(min_length=1, max_length=64, description="a lam asset id")
    correct_share: float = Field(2 / 3, ge=0.0, le=1.0, description="real images: corrected share")
    refine: Refine = 1
    fit: FitField = "error"


LAM = MethodSpec(
    name="lam",
    kind=JobKind.FIT,
    summary="Learn per-step mixing weights between a neutral and a target prompt.",
    params=LamFitParams,
    inputs=(),
    optional_inputs=("image",),
    families=("pixel", "latent"),
    unused_with_input={"seeds": "image"},
)

MIX = MethodSpec(
    name="mix",
    kind=JobKind.EDIT,
    asset_params={"asset": "lam"},
    summary="Apply learned prompt-mixing weights to a new seed or a real image.",
    params=MixParams,
    inputs=(),
    optional_inputs=("image",),
)
