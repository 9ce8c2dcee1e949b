"""The test-only plan `topgrad_triton.runtime.many_blocks`: under it every launcher cuts a small
array into several blocks, and conftest runs the drawn tests of the interpreted backend under it.

The interpreter's own blocks (up to 65,536 elements) hold every drawn shape whole, so without
the plan a kernel whose tail mask, block loop, chunk partials or second pass were wrong would
pass every drawn test. The launchers are checked where they decide, as in `test_triton_review`:
on meta tensors, the kernels replaced by recorders.
"""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from test_triton_review import meta, record  # noqa: E402
from topgrad_triton import runtime  # noqa: E402
from topgrad_triton.kernels import (  # noqa: E402
    attention,
    conv,
    fill,
    matmul,
    norm,
    optim,
    pool,
    reduce,
    softmax,
)
from topgrad_triton.kernels import elementwise as ew  # noqa: E402

N = 13
"""A small extent, no power of two: several blocks with a ragged last one under the plan."""


def _launch_every_kernel(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Record the launches of every launcher on small (N x N) meta arrays."""
    recs = {
        **record(monkeypatch, matmul, "_matmul_kernel"),
        **record(monkeypatch, reduce, "_reduce_rows_kernel"),
        **record(monkeypatch, softmax, "_logsoftmax_fwd_kernel", "_logsoftmax_bwd_kernel"),
        **record(monkeypatch, conv, "_im2col_kernel", "_col2im_kernel"),
        **record(monkeypatch, pool, "_maxpool_kernel", "_maxpool_grad_kernel"),
        **record(monkeypatch, norm, "ln_fwd_kernel", "ln_bwd_kernel", "bn_partial_stats_kernel",
                 "bn_finalize_stats_kernel", "bn_apply_kernel", "bn_partial_grad_kernel", "bn_bwd_dx_kernel",
                 "sum_rows_kernel", "rstd_kernel"),
        **record(monkeypatch, attention, "attn_fwd_kernel", "attn_bwd_delta_kernel", "attn_bwd_dkdv_kernel",
                 "attn_bwd_dq_kernel"),
        **record(monkeypatch, ew, "_elementwise_kernel", "_store_strided_kernel"),
        **record(monkeypatch, fill, "_fill_kernel", "_randn_kernel"),
        **record(monkeypatch, optim, "_sgd_kernel"),
    }
    monkeypatch.setattr(fill.runtime, "device", lambda: "meta")
    x = meta(N, N)
    matmul.matmul(x, meta(N, N))
    reduce.reduce_rows(x, N, N, N, 1)
    softmax.logsoftmax_rows(x)
    softmax.logsoftmax_rows_backward(x, x)
    img = meta(1, N, N, 1)
    conv.col2im(conv.im2col(img, 3, 3, (1, 1), (1, 1)), (1, N, N, 1), 3, 3, (1, 1), (1, 1))
    out, tap = pool.maxpool(img, (1, 1), (1, 1), (0, 0), (N, N))
    pool.maxpool_grad(out, tap, (1, N, N, 1), (1, 1), (1, 1), (0, 0))
    mean, rstd = meta(N), meta(N)
    norm.layernorm_forward(x, None, None, 1e-5)
    norm.layernorm_backward(x, None, mean, rstd, x)
    norm.batchnorm_stats(x, 1e-5, 0.1)
    norm.rstd_from_var(mean, 1e-5)
    norm.batchnorm_apply(x, None, None, mean, rstd)
    norm.batchnorm_backward(x, None, mean, rstd, x, True)
    q = meta(1, N, N)
    o, stats = attention.attention_forward(q, q, q, False)
    attention.attention_backward(q, q, q, stats, o, False)
    ew.elementwise(ew.ADD, x, 1.0)
    ew.copy_into(x.t(), x)
    fill.full((N,), 0.0)
    fill.randn((N,), 1)
    p = meta(N)
    optim.sgd(p, p, None, lr=0.1, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False)
    return recs


def _programs(grid: tuple[int, ...]) -> int:
    """How many programs a grid launches."""
    count = 1
    for g in grid:
        count *= g
    return count


def test_quarter_cuts_an_extent_into_two_to_four_blocks() -> None:
    assert runtime.quarter(0) == runtime.quarter(1) == 1
    for extent in range(2, 3000):
        size = runtime.quarter(extent)
        assert size & (size - 1) == 0, extent  # a power of two: tl.arange takes no other
        assert 2 <= -(-extent // size) <= 4, extent


def test_under_many_blocks_every_launcher_cuts_a_small_array_into_several_blocks(monkeypatch) -> None:
    """Each kernel runs several programs on a 13 x 13 array, and the kernels that loop over blocks
    (a row's columns, the products' K, the keys, a chunk's rows) take more than one step."""
    with runtime.many_blocks():
        recs = _launch_every_kernel(monkeypatch)
    for name, rec in recs.items():
        assert rec.calls, f"{name} was not launched"
        for grid, _ in rec.calls:
            assert _programs(grid) >= 2, (name, grid)
    ((_, mm),) = recs["_matmul_kernel"].calls
    assert mm["BLOCK_K"] < N
    assert all(kw["BLOCK_N"] < N for _, kw in recs["_logsoftmax_fwd_kernel"].calls)
    first, *passes = recs["_reduce_rows_kernel"].calls  # column chunks, then passes over their partials
    assert first[0][1] >= 2 and first[1]["BLOCK_R"] < N and passes
    assert all(kw["BLOCK_N"] < N for _, kw in recs["attn_fwd_kernel"].calls)
    assert all(kw["BLOCK_M"] < N for _, kw in recs["attn_bwd_dkdv_kernel"].calls)
    assert all(kw["BLOCK_M"] < N for _, kw in recs["ln_bwd_kernel"].calls)


def test_without_many_blocks_the_same_arrays_take_one_block_each(monkeypatch) -> None:
    """The contrast that makes the plan needed: the real plans launch one program for the 13 x 13
    arrays (the 3x3 convolution's patch matrix aside on a GPU, whose blocks are smaller)."""
    assert not runtime.in_many_blocks()
    recs = _launch_every_kernel(monkeypatch)
    several = {name for name, rec in recs.items() for grid, _ in rec.calls if _programs(grid) > 1}
    assert several <= ({"_im2col_kernel"} if not runtime.interpreting() else set()), several


def test_many_blocks_ends_with_its_block_even_on_an_error() -> None:
    with pytest.raises(RuntimeError), runtime.many_blocks():
        with runtime.many_blocks():
            assert runtime.in_many_blocks()
        assert runtime.in_many_blocks()  # the inner block leaves the outer one on
        raise RuntimeError
    assert not runtime.in_many_blocks()


@given(draw=st.just(None))
def test_a_drawn_test_of_the_interpreted_backend_runs_on_many_blocks(interpreted: bool, draw: None) -> None:
    """conftest's switch: on for drawn tests where kernels are interpreted, off elsewhere."""
    assert runtime.in_many_blocks() is interpreted


def test_a_fixed_test_keeps_the_real_blocks() -> None:
    assert not runtime.in_many_blocks()
