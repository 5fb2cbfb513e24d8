"""Method A on a tiny seeded U-Net: the limits of the content ratio, the mask, calibration."""

from __future__ import annotations

import pytest
import torch

from contract.methods.inject import InjectParams
from worker.engine import Denoiser, InputError, ddim_invert, ddim_sample, timestep_grid
from worker.engine.methods.inject import content_trajectory, inject_content

GRID = timestep_grid(10, 1000, "linspace")


def _setup(pixel: Denoiser) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    content = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    style = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    x_T = ddim_invert(pixel, style, GRID).x_T
    return content, x_T


PLAIN = InjectParams(g=0.0, t_edit=0, t_boost=0, lam=1.0)


def test_content_trajectory_has_h_at_every_step(pixel: Denoiser) -> None:
    content, _ = _setup(pixel)
    traj = content_trajectory(pixel, content, GRID, refine=0)
    assert sorted(traj.h) == GRID
    assert traj.h[GRID[-1]].shape == (2, *pixel.h_shape)
    assert pixel.hooks.active == []


def test_ratio_zero_is_plain_regeneration(pixel: Denoiser) -> None:
    """Bit for bit: slerp at g = 0 returns h exactly (weights 1 and 0 in float64), and the
    split U-Net runs the fused one's kernels on h's own memory layout, so nothing can
    differ, on any CPU. (A tolerance of 1e-4 failed on AVX2 kernels, at 3e-4, while h'
    came back in another layout than h and took other kernels.)"""
    content, x_T = _setup(pixel)
    out = inject_content(pixel, x_T, content_trajectory(pixel, content, GRID, refine=0), PLAIN)
    assert torch.equal(out, ddim_sample(pixel, x_T, GRID))


def test_ratio_one_changes_the_output_and_an_empty_mask_does_not(pixel: Denoiser) -> None:
    content, x_T = _setup(pixel)
    traj = content_trajectory(pixel, content, GRID, refine=0)
    plain = ddim_sample(pixel, x_T, GRID)
    full = InjectParams(g=1.0, t_edit=0, t_boost=0, lam=1.0)
    assert (inject_content(pixel, x_T, traj, full) - plain).abs().max() > 1e-2
    empty = torch.zeros(1, 1, *pixel.h_shape[1:])
    masked = inject_content(pixel, x_T, traj, full, mask=empty)
    assert torch.equal(masked, plain)  # 0 * h' + 1 * h is h exactly


def test_skip_calibration_and_damping_run_and_differ(pixel: Denoiser) -> None:
    content, x_T = _setup(pixel)
    traj = content_trajectory(pixel, content, GRID, refine=0)
    base = InjectParams(g=0.5, t_edit=0, t_boost=0, lam=1.0)
    a = inject_content(pixel, x_T, traj, base)
    b = inject_content(pixel, x_T, traj, InjectParams(g=0.5, t_edit=0, t_boost=0, lam=1.0, w=1.0))
    c = inject_content(pixel, x_T, traj, InjectParams(g=0.5, t_edit=0, t_boost=0, lam=0.9))
    assert torch.isfinite(b).all() and (a - b).abs().max() > 1e-3 and (a - c).abs().max() > 1e-3


def test_quality_boost_draws_from_the_generator(pixel: Denoiser) -> None:
    content, x_T = _setup(pixel)
    traj = content_trajectory(pixel, content, GRID, refine=0)
    boosted = InjectParams(g=0.3, t_edit=500, t_boost=300, lam=1.0)
    run = [
        inject_content(pixel, x_T, traj, boosted, generator=torch.Generator().manual_seed(s))
        for s in (1, 1, 2)
    ]
    assert torch.equal(run[0], run[1]) and not torch.equal(run[0], run[2])


@pytest.mark.parametrize(("field", "settings"), [
    # built without pydantic's checks: the engine's own check must catch them
    ("g", InjectParams.model_construct(g=1.5)),
    ("t_edit", InjectParams.model_construct(t_edit=2000)),
    ("w", InjectParams.model_construct(w=-1)),
    ("lam", InjectParams.model_construct(lam=0)),
])  # fmt: skip
def test_bad_settings_name_the_field(pixel: Denoiser, field: str, settings: InjectParams) -> None:
    content, x_T = _setup(pixel)
    traj = content_trajectory(pixel, content, GRID, refine=0)
    with pytest.raises(InputError, match=f"^{field}:"):
        inject_content(pixel, x_T, traj, settings)


def test_clip_x0_bounds_the_edited_prediction(pixel: Denoiser) -> None:
    from worker.engine.sampling import predict_x0

    content, x_T = _setup(pixel)
    traj = content_trajectory(pixel, content, GRID, refine=0)
    full = InjectParams(g=1.0, t_edit=0, t_boost=0, lam=1.0)
    clipped = full.model_copy(update={"clip_x0": True})
    free, held = inject_content(pixel, x_T, traj, full), inject_content(pixel, x_T, traj, clipped)
    assert not torch.allclose(free, held)
    # every step's x0_hat from the edited eps is in [-1, 1], so the final x_0 is too
    assert held.abs().max() <= 1.0 + 1e-4
    # a plain step's x0_hat, unclipped, leaves the range at the top of a random U-Net
    t = GRID[-1]
    eps = pixel.eps(x_T, t)
    assert predict_x0(x_T, eps, pixel.schedule.ab(t)).abs().max() > 1.0


def test_replace_steps_are_evenly_spaced_and_do_not_grow_with_steps() -> None:
    from worker.engine.methods.inject import replace_step_indices

    assert replace_step_indices(50, 50) == set(range(50))
    assert replace_step_indices(20, 50) == set(range(20))
    picked = replace_step_indices(1000, 50)
    assert len(picked) == 50 and 0 in picked and sorted(picked)[1] == 20


def test_only_replace_steps_inject_and_boost(
    pixel: Denoiser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reference injects at 50 of its 1000 generation steps; here every step with
    t >= t_edit injected, so 1000 steps injected about 600 times and the boost drew
    noise at every step below t_boost."""
    import worker.engine.methods.inject as module

    grid = timestep_grid(40, 1000, "linspace")
    content = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(5)) * 2 - 1
    traj = content_trajectory(pixel, content, grid, refine=0)
    calls = {"inject": 0, "noise": 0}
    real_inject, real_noise = module.inject, pixel.noise  # type: ignore[attr-defined]

    def counting_inject(*args: object, **kwargs: object) -> torch.Tensor:
        calls["inject"] += 1
        return real_inject(*args, **kwargs)  # type: ignore[arg-type]

    def counting_noise(*args: object, **kwargs: object) -> torch.Tensor:
        calls["noise"] += 1
        return real_noise(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(module, "inject", counting_inject)
    monkeypatch.setattr(pixel, "noise", counting_noise)
    settings = InjectParams(g=0.5, t_edit=0, t_boost=500, lam=1.0, replace_steps=8)
    assert traj.x_T is not None
    out = inject_content(pixel, traj.x_T, traj, settings, generator=torch.Generator())
    assert torch.isfinite(out).all()
    assert calls["inject"] == 8
    replaced = sorted(grid, reverse=True)
    boosted = [replaced[k] for k in module.replace_step_indices(40, 8) if 0 < replaced[k] <= 500]
    assert calls["noise"] == len(boosted)


def test_calibration_keeps_p_tildes_mean_and_is_never_damped(pixel: Denoiser) -> None:
    from worker.engine.methods.inject import restandardise

    g = torch.Generator().manual_seed(2)
    p, p_tilde = torch.randn(2, 3, 4, 4, generator=g), 3 + 2 * torch.randn(2, 3, 4, 4, generator=g)
    out = restandardise(p_tilde, p)
    dims = (1, 2, 3)
    torch.testing.assert_close(out.mean(dims), p_tilde.mean(dims))  # P~'s own mean
    torch.testing.assert_close(out.std(dims), p.std(dims))
    # every step calibrates (t_edit 0), so damping, which a calibrated step replaces,
    # must change nothing
    content, x_T = _setup(pixel)
    traj = content_trajectory(pixel, content, GRID, refine=0)
    calibrated = InjectParams(g=0.5, t_edit=0, t_boost=0, w=1.0, lam=1.0, t_damp=0)
    damped = InjectParams(g=0.5, t_edit=0, t_boost=0, w=1.0, lam=0.9, t_damp=0)
    assert torch.equal(
        inject_content(pixel, x_T, traj, calibrated), inject_content(pixel, x_T, traj, damped)
    )


def test_a_symmetric_injection_takes_both_terms_from_the_injected_h(pixel: Denoiser) -> None:
    """asymmetric false (outside the reference): eps~ drives x0_hat and the direction, so
    at g = 1 with t_edit 0 it is a plain generation with h replaced by norm(h_c)."""
    content, x_T = _setup(pixel)
    traj = content_trajectory(pixel, content, GRID, refine=0)
    sym = InjectParams(g=0.0, t_edit=0, t_boost=0, lam=1.0, asymmetric=False)
    assert torch.equal(inject_content(pixel, x_T, traj, sym), ddim_sample(pixel, x_T, GRID))
    full_sym = InjectParams(g=1.0, t_edit=0, t_boost=0, lam=1.0, asymmetric=False)
    full_asym = InjectParams(g=1.0, t_edit=0, t_boost=0, lam=1.0)
    a, b = inject_content(pixel, x_T, traj, full_sym), inject_content(pixel, x_T, traj, full_asym)
    assert (a - b).abs().max() > 1e-3
