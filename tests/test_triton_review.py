"""Kernel review of the Triton backend: offsets past int32 and CUDA's grid limits.

Arrays of 8 GiB do not fit a test, so the launchers are checked where they decide (on meta
tensors, the kernels replaced by a recorder), the int64 path is run on small arrays against
PyTorch, and one strided read past 2**31 elements runs for real on a 2 GiB uint8 buffer.
"""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

import torch.nn.functional as F  # noqa: E402, N812
from topgrad_triton import runtime  # noqa: E402
from topgrad_triton.kernels import (  # noqa: E402
    attention,
    conv,
    fill,
    indexing,
    matmul,
    norm,
    optim,
    pool,
    reduce,
    softmax,
)
from topgrad_triton.kernels import elementwise as ew  # noqa: E402

torch.set_num_threads(1)
DEV = runtime.device()
BIG = 2**16  # a (BIG, BIG) array has 2**32 elements: offsets past int32


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


class Recorder:
    """Stands in for a kernel: `kernel[grid](*args, **kwargs)` records (grid, kwargs), runs nothing."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[int, ...], dict[str, Any]]] = []

    def __getitem__(self, grid: tuple[int, ...]) -> Any:
        return lambda *args, **kwargs: self.calls.append((tuple(grid), kwargs))


def record(monkeypatch: pytest.MonkeyPatch, module: Any, *names: str) -> dict[str, Recorder]:
    """A recorder in place of each kernel `names` of `module`, by name."""
    recs = {name: Recorder() for name in names}
    for name, rec in recs.items():
        monkeypatch.setattr(module, name, rec)
    return recs


def meta(*shape: int) -> torch.Tensor:
    return torch.empty(shape, device="meta")


# ---- a strided read past 2**31 elements, for real ---------------------------------------------------
def test_a_strided_read_past_int32_offsets_reads_the_right_elements() -> None:
    """A uint8 view with stride 2**30 (a 2 GiB buffer, cast by the copy kernel, as `asarray` does):
    its third element sits at offset 2**31, which int32 offsets wrapped to -2**31 (a read outside
    the buffer: the interpreter's bounds check, an illegal address or garbage on a GPU)."""
    base = torch.zeros(2**31 + 1, dtype=torch.uint8, device=DEV)
    base[0], base[2**30], base[2**31] = 1, 2, 3
    got = ew.elementwise(ew.COPY, base[:: 2**30])
    del base
    assert got.tolist() == [1.0, 2.0, 3.0]


# ---- the launchers widen their offsets where an array spans 2**31 elements --------------------------
PARTIAL_SUMS = ("sum_rows_kernel", "bn_finalize_stats_kernel")  # (parts, C) partials: small arrays


@pytest.mark.parametrize("big", [False, True])
def test_launchers_index_in_int64_exactly_where_offsets_pass_int32(monkeypatch, big: bool) -> None:
    """Every launcher passes WIDE=True for an operand of 2**32 elements (int32 offsets wrap there:
    an 8 GiB array, which an H200 holds many of) and WIDE=False for a small one (int32 is faster)."""
    n = BIG if big else 64
    recs = {
        **record(monkeypatch, matmul, "_matmul_kernel"),
        **record(monkeypatch, reduce, "_reduce_rows_kernel"),
        **record(monkeypatch, softmax, "_logsoftmax_fwd_kernel", "_logsoftmax_bwd_kernel"),
        **record(monkeypatch, conv, "_im2col_kernel", "_col2im_kernel"),
        **record(monkeypatch, pool, "_maxpool_kernel", "_maxpool_grad_kernel"),
        **record(monkeypatch, norm, "ln_fwd_kernel", "ln_bwd_kernel", "bn_partial_stats_kernel",
                 "bn_apply_kernel", "bn_partial_grad_kernel", "bn_bwd_dx_kernel", *PARTIAL_SUMS),
        **record(monkeypatch, attention, "attn_fwd_kernel", "attn_bwd_delta_kernel", "attn_bwd_dkdv_kernel",
                 "attn_bwd_dq_kernel"),
        **record(monkeypatch, ew, "_elementwise_kernel", "_store_strided_kernel"),
    }
    x = meta(n, n)
    matmul.matmul(x, meta(n, 16))
    reduce.reduce_rows(x, n, n, n, 1)
    softmax.logsoftmax_rows(x)
    softmax.logsoftmax_rows_backward(x, x)
    softmax.logsoftmax_rows(x, log=False)
    softmax.logsoftmax_rows_backward(x, x, log=False)
    img = meta(1, n, n // 4, 4)
    conv.col2im(conv.im2col(img, 1, 1, (1, 1), (0, 0)), (1, n, n // 4, 4), 1, 1, (1, 1), (0, 0))
    out, tap = pool.maxpool(img, (1, 1), (1, 1), (0, 0), (n, n // 4))
    pool.maxpool_grad(out, tap, (1, n, n // 4, 4), (1, 1), (1, 1), (0, 0))
    mean, rstd = meta(n), meta(n)
    norm.layernorm_forward(x, None, None, 1e-5)
    norm.layernorm_backward(x, None, mean, rstd, x)
    norm.batchnorm_stats(x, 1e-5, 0.1)
    norm.batchnorm_apply(x, None, None, mean, rstd)
    norm.batchnorm_backward(x, None, mean, rstd, x, True)
    q = meta(1, n * n // 64, 64)  # as many elements as x in rows the kernels take (at most 512 wide)
    o, stats = attention.attention_forward(q, q, q, False)
    attention.attention_backward(q, q, q, stats, o, False)
    ew.elementwise(ew.ADD, x, 1.0)
    ew.copy_into(x.t(), x)
    for name, rec in recs.items():
        assert rec.calls, f"{name} was not launched"
        if name not in PARTIAL_SUMS:
            assert [kw.get("WIDE") for _, kw in rec.calls] == [big] * len(rec.calls), name


def test_flat_launchers_widen_from_2_31_elements_on(monkeypatch) -> None:
    """The flat kernels (fill, normal samples, SGD and Adam steps) widen from 2**31 elements on."""
    recs = {**record(monkeypatch, fill, "_fill_kernel", "_randn_kernel"),
            **record(monkeypatch, optim, "_sgd_kernel", "_adam_kernel")}
    monkeypatch.setattr(fill.runtime, "device", lambda: "meta")
    for n, wide in ((2**31 - 1, False), (2**31, True)):
        fill.full((n,), 0.0)
        fill.randn((n,), 1)
        p = meta(n)
        optim.sgd(p, p, None, lr=0.1, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False)
        optim.adam(p, p, p, p, step=1, lr=0.1, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.0,
                   decoupled=False)
        for name, rec in recs.items():
            assert rec.calls[-1][1].get("WIDE") is wide, (name, n)


def test_needs_int64_measures_what_offsets_reach() -> None:
    """A view's reach is its last element's offset + 1 (a transposed or strided view reaches as far
    as its base); numbers count as they are; a broadcast dim (stride 0) reaches nothing."""
    assert not indexing.needs_int64(2**31 - 1, None, 1.5, meta(2**15, 2**16 - 1))
    assert indexing.needs_int64(2**31)
    assert indexing.needs_int64(meta(2**15, 2**16).t())
    assert indexing.needs_int64(torch.empty(2**31 + 1, device="meta")[::2**30])
    assert not indexing.needs_int64(meta(1, 8).expand(2**40, 8))


# ---- the int64 path computes what the int32 one does ------------------------------------------------
def force_int64(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every launcher takes the int64 path, whatever the sizes."""
    for module in (attention, conv, ew, fill, matmul, norm, optim, pool, reduce, softmax):
        monkeypatch.setattr(module, "needs_int64", lambda *_: True)


@pytest.fixture
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """The int64 path for the whole test (`force_int64`)."""
    force_int64(monkeypatch)


def test_the_int64_path_matches_pytorch(wide) -> None:
    """Matmul, sums, log-softmax, im2col and col2im, pooling, LayerNorm, BatchNorm, attention and the
    strided copy, run with int64 offsets on small arrays, against PyTorch."""
    tol = {"rtol": 1e-4, "atol": 1e-4}
    a, b = torch.randn(37, 19, device=DEV), torch.randn(19, 23, device=DEV)
    torch.testing.assert_close(matmul.matmul(a, b.t().contiguous().t()), a @ b, **tol)
    torch.testing.assert_close(reduce.reduce_axes(a.t(), (1,)), a.sum(0), **tol)
    torch.testing.assert_close(reduce.reduce_axes(a, (0,), maximum=True), a.amax(0), **tol)
    torch.testing.assert_close(softmax.logsoftmax_rows(a), torch.log_softmax(a, 1), **tol)
    img = torch.randn(2, 5, 6, 3, device=DEV)
    cols = conv.im2col(img, 3, 2, (2, 1), (1, 1))  # (B*L, (i, j, c)); unfold's is (B, (c, i, j), L)
    want = F.unfold(img.permute(0, 3, 1, 2), (3, 2), padding=1, stride=(2, 1))
    as_cols = want.view(2, 3, 3, 2, -1).permute(0, 4, 2, 3, 1).reshape(cols.shape)
    torch.testing.assert_close(cols, as_cols)
    dx = conv.col2im(as_cols, tuple(img.shape), 3, 2, (2, 1), (1, 1))  # the adjoint: fold
    want_dx = F.fold(want, (5, 6), (3, 2), padding=1, stride=(2, 1)).permute(0, 2, 3, 1)
    torch.testing.assert_close(dx, want_dx, **tol)
    pooled, _ = pool.maxpool(img, (2, 2), (2, 2), (0, 0), (2, 3))
    want_pool = F.max_pool2d(img.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
    torch.testing.assert_close(pooled, want_pool)
    y, _, _ = norm.layernorm_forward(a, None, None, 1e-5)
    torch.testing.assert_close(y, F.layer_norm(a, (19,)), **tol)
    mean, rstd = norm.batchnorm_stats(a, 1e-5, 0.1)
    torch.testing.assert_close(norm.batchnorm_apply(a, None, None, mean, rstd),
                               F.batch_norm(a, None, None, training=True), **tol)
    q, k, v = (torch.randn(3, 7, 5, device=DEV) for _ in range(3))
    o, _ = attention.attention_forward(q, k.transpose(1, 2).contiguous().transpose(1, 2), v, True)
    want_o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(o, want_o, **tol)
    torch.testing.assert_close(ew.elementwise(ew.MUL, a, a[:1]), a * a[:1])


def _training_step_through_every_kernel(seed: int) -> list[Any]:
    """Forward, backward and an Adam step through conv, ReLU, max-pooling, BatchNorm, LayerNorm,
    attention, log-softmax, sums and maxima; every output, gradient and updated parameter."""
    import topgrad
    from helpers import rand, to_numpy
    from topgrad.optim import Adam

    x = topgrad.Tensor(rand((2, 6, 5, 3), seed), requires_grad=False)
    shapes = [(3, 3, 3, 4), (4,), (4,), (4,), (4,)]
    w, g1, b1, g2, b2 = (topgrad.Tensor(rand(shape, seed + i)) for i, shape in enumerate(shapes, 1))
    y = x.conv2d(w, padding=1).relu().maxpool2d(2).batchnorm(g1, b1)  # (2, 3, 2, 4)
    z = y.reshape(2, 6, 4).layernorm(g2, b2)
    a = topgrad.attention(z, z * 0.5, z, causal=True)
    loss = a.logsoftmax().sum() + a.max(axis=1).sum() + a.exp().mean()
    loss.backward()
    params = [w, g1, b1, g2, b2]
    grads = [to_numpy(p.grad) for p in params]
    Adam(params, lr=0.01).step()
    return [to_numpy(t) for t in (y, z, a, loss)] + grads + [to_numpy(p) for p in params]


def test_the_int64_path_trains_as_the_int32_one(backend_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Backward kernels and the optimizers too: a training step with every launcher forced onto the
    int64 path gives the same bits as with int32 offsets (only the index width differs)."""
    if backend_name != "triton":
        pytest.skip("runs the triton backend's ops")
    narrow = _training_step_through_every_kernel(3)
    force_int64(monkeypatch)
    for i, (a, b) in enumerate(zip(narrow, _training_step_through_every_kernel(3), strict=True)):
        assert a.shape == b.shape and a.tobytes() == b.tobytes(), f"result {i} differs on the int64 path"


# ---- grids within CUDA's limits -----------------------------------------------------------------------
def test_attention_grids_fit_cuda_for_a_batch_of_more_than_65535(monkeypatch) -> None:
    """A batch of 70,000 short sequences: the batch on the grid's y axis (at most 65535 programs on a
    GPU) failed to launch; every attention kernel's grid is within CUDA's limits and covers every
    (block, batch entry)."""
    recs = record(monkeypatch, attention, "attn_fwd_kernel", "attn_bwd_delta_kernel", "attn_bwd_dkdv_kernel",
                  "attn_bwd_dq_kernel")
    B, T, S = 70_000, 100, 130
    q, k = meta(B, T, 8), meta(B, S, 8)
    o, stats = attention.attention_forward(q, k, k, True)
    attention.attention_backward(q, k, k, stats, o, True)
    bm, _, _ = attention._blocks(8, 8, backward=False)
    bm_b, bn_b, _ = attention._blocks(8, 8, backward=True)
    programs = {"attn_fwd_kernel": -(-T // bm) * B, "attn_bwd_delta_kernel": -(-T // bm_b) * B,
                "attn_bwd_dkdv_kernel": -(-S // bn_b) * B, "attn_bwd_dq_kernel": -(-T // bm_b) * B}
    for name, rec in recs.items():
        ((grid, _),) = rec.calls
        assert grid[0] < 2**31 and all(g <= indexing.GRID_YZ_LIMIT for g in grid[1:]), (name, grid)
        assert grid[0] * (grid[1] if len(grid) > 1 else 1) == programs[name], (name, grid)

