"""Cross-entropy loss and accuracy, composed from topgrad ops."""

from __future__ import annotations

import numpy as np
from topgrad import Tensor


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(B,) integer labels as a (B, num_classes) float32 array of zeros and ones."""
    out = np.zeros((len(labels), num_classes), dtype=np.float32)
    out[np.arange(len(labels)), labels] = 1.0
    return out


def cross_entropy(logits: Tensor, labels: np.ndarray) -> Tensor:
    """Mean negative log-likelihood of the labels: -(1/B) Σ one_hot * logsoftmax(logits)."""
    batch, num_classes = logits.shape
    targets = Tensor(one_hot(labels, num_classes), requires_grad=False)
    return (logits.logsoftmax(axis=-1) * targets).sum() * (-1.0 / batch)


def accuracy(logits: Tensor, labels: np.ndarray) -> float:
    """The fraction of rows whose largest logit is at the label."""
    return float((logits.numpy().argmax(axis=-1) == labels).mean())
