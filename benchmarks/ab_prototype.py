"""The numpy backend's ops against the prototypes of `_prototype_ops.py`, in one process, interleaved.

    python benchmarks/ab_prototype.py [--models all] [--ops all] [--repeat 9] [--batch 128]

For each training step and op: the median time with the backend's ops and with the
prototypes (same model, same inputs, alternating samples, process CPU time), the speed-up of the medians and
of the fastest samples, and the largest relative difference of their gradients (the
prototypes must compute the same thing; in the deep BatchNorm net, float32 rounding alone
moves gradients by ~1e-2 relative, as much as the backend differs from PyTorch there).
Always the numpy backend, as vs_torch.py. The only prototype left is LayerNorm's (other ops run
the backend's own code in both columns): `--models attention --ops LayerNorm` times it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import _args  # noqa: E402
import _measure  # noqa: E402
import _prototype_ops  # noqa: E402
import _steps  # noqa: E402
import numpy as np  # noqa: E402
import topgrad  # noqa: E402
import vs_torch  # noqa: E402
from topgrad import Tensor  # noqa: E402


def _under(backend: Any, table: Any, fn: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        backend.ops = table
        return fn()

    return run


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(1e-6, float(np.max(np.abs(b)))))


def model_grads(name: str, batch: int) -> Callable[[], dict[str, np.ndarray]]:
    x, labels = _steps.images(batch, 0)
    tgm, _ = vs_torch.load_models(name, 0, x)
    onehot = Tensor(np.eye(10, dtype=np.float32)[labels])

    def grads() -> dict[str, np.ndarray]:
        for p in tgm.params.values():
            p.grad = None
        (tgm.forward(Tensor(x)).logsoftmax(-1) * onehot).sum().backward()
        return {k: p.grad.copy() for k, p in tgm.params.items()}

    return grads


def op_grads(name: str) -> Callable[[], dict[str, np.ndarray]]:
    case = vs_torch._ops.build(name, vs_torch._ops.Dims(), 0)

    def grads() -> dict[str, np.ndarray]:
        for t in case.tg_leaves:
            t.grad = None
        case.tg_fn(*case.tg_leaves).backward(case.tg_grad)
        return {str(i): t.grad.copy() for i, t in enumerate(case.tg_leaves)}

    return grads


def compare(kind: str, name: str, make: Callable[[], Any], grads: Callable[[], dict[str, np.ndarray]],
            tables: tuple[Any, Any], repeat: int) -> str:
    backend = topgrad.get_backend()
    base, proto = (_under(backend, t, make) for t in tables)
    ga, gb = _under(backend, tables[0], grads)(), _under(backend, tables[1], grads)()
    diff = max(_rel(gb[k], ga[k]) for k in ga)
    t = _measure.time_interleaved(base, proto, repeat, warmup=2, clock="cpu")
    a, b = t.median("topgrad") * 1e3, t.median("torch") * 1e3
    best = t.best("topgrad") / t.best("torch")
    return f"| {kind} | {name} | {a:.3f} | {b:.3f} | {a / b:.2f}x | {best:.2f}x | {diff:.1e} |"


def main(argv: list[str] | None = None) -> int:
    """Time each chosen model step and op with the backend's ops and with the prototypes."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    models, ops = vs_torch._models_topgrad.MODELS, vs_torch._ops.OPS
    p.add_argument("--models", default="all", help=_args.names_help(models))
    p.add_argument("--ops", default="all", help=_args.names_help(ops))
    p.add_argument("--repeat", type=_args.positive_int, default=9,
                   help="timed samples of each variant (default 9)")
    p.add_argument("--batch", type=_args.positive_int, default=128,
                   help="batch of the model steps (default 128; the ops have their own sizes)")
    args = p.parse_args(argv)
    # both lists checked before anything is measured: a typo in --ops once surfaced after every model
    chosen_models = _args.names(p, "--models", args.models, models)
    chosen_ops = _args.names(p, "--ops", args.ops, ops)
    vs_torch.use_numpy_backend()
    vs_torch.set_threads(1)
    base_table = topgrad.get_backend().ops
    _prototype_ops.install()
    tables = (base_table, topgrad.get_backend().ops)
    backend = topgrad.get_backend()
    print("| kind | case | backend ms | prototype ms | speed-up | best | max grad rel. diff |")
    print("|---|---|---|---|---|---|---|")
    for m in chosen_models:
        backend.ops = tables[0]
        case = vs_torch.model_case(m, args.batch, 0)
        row = compare("model", m, case.run_topgrad, model_grads(m, args.batch), tables, args.repeat)
        print(row, flush=True)
    for o in chosen_ops:
        backend.ops = tables[0]
        case = vs_torch._ops.build(o, vs_torch._ops.Dims(), 0)
        print(compare("op", o, case.run_topgrad, op_grads(o), tables, args.repeat), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
