"""Checkpoints: exact round trip of model and optimizer state, and clear errors for bad files."""

from __future__ import annotations

import errno
import os
import re
import stat
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import topgrad
from topgrad_examples import checkpoint, data
from topgrad_examples.loss import cross_entropy
from topgrad_examples.models import MLP, DeepConvNet, build

CONFIG = {"dataset": "mnist", "seed": 0, "batch_size": 8, "lr": 0.001}


def trained(model, steps: int = 2, optimizer_cls=topgrad.optim.Adam):
    subset = data.bundled_subset()
    x = topgrad.Tensor(data.normalize(subset.train_images[:8]))
    y = subset.train_labels[:8].astype(np.int64)
    optimizer = optimizer_cls(model.parameters(), lr=1e-3)
    for _ in range(steps):
        loss = cross_entropy(model(x, training=True), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model, optimizer


def numpy_state(model) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in model.state().items()}


def test_round_trip_restores_model_and_optimizer(tmp_path: Path) -> None:
    model, optimizer = trained(DeepConvNet(width=4, seed=0))
    history = np.array([[0.5, 0.9, 1.0]])
    path = tmp_path / "ck.npz"
    checkpoint.save(path, "deepconv", model, optimizer, 1, CONFIG, history)
    assert [p.name for p in tmp_path.iterdir()] == ["ck.npz"]
    with np.load(path, allow_pickle=False) as npz:  # readable without pickle
        assert "model/blocks.1.project_bn.running_mean" in npz.files

    fresh = DeepConvNet(width=4, seed=5)
    fresh_opt = topgrad.optim.Adam(fresh.parameters())
    epoch, config, saved_history = checkpoint.load(path, "deepconv", fresh, fresh_opt)
    assert epoch == 1 and config == CONFIG
    np.testing.assert_array_equal(saved_history, history)
    for name, value in numpy_state(model).items():
        np.testing.assert_array_equal(numpy_state(fresh)[name], value, err_msg=name)
    to_np = topgrad.get_backend().to_numpy
    for a, b in zip(optimizer.state, fresh_opt.state):
        assert a["step"] == b["step"] == 2
        np.testing.assert_array_equal(to_np(a["exp_avg_sq"]), to_np(b["exp_avg_sq"]))


def test_a_float64_model_loads_as_float64(tmp_path: Path) -> None:
    """load made every array with Tensor(a), float32: a float64 model came back float32 (its Adam
    moments still float64) and trained on in float32 with no word; PyTorch's load_state_dict
    copies into each parameter's own dtype."""
    if topgrad.get_backend().name != "numpy":
        pytest.skip("float64 Tensors are the numpy backend's")

    def in_float64(model: Any) -> Any:
        for t in model.state().values():
            t.data = topgrad.Tensor(t.numpy(), dtype="float64").data
        return model

    model, optimizer = trained(in_float64(MLP(hidden=(8,))))
    path = tmp_path / "ck.npz"
    checkpoint.save(path, "mlp", model, optimizer, 1, CONFIG, np.zeros((1, 3)))
    fresh = in_float64(MLP(hidden=(8,), seed=9))
    checkpoint.load(path, "mlp", fresh, topgrad.optim.Adam(fresh.parameters()))
    for name, value in numpy_state(model).items():
        loaded = numpy_state(fresh)[name]
        assert loaded.dtype == np.float64, name
        np.testing.assert_array_equal(loaded, value, err_msg=name)


def test_sgd_momentum_state_round_trips(tmp_path: Path) -> None:
    sgd = lambda params, lr: topgrad.optim.SGD(params, lr=lr, momentum=0.9)  # noqa: E731
    model, optimizer = trained(MLP(hidden=(8,)), optimizer_cls=sgd)
    path = tmp_path / "ck.npz"
    checkpoint.save(path, "mlp", model, optimizer, 3, CONFIG, np.zeros((3, 3)))
    fresh = MLP(hidden=(8,), seed=9)
    fresh_opt = topgrad.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    assert checkpoint.load(path, "mlp", fresh, fresh_opt)[0] == 3
    assert set(fresh_opt.state[0]) == {"momentum_buffer"}


def test_save_replaces_atomically(tmp_path: Path) -> None:
    model, optimizer = trained(MLP(hidden=(8,)), steps=1)
    path = tmp_path / "ck.npz"
    path.write_bytes(b"old")
    checkpoint.save(path, "mlp", model, optimizer, 1, CONFIG, np.zeros((1, 3)))
    assert zipfile.is_zipfile(path) and [p.name for p in tmp_path.iterdir()] == ["ck.npz"]


def test_save_through_a_symlink_writes_its_target(tmp_path: Path) -> None:
    """latest.npz -> run1.npz: the atomic rename replaced the link with a file, and run1.npz kept its
    old epoch."""
    model, optimizer = trained(MLP(hidden=(8,)), steps=1)
    target, link = tmp_path / "run1.npz", tmp_path / "latest.npz"
    checkpoint.save(target, "mlp", model, optimizer, 1, CONFIG, np.zeros((1, 3)))
    link.symlink_to(target.name)
    checkpoint.save(link, "mlp", model, optimizer, 2, CONFIG, np.zeros((2, 3)))
    assert link.is_symlink() and int(checkpoint.read(target)["meta/epoch"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.npz", "run1.npz"]


def test_a_checkpoint_naming_an_unknown_dataset_is_damaged(tmp_path: Path) -> None:
    """config/dataset = 'cifar' was taken, and resuming then trained "mlp on cifar" on MNIST's
    subset, or crashed in the data loader."""
    model, optimizer = trained(MLP(hidden=(8,)), steps=1)
    path = tmp_path / "ck.npz"
    checkpoint.save(path, "mlp", model, optimizer, 1, {**CONFIG, "dataset": "cifar"}, np.zeros((1, 3)))
    with pytest.raises(checkpoint.CheckpointError, match=r"a damaged checkpoint \(config/dataset = "
                       r"array\('cifar'"):
        checkpoint.read(path)


def test_an_unreadable_file_at_save_is_not_called_no_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A checkpoint at --save that this user cannot read was called "not a topgrad-train checkpoint"."""
    path = tmp_path / "ck.npz"
    path.write_bytes(b"PK")

    def denied(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(np, "load", denied)
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)  # as for a user without the right
    with pytest.raises(checkpoint.CheckpointError, match=re.escape(
            f"--save {path}: a file is there that cannot be read (Permission denied), so it may be another "
            "run's checkpoint")):
        checkpoint.check_not_taken(path, None)


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    model, optimizer = trained(MLP(hidden=(8,)), steps=1)
    checkpoint.save(tmp_path / "ck.npz", "mlp", model, optimizer, 1, CONFIG, np.zeros((1, 3)))
    return tmp_path / "ck.npz"


def _load_into(path: Path, name: str = "mlp", model=None, optimizer_cls=topgrad.optim.Adam):
    model = model or MLP(hidden=(8,))
    return checkpoint.load(path, name, model, optimizer_cls(model.parameters(), lr=1e-3))


def test_a_checkpoint_loads_without_an_optimizer_to_predict_as_the_readme_shows(tmp_path: Path) -> None:
    """`checkpoint.load(path, name, model, None)`: the weights and BatchNorm statistics only. Before,
    the optimizer was required ("saved with optimizer Adam, this run uses NoneType"), so a saved run
    could not be used to predict. The README's block runs as written and predicts what the trained
    model does."""
    for name in ("mlp", "deepconv"):  # deepconv: BatchNorm's running statistics come back too
        model, optimizer = trained(build(name), steps=1)
        checkpoint.save(tmp_path / f"{name}.npz", name, model, optimizer, 1, CONFIG, np.zeros((1, 3)))
        fresh = build(name, seed=1)
        checkpoint.load(tmp_path / f"{name}.npz", name, fresh, None)
        for key, t in model.state().items():
            np.testing.assert_array_equal(fresh.state()[key].numpy(), t.numpy(), err_msg=key)
    readme = (Path(__file__).resolve().parents[2] / "topgrad-examples" / "README.md").read_text()
    block = readme.split("To predict with a saved run", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    done = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    mlp = build("mlp")
    checkpoint.load(tmp_path / "mlp.npz", "mlp", mlp, None)
    zeros = topgrad.Tensor(data.normalize(np.zeros((2, 28, 28), np.uint8)), requires_grad=False)
    assert done.stdout.strip() == str(mlp(zeros, training=False).numpy().argmax(axis=-1)), done.stdout


def test_wrong_model_name(saved: Path) -> None:
    with pytest.raises(checkpoint.CheckpointError, match="saved for model 'mlp', cannot resume 'conv'"):
        _load_into(saved, "conv")


def test_wrong_architecture(saved: Path) -> None:
    with pytest.raises(checkpoint.CheckpointError, match=r"hidden\.0\.w has shape \(784, 8\) in the"):
        _load_into(saved, model=MLP(hidden=(16,)))
    with pytest.raises(checkpoint.CheckpointError, match=r"missing .*hidden\.1\.w"):
        _load_into(saved, model=MLP(hidden=(8, 8)))


def test_wrong_optimizer(saved: Path) -> None:
    with pytest.raises(checkpoint.CheckpointError, match="optimizer Adam, this run uses AdamW"):
        _load_into(saved, optimizer_cls=topgrad.optim.AdamW)


def test_optimizer_state_for_more_parameters_than_the_model_has(tmp_path: Path) -> None:
    """An optimizer that held one more tensor than the model: the message counts both sides."""
    model, extra = MLP(hidden=(8,)), topgrad.Tensor(np.ones(3, np.float32))
    optimizer = topgrad.optim.Adam([*model.parameters(), extra])
    x = topgrad.Tensor(np.ones((2, 28, 28, 1), np.float32))
    (model(x, training=True).sum() + extra.sum()).backward()
    optimizer.step()
    assert len(model.parameters()) == 4 and all(optimizer.state)  # five parameters' state in the file
    path = tmp_path / "ck.npz"
    checkpoint.save(path, "mlp", model, optimizer, 1, CONFIG, np.zeros((1, 3)))
    fresh = MLP(hidden=(8,), seed=3)
    with pytest.raises(checkpoint.CheckpointError) as info:
        checkpoint.load(path, "mlp", fresh, topgrad.optim.Adam(fresh.parameters()))
    assert "optimizer state covers 5 parameters, the model has 4" in str(info.value), info.value


def test_failed_load_changes_nothing(saved: Path) -> None:
    model = MLP(hidden=(8, 8), seed=2)
    before = numpy_state(model)
    with pytest.raises(checkpoint.CheckpointError):
        _load_into(saved, model=model)
    for name, value in numpy_state(model).items():
        np.testing.assert_array_equal(before[name], value)


def test_a_text_weight_is_a_damaged_file_and_changes_no_optimizer(saved: Path, tmp_path: Path) -> None:
    """The optimizer's state was loaded before the weights were converted: a text weight then
    failed with a TypeError traceback, after the optimizer had taken the file's state."""
    arrays = checkpoint.read(saved)
    key = next(k for k in arrays if k.startswith("model/"))
    arrays[key] = np.full(arrays[key].shape, "x")
    damaged = tmp_path / "text.npz"
    np.savez(damaged, **arrays)
    model, optimizer = trained(MLP(hidden=(8,)), steps=2)
    before = optimizer.state_dict()
    with pytest.raises(checkpoint.CheckpointError, match=r"a damaged checkpoint \(a model array: .*text"):
        checkpoint.load(damaged, "mlp", model, optimizer)
    after = optimizer.state_dict()
    assert [s["step"] for s in after["state"].values()] == [s["step"] for s in before["state"].values()]


@pytest.mark.parametrize("content", [b"", b"garbage" * 10, None])
def test_unreadable_files(tmp_path: Path, saved: Path, content: bytes | None) -> None:
    path = tmp_path / "bad.npz"
    path.write_bytes(saved.read_bytes()[:200] if content is None else content)
    with pytest.raises(checkpoint.CheckpointError, match=r"bad\.npz: not a readable \.npz checkpoint"):
        _load_into(path)


def test_npz_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(checkpoint.CheckpointError, match="not a topgrad-examples checkpoint"):
        _load_into(tmp_path / "other.npz")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(checkpoint.CheckpointError, match="no such checkpoint"):
        _load_into(tmp_path / "nope.npz")


def test_a_checkpoint_of_another_format_version_names_both_versions(tmp_path: Path, saved: Path) -> None:
    """Format 2 (a later release's file) was "not a topgrad-examples checkpoint"."""
    arrays = dict(checkpoint.read(saved))
    arrays["meta/format"] = np.array("topgrad-examples-checkpoint/2")
    np.savez(tmp_path / "v2.npz", **arrays)
    with pytest.raises(checkpoint.OtherFormatError, match=(
            r"v2\.npz: a topgrad-examples checkpoint of format 2; this version reads format 1: use the "
            r"topgrad-examples version that wrote it$")):
        checkpoint.read(tmp_path / "v2.npz")


def test_a_save_reaches_the_disk_before_it_replaces_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """os.replace without fsync: after a power loss the file at the path could be empty or half
    written. The file is synced before the rename, its folder (the rename) after."""
    calls: list[str] = []
    fsync, replace = os.fsync, os.replace

    def logged_fsync(fd: int) -> None:
        calls.append("fsync folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        fsync(fd)

    def logged_replace(*args: Any) -> None:
        calls.append("replace")
        replace(*args)

    monkeypatch.setattr(os, "fsync", logged_fsync)
    monkeypatch.setattr(os, "replace", logged_replace)
    model, optimizer = trained(MLP(hidden=(8,)), steps=1)
    checkpoint.save(tmp_path / "ck.npz", "mlp", model, optimizer, 1, CONFIG, np.zeros((1, 3)))
    assert calls == ["fsync file", "replace", "fsync folder"]


def test_a_folder_that_refuses_fsync_still_gets_its_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    fsync = os.fsync

    def no_folder_fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "Invalid argument")
        fsync(fd)

    monkeypatch.setattr(os, "fsync", no_folder_fsync)
    model, optimizer = trained(MLP(hidden=(8,)), steps=1)
    path = tmp_path / "ck.npz"
    checkpoint.save(path, "mlp", model, optimizer, 1, CONFIG, np.zeros((1, 3)))
    assert int(checkpoint.read(path)["meta/epoch"]) == 1
