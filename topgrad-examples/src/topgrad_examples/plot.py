"""A PNG of training loss and test accuracy per epoch (needs matplotlib: topgrad-examples[plot])."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

INSTALL_HINT = "--plot needs matplotlib: pip install 'topgrad-examples[plot]' (or pip install matplotlib)"


class PlotError(RuntimeError):
    """--plot was asked for but matplotlib is not installed."""


def require_matplotlib() -> Any:
    """The pyplot module with a file-only backend, or a PlotError saying how to install it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotError(INSTALL_HINT) from exc
    return plt


def plot_history(history: np.ndarray, path: str | os.PathLike[str], title: str = "") -> Path:
    """Write loss and accuracy curves; `history` rows are (train loss, test accuracy, seconds)."""
    plt = require_matplotlib()
    history = np.asarray(history).reshape(-1, 3)
    epochs = np.arange(1, len(history) + 1)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax_loss.plot(epochs, history[:, 0], marker="o")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="loss")
    ax_acc.plot(epochs, history[:, 1], marker="o", color="tab:green")
    ax_acc.set(xlabel="epoch", ylabel="test accuracy", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.set_xticks(epochs)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
