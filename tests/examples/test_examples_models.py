"""The example models: shapes, gradients for every parameter, BatchNorm modes, learning."""

from __future__ import annotations

import re

import numpy as np
import pytest
import topgrad
from small_models import SMALL, images
from topgrad_examples.loss import accuracy, cross_entropy, one_hot
from topgrad_examples.models import MODELS, build


def test_every_model_has_a_small_variant() -> None:
    assert set(SMALL) == set(MODELS)


@pytest.mark.parametrize("name", list(SMALL))
def test_forward_backward(name: str) -> None:
    model = SMALL[name]()
    x, y = images(4)
    logits = model(x, training=True)
    assert logits.shape == (4, 10)
    loss = cross_entropy(logits, y)
    assert loss.shape == () and np.isfinite(loss.item())
    loss.backward()
    for pname, p, is_buffer in model.named_tensors():
        if is_buffer:
            assert p.grad is None, pname
        else:
            assert p.grad is not None and tuple(p.grad.shape) == p.shape, pname
            assert np.isfinite(topgrad.get_backend().to_numpy(p.grad)).all(), pname


@pytest.mark.parametrize("name", list(SMALL))
def test_a_few_steps_lower_the_loss(name: str) -> None:
    model = SMALL[name]()
    x, y = images(8)
    optimizer = topgrad.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(5):
        loss = cross_entropy(model(x, training=True), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses


def test_batchnorm_running_stats_update_in_training_only() -> None:
    model = SMALL["deepconv"]()
    x, _ = images(4)
    mean = model.stem_bn.running_mean
    before = mean.numpy().copy()
    with topgrad.no_grad():
        model(x, training=False)
    np.testing.assert_array_equal(mean.numpy(), before)
    model(x, training=True)
    assert not np.allclose(mean.numpy(), before)
    assert model.stem_bn.running_mean is mean  # the op replaced .data, the Tensor stays
    # eval mode is deterministic per example: a sample's logits do not depend on the batch
    with topgrad.no_grad():
        alone = model(topgrad.Tensor(x.numpy()[:1]), training=False).numpy()
        batch = model(x, training=False).numpy()[:1]
    np.testing.assert_allclose(alone, batch, rtol=1e-4, atol=1e-4)


def test_modules_start_in_training_mode_as_in_pytorch() -> None:
    """`cross_entropy(model(x), y)` in one's own loop trains BatchNorm as `nn.BatchNorm2d` would."""
    model = SMALL["deepconv"]()
    x, _ = images(4)
    mean = model.stem_bn.running_mean
    before = mean.numpy().copy()
    assert model.training
    model(x)  # no flag: the module's mode, training
    assert not np.allclose(mean.numpy(), before)
    with topgrad.no_grad():
        np.testing.assert_array_equal(model(x).numpy(), model(x, training=True).numpy())


def test_train_and_eval_set_the_mode_of_every_sub_module() -> None:
    model = SMALL["deepconv"]()
    x, _ = images(4)
    modules = [model.stem_bn, model.head, *model.blocks, model.blocks[1].bn2, model.blocks[1].project_bn]
    assert model.eval() is model  # returns the module, as in PyTorch
    assert not model.training and not any(m.training for m in modules)  # lists of blocks included
    stats = {k: v.numpy().copy() for k, v in model.state().items() if "running" in k}
    with topgrad.no_grad():
        evaluated = model(x).numpy()
        np.testing.assert_array_equal(evaluated, model(x, training=False).numpy())
    assert all(np.array_equal(model.state()[k].numpy(), v) for k, v in stats.items())  # eval: stats kept
    model(x, training=True)  # an explicit flag wins over the mode
    assert not np.allclose(model.stem_bn.running_mean.numpy(), stats["stem_bn.running_mean"])
    assert not model.training  # and does not change it
    assert model.train() is model and model.training and all(m.training for m in modules)
    assert model.train(False) is model and not model.blocks[2].bn1.training


def test_a_sub_module_keeps_its_own_mode() -> None:
    """As in PyTorch: `model.stem_bn.eval()` freezes that BatchNorm while the rest trains."""
    model = SMALL["deepconv"]()
    x, _ = images(4)
    model.stem_bn.eval()
    frozen = model.stem_bn.running_mean.numpy().copy()
    other = model.blocks[0].bn1.running_mean.numpy().copy()
    model(x)
    np.testing.assert_array_equal(model.stem_bn.running_mean.numpy(), frozen)
    assert not np.allclose(model.blocks[0].bn1.running_mean.numpy(), other)


@pytest.mark.parametrize("name", list(SMALL))
def test_every_model_follows_its_mode(name: str) -> None:
    model = SMALL[name]()
    x, _ = images(2)
    with topgrad.no_grad():
        eval_logits = model(x, training=False).numpy()
        np.testing.assert_array_equal(model.eval()(x).numpy(), eval_logits)
        np.testing.assert_array_equal(model.forward(x).numpy(), eval_logits)


def test_parameters_and_state_names() -> None:
    model = SMALL["deepconv"]()
    state = model.state()
    assert "blocks.1.project_bn.running_var" in state and "blocks.0.conv1.w" in state
    assert "blocks.0.project" not in state  # identity shortcut: no projection
    params = model.parameters()
    assert all(p is not state["stem_bn.running_mean"] for p in params)
    assert len(params) + 2 * 9 == len(state)  # 9 BatchNorms, two buffers each


def test_seed_fixes_initialization() -> None:
    a, b, c = build("mlp", seed=3), build("mlp", seed=3), build("mlp", seed=4)
    np.testing.assert_array_equal(a.parameters()[0].numpy(), b.parameters()[0].numpy())
    assert not np.array_equal(a.parameters()[0].numpy(), c.parameters()[0].numpy())


def test_default_models_build_and_run(interpreted: bool) -> None:
    if interpreted:
        pytest.skip("full-size models are slow under the interpreter; the small variants cover the ops")
    x, _ = images(2)
    for name in MODELS:
        model = build(name)
        with topgrad.no_grad():
            assert model(x, training=False).shape == (2, 10), name


def test_cross_entropy_of_float64_logits_is_float64(backend_name: str) -> None:
    """A float64 model's loss keeps float64 (the one-hot targets take the logits' dtype)."""
    if backend_name != "numpy":
        pytest.skip("float64 Tensors are the numpy backend's")
    logits = topgrad.Tensor(np.array([[2.0, 0.1, 0.0], [0.0, 0.0, 3.0]]), dtype="float64")
    loss = cross_entropy(logits, np.array([0, 2]))
    assert str(loss.dtype) == "float64"
    rows = np.array([[2.0, 0.1, 0.0], [0.0, 0.0, 3.0]])
    want = -np.mean(np.log(np.exp([2.0, 3.0]) / np.exp(rows).sum(axis=1)))
    assert abs(loss.item() - want) < 1e-14


def test_loss_and_accuracy_helpers() -> None:
    logits = topgrad.Tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    labels = np.array([0, 1])
    expected = -np.mean(np.log(np.exp([2.0, 0.0]) / np.exp(logits.numpy()).sum(axis=1)))
    np.testing.assert_allclose(cross_entropy(logits, labels).item(), expected, rtol=1e-5)
    assert accuracy(logits, labels) == 0.5
    np.testing.assert_array_equal(one_hot(labels, 3), [[1, 0, 0], [0, 1, 0]])


@pytest.mark.parametrize(("logits_shape", "labels", "message"), [
    ((4, 10), np.array([0, 1, 2, -1]), "label -1 is out of range for 10 classes"),
    ((4, 10), np.array([0, 1, 2, 10]), "label 10 is out of range for 10 classes"),
    ((4, 10), np.array([0, 1]), "2 labels for 4 rows"),
    ((4, 10), np.array([0.0, 1.0, 2.0, 3.0]), "1-d integer array of class indices, got float64"),
    ((4, 10), np.zeros((4, 1), dtype=np.int64), "of shape (4, 1)"),
    ((2, 3, 10), np.array([0, 1]), "logits must be 2-d (batch, classes), got shape (2, 3, 10)"),
    ((4, 10), topgrad.Tensor(np.array([0, 1, 2, 3]), requires_grad=False),
     "got a Tensor of shape (4,) (a Tensor holds floats): pass the integer array itself"),
])
def test_cross_entropy_refuses_labels_it_would_misread(logits_shape, labels, message) -> None:
    """A label of -1 would index the last class, as numpy reads it, and train on it silently;
    PyTorch refuses it. Every refusal names the labels or the logits' shape."""
    logits = topgrad.Tensor(np.zeros(logits_shape, dtype=np.float32))
    with pytest.raises(ValueError, match=re.escape(message)):
        cross_entropy(logits, labels)
