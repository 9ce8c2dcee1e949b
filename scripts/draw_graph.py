"""Draw the graph of one training step of an example model: `python scripts/draw_graph.py`.

Builds the model (the attention model by default), runs a forward pass and the loss on a
small batch of random images, and writes the graph with topgrad.viz: the picture in
docs/attention-graph.svg is made by this script. Needs Graphviz's `dot` for SVG/PNG.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import topgrad
from topgrad_examples.loss import cross_entropy
from topgrad_examples.models import MODELS

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", nargs="?", default="attention", choices=list(MODELS))
    p.add_argument("--out", help="output file (.svg, .png, .pdf or .dot); default docs/MODEL-graph.svg")
    p.add_argument("--batch", type=int, default=2, help="images in the batch (default 2)")
    p.add_argument("--depth", type=int, default=1, help="attention blocks (attention model only; default 1)")
    p.add_argument("--print", action="store_true", help="also print the graph as text")
    args = p.parse_args(argv)

    kwargs = {"depth": args.depth} if args.model == "attention" else {}
    model = MODELS[args.model](seed=0, **kwargs)
    rng = np.random.default_rng(0)
    pixels = rng.standard_normal((args.batch, 28, 28, 1)).astype(np.float32)
    images = topgrad.Tensor(pixels, requires_grad=False)  # an input batch: a constant, as in training
    labels = rng.integers(0, 10, size=args.batch)
    loss = cross_entropy(model(images, training=True), labels)
    names = {"images": images, **model.state()}
    out = Path(args.out) if args.out else ROOT / "docs" / f"{args.model}-graph.svg"
    out.parent.mkdir(parents=True, exist_ok=True)
    topgrad.viz.to_dot(loss, out, names=names)
    if args.print:
        print(loss.graph(names))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
