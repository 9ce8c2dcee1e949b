"""A small convolutional network that downsamples with strided convolutions instead of pooling.

Demonstrates `conv2d` on NHWC images with HWIO kernels, `stride` and `padding`, and
`flatten` into a linear head: 28x28 -> 14x14 -> 7x7 feature maps, then two linear layers.
"""

from __future__ import annotations

from topgrad import Tensor

from topgrad_examples.models.layers import Conv, Linear, Module, TrainDefaults, seed_stream


class ConvNet(Module):
    """conv 3x3 (32) -> conv 3x3 stride 2 (64) -> conv 3x3 stride 2 (64) -> linear 128 -> linear 10."""

    defaults = TrainDefaults(optimizer="adam", lr=1e-3, batch_size=128, epochs=3)

    def __init__(self, channels: tuple[int, int, int] = (32, 64, 64), hidden: int = 128,
                 num_classes: int = 10, seed: int | None = 0) -> None:
        seeds = seed_stream(seed)
        c1, c2, c3 = channels
        self.conv1 = Conv(1, c1, 3, stride=1, seed=next(seeds))   # 28x28
        self.conv2 = Conv(c1, c2, 3, stride=2, seed=next(seeds))  # 14x14
        self.conv3 = Conv(c2, c3, 3, stride=2, seed=next(seeds))  # 7x7
        self.fc = Linear(7 * 7 * c3, hidden, seed=next(seeds))
        self.head = Linear(hidden, num_classes, seed=next(seeds))

    def forward(self, x: Tensor, training: bool | None = None) -> Tensor:
        """Logits (B, classes) for NHWC images: three ReLU convolutions, a hidden layer, the head."""
        h = self.conv1(x).relu()
        h = self.conv2(h).relu()
        h = self.conv3(h).relu()
        h = self.fc(h.flatten(1)).relu()
        return self.head(h)
