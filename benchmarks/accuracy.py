"""Accuracy floors of the example models: train each with its defaults and compare with its floor.

    OMP_NUM_THREADS=1 python benchmarks/accuracy.py       # everything (~15 minutes on 2 cores)
    python benchmarks/accuracy.py --models mlp conv --datasets mnist --mnist-dir ../shared/data/mnist

Each run is `topgrad-train MODEL --dataset D --seed 0 --epochs E` in its own process, with the
model's default recipe. The table shows the test accuracy, the floor, and the seconds per epoch
(training only). The floors are set for the full 60,000 training images: where full MNIST is not
found, topgrad-train falls back to its bundled subset of 6,000 (its first output line says which
data it loaded), and such a row is marked SUBSET, its floor not checked (pass --mnist-dir, or
install the full set, to check it).

Exit status: 0 when every run reaches its floor; 1 when a run falls below its floor (LOW) or
fails to run (FAIL; its error on stderr, and the other runs go on); else 3 when some run
trained on fewer images than its floor assumes (SUBSET), so its floor could not be checked.
This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time

from topgrad_examples.data import BUNDLED

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
FLOOR_IMAGES = 60_000
"""Training images of the full MNIST and Fashion-MNIST, on which the floors were set."""
EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+): .*test acc ([\d.]+), ([\d.]+) s")
FINAL_LINE = re.compile(r"^test accuracy: ([\d.]+)$")
DATA_LINE = re.compile(r"^\S+ on \S+ \(([\d,]+) training, [\d,]+ test images from (.+)\), backend ")
"""topgrad-train's first line: what it trained on (`... images from bundled MNIST subset), ...`)."""
EXIT_SUBSET = 3
"""Exit status when no run failed but some floor could not be checked (SUBSET)."""


def run_one(dataset: str, model: str, epochs: int,
            args: argparse.Namespace) -> tuple[float, list[float], int, str]:
    """Train one model; return its final test accuracy, the seconds of each epoch, and the number
    of training images and their source (from the run's first line: the bundled subset where
    full MNIST is missing, which the floors do not apply to)."""
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
    seconds, accuracy, images, source = [], float("nan"), 0, ""
    for line in proc.stdout.splitlines():
        if (m := DATA_LINE.match(line)) and not source:
            images, source = int(m.group(1).replace(",", "")), m.group(2)
            print(f"  {dataset} {model}: {line}", flush=True)
        elif m := EPOCH_LINE.match(line):
            seconds.append(float(m.group(4)))
            print(f"  {dataset} {model}: {line}", flush=True)
        elif m := FINAL_LINE.match(line):
            accuracy = float(m.group(1))
    if not source:  # the floor's premise cannot be checked: not a silent pass
        raise RuntimeError(f"{' '.join(cmd)}: no line says which data it trained on:\n{proc.stdout[:2000]}")
    return accuracy, seconds, images, source


def status(accuracy: float, floor: float, images: int) -> str:
    """ok or LOW against the floor; FAIL for a run that did not finish; SUBSET for one on another
    number of training images than the floors assume (the bundled MNIST subset): its floor does
    not apply, and a LOW there would be false."""
    if accuracy != accuracy:  # NaN: the run failed
        return "FAIL"
    if images != FLOOR_IMAGES:
        return "SUBSET"
    return "ok" if accuracy >= floor else "LOW"


def main(argv: list[str] | None = None) -> int:
    """Train every chosen model on every chosen dataset and print the table; see the exit status above."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    models, datasets = sorted({m for _, m in FLOORS}), sorted({d for d, _ in FLOORS})
    parser.add_argument("--models", nargs="+", choices=models,
                        default=["mlp", "conv", "deepconv", "attention"],
                        help="models to train (default all four)")
    parser.add_argument("--datasets", nargs="+", choices=datasets, default=["mnist", "fashion-mnist"],
                        help="datasets to train on (default both)")
    parser.add_argument("--backend", help="topgrad backend (default: $TOPGRAD_BACKEND, else numpy)")
    parser.add_argument("--mnist-dir", help="folder with the MNIST IDX files (default: topgrad-train's "
                        "search, which falls back to the bundled 6,000-image subset: its rows say SUBSET)")
    parser.add_argument("--fashion-dir", help="folder with the Fashion-MNIST IDX files")
    args = parser.parse_args(argv)

    rows: list[tuple[str, str, int, float, float, str, float, float]] = []
    subsets: set[tuple[str, int, str]] = set()
    for dataset in args.datasets:
        for model in args.models:
            epochs, floor = FLOORS[(dataset, model)]
            began = time.perf_counter()
            try:
                accuracy, seconds, images, source = run_one(dataset, model, epochs, args)
            except RuntimeError as exc:  # one run that cannot start (a bad --data-dir): the others go on
                print(exc, file=sys.stderr, flush=True)
                accuracy, seconds, images, source = float("nan"), [], 0, ""
            verdict = status(accuracy, floor, images)
            if verdict == "SUBSET":
                subsets.add((dataset, images, source))
            per_epoch = sum(seconds) / max(1, len(seconds))
            total = time.perf_counter() - began
            rows.append((dataset, model, epochs, accuracy, floor, verdict, per_epoch, total))

    print(f"\n{'dataset':<14} {'model':<10} {'epochs':>6} {'accuracy':>9} {'floor':>7} {'':>6} "
          f"{'s/epoch':>8} {'total s':>8}")
    for dataset, model, epochs, acc, floor, verdict, per_epoch, total in rows:
        print(f"{dataset:<14} {model:<10} {epochs:>6} {acc * 100:>8.2f}% {floor * 100:>6.1f}% "
              f"{verdict:>6} {per_epoch:>8.1f} {total:>8.0f}")
    for dataset, images, source in sorted(subsets):
        hint = ("pass --mnist-dir DIR or install the full set (see topgrad-examples/README.md)"
                if source == BUNDLED else f"give the full {dataset}'s folder")
        print(f"SUBSET: floor not applicable: {dataset} trained on {images:,} images from {source}, not the "
              f"{FLOOR_IMAGES:,} the floors assume; {hint}")
    verdicts = {row[5] for row in rows}
    return 1 if verdicts & {"LOW", "FAIL"} else EXIT_SUBSET if "SUBSET" in verdicts else 0


if __name__ == "__main__":
    sys.exit(main())
