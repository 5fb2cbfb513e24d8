"""Parameter models refuse combinations where a value would be silently ignored."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from contract.methods import METHODS
from contract.spec import first_error


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


def test_lam_eta_needs_the_ddim_sampler() -> None:
    lam = {"name": "l", "neutral": "a circle", "target": "a red circle"}
    where, msg = _refused("lam", {**lam, "sampler": "plms", "eta": 1.0})
    assert where == "params.eta" and "deterministic" in msg
    for ok in ({"sampler": "plms", "eta": 0}, {"sampler": "ddim", "eta": 1.0}, {"eta": 0.5}):
        METHODS["lam"].params.model_validate({**lam, **ok})


def test_boundary_edit_defaults_move_h_to_the_same_distance() -> None:
    p = METHODS["boundary-edit"].params.model_validate({"asset": "a", "distance": 1})
    assert p.move_h is True and p.h_scaling is None  # type: ignore[attr-defined]
    dumped = p.model_dump(mode="json")  # what the worker validates again
    METHODS["boundary-edit"].params.model_validate(dumped)


@pytest.mark.parametrize(
    ("method", "params", "conditional", "field"),
    [
        ("reconstruct", {"inversion": "ddpm", "refine": 2}, False, "refine"),
        ("reconstruct", {"prompt": "a red circle"}, False, "prompt"),
        ("style-generate", {"asset": "a", "guidance_scale": 3}, False, "guidance_scale"),
        ("inject", {"w": 1.0, "clip_x0": True}, False, "clip_x0"),
        (
            "directions",
            {"name": "d", "kind": "supervised", "factor": "colour", "value": "red", "k": 3},
            False,
            "k",
        ),
        ("directions", {"name": "d", "kind": "pca", "iters": 10}, False, "iters"),
        ("directions", {"name": "d", "kind": "jacobian", "jacobian_t": 500}, False, "jacobian_t"),
        ("boundary-edit", {"asset": "a", "distance": 1.0, "strength": 3.0}, False, "strength"),
        (
            "lam",
            {"name": "l", "neutral": "a", "target": "b", "scorer": "clip", "temperature": 8},
            True,
            "temperature",
        ),
    ],
)
def test_values_a_combination_would_ignore_are_named(
    method: str, params: dict[str, object], conditional: bool, field: str
) -> None:
    parsed = METHODS[method].params.model_validate(params)
    found = parsed.inapplicable(conditional=conditional)
    assert found is not None and found[0] == field, found


def test_the_same_values_where_they_apply_pass() -> None:
    ok = [
        ("reconstruct", {"inversion": "ddim", "refine": 2}, False),
        ("reconstruct", {"prompt": "a red circle"}, True),
        ("inject", {"w": 0.0, "clip_x0": True}, False),
        ("boundary-edit", {"asset": "a", "strength": 3.0}, False),
        ("lam", {"name": "l", "neutral": "a", "target": "b", "temperature": 8}, True),
        (
            "directions",
            {
                "name": "d",
                "kind": "jacobian",
                "iters": 10,
                "k": 2,
                "jacobian_apply": "one_step",
                "jacobian_t": 500,
            },
            False,
        ),
    ]
    for method, params, conditional in ok:
        parsed = METHODS[method].params.model_validate(params)
        assert parsed.inapplicable(conditional=conditional) is None, (method, params)
    # the stored params carry every default; the worker never calls this on them


def test_stored_params_validate_again_in_the_worker() -> None:
    """The API stores every field, defaults included; the worker validates them again.
    A check on which fields were given would refuse every stored request."""
    for method, params in [
        ("boundary-edit", {"asset": "a", "distance": 1, "move_h": False}),
        ("directions", {"name": "d", "kind": "supervised", "factor": "colour", "value": "red"}),
        ("reconstruct", {"inversion": "ddpm"}),
        ("inject", {"w": 1.0}),
    ]:
        spec = METHODS[method].params
        spec.model_validate(spec.model_validate(params).model_dump(mode="json"))
