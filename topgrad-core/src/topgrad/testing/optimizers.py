"""Optimizer steps on the backend (its `sgd_update` / `adam_update`) against torch's rules in float64."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from topgrad import optim
from topgrad.registry import get_backend
from topgrad.tensor import Tensor
from topgrad.testing.outcome import Outcome, compare, host_values, merge

STEPS = 3


def sgd_reference(
    p: Any, grads: list[Any], lr: float, momentum: float = 0.0, dampening: float = 0.0,
    weight_decay: float = 0.0, nesterov: bool = False,
) -> list[Any]:
    """The parameter after each step of torch.optim.SGD, in float64."""
    buf, out = None, []
    for g in grads:
        g = g + weight_decay * p
        if momentum:
            buf = g.copy() if buf is None else momentum * buf + (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        p = p - lr * g
        out.append(p)
    return out


def adam_reference(
    p: Any, grads: list[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8, weight_decay: float = 0.0, decoupled: bool = False,
) -> list[Any]:
    """The parameter after each step of torch.optim.Adam (AdamW when `decoupled`), in float64."""
    m, v, out = np.zeros_like(p), np.zeros_like(p), []
    for step, g in enumerate(grads, start=1):
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        m_hat, v_hat = m / (1 - betas[0] ** step), v / (1 - betas[1] ** step)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
        out.append(p)
    return out


def _run(
    make: Callable[[list[Tensor]], optim.Optimizer], reference: Callable[..., list[Any]], rtol: float
) -> Outcome:
    rng = np.random.default_rng(7)
    p0 = rng.standard_normal((3, 4)).astype(np.float32).astype(np.float64)
    grads = [rng.standard_normal((3, 4)).astype(np.float32).astype(np.float64) for _ in range(STEPS)]
    backend = get_backend()
    param = Tensor(p0.astype(np.float32))
    opt = make([param])
    outcomes: list[Outcome] = []
    for step, (g, want) in enumerate(zip(grads, reference(p0, grads)), start=1):
        opt.zero_grad()
        param.grad = backend.asarray(g.astype(np.float32))
        given = param.data
        opt.step()  # a dtype change: core's step refuses it, naming the update (its TypeError is the row's)
        reshaped = _reshaped(opt, step, given, param.data)
        if reshaped is not None:  # the next step would fail on its .grad, blaming that instead
            return merge([*outcomes, reshaped])
        got = host_values(param.data)
        outcomes.append(compare(f"parameter after step {step}", got, want, rtol))
    return merge(outcomes)


def _reshaped(opt: optim.Optimizer, step: int, given: Any, new: Any) -> Outcome | None:
    """A failure where the step returned the parameter in another shape than it was given, naming the
    backend's update that did it; None where it kept it, as torch.optim's steps do. (A dtype change
    never gets here: the step itself refuses it.)"""
    was, now = tuple(given.shape), tuple(new.shape)
    if was == now:
        return None
    update = "sgd_update" if isinstance(opt, optim.SGD) else "adam_update"
    return Outcome.failed(f"step {step}: {update} returned the parameter with shape {now}, given {was}: an "
                          "update keeps the parameter's shape and dtype, as torch.optim's do")


OPTIMIZER_CHECKS: dict[str, Callable[[float], Outcome]] = {
    "SGD momentum=0.9": lambda rtol: _run(
        lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
        lambda p, gs: sgd_reference(p, gs, lr=0.1, momentum=0.9), rtol),
    "SGD nesterov, weight_decay": lambda rtol: _run(
        lambda ps: optim.SGD(ps, lr=0.05, momentum=0.8, weight_decay=0.1, nesterov=True),
        lambda p, gs: sgd_reference(p, gs, lr=0.05, momentum=0.8, weight_decay=0.1, nesterov=True), rtol),
    "Adam": lambda rtol: _run(
        lambda ps: optim.Adam(ps, lr=0.01),
        lambda p, gs: adam_reference(p, gs, lr=0.01), rtol),
    "Adam weight_decay": lambda rtol: _run(
        lambda ps: optim.Adam(ps, lr=0.01, betas=(0.8, 0.9), weight_decay=0.1),
        lambda p, gs: adam_reference(p, gs, lr=0.01, betas=(0.8, 0.9), weight_decay=0.1), rtol),
    "AdamW": lambda rtol: _run(
        lambda ps: optim.AdamW(ps, lr=0.01),
        lambda p, gs: adam_reference(p, gs, lr=0.01, weight_decay=1e-2, decoupled=True), rtol),
}
"""Each optimizer check by its row label; three steps, the parameter compared after each (and its
shape and dtype kept)."""
