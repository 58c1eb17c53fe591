"""Linear operators: FFT convention, adjointness, convolution semantics, low-pass, norms (the step size)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adacsc.core.convolution import Synthesis, filter_spectra
from adacsc.core.dictionary import random_dictionary
from adacsc.core.filter_bank import FilterBank
from adacsc.core.fourier import SampledFourier, fft2c, ifft2c
from adacsc.core.linop import LinearOperator, power_iteration
from adacsc.core.lowpass import forward_differences, forward_differences_adjoint, lowpass
from adacsc.core.spectral import SpectralCodeOperator
from adacsc.mr.fft import fftc, ifftc
from support import operators
from support.operators import assert_adjoint

GEN = torch.Generator().manual_seed(1234)


def crandn(*shape: int, dtype: torch.dtype = torch.complex128) -> torch.Tensor:
    return operators.crandn(*shape, dtype=dtype, generator=GEN)


def filters64(k=4, size=5, seed=0) -> FilterBank:
    return FilterBank(torch.tensor(random_dictionary(k, size, seed=seed).filters, dtype=torch.float64))


@pytest.mark.parametrize("shape", [(16, 20), (15, 9)])
def test_fft2c_matches_numpy_convention(shape):
    x = crandn(2, *shape)
    np.testing.assert_allclose(fft2c(x).numpy(), fftc(x.numpy()), atol=1e-12)
    np.testing.assert_allclose(ifft2c(x).numpy(), ifftc(x.numpy()), atol=1e-12)


@pytest.mark.parametrize("acq, grid", [((8, 10), (16, 20)), ((7, 9), (14, 17)), ((12, 12), (12, 12))])
def test_sampled_fourier_block_and_adjoint(acq, grid):
    A = SampledFourier(acq, grid)
    x = crandn(3, *grid)
    k = fftc(x.numpy())
    r0, c0 = grid[0] // 2 - acq[0] // 2, grid[1] // 2 - acq[1] // 2
    np.testing.assert_allclose(A(x).numpy(), k[:, r0:r0 + acq[0], c0:c0 + acq[1]], atol=1e-12)
    assert_adjoint(A, A.adjoint, x, crandn(3, *acq), 1e-12)
    single = SampledFourier(acq, grid)
    assert_adjoint(single, single.adjoint, crandn(3, *grid, dtype=torch.complex64),
                   crandn(3, *acq, dtype=torch.complex64), 1e-5)


def test_sampled_fourier_mask():
    mask = (torch.rand(8, 1, generator=GEN) > 0.5).float()
    A = SampledFourier((8, 10), (16, 20), mask)
    x = crandn(2, 16, 20)
    assert torch.all(A(x)[:, mask[:, 0] == 0] == 0)
    assert_adjoint(A, A.adjoint, x, crandn(2, 8, 10), 1e-12)
    with pytest.raises(ValueError, match="binary"):
        SampledFourier((8, 10), (16, 20), torch.full((8, 10), 0.5))
    with pytest.raises(ValueError, match="broadcast"):
        SampledFourier((8, 10), (16, 20), torch.ones(7, 10))


@pytest.mark.parametrize("acq, grid, what", [((8, 10), (6, 20), "exceeds"), ((8,), (16, 20), "pair"),
                                             ((8, 10.5), (16, 20), "pair")])
def test_sampled_fourier_shape_errors(acq, grid, what):
    with pytest.raises(ValueError, match=what):
        SampledFourier(acq, grid)


def test_synthesis_is_centred_circular_convolution():
    f = filters64(3, 5)
    D = Synthesis(f)
    s = crandn(2, 3, 11, 13)
    expected = torch.zeros(2, 11, 13, dtype=s.dtype)
    for k in range(3):
        for a in range(5):
            for b in range(5):
                expected += f.tensor[k, a, b] * torch.roll(s[:, k], shifts=(a - 2, b - 2), dims=(-2, -1))
    torch.testing.assert_close(D(s), expected, atol=1e-12, rtol=0)


def test_identity_filter_does_not_shift():
    delta = torch.zeros(1, 7, 7, dtype=torch.float64)
    delta[0, 3, 3] = 1.0
    s = crandn(2, 1, 12, 10)
    torch.testing.assert_close(Synthesis(FilterBank(delta))(s), s[:, 0], atol=1e-12, rtol=0)
    torch.testing.assert_close(filter_spectra(delta, (12, 10), torch.complex128),
                               torch.ones(1, 12, 10, dtype=torch.complex128), atol=1e-12, rtol=0)


@pytest.mark.parametrize("dtype, rtol", [(torch.complex128, 1e-12), (torch.complex64, 1e-5)])
def test_synthesis_and_composition_adjoint(dtype, rtol):
    f = filters64(6, 7)
    D = Synthesis(f)
    s, x = crandn(2, 6, 16, 18, dtype=dtype), crandn(2, 16, 18, dtype=dtype)
    assert_adjoint(D, D.adjoint, s, x, rtol)
    AD = SampledFourier((8, 9), (16, 18)) @ D
    assert_adjoint(AD, AD.adjoint, s, crandn(2, 8, 9, dtype=dtype), rtol)
    assert_adjoint(AD.H, AD.H.adjoint, crandn(2, 8, 9, dtype=dtype), s, rtol)


@pytest.mark.parametrize("acq, grid, mask", [
    ((8, 10), (16, 20), None),
    ((7, 9), (14, 17), None),
    ((12, 12), (12, 12), None),
    ((12, 12), (12, 12), "lines"),
    ((8, 10), (16, 20), "batched"),
])
def test_spectral_operator_equals_composition(acq, grid, mask):
    if mask == "lines":
        mask = (torch.rand(acq[0], 1, generator=GEN) > 0.4).float()
    elif mask == "batched":
        mask = (torch.rand(2, *acq, generator=GEN) > 0.3).float()
    F, D = SampledFourier(acq, grid, mask), Synthesis(filters64(5, 5))
    op = SpectralCodeOperator(D, F, "cpu", torch.complex128)
    s, r = crandn(2, 5, *grid), crandn(2, *acq)
    torch.testing.assert_close(op(s), F(D(s)), atol=1e-12, rtol=0)
    torch.testing.assert_close(op.adjoint(r), D.adjoint(F.adjoint(r)), atol=1e-12, rtol=0)
    assert_adjoint(op, op.adjoint, s, r, 1e-12)


def test_lowpass_solves_the_normal_equation():
    x0 = crandn(2, 12, 15)
    for beta in (0.3, torch.tensor([0.5, 4.0], dtype=torch.float64)):
        x = lowpass(x0, beta)
        b = beta.reshape(-1, 1, 1) if isinstance(beta, torch.Tensor) else beta
        residual = x + b * forward_differences_adjoint(forward_differences(x)) - x0
        assert residual.abs().max() < 1e-12
    g = crandn(2, 3, 12, 15)
    x = crandn(3, 12, 15)
    assert_adjoint(forward_differences, forward_differences_adjoint, x, g, 1e-12)
    with pytest.raises(ValueError, match="beta"):
        lowpass(x0, 0.0)


def test_lowpass_is_differentiable_in_beta():
    beta = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    x0 = crandn(1, 8, 8)
    assert torch.autograd.gradcheck(lambda b: torch.view_as_real(lowpass(x0, b)), (beta,))


def test_closed_form_norm_agrees_with_power_iteration_on_the_composition():
    F, D = SampledFourier((10, 10), (20, 20)), Synthesis(filters64(8, 7))
    op = SpectralCodeOperator(D, F, "cpu", torch.complex128)
    exact = op.squared_norm()
    assert exact.shape == (1,)
    # the composition F @ D has no closed form: LinearOperator's power iteration, from below
    composed = F @ D
    with pytest.raises(ValueError, match="start vector"):
        composed.squared_norm()
    start = crandn(1, 8, 20, 20)
    power = composed.squared_norm(start, n_iter=500, rtol=1e-10)
    assert float(power_iteration(composed.normal, start, n_iter=30)) <= float(exact) * (1 + 1e-9)
    assert float(exact) * (1 - 1e-3) <= float(power) <= float(exact) * (1 + 1e-9)
    torch.testing.assert_close(op.operator_norm(), torch.sqrt(exact))
    torch.testing.assert_close(composed.operator_norm(start, n_iter=500, rtol=1e-10), torch.sqrt(power))
    # a different dictionary gives a different value
    op2 = SpectralCodeOperator(Synthesis(filters64(8, 7, seed=5)), F, "cpu", torch.complex128)
    assert float(op2.squared_norm()) != float(exact)


def test_sampled_fourier_norm_is_one_per_slice_with_any_sample_kept():
    mask = torch.ones(3, 8, 10)
    mask[1, ::2] = 0
    mask[2] = 0
    A = SampledFourier((8, 10), (16, 20), mask)
    torch.testing.assert_close(A.squared_norm(), torch.tensor([1.0, 1.0, 0.0]))
    start = crandn(3, 16, 20)
    power = LinearOperator.squared_norm(A, start, n_iter=50)  # the generic power iteration
    torch.testing.assert_close(power.float(), A.squared_norm(), atol=1e-6, rtol=0)
    assert float(SampledFourier((8, 10), (16, 20)).operator_norm()) == 1.0


def test_squared_norm_per_batch_mask():
    mask = torch.ones(2, 8, 8)
    mask[1, :, 3:] = 0
    op = SpectralCodeOperator(Synthesis(filters64(4, 5)), SampledFourier((8, 8), (16, 16), mask),
                              "cpu", torch.complex128)
    lip = op.squared_norm()
    assert lip.shape == (2,) and float(lip[1]) <= float(lip[0])


def test_the_synthesis_takes_a_filter_bank_validated_once():
    with pytest.raises(TypeError, match="takes a FilterBank"):
        Synthesis(torch.ones(2, 3, 3))
    with pytest.raises(ValueError, match=r"\[K, h, w\]"):
        FilterBank(torch.ones(3, 3))
    with pytest.raises(ValueError, match="real floating-point"):
        FilterBank(torch.ones(2, 3, 3, dtype=torch.complex64))
    bank = FilterBank(torch.ones(2, 3, 3, dtype=torch.float64))
    moved = bank.to(dtype=torch.float32)
    assert moved.tensor.dtype == torch.float32 and moved.num_filters == 2 and moved.filter_shape == (3, 3)
