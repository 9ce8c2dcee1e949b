"""The numpy backend's op table: one small module per op family, every op a `topgrad.Op`."""

from topgrad_numpy.ops.activation import LogSoftmax, ReLU, Softmax
from topgrad_numpy.ops.attention import Attention
from topgrad_numpy.ops.batchnorm import BatchNorm
from topgrad_numpy.ops.conv import Conv2d
from topgrad_numpy.ops.elementwise import Add, Div, Mul
from topgrad_numpy.ops.layernorm import LayerNorm
from topgrad_numpy.ops.linear import Linear
from topgrad_numpy.ops.pointwise import Abs, Exp, Log, Sigmoid, Sqrt, Tanh
from topgrad_numpy.ops.pool import MaxPool2d
from topgrad_numpy.ops.reduce import Max, Mean, Sum
from topgrad_numpy.ops.shape import Concat, Permute, Reshape, Slice

__all__ = [
    "Abs",
    "Add",
    "Attention",
    "BatchNorm",
    "Concat",
    "Conv2d",
    "Div",
    "Exp",
    "LayerNorm",
    "Linear",
    "Log",
    "LogSoftmax",
    "Max",
    "MaxPool2d",
    "Mean",
    "Mul",
    "Permute",
    "ReLU",
    "Reshape",
    "Sigmoid",
    "Slice",
    "Softmax",
    "Sqrt",
    "Sum",
    "Tanh",
]
