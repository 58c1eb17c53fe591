"""FISTA: agreement with the reference implementation (warm starts too), convergence to an independent (dense ADMM)
solution, objective decrease, filter-permutation equivariance, sizes, differentiability."""

from __future__ import annotations


import numpy as np
import pytest
import scipy.ndimage
import torch

from adacsc.core.convolution import Synthesis
from adacsc.core.filter_bank import FilterBank
from adacsc.core.dictionary import random_dictionary
from adacsc.core.fista import fista, objective, soft_threshold
from adacsc.core.fista_reference import reference_fista
from adacsc.core.fourier import SampledFourier
from adacsc.core.spectral import SpectralCodeOperator
from adacsc.mr.fft import fftc
from support.operators import crandn


def make_op(filters: np.ndarray, acq, grid, dtype=torch.complex64, mask=None) -> SpectralCodeOperator:
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    return SpectralCodeOperator(Synthesis(FilterBank(torch.tensor(filters, dtype=real))),
                                SampledFourier(acq, grid, mask), "cpu", dtype)


@pytest.mark.parametrize("acq, grid, mask_kind", [((8, 10), (16, 20), None), ((9, 7), (18, 15), None),
                                                   ((12, 12), (12, 12), "lines"), ((8, 10), (16, 20), "batched")])
def test_fused_fista_equals_the_reference(acq, grid, mask_kind):
    gen = torch.Generator().manual_seed(0)
    mask = None
    if mask_kind == "lines":
        mask = (torch.rand(acq[0], 1, generator=gen) > 0.4).float()
    elif mask_kind == "batched":
        mask = (torch.rand(2, *acq, generator=gen) > 0.3).float()
    f = random_dictionary(6, 5, seed=1).filters
    op = make_op(f, acq, grid, torch.complex128, mask)
    y = crandn(2, *acq, generator=gen)
    lip = op.squared_norm()
    maps = torch.rand((2, 6) + grid, generator=gen, dtype=torch.float64) * 0.1
    zeros = torch.zeros((2, 6) + grid, dtype=y.dtype)
    for lam in (0.05, maps):
        ref = reference_fista(op.fourier @ op.synthesis, y, lam, lip, 15, zeros)
        for chunk in (None, 1, 4):
            out = fista(op, y, lam, lip, 15, chunk_size=chunk)
            assert (out - ref).abs().max() < 1e-12 * ref.abs().max()


def test_soft_threshold_real_and_imaginary_separately():
    v = torch.tensor([3 + 0.5j, -2 - 4j, 0.2 - 0.9j])
    expected = torch.tensor([2 + 0j, -1 - 3j, 0 + 0j])
    torch.testing.assert_close(soft_threshold(v, 1.0), expected)
    torch.testing.assert_close(soft_threshold(v, torch.ones(3, 1)), expected)


# --- an independent solution: dense matrices (numpy, scipy) and ADMM in float64 ---------------

def dense_system(filters: np.ndarray, acq, grid) -> np.ndarray:
    """Phi = S F_c [C_1 .. C_K] as a dense complex matrix, built from numpy/scipy primitives."""
    h, w = grid
    n = h * w
    basis = np.eye(n).reshape(n, h, w)
    fourier = fftc(basis.astype(np.complex128)).reshape(n, n).T  # column j: spectrum of e_j
    r0, c0 = h // 2 - acq[0] // 2, w // 2 - acq[1] // 2
    rows = (np.arange(r0, r0 + acq[0])[:, None] * w + np.arange(c0, c0 + acq[1])[None, :]).ravel()
    blocks = []
    for d in filters.astype(np.float64):
        conv = np.stack([scipy.ndimage.convolve(e, d, mode="wrap").ravel() for e in basis], axis=1)
        blocks.append(fourier[rows] @ conv)
    return np.concatenate(blocks, axis=1)


def dense_objective(phi: torch.Tensor, y: torch.Tensor, s: torch.Tensor, lam) -> float:
    r = phi @ s - y
    return float(0.5 * (r.abs() ** 2).sum() + (torch.as_tensor(lam) * (s.real.abs() + s.imag.abs())).sum())


def admm(phi: torch.Tensor, y: torch.Tensor, lam, rho: float, n_iter: int) -> torch.Tensor:
    """ADMM for min ||Phi s - y||^2/2 + sum lam (|Re s| + |Im s|), split s = u (dense, float64).

    (torch rather than numpy: OpenBLAS threads stall badly on a busy 2-core machine.)
    """
    phi_h = phi.conj().T.contiguous()
    small = torch.linalg.inv(rho * torch.eye(phi.shape[0], dtype=phi.dtype) + phi @ phi_h)  # Woodbury
    rhs0 = phi_h @ y
    u = torch.zeros(phi.shape[1], dtype=phi.dtype)
    w = torch.zeros_like(u)
    thr = torch.as_tensor(lam) / rho

    def shrink(a):
        return torch.sign(a) * torch.clamp(a.abs() - thr, min=0)

    for _ in range(n_iter):
        b = rhs0 + rho * (u - w)
        s = (b - phi_h @ (small @ (phi @ b))) / rho
        u = torch.complex(shrink((s + w).real), shrink((s + w).imag))
        w = w + s - u
    return u


@pytest.mark.parametrize("maps", [False, True])
def test_converges_to_independent_admm_solution(maps):
    acq, grid, k = (8, 8), (16, 16), 8
    rng = np.random.default_rng(7)
    filters = random_dictionary(k, 5, seed=3).filters
    phi = torch.from_numpy(dense_system(filters, acq, grid))
    n = phi.shape[1]
    s_true = torch.from_numpy((rng.standard_normal(n) + 1j * rng.standard_normal(n)) * (rng.random(n) < 0.05))
    noise = torch.from_numpy(rng.standard_normal(phi.shape[0]) + 1j * rng.standard_normal(phi.shape[0]))
    y = phi @ s_true + 0.05 * noise
    lam = torch.from_numpy(0.05 * (0.5 + rng.random(n))) if maps else 0.05
    s_admm = admm(phi, y, lam, rho=0.3, n_iter=1000)
    f_admm = dense_objective(phi, y, s_admm, lam)

    op = make_op(filters, acq, grid, torch.complex64)
    y_t = y.reshape(1, *acq).to(torch.complex64)
    lam_t = lam.reshape((1, k) + grid).to(torch.float32) if maps else lam
    history = []
    checkpoints = {0, 9, 49, 199, 499}

    def record(i, s):
        if i in checkpoints:
            history.append(dense_objective(phi, y, s.reshape(-1).to(torch.complex128), lam))

    s = fista(op, y_t, lam_t, op.squared_norm(), n_iter=500, callback=record)
    f_fista = dense_objective(phi, y, s.reshape(-1).to(torch.complex128), lam)
    f_zero = dense_objective(phi, y, torch.zeros_like(s_admm), lam)
    # required: within 1 %; in practice 500 float32 iterations get within ~1e-4
    assert f_fista <= 1.001 * f_admm and f_admm <= (1 + 1e-6) * f_fista, (f_fista, f_admm)
    assert all(a > b for a, b in zip([f_zero] + history, history)), history
    # the solver's own objective agrees with the dense one
    assert abs(float(objective(op, y_t, s, lam_t)[0]) - f_fista) < 1e-4 * f_fista


def test_large_lambda_gives_zero_codes():
    gen = torch.Generator().manual_seed(2)
    op = make_op(random_dictionary(4, 5, seed=0).filters, (8, 8), (16, 16), torch.complex128)
    y = crandn(2, 8, 8, generator=gen)
    g = op.adjoint(y)
    lam_max = float(torch.maximum(g.real.abs(), g.imag.abs()).max())
    s = fista(op, y, lam_max * 1.0001, op.squared_norm(), 10)
    assert torch.count_nonzero(s) == 0
    s = fista(op, y, lam_max * 0.9, op.squared_norm(), 10)
    assert torch.count_nonzero(s) > 0


def test_filter_permutation_permutes_codes_and_keeps_the_image():
    gen = torch.Generator().manual_seed(3)
    k, acq, grid = 32, (16, 16), (32, 32)
    d = random_dictionary(k, 7, seed=4)
    perm = torch.randperm(k, generator=gen)
    y = crandn(2, *acq, dtype=torch.complex64, generator=gen)
    maps = torch.rand((2, k) + grid, generator=gen) * 0.2
    op = make_op(d.filters, acq, grid)
    op_p = make_op(d.filters[perm.numpy()], acq, grid)
    s = fista(op, y, maps, op.squared_norm(), 64)
    s_p = fista(op_p, y, maps[:, perm], op_p.squared_norm(), 64)
    x, x_p = op.synthesis(s), op_p.synthesis(s_p)
    assert (x - x_p).abs().max() <= 1e-5 * x.abs().max()
    assert (s[:, perm] - s_p).abs().max() <= 5e-5 * s.abs().max()


@pytest.mark.parametrize("k", [8, 32, 128])
@pytest.mark.parametrize("size", [7, 11])
def test_sizes_run_and_reduce_the_objective(k, size):
    gen = torch.Generator().manual_seed(k + size)
    acq, grid = (16, 16), (32, 32)
    op = make_op(random_dictionary(k, size, seed=k).filters, acq, grid)
    y = crandn(1, *acq, dtype=torch.complex64, generator=gen)
    lam = 0.02
    s = fista(op, y, lam, op.squared_norm(), 64)
    assert s.shape == (1, k) + grid and s.dtype == torch.complex64 and bool(torch.isfinite(s.real).all())
    f0 = objective(op, y, torch.zeros_like(s), lam)
    assert bool((objective(op, y, s, lam) < 0.5 * f0).all())


def test_autograd_reaches_lambda_maps():
    gen = torch.Generator().manual_seed(5)
    op = make_op(random_dictionary(2, 3, seed=1).filters, (4, 4), (8, 8), torch.complex128)
    y = crandn(1, 4, 4, generator=gen)
    lip = op.squared_norm()
    weights = crandn(1, 2, 8, 8, generator=gen)

    def loss(m):
        return (fista(op, y, m, lip, 4) * weights).real.sum()

    # exact gradient for per-filter levels (broadcast maps) ...
    levels = torch.tensor([[[[0.02]], [[0.04]]]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(loss, (levels,))
    # ... and a directional derivative for full maps
    maps = (0.01 + torch.rand(1, 2, 8, 8, generator=gen, dtype=torch.float64) * 0.05).requires_grad_()
    loss(maps).backward()
    direction = torch.randn(maps.shape, generator=gen, dtype=torch.float64)
    eps = 1e-6
    with torch.no_grad():
        numeric = (loss(maps + eps * direction) - loss(maps - eps * direction)) / (2 * eps)
    assert abs(float((maps.grad * direction).sum()) - float(numeric)) < 1e-6 * max(1.0, abs(float(numeric)))
    assert float(maps.grad.abs().sum()) > 0


def test_input_errors():
    op = make_op(random_dictionary(2, 3).filters, (4, 4), (8, 8))
    y = torch.zeros(1, 4, 4, dtype=torch.complex64)
    lip = op.squared_norm()
    with pytest.raises(ValueError, match="y must be complex"):
        fista(op, torch.zeros(1, 4, 5, dtype=torch.complex64), 0.1, lip)
    with pytest.raises(ValueError, match="lambda"):
        fista(op, y, -1.0, lip)
    with pytest.raises(ValueError, match="broadcast"):
        fista(op, y, torch.ones(1, 3, 8, 8), lip)
    with pytest.raises(ValueError, match=">= 0"):
        fista(op, y, -torch.ones(1, 2, 8, 8), lip)
    with pytest.raises(ValueError, match="does not match"):
        fista(op, y.to(torch.complex128), 0.1, lip)


def test_a_warm_start_continues_where_the_reference_does():
    gen = torch.Generator().manual_seed(3)
    op = make_op(random_dictionary(5, 5, seed=2).filters, (8, 10), (16, 20), torch.complex128)
    y = crandn(2, 8, 10, generator=gen)
    lip = op.squared_norm()
    start = fista(op, y, 0.05, lip, 7)
    out = fista(op, y, 0.05, lip, 9, chunk_size=2, s0=start)
    ref = reference_fista(op.fourier @ op.synthesis, y, 0.05, lip, 9, start)
    assert (out - ref).abs().max() < 1e-12 * ref.abs().max()
    assert fista(op, y, 0.05, lip, 0, s0=start).equal(start)
    with pytest.raises(ValueError, match="s0 must be"):
        fista(op, y, 0.05, lip, 2, s0=start[:, :3])
