"""Small variants of the example models, and a batch of real images, shared by the model tests.

Small variants keep the interpreted backends fast; the default sizes are checked separately.
"""

from __future__ import annotations

import numpy as np
import topgrad
from topgrad_examples import data
from topgrad_examples.models import MLP, AttentionNet, ConvNet, DeepConvNet

SMALL = {
    "mlp": lambda: MLP(hidden=(32, 16), seed=1),
    "conv": lambda: ConvNet(channels=(4, 8, 8), hidden=16, seed=1),
    "deepconv": lambda: DeepConvNet(width=4, seed=1),
    "attention": lambda: AttentionNet(d=16, depth=2, hidden=32, seed=1),
}


def images(n: int) -> tuple[topgrad.Tensor, np.ndarray]:
    """The first `n` images of the bundled subset, normalized, NHWC, and their int64 labels."""
    subset = data.bundled_subset()
    return topgrad.Tensor(data.normalize(subset.train_images[:n])), subset.train_labels[:n].astype(np.int64)
