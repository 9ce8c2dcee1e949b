"""The few building blocks the example models share, written with topgrad's public Tensor API.

`Module` finds its tensors and sub-modules by walking its attributes (Tensors, Modules,
lists of Modules), so that a model's `parameters()`, its checkpoint names and its mode
come for free. A module lists in `buffer_names` the tensors that are state but not
trained (BatchNorm's running statistics).

As in PyTorch, a module is in training mode until `model.eval()` (and back with
`model.train()`), which sets `training` on it and every sub-module; `model(x)` follows
each module's mode, and `model(x, training=False)` (or `True`) overrides it for one call.
Only BatchNorm behaves differently in the two modes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeVar

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
    momentum: float = 0.9  # sgd only: Nesterov momentum when > 0 (topgrad-train's make_optimizer)
    warmup_steps: int = 0  # linear warm-up, then cosine decay to zero over the run

    def extras(self, warmup: int | None = None) -> str:
        """The settings beyond optimizer, lr, batch size and epochs that this recipe uses, for
        --help and a run's header: ", weight decay 0.01, warm-up 200 steps" ("" where none);
        `warmup`, where given, is the run's own (capped at a fifth of a short run)."""
        parts = [f"weight decay {self.weight_decay:g}"] if self.weight_decay else []
        if self.optimizer == "sgd":
            parts.append(f"Nesterov momentum {self.momentum:g}" if self.momentum else "no momentum")
        steps = self.warmup_steps if warmup is None else warmup
        if steps:
            parts.append(f"warm-up {steps} step{'s' if steps != 1 else ''}")
        return "".join(f", {p}" for p in parts)


M = TypeVar("M", bound="Module")


class Module:
    """Base class: tensors held in attributes are found by `named_tensors`, sub-modules
    (attributes, lists and tuples of Modules) by `modules`; `train()` / `eval()` set the mode."""

    buffer_names: tuple[str, ...] = ()
    defaults: TrainDefaults = TrainDefaults()
    training: bool = True  # as in PyTorch, a new module is in training mode

    def modules(self) -> Iterator[Module]:
        """This module and every sub-module under it, depth first."""
        yield self
        for value in vars(self).values():
            items = value if isinstance(value, (list, tuple)) else (value,)
            for item in items:
                if isinstance(item, Module):
                    yield from item.modules()

    def train(self: M, mode: bool = True) -> M:
        """Set training mode (`mode=False`: eval mode) on this module and all its sub-modules;
        returns the module, so `model = build("deepconv").eval()` works."""
        for module in self.modules():
            module.training = bool(mode)
        return self

    def eval(self: M) -> M:
        """Eval mode: BatchNorm uses its running statistics and leaves them as they are."""
        return self.train(False)

    def is_training(self, training: bool | None = None) -> bool:
        """The mode for one call: `training` when given, else this module's mode."""
        return self.training if training is None else bool(training)

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

    def forward(self, x: Tensor, training: bool | None = None) -> Tensor:
        """The output for `x`. `training`: True or False for this call, None (the default) for
        each module's own mode; a module passes it on to its sub-modules unchanged."""
        raise NotImplementedError

    def __call__(self, x: Tensor, training: bool | None = None) -> Tensor:
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

    def forward(self, x: Tensor, training: bool | None = None) -> Tensor:
        """x @ w + b."""
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

    def forward(self, x: Tensor, training: bool | None = None) -> Tensor:
        """The convolution of NHWC x, with this layer's stride and padding."""
        return x.conv2d(self.w, self.b, stride=self.stride, padding=self.padding)


class BatchNorm(Module):
    """Batch normalization over all axes but the last: in training mode it normalizes with the
    batch's statistics and updates the running ones; in eval mode it uses the running ones."""

    buffer_names = ("running_mean", "running_var")

    def __init__(self, channels: int, momentum: float = 0.1) -> None:
        self.gamma = Tensor.ones(channels)
        self.beta = Tensor.zeros(channels)
        self.running_mean = Tensor.zeros(channels, requires_grad=False)  # state, not trained: constants,
        self.running_var = Tensor.ones(channels, requires_grad=False)  # as PyTorch's buffers
        self.momentum = momentum

    def forward(self, x: Tensor, training: bool | None = None) -> Tensor:
        """x normalized per channel: by batch statistics in training mode, else by the running ones."""
        return x.batchnorm(self.gamma, self.beta, running_mean=self.running_mean,
                           running_var=self.running_var, training=self.is_training(training),
                           momentum=self.momentum)


class LayerNorm(Module):
    """Layer normalization over the last axis."""

    def __init__(self, d: int) -> None:
        self.gamma = Tensor.ones(d)
        self.beta = Tensor.zeros(d)

    def forward(self, x: Tensor, training: bool | None = None) -> Tensor:
        """x normalized over the last axis, then scaled and shifted."""
        return x.layernorm(self.gamma, self.beta)
