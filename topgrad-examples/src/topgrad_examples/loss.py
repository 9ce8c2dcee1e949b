"""Cross-entropy loss and accuracy, composed from topgrad ops."""

from __future__ import annotations

import functools
import math
import operator

import numpy as np
from topgrad import Tensor


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(B,) integer labels as a (B, num_classes) float32 array of zeros and ones."""
    return _one_hot(_checked_labels(labels, num_classes, "one_hot"), num_classes)


def _one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    out = np.zeros((len(labels), num_classes), dtype=np.float32)
    out[np.arange(len(labels)), labels] = 1.0
    return out


def cross_entropy(logits: Tensor, labels: np.ndarray) -> Tensor:
    """Mean negative log-likelihood of the labels, -mean_i logsoftmax(logits)[i, labels[i]], as
    F.cross_entropy: finite where a logit other than the label's is -inf, NaN for an empty batch."""
    if logits.ndim != 2:
        raise ValueError(f"cross_entropy: logits must be 2-d (batch, classes), got shape {logits.shape}; "
                         "for a sequence, reshape them to (batch * positions, classes) and the labels "
                         "to one axis")
    batch, num_classes = logits.shape
    labels = _checked_labels(labels, num_classes, "cross_entropy")
    if len(labels) != batch:
        raise ValueError(f"cross_entropy: {len(labels)} labels for {batch} rows of logits (shape "
                         f"{logits.shape}); give one label per row")
    per_row = -1.0 / batch if batch else math.nan  # a mean of no rows is NaN, as in PyTorch
    return _summed_label_log_probabilities(logits.logsoftmax(axis=-1), labels) * per_row


def _summed_label_log_probabilities(log_p: Tensor, labels: np.ndarray) -> Tensor:
    """The sum over rows i of log_p[i, labels[i]], a 0-d Tensor whose gradient reaches those entries only.

    Multiplying by the one-hot targets and summing each row picks them, but 0 * -inf is NaN. So where
    log_p holds a -inf (a masked logit, or one that underflows) the label's entry is taken as its row's
    maximum once every other entry is pushed to -inf (the same values and gradient). That way is kept
    for those batches: its -inf would stop `detect_anomaly()` in every ordinary step. A row whose own
    label's log-probability is -inf (a loss of inf) would tie every entry at -inf there, so that row's
    entry is indexed alone, and its gradient is F.cross_entropy's, (softmax - one-hot) / batch."""
    dtype = "float64" if str(log_p.dtype).endswith("float64") else "float32"  # a float64 model's loss too
    targets = _one_hot(labels, log_p.shape[-1])  # labels checked by the caller
    values = log_p.numpy()
    if not np.isneginf(values).any():
        return (log_p * Tensor(targets, dtype=dtype, requires_grad=False)).sum()
    others_out = np.where(targets == 1.0, 0.0, -np.inf)

    def label_maxima(start: int, stop: int) -> Tensor:  # rows start..stop-1 by the max trick
        pushed = Tensor(others_out[start:stop], dtype=dtype, requires_grad=False)
        return (log_p[start:stop] + pushed).max(axis=-1).sum()

    parts: list[Tensor] = []
    start = 0
    for row in map(int, np.flatnonzero(np.isneginf(values[np.arange(len(labels)), labels]))):  # usually none
        if row > start:
            parts.append(label_maxima(start, row))
        parts.append(log_p[row, int(labels[row])])
        start = row + 1
    if start < len(labels):
        parts.append(label_maxima(start, len(labels)))
    return functools.reduce(operator.add, parts)


def _checked_labels(labels: np.ndarray, num_classes: int, what: str) -> np.ndarray:
    """`labels` as a 1-d integer array of class indices in [0, num_classes): numpy indexing would
    read -1 as the last class and train on it silently (PyTorch refuses it)."""
    if isinstance(labels, Tensor):  # Tensor(int labels) holds float32: say what to pass instead
        raise ValueError(f"{what}: labels must be a 1-d integer array of class indices, got a Tensor of "
                         f"shape {labels.shape} (a Tensor holds floats): pass the integer array itself "
                         "(numpy, a list or a torch tensor), not Tensor(labels)")
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{what}: labels must be a 1-d integer array of class indices, got "
                         f"{labels.dtype} of shape {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)][0]
        raise ValueError(f"{what}: label {bad} is out of range for {num_classes} classes "
                         f"(labels are 0 to {num_classes - 1})")
    return labels


def accuracy(logits: Tensor, labels: np.ndarray) -> float:
    """The fraction of rows whose largest logit is at the label; NaN for no rows, as PyTorch's
    `(logits.argmax(-1) == labels).float().mean()` (without numpy's "Mean of empty slice" warning)."""
    hits = logits.numpy().argmax(axis=-1) == labels
    return float(hits.mean()) if hits.size else float("nan")
