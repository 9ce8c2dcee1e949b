"""Topgrad-numpy against PyTorch eager at many shapes per op: a re-check of known speed and memory cliffs.

    python benchmarks/shapes.py [--filter REGEX] [--repeat N] [--warmup N] [--mem] [--json PATH] [--tiny]

vs_torch.py times each op at ONE size, the one it has in the example models. An op can be fine
there and slow or memory-hungry elsewhere: at batch 1, for a 1024-wide LayerNorm, a large
transpose, a 7x7 convolution. This script times one op's forward + backward at about sixty such
shapes (`_shape_cases.py`: every shape a sweep of 261 found Topgrad much worse than PyTorch at,
two from a later sweep, and a few per op where it was fine), the way vs_torch.py times its `op`
rows: same inputs in one process, alternating samples, one thread for both (PyTorch's pool,
numpy's BLAS, Topgrad-numpy's own), process CPU time, medians, on the numpy backend whatever
$TOPGRAD_BACKEND says (as vs_torch.py). `--mem` adds the peak memory of
one call, each case in a child process of its own, measured as vs_torch.py does (see
`_measure.py`). The `audit` column is what the sweep measured before the fixes that followed
it, to compare against.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import _args  # noqa: E402
import _measure  # noqa: E402
import _shape_cases  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import vs_torch  # noqa: E402
from _ops import OpCase  # noqa: E402
from _provenance import git_commit  # noqa: E402
from _shape_cases import ShapeCase, Sizes  # noqa: E402

CLOCK = "cpu"  # one thread per framework: process CPU time leaves out waits for a busy machine's cores
DIFF_TOL = 1e-3  # relative forward difference above which the two frameworks disagree
MIB = 1024.0 * 1024.0


@dataclass
class Row:
    """One case's results; memory is None without --mem."""

    op: str
    name: str
    shape: str
    topgrad_ms: float
    torch_ms: float
    ratio: float
    ratio_best: float
    audit: str
    max_diff: float
    topgrad_mib: float | None = None
    torch_mib: float | None = None
    mem_ratio: float | None = None
    samples: dict[str, list[float]] = field(default_factory=dict)


# ---- cases ---------------------------------------------------------------------------------------
def select(pattern: str) -> list[ShapeCase]:
    """The cases whose name matches `pattern` (a regular expression, case-insensitive), in table order."""
    found = [c for c in _shape_cases.CASES if re.search(pattern, c.name, re.IGNORECASE)]
    if not found:
        raise SystemExit(f"no case matches {pattern!r}; the names are in benchmarks/_shape_cases.py")
    return found


def by_name(name: str) -> ShapeCase:
    """The case called exactly `name` (how a memory child finds its case)."""
    return next(c for c in _shape_cases.CASES if c.name == name)


def relative_diff(case: OpCase) -> float:
    """Largest forward difference between the frameworks, relative to the output's scale (a sanity check)."""
    with torch.no_grad():
        ref = case.th_to_tg(case.th_fn(*case.th_leaves).numpy())
    got = case.tg_fn(*case.tg_leaves).numpy()
    return float(np.max(np.abs(got - ref), initial=0.0) / max(1.0, float(np.max(np.abs(ref), initial=0.0))))


# ---- timing in this process, memory in a child per case ----------------------------------------------
def time_case(spec: ShapeCase, sizes: Sizes, repeat: int, warmup: int) -> Row:
    """Median CPU ms per forward + backward in each framework, interleaved (`_measure.time_interleaved`)."""
    case = spec.build(sizes)
    diff = relative_diff(case)
    t = _measure.time_interleaved(case.run_topgrad, case.run_torch, repeat, warmup, clock=CLOCK)
    tg, th = t.median("topgrad") * 1e3, t.median("torch") * 1e3
    return Row(spec.op, spec.name, case.shape, tg, th, tg / th, t.best("topgrad") / t.best("torch"),
               spec.audit, diff, samples={"topgrad": t.topgrad, "torch": t.torch})


def memory_child(name: str, tiny: bool) -> None:
    """Entry point of a child: print [topgrad bytes, torch bytes], the peak rise of one call, as JSON."""
    vs_torch.use_numpy_backend()
    _measure.force_mmap()
    vs_torch.set_threads(1)
    case = by_name(name).build(Sizes(tiny))
    for _ in range(2):
        case.run_topgrad()
        case.run_torch()
    print(json.dumps([_measure.peak_rss_bytes(case.run_topgrad), _measure.peak_rss_bytes(case.run_torch)]))


def measure_memory(name: str, tiny: bool) -> tuple[int, int] | None:
    """Run `memory_child` for one case in a fresh process (so no other case's memory is in its heap)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", name]
    cmd += ["--tiny"] if tiny else []
    res = subprocess.run(cmd, capture_output=True, text=True, check=False,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    if res.returncode != 0:
        print(f"warning: memory of {name!r} failed:\n{res.stderr[-2000:]}", file=sys.stderr)
        return None
    tg, th = json.loads(res.stdout.strip().splitlines()[-1])
    return tg, th


def add_memory(row: Row, mem: tuple[int, int] | None) -> None:
    """Fill in a row's memory columns (left empty where the child failed)."""
    if mem is not None:
        row.topgrad_mib, row.torch_mib = mem[0] / MIB, mem[1] / MIB
        row.mem_ratio = mem[0] / mem[1] if mem[1] else None


# ---- the report ------------------------------------------------------------------------------------
def header(args: argparse.Namespace) -> str:
    """Machine, versions, BLAS, threads, environment, commit and command: where the numbers came from."""
    pins = [k for k in vs_torch.BLAS_PINS if k in os.environ]
    return "\n".join([
        "# Topgrad-numpy vs PyTorch eager at many shapes (benchmarks/shapes.py)",
        *vs_torch.host_lines(),
        f"- threads: 1 for both (Topgrad-numpy's own: {vs_torch.topgrad_threads()}); repeat {args.repeat}, "
        f"warm-up {args.warmup}; clock: {vs_torch.CLOCK_NAMES[CLOCK]}{'; tiny sizes' if args.tiny else ''}",
        f"- environment: {vs_torch.environment()}; repository at {git_commit()}"
        + (f" (note: vs_torch.py re-runs itself without {', '.join(pins)})" if pins else ""),
        f"- command: python benchmarks/shapes.py {' '.join(args.argv)}".rstrip(),
    ])


def table(rows: list[Row], mem: bool) -> str:
    """The markdown table, one row per case, in the order of `_shape_cases.CASES` (grouped by op)."""
    head = "| case | topgrad ms | torch ms | ratio |"
    head += " topgrad MiB | torch MiB | mem ratio |" if mem else ""
    head += " audit |"
    lines = [head, "|---|" + "--:|" * (head.count("|") - 3) + "---|"]
    cell = vs_torch.cell
    for r in rows:
        cells = [r.name, cell(r.topgrad_ms, ".3f"), cell(r.torch_ms, ".3f"), cell(r.ratio)]
        cells += [cell(r.topgrad_mib), cell(r.torch_mib), cell(r.mem_ratio)] if mem else []
        lines.append("| " + " | ".join([*cells, r.audit]) + " |")
    return "\n".join(lines)


NOTES = """\
Notes: one op's forward + backward per call; times are medians per call, `ratio` = topgrad/torch (< 1:
Topgrad faster). Memory (--mem): rise of the resident high-water mark during one call over the resident
set before it, in a child process per case where glibc maps each block >= 4 KiB on its own (see
_measure.py); inputs are in the baseline. `audit` = topgrad/torch that a sweep (of 261 shapes, or a
later one of 16) measured on a 2-core Xeon before the fixes that followed (blank: within 1.5x in time
and 1.3x in memory)."""


# ---- driver ----------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0], allow_abbrev=False)
    p.add_argument("--filter", default="", help="only the cases whose name matches this regular expression")
    p.add_argument("--repeat", type=_args.positive_int, default=None,
                   help="timed samples per framework (default 15, tiny 1)")
    p.add_argument("--warmup", type=_args.count, default=None, help="untimed calls first (default 3, tiny 0)")
    p.add_argument("--mem", action="store_true", help="also the peak memory of one call (a child per case)")
    p.add_argument("--json", type=_args.output_file, default=None,
                   help="also write the rows (with raw samples) to this file")
    p.add_argument("--tiny", action="store_true", help="every size cut to at most 4 (the smoke test)")
    p.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.repeat = args.repeat if args.repeat is not None else (1 if args.tiny else 15)
    try:
        re.compile(args.filter)
    except re.error as exc:
        p.error(f"--filter {args.filter!r} is not a regular expression: {exc}")
    args.warmup = args.warmup if args.warmup is not None else (0 if args.tiny else 3)
    return args


def run(args: argparse.Namespace, out: Callable[[str], None] = print) -> list[Row]:
    """Measure every selected case and print the report; returns the rows."""
    vs_torch.use_numpy_backend()
    vs_torch.set_threads(1)
    out(header(args))
    specs = select(args.filter)
    rows = []
    for i, spec in enumerate(specs, 1):
        print(f"[{i}/{len(specs)}] {spec.name}", file=sys.stderr, flush=True)
        row = time_case(spec, Sizes(args.tiny), args.repeat, args.warmup)
        if args.mem:
            add_memory(row, measure_memory(spec.name, args.tiny))
        rows.append(row)
    out("")
    out(table(rows, args.mem))
    out("")
    out(NOTES)
    for r in rows:
        if r.max_diff > DIFF_TOL:
            out(f"warning: {r.name}: forward outputs differ by up to {r.max_diff:.2e} (relative)")
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, or (with the hidden --memory-child NAME) one case's memory measurement."""
    args = parse_args(argv)
    if args.memory_child is not None:
        memory_child(args.memory_child, args.tiny)
    else:
        run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
