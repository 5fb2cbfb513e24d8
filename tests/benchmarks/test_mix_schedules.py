"""The C schedule sweep's hand-set lams (``benchmarks.methods_bcd.parse_schedule``)."""

from __future__ import annotations

import pytest
import torch

from benchmarks.methods_bcd import parse_schedule
from worker.engine.methods.mixing import reference_init


def test_a_step_schedule_is_the_reference_init() -> None:
    assert torch.equal(parse_schedule("20", 50), reference_init(50))
    assert torch.equal(parse_schedule("0", 50), torch.zeros(50))
    assert torch.equal(parse_schedule("50", 50), torch.ones(50))


def test_a_ramp_falls_from_one_to_zero_over_its_span() -> None:
    lam = parse_schedule("20-30", 50)
    assert torch.equal(lam[:20], torch.ones(20)) and torch.equal(lam[30:], torch.zeros(20))
    assert lam[20] == 1.0 and 0.0 < lam[29] < 0.15
    assert bool((lam[21:30] < lam[20:29]).all())  # strictly falling inside the span


def test_a_constant_span_holds_its_value() -> None:
    lam = parse_schedule("25-35@0.5", 50)
    assert torch.equal(lam[25:35], torch.full((10,), 0.5))
    assert lam[:25].eq(1).all() and lam[35:].eq(0).all()


@pytest.mark.parametrize(
    "spec", ["30-20", "20-60", "-5-10", "51", "a-b", "20-30@x", "20-30@1.2.3", "20@0.5"]
)
def test_a_span_outside_the_run_or_a_malformed_one_is_refused(spec: str) -> None:
    with pytest.raises(SystemExit, match="c-schedules"):
        parse_schedule(spec, 50)
