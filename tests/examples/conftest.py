"""Fixtures for the topgrad-examples tests: a tiny IDX dataset made from the bundled MNIST subset."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from topgrad_examples import data, idx

N_TRAIN, N_TEST = 96, 48


def write_dataset(folder: Path, n_train: int = N_TRAIN, n_test: int = N_TEST, gz: bool = True) -> Path:
    """Write the first images of the bundled subset as the four IDX files into `folder`."""
    subset = data.bundled_subset()
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    idx.write(folder / f"train-images-idx3-ubyte{ext}", subset.train_images[:n_train])
    idx.write(folder / f"train-labels-idx1-ubyte{ext}", subset.train_labels[:n_train])
    idx.write(folder / f"t10k-images-idx3-ubyte{ext}", subset.test_images[:n_test])
    idx.write(folder / f"t10k-labels-idx1-ubyte{ext}", subset.test_labels[:n_test])
    return folder


@pytest.fixture
def make_dataset() -> Callable[..., Path]:
    """`make_dataset(folder, n_train=96, n_test=48, gz=True)` writes a small real dataset."""
    return write_dataset


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "tiny")


@pytest.fixture
def isolated_search(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No $TOPGRAD_DATA, an empty Debian folder and an empty cache: nothing installed is found."""
    monkeypatch.delenv("TOPGRAD_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "debian")
    return tmp_path
