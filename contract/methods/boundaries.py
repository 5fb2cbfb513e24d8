"""Method B (BoundaryDiffusion): semantic boundaries at the mixing step."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from contract.jobs import JobKind
from contract.params import AssetName, FitField, MethodParams, Refine
from contract.rules import Applies, Needs
from contract.spec import MethodSpec


class BoundaryFitParams(MethodParams):
    """Method B fit (BoundaryDiffusion): linear SVM boundaries on x_t0 and h at the mixing step."""

    name: AssetName
    factor: str | None = Field(None, max_length=100, description="classifier factor")
    value: str | None = Field(None, max_length=100, description="positive class: this value")
    samples: int = Field(200, ge=8, le=4096, description="generated, classifier-labelled images")
    positives: list[str] = Field(default_factory=list, max_length=1024, description="image ids")
    negatives: list[str] = Field(default_factory=list, max_length=1024, description="image ids")
    t0: int | None = Field(None, ge=1, le=999, description="mixing step; None: searched")
    steps: int = Field(40, ge=2, le=1000, description="inversion steps to t0 (n_inv)")
    tol: float = Field(0.02, gt=0.0, le=1.0, description="radius tolerance of the search")
    c: float = Field(1.0, gt=0.0, le=1e4, description="SVM regularisation C")
    held_out: float = Field(0.2, ge=0.0, le=0.5, description="share held out for accuracy")
    refine: Refine = 1
    fit: FitField = "error"

    RULES = (
        Needs("negatives", {"positives": {"minItems": 1}}, {"negatives": {"minItems": 1}},
              "labelled images need positives and negatives"),
        Needs("positives", {"negatives": {"minItems": 1}}, {"positives": {"minItems": 1}},
              "labelled images need positives and negatives"),
        Needs("factor", {"positives": {"maxItems": 0}, "negatives": {"maxItems": 0}},
              {"factor": {"type": "string"}, "value": {"type": "string"}},
              "give factor and value, or labelled images"),
    )  # fmt: skip


class BoundaryEditParams(MethodParams):
    """Method B edit: move the image to signed distance d at t0 in one step, then denoise."""

    asset: str = Field(min_length=1, max_length=64, description="a boundary asset id")
    distance: float | None = Field(
        None,
        ge=-1000.0,
        le=1000.0,
        description="target signed distance d (positive: the attribute's side); None: "
        "strength times the fit's median |distance| of x (the asset's distance_scale_x)",
    )
    strength: float = Field(
        2.0,
        ge=-100.0,
        le=100.0,
        description="without distance: d in multiples of the fit's median |distance| of x",
    )
    move_h: bool = Field(True, description="also move h at the first step (its own boundary)")
    h_distance: float | None = Field(
        None,
        ge=-1000.0,
        le=1000.0,
        description="d for h (needs move_h); None: from distance, by h_scaling",
    )
    h_scaling: Literal["same", "ratio"] | None = Field(
        None,
        description="without h_distance (needs move_h): h moves to the same d as x (same, "
        "the reference's, and what None means), or "
        "to the same multiple of h's typical distance as d is of x's (ratio: d times the "
        "fit's median |distance| of h over that of x)",
    )
    eta: float = Field(1.0, ge=0.0, le=1.0, description="sampling eta from t0")
    fit: FitField = "error"

    RULES = (
        Applies("strength", ({"distance": {"type": "null"}},), "distance is given"),
        Needs("h_distance", {"h_distance": {"type": "number"}}, {"move_h": {"enum": [True]}},
              "applies only with move_h true"),
        Needs("h_scaling", {"h_scaling": {"type": "string"}}, {"move_h": {"enum": [True]}},
              "applies only with move_h true"),
    )  # fmt: skip


BOUNDARY = MethodSpec(
    name="boundary",
    kind=JobKind.FIT,
    summary="Fit semantic boundaries at the (searched) mixing step: SVMs on x_t0 and h.",
    params=BoundaryFitParams,
    inputs=(),
    families=("pixel", "latent"),
    image_list_params=("positives", "negatives"),
)

BOUNDARY_EDIT = MethodSpec(
    name="boundary-edit",
    kind=JobKind.EDIT,
    asset_params={"asset": "boundary"},
    summary="Move an image across a fitted boundary in one step at t0, then denoise.",
    params=BoundaryEditParams,
    inputs=("image",),
)
