"""Make the MNIST subset bundled with topgrad-examples from the full MNIST IDX files.

    python topgrad-examples/scripts/make_subset.py ../shared/data/mnist

picks 6,000 training and 1,000 test images at random (seed 0, kept in their original
order) and writes them as gzipped IDX files into src/topgrad_examples/subset/. The
output is byte-for-byte reproducible (gzip without a timestamp).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from topgrad_examples import idx
from topgrad_examples.data import load_dir

OUT = Path(__file__).resolve().parents[1] / "src" / "topgrad_examples" / "subset"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mnist_dir", help="folder with the four full MNIST IDX files")
    parser.add_argument("--train", type=int, default=6000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    full = load_dir(args.mnist_dir, "mnist")
    rng = np.random.default_rng(args.seed)
    train = np.sort(rng.choice(len(full.train_labels), args.train, replace=False))
    test = np.sort(rng.choice(len(full.test_labels), args.test, replace=False))
    args.out.mkdir(parents=True, exist_ok=True)
    idx.write(args.out / "train-images-idx3-ubyte.gz", full.train_images[train])
    idx.write(args.out / "train-labels-idx1-ubyte.gz", full.train_labels[train])
    idx.write(args.out / "t10k-images-idx3-ubyte.gz", full.test_images[test])
    idx.write(args.out / "t10k-labels-idx1-ubyte.gz", full.test_labels[test])
    total = sum(p.stat().st_size for p in args.out.glob("*.gz"))
    print(f"wrote {args.train} training and {args.test} test images to {args.out} ({total / 1e6:.2f} MB)")
    print("train class counts:", np.bincount(full.train_labels[train], minlength=10).tolist())


if __name__ == "__main__":
    main()
