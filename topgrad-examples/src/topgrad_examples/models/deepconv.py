"""A small residual network (ResNet style) with batch normalization.

Demonstrates what a deeper graph needs from the engine: residual connections (a
tensor used twice, its gradients summed), `batchnorm` with running statistics that
are updated in training and used at evaluation, strided convolutions with a 1x1
projection on the shortcut, and global average pooling as a `mean` over H and W.

    stem:    conv 3x3 (c) + BN + ReLU                      28x28
    stage 1: residual block (c)                            28x28
    stage 2: residual block, stride 2 (2c)                 14x14
    stage 3: residual block, stride 2 (4c)                 7x7
    head:    mean over H, W -> linear 10

Each block computes relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), where the
shortcut is x itself, or bn(conv1x1 stride 2 (x)) where the shape changes.
"""

from __future__ import annotations

from collections.abc import Iterator

from topgrad import Tensor

from topgrad_examples.models.layers import BatchNorm, Conv, Linear, Module, TrainDefaults, seed_stream


class ResidualBlock(Module):
    """Two 3x3 conv + BN layers around an identity (or strided 1x1 projection) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int, seeds: Iterator[int | None]) -> None:
        self.conv1 = Conv(c_in, c_out, 3, stride=stride, bias=False, seed=next(seeds))
        self.bn1 = BatchNorm(c_out)
        self.conv2 = Conv(c_out, c_out, 3, bias=False, seed=next(seeds))
        self.bn2 = BatchNorm(c_out)
        self.project = None
        if stride != 1 or c_in != c_out:
            self.project = Conv(c_in, c_out, 1, stride=stride, padding=0, bias=False, seed=next(seeds))
            self.project_bn = BatchNorm(c_out)

    def forward(self, x: Tensor, training: bool | None = None) -> Tensor:
        """relu(bn(conv(relu(bn(conv(x))))) + shortcut), the shortcut projected where the shape changes."""
        h = self.bn1(self.conv1(x), training).relu()
        h = self.bn2(self.conv2(h), training)
        shortcut = x if self.project is None else self.project_bn(self.project(x), training)
        return (h + shortcut).relu()


class DeepConvNet(Module):
    """Stem, three residual stages (c, 2c, 4c channels), global average pooling, linear head."""

    defaults = TrainDefaults(optimizer="adam", lr=3e-3, batch_size=64, epochs=2)

    def __init__(self, width: int = 16, num_classes: int = 10, seed: int | None = 0) -> None:
        seeds = seed_stream(seed)
        self.stem = Conv(1, width, 3, bias=False, seed=next(seeds))
        self.stem_bn = BatchNorm(width)
        self.blocks = [
            ResidualBlock(width, width, 1, seeds),
            ResidualBlock(width, 2 * width, 2, seeds),
            ResidualBlock(2 * width, 4 * width, 2, seeds),
        ]
        self.head = Linear(4 * width, num_classes, seed=next(seeds))

    def forward(self, x: Tensor, training: bool | None = None) -> Tensor:
        """Logits (B, classes) for NHWC images; `training` picks batch or running statistics."""
        h = self.stem_bn(self.stem(x), training).relu()
        for block in self.blocks:
            h = block(h, training)
        return self.head(h.mean(axis=(1, 2)))
