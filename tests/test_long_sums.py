"""Long float32 sums stay as accurate as PyTorch's: a sum that adds its values one after another
(a BLAS product with a ones vector, numpy over an outer axis) drifts by 1e-3 to 1e-2 over 2**20
equal values, past the 1e-4 every op is held to; PyTorch's cascade stays near 1e-7."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from topgrad import Tensor

N = 2**20  # equal values: the worst case for a running sum's error
EXACT = float(np.float32(0.1)) * N


def _relative(got: np.ndarray, want: float) -> float:
    return float(np.max(np.abs(np.asarray(got, np.float64) - want)) / abs(want))


@pytest.mark.parametrize("shape, axis", [
    ((N,), None),             # one flat run
    ((N // 4, 4), 0),         # down the columns (a bias gradient's sum)
    ((4, N // 4), 1),         # along the rows
    ((16, N // 64, 4), (0, 1)),  # a run of leading axes
    ((16, N // 64, 4), (0, 2)),  # axes that are not one run
])
def test_a_long_float32_sum_is_within_1e_5(shape, axis) -> None:
    x = np.full(shape, 0.1, np.float32)
    count = x.size // np.sum(x, axis=axis).size  # values in each sum
    want = EXACT * count / N
    error = _relative(Tensor(x).sum(axis=axis).numpy(), want)
    dims = axis if axis is not None else tuple(range(x.ndim))
    assert error < 1e-5, (error, "PyTorch's:", _relative(torch.tensor(x).sum(dim=dims).numpy(), want))
    assert _relative(Tensor(x).mean(axis=axis).numpy(), EXACT / N) < 1e-5


def test_a_long_softmax_column_and_the_gradients_of_broadcast_operands() -> None:
    rows = N // 4
    col = np.full((rows, 1), np.log(np.float32(0.1)), np.float32)  # exp: 0.1 each but the max's 1
    col[0] = 0.0
    e = np.exp(col.astype(np.float64))
    got = Tensor(col).softmax(axis=0).numpy().astype(np.float64)
    assert np.max(np.abs(got - e / e.sum()) / (e / e.sum())) < 1e-5
    x = np.ones((rows, 4), np.float32)
    want = EXACT / 4  # each gradient below sums 0.1 over the rows
    bias = Tensor.zeros(4)  # a broadcast operand's gradient sums the upstream one over the rows
    ((Tensor(x, requires_grad=False) + bias) * 0.1).sum().backward()
    assert _relative(bias.grad, want) < 1e-5
    w, b = Tensor(np.eye(4, dtype=np.float32)), Tensor.zeros(4)  # Linear's bias gradient likewise
    (Tensor(x, requires_grad=False).linear(w, b) * 0.1).sum().backward()
    assert _relative(b.grad, want) < 1e-5


def test_layernorm_parameter_gradients_over_many_rows(backend_name) -> None:
    rows, C = (N if backend_name == "numpy" else N // 32), 8  # the interpreter is slow
    # a narrow LayerNorm: its dL/dgamma and dL/dbeta sum over every row
    x = np.random.default_rng(0).standard_normal((rows, C)).astype(np.float32)
    gamma, beta = Tensor.ones(C), Tensor.zeros(C)
    (Tensor(x, requires_grad=False).layernorm(gamma, beta) * 0.1).sum().backward()
    assert _relative(beta.grad, EXACT * rows / N) < 1e-5
    tx = torch.tensor(x, dtype=torch.float64)
    tgamma = torch.ones(C, dtype=torch.float64, requires_grad=True)
    (torch.nn.functional.layer_norm(tx, (C,), tgamma) * float(np.float32(0.1))).sum().backward()
    want = tgamma.grad.numpy()
    assert np.max(np.abs(np.asarray(gamma.grad) - want)) < 1e-5 * np.max(np.abs(want))
