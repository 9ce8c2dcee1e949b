"""The numpy LayerNorm's row blocks: forward and backward run block by block over rows (about
256 KiB each, `topgrad_numpy.ops.layernorm.rows_per_block`), and every block must give what the
whole array gives: PyTorch's output and gradients at 1e-4, across block edges and a ragged last
block, for C = 1, 64 and 1024, rows far from zero (the FAR correction) in some blocks only or
beside a NaN row, gamma and beta None, float64, and a backward called by hand (which must leave
the saved arrays).

Most tests shrink the blocks (`small_blocks`) so that small, quick inputs span several of them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import topgrad
import torch
import torch.nn.functional as F  # noqa: N812 - the usual PyTorch spelling
from helpers import check_against_torch, rand, to_numpy
from topgrad import Tensor

pytestmark = pytest.mark.skipif(
    "numpy" not in topgrad.available_backends(), reason="topgrad-numpy is not installed"
)

AFFINE = [(True, True), (True, False), (False, True), (False, False)]


@pytest.fixture
def layernorm_module(backend_name: str) -> Any:
    """topgrad_numpy's layernorm module (the tests check the numpy backend's blocks)."""
    if backend_name != "numpy":
        pytest.skip("row blocks are the numpy backend's")
    from topgrad_numpy.ops import layernorm

    return layernorm


@pytest.fixture(params=["gemm", "copy"])
def small_blocks(layernorm_module: Any, monkeypatch: pytest.MonkeyPatch,
                 request: pytest.FixtureRequest) -> Any:
    """Blocks of 8 KiB, whole-array handling only up to 8 KiB: a few hundred rows span several.
    Each test runs with either way of writing a per-row number across its row (`gemm.fill_rows`:
    the GEMM of SkylakeX-family BLAS kernels, numpy's broadcast copy elsewhere)."""
    monkeypatch.setattr(layernorm_module.gemm, "small_kernels", lambda: request.param == "gemm")
    monkeypatch.setattr(layernorm_module, "BLOCK_BYTES", 8 << 10)
    monkeypatch.setattr(layernorm_module, "SMALL_BYTES", 8 << 10)
    return layernorm_module


def _blocks(module: Any, shape: tuple[int, ...], dtype: Any = np.float32) -> int:
    """How many row blocks forward cuts an input of `shape` into."""
    x2 = np.empty((int(np.prod(shape[:-1])), shape[-1]), dtype)
    if x2.nbytes <= module.SMALL_BYTES:
        return 1
    return -(-x2.shape[0] // module.rows_per_block(x2, 1))


def _gamma_beta(affine: tuple[bool, bool], given: tuple[Any, ...]) -> tuple[Any, Any]:
    it = iter(given)
    return (next(it) if affine[0] else None), (next(it) if affine[1] else None)


def _check(shape: tuple[int, ...], affine: tuple[bool, bool] = (True, True), seed: int = 0,
           x: np.ndarray | None = None, float64: tuple[int, ...] = ()) -> None:
    """LayerNorm over the last axis of `shape` against PyTorch: output and every gradient."""
    d = shape[-1]
    params = [rand((d,), seed + k) for k, given in enumerate(affine, start=1) if given]
    check_against_torch(lambda x, *gb: x.layernorm(*_gamma_beta(affine, gb)),
                        lambda x, *gb: F.layer_norm(x, (d,), *_gamma_beta(affine, gb), 1e-5),
                        [rand(shape, seed, scale=2.0) if x is None else x, *params], seed=seed,
                        float64=float64)


@pytest.mark.parametrize(("shape", "blocks"), [((5, 70, 64), 3), ((20000, 1), 3), ((37, 1024), 5),
                                             ((7, 2048), 2)])
def test_several_blocks_with_a_ragged_last_one(small_blocks: Any, shape: tuple[int, ...],
                                               blocks: int) -> None:
    """C = 64 (wide views of 128 rows), 1, 1024 and 2048 (gamma's expansion a broadcast multiply
    past `gemm.RANK_ONE_GEMM_COLS`), each cut into blocks with a shorter last one."""
    assert _blocks(small_blocks, shape) == blocks
    _check(shape)


@pytest.mark.parametrize("affine", AFFINE)
def test_blocks_without_gamma_or_beta(small_blocks: Any, affine: tuple[bool, bool]) -> None:
    assert _blocks(small_blocks, (3, 100, 64)) > 1
    _check((3, 100, 64), affine, seed=3)


def test_rows_far_from_zero_in_some_blocks(small_blocks: Any) -> None:
    """Rows a thousand standard deviations from zero in the first and the last block only (the
    FAR correction runs there); the blocks between take the plain path."""
    x = rand((100, 256), 5)
    x[1] += 1000.0
    x[98] -= 3000.0
    assert _blocks(small_blocks, x.shape) == 4
    _check(x.shape, seed=5, x=x)


@pytest.mark.parametrize("nan_row", [None, 7])
def test_a_far_row_is_corrected_beside_a_nan_row(layernorm_module: Any, nan_row: int | None) -> None:
    """A row 1500 standard deviations from zero is normalized as float64 arithmetic does (2e-7;
    4e-5 without the FAR correction), also where another row of its block is NaN (the quick test
    that clears a block without looking at each row must not clear that one); the NaN row stays NaN."""
    x = rand((20, 256), 5, scale=2.0)
    x[3] += 3000.0
    if nan_row is not None:
        x[nan_row] = np.nan
    x64 = x.astype(np.float64)
    want = (x64 - x64.mean(axis=1, keepdims=True)) / np.sqrt(x64.var(axis=1, keepdims=True) + 1e-5)
    out = to_numpy(Tensor(x).layernorm(None, None))  # type: ignore[arg-type]
    np.testing.assert_allclose(out[3], want[3], rtol=0, atol=1e-6)
    if nan_row is not None:
        assert np.isnan(out[nan_row]).all()


def test_a_constant_row_far_from_zero_in_a_later_block(small_blocks: Any) -> None:
    """A constant row (its corrected variance rounds to about 0) in the second block normalizes
    to exactly 0, as in PyTorch; the gradients stay finite."""
    x = rand((60, 512), 6)
    x[20] = 116354.34375
    assert _blocks(small_blocks, x.shape) == 4
    t = Tensor(x)
    out = t.layernorm(None, None, eps=1e-12)  # type: ignore[arg-type]
    want = F.layer_norm(torch.from_numpy(x), (512,), eps=1e-12).numpy()
    np.testing.assert_array_equal(to_numpy(out)[20], want[20])
    np.testing.assert_allclose(to_numpy(out), want, rtol=0, atol=1e-4)
    out.backward(rand(x.shape, 7))
    assert np.isfinite(to_numpy(t.grad)).all()


def test_float64_blocks(small_blocks: Any) -> None:
    """Float64 inputs, block by block; the gradients keep the leaves' dtype."""
    assert _blocks(small_blocks, (300, 64), np.float64) > 2
    _check((300, 64), seed=8, float64=(0, 1, 2))


def test_full_size_blocks(layernorm_module: Any) -> None:
    """The blocks as shipped (256 KiB, from 1 MiB of input): 1.3 MB of C = 1024 rows."""
    assert _blocks(layernorm_module, (2, 160, 1024)) > 4
    _check((2, 160, 1024), seed=9)


def test_a_backward_by_hand_over_blocks_leaves_the_saved_arrays(small_blocks: Any) -> None:
    """Called by hand (not by the engine: `saved_are_scratch` is False) backward writes dL/dx
    into a new array, block by block, and leaves x - mean for the engine's backward after it."""
    x_np, up = rand((4, 90, 64), 10), rand((4, 90, 64), 11)
    assert _blocks(small_blocks, x_np.shape) > 2
    gamma, beta = Tensor(rand((64,), 12)), Tensor(rand((64,), 13))
    x = Tensor(x_np)
    y = x.layernorm(gamma, beta)
    op = y.op
    assert op is not None
    saved = [np.array(a, copy=True) for a in op._intermediate if a is not None]
    first, second = (op.backward(up) for _ in range(2))
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    for kept, now in zip(saved, (a for a in op._intermediate if a is not None)):
        np.testing.assert_array_equal(kept, now)
    y.backward(up)
    np.testing.assert_array_equal(to_numpy(x.grad), first[0])
    np.testing.assert_array_equal(to_numpy(gamma.grad), first[1])
    np.testing.assert_array_equal(to_numpy(beta.grad), first[2])
