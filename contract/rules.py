"""Cross-field rules of a method's parameters, checked in Python and published as JSON Schema.

A rule reads a request's parameters the way the method does: a field the request
leaves out has its default. Each condition is a mapping of field names to a small
JSON-Schema constraint (``enum``, ``type``, ``minItems``, ``maxItems``) that all must
hold. The same rule object is both the check the API runs (a 422 naming the field)
and the ``if``/``then`` clause in the method's published schema, so the OpenAPI
document refuses exactly what the API refuses (``tests/service/test_param_rules.py``
compares the two on every combination of the rules' values).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Constraint = Mapping[str, Any]
Condition = Mapping[str, Constraint]

_TYPES: dict[str, tuple[type, ...]] = {
    "null": (type(None),),
    "string": (str,),
    "number": (int, float),
    "boolean": (bool,),
}


def satisfies(value: Any, constraint: Constraint) -> bool:
    """Whether ``value`` meets a constraint of the supported JSON-Schema subset."""
    for key, bound in constraint.items():
        if key == "enum" and value not in bound:
            return False
        if key == "type":
            kinds = _TYPES[bound]
            if not isinstance(value, kinds) or (bound == "number" and isinstance(value, bool)):
                return False
        if key == "minItems" and not (isinstance(value, list) and len(value) >= bound):
            return False
        if key == "maxItems" and not (isinstance(value, list) and len(value) <= bound):
            return False
        if key not in ("enum", "type", "minItems", "maxItems"):
            raise ValueError(f"unsupported constraint {key!r}")
    return True


def holds(condition: Condition, values: Mapping[str, Any]) -> bool:
    """Every field's value (the request's or its default) meets its constraint."""
    return all(satisfies(values[name], c) for name, c in condition.items())


def condition_schema(condition: Condition, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON Schema of ``condition`` on an object whose absent fields take ``defaults``.

    ``properties`` constrain only the fields present; a field whose default fails its
    constraint must be present for the condition to hold, so it is ``required`` too.
    """
    schema: dict[str, Any] = {"properties": {k: dict(c) for k, c in condition.items()}}
    required = [k for k, c in condition.items() if not satisfies(defaults[k], c)]
    if required:
        schema["required"] = required
    return schema


@dataclass(frozen=True)
class Applies:
    """``field`` is used only where one of the ``when`` conditions holds; a request that
    sets it elsewhere is refused, since the method would ignore the value."""

    field: str
    when: tuple[Condition, ...]
    why: str

    def broken(self, given: set[str], values: Mapping[str, Any]) -> bool:
        return self.field in given and not any(holds(c, values) for c in self.when)

    def schema(self, defaults: Mapping[str, Any]) -> dict[str, Any]:
        alternatives = [condition_schema(c, defaults) for c in self.when]
        then = alternatives[0] if len(alternatives) == 1 else {"anyOf": alternatives}
        return {"if": {"required": [self.field]}, "then": then}


@dataclass(frozen=True)
class Needs:
    """Where ``when`` holds, ``then`` must hold too (a value that needs others)."""

    field: str
    when: Condition
    then: Condition
    why: str

    def broken(self, given: set[str], values: Mapping[str, Any]) -> bool:
        return holds(self.when, values) and not holds(self.then, values)

    def schema(self, defaults: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "if": condition_schema(self.when, defaults),
            "then": condition_schema(self.then, defaults),
        }


Rule = Applies | Needs
