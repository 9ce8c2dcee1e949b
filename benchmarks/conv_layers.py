"""Every convolution of the example conv nets, alone: Topgrad-numpy against PyTorch in both layouts.

    python benchmarks/conv_layers.py [--models conv,deepconv] [--repeat 9] [--batch 128]

The layers are the ones the models run (recorded by an op observer during one forward pass),
each once however often it occurs. For each: forward, and backward (dL/dx and dL/dw; dL/dw
alone for the image batch, a constant), in CPU ms per call, Topgrad against PyTorch with
NHWC tensors (`channels_last`, the layout PyTorch picks for these nets: their input has one
channel, so NCHW and NHWC coincide and oneDNN keeps NHWC) and with NCHW tensors. The total
weighs each layer by how often the model runs it. This is where the deepconv step loses to
PyTorch: oneDNN's direct NHWC convolutions against im2col + OpenBLAS GEMMs (see RESULTS.md).
Always the numpy backend, as vs_torch.py.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import _args  # noqa: E402
import _measure  # noqa: E402
import _steps  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import vs_torch  # noqa: E402
from topgrad import Tensor  # noqa: E402
from topgrad.observe import Observer, observing  # noqa: E402

CONV_MODELS = ("conv", "deepconv")
"""The example nets with convolutions (mlp and attention have none)."""


@dataclass(frozen=True)
class Layer:
    """One convolution as a model runs it."""

    x_shape: tuple[int, ...]
    w_shape: tuple[int, ...]
    stride: int
    padding: int
    input_grad: bool  # False for the image batch (a constant)

    def __str__(self) -> str:
        _, h, w, cin = self.x_shape
        kh, kw, _, cout = self.w_shape
        return f"{h}x{w} {cin}->{cout} {kh}x{kw} s{self.stride} p{self.padding}"


class _ConvRecorder(Observer):
    def __init__(self) -> None:
        self.layers: Counter[Layer] = Counter()

    def before_forward(self, op: Any, args: tuple[Any, ...], params: dict[str, Any]) -> None:
        if type(op).__name__ == "Conv2d":
            x, w = args[0], args[1]
            self.layers[Layer(tuple(x.shape), tuple(w.shape), params.get("stride", 1),
                              params.get("padding", 0), x.requires_grad)] += 1


def model_layers(name: str, batch: int, seed: int = 0) -> Counter[Layer]:
    """The convolutions of example model `name` in one forward pass, with their counts."""
    x, _ = _steps.images(batch, seed)
    tgm, _ = vs_torch.load_models(name, seed, x)
    with observing(_ConvRecorder()) as rec:  # with the graph: under no_grad every input is a constant
        tgm.forward(Tensor(x, requires_grad=False))
    return rec.layers


def _torch_conv(layer: Layer, x: np.ndarray, w: np.ndarray, g: np.ndarray,
                channels_last: bool) -> tuple[Any, Any]:
    """PyTorch forward and backward callables for one layer in one layout."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=fmt)
    xt.requires_grad_(layer.input_grad)
    conv = torch.nn.Conv2d(w.shape[2], w.shape[3], w.shape[:2], stride=layer.stride, padding=layer.padding,
                           bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(w.transpose(3, 2, 0, 1).copy()))
    conv = conv.to(memory_format=fmt)
    gt = torch.from_numpy(g).permute(0, 3, 1, 2).contiguous(memory_format=fmt)
    inputs = [xt, conv.weight] if layer.input_grad else [conv.weight]
    y = conv(xt)

    def backward() -> None:
        torch.autograd.grad(y, inputs, gt, retain_graph=True)

    return (lambda: conv(xt)), backward


def _topgrad_conv(layer: Layer, x: np.ndarray, w: np.ndarray, op: Any, g: np.ndarray) -> tuple[Any, Any]:
    """Topgrad forward and backward callables for one layer; `op` ran the forward once already."""
    cls = type(op)

    def forward() -> None:
        cls().forward(x, w, None, stride=layer.stride, padding=layer.padding)

    return forward, (lambda: op.backward(g))


def measure(layer: Layer, repeat: int, seed: int = 0) -> dict[str, float]:
    """Median CPU ms per call: topgrad and torch (NHWC, NCHW), forward and backward."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(layer.x_shape, dtype=np.float32)
    w = (rng.standard_normal(layer.w_shape) * 0.1).astype(np.float32)
    xs = Tensor(x, requires_grad=layer.input_grad)
    out = xs.conv2d(Tensor(w), stride=layer.stride, padding=layer.padding)
    g = rng.standard_normal(out.shape, dtype=np.float32)
    tg_f, tg_b = _topgrad_conv(layer, x, w, out._op, g)
    res: dict[str, float] = {}
    for tag, channels_last in (("nhwc", True), ("nchw", False)):
        th_f, th_b = _torch_conv(layer, x, w, g, channels_last)
        for phase, tg, th in (("fwd", tg_f, th_f), ("bwd", tg_b, th_b)):
            t = _measure.time_interleaved(tg, th, repeat, 1, clock="cpu")
            res[f"topgrad {phase} {tag}"] = t.median("topgrad") * 1e3
            res[f"torch {phase} {tag}"] = t.median("torch") * 1e3
    for phase in ("fwd", "bwd"):  # Topgrad was timed twice, once beside each layout
        res[f"topgrad {phase}"] = (res.pop(f"topgrad {phase} nhwc") + res.pop(f"topgrad {phase} nchw")) / 2
    return res


COLUMNS = ("topgrad fwd", "torch fwd nhwc", "torch fwd nchw",
           "topgrad bwd", "torch bwd nhwc", "torch bwd nchw")


def _vs_nhwc(r: dict[str, float]) -> float:
    """Forward + backward, Topgrad over PyTorch NHWC."""
    return (r["topgrad fwd"] + r["topgrad bwd"]) / (r["torch fwd nhwc"] + r["torch bwd nhwc"])


def table(name: str, layers: Counter[Layer], rows: dict[Layer, dict[str, float]]) -> str:
    head = ("| layer | count | topgrad fwd | torch fwd NHWC | torch fwd NCHW | topgrad bwd | torch bwd NHWC "
            "| torch bwd NCHW | topgrad / torch NHWC |")
    lines = [f"### {name}", "", head, "|" + "---|" * (head.count("|") - 1)]
    total = dict.fromkeys(COLUMNS, 0.0)
    for layer, count in layers.items():
        r = rows[layer]
        for c in COLUMNS:
            total[c] += r[c] * count
        label = str(layer) + ("" if layer.input_grad else " (no dL/dx)")
        cells = " | ".join(f"{r[c]:.2f}" for c in COLUMNS)
        lines.append(f"| {label} | {count} | {cells} | {_vs_nhwc(r):.2f} |")
    cells = " | ".join(f"{total[c]:.1f}" for c in COLUMNS)
    lines.append(f"| **all, weighted by count** | | {cells} | {_vs_nhwc(total):.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--models", default="conv,deepconv",
                   help="the nets with convolutions: " + _args.names_help(CONV_MODELS))
    p.add_argument("--repeat", type=_args.positive_int, default=9,
                   help="timed samples per framework and layout (default 9)")
    p.add_argument("--batch", type=_args.positive_int, default=128, help="the models' batch (default 128)")
    args = p.parse_args(argv)
    models = _args.names(p, "--models", args.models, CONV_MODELS)
    vs_torch.use_numpy_backend()
    vs_torch.set_threads(1)
    print(f"CPU ms per call, medians of {args.repeat} interleaved samples, one thread; "
          f"numpy BLAS: {vs_torch.numpy_blas()}; torch: {vs_torch.torch_blas()}\n")
    for name in models:
        layers = model_layers(name, args.batch)
        rows = {}
        for layer in layers:
            rows[layer] = measure(layer, args.repeat)
            print(f"  measured {name}: {layer}", file=sys.stderr, flush=True)
        print(table(name, layers, rows), "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
