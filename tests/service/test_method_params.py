"""Parameter models refuse combinations where a value would be silently ignored."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.method_specs import METHODS, first_error


def _refused(method: str, params: dict[str, object]) -> tuple[str, str]:
    with pytest.raises(ValidationError) as info:
        METHODS[method].params.model_validate(params)
    return first_error(info.value)


@pytest.mark.parametrize("field", ["h_distance", "h_scaling"])
def test_h_settings_without_move_h_are_refused(field: str) -> None:
    value = 2.0 if field == "h_distance" else "ratio"
    where, msg = _refused("boundary-edit", {"asset": "a", "distance": 1, "move_h": False,
                                            field: value})  # fmt: skip
    assert where == f"params.{field}" and "move_h" in msg


def test_boundary_edit_defaults_move_h_to_the_same_distance() -> None:
    p = METHODS["boundary-edit"].params.model_validate({"asset": "a", "distance": 1})
    assert p.move_h is True and p.h_scaling is None  # type: ignore[attr-defined]
    dumped = p.model_dump(mode="json")  # what the worker validates again
    METHODS["boundary-edit"].params.model_validate(dumped)
