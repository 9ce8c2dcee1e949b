"""The example models compute what their PyTorch mirrors compute: logits, loss, every parameter's
gradient and BatchNorm's running statistics after a training step, at 1e-4.

The op tests compare each op with PyTorch; this checks the models built from them (a layer wired
to the wrong input, a flatten in the wrong order, a gradient that never reaches a parameter).
The mirrors are the benchmark's (`benchmarks/_models_torch.py`, nn modules in NCHW), which read
the examples' parameter names; a gradient maps onto PyTorch's layout as its parameter does.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from types import ModuleType

import numpy as np
import pytest
from helpers import assert_close, benchmarks_on_path, to_numpy
from small_models import SMALL, images
from topgrad_examples.loss import cross_entropy
from topgrad_examples.models import build

torch = pytest.importorskip("torch")
nnf = pytest.importorskip("torch.nn.functional")

# Each model at its small test size and at its default size (~14 s for all in the interpreter).
# deepconv only at its default width: its small variant's strided 1x1 projection has 4 input
# channels, where PyTorch's (oneDNN's) weight gradient corrupts the heap (see `helpers.torch_conv2d`).
CASES = [(name, "small") for name in SMALL if name != "deepconv"] + [(name, "default") for name in SMALL]


@pytest.fixture(scope="module")
def mirrors() -> Iterator[ModuleType]:
    """benchmarks/_models_torch.py, the PyTorch mirrors of the example models."""
    with benchmarks_on_path():
        yield importlib.import_module("_models_torch")


@pytest.mark.parametrize(("name", "size"), CASES)
def test_a_training_step_matches_pytorch(name: str, size: str, mirrors: ModuleType) -> None:
    model = SMALL[name]() if size == "small" else build(name, seed=3)
    x, labels = images(4)
    arrays = {k: to_numpy(t).copy() for k, t in model.state().items()}
    mirror = mirrors.build(name, arrays).train()

    logits = model(x, training=True)
    loss = cross_entropy(logits, labels)
    loss.backward()
    th_x = torch.from_numpy(np.ascontiguousarray(x.numpy().transpose(0, 3, 1, 2)))
    th_logits = mirror(th_x)
    th_loss = nnf.cross_entropy(th_logits, torch.from_numpy(labels))
    th_loss.backward()

    assert_close(logits, th_logits, f"{name}: logits")
    assert_close(loss, th_loss, f"{name}: loss")
    # the gradients, laid out as PyTorch's parameters by the mirror's own conversion
    grads = {k: to_numpy(t.grad) for k, t, is_buffer in model.named_tensors() if not is_buffer}
    as_torch = dict(mirrors.build(name, {**arrays, **grads}).named_parameters())
    for pname, p in mirror.named_parameters():
        assert p.grad is not None, pname
        assert_close(as_torch[pname], p.grad, f"{name}: gradient of {pname}")
    # the running statistics a training forward updated (deepconv's BatchNorms)
    after = dict(mirrors.build(name, {k: to_numpy(t) for k, t in model.state().items()}).named_buffers())
    stats = ("running_mean", "running_var")
    buffers = [(bname, b) for bname, b in mirror.named_buffers() if bname.endswith(stats)]
    assert bool(buffers) == (name == "deepconv")
    for bname, b in buffers:
        assert_close(after[bname], b, f"{name}: {bname}")

