"""Optimizers with PyTorch's update rules and defaults; the array math goes through the backend.

Each step calls the backend's `sgd_update` / `adam_update`, which a backend may implement
as one fused kernel; the defaults in `topgrad.backend.Backend` compose the array helpers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from numbers import Real
from typing import Any

from topgrad.registry import get_backend
from topgrad.tensor import Tensor


class Optimizer:
    """Holds the parameters; `zero_grad` clears their gradients, `step` updates them."""

    def __init__(self, params: Iterable[Tensor], lr: float) -> None:
        name = type(self).__name__
        if isinstance(params, Tensor) or isinstance(params, dict) or not isinstance(params, Iterable):
            hint = ("pass its .values()" if isinstance(params, dict)
                    else "wrap a single Tensor in a list" if isinstance(params, Tensor)
                    else "pass a list of the Tensors to train")
            raise TypeError(f"{name} takes an iterable of Tensors, got {type(params).__name__}: {hint}")
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{name} got an empty parameter list")
        for p in self.params:
            if not isinstance(p, Tensor):
                raise TypeError(f"{name} takes Tensors, got {type(p).__name__}")
            if p._op is not None:  # as torch.optim: "can't optimize a non-leaf Tensor"
                raise ValueError(f"{name}: a Tensor made by {type(p._op).__name__} is not a leaf; "
                                 "optimize the leaves it was computed from")
        if len({id(p) for p in self.params}) < len(self.params):
            raise ValueError(f"{name}: a Tensor appears twice in the parameters (it would be updated twice)")
        _check_non_negative(self, learning_rate=lr)
        self.lr = lr
        self.state: list[dict[str, Any]] = [{} for _ in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        backend = get_backend()
        for p, state in zip(self.params, self.state):
            if p.grad is not None:
                self._update(backend, p, state)

    def _update(self, backend: Any, p: Tensor, state: dict[str, Any]) -> None:
        raise NotImplementedError


def _check_non_negative(opt: Optimizer, **values: float) -> None:
    """torch.optim refuses a negative learning rate, momentum, weight decay and eps; so do we,
    and anything that is not a finite number."""
    for name, value in values.items():
        if not isinstance(value, Real) or isinstance(value, bool) or not 0 <= value < math.inf:
            raise ValueError(
                f"{type(opt).__name__}: {name.replace('_', ' ')} must be a number >= 0, got {value!r}"
            )


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov momentum and weight decay."""

    def __init__(
        self, params: Iterable[Tensor], lr: float, momentum: float = 0.0,
        weight_decay: float = 0.0, nesterov: bool = False, dampening: float = 0.0,
    ) -> None:
        super().__init__(params, lr)
        _check_non_negative(self, momentum=momentum, weight_decay=weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: Nesterov momentum needs momentum > 0 and dampening 0")
        self.momentum, self.weight_decay, self.nesterov, self.dampening = (
            momentum, weight_decay, nesterov, dampening)

    def _update(self, backend: Any, p: Tensor, state: dict[str, Any]) -> None:
        p.data, buf = backend.sgd_update(
            p.data, p.grad, state.get("momentum_buffer"), lr=self.lr, momentum=self.momentum,
            dampening=self.dampening, weight_decay=self.weight_decay, nesterov=self.nesterov,
        )
        if buf is not None:
            state["momentum_buffer"] = buf


class Adam(Optimizer):
    """Adam (Kingma and Ba); weight decay is added to the gradient, as torch.optim.Adam does."""

    decoupled = False

    def __init__(
        self, params: Iterable[Tensor], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8, weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr)
        _check_non_negative(self, eps=eps, weight_decay=weight_decay)
        pair = tuple(betas) if isinstance(betas, (tuple, list)) else ()
        if len(pair) != 2 or not all(isinstance(b, Real) and 0.0 <= b < 1.0 for b in pair):
            raise ValueError(f"{type(self).__name__}: betas must be two numbers in [0, 1), got {betas!r}")
        self.betas, self.eps, self.weight_decay = betas, eps, weight_decay

    def _update(self, backend: Any, p: Tensor, state: dict[str, Any]) -> None:
        if not state:
            state.update(step=0, exp_avg=backend.zeros(p.shape), exp_avg_sq=backend.zeros(p.shape))
        state["step"] += 1
        p.data, state["exp_avg"], state["exp_avg_sq"] = backend.adam_update(
            p.data, p.grad, state["exp_avg"], state["exp_avg_sq"], step=state["step"], lr=self.lr,
            beta1=self.betas[0], beta2=self.betas[1], eps=self.eps,
            weight_decay=self.weight_decay, decoupled=self.decoupled,
        )


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov and Hutter), as torch.optim.AdamW."""

    decoupled = True

    def __init__(
        self, params: Iterable[Tensor], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8, weight_decay: float = 1e-2,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay)
