"""The h-space algebra of methods A and E, pinned on known inputs."""

from __future__ import annotations

import pytest
import torch

from worker.engine import InputError
from worker.engine.hspace import (
    align_signs,
    inject,
    match_norm,
    pca_directions,
    power_iteration,
    project_out,
    slerp,
)


def _h(seed: int, shape: tuple[int, ...] = (2, 8, 4, 4)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_match_norm_gives_each_sample_the_norm_of_h() -> None:
    h, h_c = _h(0), 3 * _h(1)
    out = match_norm(h_c, h)
    torch.testing.assert_close(out.flatten(1).norm(dim=1), h.flatten(1).norm(dim=1))
    cos = torch.nn.functional.cosine_similarity(out.flatten(1), h_c.flatten(1))
    torch.testing.assert_close(cos, torch.ones(2))  # direction kept


def test_slerp_endpoints() -> None:
    h, h_c = _h(2), _h(3)
    torch.testing.assert_close(slerp(h, h_c, 0.0), h)
    torch.testing.assert_close(slerp(h, h_c, 1.0), h_c)
    # g = 1 in an injection step gives the norm-matched h_c
    torch.testing.assert_close(inject(h, h_c, 1.0), match_norm(h_c, h))


def test_slerp_keeps_the_norm_between_equal_norm_vectors() -> None:
    h = _h(4)
    h_c = match_norm(_h(5), h)
    mid = slerp(h, h_c, 0.3)
    torch.testing.assert_close(mid.flatten(1).norm(dim=1), h.flatten(1).norm(dim=1))


def test_slerp_falls_back_to_lerp_when_parallel() -> None:
    h = _h(6)
    out = slerp(h, 2 * h, 0.25)  # theta = 0: the reference code gives NaN here
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, 0.75 * h + 0.25 * (2 * h))


def test_slerp_refuses_a_ratio_outside_0_1() -> None:
    with pytest.raises(InputError, match=r"g: the content ratio must lie in \[0, 1\]"):
        slerp(_h(0), _h(1), 1.5)


def test_masked_injection_keeps_h_outside_the_mask() -> None:
    h, h_c = _h(7), _h(8)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :] = 1
    out = inject(h, h_c, 0.5, mask)
    torch.testing.assert_close(out[..., 2:, :], h[..., 2:, :])
    assert not torch.allclose(out[..., :2, :], h[..., :2, :])


def test_projection_is_orthogonal_to_the_others() -> None:
    n = _h(9, (8, 4, 4))
    others = _h(10, (3, 8, 4, 4))
    out = project_out(n, others)
    dots = (others.flatten(1) @ out.flatten()).abs()
    assert dots.max() < 1e-4
    # projecting twice changes nothing
    torch.testing.assert_close(project_out(out, others), out, rtol=1e-5, atol=1e-5)


def test_pca_recovers_a_known_low_rank_set() -> None:
    g = torch.Generator().manual_seed(11)
    basis = torch.linalg.qr(torch.randn(50, 2, generator=g, dtype=torch.float64))[0].T  # (2, 50)
    # centred, uncorrelated coefficients with standard deviations exactly 5 and 2
    c = torch.randn(400, 2, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(c - c.mean(0))
    coeffs = q * torch.tensor([5.0, 2.0], dtype=torch.float64) * 399**0.5
    samples = (coeffs @ basis).float().reshape(400, 2, 5, 5)
    directions, std = pca_directions(samples, k=2)
    overlap = (directions.reshape(2, -1).double() @ basis.T).abs()
    torch.testing.assert_close(overlap, torch.eye(2, dtype=torch.float64), atol=1e-3, rtol=0)
    torch.testing.assert_close(std, torch.tensor([5.0, 2.0]), rtol=1e-4, atol=1e-4)


def test_align_signs_makes_consecutive_steps_agree() -> None:
    d = _h(12, (3, 10))
    flipped = d * torch.tensor([[-1.0], [1.0], [-1.0]])
    out = align_signs([d, flipped])
    assert ((out[0] * out[1]).sum(1) > 0).all()


def test_power_iteration_on_a_known_matrix() -> None:
    g = torch.Generator().manual_seed(13)
    u, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=torch.float64))
    s = torch.tensor([9.0, 4.0, 1.0, 0.5], dtype=torch.float64)
    J = (u[:, :4] * s) @ v.T  # (6 out, 4 in), singular values 9, 4, 1, 0.5
    Jf = J.float()
    directions, sigmas = power_iteration(
        jvp=lambda x: Jf @ x, vjp=lambda y: Jf.T @ y, in_shape=(4,), out_shape=(6,),
        k=3, iters=500, tol=1e-9, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    torch.testing.assert_close(sigmas, s[:3].float(), rtol=1e-3, atol=1e-3)
    overlap = (directions.double() @ v[:, :3]).abs()
    torch.testing.assert_close(overlap, torch.eye(3, dtype=torch.float64), atol=1e-3, rtol=0)


def test_align_signs_compares_every_step_with_the_first() -> None:
    """A drifting direction: each step is close to the previous one but the last is
    opposed to the first. The reference aligns to step 0; a chain to the previous step
    keeps the drift's sign."""
    angles = torch.linspace(0, 2.6, 8)  # radians, from step 0 on
    steps = [torch.stack([torch.cos(a), torch.sin(a)]).view(1, 2) for a in angles]
    first = align_signs(steps)
    assert all(float((d * first[0]).sum()) >= 0 for d in first)
    chained = align_signs(steps, to="previous")
    assert float((chained[-1] * chained[0]).sum()) < 0


def test_the_joint_solve_is_orthogonal_over_all_steps_and_the_per_step_one_at_each() -> None:
    from worker.engine.hspace import project_out, project_out_joint

    g = torch.Generator().manual_seed(4)
    dirs = {t: torch.randn(2, 3, 2, 2, generator=g) for t in (0, 10, 20)}
    others = {t: torch.randn(1, 3, 2, 2, generator=g) for t in (0, 10, 20)}
    joint = project_out_joint(dirs, others)
    whole = torch.stack([joint[t].reshape(2, -1) @ others[t].reshape(1, -1).T for t in dirs]).sum(0)
    assert whole.abs().max() < 1e-4  # orthogonal as one long vector
    per_step_dots = [float((joint[t].reshape(2, -1) @ others[t].reshape(-1)).abs().max())
                     for t in dirs]  # fmt: skip
    assert max(per_step_dots) > 1e-3  # but not at each step
    for t in dirs:
        clean = torch.stack([project_out(d, others[t]) for d in dirs[t]])
        assert float((clean.reshape(2, -1) @ others[t].reshape(-1)).abs().max()) < 1e-4


def test_a_masked_injection_slerps_the_region_without_norm_matching() -> None:
    from worker.engine.hspace import inject, slerp

    g = torch.Generator().manual_seed(6)
    h, h_c = torch.randn(2, 4, 3, 3, generator=g), 5 * torch.randn(2, 4, 3, 3, generator=g)
    mask = torch.zeros(1, 1, 3, 3)
    mask[..., :2, :2] = 1
    out = inject(h, h_c, 0.5, mask)
    assert torch.equal(out[..., 2, :], h[..., 2, :]) and torch.equal(out[..., :, 2], h[..., :, 2])
    inside = slerp(h * mask, h_c * mask, 0.5)
    torch.testing.assert_close(out[..., :2, :2], inside[..., :2, :2])
    # the region's own norms: h_c five times larger pulls the result's norm up, where the
    # global rule first scales h_c to ||h||
    assert float(out[..., :2, :2].norm()) > 1.5 * float(h[..., :2, :2].norm())
    rows = inject(h, h_c, 0.5, mask, masked_rows=torch.tensor([True, False]))
    torch.testing.assert_close(rows[0], out[0])
    torch.testing.assert_close(rows[1], inject(h, h_c, 0.5)[1])
