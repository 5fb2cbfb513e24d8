"""The registry of methods: one line per method module.

A method module (``contract/methods/<name>.py``) holds its torch-free parameter
models and its ``MethodSpec`` objects; the worker's handlers live in the module of
the same name in ``worker/methods/``. Adding a method is its own files plus one
entry in ``MODULES`` below.
"""

from __future__ import annotations

from types import ModuleType
from typing import Annotated, Any

from pydantic import TypeAdapter, ValidationError

from contract.methods import boundaries, directions, inject, mixing, reconstruct, style_noise
from contract.spec import MethodSpec

MODULES: tuple[ModuleType, ...] = (reconstruct, inject, directions, boundaries, mixing, style_noise)


def specs_of(module: ModuleType) -> list[MethodSpec]:
    """The ``MethodSpec`` objects a method module defines, in definition order."""
    return [value for value in vars(module).values() if isinstance(value, MethodSpec)]


METHODS: dict[str, MethodSpec] = {
    spec.name: spec for module in MODULES for spec in specs_of(module)
}


def register(spec: MethodSpec) -> None:
    """Add a method at run time (a plug-in, or a test's toy method); a name is taken once."""
    if spec.name in METHODS:
        raise ValueError(f"method {spec.name!r} is registered already")
    METHODS[spec.name] = spec


def unregister(name: str) -> None:
    METHODS.pop(name, None)


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
