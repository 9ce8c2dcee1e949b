"""The progress of a training epoch on stderr: tqdm's bar on a terminal, plain lines elsewhere.

A bar redraws itself with carriage returns; written to a log file or a CI console (stderr not
a terminal) every redraw stays in it. There a plain line is printed instead each time another
quarter of the epoch is done; the epoch's own line on stdout marks its end.
"""

from __future__ import annotations

import contextlib
import sys
import time
from types import TracebackType
from typing import TextIO

from tqdm import tqdm

PLAIN_STEPS = 4  # plain lines per epoch, at most: one at each quarter (the last is the epoch's own line)


def is_terminal(stream: TextIO) -> bool:
    """Whether `stream` is a terminal (False for a closed stream or one without `isatty`)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


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
        self.bar = (tqdm(total=total, desc=desc, unit="img", leave=False, dynamic_ncols=True)
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
