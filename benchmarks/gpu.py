"""Topgrad's Triton backend against PyTorch eager on one CUDA GPU: kernels and training steps.

    python benchmarks/gpu.py [--out benchmarks/GPU.md] [--only matmul,attention,norm,model]
                             [--models mlp,conv,deepconv,attention] [--batch 128]
                             [--repeat 15] [--warmup 3] [--smoke]

Rows, each the same computation from the same numbers in both frameworks, in one process:

* `matmul`: one 4096^3 float32 product, Topgrad's Linear forward kernel (`a @ b` under
  `no_grad`) against `torch.matmul`, in exact fp32 ("ieee") and in TF32
  (`topgrad_triton.set_precision("tf32")` against `torch.backends.cuda.matmul.allow_tf32`);
* `attention`: single-head attention forward + backward against
  `torch.nn.functional.scaled_dot_product_attention`, causal and not;
* `norm`: LayerNorm and BatchNorm (training mode) forward + backward against torch;
* `model`: one training step (forward, cross-entropy, backward, SGD) of each example model
  at batch 128 against its PyTorch mirror (`_models_torch.py`) holding identical weights.

Times are medians of interleaved samples (ABBA order) after warm-up calls that JIT-compile
the Triton kernels; a sample is CUDA-event time over enough calls to last ~20 ms, after a
`torch.cuda.synchronize()`. The "measured peak" of a precision is torch.matmul's best rate
at 4096^3 in it; the datasheet peak is printed where the card is known.

Without CUDA the script exits, unless `--smoke`: then every row runs at tiny sizes (batch 4,
and by default one sample of one call, no warm-up), on the CPU under Triton's interpreter
(TRITON_INTERPRET=1, set here before triton is imported), which proves the code paths and
nothing about speed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import _args  # noqa: E402
import _models_topgrad  # noqa: E402
import _models_torch  # noqa: E402
import _steps  # noqa: E402
import numpy as np  # noqa: E402
import topgrad  # noqa: E402
import topgrad_triton  # noqa: E402  (only `set_precision`; imports neither torch nor triton)
import torch  # noqa: E402
import torch.nn.functional as nnf  # noqa: E402
from _provenance import git_commit  # noqa: E402
from topgrad import Tensor  # noqa: E402

GROUPS = ("matmul", "attention", "norm", "model")
PRECISIONS = ("ieee", "tf32")
TARGET_MATMUL = 0.70  # Topgrad's matmul at >= 70% of torch.matmul's rate
TARGET_STEP = 1.5  # a training step within 1.5x of PyTorch eager
MATCH_TOL = 1e-3  # relative logit difference above which an example model and its mirror disagree
SAMPLE_S = 0.02  # seconds one timed sample should last on the GPU

#: Datasheet peaks in TFLOP/s, dense: (FP32 on CUDA cores, TF32 on tensor cores). Triton's
#: "ieee" dot on float32 runs on CUDA cores (FMA), so the FP32 figure is its ceiling.
DATASHEET: dict[str, tuple[float, float]] = {
    "H200 NVL": (60.0, 417.5),
    "H200": (67.0, 494.7),
    "H100 NVL": (60.0, 417.5),
    "H100 PCIe": (51.2, 378.0),
    "H100": (67.0, 494.7),  # SXM5 ("NVIDIA H100 80GB HBM3")
    "A100": (19.5, 156.0),
}


# ---- where the run happens ---------------------------------------------------------------------
def interpreting() -> bool:
    """True when Triton's CPU interpreter is switched on (as topgrad_triton decides it)."""
    return os.environ.get("TRITON_INTERPRET", "") in ("1", "true", "True")


def choose_device(smoke: bool) -> str:
    """"cuda" for a real run; for a smoke run without CUDA, switch the interpreter on and use "cpu"."""
    if torch.cuda.is_available() and not interpreting():
        return "cuda"
    if not smoke:
        why = ("TRITON_INTERPRET is set: unset it to measure the GPU" if torch.cuda.is_available()
               else "torch.cuda.is_available() is False")
        raise SystemExit(f"benchmarks/gpu.py measures a CUDA GPU, and {why}. Run it on a GPU machine, "
                         "or pass --smoke to check its code paths at tiny sizes on the CPU "
                         "(Triton interpreter).")
    if not interpreting():
        if "triton" in sys.modules:
            raise SystemExit("--smoke without CUDA needs TRITON_INTERPRET=1 before triton is imported, and "
                             "triton is already imported: run `TRITON_INTERPRET=1 python benchmarks/gpu.py "
                             "--smoke`")
        os.environ["TRITON_INTERPRET"] = "1"
    return "cpu"


def use_precision(mode: str) -> None:
    """Exact fp32 ("ieee") or TF32 ("tf32") matmuls, in both frameworks (cuBLAS and cuDNN for torch)."""
    topgrad_triton.set_precision(mode)
    torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
    torch.backends.cudnn.allow_tf32 = mode == "tf32"


@contextmanager
def precision(mode: str) -> Iterator[None]:
    use_precision(mode)
    try:
        yield
    finally:
        use_precision("ieee")


# ---- timing ------------------------------------------------------------------------------------
class Clock:
    """Seconds per call of a callable: CUDA events on a GPU, perf_counter on the CPU."""

    def __init__(self, device: str, fixed_number: int | None = None) -> None:
        self.cuda = device == "cuda"
        self.fixed_number = fixed_number

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def per_call(self, fn: Callable[[], Any], number: int) -> float:
        self.sync()
        if not self.cuda:
            start = time.perf_counter()
            for _ in range(number):
                fn()
            return (time.perf_counter() - start) / number
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        for _ in range(number):
            fn()
        end.record()
        end.synchronize()
        return begin.elapsed_time(end) / 1e3 / number

    def calls_per_sample(self, fn: Callable[[], Any]) -> int:
        """Calls that make one sample of about SAMPLE_S seconds (1 in a smoke run)."""
        if self.fixed_number is not None:
            return self.fixed_number
        once = max(self.per_call(fn, 1), 1e-7)
        return max(1, min(1000, math.ceil(SAMPLE_S / once)))


@dataclass
class Timing:
    """Per-call seconds of each sample, for both frameworks."""

    topgrad: list[float]
    torch: list[float]


def time_pair(tg: Callable[[], Any], th: Callable[[], Any], clock: Clock, repeat: int,
              warmup: int) -> Timing:
    """Alternate Topgrad and PyTorch samples (ABBA) after `warmup` calls of each (JIT compiles)."""
    for _ in range(warmup):
        tg()
        th()
    n_tg, n_th = clock.calls_per_sample(tg), clock.calls_per_sample(th)
    out = Timing([], [])
    for r in range(repeat):
        order = ((tg, n_tg, out.topgrad), (th, n_th, out.torch))
        for fn, number, samples in (order if r % 2 == 0 else order[::-1]):
            samples.append(clock.per_call(fn, number))
    return out


def peak_mib(fn: Callable[[], Any], device: str) -> float | None:
    """GPU memory allocated at the peak of one call, above what was allocated before it."""
    if device != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


# ---- cases -------------------------------------------------------------------------------------
Pairs = list[tuple[Any, Any]]  # (topgrad array, torch array) pairs to compare


@dataclass
class Case:
    """One row: a Topgrad callable and a PyTorch callable doing the same work."""

    kind: str
    name: str
    shape: str
    precision: str
    run_topgrad: Callable[[], Any]
    run_torch: Callable[[], Any]
    outputs: Callable[[], Pairs]  # both frameworks' results, for the max-diff column
    flops: float = 0.0  # per call (multiply-adds count 2)
    min_speed: float | None = None  # target: torch_ms / topgrad_ms at least this
    max_ratio: float | None = None  # target: topgrad_ms / torch_ms at most this


class Maker:
    """Builds inputs on the run's device: numpy draws, the same numbers for both frameworks."""

    def __init__(self, device: str, seed: int) -> None:
        self.device = device
        self.rng = np.random.default_rng(seed)

    def draw(self, *shape: int, scale: float = 1.0, offset: float = 0.0) -> np.ndarray:
        return (self.rng.standard_normal(shape) * scale + offset).astype(np.float32)

    def torch(self, a: np.ndarray, grad: bool = False) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(a)).to(self.device)
        return t.requires_grad_(grad)


def _numpy(x: Any) -> np.ndarray:
    """A Tensor, a torch tensor (a backend array or torch's) or a numpy array, as numpy."""
    if isinstance(x, Tensor):
        return x.numpy()
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x)


def max_rel_diff(pairs: Pairs) -> float:
    """Largest |topgrad - torch| over each pair, relative to the torch array's largest magnitude."""
    worst = 0.0
    for a, b in pairs:
        a, b = _numpy(a), _numpy(b)
        worst = max(worst, float(np.max(np.abs(a - b)) / max(1e-12, float(np.max(np.abs(b))))))
    return worst


def _clear(*leaves: Any) -> None:
    for t in leaves:
        t.grad = None


def matmul_case(mk: Maker, n: int, prec: str) -> Case:
    """Topgrad's Linear forward kernel (`a @ b`, no bias, no graph) against torch.matmul."""
    a, b = mk.draw(n, n), mk.draw(n, n)
    tg_a, tg_b, th_a, th_b = Tensor(a), Tensor(b), mk.torch(a), mk.torch(b)

    def tg() -> Tensor:
        with topgrad.no_grad():
            return tg_a @ tg_b

    def th() -> torch.Tensor:
        return torch.matmul(th_a, th_b)

    return Case("matmul", "Linear forward", f"{n}x{n} @ {n}x{n}", prec, tg, th, lambda: [(tg(), th())],
                flops=2.0 * n**3, min_speed=TARGET_MATMUL)


def attention_case(mk: Maker, b: int, t: int, d: int, causal: bool, prec: str) -> Case:
    """Single-head attention forward + backward; torch gets (B, 1, T, D), its fused kernels' layout."""
    q, k, v, g = (mk.draw(b, t, d) for _ in range(4))
    tg_in = [Tensor(x) for x in (q, k, v)]
    tg_g = Tensor(g)
    th_in = [mk.torch(x.reshape(b, 1, t, d), grad=True) for x in (q, k, v)]
    th_g = mk.torch(g.reshape(b, 1, t, d))

    def tg() -> Tensor:
        _clear(*tg_in)
        out = topgrad.attention(*tg_in, causal=causal)
        out.backward(tg_g)
        return out

    def th() -> torch.Tensor:
        _clear(*th_in)
        out = nnf.scaled_dot_product_attention(*th_in, is_causal=causal)
        out.backward(th_g)
        return out

    def outputs() -> Pairs:
        o_tg, o_th = tg(), th()
        pairs = [(o_tg, o_th.reshape(b, t, d))]
        return pairs + [(x.grad, y.grad.reshape(b, t, d)) for x, y in zip(tg_in, th_in)]

    flops = 12.0 * b * t * t * d * (0.5 if causal else 1.0)  # 4BTSD forward + 8BTSD backward
    name = "attention causal" if causal else "attention"
    return Case("attention", name, f"B={b} T={t} D={d}", prec, tg, th, outputs, flops=flops)


def layernorm_case(mk: Maker, rows: int, n: int) -> Case:
    """LayerNorm over the last axis, forward + backward (x, gamma, beta all need gradients)."""
    x, g = mk.draw(rows, n), mk.draw(rows, n)
    w, bias = mk.draw(n, scale=0.1, offset=1.0), mk.draw(n, scale=0.1)
    tg_in, tg_g = [Tensor(a) for a in (x, w, bias)], Tensor(g)
    th_in, th_g = [mk.torch(a, grad=True) for a in (x, w, bias)], mk.torch(g)

    def tg() -> Tensor:
        _clear(*tg_in)
        out = tg_in[0].layernorm(tg_in[1], tg_in[2])
        out.backward(tg_g)
        return out

    def th() -> torch.Tensor:
        _clear(*th_in)
        out = nnf.layer_norm(th_in[0], (n,), th_in[1], th_in[2], eps=1e-5)
        out.backward(th_g)
        return out

    def outputs() -> Pairs:
        return [(tg(), th()), *((a.grad, b.grad) for a, b in zip(tg_in, th_in))]

    return Case("norm", "LayerNorm", f"{rows}x{n}", "ieee", tg, th, outputs)


def batchnorm_case(mk: Maker, b: int, hw: int, c: int) -> Case:
    """BatchNorm in training mode with running statistics; Topgrad NHWC, torch NCHW (its native layout)."""
    x, g = mk.draw(b, hw, hw, c), mk.draw(b, hw, hw, c)
    w, bias = mk.draw(c, scale=0.1, offset=1.0), mk.draw(c, scale=0.1)
    tg_in, tg_g = [Tensor(a) for a in (x, w, bias)], Tensor(g)
    tg_rm, tg_rv = Tensor(np.zeros(c, np.float32)), Tensor(np.ones(c, np.float32))
    nchw = (0, 3, 1, 2)
    th_in = [mk.torch(x.transpose(nchw), grad=True), mk.torch(w, grad=True), mk.torch(bias, grad=True)]
    th_g = mk.torch(g.transpose(nchw))
    th_rm, th_rv = mk.torch(np.zeros(c, np.float32)), mk.torch(np.ones(c, np.float32))

    def tg() -> Tensor:
        _clear(*tg_in)
        out = tg_in[0].batchnorm(tg_in[1], tg_in[2], running_mean=tg_rm, running_var=tg_rv,
                                 training=True, momentum=0.1)
        out.backward(tg_g)
        return out

    def th() -> torch.Tensor:
        _clear(*th_in)
        out = nnf.batch_norm(th_in[0], th_rm, th_rv, th_in[1], th_in[2], training=True, momentum=0.1,
                             eps=1e-5)
        out.backward(th_g)
        return out

    def outputs() -> Pairs:
        o_tg, o_th = tg(), th()
        nhwc = (0, 2, 3, 1)
        return [(o_tg, o_th.permute(nhwc)), (tg_in[0].grad, th_in[0].grad.permute(nhwc)),
                (tg_in[1].grad, th_in[1].grad), (tg_in[2].grad, th_in[2].grad)]

    return Case("norm", "BatchNorm", f"{b}x{hw}x{hw}x{c}", "ieee", tg, th, outputs)


# ---- training steps ----------------------------------------------------------------------------
def _nchw(x: np.ndarray, device: str) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device)


def _logits(tgm: _models_topgrad.TopgradModel, thm: torch.nn.Module, x: np.ndarray,
            device: str) -> tuple[Tensor, torch.Tensor]:
    with topgrad.no_grad(), torch.no_grad():
        return tgm.forward(Tensor(x)), thm(_nchw(x, device))


def _mirror(tgm: _models_topgrad.TopgradModel, device: str) -> torch.nn.Module:
    return _models_torch.build(tgm.name, tgm.arrays()).to(device).train()


def load_models(name: str, seed: int, x: np.ndarray,
                device: str) -> tuple[_models_topgrad.TopgradModel, torch.nn.Module]:
    """The example model with its PyTorch mirror (identical weights); the benchmark's copy if they differ."""
    tgm = _models_topgrad.from_examples(name, seed)
    if tgm is not None:
        with precision("ieee"):
            diff = max_rel_diff([_logits(tgm, _mirror(tgm, device), x[:8], device)])
        if diff <= MATCH_TOL:
            return tgm, _mirror(tgm, device)
        print(f"warning: topgrad_examples.models.{name} differs from its PyTorch mirror by {diff:.2e}; "
              "benchmarking the copy in benchmarks/_models_topgrad.py instead", file=sys.stderr)
    tgm = _models_topgrad.build(name, seed)
    return tgm, _mirror(tgm, device)


def model_case(name: str, batch: int, prec: str, device: str, seed: int) -> Case:
    """One training step: forward, cross-entropy, backward, SGD update (zero_grad last, as vs_torch.py)."""
    x, labels = _steps.images(batch, seed)
    tgm, thm = load_models(name, seed, x, device)
    tg, th = _steps.training_steps(tgm, thm, Tensor(x, requires_grad=False), _nchw(x, device), labels, device)
    return Case("model", name, f"batch {batch}", prec, tg, th, lambda: [_logits(tgm, thm, x, device)],
                max_ratio=TARGET_STEP)


# ---- sizes -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sizes:
    matmul: int = 4096
    attention: tuple[tuple[int, int, int], ...] = ((32, 1024, 64), (16, 1024, 128))  # (B, T, D)
    layernorm: tuple[int, int] = (16384, 1024)  # (rows, features)
    batchnorm: tuple[int, int, int] = (128, 32, 64)  # (batch, height = width, channels)

    @classmethod
    def tiny(cls) -> Sizes:
        return cls(64, ((2, 32, 16), (1, 32, 32)), (64, 32), (4, 4, 8))


Spec = tuple[str, Callable[[], Case]]  # a row's label and how to build its case


def build_cases(groups: Sequence[str], models: Sequence[str], sizes: Sizes, batch: int, device: str,
                seed: int) -> list[Spec]:
    """The rows to measure, each built only when its turn comes (so only its inputs are alive)."""
    mk = Maker(device, seed)
    specs: list[Spec] = []
    if "matmul" in groups:
        n = sizes.matmul
        specs += [(f"matmul {n} {p}", partial(matmul_case, mk, n, p)) for p in PRECISIONS]
    if "attention" in groups:
        specs += [(f"attention B={b} T={t} D={d}{' causal' if c else ''} {p}",
                   partial(attention_case, mk, b, t, d, c, p))
                  for p in PRECISIONS for b, t, d in sizes.attention for c in (False, True)]
    if "norm" in groups:
        specs += [("LayerNorm", partial(layernorm_case, mk, *sizes.layernorm)),
                  ("BatchNorm", partial(batchnorm_case, mk, *sizes.batchnorm))]
    if "model" in groups:
        specs += [(f"model {m} {p}", partial(model_case, m, batch, p, device, seed))
                  for p in PRECISIONS for m in models]
    return specs


# ---- measuring ---------------------------------------------------------------------------------
@dataclass
class Row:
    kind: str
    name: str
    shape: str
    precision: str
    topgrad_ms: float
    torch_ms: float
    topgrad_best_ms: float
    torch_best_ms: float
    flops: float
    max_diff: float
    topgrad_mib: float | None
    torch_mib: float | None
    min_speed: float | None
    max_ratio: float | None
    samples_ms: dict[str, list[float]] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.topgrad_ms / self.torch_ms

    def rate(self, which: str) -> float | None:
        """TFLOP/s of the median call."""
        ms = self.topgrad_ms if which == "topgrad" else self.torch_ms
        return self.flops / (ms * 1e-3) / 1e12 if self.flops else None

    def passed(self) -> bool | None:
        if self.min_speed is not None:
            return self.torch_ms / self.topgrad_ms >= self.min_speed
        if self.max_ratio is not None:
            return self.ratio <= self.max_ratio
        return None

    def target(self) -> str:
        if self.min_speed is not None:
            return f">= {self.min_speed:.0%} of torch"
        if self.max_ratio is not None:
            return f"<= {self.max_ratio:g}x torch"
        return "–"


def measure(case: Case, clock: Clock, repeat: int, warmup: int, device: str) -> Row:
    """Check the outputs agree, time both callables interleaved, then take each one's peak memory."""
    with precision(case.precision):
        diff = max_rel_diff(case.outputs())
        t = time_pair(case.run_topgrad, case.run_torch, clock, repeat, warmup)
        tg_mib, th_mib = peak_mib(case.run_topgrad, device), peak_mib(case.run_torch, device)
    return Row(case.kind, case.name, case.shape, case.precision,
               statistics.median(t.topgrad) * 1e3, statistics.median(t.torch) * 1e3,
               min(t.topgrad) * 1e3, min(t.torch) * 1e3, case.flops, diff, tg_mib, th_mib,
               case.min_speed, case.max_ratio,
               {"topgrad": [s * 1e3 for s in t.topgrad], "torch": [s * 1e3 for s in t.torch]})


def measured_peaks(rows: Sequence[Row]) -> dict[str, float]:
    """torch.matmul's best rate (TFLOP/s) per precision, from the matmul rows (the "measured peak")."""
    return {r.precision: r.flops / (r.torch_best_ms * 1e-3) / 1e12 for r in rows if r.kind == "matmul"}


def datasheet_peaks(card: str) -> tuple[str, dict[str, float]] | None:
    """(matched entry, {precision: TFLOP/s}) for a known card name, else None."""
    for key, (fp32, tf32) in DATASHEET.items():
        if all(part in card for part in key.split()):
            return key, {"ieee": fp32, "tf32": tf32}
    return None


# ---- report ------------------------------------------------------------------------------------
def _f(v: float | None, fmt: str = ".2f") -> str:
    return "–" if v is None else format(v, fmt)


def _pct(part: float | None, whole: float | None) -> str:
    return "–" if part is None or not whole else f"{100.0 * part / whole:.0f}%"


def table(rows: Sequence[Row], card: str) -> str:
    """The markdown table of every row."""
    measured = measured_peaks(rows)
    sheet = datasheet_peaks(card)
    head = ("| kind | case | shape | precision | topgrad ms | torch ms | topgrad/torch | % of torch | "
            "topgrad TFLOP/s | torch TFLOP/s | % measured peak | % datasheet peak | max rel diff | "
            "topgrad MiB | torch MiB | target | result |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        rate = r.rate("topgrad")
        result = {True: "pass", False: "**FAIL**", None: "–"}[r.passed()]
        peak = sheet[1].get(r.precision) if sheet else None
        lines.append(
            f"| {r.kind} | {r.name} | {r.shape} | {r.precision} | {r.topgrad_ms:.3f} | {r.torch_ms:.3f} | "
            f"{r.ratio:.2f} | {_pct(r.torch_ms, r.topgrad_ms)} | {_f(rate, '.1f')} | "
            f"{_f(r.rate('torch'), '.1f')} | {_pct(rate, measured.get(r.precision))} | {_pct(rate, peak)} | "
            f"{r.max_diff:.1e} | {_f(r.topgrad_mib, '.1f')} | {_f(r.torch_mib, '.1f')} | {r.target()} | "
            f"{result} |"
        )
    return "\n".join(lines)


def card_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return f"none: CPU ({platform.processor() or platform.machine()}), Triton interpreter"


def header(args: argparse.Namespace, device: str, rows: Sequence[Row]) -> str:
    import triton

    card = card_name(device)
    lines = [
        "# Topgrad-triton vs PyTorch eager on the GPU" + (" (SMOKE RUN: tiny sizes, numbers mean nothing)"
                                                          if args.smoke else ""),
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}; "
        f"repository at {git_commit()}",
        f"- card: {card}",
    ]
    if device == "cuda":
        p = torch.cuda.get_device_properties(0)
        lines.append(f"- card details: {p.multi_processor_count} SMs, {p.total_memory / 2**30:.0f} GiB, "
                     f"compute capability {p.major}.{p.minor}; CUDA {torch.version.cuda}, "
                     f"cuDNN {torch.backends.cudnn.version()}")
    lines.append(f"- versions: python {platform.python_version()}, torch {torch.__version__}, "
                 f"triton {triton.__version__}, topgrad {topgrad.__version__}, "
                 f"topgrad-triton {topgrad_triton.__version__}, numpy {np.__version__}")
    measured = measured_peaks(rows)
    if measured:
        size = next(r.shape for r in rows if r.kind == "matmul")
        lines.append(f"- measured peak (torch.matmul's best rate at {size}): "
                     + ", ".join(f"{k} {v:.1f} TFLOP/s" for k, v in measured.items()))
    sheet = datasheet_peaks(card)
    lines.append("- datasheet peak (dense): " + (
        f"{sheet[0]}: FP32 {sheet[1]['ieee']:g} TFLOP/s (ieee), TF32 {sheet[1]['tf32']:g} TFLOP/s"
        if sheet else "unknown for this card"))
    lines.append(f"- timing: median of {args.repeat} interleaved samples per framework after {args.warmup} "
                 f"warm-up calls each; {'CUDA events' if device == 'cuda' else 'perf_counter'}")
    lines.append(f"- command: python benchmarks/gpu.py {' '.join(args.argv)}".rstrip())
    return "\n".join(lines)


NOTES = """\
Notes: `topgrad/torch` is the ratio of median times (< 1: Topgrad faster); `% of torch` its inverse.
TFLOP/s count a multiply-add as 2 FLOPs: matmul 2n^3; attention 4BT^2D forward + 8BT^2D backward
(no recomputation counted), halved when causal. `% measured peak` divides by torch.matmul's best
rate in the same precision (the matmul rows). `ieee` rows run exact fp32 in both frameworks
(torch's TF32 switches for cuBLAS and cuDNN off), `tf32` rows `topgrad_triton.set_precision("tf32")` and
`torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True`. `max rel diff`
is the largest difference of the outputs (and input gradients for kernels) over torch's largest
magnitude. MiB: peak GPU memory allocated during one call above what was allocated before it.
Model steps: the example models at batch {batch} (topgrad NHWC, torch NCHW with the same weights),
cross-entropy and SGD (lr 0.01); torch's attention mirror calls SDPA on (B, T, D) as written."""


def summary(rows: Sequence[Row]) -> str:
    judged = [r for r in rows if r.passed() is not None]
    missed = [f"{r.kind} {r.name} {r.precision} ({r.ratio:.2f}x torch)" for r in judged if not r.passed()]
    return (f"Targets met: {len(judged) - len(missed)} of {len(judged)}"
            + ("; missed: " + "; ".join(missed) if missed else ""))


# ---- driver ------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring); names are checked here, before any measuring."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0], allow_abbrev=False)
    p.add_argument("--out", type=_args.output_file, default=None,
                   help="also write the markdown report to this file")
    p.add_argument("--json", type=_args.output_file, default=None,
                   help="also write the rows, with every sample, to this JSON file")
    p.add_argument("--only", default="all",
                   help="row groups: " + _args.names_help(GROUPS))
    p.add_argument("--models", default="all",
                   help="training steps: " + _args.names_help(_models_topgrad.MODELS))
    p.add_argument("--batch", type=_args.positive_int, default=None,
                   help="training-step batch (default 128, smoke 4)")
    p.add_argument("--repeat", type=_args.positive_int, default=None,
                   help="timed samples per framework (default 15, smoke 1)")
    p.add_argument("--warmup", type=_args.count, default=None,
                   help="untimed calls first (default 3, smoke 0)")
    p.add_argument("--seed", type=_args.count, default=0,
                   help="seed of the inputs and model weights both frameworks get (default 0)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes, one call per sample; without CUDA on the CPU under Triton's interpreter")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.only = _args.names(p, "--only", args.only, GROUPS)
    args.models = _args.names(p, "--models", args.models, _models_topgrad.MODELS)
    args.batch = args.batch if args.batch is not None else (4 if args.smoke else 128)
    args.repeat = args.repeat if args.repeat is not None else (1 if args.smoke else 15)
    args.warmup = args.warmup if args.warmup is not None else (0 if args.smoke else 3)
    return args


def run(args: argparse.Namespace, out: Callable[[str], None] = print) -> tuple[list[Row], list[str]]:
    """Measure every row and print the report; returns the rows and the rows that failed to run."""
    device = choose_device(args.smoke)
    if args.smoke:
        torch.set_num_threads(1)
    topgrad.set_backend("triton")
    clock = Clock(device, fixed_number=1 if args.smoke else None)
    sizes = Sizes.tiny() if args.smoke else Sizes()
    rows, errors = [], []
    for label, make in build_cases(args.only, args.models, sizes, args.batch, device, args.seed):
        try:
            row = measure(make(), clock, args.repeat, args.warmup, device)
        except Exception as exc:  # one broken row must not cost the whole (GPU) run
            traceback.print_exc()
            errors.append(f"{label}: {type(exc).__name__}: {exc}")
            continue
        rows.append(row)
        print(f"  {label}: topgrad {row.topgrad_ms:.3f} ms, torch {row.torch_ms:.3f} ms ({row.ratio:.2f}x)",
              file=sys.stderr, flush=True)
    parts = [header(args, device, rows), table(rows, card_name(device)), NOTES.format(batch=args.batch),
             summary(rows)]
    if errors:
        parts.append("Rows that failed to run:\n" + "\n".join(f"- {e}" for e in errors))
    report = "\n\n".join(parts)
    out(report)
    if args.out:
        Path(args.out).write_text(report + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"card": card_name(device), "rows": [asdict(r) for r in rows]},
                                              indent=1))
    return rows, errors


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 1 when a row failed to run (the report lists it), else 0."""
    _, errors = run(parse_args(argv))
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
