"""The base of every method's parameters, and the fields many methods share.

Torch-free: the API validates requests with these models and the worker hands the
validated object to the engine, which reads its values from it instead of
declaring defaults of its own.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler, model_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from contract.rules import Applies, Needs, Rule

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

    ``RULES`` are the cross-field rules (``contract.rules``): ``Needs`` rules are
    checked on every validation; ``Applies`` rules where a request comes in
    (``inapplicable``). Both are published in the JSON schema as ``if``/``then``.
    """

    model_config = ConfigDict(extra="forbid")
    RULES: ClassVar[tuple[Rule, ...]] = ()
    # boolean fields that only a pixel model can take switched on (a latent model's x_0
    # is not an image in [-1, 1])
    PIXEL_ONLY: ClassVar[tuple[str, ...]] = ()

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

    def inapplicable(self, conditional: bool, family: str = "pixel") -> tuple[str, str] | None:
        """(field, why) of a value the request set that this combination would ignore.

        Checked on the request as the caller wrote it (``model_fields_set``), so it runs
        where the request comes in (the API, the local CLI), not on the stored params,
        which carry every default. ``conditional``: whether the model takes a prompt;
        ``family``: "pixel" or "latent".
        """
        return self.unused_on_model(conditional, family) or self.ignored_by_rules()

    def unused_on_model(self, conditional: bool, family: str = "pixel") -> tuple[str, str] | None:
        """(field, why) of a prompt the request gave to a model that takes none, or of a
        pixel-only switch (``PIXEL_ONLY``) turned on for a latent model."""
        if not conditional:
            for name in ("prompt", "guidance_scale"):
                if name in self.model_fields_set:
                    return name, "the model is unconditional; it takes no prompt"
        if family != "pixel":
            for name in self.PIXEL_ONLY:
                if name in self.model_fields_set and getattr(self, name):
                    return name, f"pixel models only: a {family} model's x_0 is not in [-1, 1]"
        return None

    def ignored_by_rules(self, values: dict[str, Any] | None = None) -> tuple[str, str] | None:
        """(field, why) of a value the request set that the method's ``Applies`` rules
        say it would ignore (the published schema has these rules too). ``values``: the
        values the job will run with, where they are not the request's own (the model's
        editing defaults merged in); default, the request's."""
        values = self.field_values() if values is None else values
        for rule in self.RULES:
            if isinstance(rule, Applies) and rule.broken(self.model_fields_set, values):
                return rule.field, rule.why
        return None
