"""What both benchmarks time as a training step: the same batch and the same SGD step in each framework."""

from __future__ import annotations

from collections.abc import Callable

import _models_topgrad
import numpy as np
import topgrad
import torch
import torch.nn.functional as nnf
from topgrad import Tensor

LR = 0.01


def images(batch: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A batch of random NHWC images in [0, 1) and random labels."""
    rng = np.random.default_rng(seed + 1)
    x = rng.random((batch, 28, 28, 1), dtype=np.float32)
    return x, rng.integers(0, _models_topgrad.CLASSES, batch)


def training_steps(
    tgm: _models_topgrad.TopgradModel, thm: torch.nn.Module, tg_x: Tensor, th_x: torch.Tensor,
    labels: np.ndarray, device: str = "cpu",
) -> tuple[Callable[[], None], Callable[[], None]]:
    """One step each (forward, cross-entropy, backward, SGD update); zero_grad comes last, so a
    step starts without gradients and its peak memory counts them."""
    batch = len(labels)
    onehot = Tensor(np.eye(_models_topgrad.CLASSES, dtype=np.float32)[labels], requires_grad=False)
    th_y = torch.from_numpy(labels).to(device)
    tg_opt = topgrad.optim.SGD(list(tgm.params.values()), lr=LR)
    th_opt = torch.optim.SGD(thm.parameters(), lr=LR)

    def tg_step() -> None:
        loss = (tgm.forward(tg_x).logsoftmax(-1) * onehot).sum() * (-1.0 / batch)
        loss.backward()
        tg_opt.step()
        tg_opt.zero_grad()

    def th_step() -> None:
        nnf.cross_entropy(thm(th_x), th_y).backward()
        th_opt.step()
        th_opt.zero_grad()

    return tg_step, th_step
