"""Small helpers shared by the test modules: random data, comparison with PyTorch, sizes.

Every op test follows one pattern (`check_against_torch`): the same float32 inputs go
through a Topgrad function and a PyTorch function, the outputs are compared, both are
seeded with the same random upstream gradient, and the gradient of every input is compared.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import topgrad
import torch
from topgrad import Tensor

RTOL = ATOL = 1e-4


@dataclass(frozen=True)
class Sizes:
    """Upper bounds on test shapes; smaller where kernels run in an interpreter."""

    batch: int
    dim: int
    image: int
    channels: int
    tokens: int

    @staticmethod
    def for_run(interpreted: bool) -> Sizes:
        if interpreted:
            return Sizes(batch=3, dim=8, image=6, channels=3, tokens=5)
        return Sizes(batch=6, dim=24, image=12, channels=6, tokens=12)


def rand(shape: Sequence[int], seed: int, scale: float = 1.0) -> np.ndarray:
    """A float32 array of standard normal values (times `scale`), reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    return np.asarray(rng.standard_normal(tuple(shape)) * scale, dtype=np.float32)


def to_numpy(a: Any) -> np.ndarray:
    """A numpy copy of a Tensor, a backend array or a torch tensor."""
    if isinstance(a, Tensor):
        return np.asarray(a.numpy())
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    if isinstance(a, np.ndarray):
        return a
    return np.asarray(topgrad.get_backend().to_numpy(a))


def assert_close(actual: Any, expected: Any, what: str, rtol: float = RTOL, atol: float = ATOL) -> None:
    """Compare shapes exactly and values at rtol/atol, with `what` in the failure message."""
    a, e = to_numpy(actual), to_numpy(expected)
    assert a.shape == e.shape, f"{what}: shape {a.shape}, expected {e.shape}"
    np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, err_msg=what)


def check_against_torch(
    top_fn: Callable[..., Tensor],
    torch_fn: Callable[..., torch.Tensor],
    inputs: Sequence[np.ndarray],
    seed: int = 0,
    rtol: float = RTOL,
    atol: float = ATOL,
    constants: Sequence[int] = (),
) -> tuple[list[Tensor], Tensor]:
    """Run both functions on the same inputs; compare the output and every input's gradient.

    The backward pass is seeded with a random upstream gradient, the same for both.
    Inputs whose index is in `constants` are made with `requires_grad=False` in both
    frameworks and must get no gradient.
    Returns the Topgrad input tensors and output, for further checks by the caller.
    """
    xs = [Tensor(a, requires_grad=i not in constants) for i, a in enumerate(inputs)]
    ts = [torch.tensor(a, requires_grad=i not in constants) for i, a in enumerate(inputs)]
    out = top_fn(*xs)
    ref = torch_fn(*ts)
    assert_close(out, ref, "forward", rtol, atol)
    upstream = rand(ref.shape, seed + 7919)
    out.backward(upstream)
    ref.backward(torch.from_numpy(upstream))
    for i, (x, t) in enumerate(zip(xs, ts)):
        if i in constants:
            assert x.grad is None, f"input {i} is a constant but got a gradient"
            continue
        assert x.grad is not None, f"input {i} got no gradient"
        assert_close(x.grad, t.grad, f"gradient of input {i}", rtol, atol)
    return xs, out


def mentions_shape(message: str, shape: Sequence[int]) -> bool:
    """True when an error message names `shape`, written as a tuple, a list or AxB."""
    dims = [str(int(d)) for d in shape]
    forms = {str(tuple(int(d) for d in shape)), "[" + ", ".join(dims) + "]", "x".join(dims)}
    return any(f in message for f in forms)


# ---- NHWC/HWIO <-> NCHW/OIHW -----------------------------------------------------
def nhwc_to_nchw(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2).contiguous()


def nchw_to_nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1)


def hwio_to_oihw(w: torch.Tensor) -> torch.Tensor:
    return w.permute(3, 2, 0, 1).contiguous()


def torch_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False) -> torch.Tensor:
    """softmax(q kᵀ / √D) v written out in PyTorch, with a lower-triangular mask when causal."""
    scores = q @ k.transpose(-2, -1) / (q.shape[-1] ** 0.5)
    if causal:
        t_q, t_k = scores.shape[-2], scores.shape[-1]
        mask = torch.ones(t_q, t_k, dtype=torch.bool).triu(1)
        scores = scores.masked_fill(mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v
