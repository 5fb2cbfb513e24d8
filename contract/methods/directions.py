"""Method E (Haas et al.): interpretable h-space directions, fitted and applied."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from contract.jobs import JobKind
from contract.params import AssetName, FitField, MethodParams, Refine
from contract.rules import Applies, Condition, Needs
from contract.spec import MethodSpec

_JACOBIAN: Condition = {"kind": {"enum": ["jacobian"]}}
_UNLABELLED: Condition = {"kind": {"enum": ["supervised"]}, "positives": {"maxItems": 0}}


class DirectionFitParams(MethodParams):
    """Method E fit (Haas et al.): h-space directions, one per sampling step, as an asset."""

    RULES = (
        Applies("k", ({"kind": {"enum": ["jacobian", "pca"]}},),
                "a supervised direction is one mean difference"),
        Applies("iters", (_JACOBIAN,), "power iterations are for kind jacobian"),
        Applies("jacobian_apply", (_JACOBIAN,), "for kind jacobian"),
        Applies("jacobian_t", ({**_JACOBIAN, "jacobian_apply": {"enum": ["one_step"]}},),
                "for kind jacobian with jacobian_apply one_step"),
        Applies("samples", ({"kind": {"enum": ["pca"]}}, _UNLABELLED),
                "generated samples are for pca and classifier-labelled supervision"),
        Applies("top_k", (_UNLABELLED,), "for classifier-labelled supervision (factor/value)"),
        Applies("balance", (_UNLABELLED,), "for classifier-labelled supervision (factor/value)"),
        Applies("condition_on", (_UNLABELLED,),
                "for classifier-labelled supervision (factor/value)"),
        Applies("project_out_solve", ({"project_out": {"minItems": 1}},), "for project_out"),
        Needs("negatives", {"kind": {"enum": ["supervised"]}, "positives": {"minItems": 1}},
              {"negatives": {"minItems": 1}},
              "labelled supervision needs both positives and negatives"),
        Needs("positives", {"kind": {"enum": ["supervised"]}, "negatives": {"minItems": 1}},
              {"positives": {"minItems": 1}},
              "labelled supervision needs both positives and negatives"),
        Needs("factor", {**_UNLABELLED, "negatives": {"maxItems": 0}},
              {"factor": {"type": "string"}, "value": {"type": "string"}},
              "supervised directions need factor and value, or labelled images"),
    )  # fmt: skip

    name: AssetName
    kind: Literal["pca", "supervised", "jacobian"] = Field(
        "pca",
        description="pca: from generated samples; supervised: labelled uploads (positives/"
        "negatives) or classifier-labelled samples (factor/value); jacobian: of inputs.image",
    )
    steps: int = Field(25, ge=2, le=1000, description="sampling steps the directions are for")
    grid: Literal["leading", "linspace"] = Field("leading", description="timestep grid")
    samples: int = Field(256, ge=8, le=4096, description="generated samples (pca, supervised)")
    k: int = Field(5, ge=1, le=50, description="components (pca) or directions (jacobian)")
    factor: str | None = Field(None, max_length=100, description="classifier factor (supervised)")
    value: str | None = Field(None, max_length=100, description="the factor's target value")
    top_k: int = Field(64, ge=1, le=4096, description="top-K vs bottom-K samples (supervised)")
    balance: bool = Field(
        False,
        description="classifier-labelled supervision: pair each positive with a negative "
        "the classifier reads the same on every other factor, so the mean difference "
        "carries no other factor (the reference takes top-K and bottom-K as they come)",
    )
    condition_on: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        default_factory=list,
        max_length=8,
        description="classifier-labelled supervision: one mean difference per combination "
        "of these factors' values, as the classifier reads the samples; an edit moves each "
        "image along the direction of its own combination, read by the same classifier. "
        "Naming the fit's own factor splits each combination by the image's own value of it "
        "too: a triangle moves by the difference between squares and triangles, a circle by "
        "that between squares and circles (without it, by the one between squares and all "
        "the others). The reference takes one global difference, which on a domain where a "
        "factor's h change depends on the others (a small square grows into a large square, "
        "a small circle into a large circle) carries the mean of them",
    )
    positives: list[str] = Field(default_factory=list, max_length=512, description="image ids")
    negatives: list[str] = Field(default_factory=list, max_length=512, description="image ids")
    iters: int = Field(50, ge=1, le=500, description="power iterations (jacobian)")
    jacobian_apply: Literal["per_step", "one_step"] = Field(
        "per_step",
        description="jacobian: store each step's own directions (signs aligned to the top "
        "step's), or one step's directions at every step, scaled by each step's singular "
        "values (the reference's edits)",
    )
    jacobian_t: int | None = Field(
        None, ge=0, le=999, description="jacobian, one_step: the step whose directions "
        "apply everywhere (a timestep of the grid; default: the top step)",
    )  # fmt: skip
    refine: Refine = Field(
        1, description="fixed-point iterations per DDIM inversion step of the inverted images "
        "(labelled supervised, jacobian); use the edits' value, so the fit sees the same "
        "trajectories the edits do",
    )  # fmt: skip
    project_out: list[str] = Field(
        default_factory=list, max_length=32, description="asset ids whose directions to remove"
    )
    project_out_solve: Literal["per_step", "joint"] = Field(
        "per_step",
        description="removing project_out's directions: at each step on its own (orthogonal "
        "at every step), or one solve over all steps flattened (the reference's)",
    )


class DirectionEditParams(MethodParams):
    """Method E edit: h_t <- h_t + scale * dh_t at steps t >= t_edit, on an inverted image."""

    RULES = (
        Applies("refine", ({"inversion": {"enum": ["ddim"]}},),
                "refines DDIM inversion steps; edit-friendly inversion is exact"),
    )  # fmt: skip

    asset: str = Field(min_length=1, max_length=64, description="a directions asset id")
    component: int = Field(0, ge=0, le=49, description="which direction of the asset")
    scale: float = Field(1.0, ge=-1000.0, le=1000.0, description="s in h + s * dh")
    t_edit: int = Field(0, ge=0, le=1000, description="edit at t >= t_edit")
    asymmetric: bool = Field(False, description="Asyrp's asymmetric step instead of symmetric")
    inversion: Literal["ddim", "ddpm"] = Field(
        "ddim",
        description="how the image is inverted: ddim (deterministic), or ddpm, edit-friendly "
        "(the reference's for real images: exact at scale 0; seeded by the job's seed)",
    )
    refine: Refine = 1
    fit: FitField = "error"


DIRECTIONS = MethodSpec(
    name="directions",
    kind=JobKind.FIT,
    asset_params={"project_out": "directions"},
    summary="Fit h-space directions (PCA, supervised or Jacobian) into a named asset.",
    params=DirectionFitParams,
    inputs=(),
    optional_inputs=("image",),
    families=("pixel", "latent"),
    image_list_params=("positives", "negatives"),
    input_when={"image": _JACOBIAN},
)

DIRECTION = MethodSpec(
    name="direction",
    kind=JobKind.EDIT,
    asset_params={"asset": "directions"},
    summary="Move an image along a fitted h-space direction (an asset from a fit).",
    params=DirectionEditParams,
    inputs=("image",),
)
