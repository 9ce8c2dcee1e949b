"""A small transformer that reads an image as a sequence: each of the 28 rows is a token.

Demonstrates `topgrad.attention` (single head, softmax(q kᵀ / √D) v), `layernorm` in
the pre-norm arrangement x + attention(layernorm(x)), a learned positional embedding
added by broadcasting, and a mean over tokens before the linear head.
"""

from __future__ import annotations

from collections.abc import Iterator

from topgrad import Tensor, attention

from topgrad_examples.models.layers import (
    LayerNorm,
    Linear,
    Module,
    TrainDefaults,
    scaled,
    seed_stream,
)

QKV_GAIN = 0.25  # q, k, v start at a quarter of He scale: near-uniform attention, steadier early steps


class AttentionBlock(Module):
    """x + attention(layernorm(x)), then x + mlp(layernorm(x))."""

    def __init__(self, d: int, hidden: int, seeds: Iterator[int | None], residual_gain: float) -> None:
        self.norm1 = LayerNorm(d)
        self.q = Linear(d, d, seed=next(seeds), gain=QKV_GAIN)
        self.k = Linear(d, d, seed=next(seeds), gain=QKV_GAIN)
        self.v = Linear(d, d, seed=next(seeds), gain=QKV_GAIN)
        self.out = Linear(d, d, seed=next(seeds), gain=residual_gain)
        self.norm2 = LayerNorm(d)
        self.mlp_in = Linear(d, hidden, seed=next(seeds))
        self.mlp_out = Linear(hidden, d, seed=next(seeds), gain=residual_gain)

    def forward(self, x: Tensor, training: bool | None = None) -> Tensor:
        """Tokens (B, T, d) through both pre-norm residual halves; `training` is unused (no BatchNorm)."""
        h = self.norm1(x)
        x = x + self.out(attention(self.q(h), self.k(h), self.v(h)))
        h = self.norm2(x)
        return x + self.mlp_out(self.mlp_in(h).relu())


class AttentionNet(Module):
    """Rows as tokens: linear embedding + positional embedding, pre-norm blocks, mean, linear head."""

    defaults = TrainDefaults(optimizer="adamw", lr=3e-3, batch_size=32, epochs=3, weight_decay=0.01,
                             warmup_steps=200)

    def __init__(self, d: int = 64, depth: int = 2, hidden: int = 128, num_classes: int = 10,
                 seed: int | None = 0) -> None:
        seeds = seed_stream(seed)
        self.embed = Linear(28, d, seed=next(seeds))
        self.position = scaled(Tensor.randn(28, d, seed=next(seeds)), 0.1)
        # the layers that write into the residual stream start small, so each block starts near identity
        gain = (2.0 * depth) ** -0.5
        self.blocks = [AttentionBlock(d, hidden, seeds, gain) for _ in range(depth)]
        self.norm = LayerNorm(d)
        self.head = Linear(d, num_classes, seed=next(seeds))

    def forward(self, x: Tensor, training: bool | None = None) -> Tensor:
        """Logits (B, classes) for images: each of the 28 rows a token, pooled by the mean over tokens."""
        h = self.embed(x.reshape(x.shape[0], 28, 28)) + self.position  # (B, 28 tokens, d)
        for block in self.blocks:
            h = block(h, training)
        return self.head(self.norm(h).mean(axis=1))
