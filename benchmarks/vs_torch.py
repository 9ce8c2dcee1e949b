"""Topgrad-numpy against PyTorch eager on this CPU: training steps, single ops, memory, the floor.

    python benchmarks/vs_torch.py [--quick] [--repeat N] [--models mlp,conv] [--ops Add,Linear]
                                  [--threads 1] [--clock cpu|wall] [--batch 128] [--no-memory]
                                  [--keep-freed-memory] [--keep-blas-env]
                                  [--prototype [ops]] [--json out.json]

Each row runs the same computation from the same numbers in both frameworks, in one process,
alternating Topgrad and PyTorch samples, with the same number of threads (PyTorch's intra-op
pool and numpy's BLAS pool). Rows of the `model` kind are one training step (forward, loss,
backward, SGD update) at batch 128; rows of the `op` kind are one op's forward + backward.
Times are medians after warm-up, in process CPU time with one thread (robust on a shared
machine), else elapsed time; `ratio` is topgrad/torch of the medians, `best` of the fastest
samples. `floor` is the step's GEMM/conv FLOPs (forward + 2x backward) over the GEMM rate of
numpy at one large matmul: no implementation can beat it. Peak memory: see `_measure.py`.
`--prototype` measures the change PERF_NOTES.md still prototypes (`_prototype_ops.py`).

BLAS kernels: where OPENBLAS_CORETYPE or OPENBLAS_L2_SIZE is set (pins for old OpenBLAS builds),
the script re-runs itself without both, so numpy's current OpenBLAS picks this CPU's kernels, as
a user's install would; `--keep-blas-env` measures with the pins. The header prints the kernel
family threadpoolctl reports. Only this benchmark does that: tests and CI keep the environment.

Backend: always numpy (this script and shapes.py, conv_layers.py, profile_topgrad.py and
ab_prototype.py, which use its helpers, compare the CPU backend with PyTorch; gpu.py measures
triton). A `$TOPGRAD_BACKEND` naming another backend is ignored, with a note on stderr and in
the header.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

BLAS_PINS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
"""Variables that pin OpenBLAS to an older kernel and cache model (set on some machines for old
OpenBLAS builds). A fair comparison with a current numpy runs without them: the script re-runs
itself with both removed unless --keep-blas-env is given (never in tests or CI, only here)."""
_REMOVED_ENV = os.environ.pop("TOPGRAD_BENCH_REMOVED_BLAS_ENV", "")


def _reexec_without_blas_pins() -> None:
    """Replace this process by itself without BLAS_PINS, before numpy loads OpenBLAS. The flag is
    looked for spelled out, as the parser (allow_abbrev=False) accepts it: an abbreviation such
    as --keep-blas re-runs, and the parser then refuses it."""
    if "--keep-blas-env" in sys.argv[1:] or not any(k in os.environ for k in BLAS_PINS):
        return
    removed = ",".join(f"{k}={os.environ[k]}" for k in BLAS_PINS if k in os.environ)
    env = {k: v for k, v in os.environ.items() if k not in BLAS_PINS}
    env["TOPGRAD_BENCH_REMOVED_BLAS_ENV"] = removed
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]], env)


if __name__ == "__main__":
    _reexec_without_blas_pins()

import _args  # noqa: E402
import _measure  # noqa: E402
import _models_topgrad  # noqa: E402
import _models_torch  # noqa: E402
import _ops  # noqa: E402
import _steps  # noqa: E402
import numpy as np  # noqa: E402
import topgrad  # noqa: E402
import torch  # noqa: E402
from _provenance import git_commit  # noqa: E402
from topgrad import Tensor  # noqa: E402

CLOCK_NAMES = {"cpu": "process CPU time (user + system)", "wall": "elapsed (wall) time"}
TARGET_STEP, TARGET_OP, TARGET_MEM = 1.3, 2.0, 1.5
MATCH_TOL = 1e-3  # relative logit difference above which a model and its mirror disagree


# ---- cases: a callable per framework, plus what the table needs to know ------------------------
@dataclass
class Case:
    """One row to measure: a Topgrad callable and a PyTorch callable doing the same work."""

    kind: str
    name: str
    shape: str
    run_topgrad: Callable[[], Any]
    run_torch: Callable[[], Any]
    flops: int = 0
    max_diff: float = 0.0
    source: str = ""


def _forward_diff(tgm: _models_topgrad.TopgradModel, thm: torch.nn.Module, x: np.ndarray) -> float:
    """Largest logit difference between the two frameworks, relative to the logits' scale."""
    with topgrad.no_grad(), torch.no_grad():
        a = tgm.forward(Tensor(x)).numpy()
        b = thm(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy()
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))


def load_models(name: str, seed: int, x: np.ndarray) -> tuple[_models_topgrad.TopgradModel, torch.nn.Module]:
    """The example model (when installed and its PyTorch mirror agrees), else the benchmark's copy."""
    tgm = _models_topgrad.from_examples(name, seed)
    if tgm is not None:
        thm = _models_torch.build(name, tgm.arrays()).train()
        diff = _forward_diff(tgm, thm, x[:8])
        if diff <= MATCH_TOL:
            return tgm, _models_torch.build(name, tgm.arrays()).train()
        print(f"warning: topgrad_examples.models.{name} differs from its PyTorch mirror by {diff:.2e}; "
              "benchmarking the copy in benchmarks/_models_topgrad.py instead", file=sys.stderr)
    tgm = _models_topgrad.build(name, seed)
    return tgm, _models_torch.build(name, tgm.arrays()).train()


def model_case(name: str, batch: int, seed: int) -> Case:
    """A training step of model `name`: forward, cross-entropy, backward, SGD update."""
    x, labels = _steps.images(batch, seed)
    tgm, thm = load_models(name, seed, x)
    tg_x = Tensor(x, requires_grad=False)  # an input batch, as in PyTorch: no gradient
    th_x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    tg_step, th_step = _steps.training_steps(tgm, thm, tg_x, th_x, labels)

    diff = _forward_diff(tgm, thm, x)
    params = {id(p) for p in tgm.params.values()}
    flops = _measure.count_flops(lambda: tgm.forward(tg_x), params).total
    return Case("model", name, f"batch {batch}", tg_step, th_step, flops, diff, tgm.source)


def op_case(name: str, dims: _ops.Dims, seed: int) -> Case:
    """Forward + backward of one op."""
    c = _ops.build(name, dims, seed)
    flops = _measure.count_flops(lambda: c.tg_fn(*c.tg_leaves)).total
    return Case("op", name, c.shape, c.run_topgrad, c.run_torch, flops, c.max_abs_diff())


def build_cases(models: list[str], ops: list[str], batch: int, tiny: bool, seed: int) -> list[Case]:
    dims = _ops.Dims.tiny() if tiny else _ops.Dims(b=batch)
    return [model_case(m, batch, seed) for m in models] + [op_case(o, dims, seed) for o in ops]


# ---- backend, threads and environment ------------------------------------------------------------
BACKEND = "numpy"
"""The backend measured, whatever $TOPGRAD_BACKEND says (under it, triton ran with ratios of 300)."""


def use_numpy_backend() -> None:
    """Select BACKEND before anything is built, since these scripts compare it with PyTorch on the
    CPU; a note on stderr when $TOPGRAD_BACKEND named another (it is ignored, not an error)."""
    topgrad.set_backend(BACKEND)
    if ignored_backend():
        print(f"note: $TOPGRAD_BACKEND={ignored_backend()} is ignored: this benchmark measures the {BACKEND} "
              "backend (benchmarks/gpu.py measures triton)", file=sys.stderr, flush=True)


def ignored_backend() -> str:
    """The backend $TOPGRAD_BACKEND names where it is not BACKEND, else ""."""
    asked = os.environ.get("TOPGRAD_BACKEND", "")
    return asked if asked and asked != BACKEND else ""


_limits: Any = None


PROTOTYPES = ("ops",)
# the only kind left: the engine prototypes of PERF_NOTES.md are the engine now, #3 constant
# inputs as `Tensor(x, requires_grad=False)` with `Op.needs_grad` (630a6b1), #4 lean graph (debf223)


def keep_freed_memory() -> None:
    """The numpy backend's opt-in glibc setting (measured in PERF_NOTES.md, recommendation 7)."""
    try:
        from topgrad_numpy.tuning import keep_freed_memory as keep
    except ImportError:
        print("warning: topgrad_numpy.tuning.keep_freed_memory is missing; ignored", file=sys.stderr)
        return
    if not keep():
        print("warning: keep_freed_memory() had no effect here (not glibc?)", file=sys.stderr)


def use_prototypes() -> None:
    """Switch on the prototype of PERF_NOTES.md (`ops`: `_prototype_ops.py`), in this process."""
    import _prototype_ops

    _prototype_ops.install()


def set_threads(n: int) -> None:
    """The same thread count for PyTorch's pools and for Topgrad-numpy: its own threads (which,
    more than one, set numpy's BLAS to one thread), and with one, numpy's BLAS on one thread."""
    global _limits
    torch.set_num_threads(n)
    parallel = _topgrad_parallel()
    if parallel is not None:
        parallel.set_threads(n)  # first: at 1 it gives numpy's BLAS back the count it had
        if n > 1:
            return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        print("warning: threadpoolctl is missing (pip install threadpoolctl): numpy's BLAS threads "
              "are not limited", file=sys.stderr)
        return
    _limits = threadpool_limits(limits=n)


def numpy_blas() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (threadpoolctl missing)"
    found = [i for i in threadpool_info() if i.get("user_api") == "blas" and "numpy" in i.get("filepath", "")]
    info = found[0] if found else next((i for i in threadpool_info() if i.get("user_api") == "blas"), None)
    if info is None:
        return "none found"
    return (f"{info.get('internal_api')} {info.get('version')} ({info.get('architecture')} kernels, "
            f"{info.get('num_threads')} thread(s))")


def openblas_core() -> str:
    """The kernel family numpy's OpenBLAS runs (threadpoolctl's `architecture`), e.g. SkylakeX, Haswell."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (threadpoolctl missing)"
    found = [i.get("architecture") for i in threadpool_info() if i.get("internal_api") == "openblas"]
    return ", ".join(str(a) for a in found) or "no OpenBLAS loaded"


def torch_blas() -> str:
    cfg = torch.__config__.show()
    blas = next((p.split("=")[1] for p in cfg.replace(",", " ").split() if p.startswith("BLAS_INFO=")), "?")
    cap = next((line.split(":")[1].strip() for line in cfg.splitlines() if "CPU capability" in line), "?")
    return f"{blas} + oneDNN (CPU capability {cap}, {torch.get_num_threads()} thread(s))"


ENV_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
            "MKL_NUM_THREADS", "GLIBC_TUNABLES")


def environment() -> str:
    """The environment variables that change either framework's speed."""
    found = [f"{k}={os.environ[k]}" for k in ENV_VARS if k in os.environ]
    text = ", ".join(found) or "none of " + ", ".join(ENV_VARS)
    if _REMOVED_ENV:
        text += f" (removed for this run: {_REMOVED_ENV}; --keep-blas-env keeps them)"
    return text


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        return f"{names[0]} x {len(names)} logical cores" if names else platform.processor()
    except OSError:
        return platform.processor() or "unknown"


# ---- memory: measured in a child process (see _measure.py for why) -----------------------------
def memory_child(args: argparse.Namespace) -> None:
    """Entry point of the child: print {name: [topgrad rss, torch rss, topgrad tracemalloc]} as JSON."""
    use_numpy_backend()
    _measure.force_mmap()
    set_threads(args.threads)
    if args.prototype:
        use_prototypes()
    out: dict[str, list[int]] = {}
    for case in build_cases(args.models, args.ops, args.batch, args.tiny, args.seed):
        for _ in range(2):
            case.run_topgrad()
            case.run_torch()
        tg = _measure.peak_rss_bytes(case.run_topgrad)
        th = _measure.peak_rss_bytes(case.run_torch)
        out[f"{case.kind}:{case.name}"] = [tg, th, _measure.peak_tracemalloc_bytes(case.run_topgrad)]
    print(json.dumps(out))


def measure_memory(args: argparse.Namespace) -> dict[str, list[int]]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", "--threads", str(args.threads),
           "--models", ",".join(args.models) or "none", "--ops", ",".join(args.ops) or "none",
           "--batch", str(args.batch), "--seed", str(args.seed)]
    cmd += ["--tiny"] if args.tiny else []
    cmd += ["--keep-blas-env"] if args.keep_blas_env else []
    cmd += ["--prototype", ",".join(args.prototype)] if args.prototype else []
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if res.returncode != 0:
        print(f"warning: memory measurement failed:\n{res.stderr[-2000:]}", file=sys.stderr)
        return {}
    return json.loads(res.stdout.strip().splitlines()[-1])


# ---- the table ---------------------------------------------------------------------------------
@dataclass
class Row:
    kind: str
    name: str
    shape: str
    topgrad_ms: float
    torch_ms: float
    ratio: float
    ratio_best: float
    floor_ms: float | None
    topgrad_mib: float | None = None
    torch_mib: float | None = None
    mem_ratio: float | None = None
    topgrad_tracemalloc_mib: float | None = None
    max_diff: float = 0.0
    source: str = ""
    samples: dict[str, list[float]] = field(default_factory=dict)


def measure(case: Case, repeat: int, warmup: int, rate: float, clock: str = "wall") -> Row:
    t = _measure.time_interleaved(case.run_topgrad, case.run_torch, repeat, warmup, clock=clock)
    tg, th = t.median("topgrad") * 1e3, t.median("torch") * 1e3
    floor = case.flops / rate * 1e3 if case.flops else None
    return Row(case.kind, case.name, case.shape, tg, th, tg / th, t.best("topgrad") / t.best("torch"), floor,
               max_diff=case.max_diff, source=case.source,
               samples={"topgrad": t.topgrad, "torch": t.torch})


def add_memory(rows: list[Row], mem: dict[str, list[int]]) -> None:
    mib = 1024.0 * 1024.0
    for r in rows:
        got = mem.get(f"{r.kind}:{r.name}")
        if got:
            r.topgrad_mib, r.torch_mib, r.topgrad_tracemalloc_mib = got[0] / mib, got[1] / mib, got[2] / mib
            r.mem_ratio = got[0] / got[1] if got[1] else None


def cell(v: float | None, fmt: str = ".2f") -> str:
    """A table cell: the number, or a dash where there is none."""
    return "–" if v is None else format(v, fmt)


def table(rows: list[Row]) -> str:
    head = ("| kind | case | shape | topgrad ms | torch ms | ratio | best | floor ms | topgrad MiB | "
            "torch MiB | mem ratio |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r.kind} | {r.name} | {r.shape} | {cell(r.topgrad_ms, '.3f')} | {cell(r.torch_ms, '.3f')} | "
            f"{cell(r.ratio)} | {cell(r.ratio_best)} | {cell(r.floor_ms, '.3f')} | {cell(r.topgrad_mib)} | "
            f"{cell(r.torch_mib)} | {cell(r.mem_ratio)} |"
        )
    return "\n".join(lines)


def verdict(rows: list[Row]) -> list[str]:
    """The rows that miss the targets (step <= 1.3x, op <= 2x, memory <= 1.5x of PyTorch)."""
    out = []
    for r in rows:
        limit = TARGET_STEP if r.kind == "model" else TARGET_OP
        if r.ratio > limit:
            out.append(f"{r.kind} {r.name}: time ratio {r.ratio:.2f} > {limit}")
        if r.mem_ratio is not None and r.mem_ratio > TARGET_MEM and (r.torch_mib or 0) >= 0.5:
            out.append(f"{r.kind} {r.name}: memory ratio {r.mem_ratio:.2f} > {TARGET_MEM}")
    return out


def host_lines(backend_note: str = "") -> list[str]:
    """The report header's machine, versions and BLAS lines (shapes.py's header has them too)."""
    if ignored_backend():
        backend_note += f"; $TOPGRAD_BACKEND={ignored_backend()} ignored"
    return [
        f"- machine: {cpu_model()}, {platform.system()} {platform.release()}",
        f"- versions: python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}, "
        f"topgrad {topgrad.__version__} (backend {topgrad.get_backend().name}{backend_note})",
        f"- BLAS: numpy -> {numpy_blas()}; torch -> {torch_blas()}",
    ]


def header(args: argparse.Namespace, np_rate: float, th_rate: float) -> str:
    return "\n".join([
        *host_lines(f"; prototypes: {','.join(args.prototype)}" if args.prototype else ""),
        f"- OpenBLAS core type (threadpoolctl): {openblas_core()}",
        f"- threads: {args.threads} for both (Topgrad-numpy's own: {topgrad_threads()}); "
        f"repeat {args.repeat}, warm-up {args.warmup}, "
        f"batch {args.batch}; clock: {CLOCK_NAMES[args.clock]}",
        f"- GEMM rate ({args.gemm_size}^2 float32, {args.threads} thread(s), best of 3): "
        f"numpy {np_rate / 1e9:.1f} GFLOP/s, torch {th_rate / 1e9:.1f} GFLOP/s; floor = FLOPs / numpy rate",
        f"- environment: {environment()}; repository at {git_commit()}"
        f"{'; keep_freed_memory() on' if args.keep_freed_memory else ''}",
        f"- command: python benchmarks/vs_torch.py {' '.join(args.argv)}".rstrip(),
    ])


NOTES = """\
Notes: times are medians per call; `ratio` = topgrad/torch of medians (< 1: Topgrad faster), `best` =
ratio of the fastest samples (less sensitive to a busy machine). `floor` = GEMM/conv/attention FLOPs
(forward + 2x backward, no input gradient for the image batch) / numpy's GEMM rate. Memory: rise of
the resident high-water mark during one step/op call over the resident set before it, measured the
same way for both in a child process where glibc serves each block >= 4 KiB with its own mmap (so
freed memory leaves at once); parameters, inputs and warm-up state are in the baseline. PyTorch gets
NCHW tensors, Topgrad NHWC, with identical weights; the conv nets' input has one channel, so NCHW and
NHWC coincide and PyTorch runs them channels_last (oneDNN's NHWC convolutions; see conv_layers.py).
The image batch is a constant in both (no input gradient)."""


# ---- driver ------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring); names are checked here, before any measuring."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--repeat", type=_args.positive_int, default=None,
                   help="timed samples per framework (default 15, quick 5)")
    p.add_argument("--warmup", type=_args.count, default=None,
                   help="untimed calls first (default 3, quick 1)")
    p.add_argument("--models", default="all", help=_args.names_help(_models_topgrad.MODELS))
    p.add_argument("--ops", default="all", help=_args.names_help(_ops.OPS))
    p.add_argument("--quick", action="store_true", help="a fast smoke run: fewer samples, smaller GEMM probe")
    p.add_argument("--threads", type=_args.positive_int, default=1,
                   help="threads for both frameworks (default 1)")
    p.add_argument("--batch", type=_args.positive_int, default=128,
                   help="batch of the training steps and the op inputs (default 128; --tiny ops ignore it)")
    p.add_argument("--clock", choices=("cpu", "wall"), default=None,
                   help="cpu: process CPU time, robust on a shared machine (default with 1 thread); "
                   "wall: elapsed time (default with several threads)")
    p.add_argument("--seed", type=_args.count, default=0,
                   help="seed of the inputs and weights both frameworks get (default 0)")
    p.add_argument("--gemm-size", type=_args.positive_int, default=None,
                   help="side of the GEMM-rate probe (default 2048)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory child process")
    p.add_argument("--keep-freed-memory", action="store_true",
                   help="call topgrad_numpy.tuning.keep_freed_memory() first (glibc keeps freed memory; "
                   "process-wide, so PyTorch gets it too)")
    p.add_argument("--keep-blas-env", action="store_true",
                   help=f"keep {' and '.join(BLAS_PINS)} (by default the script re-runs itself without them, "
                   "so numpy's OpenBLAS picks this CPU's own kernels)")
    p.add_argument("--tiny", action="store_true", help="tiny op sizes (the smoke test)")
    p.add_argument("--json", type=_args.output_file, default=None,
                   help="also write the rows (with raw samples) to this file")
    p.add_argument("--prototype", nargs="?", const="all", default="",
                   help="measure PERF_NOTES.md's prototypes: ops (the only kind left), all or none; a bare "
                   "--prototype is all")
    p.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.models = _args.names(p, "--models", args.models, _models_topgrad.MODELS)
    args.ops = _args.names(p, "--ops", args.ops, _ops.OPS)
    args.prototype = _args.names(p, "--prototype", args.prototype, PROTOTYPES)
    args.repeat = args.repeat if args.repeat is not None else (5 if args.quick else 15)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    args.clock = args.clock or ("cpu" if args.threads == 1 else "wall")
    if args.clock == "cpu" and args.threads != 1:
        raise SystemExit("--clock cpu sums the CPU time of all threads: use --clock wall with --threads > 1")
    args.gemm_size = args.gemm_size if args.gemm_size is not None else (
        512 if args.tiny else 1024 if args.quick else 2048)
    return args


def gemm_rates(n: int, clock: str = "wall", threads: int = 1) -> tuple[float, float]:
    """numpy's and PyTorch's rate on an n x n GEMM, numpy's BLAS on `threads` threads for this
    measurement (Topgrad-numpy sets it to one while it runs threads of its own)."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n)).astype(np.float32) for _ in range(2))
    ta, tb = torch.from_numpy(a.copy()), torch.from_numpy(b.copy())
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        np_rate = _measure.gemm_rate(np.matmul, a, b, clock=clock)
    else:
        with threadpool_limits(limits=threads, user_api="blas"):
            np_rate = _measure.gemm_rate(np.matmul, a, b, clock=clock)
    return np_rate, _measure.gemm_rate(torch.mm, ta, tb, clock=clock)


def _topgrad_parallel() -> Any:
    """`topgrad_numpy.parallel`, or None for a topgrad-numpy without threads of its own."""
    try:
        from topgrad_numpy import parallel
    except ImportError:
        return None
    return parallel


def topgrad_threads() -> str:
    """Topgrad-numpy's own thread count, where it has one."""
    parallel = _topgrad_parallel()
    if parallel is None:
        return "n/a"
    n = parallel.threads()
    return f"{n}" + (" (and numpy's BLAS at 1)" if n > 1 else "")


def run(args: argparse.Namespace, out: Callable[[str], None] = print) -> list[Row]:
    """Measure every case and print the report; returns the rows."""
    use_numpy_backend()
    set_threads(args.threads)
    if args.keep_freed_memory:
        keep_freed_memory()
    if args.prototype:
        use_prototypes()
    np_rate, th_rate = gemm_rates(args.gemm_size, args.clock, args.threads)
    out(header(args, np_rate, th_rate))
    cases = build_cases(args.models, args.ops, args.batch, args.tiny, args.seed)
    rows = [measure(c, args.repeat, args.warmup, np_rate, args.clock) for c in cases]
    if not args.no_memory:
        add_memory(rows, measure_memory(args))
    out("")
    out(table(rows))
    out("")
    out(NOTES)
    for r in rows:
        if r.max_diff > 1e-3:
            out(f"warning: {r.kind} {r.name}: forward outputs differ by up to {r.max_diff:.2e}")
    sources = sorted({f"{r.name}: {r.source}" for r in rows if r.kind == "model"})
    if sources:
        out("Model definitions: " + "; ".join(sources))
    misses = verdict(rows)
    out("Targets missed: " + ("; ".join(misses) if misses else "none"))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.memory_child:
        memory_child(args)
    else:
        run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
