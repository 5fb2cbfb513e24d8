"""What the API and the worker know of a method: its kind, inputs and parameters.

A method's own module in ``contract.methods`` makes one ``MethodSpec`` (two for a
fit and its edit); ``contract.methods.METHODS`` is built from those modules, and
the worker's handlers (``worker.methods``) are looked up by the same names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from contract.jobs import JobKind
from contract.params import MethodParams
from contract.rules import Condition, holds


@dataclass(frozen=True)
class MethodSpec:
    name: str
    kind: JobKind
    summary: str
    params: type[MethodParams]
    inputs: tuple[str, ...]  # image roles, each a content id from POST /v1/images
    families: tuple[str, ...] = ("pixel", "latent")
    optional_inputs: tuple[str, ...] = ()  # roles a request may give
    image_list_params: tuple[str, ...] = ()  # params holding lists of uploaded image ids
    # optional input roles that become required where a condition on the params holds
    # (``contract.rules``: a field left out reads as its default)
    input_when: dict[str, Condition] = field(default_factory=dict)
    # optional input roles that are masks (any size, read as luminance at h's resolution)
    mask_inputs: tuple[str, ...] = ()
    # params naming assets (an id, or a list of ids) -> the fit method that makes them
    asset_params: dict[str, str] = field(default_factory=dict)
    # params the method ignores where an (optional) input role is given -> that role
    unused_with_input: dict[str, str] = field(default_factory=dict)

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


class Refused(ValueError):
    """A request's parameters refused: ``where`` names the field; ``incompatible``: valid
    on its own but not on this model (the API's 409), else malformed (its 422)."""

    def __init__(self, where: str, message: str, *, incompatible: bool) -> None:
        super().__init__(message)
        self.where, self.message, self.incompatible = where, message, incompatible


def resolve_params(
    spec: MethodSpec,
    params: dict[str, Any],
    model_defaults: dict[str, dict[str, Any]],
    *,
    conditional: bool,
    model: str,
    family: str,
    inputs: frozenset[str] = frozenset(),
) -> MethodParams:
    """The parameters a job runs with: the request's own values checked first (their
    errors, and what they would leave unused), then over the model's editing defaults.

    A value the method's own rules say it would ignore is malformed; one that this model
    would ignore (a prompt on an unconditional model), or that the model's defaults
    would make it ignore (refine on a model whose default inversion is ddpm), is
    incompatible. A model default that the request makes inapplicable yields instead
    (the worker reads it only where it applies). ``inputs``: the request's image roles;
    a value the method ignores with one of them (``spec.unused_with_input``) is malformed."""
    try:
        given = spec.params.model_validate(params)
    except ValidationError as exc:
        where, msg = first_error(exc)
        raise Refused(where, f"{where}: {msg}", incompatible=False) from exc
    for name, role in spec.unused_with_input.items():
        if name in params and role in inputs:
            where = f"params.{name}"
            message = f"{where}: not used with inputs.{role} (the job works on that image)"
            raise Refused(where, message, incompatible=False)
    try:
        merged = spec.params.model_validate(with_model_defaults(spec.name, params, model_defaults))
    except ValidationError as exc:  # valid alone, not with this model's defaults
        where, msg = first_error(exc)
        message = f"{where}: with model {model}'s defaults: {msg}"
        raise Refused(where, message, incompatible=True) from exc
    for ignored, incompatible, how in (
        (given.ignored_by_rules(), False, ""),
        (given.unused_on_model(conditional, family), True, ""),
        (given.ignored_by_rules(merged.field_values()), True, f" with model {model}'s defaults"),
    ):
        if ignored is not None:
            name, why = ignored
            where = f"params.{name}"
            raise Refused(where, f"{where}: not used here{how}: {why}", incompatible=incompatible)
    return merged
