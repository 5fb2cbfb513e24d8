"""The published schemas refuse exactly what the API refuses.

Each method's cross-field rules run in Python (``MethodParams``: ``Needs`` on every
validation, ``Applies`` where a request comes in) and are published as JSON Schema
``if``/``then`` clauses. Here both judge the same parameter sets: 1,500 random ones
per method, each field the rules read left out or set to one of a few values that
its own schema allows, and a JSON Schema validator must agree with the API on every
one, accepting some and refusing some.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from pydantic import TypeAdapter, ValidationError

from contract.methods import METHODS
from contract.params import MethodParams
from contract.rules import Applies, condition_schema, satisfies
from service.job_requests import request_model

# values for the fields a method requires (valid on their own)
REQUIRED = {
    "name": "x",
    "asset": "a",
    "neutral": "a circle",
    "target": "a blue circle",
    "images": ["0" * 64, "1" * 64],
}


def _candidates(prop: dict[str, Any]) -> list[Any]:
    """A few values the field's own schema allows, so that only the rules can refuse."""
    if "anyOf" in prop:
        out: list[Any] = []
        for option in prop["anyOf"]:
            out += [None] if option.get("type") == "null" else _candidates(option)[:1]
        return out
    if "enum" in prop:
        return list(prop["enum"])
    kind = prop.get("type")
    if kind == "boolean":
        return [True, False]
    if kind == "array":
        return [[], ["0" * 64]]
    if kind in ("integer", "number"):
        low = prop.get("minimum", prop.get("exclusiveMinimum", 0) + 1)
        return sorted({low, min(low + 1, prop.get("maximum", low + 1)), prop.get("default", low)})
    if kind == "string":
        return ["x"]
    raise AssertionError(f"no candidates for {prop}")


def _rule_fields(cls: type[MethodParams]) -> list[str]:
    names: set[str] = set()
    for rule in cls.RULES:
        names.add(rule.field)
        conditions = rule.when if isinstance(rule, Applies) else (rule.when, rule.then)
        for condition in conditions:
            names.update(condition)
    return sorted(names)


def _api_accepts(cls: type[MethodParams], params: dict[str, Any]) -> bool:
    try:
        parsed = cls.model_validate(params)
    except ValidationError:
        return False
    return parsed.ignored_by_rules() is None


RULED = sorted({s.params for s in METHODS.values() if s.params.RULES}, key=lambda c: c.__name__)


@pytest.mark.parametrize("cls", RULED, ids=lambda c: c.__name__)
def test_the_schema_and_the_api_agree_on_every_rule(cls: type[MethodParams]) -> None:
    schema = cls.model_json_schema()
    validator = Draft202012Validator(schema)
    props = schema["properties"]
    fields = _rule_fields(cls)
    values = {name: _candidates(props[name]) for name in fields}
    required = {k: REQUIRED[k] for k in schema.get("required", [])}
    rng = random.Random(0)
    verdicts = set()
    for _ in range(1500):
        params = dict(required)
        for name in fields:
            if rng.random() < 0.5:
                params[name] = rng.choice(values[name])
        api, doc = _api_accepts(cls, params), validator.is_valid(params)
        assert api == doc, (params, "api" if api else "schema", "accepts, the other refuses")
        verdicts.add(api)
    assert verdicts == {True, False}  # the sample reaches both sides of the rules


def test_a_condition_on_an_absent_field_reads_its_default() -> None:
    # the default (None) fails "type: string", so the field must be present to satisfy it
    defaults = {"factor": None, "kind": "pca"}
    assert condition_schema({"factor": {"type": "string"}}, defaults)["required"] == ["factor"]
    assert "required" not in condition_schema({"kind": {"enum": ["pca", "jacobian"]}}, defaults)
    assert satisfies([], {"maxItems": 0}) and not satisfies(["a"], {"maxItems": 0})
    assert not satisfies(True, {"type": "number"})  # JSON's booleans are not numbers


def test_an_input_a_condition_requires_is_in_the_request_schema() -> None:
    """directions with kind jacobian needs inputs.image: the API's check and the
    request schema agree, with and without params and inputs."""
    schema = TypeAdapter(request_model(METHODS["directions"])).json_schema()
    validator = Draft202012Validator(schema)
    spec = METHODS["directions"]
    image = {"image": "0" * 64}
    for kind in (None, "pca", "jacobian"):
        for inputs in (None, {}, image):
            body: dict[str, Any] = {"method": "directions", "model": "m"}
            body["params"] = {"name": "x"} if kind is None else {"name": "x", "kind": kind}
            if inputs is not None:
                body["inputs"] = inputs
            parsed = spec.params.model_validate(body["params"])
            api = spec.missing_input(parsed, set(body.get("inputs", {}))) is None
            assert api == validator.is_valid(body), body
            assert api == (kind != "jacobian" or inputs == image)


def test_every_rule_names_a_field_of_its_method() -> None:
    for spec in METHODS.values():
        fields = set(spec.params.model_fields)
        for rule in spec.params.RULES:
            assert rule.field in fields, (spec.name, rule)
            named = rule.when if isinstance(rule, Applies) else (rule.when, rule.then)
            assert all(set(c) <= fields for c in named), (spec.name, rule)
