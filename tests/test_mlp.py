"""A two-layer MLP written with the public API: it trains, and its gradients match PyTorch's."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812 - the usual PyTorch spelling
from helpers import Sizes, assert_close, rand
from topgrad import Tensor
from topgrad.optim import SGD


@dataclass
class MLP:
    """x -> relu(x w1 + b1) w2 + b2, He-initialized."""

    w1: Tensor
    b1: Tensor
    w2: Tensor
    b2: Tensor

    @classmethod
    def create(cls, d_in: int, hidden: int, classes: int, seed: int = 0) -> MLP:
        return cls(
            Tensor.He(d_in, hidden, seed=seed),
            Tensor.zeros(hidden),
            Tensor.He(hidden, classes, seed=seed + 1),
            Tensor.zeros(classes),
        )

    def params(self) -> list[Tensor]:
        return [self.w1, self.b1, self.w2, self.b2]

    def __call__(self, x: Tensor) -> Tensor:
        return x.linear(self.w1, self.b1).relu().linear(self.w2, self.b2)


def cross_entropy(logits: Tensor, one_hot: Tensor) -> Tensor:
    """Mean negative log-likelihood, composed from LogSoftmax, Mul, Sum, Mean and a negation."""
    return -(logits.logsoftmax(axis=-1) * one_hot).sum(axis=-1).mean()


def _data(n: int, d: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and labels from a random linear teacher, so that the task can be learned."""
    x = rand((n, d), seed)
    labels = (x @ rand((d, classes), seed + 1)).argmax(axis=-1)
    return x, labels


def _one_hot(labels: np.ndarray, classes: int) -> np.ndarray:
    return np.eye(classes, dtype=np.float32)[labels]


@pytest.fixture(scope="module")
def shape(interpreted: bool) -> tuple[int, int, int, int]:
    """(examples, inputs, hidden units, classes)."""
    sizes = Sizes.for_run(interpreted)
    return (16, sizes.dim, sizes.dim, 4) if interpreted else (64, 20, 32, 5)


def test_mlp_loss_falls_with_sgd(shape: tuple[int, int, int, int]) -> None:
    n, d, hidden, classes = shape
    x_np, labels = _data(n, d, classes, seed=1)
    x, y = Tensor(x_np), Tensor(_one_hot(labels, classes))
    model = MLP.create(d, hidden, classes, seed=2)
    opt = SGD(model.params(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses)), losses
    assert losses[-1] < 0.5 * losses[0], f"loss went from {losses[0]:.4f} to {losses[-1]:.4f}"
    accuracy = (model(x).numpy().argmax(axis=-1) == labels).mean()
    assert accuracy > 0.8, f"training accuracy {accuracy:.2f}"


def test_mlp_gradients_match_torch(shape: tuple[int, int, int, int]) -> None:
    """Same weights in both frameworks: loss and the gradient of every parameter agree."""
    n, d, hidden, classes = shape
    x_np, labels = _data(n, d, classes, seed=3)
    model = MLP.create(d, hidden, classes, seed=4)
    model.b1, model.b2 = Tensor(rand((hidden,), 5, 0.1)), Tensor(rand((classes,), 6, 0.1))
    loss = cross_entropy(model(Tensor(x_np)), Tensor(_one_hot(labels, classes)))
    loss.backward()

    ref = [torch.tensor(p.numpy(), requires_grad=True) for p in model.params()]
    w1, b1, w2, b2 = ref
    logits = F.relu(torch.from_numpy(x_np) @ w1 + b1) @ w2 + b2
    ref_loss = F.cross_entropy(logits, torch.from_numpy(labels))
    ref_loss.backward()

    assert loss.shape == ()
    assert_close(loss, ref_loss, "loss")
    for name, p, t in zip(["w1", "b1", "w2", "b2"], model.params(), ref):
        assert_close(p.grad, t.grad, f"gradient of {name}")


def test_he_init_scale() -> None:
    """Tensor.He draws with std sqrt(2 / fan_in), fan_in = product of all but the last dim."""
    w = Tensor.He(3, 3, 16, 256, seed=0).numpy()
    assert w.shape == (3, 3, 16, 256)
    expected_std = np.sqrt(2 / (3 * 3 * 16))
    assert abs(w.std() / expected_std - 1) < 0.05, w.std()
    assert abs(w.mean()) < 0.01
    np.testing.assert_array_equal(w, Tensor.He(3, 3, 16, 256, seed=0).numpy())
