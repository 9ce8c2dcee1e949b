"""Progress on stderr: of a training epoch (tqdm's bar on a terminal, plain lines elsewhere)
and of a download (one line redrawn in place on a terminal, one line at its end elsewhere).

A bar redraws itself with carriage returns; written to a log file or a CI console (stderr not
a terminal) every redraw stays in it. There a plain line is printed instead each time another
quarter of the epoch is done; the epoch's own line on stdout marks its end.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from types import TracebackType
from typing import Any, TextIO

from tqdm import tqdm

PLAIN_STEPS = 4  # plain lines per epoch, at most: one at each quarter (the last is the epoch's own line)
REDRAW_S = 0.1  # a download's line on a terminal is redrawn at most ten times a second
UNSIZED = (80, 24)  # columns and lines assumed of a terminal that reports 0, as shutil.get_terminal_size does


def is_terminal(stream: TextIO) -> bool:
    """Whether `stream` is a terminal (False for a closed stream or one without `isatty`)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def reported_size(stream: TextIO) -> os.terminal_size | None:
    """The size the terminal behind `stream` reports, 0 columns and lines for one not sized yet
    (`script` without a terminal of its own, `docker exec -t` before its first resize); None where
    it cannot be asked (not a terminal, no file descriptor)."""
    try:
        return os.get_terminal_size(stream.fileno())
    except (AttributeError, ValueError, OSError):
        return None


def bar_size(stream: TextIO) -> dict[str, Any]:
    """tqdm's size arguments for a bar on `stream`: its terminal's size, followed as it changes; on a
    terminal that reports 0 columns or lines (where tqdm draws nothing at all) a fixed 80 by 24 for
    the zeros, less one each, as tqdm leaves the last column and line free."""
    size = reported_size(stream)
    if size is None or (size.columns and size.lines):
        return {"dynamic_ncols": True}
    return {"ncols": (size.columns or UNSIZED[0]) - 1, "nrows": (size.lines or UNSIZED[1]) - 1}


class EpochProgress:
    """Images done, the running mean loss and the throughput of one epoch: a tqdm bar when stderr
    is a terminal, else a plain line on stderr at each quarter; nothing when not `enabled`.
    A context manager: the bar is closed (and erased) on the way out, Ctrl-C included, so that a
    message after it starts on a line of its own."""

    def __init__(self, total: int, desc: str, enabled: bool = True) -> None:
        self.total, self.desc, self.done = total, desc, 0
        enabled = enabled and sys.stderr is not None  # None: no stderr at all (pythonw)
        self.plain = enabled and not is_terminal(sys.stderr)
        self.began = time.perf_counter()
        self.shown = 0  # quarters reported so far (plain lines)
        self.bar = (tqdm(total=total, desc=desc, unit="img", leave=False, **bar_size(sys.stderr))
                    if enabled and not self.plain else None)

    def update(self, images: int, loss: float, last: bool = False) -> None:
        """`images` more are done; `loss` is the mean loss so far; `last`: the epoch's last step."""
        self.done += images
        if self.bar is not None:
            self.bar.update(images)
            self.bar.set_postfix(loss=f"{loss:.4f}", refresh=last)
            return
        quarter = self.done * PLAIN_STEPS // max(1, self.total)
        if self.plain and self.shown < quarter < PLAIN_STEPS:
            self.shown = quarter
            rate = self.done / max(time.perf_counter() - self.began, 1e-9)
            with contextlib.suppress(OSError, ValueError):  # progress is not worth stopping a run for
                print(f"{self.desc}: {100 * self.done // self.total}% ({self.done:,}/{self.total:,} img), "
                      f"loss {loss:.4f}, {rate:,.0f} img/s", file=sys.stderr, flush=True)

    def close(self) -> None:
        """Erase the bar (nothing to do for plain lines)."""
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> EpochProgress:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def byte_size(n: int) -> str:
    """512 B, 35.0 kB, 9.9 MB: powers of 1000, as download sizes are usually given."""
    if n < 1000:
        return f"{n} B"
    scaled, unit = n / 1000, "kB"
    for bigger in ("MB", "GB", "TB"):
        if scaled < 999.95:  # else it would print as 1000.0
            break
        scaled, unit = scaled / 1000, bigger
    return f"{scaled:.1f} {unit}"


class DownloadProgress:
    """Bytes received of one download, of `total` (the Content-Length; None when the server sends
    none, then bytes alone are shown): on a terminal one line redrawn in place, at most ten times a
    second, and ended with a newline; elsewhere one plain line at the end (no carriage returns in a
    log); nothing when not `enabled`. A context manager: the last line says ", not kept" when the
    block fails (Ctrl-C included), since the partial file is then removed."""

    def __init__(self, name: str, total: int | None, enabled: bool = True) -> None:
        self.name, self.total, self.done = name, total, 0
        self.enabled = enabled and sys.stderr is not None  # None: no stderr at all (pythonw)
        self.terminal = self.enabled and is_terminal(sys.stderr)
        self.drawn_at, self.width = 0.0, 0
        if self.terminal:
            self._draw()

    def line(self) -> str:
        """The line shown: "name: 17.5 kB / 35.0 kB (50%)", or "name: 17.5 kB" without a total."""
        if self.total is None:
            return f"{self.name}: {byte_size(self.done)}"
        percent = 100 * self.done // self.total if self.total else 100
        return f"{self.name}: {byte_size(self.done)} / {byte_size(self.total)} ({percent}%)"

    def update(self, received: int) -> None:
        """`received` more bytes have arrived; the line is redrawn if the last redraw is old enough."""
        self.done += received
        if self.terminal and time.monotonic() - self.drawn_at >= REDRAW_S:
            self._draw()

    def close(self, kept: bool = True) -> None:
        """The final line, ended with a newline (after the redrawn one on a terminal)."""
        if self.enabled:
            self._draw("" if kept else ", not kept", "\n")
            self.enabled = self.terminal = False  # said once

    def _draw(self, suffix: str = "", end: str = "") -> None:
        """Write the line; on a terminal over the one drawn before, padded to cover all of it (a
        size's unit can shorten the line: 999.9 kB, then 1.0 MB)."""
        text = self.line() + suffix
        if self.terminal:
            self.width = max(self.width, len(text))
            text = "\r" + text.ljust(self.width)
        self.drawn_at = time.monotonic()
        with contextlib.suppress(OSError, ValueError):  # progress is not worth stopping a download for
            sys.stderr.write(text + end)
            sys.stderr.flush()

    def __enter__(self) -> DownloadProgress:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close(kept=error is None)
