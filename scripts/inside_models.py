"""Profile a training step of each example model and total what its graph saved.

`python scripts/inside_models.py [--batch 128] [--steps 5] [--out docs/inside-models.md]` prints,
per model, `topgrad.profile()`'s table of the median of a few steps (forward, loss, backward,
SGD update; one step's times move with the machine's load) and the saved-memory totals of
`loss.graph()` before backward; the README's "Looking inside" section shows its output. Uses
only the public API and the example models.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import topgrad
from topgrad.graph import human_bytes
from topgrad_examples.loss import cross_entropy
from topgrad_examples.models import build


def one_step(name: str, batch: int, steps: int = 5) -> str:
    """The profile table of the median (by wall time) of `steps` SGD steps of model `name`, after a
    warm-up step, and the graph totals of one, as markdown."""
    model = build(name, seed=0)
    rng = np.random.default_rng(0)
    images = topgrad.Tensor(rng.standard_normal((batch, 28, 28, 1)).astype(np.float32), requires_grad=False)
    labels = rng.integers(0, 10, size=batch)
    optimizer = topgrad.optim.SGD(model.parameters(), lr=0.01)
    loss = cross_entropy(model(images, training=True), labels)  # warm-up step, not recorded
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    profiles = []
    for _ in range(steps):  # one step's times move with the machine's load: show the median step
        with topgrad.profile() as p:
            loss = cross_entropy(model(images, training=True), labels)
            graph = loss.graph()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        profiles.append(p)
    p = sorted(profiles, key=lambda q: q.wall_s)[len(profiles) // 2]
    rows = "\n".join(
        f"| {op} | {t.count} | {human_bytes(t.saved_bytes)} | {human_bytes(t.extra_saved_bytes)} |"
        for op, t in sorted(graph.totals().items(), key=lambda kv: -kv[1].saved_bytes)
    )
    return (
        f"### {name} (batch {batch}, backend {topgrad.get_backend().name}; the median of {steps} steps)\n\n"
        f"```\n{p}\n```\n\n"
        "| op | nodes | saved for backward | of which held only for backward |\n| --- | --- | --- | --- |\n"
        f"{rows}\n| total, each array once | {len(graph.ops)} | {human_bytes(graph.distinct_saved_bytes)} | "
        f"{human_bytes(graph.distinct_extra_bytes)} |\n\n"
        "(A row counts what its op type saved; an array two ops saved, such as a ReLU's output the "
        "next layer saves too, is in both rows and once in the total. The profile counts op calls and "
        "the graph its nodes: an op on constants alone, such as a Reshape of the image batch, runs but "
        "makes no node.)\n"
    )


HEADER = """# Inside the example models

One training step of each example model at batch {batch} (forward, loss, backward, SGD update):
`topgrad.profile()`'s table per op type, then the saved-memory totals of `loss.graph()` before
backward. Written by `python scripts/inside_models.py --out docs/inside-models.md`; the memory
numbers are exact, the times the median of {steps} step(s) (after one warm-up) on one machine.

"""


def _positive(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"needs a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"needs at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--models", nargs="*", default=["mlp", "conv", "deepconv", "attention"])
    parser.add_argument("--steps", type=_positive, default=5, help="profiled steps; the median one is shown")
    parser.add_argument("--out", type=Path, help="also write the markdown to this file")
    args = parser.parse_args(argv)
    text = "\n".join(one_step(name, args.batch, args.steps) for name in args.models)
    print(text)
    if args.out:
        args.out.write_text(HEADER.format(batch=args.batch, steps=args.steps) + text)


if __name__ == "__main__":
    main()
