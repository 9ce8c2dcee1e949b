"""A PNG of training loss and test accuracy per epoch (needs matplotlib: topgrad-examples[plot])."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from topgrad_examples.files import replacing, try_writing

DEFAULT_FORMAT = "png"  # of a --plot path without a suffix, whatever matplotlib's settings say
INSTALL_HINT = "--plot needs matplotlib: pip install 'topgrad-examples[plot]' (or pip install matplotlib)"


class PlotError(RuntimeError):
    """--plot cannot be written: matplotlib is not installed, or the path will not do."""


def require_matplotlib() -> Any:
    """The pyplot module with a file-only backend, or a PlotError saying how to install it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotError(INSTALL_HINT) from exc
    return plt


def chart_path(path: str | os.PathLike[str]) -> Path:
    """The file a chart asked for at `path` is written to: `path` itself when its name has a
    suffix (which names the format), else `path` with `.png` added (trailing dots dropped, as
    matplotlib does: `curves.` is `curves.png`)."""
    path = Path(path)
    return path if path.suffix else path.with_name(path.name.rstrip(".") + "." + DEFAULT_FORMAT)


def check_plot_path(path: str | os.PathLike[str]) -> None:
    """Fail before training where the plot could not be written: an existing folder (at `path` or
    at the chart's file), a missing folder, a file where the folder should be, a file type
    matplotlib cannot write, or a name that is only a suffix (`.png`, meant as a format)."""
    plt = require_matplotlib()
    path = Path(path)
    if path.is_dir():
        raise PlotError(f"--plot {path}: is a folder; give a file name, e.g. {path / 'curves.png'}")
    if not path.parent.is_dir():
        if path.parent.exists():
            raise PlotError(f"--plot {path}: cannot write a chart there ({path.parent} is a file, not "
                            "a folder)")
        raise PlotError(f"--plot {path}: the folder {path.parent} does not exist")
    chart = chart_path(path)
    if chart.is_dir():
        raise PlotError(f"--plot {path}: the chart's file {chart} is a folder; give another name")
    try:  # a read-only folder: say so now, not after training
        try_writing(path.parent, chart.name)
    except OSError as exc:
        raise PlotError(f"--plot {path}: cannot write there ({exc.strerror or exc})") from None
    fig = plt.figure()
    try:
        formats = fig.canvas.get_supported_filetypes()
    finally:
        plt.close(fig)
    only_suffix = path.name.startswith(".") and not path.suffix  # `.png` is a dot file to pathlib
    if only_suffix and path.name[1:].lower() in formats:
        raise PlotError(f"--plot {path}: the name is only a suffix, so the chart would be {chart}; give "
                        f"the file a name, e.g. {path.with_name('curves' + path.name)}")
    if path.suffix and path.suffix[1:].lower() not in formats:
        raise PlotError(f"--plot {path}: matplotlib cannot write {path.suffix} files; use one of "
                        f"{', '.join('.' + f for f in sorted(formats))}")


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
    chart = chart_path(path)  # the name and format given explicitly: matplotlib guesses neither
    try:  # into a temporary file first: a full disk must not leave a 0-byte chart over a good one
        with replacing(chart) as f:
            fig.savefig(f, dpi=100, format=chart.suffix[1:].lower())
    except OSError as exc:  # name the chart's folder, not the temporary file beside it
        why = exc.strerror or str(exc)
        where = "" if chart.parent.is_dir() else f"; its folder {chart.parent} is gone"
        raise PlotError(f"--plot {path}: could not write it ({why}{where})") from exc
    except ValueError as exc:
        raise PlotError(f"--plot {path}: could not write it ({exc})") from exc
    finally:
        plt.close(fig)
    return chart
