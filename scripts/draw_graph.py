"""Draw the graph of one training step of an example model: `python scripts/draw_graph.py`.

Builds the model (the attention model by default), runs a forward pass and the loss on a
small batch of random images, and writes the graph with topgrad.viz into MODEL-graph.svg in the
current folder (`--out`: elsewhere). The README's picture is
`python scripts/draw_graph.py attention --out docs/attention-graph.svg`. Needs Graphviz's `dot`
for SVG/PNG.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import topgrad
from topgrad_examples.loss import cross_entropy
from topgrad_examples.models import MODELS


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", nargs="?", default="attention", choices=list(MODELS))
    p.add_argument("--out", help="output file (.svg, .png, .pdf or .dot); default MODEL-graph.svg here")
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
    out = Path(args.out) if args.out else Path(f"{args.model}-graph.svg")  # never the tracked docs/ picture
    out.parent.mkdir(parents=True, exist_ok=True)
    topgrad.viz.to_dot(loss, out, names=names)
    if args.print:
        print(loss.graph(names))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
