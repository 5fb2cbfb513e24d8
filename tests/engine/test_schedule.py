from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from worker.engine import InputError, NoiseSchedule, timestep_grid


@pytest.mark.parametrize(
    ("kind", "kwargs"),
    [
        ("linear", {}),
        ("scaled_linear", {"beta_start": 0.00085, "beta_end": 0.012}),
        ("squaredcos_cap_v2", {}),
    ],
)
def test_alpha_bar_matches_diffusers(kind: str, kwargs: dict[str, float]) -> None:
    ref = DDIMScheduler(beta_schedule=kind, **kwargs)
    ours = NoiseSchedule.from_scheduler_config(dict(ref.config))
    assert ours.num_train_timesteps == 1000
    torch.testing.assert_close(
        ours.alphas_cumprod.float(), ref.alphas_cumprod.float(), rtol=1e-5, atol=1e-6
    )
    assert ours.ab(-1) == 1.0


def test_leading_grid_is_diffusers_set_timesteps() -> None:
    ref = DDIMScheduler()
    ref.set_timesteps(50)
    assert timestep_grid(50, 1000, "leading") == sorted(ref.timesteps.tolist())


def _reference_grid(n: int, t_max: int) -> list[int]:
    """Asyrp / BoundaryDiffusion: ``seq = np.linspace(0, 1, n) * t0; [int(s + 1e-6) ...]``,
    without the repeats it has when n > t_max + 1 (our grids strictly increase)."""
    return sorted({int(s + 1e-6) for s in np.linspace(0, 1, n) * t_max})


def test_linspace_grid_is_the_reference_grid() -> None:
    grid = timestep_grid(40, 1000, "linspace", t_max=500)
    assert grid[0] == 0 and grid[-1] == 500 and len(grid) == 40
    for n in (10, 20, 25, 40, 50, 100):
        for t_max in range(20, 1000, 20):  # every mixing step B's search can pick, and more
            assert timestep_grid(n, 1000, "linspace", t_max=t_max) == _reference_grid(n, t_max)


def test_a_1000_step_linspace_grid_has_every_timestep() -> None:
    # int(i / 999 * 999) truncated 63, 126, 252, 504 and 509 to their predecessors
    assert timestep_grid(1000, 1000, "linspace") == list(range(1000))


def test_leading_grid_cut_at_t_max() -> None:
    assert timestep_grid(10, 1000, "leading", t_max=450) == [0, 100, 200, 300, 400]


@pytest.mark.parametrize(("steps", "t_max"), [(0, None), (1001, None), (10, 1000), (10, -1)])
def test_bad_grid_arguments_name_the_field(steps: int, t_max: int | None) -> None:
    with pytest.raises(InputError, match=r"steps|t_max"):
        timestep_grid(steps, 1000, "leading", t_max=t_max)


def test_unknown_beta_schedule() -> None:
    with pytest.raises(InputError, match="beta_schedule"):
        NoiseSchedule.from_scheduler_config({"beta_schedule": "sigmoid"})
