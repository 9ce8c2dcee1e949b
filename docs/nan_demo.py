"""Anomaly mode finds a NaN weight: `python docs/nan_demo.py`, run from the repository's root.

Puts a NaN into one entry of the attention model's `blocks.0.v.w`, runs the model on a random
batch under `topgrad.detect_anomaly(names=model.state())` and prints the error: the output that
docs/inspecting.md shows (tests/test_inspecting_doc.py checks that it still does).
"""

import numpy as np
import topgrad
from topgrad_examples.models import build

model = build("attention")
w = model.state()["blocks.0.v.w"]
values = w.numpy().copy()
values[3, 5] = np.nan  # one weight of the first block's v projection
w.data = topgrad.Tensor(values).data
x = topgrad.Tensor.randn(4, 784, seed=0, requires_grad=False)  # a batch of 4 random "images"

try:
    with topgrad.detect_anomaly(names=model.state()):
        model(x)
except topgrad.AnomalyError as err:
    print(err)
