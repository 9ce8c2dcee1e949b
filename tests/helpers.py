"""Small helpers shared by the test modules: random data, comparison with PyTorch, sizes.

Every op test follows one pattern (`check_against_torch`): the same float32 inputs go
through a Topgrad function and a PyTorch function, the outputs are compared, both are
seeded with the same random upstream gradient, and the gradient of every input is compared.
The inputs and the upstream gradient may reach Topgrad in another memory layout (`laid_out`: a
transposed, strided or Fortran-order view of a backend array). PyTorch runs twice, in float64
(the reference) and in float32 (how far float32 can get): see `assert_as_accurate`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import topgrad
import torch
import torch.nn.functional as F  # noqa: N812 - the usual PyTorch spelling
from hypothesis import assume
from hypothesis import strategies as st
from topgrad import Op, Tensor

RTOL = ATOL = 1e-4
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


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


LAYOUTS = ("contiguous", "transposed", "strided", "fortran")
"""Memory layouts in which an op's inputs and its upstream gradient reach it (`laid_out`)."""


def layouts(n_inputs: int) -> st.SearchStrategy[tuple[str, ...]]:
    """One layout for each of `n_inputs` inputs and then one for the upstream gradient, drawn
    independently (`check_against_torch(..., layout=...)`)."""
    return st.tuples(*[st.sampled_from(LAYOUTS)] * (n_inputs + 1))


def is_contiguous(a: Any) -> bool:
    """Whether a backend array (a numpy ndarray or a torch tensor) is C-contiguous; as numpy and
    torch both say, an empty array is, and size-1 axes' strides do not count."""
    if isinstance(a, torch.Tensor):
        return bool(a.is_contiguous())
    return bool(np.asarray(a).flags.c_contiguous)


def _permuted(a: Any, axes: Sequence[int]) -> Any:
    """A view of a backend array with its axes in the order `axes` (torch's permute, numpy's transpose)."""
    return a.permute(*axes) if isinstance(a, torch.Tensor) else a.transpose(tuple(axes))


def laid_out(values: np.ndarray, layout: str, dtype: str = "float32") -> Any:
    """A backend array of the backend under test holding `values`, as a view in `layout`'s memory:

    - "contiguous": C order, a fresh array;
    - "transposed": the last two axes swapped in memory (a `.T`-like view; C order below 2-d);
    - "strided": every other element along the last axis of an array twice as wide (`[..., ::2]`);
    - "fortran": every axis reversed in memory (column-major; C order below 2-d).

    The view is made on the backend's own array (a torch tensor's on triton), so that a Tensor
    whose `.data` is set to it hands the op non-contiguous memory: `Tensor(view)` would copy it
    (a trainable Tensor copies what it might share), and a backend's asarray may make it dense.
    As numpy and torch say, a view whose other axes have size 1, or one of no elements, is
    contiguous all the same."""
    backend = topgrad.get_backend()
    values = np.asarray(values)
    if layout not in LAYOUTS:
        raise ValueError(f"laid_out: no layout {layout!r}; one of {LAYOUTS}")
    if layout == "strided" and values.ndim:
        wide = np.zeros((*values.shape[:-1], 2 * values.shape[-1]), values.dtype)
        wide[..., ::2] = values
        return backend.asarray(wide, dtype=dtype)[..., ::2]
    if layout in ("transposed", "fortran") and values.ndim >= 2:
        axes = list(range(values.ndim))
        if layout == "transposed":
            axes[-2], axes[-1] = axes[-1], axes[-2]
        else:
            axes.reverse()
        # a swap and a reversal are their own inverses: the stored array permuted back is `values`
        stored = backend.asarray(np.ascontiguousarray(values.transpose(axes)), dtype=dtype)
        return _permuted(stored, axes)
    return backend.asarray(np.array(values, copy=True), dtype=dtype)


def float64_tensor(array: Any) -> Tensor:
    """Tensor(array, dtype="float64"), or the calling test skipped where the backend has no
    float64 (triton computes in float32 only)."""
    try:
        return Tensor(array, dtype="float64")
    except TypeError:
        pytest.skip("this backend has no float64")


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


def assert_as_accurate(
    actual: Any, exact: Any, single: Any, what: str, rtol: float = RTOL, atol: float = ATOL
) -> None:
    """Topgrad's float32 `actual` within rtol/atol of PyTorch's float64 `exact`, or, element by
    element, no farther from it than twice PyTorch's own float32 result `single` is (that slack
    capped at 1%: beyond it `single` is wrong, not rounded).

    Against float32 PyTorch alone, an ill-conditioned draw fails through PyTorch's round-off
    (a LayerNorm row whose spread is 1/280 of its mean: PyTorch 1.2e-4 off, Topgrad 2e-5);
    against float64 alone, it fails where no float32 algorithm reaches 1e-4 (two BatchNorm rows
    that nearly agree: PyTorch's float32 and Topgrad's are both 1.2e-4 off). `nox -s soak` found both.
    """
    a, e, s = to_numpy(actual), to_numpy(exact), to_numpy(single)
    assert a.shape == e.shape, f"{what}: shape {a.shape}, expected {e.shape}"
    e = e.astype(np.float64)
    with np.errstate(invalid="ignore"):  # inf - inf where both are infinite: no slack there
        slack = np.nan_to_num(2.0 * np.abs(s.astype(np.float64) - e), nan=0.0)
        # round-off, not a wrong answer: a float32 PyTorch result more than 1% off is no bound
        slack = np.minimum(slack, 1e-2 * (1.0 + np.abs(e)))
        ok = np.isclose(a, e, rtol=rtol, atol=atol + slack, equal_nan=True)
    if not ok.all():
        bad = np.argwhere(~ok)
        i = tuple(int(j) for j in bad[0])
        raise AssertionError(
            f"{what}: {len(bad)} of {a.size} elements differ from PyTorch's float64 answer by more "
            f"than rtol={rtol}, atol={atol} and twice PyTorch's float32 error; first at {i}: "
            f"Topgrad {float(a[i])!r}, PyTorch float64 {float(e[i])!r}, PyTorch float32 {float(s[i])!r}"
        )


def torch_run(
    torch_fn: Callable[..., torch.Tensor], inputs: Sequence[np.ndarray | None], dtype: torch.dtype,
    upstream: Callable[[tuple[int, ...]], np.ndarray], constants: Sequence[int] = (),
) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    """PyTorch's output and input gradients in `dtype` (from the float32 inputs), backward seeded
    with upstream(shape): None for a None input or a constant, zeros for an unused input."""
    ts = [None if a is None else
          torch.tensor(np.asarray(a, np.float32), dtype=dtype, requires_grad=i not in constants)
          for i, a in enumerate(inputs)]
    out = torch_fn(*ts)
    out.backward(torch.from_numpy(upstream(tuple(out.shape))).to(dtype))
    grads = [None if t is None or i in constants else t.grad if t.grad is not None else torch.zeros_like(t)
             for i, t in enumerate(ts)]
    return out.detach(), grads


def check_against_torch(
    top_fn: Callable[..., Tensor],
    torch_fn: Callable[..., torch.Tensor],
    inputs: Sequence[np.ndarray],
    seed: int = 0,
    rtol: float = RTOL,
    atol: float = ATOL,
    constants: Sequence[int] = (),
    float64: Sequence[int] = (),
    float32_ground: bool = False,
    layout: str | Sequence[str] = "contiguous",
) -> tuple[list[Tensor], Tensor]:
    """Run both functions on the same inputs; compare the output and every input's gradient.

    The backward pass is seeded with a random upstream gradient, the same for both.
    PyTorch runs in float64 and then in float32 (`assert_as_accurate`): a `torch_fn` that
    keeps state (BatchNorm's running statistics) must keep one per dtype.
    Inputs whose index is in `constants` are made with `requires_grad=False` in both
    frameworks and must get no gradient. Those in `float64` are float64 Tensors on Topgrad's
    side (the same values; PyTorch's yardsticks unchanged), and then every gradient must have
    its leaf's dtype, as the README says.
    With `float32_ground` (inside a hypothesis test), a draw where PyTorch's float32 answer is off
    its float64 one by more than rtol (relative to the largest value, at least 1) is rejected: a
    random graph there is ill-conditioned in float32 itself (a cancellation inside), and which
    float32 implementation comes closer is chance.
    `layout` (one of `LAYOUTS`, or one per input and then one for the upstream gradient, as
    `layouts(n)` draws them): each Topgrad input's `.data` is set to a view in that memory layout
    (`laid_out`), and the backward pass is seeded with such a view; PyTorch's side is unchanged.
    Returns the Topgrad input tensors and output, for further checks by the caller.
    """
    def upstream(shape: tuple[int, ...]) -> np.ndarray:
        return rand(shape, seed + 7919)

    exact, exact_grads = torch_run(torch_fn, inputs, torch.float64, upstream, constants)
    single, single_grads = torch_run(torch_fn, inputs, torch.float32, upstream, constants)
    if float32_ground:  # off it, float32 rounding alone moves the answer: nothing to compare
        pairs = [(single, exact), *((s, e) for s, e in zip(single_grads, exact_grads) if e is not None)]
        assume(max(_relative_gap(s, e) for s, e in pairs) <= rtol)
    kinds = [layout] * (len(inputs) + 1) if isinstance(layout, str) else list(layout)
    assert len(kinds) == len(inputs) + 1, f"layout: {len(kinds)} for {len(inputs)} inputs and the upstream"
    xs = [Tensor(a, dtype="float64", requires_grad=i not in constants) if i in float64 else
          Tensor(a, requires_grad=i not in constants) for i, a in enumerate(inputs)]
    for i, (x, a, kind) in enumerate(zip(xs, inputs, kinds)):
        if kind != "contiguous":
            view = laid_out(a, kind, dtype="float64" if i in float64 else "float32")
            x.data = view
            assert x.data is view, f"input {i}: the Tensor did not keep its {kind} data"
    out = top_fn(*xs)
    assert_as_accurate(out, exact, single, "forward", rtol, atol)
    seed_values = upstream(tuple(exact.shape))
    out.backward(seed_values if kinds[-1] == "contiguous" else laid_out(seed_values, kinds[-1]))
    for i, x in enumerate(xs):
        if i in constants:
            assert x.grad is None, f"input {i} is a constant but got a gradient"
            continue
        assert x.grad is not None, f"input {i} got no gradient"
        if float64:
            kind = to_numpy(x.grad).dtype
            assert kind == to_numpy(x).dtype, f"input {i}: a {kind} gradient for a {to_numpy(x).dtype} leaf"
        assert_as_accurate(x.grad, exact_grads[i], single_grads[i], f"gradient of input {i}", rtol, atol)
    return xs, out


def _relative_gap(single: torch.Tensor, exact: torch.Tensor) -> float:
    """max |single - exact| over max(1, max |exact|)."""
    if not exact.numel():
        return 0.0
    return float((single.double() - exact).abs().max()) / max(1.0, float(exact.abs().max()))


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


def torch_conv2d(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
) -> torch.Tensor:
    """PyTorch's conv2d of NHWC x and HWIO w (permuted to NCHW/OIHW and back), NHWC out; stride
    and padding are ints or (h, w) pairs.

    A strided 1x1 convolution runs as a stride-1 one of the padded, subsampled input (the same
    sums): for fewer than 8 input channels (16 with AVX-512), oneDNN's strided 1x1 weight
    gradient writes past its workspace (uxlfoundation/oneDNN#6035). With torch 2.13 here,
    x (3, 4, 6, 1) and w (1, 1, 1, 1) at stride 2 corrupt the heap; a soak run crashed on it."""
    xc, wc = nhwc_to_nchw(x), hwio_to_oihw(w)
    (sh, sw), (ph, pw) = (v if isinstance(v, tuple) else (v, v) for v in (stride, padding))
    if w.shape[0] == w.shape[1] == 1 and (sh, sw) != (1, 1):
        xc = F.pad(xc, (pw, pw, ph, ph))[:, :, ::sh, ::sw].contiguous()
        stride, padding = 1, 0
    return nchw_to_nhwc(F.conv2d(xc, wc, b, stride=stride, padding=padding))


def torch_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False) -> torch.Tensor:
    """softmax(q kᵀ / √D) v written out in PyTorch, with a lower-triangular mask when causal."""
    d = q.shape[-1]  # with no features every score is 0, as in scaled_dot_product_attention (not 0/0)
    scores = q @ k.transpose(-2, -1) / (d**0.5 if d else 1.0)
    if causal:
        t_q, t_k = scores.shape[-2], scores.shape[-1]
        mask = torch.ones(t_q, t_k, dtype=torch.bool).triu(1)
        scores = scores.masked_fill(mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def compile_for_cuda(script: str, tmp_path: Path) -> None:
    """Run `script`, which compiles Triton kernels for the sm arch given as its argv[1], in a fresh
    interpreter without TRITON_INTERPRET and with a Triton cache of its own (codegen and ptxas: no
    GPU needed), for the arch in TOPGRAD_TRITON_COMPILE_CHECK; fail with the end of its stderr."""
    env = {**os.environ, "TRITON_CACHE_DIR": str(tmp_path)}
    env.pop("TRITON_INTERPRET", None)
    arch = os.environ["TOPGRAD_TRITON_COMPILE_CHECK"]
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", script, arch], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


@contextmanager
def topgrad_warns_nothing() -> Iterator[None]:
    """Inside it a RuntimeWarning raised from Topgrad's own code (numpy's "invalid value", "overflow")
    is an error; others pass (Triton's interpreter computes in numpy and may warn, not Topgrad)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", category=RuntimeWarning, module="topgrad")
        yield


@contextmanager
def benchmarks_on_path() -> Iterator[Path]:
    """benchmarks/ importable (its scripts import their helper modules by bare name); afterwards
    sys.path is as it was and the modules imported from there are forgotten."""
    path, modules = list(sys.path), set(sys.modules)
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield BENCHMARKS
    finally:
        sys.path[:] = path
        for name in set(sys.modules) - modules:
            if str(getattr(sys.modules[name], "__file__", "") or "").startswith(str(BENCHMARKS)):
                del sys.modules[name]


def positive_steps(index: Any) -> Any:
    """hypothesis draws negative steps too, which PyTorch refuses: flip their sign."""
    items = index if isinstance(index, tuple) else (index,)
    return tuple(slice(i.start, i.stop, abs(i.step)) if isinstance(i, slice) and i.step is not None
                 else i for i in items)


@pytest.fixture(autouse=True)
def no_observer_left_behind() -> Iterator[None]:
    """Autouse in the modules that import it: no observer is registered before or after each test
    (the inspection tools register one for a block; a test that leaks one skews every later one)."""
    assert not Op._observers, "an observer was left registered by an earlier test"
    yield
    assert not Op._observers, "this test left an observer registered"
