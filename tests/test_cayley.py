"""Cayley ADAM (training/cayley.py): it stays on the Stiefel manifold, finds a known Stiefel
optimum, resumes exactly from its state dict, and its K-stacked form equals K separate ones."""

from __future__ import annotations

import copy

import pytest
import torch

from semidisent.training.cayley import (
    CayleyAdam,
    cayley_adam_step,
    orthonormality_error,
    qr_retraction,
    second_moment_shape,
)


def _eigen_problem(n: int = 50, p: int = 10, seed: int = 0):
    """A symmetric A with a clear gap (top p eigenvalues in [2, 3], the rest in [0, 1]) and its
    top-p eigenspace: maximising tr(X A X^T) over X X^T = I reaches exactly that subspace."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    lam = torch.cat(
        [
            torch.linspace(2, 3, p, dtype=torch.float64),
            torch.linspace(0, 1, n - p, dtype=torch.float64),
        ]
    )
    return (q * lam) @ q.T, q[:, :p], g


def _sin_principal_angles(x: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """sin of the principal angles between span(x^T) and span(basis) (accurate near 0, where
    arccos of the cosines is not)."""
    xt = x.detach().double().T
    return torch.linalg.svdvals(xt - basis @ (basis.T @ xt))


def test_reaches_the_top_eigenspace_of_a_fixed_matrix():
    a, top, g = _eigen_problem()
    a32 = a.float()
    x = torch.nn.Parameter(torch.nn.init.orthogonal_(torch.empty(10, 50), generator=g))
    opt = CayleyAdam([x], lr=0.1)
    start = -(x @ a32 @ x.T).trace().item()
    for _ in range(1000):
        opt.zero_grad()
        loss = -(x @ a32 @ x.T).trace()
        loss.backward()
        opt.step()
    assert loss.item() < start
    # The optimum: minus the sum of the top 10 eigenvalues, 25 (float32 loss: 1e-5 relative).
    assert abs(loss.item() + 25.0) < 25.0 * 1e-5
    assert float(_sin_principal_angles(x, top).max()) < 1e-3


def test_stays_orthonormal_over_ten_thousand_steps_of_k_stacked_random_problems():
    """Four models at once, each with its own random quadratic objective whose gradient is far
    from tangent, learning rates from 0.1 (1000x St-RKM's) down to St-RKM's 1e-4 and inactive
    steps for one model: X X^T = I within 1e-5 at every checked step (float32 parameters).
    (At lr 0.5 the step is capped by 1 / ||W||_1, where the five fixed-point iterations of the
    Cayley map leave up to ~1.5e-5 before the next QR retraction: measured, the reference's
    behaviour too.)"""
    k, p, n = 4, 5, 20
    g = torch.Generator().manual_seed(1)
    x = torch.stack([torch.nn.init.orthogonal_(torch.empty(p, n), generator=g) for _ in range(k)])
    b = torch.randn(k, n, n, generator=g)
    targets = torch.randn(k, p, n, generator=g)
    m = torch.zeros_like(x)
    v = torch.zeros(second_moment_shape(x, True))
    count = torch.zeros(k)
    lr = torch.tensor([0.1, 0.01, 0.001, 1e-4])
    worst = 0.0
    for step in range(10_000):
        active = torch.tensor([True, True, True, step % 3 != 0])
        grad = torch.einsum("kpn,knm->kpm", x, b + b.transpose(1, 2)) + (x - targets)
        cayley_adam_step([x], [grad], [m], [v], count, lr, active, batched=True)
        if step % 50 == 0:
            worst = max(worst, float(orthonormality_error(x).max()))
    worst = max(worst, float(orthonormality_error(x).max()))
    assert worst < 1e-5
    assert count.tolist() == [10_000, 10_000, 10_000, 10_000 - 3334]


def test_state_dict_resumes_exactly():
    a, _, g = _eigen_problem(seed=2)
    a32 = a.float()
    x = torch.nn.Parameter(torch.nn.init.orthogonal_(torch.empty(10, 50), generator=g))
    opt = CayleyAdam([x], lr=0.05)

    def run(param, optimiser, steps):
        for _ in range(steps):
            optimiser.zero_grad()
            (-(param @ a32 @ param.T).trace()).backward()
            optimiser.step()

    run(x, opt, 150)  # past a QR retraction (every 101 steps)
    saved_x, saved_state = x.detach().clone(), copy.deepcopy(opt.state_dict())
    run(x, opt, 120)
    y = torch.nn.Parameter(saved_x.clone())
    resumed = CayleyAdam([y], lr=0.05)
    resumed.load_state_dict(saved_state)
    run(y, resumed, 120)
    assert torch.equal(x.detach(), y.detach())


def test_k_stacked_update_equals_k_separate_updates():
    k, p, n = 3, 4, 12
    g = torch.Generator().manual_seed(3)
    x = torch.stack([torch.nn.init.orthogonal_(torch.empty(p, n), generator=g) for _ in range(k)])
    lr = torch.tensor([0.3, 0.05, 0.01])
    stacked = [x.clone(), torch.zeros_like(x), torch.zeros(k, 1, 1), torch.zeros(k)]
    alone = [[x[i].clone(), torch.zeros(p, n), torch.zeros(1, 1), torch.zeros(1)] for i in range(k)]
    on = torch.ones(k, dtype=torch.bool)
    for _ in range(205):
        grads = torch.randn(k, p, n, generator=g)
        cayley_adam_step(
            [stacked[0]], [grads], [stacked[1]], [stacked[2]], stacked[3], lr, on, True
        )
        for i, (xi, mi, vi, ci) in enumerate(alone):
            cayley_adam_step([xi], [grads[i]], [mi], [vi], ci, lr[i : i + 1], on[:1], False)
    for i in range(k):
        torch.testing.assert_close(stacked[0][i], alone[i][0], rtol=0, atol=1e-6)


def test_qr_retraction_fixes_an_orthonormal_point_and_repairs_a_perturbed_one():
    g = torch.Generator().manual_seed(4)
    x64 = torch.linalg.qr(torch.randn(9, 5, generator=g, dtype=torch.float64))[0].T
    torch.testing.assert_close(qr_retraction(x64), x64, rtol=0, atol=1e-12)
    noisy = x64 + 1e-3 * torch.randn(5, 9, generator=g, dtype=torch.float64)
    assert float(orthonormality_error(qr_retraction(noisy))) < 1e-12


gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@gpu
def test_compiled_update_on_cuda_matches_the_cpu_update():
    k, p, n = 2, 10, 50
    g = torch.Generator().manual_seed(6)
    x = torch.stack([torch.nn.init.orthogonal_(torch.empty(p, n), generator=g) for _ in range(k)])
    grads = [torch.randn(k, p, n, generator=g) for _ in range(120)]
    lr = torch.tensor([0.05, 1e-4])
    on = torch.ones(k, dtype=torch.bool)
    states = {}
    for device, update in (("cpu", cayley_adam_step), ("cuda", torch.compile(cayley_adam_step))):
        # Copies: the update works in place, and x.to("cpu") would be x itself, so the CUDA run
        # would start where the CPU run ended.
        s = [t.to(device, copy=True) for t in (x, torch.zeros_like(x), torch.zeros(k, 1, 1),
                                               torch.zeros(k))]  # fmt: skip
        for grad in grads:
            update([s[0]], [grad.to(device)], [s[1]], [s[2]], s[3], lr.to(device),
                   on.to(device), True)  # fmt: skip
        states[device] = s[0].cpu()
    assert float(orthonormality_error(states["cuda"]).max()) < 1e-5
    torch.testing.assert_close(states["cuda"], states["cpu"], rtol=0, atol=1e-4)


@pytest.mark.gpu
@gpu
def test_st_rkm_fast_path_matches_eager_on_cuda(small_prepared, ieee_training):
    """The compiled step with Cayley ADAM, captured as a CUDA graph, against the eager step
    (both in IEEE float32; the orthogonality stat is float64 whatever the kernels)."""
    import dataclasses

    from semidisent.artifacts.prepared import load_prepared
    from semidisent.config import load_params
    from semidisent.methods.base import RunSpec
    from semidisent.training import train

    path, overrides = small_prepared
    params = load_params(None, [*overrides, "model.name=st_rkm", "train.steps=20",
                                "train.batch_size=8", "train.device=cuda", "train.amp=off",
                                "st_rkm.final_rows=200"])  # fmt: skip
    prepared = load_prepared(path, params)
    runs = {
        fast: train(prepared, RunSpec(dataclasses.replace(params.train, fast=fast),
                                      params.st_rkm), params.model, progress=False)
        for fast in ("off", "on")
    }  # fmt: skip
    assert runs["on"].stats["cuda_graph"] and runs["on"].stats["fast_path"]
    for a, b in zip(runs["off"].curves, runs["on"].curves, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-3)
        assert b["orthogonality"] < 1e-5
