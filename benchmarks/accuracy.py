"""Accuracy floors of the example models: train each with its defaults and compare with its floor.

    OMP_NUM_THREADS=1 python benchmarks/accuracy.py       # everything (~15 minutes on 2 cores)
    python benchmarks/accuracy.py --models mlp conv --datasets mnist --mnist-dir ../shared/data/mnist

Each run is `topgrad-train MODEL --dataset D --seed 0 --epochs E` in its own process, with the
model's default recipe. The table shows the test accuracy, the floor, and the seconds per epoch
(training only). Exit status 1 when a run falls below its floor or fails to run (FAIL; its
error on stderr, and the other runs go on). This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time

# (dataset, model) -> (epochs, floor)
FLOORS: dict[tuple[str, str], tuple[int, float]] = {
    ("mnist", "mlp"): (3, 0.980),
    ("mnist", "conv"): (3, 0.985),
    ("mnist", "deepconv"): (2, 0.990),
    ("mnist", "attention"): (3, 0.980),
    ("fashion-mnist", "mlp"): (3, 0.875),
    ("fashion-mnist", "conv"): (3, 0.885),
    ("fashion-mnist", "deepconv"): (3, 0.900),
    ("fashion-mnist", "attention"): (3, 0.875),
}
EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+): .*test acc ([\d.]+), ([\d.]+) s")
FINAL_LINE = re.compile(r"^test accuracy: ([\d.]+)$")


def run_one(dataset: str, model: str, epochs: int, args: argparse.Namespace) -> tuple[float, list[float]]:
    """Train one model; return its final test accuracy and the seconds of each epoch."""
    cmd = [sys.executable, "-m", "topgrad_examples.train", model, "--dataset", dataset, "--seed", "0",
           "--epochs", str(epochs), "--no-progress"]
    if args.backend:
        cmd += ["--backend", args.backend]
    data_dir = args.mnist_dir if dataset == "mnist" else args.fashion_dir
    if data_dir:
        cmd += ["--data-dir", data_dir]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    seconds, accuracy = [], float("nan")
    for line in proc.stdout.splitlines():
        if m := EPOCH_LINE.match(line):
            seconds.append(float(m.group(4)))
            print(f"  {dataset} {model}: {line}", flush=True)
        elif m := FINAL_LINE.match(line):
            accuracy = float(m.group(1))
    return accuracy, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    models, datasets = sorted({m for _, m in FLOORS}), sorted({d for d, _ in FLOORS})
    parser.add_argument("--models", nargs="+", choices=models,
                        default=["mlp", "conv", "deepconv", "attention"])
    parser.add_argument("--datasets", nargs="+", choices=datasets, default=["mnist", "fashion-mnist"])
    parser.add_argument("--backend", help="topgrad backend (default: $TOPGRAD_BACKEND, else numpy)")
    parser.add_argument("--mnist-dir", help="folder with the MNIST IDX files (default: the usual search)")
    parser.add_argument("--fashion-dir", help="folder with the Fashion-MNIST IDX files")
    args = parser.parse_args()

    rows, failed = [], False
    for dataset in args.datasets:
        for model in args.models:
            epochs, floor = FLOORS[(dataset, model)]
            began = time.perf_counter()
            try:
                accuracy, seconds = run_one(dataset, model, epochs, args)
            except RuntimeError as exc:  # one run that cannot start (a bad --data-dir): the others go on
                print(exc, file=sys.stderr, flush=True)
                accuracy, seconds = float("nan"), []
            ok = accuracy >= floor  # NaN (failed to run) is not
            failed |= not ok
            per_epoch = sum(seconds) / max(1, len(seconds))
            rows.append((dataset, model, epochs, accuracy, floor, ok, per_epoch, time.perf_counter() - began))

    print(f"\n{'dataset':<14} {'model':<10} {'epochs':>6} {'accuracy':>9} {'floor':>7} {'':>4} "
          f"{'s/epoch':>8} {'total s':>8}")
    for dataset, model, epochs, acc, floor, ok, per_epoch, total in rows:
        print(f"{dataset:<14} {model:<10} {epochs:>6} {acc * 100:>8.2f}% {floor * 100:>6.1f}% "
              f"{'ok' if ok else 'LOW' if acc == acc else 'FAIL':>4} {per_epoch:>8.1f} {total:>8.0f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
