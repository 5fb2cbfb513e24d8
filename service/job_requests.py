"""The typed request bodies of ``POST /v1/edits`` and ``POST /v1/fits``, one per method.

Built from ``METHODS``: each method's body names it in ``method`` (the union's
discriminator), takes its own ``inputs`` (the image roles it reads, each a content id)
and its own ``params`` model. The routes validate with these classes and the OpenAPI
document publishes them, so a generated client has one request class per method and
the document refuses what the API refuses (the cross-field rules included,
``contract.rules``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired, Required, Union

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model
from typing_extensions import TypedDict

from contract.jobs import JobKind
from contract.methods import METHODS
from contract.rules import condition_schema
from contract.spec import MethodSpec

ContentId = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9a-f]{64}$"),
    Field(description="the content id of an image from POST /v1/images (its sha256)"),
]
MODEL_FIELD = Field(
    min_length=1,
    max_length=200,
    description="a model a live worker holds (GET /v1/models); a name no worker holds is a "
    "404 naming the field, a model of a family the method cannot use a 409",
)
SEED_FIELD = Field(
    0,
    ge=0,
    le=2**53 - 1,
    description="seeds every random draw of the job (at most 2^53 - 1, "
    "the largest integer every JSON client reads exactly)",
)


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("-"))


def _inputs(spec: MethodSpec) -> type:
    roles: dict[str, Any] = {role: Required[ContentId] for role in spec.inputs}
    roles.update({role: NotRequired[ContentId] for role in spec.optional_inputs})
    inputs: Any = TypedDict(f"{_camel(spec.name)}Inputs", roles)  # type: ignore[misc]
    setattr(inputs, "__pydantic_config__", ConfigDict(extra="forbid"))  # noqa: B010
    return inputs


def _input_rules(spec: MethodSpec) -> dict[str, Any]:
    """``allOf`` clauses: an optional role that a condition on the params makes required,
    and a param that a given role leaves unused."""
    defaults = spec.params.field_defaults()
    clauses = []
    for role, condition in spec.input_when.items():
        when = condition_schema(condition, defaults)
        test: dict[str, Any] = {"properties": {"params": when}}
        if "required" in when:  # without params the defaults hold, and they fail it
            test["required"] = ["params"]
        clauses.append(
            {"if": test, "then": {"required": ["inputs"],
                                  "properties": {"inputs": {"required": [role]}}}}
        )  # fmt: skip
    for name, role in spec.unused_with_input.items():  # a value the method would ignore
        clauses.append(
            {"if": {"required": ["inputs"], "properties": {"inputs": {"required": [role]}}},
             "then": {"properties": {"params": {"not": {"required": [name]}}}}}
        )  # fmt: skip
    return {"allOf": clauses} if clauses else {}


def _request_model(spec: MethodSpec) -> type[BaseModel]:
    params_required = any(f.is_required() for f in spec.params.model_fields.values())
    what = "an edit" if spec.kind == JobKind.EDIT else "a fit"
    method: Any = Literal[spec.name]
    model: type[BaseModel] = create_model(
        f"{_camel(spec.name)}Request",
        __config__=ConfigDict(
            extra="forbid",
            title=f"{_camel(spec.name)}Request",
            json_schema_extra=_input_rules(spec) or None,
        ),
        __doc__=f"{what.capitalize()} by method {spec.name}: {spec.summary}",
        method=(method, Field(description="the method")),
        model=(str, MODEL_FIELD),
        inputs=(
            _inputs(spec),
            Field(... if spec.inputs else {}, description="image role -> content id"),
        ),
        params=(
            spec.params,
            Field(...) if params_required else Field(default_factory=spec.params),
        ),
        seed=(int, SEED_FIELD),
    )
    return model


_BUILT: dict[int, type[BaseModel]] = {}


def request_model(spec: MethodSpec) -> type[BaseModel]:
    """The request class of ``spec`` (built once per spec)."""
    if id(spec) not in _BUILT:
        _BUILT[id(spec)] = _request_model(spec)
    return _BUILT[id(spec)]


def request_union(kind: JobKind) -> Any:
    """Every registered method of ``kind``'s request, discriminated by ``method``: read
    when the app is built, so a method registered before then is served."""
    members = tuple(request_model(spec) for spec in METHODS.values() if spec.kind == kind)
    return Annotated[Union[members], Field(discriminator="method")]  # noqa: UP007


def request_parts(body: BaseModel) -> dict[str, Any]:
    """The request as the routes' generic form: params as the caller wrote them (the
    fields it set), so that the model's editing defaults fill in the rest."""
    params: BaseModel = body.params  # type: ignore[attr-defined]
    return {
        "model": body.model,  # type: ignore[attr-defined]
        "method": body.method,  # type: ignore[attr-defined]
        "inputs": dict(body.inputs),  # type: ignore[attr-defined]
        "params": params.model_dump(mode="json", exclude_unset=True),
        "seed": body.seed,  # type: ignore[attr-defined]
    }
