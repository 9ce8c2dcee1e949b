"""The numpy backend's MaxPool2d a chunk at a time (`pool.CHUNK_BYTES`, set small here so that
small images split into several chunks of images or of output rows, the last one ragged) against
PyTorch's max_pool2d: forward and dL/dx, ties, NaN and -inf windows in different chunks, float64."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from helpers import check_against_torch, rand, to_numpy
from test_pooling import torch_maxpool
from topgrad import Tensor

Geometry = tuple[int, int, int]  # kernel, stride, padding

GEOMETRIES: list[Geometry] = [(2, 2, 0), (2, 1, 1), (3, 1, 1), (3, 2, 1), (3, 2, 0), (5, 2, 2), (5, 1, 2)]


@pytest.fixture
def chunk_bytes(backend_name: str, monkeypatch: pytest.MonkeyPatch) -> Callable[[int], Any]:
    """Sets the numpy pool's chunk size for the test; skips on other backends."""
    if backend_name != "numpy":
        pytest.skip("chunking is the numpy backend's")
    from topgrad_numpy.ops import pool

    def set_to(n: int) -> Any:
        monkeypatch.setattr(pool, "CHUNK_BYTES", n)
        return pool

    return set_to


def stack_bytes(shape: tuple[int, ...], geometry: Geometry, itemsize: int = 4) -> int:
    """Bytes of one output row's window stack, as forward's `_chunks` counts it."""
    k, s, p = geometry
    ow = (shape[2] + 2 * p - k) // s + 1
    return k * k * ow * shape[3] * itemsize


def test_chunks_cover_the_output_once(chunk_bytes: Callable[[int], Any]) -> None:
    """Whole images while one fits (the last chunk ragged), else rows of one image at a time."""
    pool = chunk_bytes(100)
    assert pool._chunks(5, 4, 10) == [(slice(b, min(5, b + 2)), slice(0, 4)) for b in (0, 2, 4)]
    assert pool._chunks(2, 7, 30) == [(slice(b, b + 1), slice(r, min(7, r + 3)))
                                      for b in (0, 1) for r in (0, 3, 6)]
    assert pool._chunks(1, 3, 1000) == [(slice(0, 1), slice(r, r + 1)) for r in range(3)]
    assert pool._chunks(0, 3, 10) == []


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("per_chunk", [2.0, 0.4])  # images per chunk: 2 (5 = 2 + 2 + 1), or rows of one
def test_chunked_matches_pytorch(
    chunk_bytes: Callable[[int], Any], geometry: Geometry, per_chunk: float
) -> None:
    shape = (5, 11, 10, 3)
    k, s, p = geometry
    oh = (shape[1] + 2 * p - k) // s + 1
    pool = chunk_bytes(int(per_chunk * oh * stack_bytes(shape, geometry)))
    assert len(pool._chunks(shape[0], oh, stack_bytes(shape, geometry))) > shape[0] // 2
    check_against_torch(lambda x: x.maxpool2d(k, s, p), lambda t: torch_maxpool(t, k, s, p),
                        [rand(shape, k + s)], seed=p)


@pytest.mark.parametrize("geometry", [(3, 2, 1), (5, 1, 2), (2, 2, 0)])
def test_chunked_float64(chunk_bytes: Callable[[int], Any], geometry: Geometry) -> None:
    """Float64 in, float64 out, in row chunks of a batch of one (the stack counts 8 bytes)."""
    shape = (1, 13, 9, 2)
    k, s, p = geometry
    chunk_bytes(2 * stack_bytes(shape, geometry, itemsize=8))
    xs, out = check_against_torch(lambda x: x.maxpool2d(k, s, p), lambda t: torch_maxpool(t, k, s, p),
                                  [rand(shape, 3)], float64=(0,))
    assert to_numpy(out).dtype == np.float64 and to_numpy(xs[0].grad).dtype == np.float64


def tricky(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Small integers (many ties), NaN and -inf scattered over every image and row, and a block
    of -inf at the image's edge (windows of -inf and padding)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 2, shape).astype(np.float32)
    draw = rng.random(shape)
    x[draw < 0.04] = np.nan
    x[(draw >= 0.04) & (draw < 0.15)] = -np.inf
    x[1::2, :3, :3] = -np.inf
    return x


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize(("shape", "images"), [((5, 9, 8, 2), 2.0), ((1, 17, 9, 1), 0.3)])
def test_ties_nan_and_minus_inf_bit_for_bit(
    chunk_bytes: Callable[[int], Any], geometry: Geometry, shape: tuple[int, ...], images: float
) -> None:
    """As test_pooling's single-chunk case: ties to the first maximum, a NaN wins (its window's
    last), a window of -inf gives its gradient to its first tap inside the image; every chunk."""
    k, s, p = geometry
    oh = (shape[1] + 2 * p - k) // s + 1
    chunk_bytes(max(1, int(images * oh * stack_bytes(shape, geometry))))
    x = tricky(shape, k * 10 + s + p)
    top, want = Tensor(x), torch.tensor(x, dtype=torch.float64, requires_grad=True)
    out, ref = top.maxpool2d(k, s, p), torch_maxpool(want, k, s, p)
    g = np.arange(1, ref.numel() + 1, dtype=np.float32).reshape(tuple(ref.shape))
    g.flat[0], g.flat[-1] = np.nan, np.inf
    out.backward(g)
    ref.backward(torch.tensor(g, dtype=torch.float64))
    np.testing.assert_array_equal(to_numpy(out), ref.detach().numpy())
    np.testing.assert_array_equal(to_numpy(top.grad), to_numpy(want.grad))


def test_one_large_image_at_the_default_chunk_size(backend_name: str) -> None:
    """A batch of one image whose window stack is ~10 MiB: rows of it per chunk."""
    if backend_name != "numpy":
        pytest.skip("chunking is the numpy backend's")
    from topgrad_numpy.ops import pool

    shape = (1, 240, 200, 6)
    assert len(pool._chunks(1, 240, stack_bytes(shape, (3, 1, 1)))) > 4
    check_against_torch(lambda x: x.maxpool2d(3, 1, 1), lambda t: torch_maxpool(t, 3, 1, 1), [rand(shape, 5)])


def test_windows_of_more_than_127_taps(chunk_bytes: Callable[[int], Any]) -> None:
    """A 12x12 window (144 taps: int32 taps, not bytes) in row chunks: ties, NaN and -inf."""
    chunk_bytes(3 * 144 * 4)
    x = tricky((2, 26, 13, 1), 12)
    top, want = Tensor(x), torch.tensor(x, dtype=torch.float64, requires_grad=True)
    out, ref = top.maxpool2d(12, (3, 1), 6), torch_maxpool(want, 12, (3, 1), 6)
    g = np.arange(1, ref.numel() + 1, dtype=np.float32).reshape(tuple(ref.shape))
    out.backward(g)
    ref.backward(torch.tensor(g, dtype=torch.float64))
    np.testing.assert_array_equal(to_numpy(out), ref.detach().numpy())
    np.testing.assert_array_equal(to_numpy(top.grad), to_numpy(want.grad))
