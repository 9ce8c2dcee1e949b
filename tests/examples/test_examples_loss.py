"""The examples' cross-entropy against PyTorch's where a one-hot product would go wrong: -inf
logits (a mask), log-probabilities that underflow to -inf; and an empty batch for the loss, the
accuracy and every model."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import topgrad
from helpers import to_numpy
from small_models import SMALL
from topgrad_examples.loss import accuracy, cross_entropy

torch = pytest.importorskip("torch")
nnf = pytest.importorskip("torch.nn.functional")

INF = np.inf
CASES = {
    "a masked logit": ([[1.0, -INF, 2.0]], [0]),
    "masked logits in some rows": ([[1.0, -INF, 2.0], [0.5, 0.25, -1.0], [-INF, 3.0, -INF]], [2, 0, 1]),
    "a log-probability that underflows": ([[-3.4e38, 3.4e38, 0.0]], [2]),
}


def _loss_and_grad(rows: list[list[float]], labels: list[int]) -> tuple[float, np.ndarray, float, np.ndarray]:
    """(loss, d loss / d logits) from the examples' cross_entropy, then from F.cross_entropy."""
    logits = topgrad.Tensor(np.array(rows, dtype=np.float32))
    loss = cross_entropy(logits, np.array(labels))
    loss.backward()
    th_logits = torch.tensor(rows, dtype=torch.float32, requires_grad=True)
    th_loss = nnf.cross_entropy(th_logits, torch.tensor(labels))
    th_loss.backward()
    return loss.item(), to_numpy(logits.grad), th_loss.item(), th_logits.grad.numpy()


@pytest.mark.parametrize("case", list(CASES))
def test_cross_entropy_is_finite_where_pytorchs_is(case: str) -> None:
    """0 * -inf is NaN: the loss was NaN (and topgrad-train stopped, "diverged") where a logit other
    than the label's was -inf; F.cross_entropy gives a finite loss and gradient there."""
    loss, grad, th_loss, th_grad = _loss_and_grad(*CASES[case])
    assert np.isfinite(loss), (case, loss)
    np.testing.assert_allclose(loss, th_loss, rtol=1e-5, atol=1e-5, err_msg=case)
    np.testing.assert_allclose(grad, th_grad, rtol=1e-5, atol=1e-5, err_msg=case)


@pytest.mark.parametrize("bad_rows", [(0,), (2,), (4,), (1, 2), (0, 1, 2, 3, 4)])
def test_a_row_whose_label_is_masked_gets_pytorchs_gradient(bad_rows: tuple[int, ...]) -> None:
    """A label whose own logit is -inf (a mask over the target, by mistake): the loss is inf, as
    F.cross_entropy's, but the max trick tied the row's entries at -inf and shared its gradient
    among them; PyTorch's is (softmax - one-hot) / batch there too."""
    rows = np.array([[0.5, -1.0, 2.0, -INF], [1.0, 0.0, -INF, 0.25], [-2.0, 1.5, 0.0, 1.0],
                     [3.0, -INF, -0.5, 0.0], [0.0, 0.0, 1.0, -1.0]])
    labels = [3, 2, 0, 1, 2]
    for row in bad_rows:
        rows[row, labels[row]] = -INF
    loss, grad, th_loss, th_grad = _loss_and_grad(rows.tolist(), labels)
    assert loss == th_loss == INF
    np.testing.assert_allclose(grad, th_grad, rtol=1e-5, atol=1e-6)


def test_an_ordinary_loss_does_not_stop_anomaly_mode() -> None:
    """Finite logits: no op of the loss makes a NaN or an Inf, so `detect_anomaly()` (which stops at
    Inf too) lets a training step through, forward and backward."""
    logits = topgrad.Tensor(np.array([[1.0, -2.0, 2.0], [0.0, 30.0, -30.0]], dtype=np.float32))
    with topgrad.detect_anomaly():
        cross_entropy(logits, np.array([0, 2])).backward()


def test_a_masked_float64_loss_stays_float64(backend_name: str) -> None:
    """The -inf path builds its constant in the logits' dtype, as the one-hot path does."""
    if backend_name != "numpy":
        pytest.skip("float64 Tensors are the numpy backend's")
    logits = topgrad.Tensor(np.array([[1.0, -INF, 2.0]]), dtype="float64")
    loss = cross_entropy(logits, np.array([0]))
    assert str(loss.dtype) == "float64"
    assert abs(loss.item() - (np.log(np.exp(1.0) + np.exp(2.0)) - 1.0)) < 1e-14


def test_the_loss_of_an_empty_batch_is_nan_as_pytorchs() -> None:
    """`* (-1.0 / batch)` raised ZeroDivisionError for a batch of 0; F.cross_entropy's mean over no
    rows is NaN, and backward gives the logits a zero-size gradient."""
    logits = topgrad.Tensor.zeros(0, 10)
    loss = cross_entropy(logits, np.array([], dtype=np.int64))
    assert np.isnan(loss.item())
    assert np.isnan(nnf.cross_entropy(torch.zeros(0, 10), torch.zeros(0, dtype=torch.int64)).item())
    loss.backward()
    assert to_numpy(logits.grad).shape == (0, 10)


def test_the_accuracy_of_no_rows_is_nan_without_a_warning() -> None:
    """numpy's "Mean of empty slice" RuntimeWarnings went through; PyTorch's mean of no hits is NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(accuracy(topgrad.Tensor.zeros(0, 10), np.array([], dtype=np.int64)))


@pytest.mark.parametrize("name", list(SMALL))
def test_every_model_takes_an_empty_batch(name: str) -> None:
    """The MLP flattened with reshape(B, -1), and a -1 has nothing to infer from among 0 elements:
    it refused a batch of 0 with an error about a reshape the user never wrote."""
    with topgrad.no_grad():
        assert SMALL[name]()(topgrad.Tensor.zeros(0, 28, 28, 1), training=False).shape == (0, 10)
