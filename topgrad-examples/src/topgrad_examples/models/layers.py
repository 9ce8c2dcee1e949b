"""The few building blocks the example models share, written with topgrad's public Tensor API.

`Module` finds its tensors by walking its attributes (Tensors, Modules, lists of
Modules), so that a model's `parameters()` and its checkpoint names come for free.
A module lists in `buffer_names` the tensors that are state but not trained
(BatchNorm's running statistics).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from topgrad import Tensor, no_grad


@dataclass(frozen=True)
class TrainDefaults:
    """A model's default training recipe; `topgrad-train` options override each field."""

    optimizer: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-3
    batch_size: int = 128
    epochs: int = 3
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    warmup_steps: int = 0  # linear warm-up, then cosine decay to zero over the run


class Module:
    """Base class: tensors held in attributes are found by `named_tensors`."""

    buffer_names: tuple[str, ...] = ()
    defaults: TrainDefaults = TrainDefaults()

    def named_tensors(self, prefix: str = "") -> Iterator[tuple[str, Tensor, bool]]:
        """(dotted name, tensor, is_buffer) for every tensor of this module and its children."""
        for key, value in vars(self).items():
            name = prefix + key
            if isinstance(value, Tensor):
                yield name, value, key in self.buffer_names
            elif isinstance(value, Module):
                yield from value.named_tensors(name + ".")
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, Module):
                        yield from item.named_tensors(f"{name}.{i}.")

    def parameters(self) -> list[Tensor]:
        """The trained tensors, in a fixed order."""
        return [t for _, t, is_buffer in self.named_tensors() if not is_buffer]

    def state(self) -> dict[str, Tensor]:
        """Every tensor by name, parameters and buffers: what a checkpoint holds."""
        return {name: t for name, t, _ in self.named_tensors()}

    def forward(self, x: Tensor, training: bool = False) -> Tensor:
        raise NotImplementedError

    def __call__(self, x: Tensor, training: bool = False) -> Tensor:
        return self.forward(x, training=training)


def seed_stream(seed: int | None) -> Iterator[int | None]:
    """Distinct seeds for each layer's initialization, all derived from one seed (None: unseeded)."""
    rng = np.random.default_rng(seed)
    while True:
        yield None if seed is None else int(rng.integers(2**31 - 1))


def scaled(t: Tensor, factor: float) -> Tensor:
    """`t * factor` as a new trainable leaf (computed outside the graph, where results are
    constants, then marked trainable)."""
    with no_grad():
        out = t * factor
    out.requires_grad = True
    return out


class Linear(Module):
    """x @ w + b, He-initialized."""

    def __init__(self, d_in: int, d_out: int, seed: int | None = None, gain: float = 1.0) -> None:
        self.w = Tensor.He(d_in, d_out, seed=seed)
        if gain != 1.0:
            self.w = scaled(self.w, gain)
        self.b = Tensor.zeros(d_out)

    def forward(self, x: Tensor, training: bool = False) -> Tensor:
        return x.linear(self.w, self.b)


class Conv(Module):
    """A 2-d convolution over NHWC images with an HWIO kernel, He-initialized."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1, padding: int | None = None,
        bias: bool = True, seed: int | None = None,
    ) -> None:
        self.w = Tensor.He(kernel, kernel, c_in, c_out, seed=seed)
        self.b = Tensor.zeros(c_out) if bias else None
        self.stride = stride
        self.padding = kernel // 2 if padding is None else padding

    def forward(self, x: Tensor, training: bool = False) -> Tensor:
        return x.conv2d(self.w, self.b, stride=self.stride, padding=self.padding)


class BatchNorm(Module):
    """Batch normalization over all axes but the last; running statistics are used at eval."""

    buffer_names = ("running_mean", "running_var")

    def __init__(self, channels: int, momentum: float = 0.1) -> None:
        self.gamma = Tensor.ones(channels)
        self.beta = Tensor.zeros(channels)
        self.running_mean = Tensor.zeros(channels)
        self.running_var = Tensor.ones(channels)
        self.momentum = momentum

    def forward(self, x: Tensor, training: bool = False) -> Tensor:
        return x.batchnorm(self.gamma, self.beta, self.running_mean, self.running_var,
                           training=training, momentum=self.momentum)


class LayerNorm(Module):
    """Layer normalization over the last axis."""

    def __init__(self, d: int) -> None:
        self.gamma = Tensor.ones(d)
        self.beta = Tensor.zeros(d)

    def forward(self, x: Tensor, training: bool = False) -> Tensor:
        return x.layernorm(self.gamma, self.beta)
