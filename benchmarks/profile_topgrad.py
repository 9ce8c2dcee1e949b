"""Where a Topgrad training step spends its time: per op type (forward / backward), engine, optimizer.

    python benchmarks/profile_topgrad.py [--models deepconv] [--steps 5] [--cprofile] [--torch]
                                         [--prototype [ops]]

Every op class's forward and backward is wrapped to sum its process CPU time; what remains
of the step is the engine (graph walk, gradient accumulation), the loss and the optimizer
(its own row, in the `total ms` column). `--cprofile` adds the top functions by own time;
`--torch` adds PyTorch's own profiler table. Always the numpy backend, as vs_torch.py.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import _args  # noqa: E402
import topgrad  # noqa: E402
import vs_torch  # noqa: E402


class OpTimer:
    """Wraps `forward` and `backward` of every op class of the selected backend's table to sum
    their process CPU time (robust on a shared machine) and calls, per op type and phase."""

    def __init__(self) -> None:
        self.seconds: dict[tuple[str, str], float] = defaultdict(float)
        self.calls: dict[tuple[str, str], int] = defaultdict(int)
        self._saved: list[tuple[type, str, Any]] = []

    def __enter__(self) -> OpTimer:
        table = topgrad.get_backend().ops
        for name in table.names():
            cls = getattr(table, name)
            for phase, method in (("fwd", "forward"), ("bwd", "backward")):
                self._saved.append((cls, method, cls.__dict__.get(method)))
                setattr(cls, method, self._wrap(name, phase, getattr(cls, method)))
        return self

    def __exit__(self, *exc: object) -> None:
        for cls, method, original in reversed(self._saved):
            if original is None:
                delattr(cls, method)
            else:
                setattr(cls, method, original)
        self._saved.clear()

    def _wrap(self, name: str, phase: str, fn: Any) -> Any:
        def timed(op: Any, *args: Any, **kwargs: Any) -> Any:
            start = time.process_time()
            try:
                return fn(op, *args, **kwargs)
            finally:
                self.seconds[(name, phase)] += time.process_time() - start
                self.calls[(name, phase)] += 1

        return timed


def breakdown(case: vs_torch.Case, steps: int) -> str:
    """A markdown table of per-op-type CPU time per step, and the rest of the step. The steps
    alternate with PyTorch's, as in the benchmark: alone, a numpy step's freed arrays go back
    to the kernel and page-fault in again (~30 ms a deepconv step on a Zen 4 VM), while
    between PyTorch steps glibc keeps them."""
    for _ in range(2):
        case.run_topgrad()
        case.run_torch()
    tg_seconds = th_seconds = 0.0
    with OpTimer() as timer:
        for _ in range(steps):
            start = time.process_time()
            case.run_topgrad()
            middle = time.process_time()
            case.run_torch()
            tg_seconds += middle - start
            th_seconds += time.process_time() - middle
    total, th_total = tg_seconds / steps * 1e3, th_seconds / steps * 1e3
    per_kind: dict[str, float] = defaultdict(float)
    for (k, _), sec in timer.seconds.items():
        per_kind[k] += sec
    kinds = sorted(per_kind, key=lambda k: -per_kind[k])
    lines = [f"### {case.name}: {total:.1f} ms CPU per step (PyTorch: {th_total:.1f} ms)", "",
             "| op | calls/step | fwd ms | bwd ms | total ms | share |", "|---|---|---|---|---|---|"]
    ops_ms = 0.0
    for k in kinds:
        f, b = (timer.seconds[(k, p)] / steps * 1e3 for p in ("fwd", "bwd"))
        ops_ms += f + b
        calls = timer.calls[(k, "fwd")] // steps
        lines.append(f"| {k} | {calls} | {f:.2f} | {b:.2f} | {f + b:.2f} | {(f + b) / total:.0%} |")
    rest = total - ops_ms  # not split into forward and backward: only its total is known
    lines.append(f"| engine + loss + optimizer | | | | {rest:.2f} | {rest / total:.0%} |")
    return "\n".join(lines)


def top_functions(case: vs_torch.Case, steps: int, limit: int = 18) -> str:
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(steps):
        case.run_topgrad()
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(limit)
    return buf.getvalue()


def torch_table(case: vs_torch.Case, steps: int, limit: int = 15) -> str:
    from torch.profiler import ProfilerActivity, profile

    case.run_torch()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            case.run_torch()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=limit)


def main(argv: list[str] | None = None) -> int:
    """Profile each chosen model's training step and print its tables."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    models = vs_torch._models_topgrad.MODELS
    p.add_argument("--models", default="all", help=_args.names_help(models))
    p.add_argument("--steps", type=_args.positive_int, default=5,
                   help="timed training steps per model, each beside a PyTorch step (default 5)")
    p.add_argument("--batch", type=_args.positive_int, default=128, help="training-step batch (default 128)")
    p.add_argument("--threads", type=_args.positive_int, default=1,
                   help="threads for both frameworks (default 1)")
    p.add_argument("--cprofile", action="store_true", help="also the top functions by own time (cProfile)")
    p.add_argument("--torch", action="store_true", help="also PyTorch's profiler table of its step")
    p.add_argument("--prototype", nargs="?", const="all", default="",
                   help="switch on PERF_NOTES.md's prototypes first, as vs_torch.py --prototype does: ops "
                   "(the only kind left), all or none; a bare --prototype is all")
    args = p.parse_args(argv)
    names = _args.names(p, "--models", args.models, models)
    prototypes = _args.names(p, "--prototype", args.prototype, vs_torch.PROTOTYPES)
    vs_torch.use_numpy_backend()
    vs_torch.set_threads(args.threads)
    if prototypes:
        vs_torch.use_prototypes()
    for name in names:
        case = vs_torch.model_case(name, args.batch, 0)
        print(breakdown(case, args.steps), "\n")
        if args.cprofile:
            print(top_functions(case, args.steps))
        if args.torch:
            print(torch_table(case, args.steps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
