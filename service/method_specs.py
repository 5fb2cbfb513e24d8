"""Every method's parameters, defaults and inputs, in one torch-free place.

The API validates requests against these models and publishes their JSON schemas
at ``GET /v1/methods``; the worker validates again and hands the engine the
validated values. A new method is one ``MethodSpec`` here plus its engine module:
no new route.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from service.contract import JobKind
from service.param_rules import Applies, Condition, Needs, Rule, holds

# fields many methods share
FitField = Annotated[
    Literal["error", "resize", "crop"],
    Field(description="how an image of another size is fitted to the model"),
]
AssetName = Annotated[
    str,
    Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._-]+$", description="asset name"),
]


Refine = Annotated[
    int,
    Field(
        ge=0,
        le=8,
        description="fixed-point iterations per DDIM inversion step (0: plain DDIM inversion; "
        "each one more U-Net call per step, and a closer round trip)",
    ),
]


class MethodParams(BaseModel):
    """Base of every method's parameters: unknown fields are refused, not ignored.

    ``RULES`` are the cross-field rules (``service.param_rules``): ``Needs`` rules are
    checked on every validation; ``Applies`` rules where a request comes in
    (``inapplicable``). Both are published in the JSON schema as ``if``/``then``.
    """

    model_config = ConfigDict(extra="forbid")
    RULES: ClassVar[tuple[Rule, ...]] = ()

    @classmethod
    def field_defaults(cls) -> dict[str, Any]:
        return {
            name: f.get_default(call_default_factory=True)
            for name, f in cls.model_fields.items()
            if not f.is_required()
        }

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        target = handler.resolve_ref_schema(schema)
        if cls.RULES:
            defaults = cls.field_defaults()
            target["allOf"] = [rule.schema(defaults) for rule in cls.RULES]
        return schema

    def field_values(self) -> dict[str, Any]:
        """Every field's value: the request's, or its default (how the rules read it)."""
        return {name: getattr(self, name) for name in type(self).model_fields}

    @model_validator(mode="after")
    def _needs(self) -> MethodParams:
        values = self.field_values()
        for rule in self.RULES:
            if isinstance(rule, Needs) and rule.broken(self.model_fields_set, values):
                raise ValueError(f"{rule.field}: {rule.why}")
        return self

    def inapplicable(self, conditional: bool) -> tuple[str, str] | None:
        """(field, why) of a value the request set that this combination would ignore.

        Checked on the request as the caller wrote it (``model_fields_set``), so it runs
        where the request comes in (the API, the local CLI), not on the stored params,
        which carry every default. ``conditional``: whether the model takes a prompt.
        """
        return self.unused_on_model(conditional) or self.ignored_by_rules()

    def unused_on_model(self, conditional: bool) -> tuple[str, str] | None:
        """(field, why) of a prompt the request gave to a model that takes none."""
        if not conditional:
            for name in ("prompt", "guidance_scale"):
                if name in self.model_fields_set:
                    return name, "the model is unconditional; it takes no prompt"
        return None

    def ignored_by_rules(self) -> tuple[str, str] | None:
        """(field, why) of a value the request set that the method's ``Applies`` rules
        say it would ignore (the published schema has these rules too)."""
        values = self.field_values()
        for rule in self.RULES:
            if isinstance(rule, Applies) and rule.broken(self.model_fields_set, values):
                return rule.field, rule.why
        return None


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


class LamFitParams(MethodParams):
    """Method C fit (Wu et al.): per-step mixing weights between two prompts, as an asset."""

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
    noisy_share: float = Field(0.4, ge=0.0, le=1.0, description="init: lam = 1 on this share")
    scorer: Literal["classifier", "clip"] = Field(
        "classifier",
        description="image-text scorer of the loss: the worker's attribute classifier, or "
        "CLIP from the worker's local folder (EDITSERVE_CLIP)",
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
    optional_inputs: tuple[str, ...] = ()  # roles a request may give
    batchable: bool = True  # fits run alone
    image_list_params: tuple[str, ...] = ()  # params holding lists of uploaded image ids
    # optional input roles that become required where a condition on the params holds
    # (``service.param_rules``: a field left out reads as its default)
    input_when: dict[str, Condition] = field(default_factory=dict)
    # optional input roles that are masks (any size, read as luminance at h's resolution)
    mask_inputs: tuple[str, ...] = ()
    # params naming assets (an id, or a list of ids) -> the fit method that makes them
    asset_params: dict[str, str] = field(default_factory=dict)

    def defaults(self) -> dict[str, Any]:
        return self.params.field_defaults()

    def missing_input(self, params: MethodParams, given: set[str]) -> str | None:
        for role in self.inputs:
            if role not in given:
                return role
        values = params.field_values()
        for role, condition in self.input_when.items():
            if role not in given and holds(condition, values):
                return role
        return None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind.value,
            "summary": self.summary,
            "inputs": list(self.inputs),
            "optional_inputs": list(self.optional_inputs),
            "families": list(self.families),
            "params_schema": publish_defaults(self.params.model_json_schema()),
            "defaults": self.defaults(),
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
            batch_fields=("steps", "inversion", "grid", "refine"),
        ),
        MethodSpec(
            name="inject",
            kind=JobKind.EDIT,
            summary="Content injection in h-space: the content image in the style image's style.",
            params=InjectParams,
            inputs=("content", "style"),
            optional_inputs=("mask",),
            mask_inputs=("mask",),
            families=("pixel",),
            batch_fields=(
                "steps",
                "grid",
                "g",
                "t_edit",
                "t_boost",
                "w",
                "lam",
                "t_damp",
                "clip_x0",
                "replace_steps",
                "asymmetric",
                "refine",
            ),
        ),
        MethodSpec(
            name="directions",
            kind=JobKind.FIT,
            asset_params={"project_out": "directions"},
            summary="Fit h-space directions (PCA, supervised or Jacobian) into a named asset.",
            params=DirectionFitParams,
            inputs=(),
            optional_inputs=("image",),
            families=("pixel", "latent"),
            batchable=False,
            image_list_params=("positives", "negatives"),
            input_when={"image": _JACOBIAN},
        ),
        MethodSpec(
            name="direction",
            kind=JobKind.EDIT,
            asset_params={"asset": "directions"},
            summary="Move an image along a fitted h-space direction (an asset from a fit).",
            params=DirectionEditParams,
            inputs=("image",),
            batch_fields=(
                "asset",
                "component",
                "scale",
                "t_edit",
                "asymmetric",
                "inversion",
                "refine",
            ),
        ),
        MethodSpec(
            name="boundary",
            kind=JobKind.FIT,
            summary="Fit semantic boundaries at the (searched) mixing step: SVMs on x_t0 and h.",
            params=BoundaryFitParams,
            inputs=(),
            families=("pixel", "latent"),
            batchable=False,
            image_list_params=("positives", "negatives"),
        ),
        MethodSpec(
            name="boundary-edit",
            kind=JobKind.EDIT,
            asset_params={"asset": "boundary"},
            summary="Move an image across a fitted boundary in one step at t0, then denoise.",
            params=BoundaryEditParams,
            inputs=("image",),
            batch_fields=("asset", "distance", "move_h", "h_distance", "h_scaling", "eta"),
        ),
        MethodSpec(
            name="lam",
            kind=JobKind.FIT,
            summary="Learn per-step mixing weights between a neutral and a target prompt.",
            params=LamFitParams,
            inputs=(),
            optional_inputs=("image",),
            families=("pixel", "latent"),
            batchable=False,
        ),
        MethodSpec(
            name="mix",
            kind=JobKind.EDIT,
            asset_params={"asset": "lam"},
            summary="Apply learned prompt-mixing weights to a new seed or a real image.",
            params=MixParams,
            inputs=(),
            optional_inputs=("image",),
            batch_fields=("asset", "correct_share", "refine"),
        ),
        MethodSpec(
            name="style-noise",
            kind=JobKind.FIT,
            summary="Fit a style's initial-noise distribution from a few style images.",
            params=StyleNoiseFitParams,
            inputs=(),
            batchable=False,
            image_list_params=("images",),
        ),
        MethodSpec(
            name="style-generate",
            kind=JobKind.EDIT,
            asset_params={"asset": "style-noise"},
            summary="Generate in a style: sampling starts from its fitted noise distribution.",
            params=StyleGenerateParams,
            inputs=(),
            batch_fields=("asset", "form", "steps", "grid", "eta", "guidance_scale", "t_start"),
        ),
    )
}


def publish_defaults(schema: dict[str, Any]) -> dict[str, Any]:
    """A parameters schema as the API publishes it: each field's default moved from
    ``default`` into its description. A field a request leaves out takes the model's
    editing default where the model has one (``GET /v1/models``), else the method's:
    with a ``default`` keyword, a client generated from the document would send the
    method's value and so override the model's."""
    for prop in schema.get("properties", {}).values():
        if "default" in prop and prop["default"] is None:
            del prop["default"]  # "not set": the description says what the method does then
        elif "default" in prop:
            value = json.dumps(prop.pop("default"))
            note = f"default {value}, unless the model's editing defaults set another"
            prop["description"] = (
                f"{prop['description']}; {note}" if "description" in prop else note
            )
    return schema


def check_editing_defaults(defaults: dict[str, dict[str, Any]]) -> None:
    """A model's per-method editing defaults are known methods' optional parameters,
    each within its field's type and range; ValueError naming the first that is not."""
    for method, values in defaults.items():
        spec = METHODS.get(method)
        if spec is None:
            raise ValueError(f"editing defaults: unknown method {method!r}")
        for name, value in values.items():
            info = spec.params.model_fields.get(name)
            if info is None or info.is_required():
                raise ValueError(f"editing defaults: {method} has no optional parameter {name!r}")
            try:
                # the field's own type and constraints (ge, le, ...), as the model checks them
                adapter: TypeAdapter[Any] = TypeAdapter(Annotated[info.annotation, info])  # type: ignore[arg-type]
                adapter.validate_python(value)
            except ValidationError as exc:
                msg = exc.errors()[0]["msg"]
                raise ValueError(f"editing defaults: {method}.{name}: {msg}") from None


def with_model_defaults(
    method: str, params: dict[str, Any], defaults: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The request's params over the model's editing defaults for ``method``."""
    return {**defaults.get(method, {}), **params}


def first_error(exc: ValidationError) -> tuple[str, str]:
    """("params.<field>", message) of a parameter validation error's first problem.

    Cross-field checks (model validators) have no location; their messages start
    with the field they blame ("negatives: ..."), which is used instead.
    """
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    blamed, msg = blamed_field(str(first["msg"]))
    if not loc and blamed:
        loc = blamed
    where = f"params.{loc}" if loc else "params"
    return where, msg


def blamed_field(message: str) -> tuple[str | None, str]:
    """(field, rest) of a cross-field check's message ("negatives: ...", pydantic's
    "Value error, " prefix dropped); (None, message) when it names no field."""
    msg = message.removeprefix("Value error, ")
    head, sep, rest = msg.partition(":")
    return (head, rest.strip()) if sep and head.isidentifier() else (None, msg)


def batch_key(method: str, params: dict[str, Any]) -> str:
    """Jobs of one model with equal keys run together as one batch."""
    spec = METHODS.get(method)
    fields = spec.batch_fields if spec else ()
    defaults = spec.defaults() if spec else {}
    values = [f"{name}={params.get(name, defaults.get(name))}" for name in fields]
    return ":".join([method, *values])
