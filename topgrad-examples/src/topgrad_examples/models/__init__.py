"""The example models, by the name `topgrad-train` takes."""

from __future__ import annotations

from typing import Protocol

from topgrad_examples.models.attention import AttentionNet
from topgrad_examples.models.conv import ConvNet
from topgrad_examples.models.deepconv import DeepConvNet
from topgrad_examples.models.layers import Module, TrainDefaults
from topgrad_examples.models.mlp import MLP


class ModelClass(Protocol):
    """What `build` and `topgrad-train` need of a model class: its recipe, and a seeded constructor."""

    defaults: TrainDefaults

    def __call__(self, *, seed: int | None = ...) -> Module: ...


MODELS: dict[str, ModelClass] = {
    "mlp": MLP,
    "conv": ConvNet,
    "deepconv": DeepConvNet,
    "attention": AttentionNet,
}


def build(name: str, seed: int | None = 0) -> Module:
    """A fresh model by name, its initialization fixed by `seed`."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name](seed=seed)


__all__ = ["MLP", "MODELS", "AttentionNet", "ConvNet", "DeepConvNet", "Module", "TrainDefaults", "build"]
