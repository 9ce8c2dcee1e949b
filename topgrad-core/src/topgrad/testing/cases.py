"""The op cases of the kit: every op of the table on a few small shapes and parameter choices.

Shapes are small on purpose: the kit must run in seconds on numpy and in about a minute
in Triton's interpreter. Inputs are drawn from a seed derived from the case's id, so a
failure reproduces exactly.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from topgrad.indexing import basic_index


@dataclass(frozen=True)
class Arr:
    """A random input array: `standard_normal(shape) * scale + offset` (or fixed `values`)."""

    shape: tuple[int, ...]
    scale: float = 1.0
    offset: float = 0.0
    positive: bool = False  # |normal| + 0.5, for variances
    values: tuple[float, ...] | None = None


@dataclass(frozen=True)
class Case:
    """One application of one op: positional inputs, keyword parameters, what to expect."""

    op: str
    label: str
    args: tuple[Any, ...]
    params: dict[str, Any] = field(default_factory=dict)
    raises: type[Exception] | None = None  # the forward must raise this (incompatible shapes)
    fd: bool = True  # check the reference's gradient against central differences (not at kinks)
    constants: tuple[int, ...] = ()  # positional inputs made with requires_grad=False: no gradient

    @property
    def id(self) -> str:
        """"Op[label]": the case's name in reports and pytest ids."""
        return f"{self.op}[{self.label}]"

    def seed(self) -> int:
        """A seed derived from the id, so a case draws the same inputs on every run and machine."""
        return zlib.crc32(self.id.encode())

    def materialize(self) -> tuple[list[Any], dict[str, Any]]:
        """The inputs as float64 arrays holding float32-representable values (scalars, None as is)."""
        rng = np.random.default_rng(self.seed())

        def draw(spec: Any) -> Any:
            if not isinstance(spec, Arr):
                return spec
            if spec.values is not None:
                data = np.array(spec.values, dtype=np.float64).reshape(spec.shape)
            else:
                data = rng.standard_normal(spec.shape)
                data = np.abs(data) + 0.5 if spec.positive else data * spec.scale + spec.offset
            return np.asarray(data, dtype=np.float32).astype(np.float64)  # 0-d stays an array

        return [draw(a) for a in self.args], {k: draw(v) for k, v in self.params.items()}


def _binary(op: str) -> list[Case]:
    sym = "+" if op == "Add" else "*"
    return [
        Case(op, f"(2,3){sym}(2,3)", (Arr((2, 3)), Arr((2, 3)))),
        Case(op, f"(2,3){sym}(3,)", (Arr((2, 3)), Arr((3,)))),
        Case(op, f"(2,1,4){sym}(3,1)", (Arr((2, 1, 4)), Arr((3, 1)))),
        Case(op, f"(1,3){sym}(4,1)", (Arr((1, 3)), Arr((4, 1)))),
        Case(op, f"2.5{sym}(2,3)", (2.5, Arr((2, 3)))),
        Case(op, f"(2,3){sym}-1.5", (Arr((2, 3)), -1.5)),
        Case(op, f"(){sym}(3,)", (Arr(()), Arr((3,)))),  # numpy's sums of 0-d results are scalars
        Case(op, f"(){sym}()", (Arr(()), Arr(()))),
        Case(op, f"(0,3){sym}(3,) empty batch", (Arr((0, 3)), Arr((3,)))),
        Case(op, f"(2,3){sym}(4,) raises", (Arr((2, 3)), Arr((4,))), raises=ValueError),
    ]


def _division() -> list[Case]:
    """Divisors |normal| + 0.5: far from 0, where float32 and float64 quotients part."""
    return [
        Case("Div", "(2,3)/(2,3)", (Arr((2, 3)), Arr((2, 3), positive=True))),
        Case("Div", "(2,3)/(3,)", (Arr((2, 3)), Arr((3,), positive=True))),
        Case("Div", "(3,1)/(2,1,4)", (Arr((3, 1)), Arr((2, 1, 4), positive=True))),
        Case("Div", "2.5/(2,3)", (2.5, Arr((2, 3), positive=True))),
        Case("Div", "(2,3)/-1.5", (Arr((2, 3)), -1.5)),
        Case("Div", "()/(3,)", (Arr(()), Arr((3,), positive=True))),
        Case("Div", "()/()", (Arr(()), Arr((), positive=True))),
        Case("Div", "(0,3)/(3,) empty batch", (Arr((0, 3)), Arr((3,), positive=True))),
        Case("Div", "(2,3)/(4,) raises", (Arr((2, 3)), Arr((4,))), raises=ValueError),
    ]


def _reduction(op: str) -> list[Case]:
    return [
        Case(op, "(2,3,4) all", (Arr((2, 3, 4)),), {"axis": None, "keepdims": False}),
        Case(op, "(2,3,4) axis=1", (Arr((2, 3, 4)),), {"axis": 1, "keepdims": False}),
        Case(op, "(2,3,4) axis=(0,2) keepdims", (Arr((2, 3, 4)),), {"axis": (0, 2), "keepdims": True}),
        Case(op, "(3,5) axis=-1 keepdims", (Arr((3, 5)),), {"axis": -1, "keepdims": True}),
        Case(op, "(3,5) all keepdims", (Arr((3, 5)),), {"axis": None, "keepdims": True}),
    ]


_RELU_AT_ZERO = (0.0, 1.0, -1.0, 0.0, 2.0, -0.0, 0.5, 0.0)
_TIES = (1.0, 3.0, 3.0, 0.5, -2.0, -2.0, -2.0, -2.0)  # the maximum reached twice, then four times

_POOL_TIES = (2.0, 2.0, -1.0, 0.0, 1.0, 2.0, -1.0, -1.0, 5.0, 0.0, 3.0, 3.0, 0.0, 5.0, 3.0, 3.0)
"""2x2 windows whose maximum is reached three times, once, twice and four times."""

CASES: list[Case] = [
    *_binary("Add"),
    *_binary("Mul"),
    *_division(),
    *_reduction("Sum"),
    Case("Sum", "() all", (Arr(()),), {"axis": None, "keepdims": False}),
    Case("Sum", "(0,3) axis=1 empty batch", (Arr((0, 3)),), {"axis": 1, "keepdims": False}),
    Case("Sum", "(0,3) axis=0 of nothing", (Arr((0, 3)),), {"axis": 0, "keepdims": False}),  # zeros
    *_reduction("Mean"),
    Case("Mean", "() all", (Arr(()),), {"axis": None, "keepdims": False}),
    Case("Mean", "(0,3) axis=1 empty batch", (Arr((0, 3)),), {"axis": 1, "keepdims": False}),
    Case("Max", "(2,3,4) all", (Arr((2, 3, 4)),), {"axis": None, "keepdims": False}),
    Case("Max", "(2,3,4) axis=1", (Arr((2, 3, 4)),), {"axis": 1, "keepdims": False}),
    Case("Max", "(2,3,4) axes=(0,2) keepdims", (Arr((2, 3, 4)),), {"axis": (0, 2), "keepdims": True}),
    Case("Max", "() all keepdims", (Arr(()),), {"axis": None, "keepdims": True}),
    Case("Max", "(2,4) ties", (Arr((2, 4), values=_TIES),), {"axis": -1, "keepdims": False}, fd=False),
    Case("Max", "(0,3) axis=1 empty batch", (Arr((0, 3)),), {"axis": 1, "keepdims": False}),
    Case("Max", "(2,0) axis=1 raises", (Arr((2, 0)),), {"axis": 1, "keepdims": False}, raises=ValueError),
    Case("ReLU", "(3,4)", (Arr((3, 4)),)),
    Case("ReLU", "(2,4) zeros", (Arr((2, 4), values=_RELU_AT_ZERO),), fd=False),
    Case("ReLU", "() positive", (Arr((), values=(0.75,)),)),
    Case("ReLU", "() negative", (Arr((), values=(-1.25,)),)),
    Case("ReLU", "(0,3) empty batch", (Arr((0, 3)),)),
    Case("Exp", "(3,4)", (Arr((3, 4)),)),
    Case("Exp", "(2,3,2) ~3", (Arr((2, 3, 2), offset=3.0),)),
    Case("Exp", "()", (Arr(()),)),
    Case("Exp", "(0,3) empty batch", (Arr((0, 3)),)),
    Case("Log", "(3,4) positive", (Arr((3, 4), positive=True),)),
    Case("Log", "(5,) ~100", (Arr((5,), scale=10.0, offset=100.0),)),
    Case("Log", "() positive", (Arr((), positive=True),)),
    Case("Log", "(0,3) empty batch", (Arr((0, 3), positive=True),)),
    Case("Sqrt", "(3,4) positive", (Arr((3, 4), positive=True),)),
    Case("Sqrt", "(2,4) squares", (Arr((2, 4), values=(0.25, 1.0, 4.0, 9.0, 1e-6, 100.0, 2.0, 0.5)),),
         fd=False),  # central differences would step across 0 at 1e-6
    Case("Sqrt", "() positive", (Arr((), positive=True),)),
    Case("Sqrt", "(0,3) empty batch", (Arr((0, 3), positive=True),)),
    Case("Abs", "(3,4)", (Arr((3, 4)),)),
    Case("Abs", "(2,4) zeros", (Arr((2, 4), values=_RELU_AT_ZERO),), fd=False),  # the kink: gradient 0
    Case("Abs", "()", (Arr(()),)),
    Case("Abs", "(0,3) empty batch", (Arr((0, 3)),)),
    Case("Tanh", "(3,4) x3", (Arr((3, 4), scale=3.0),)),
    Case("Tanh", "(2,5) small", (Arr((2, 5), scale=0.01),)),
    Case("Tanh", "()", (Arr(()),)),
    Case("Tanh", "(0,3) empty batch", (Arr((0, 3)),)),
    Case("Sigmoid", "(3,4) x4", (Arr((3, 4), scale=4.0),)),
    Case("Sigmoid", "(2,3,2) ~-6", (Arr((2, 3, 2), offset=-6.0),)),
    Case("Sigmoid", "()", (Arr(()),)),
    Case("Sigmoid", "(0,3) empty batch", (Arr((0, 3)),)),
    Case("LogSoftmax", "(3,5) axis=-1", (Arr((3, 5)),), {"axis": -1}),
    Case("LogSoftmax", "(4,3) axis=0", (Arr((4, 3)),), {"axis": 0}),
    Case("LogSoftmax", "(2,3,4) axis=1", (Arr((2, 3, 4)),), {"axis": 1}),
    Case("LogSoftmax", "(2,6) logits ~1000", (Arr((2, 6), scale=20.0, offset=1000.0),), {"axis": -1}),
    Case("LogSoftmax", "() 0-d", (Arr(()),), {"axis": -1}),  # PyTorch's: 0, gradient 0
    Case("LogSoftmax", "(0,5) axis=-1 empty batch", (Arr((0, 5)),), {"axis": -1}),
    Case("LogSoftmax", "(0,5) axis=0 empty axis", (Arr((0, 5)),), {"axis": 0}),  # max() of nothing fails
    Case("Softmax", "(3,5) axis=-1", (Arr((3, 5)),), {"axis": -1}),
    Case("Softmax", "(4,3) axis=0", (Arr((4, 3)),), {"axis": 0}),
    Case("Softmax", "(2,6) logits ~1000", (Arr((2, 6), scale=20.0, offset=1000.0),), {"axis": -1}),
    Case("Softmax", "() 0-d", (Arr(()),), {"axis": -1}),
    Case("Softmax", "(0,5) axis=0 empty axis", (Arr((0, 5)),), {"axis": 0}),
    Case("Linear", "(4,3)@(3,5)+(5,)", (Arr((4, 3)), Arr((3, 5)), Arr((5,)))),
    Case("Linear", "(2,3,4)@(4,2) no bias", (Arr((2, 3, 4)), Arr((4, 2)), None)),
    Case("Linear", "(4,3)@(3,5)+(5,) constant x", (Arr((4, 3)), Arr((3, 5)), Arr((5,))), constants=(0,)),
    # zero-size axes: reshapes with -1 (numpy cannot infer it among 0 elements) fail on them
    Case("Linear", "(0,3)@(3,5)+(5,) empty batch", (Arr((0, 3)), Arr((3, 5)), Arr((5,)))),
    Case("Linear", "(2,3)@(3,0)+(0,) no outputs", (Arr((2, 3)), Arr((3, 0)), Arr((0,)))),
    Case("Linear", "(2,0)@(0,4)+(4,) no inputs", (Arr((2, 0)), Arr((0, 4)), Arr((4,)))),
    Case("Linear", "(2,3)@(4,5) raises", (Arr((2, 3)), Arr((4, 5)), None), raises=ValueError),
    Case("Reshape", "(2,3,4)->(6,4)", (Arr((2, 3, 4)),), {"shape": (6, 4)}),
    Case("Reshape", "(2,6)->(-1,)", (Arr((2, 6)),), {"shape": (-1,)}),
    Case("Reshape", "(4,6)->(2,-1,3)", (Arr((4, 6)),), {"shape": (2, -1, 3)}),
    Case("Reshape", "(1,1)->()", (Arr((1, 1)),), {"shape": ()}),
    Case("Reshape", "()->(1,-1,1)", (Arr(()),), {"shape": (1, -1, 1)}),
    Case("Reshape", "(0,6)->(0,2,3) empty batch", (Arr((0, 6)),), {"shape": (0, 2, 3)}),
    Case("Reshape", "(2,3)->(4,) raises", (Arr((2, 3)),), {"shape": (4,)}, raises=ValueError),
    Case("Permute", "(2,3,4)->(2,0,1)", (Arr((2, 3, 4)),), {"axes": (2, 0, 1)}),
    Case("Permute", "(3,5)->(1,0)", (Arr((3, 5)),), {"axes": (1, 0)}),
    Case("Permute", "(2,3,4,5)->(0,2,1,3)", (Arr((2, 3, 4, 5)),), {"axes": (0, 2, 1, 3)}),
    Case("Permute", "(0,3,2)->(2,0,1) empty batch", (Arr((0, 3, 2)),), {"axes": (2, 0, 1)}),
    Case("Permute", "(2,3) axes (0,0) raises", (Arr((2, 3)),), {"axes": (0, 0)}, raises=ValueError),
    Case("Slice", "(4,5)[1:3]", (Arr((4, 5)),), {"index": basic_index(np.s_[1:3], (4, 5))}),
    Case("Slice", "(2,3,4)[1,:,::2]", (Arr((2, 3, 4)),), {"index": basic_index(np.s_[1, :, ::2], (2, 3, 4))}),
    Case("Slice", "(3,4)[None,...,-1]", (Arr((3, 4)),), {"index": basic_index(np.s_[None, ..., -1], (3, 4))}),
    Case("Slice", "(2,3)[1,2] 0-d", (Arr((2, 3)),), {"index": basic_index(np.s_[1, 2], (2, 3))}),
    Case("Slice", "(4,5)[3:1] empty", (Arr((4, 5)),), {"index": basic_index(np.s_[3:1], (4, 5))}),
    Case("Concat", "(2,3)+(4,3) axis=0", (Arr((2, 3)), Arr((4, 3))), {"axis": 0}),
    Case("Concat", "(2,1,4)+(2,3,4)+(2,2,4) axis=1", (Arr((2, 1, 4)), Arr((2, 3, 4)), Arr((2, 2, 4))),
         {"axis": 1}),
    Case("Concat", "(2,3)+(2,0) axis=1", (Arr((2, 3)), Arr((2, 0))), {"axis": 1}),
    Case("Concat", "(2,3) alone", (Arr((2, 3)),), {"axis": 1}),
    Case("Concat", "(0,3)+(0,2) axis=1 empty batch", (Arr((0, 3)), Arr((0, 2))), {"axis": 1}),
    Case("Concat", "(2,3)+(3,3) axis=1 raises", (Arr((2, 3)), Arr((3, 3))), {"axis": 1}, raises=ValueError),
    Case("Conv2d", "3x3 s1 p0 bias", (Arr((2, 5, 5, 3)), Arr((3, 3, 3, 4)), Arr((4,))),
         {"stride": 1, "padding": 0}),
    Case("Conv2d", "3x3 s2 p1", (Arr((2, 5, 5, 2)), Arr((3, 3, 2, 3)), None), {"stride": 2, "padding": 1}),
    Case("Conv2d", "3x3 s1 p1 bias", (Arr((1, 4, 4, 2)), Arr((3, 3, 2, 2)), Arr((2,))),
         {"stride": 1, "padding": 1}),
    Case("Conv2d", "3x3 s1 p1 constant x", (Arr((2, 4, 4, 3)), Arr((3, 3, 3, 2)), Arr((2,))),
         {"stride": 1, "padding": 1}, constants=(0,)),
    Case("Conv2d", "3x3 s2 p1 constant x", (Arr((2, 5, 5, 2)), Arr((3, 3, 2, 3)), None),
         {"stride": 2, "padding": 1}, constants=(0,)),
    Case("Conv2d", "1x1 s1 p0 bias", (Arr((2, 3, 3, 2)), Arr((1, 1, 2, 3)), Arr((3,))),
         {"stride": 1, "padding": 0}),
    # Rectangular images and kernels, stride and padding as (h, w) pairs: a backend that reads
    # one number for both axes passes every square case above.
    Case("Conv2d", "(1,5,7,2) 3x2 s(1,2) p(2,0) bias", (Arr((1, 5, 7, 2)), Arr((3, 2, 2, 3)), Arr((3,))),
         {"stride": (1, 2), "padding": (2, 0)}),
    Case("Conv2d", "(2,6,4,3) 2x3 s(2,1) p(0,1)", (Arr((2, 6, 4, 3)), Arr((2, 3, 3, 2)), None),
         {"stride": (2, 1), "padding": (0, 1)}),
    # Padding as wide as the kernel or wider (whole rows and columns of output see only zeros), and
    # a stride longer than the image (one output position): forms an im2col that assumes the
    # kernel overlaps the image everywhere, or at least twice, gets wrong.
    Case("Conv2d", "(1,3,3,2) 2x2 s1 p2 bias", (Arr((1, 3, 3, 2)), Arr((2, 2, 2, 3)), Arr((3,))),
         {"stride": 1, "padding": 2}),
    Case("Conv2d", "(2,2,3,2) 1x1 s1 p(1,3)", (Arr((2, 2, 3, 2)), Arr((1, 1, 2, 2)), None),
         {"stride": 1, "padding": (1, 3)}),
    Case("Conv2d", "(2,3,4,2) 2x2 s5", (Arr((2, 3, 4, 2)), Arr((2, 2, 2, 3)), Arr((3,))),
         {"stride": 5, "padding": 0}),
    Case("Conv2d", "(1,4,3,1) 3x2 s(6,4) p1", (Arr((1, 4, 3, 1)), Arr((3, 2, 1, 2)), None),
         {"stride": (6, 4), "padding": 1}),
    # PyTorch's named paddings, which x.conv2d passes on as they are: 'same' keeps the image's size
    # (stride 1, odd kernels), 'valid' pads nothing; `topgrad.convolution.conv_geometry` reads both.
    Case("Conv2d", "(1,5,4,2) 3x3 same bias", (Arr((1, 5, 4, 2)), Arr((3, 3, 2, 3)), Arr((3,))),
         {"stride": 1, "padding": "same"}),
    Case("Conv2d", "(2,4,6,2) 3x5 same", (Arr((2, 4, 6, 2)), Arr((3, 5, 2, 2)), None),
         {"stride": 1, "padding": "same"}),
    Case("Conv2d", "(2,5,5,2) 3x3 s2 valid bias", (Arr((2, 5, 5, 2)), Arr((3, 3, 2, 3)), Arr((3,))),
         {"stride": 2, "padding": "valid"}),
    Case("Conv2d", "(0,5,5,3) 3x3 p1 bias empty batch", (Arr((0, 5, 5, 3)), Arr((3, 3, 3, 4)), Arr((4,))),
         {"stride": 1, "padding": 1}),
    Case("Conv2d", "(1,5,5,0) 3x3 bias Cin=0", (Arr((1, 5, 5, 0)), Arr((3, 3, 0, 4)), Arr((4,))),
         {"stride": 1, "padding": 0}),  # no input channels: the bias alone, as in PyTorch
    Case("Conv2d", "(2,5,5,3) w Cin=2 raises", (Arr((2, 5, 5, 3)), Arr((3, 3, 2, 4)), None),
         {"stride": 1, "padding": 0}, raises=ValueError),
    Case("MaxPool2d", "(2,4,4,3) 2x2", (Arr((2, 4, 4, 3)),), {"kernel_size": (2, 2), "stride": (2, 2),
                                                           "padding": (0, 0)}),
    Case("MaxPool2d", "(2,5,5,2) 3x3 s2 p1", (Arr((2, 5, 5, 2)),), {"kernel_size": (3, 3), "stride": (2, 2),
                                                                 "padding": (1, 1)}),
    Case("MaxPool2d", "(1,5,4,2) 3x2 s1 overlapping", (Arr((1, 5, 4, 2)),),
         {"kernel_size": (3, 2), "stride": (1, 1), "padding": (1, 0)}),
    Case("MaxPool2d", "(1,4,4,1) ties", (Arr((1, 4, 4, 1), values=_POOL_TIES),),
         {"kernel_size": (2, 2), "stride": (2, 2), "padding": (0, 0)}, fd=False),
    Case("MaxPool2d", "(0,4,4,3) 2x2 empty batch", (Arr((0, 4, 4, 3)),), {"kernel_size": (2, 2),
                                                                       "stride": (2, 2), "padding": (0, 0)}),
    Case("MaxPool2d", "(1,1,3,1) 2x2 raises", (Arr((1, 1, 3, 1)),), {"kernel_size": (2, 2), "stride": (2, 2),
                                                                    "padding": (0, 0)}, raises=ValueError),
    Case("BatchNorm", "(6,4) train running", (Arr((6, 4)), Arr((4,)), Arr((4,))),
         {"running_mean": Arr((4,)), "running_var": Arr((4,), positive=True), "training": True,
          "momentum": 0.1, "eps": 1e-5}),
    Case("BatchNorm", "(2,3,3,4) train", (Arr((2, 3, 3, 4)), Arr((4,)), Arr((4,))),
         {"training": True, "momentum": 0.1, "eps": 1e-5}),
    Case("BatchNorm", "(5,3) train momentum=0.3", (Arr((5, 3), scale=3.0, offset=2.0), Arr((3,)), Arr((3,))),
         {"running_mean": Arr((3,)), "running_var": Arr((3,), positive=True), "training": True,
          "momentum": 0.3, "eps": 1e-3}),
    Case("BatchNorm", "(5,3) eval", (Arr((5, 3)), Arr((3,)), Arr((3,))),
         {"running_mean": Arr((3,)), "running_var": Arr((3,), positive=True), "training": False,
          "momentum": 0.1, "eps": 1e-5}),
    # gamma and beta None: PyTorch's weight=None and bias=None (x.batchnorm(None, None) is allowed)
    Case("BatchNorm", "(6,4) train no gamma", (Arr((6, 4)), None, Arr((4,))),
         {"running_mean": Arr((4,)), "running_var": Arr((4,), positive=True), "training": True,
          "momentum": 0.1, "eps": 1e-5}),
    Case("BatchNorm", "(2,2,3,3) train no beta", (Arr((2, 2, 3, 3)), Arr((3,)), None),
         {"training": True, "momentum": 0.1, "eps": 1e-5}),
    Case("BatchNorm", "(5,3) train no gamma no beta", (Arr((5, 3)), None, None),
         {"running_mean": Arr((3,)), "running_var": Arr((3,), positive=True), "training": True,
          "momentum": 0.1, "eps": 1e-5}),
    Case("BatchNorm", "(4,3) eval no gamma no beta", (Arr((4, 3)), None, None),
         {"running_mean": Arr((3,)), "running_var": Arr((3,), positive=True), "training": False,
          "momentum": 0.1, "eps": 1e-5}),
    Case("BatchNorm", "(0,3) eval empty batch", (Arr((0, 3)), Arr((3,)), Arr((3,))),
         {"running_mean": Arr((3,)), "running_var": Arr((3,), positive=True), "training": False,
          "momentum": 0.1, "eps": 1e-5}),
    # one value per channel has no variance (and the running variance's n / (n - 1) divides by 0):
    # PyTorch refuses it in training
    Case("BatchNorm", "(1,3) train one value per channel raises", (Arr((1, 3)), Arr((3,)), Arr((3,))),
         {"running_mean": Arr((3,)), "running_var": Arr((3,), positive=True), "training": True,
          "momentum": 0.1, "eps": 1e-5}, raises=ValueError),
    Case("BatchNorm", "(6,4) gamma (3,) raises", (Arr((6, 4)), Arr((3,)), Arr((4,))),
         {"training": True, "momentum": 0.1, "eps": 1e-5}, raises=ValueError),
    # eval normalizes by the running statistics: without them there is nothing to normalize by
    # (PyTorch's batch_norm refuses it; the batch's own statistics would hide that none were kept)
    Case("BatchNorm", "(5,3) eval no running stats raises", (Arr((5, 3)), Arr((3,)), Arr((3,))),
         {"training": False, "momentum": 0.1, "eps": 1e-5}, raises=ValueError),
    Case("LayerNorm", "(4,6)", (Arr((4, 6)), Arr((6,)), Arr((6,))), {"eps": 1e-5}),
    Case("LayerNorm", "(2,3,5) eps=1e-3", (Arr((2, 3, 5), scale=2.0, offset=1.0), Arr((5,)), Arr((5,))),
         {"eps": 1e-3}),
    Case("LayerNorm", "(3,5) no gamma", (Arr((3, 5)), None, Arr((5,))), {"eps": 1e-5}),
    Case("LayerNorm", "(2,2,4) no beta", (Arr((2, 2, 4)), Arr((4,)), None), {"eps": 1e-5}),
    Case("LayerNorm", "(3,5) no gamma no beta", (Arr((3, 5)), None, None), {"eps": 1e-5}),
    Case("LayerNorm", "(0,6) empty batch", (Arr((0, 6)), Arr((6,)), Arr((6,))), {"eps": 1e-5}),
    Case("LayerNorm", "(4,6) gamma (5,) raises", (Arr((4, 6)), Arr((5,)), Arr((6,))), {"eps": 1e-5},
         raises=ValueError),
    Case("Attention", "(2,4,8)", (Arr((2, 4, 8)), Arr((2, 4, 8)), Arr((2, 4, 8))), {"causal": False}),
    Case("Attention", "(2,5,4) causal", (Arr((2, 5, 4)), Arr((2, 5, 4)), Arr((2, 5, 4))), {"causal": True}),
    # q (B, T, D), k (B, S, D), v (B, S, Dv): a backend written for T == S and Dv == D passes the two above.
    # Causal with T != S masks as PyTorch's is_causal does, aligned at the top left: query i sees keys 0..i.
    Case("Attention", "T=3 S=5", (Arr((2, 3, 4)), Arr((2, 5, 4)), Arr((2, 5, 4))), {"causal": False}),
    Case("Attention", "D=4 Dv=6", (Arr((2, 4, 4)), Arr((2, 4, 4)), Arr((2, 4, 6))), {"causal": False}),
    Case("Attention", "T=3 S=5 Dv=2 causal", (Arr((2, 3, 4)), Arr((2, 5, 4)), Arr((2, 5, 2))),
         {"causal": True}),
    Case("Attention", "T=5 S=3 causal", (Arr((1, 5, 4)), Arr((1, 3, 4)), Arr((1, 3, 4))), {"causal": True}),
    Case("Attention", "(0,4,8) causal empty batch", (Arr((0, 4, 8)), Arr((0, 4, 8)), Arr((0, 4, 8))),
         {"causal": True}),
    Case("Attention", "k D=6 raises", (Arr((2, 4, 8)), Arr((2, 4, 6)), Arr((2, 4, 8))), {"causal": False},
         raises=ValueError),
]
"""Every case the kit runs, grouped by op in the order of the op table (README); the optional ops
follow their kin (Div after Mul, Max after Mean, Exp, Log, Sqrt, Abs, Tanh and Sigmoid after ReLU,
Softmax after LogSoftmax, Permute, Slice and Concat after Reshape, MaxPool2d after Conv2d). Slice's
index is given as `Tensor.__getitem__` hands it to the op, in the canonical form of
`topgrad.indexing.basic_index`."""

OP_NAMES: list[str] = list(dict.fromkeys(case.op for case in CASES))

ARGUMENTS: dict[str, tuple[str, ...]] = {
    "Add": ("a", "b"), "Mul": ("a", "b"), "Div": ("a", "b"), "Linear": ("x", "w", "b"),
    "Conv2d": ("x", "w", "b"),
    "BatchNorm": ("x", "gamma", "beta"), "LayerNorm": ("x", "gamma", "beta"), "Attention": ("q", "k", "v"),
}
"""The names of each op's positional arguments, as the guide's table writes `Op.apply(...)`; an op
not listed takes one, `x` (Concat takes any number, `*xs`)."""


def argument(op: str, i: int) -> str:
    """Positional argument `i` of `op` as the kit's messages name it: "input 1 (w)", counted from 0 as
    the engine's messages, `graph()` and anomaly mode count the inputs in the same report."""
    names = ARGUMENTS.get(op, ("x",))
    name = f"xs[{i}]" if op == "Concat" else names[i] if i < len(names) else f"#{i}"
    return f"input {i} ({name})"

OPTIONAL_OPS: frozenset[str] = frozenset({"Div", "Max", "Exp", "Log", "Sqrt", "Abs", "Tanh", "Sigmoid",
                                           "Softmax", "Permute", "Slice", "Concat", "MaxPool2d"})
"""Ops beyond the twelve required ones: checked where a backend has them, reported as not provided
where it has not."""
