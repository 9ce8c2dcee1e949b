"""Where the time goes: `with topgrad.profile() as p:` records every op; `print(p)` shows a table.

Per op type it counts calls, forward and backward seconds and the bytes the ops saved for
backward, added up over the calls: the "saved (sum over calls)" column grows with every step,
it is not memory held at once (`t.graph()` gives that, each array once). Times are measured
around each op's `forward`/`backward` call, so the engine's own bookkeeping (gradient
accumulation, graph walk) is the difference to the wall time.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from topgrad import registry
from topgrad.arrays import nbytes
from topgrad.graph import held_arrays, human_bytes
from topgrad.observe import Observer, observing
from topgrad.op import Op


@dataclass
class OpStats:
    """What the profiler recorded for one op type."""

    calls: int = 0
    forward_s: float = 0.0
    backward_calls: int = 0
    backward_s: float = 0.0
    saved_bytes: int = 0  # what each call saved for backward, summed over the calls

    @property
    def total_s(self) -> float:
        """Forward plus backward seconds: the column the report sorts by."""
        return self.forward_s + self.backward_s


class Profile(Observer):
    """Per-op-type statistics, filled while registered as an observer."""

    def __init__(self) -> None:
        self.stats: dict[str, OpStats] = {}
        self.wall_s = 0.0

    def after_forward(
        self, op: Op, args: tuple[Any, ...], params: dict[str, Any], result: Any, seconds: float
    ) -> None:
        """Count the call, its time and the bytes it saved for backward."""
        s = self._row(op)
        s.calls += 1
        s.forward_s += seconds
        s.saved_bytes += sum(nbytes(array) for _, array in held_arrays(op))  # as graph() counts them

    def after_backward(self, op: Op, grad: Any, grads: tuple[Any, ...], seconds: float) -> None:
        """Count the backward call and its time."""
        s = self._row(op)
        s.backward_calls += 1
        s.backward_s += seconds

    def _row(self, op: Op) -> OpStats:
        name = type(op).__name__
        row = self.stats.get(name)
        if row is None:
            row = self.stats[name] = OpStats()
        return row

    @property
    def op_s(self) -> float:
        """Seconds spent inside op forward and backward calls."""
        return sum(s.total_s for s in self.stats.values())

    def sorted(self) -> list[tuple[str, OpStats]]:
        """Rows by total time, slowest first."""
        return sorted(self.stats.items(), key=lambda kv: -kv[1].total_s)

    def __str__(self) -> str:
        return format_profile(self)

    def __repr__(self) -> str:
        return f"<Profile: {len(self.stats)} op types, {self.op_s * 1e3:.1f} ms in ops>"


@contextlib.contextmanager
def profile() -> Iterator[Profile]:
    """Record every op run inside the block; the yielded `Profile` prints as a table. The backend
    is loaded first, so that its one-time import is not counted as time outside the ops (an error
    loading it surfaces at the first op, as it would without a profile)."""
    with contextlib.suppress(Exception):
        registry.get_backend()
    p = Profile()
    start = time.perf_counter()
    try:
        with observing(p):
            yield p
    finally:
        p.wall_s += time.perf_counter() - start


_SAVED_HEADER = "saved (sum over calls)"  # each call's saved arrays added up: not memory held at once


def format_profile(p: Profile) -> str:
    """The table `print(profile)` shows, sorted by time."""
    rows = p.sorted()
    width = max([len("op"), *(len(name) for name, _ in rows)])
    total = p.op_s or 1.0
    saved_w = len(_SAVED_HEADER)
    head = (f"{'op':<{width}} {'calls':>7} {'forward ms':>11} {'backward ms':>12} {'total ms':>10} "
            f"{'%':>6}  {_SAVED_HEADER:>{saved_w}}")
    lines = [head, "-" * len(head)]
    for name, s in rows:
        lines.append(
            f"{name:<{width}} {s.calls:>7} {s.forward_s * 1e3:>11.2f} {s.backward_s * 1e3:>12.2f} "
            f"{s.total_s * 1e3:>10.2f} {100 * s.total_s / total:>6.1f}  "
            f"{human_bytes(s.saved_bytes):>{saved_w}}"
        )
    lines.append("-" * len(head))
    fwd = sum(s.forward_s for _, s in rows)
    bwd = sum(s.backward_s for _, s in rows)
    saved = sum(s.saved_bytes for _, s in rows)
    lines.append(
        f"{'ops':<{width}} {sum(s.calls for _, s in rows):>7} {fwd * 1e3:>11.2f} {bwd * 1e3:>12.2f} "
        f"{(fwd + bwd) * 1e3:>10.2f} {100.0 if rows else 0.0:>6.1f}  {human_bytes(saved):>{saved_w}}"
    )
    earlier = sum(max(s.backward_calls - s.calls, 0) for _, s in rows)
    if earlier:  # `loss.backward()` alone in the block: its ops' forwards ran before it
        lines.append(f"calls are forward calls; backward ms also holds {earlier} backward "
                     f"call{'s' if earlier > 1 else ''} of ops made before the block")
    if p.wall_s:
        lines.append(f"wall time {p.wall_s * 1e3:.2f} ms; outside ops (engine, Python, data): "
                     f"{max(p.wall_s - fwd - bwd, 0.0) * 1e3:.2f} ms")
    if not rows:  # an empty table with "0.0 %" said nothing
        lines.append("(no op ran in the block)")
    return "\n".join(lines)
