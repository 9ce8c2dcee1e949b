"""The example models, by the name `topgrad-train` takes."""

from __future__ import annotations

from topgrad_examples.models.attention import AttentionNet
from topgrad_examples.models.conv import ConvNet
from topgrad_examples.models.deepconv import DeepConvNet
from topgrad_examples.models.layers import Module, TrainDefaults
from topgrad_examples.models.mlp import MLP

MODELS: dict[str, type[Module]] = {
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
