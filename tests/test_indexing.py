"""`x[index]` and `for row in x` (the Slice op, beyond the contract's table) against PyTorch's
basic indexing, forward and backward, on the backend under test."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import topgrad
import torch
from helpers import Sizes, check_against_torch, layouts, positive_steps, rand, to_numpy, torch_attention
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from topgrad import Tensor

seeds = st.integers(0, 2**16)


@pytest.fixture(scope="module")
def sizes(interpreted: bool) -> Sizes:
    return Sizes.for_run(interpreted)


def check_index(shape: tuple[int, ...], index: Any, seed: int = 0, layout: Any = "contiguous") -> None:
    check_against_torch(lambda x: x[index], lambda t: t[index], [rand(shape, seed)], seed=seed, layout=layout)


@pytest.mark.parametrize(
    ("shape", "index"),
    [((5,), 2), ((5,), -1), ((4, 5), np.s_[1:3]), ((4, 5), np.s_[:, 1]), ((2, 3, 4), np.s_[1, :, ::2]),
     ((2, 3, 4), np.s_[..., 1:]), ((2, 3, 4), np.s_[None, 0, ..., None, -2]), ((2, 3), np.s_[1, 2]),
     ((6, 7), np.s_[1::3, -5:-1:2]), ((4, 5), np.s_[-10:10]), ((4, 5), np.s_[3:1]), ((0, 3), np.s_[:, 1]),
     ((3,), ()), ((), ()), ((), None), ((), ...), ((2, 3), np.int64(1)),
     # a strided 4-d pick, as a conv net's centre crop of NHWC images
     ((2, 8, 8, 3), np.s_[:, 2:6, 2:6, :])],
)
def test_slice_fixed(shape: tuple[int, ...], index: Any) -> None:
    check_index(shape, index)


@given(data=st.data(), seed=seeds)
def test_slice_drawn(data: st.DataObject, seed: int, sizes: Sizes) -> None:
    shape = data.draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=sizes.batch),
                      label="shape")
    index = data.draw(hnp.basic_indices(shape, min_dims=0, allow_newaxis=True, allow_ellipsis=True),
                      label="index")
    check_index(shape, positive_steps(index), seed, data.draw(layouts(1), label="layout"))


def test_slices_of_one_tensor_add_their_gradients() -> None:
    """Overlapping slices used twice: the gradients of shared elements add up, as in PyTorch."""
    check_against_torch(lambda x: x[1:] * x[:-1] + x[::2].sum(), lambda t: t[1:] * t[:-1] + t[::2].sum(),
                        [rand((7, 3), 4)])


def test_queries_keys_and_values_cut_from_one_projection_as_in_pytorch() -> None:
    """A transformer's fused projection: one Linear to 3D features, cut into q, k and v."""
    d = 4

    def top(x: Tensor, w: Tensor) -> Tensor:
        qkv = x @ w
        return topgrad.attention(qkv[..., :d], qkv[..., d:2 * d], qkv[..., 2 * d:], causal=True)

    def ref(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        qkv = x @ w
        return torch_attention(qkv[..., :d], qkv[..., d:2 * d], qkv[..., 2 * d:], causal=True)

    check_against_torch(top, ref, [rand((2, 5, 6), 1), rand((6, 3 * d), 2)])


def test_slice_saves_no_array_and_is_dense() -> None:
    x = Tensor(rand((4, 6), 3))
    y = x[:, ::2]
    assert y._op is not None and type(y._op).__name__ == "Slice"
    assert y._op.saved == ()
    data = y.data
    assert data.is_contiguous() if isinstance(data, torch.Tensor) else data.flags.c_contiguous


def test_iterating_gives_the_rows_with_their_gradients() -> None:
    a = rand((3, 4), 5)
    x = Tensor(a)
    rows = list(x)
    assert [r.shape for r in rows] == [(4,)] * 3
    for row, want in zip(rows, a):
        np.testing.assert_array_equal(row.numpy(), want)
    (rows[0] * 2.0 + rows[2]).sum().backward()
    np.testing.assert_array_equal(to_numpy(x.grad), [[2.0] * 4, [0.0] * 4, [1.0] * 4])


def test_iterating_a_0d_tensor_is_a_type_error_as_in_pytorch() -> None:
    with pytest.raises(TypeError, match="iteration over a 0-d Tensor"):
        list(Tensor(1.0))


def test_item_assignment_is_refused_with_the_way_that_works() -> None:
    """`w[0] = 0` (PyTorch's in-place write) is refused; the message's own recipe, a mask under
    no_grad, zeroes the element and keeps w the same trainable leaf."""
    w0 = rand((3,), 0)
    w = Tensor(w0)
    with pytest.raises(TypeError, match=r"does not support item assignment .*w \*= Tensor\(mask\)"):
        w[0] = 0
    with topgrad.no_grad():
        w *= Tensor(np.array([0, 1, 1], np.float32))
    (w * 2.0).sum().backward()
    np.testing.assert_array_equal(w.numpy(), np.concatenate([[0], w0[1:]]))
    np.testing.assert_array_equal(to_numpy(w.grad), np.full(3, 2, np.float32))


@pytest.mark.parametrize(
    ("index", "error", "match"),
    [(3, IndexError, r"index 3 is out of range for axis 0 of size 3"),
     (np.s_[:, -5], IndexError, r"index -5 is out of range for axis 1 of size 4"),
     (np.s_[0, 0, 0], IndexError, r"too many indices for a tensor of shape \(3, 4\): 3 given"),
     (np.s_[..., 0, ...], IndexError, "a single ellipsis"),
     (np.s_[::-1], ValueError, r"step of axis 0 must be positive, got -1; as in PyTorch"),
     (np.s_[:, ::0], ValueError, r"step of axis 1 must be positive, got 0$"),
     ([0, 2], TypeError, r"cannot index with list \[0, 2\]; Topgrad takes basic indexing only"),
     (np.array([0, 2]), TypeError, "cannot index with ndarray"),
     (True, TypeError, "cannot index with bool True"),
     (np.s_[0, 1.5], TypeError, "cannot index with float 1.5"),
     ("a", TypeError, "cannot index with str 'a'"),
     (np.s_[::2.0], TypeError, r"the step of axis 0's slice must be an int or None, got 2.0"),
     (np.s_[:, 1.0:], TypeError, r"the start of axis 1's slice must be an int or None, got 1.0"),
     (np.s_[:"2"], TypeError, r"the stop of axis 0's slice must be an int or None, got '2'")],
)
def test_what_basic_indexing_refuses(index: Any, error: type, match: str) -> None:
    with pytest.raises(error, match=f"Slice: .*{match}"):
        Tensor(rand((3, 4), 0))[index]


def test_indexing_with_a_tensor_is_refused_with_a_short_message() -> None:
    big = Tensor(rand((100,), 0))
    with pytest.raises(TypeError, match=r"cannot index with Tensor Tensor\(\[.{0,40}; Topgrad") as info:
        Tensor(rand((3, 4), 0))[big]
    assert len(str(info.value)) < 300


def test_graph_and_trace_show_the_index_as_python_writes_it() -> None:
    import io

    from topgrad.trace import tracing

    out = io.StringIO()
    x = Tensor(rand((4, 6), 0))
    with tracing(out):
        y = x[1:3, None, ::2]
    assert "index=[1:3, None, :6:2]" in out.getvalue(), out.getvalue()
    assert "[kept: index=[1:3, None, :6:2]" in str(y.graph())
    assert "[kept: index=[2, :6]" in str(x[2].graph())
