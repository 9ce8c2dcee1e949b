"""Check a backward against central finite differences: `topgrad.gradcheck(fn, x, w)`.

`fn` takes Tensors and returns a Tensor `y`. With a fixed random `r` of `y`'s shape the check
compares, for every element of every input, the gradient of `sum(r * y)` that backward gives
with `(f(x + h) - f(x - h)) / 2h` computed from forward passes. One backward and two forward
passes per input element: keep the inputs small.

Precision: when the backend accepts `asarray(..., dtype="float64")` and `fn` keeps float64
end to end, everything runs in float64 (PyTorch's defaults: eps 1e-6, atol 1e-5, rtol 1e-3).
Otherwise the check runs in float32 and says so in its report. There a forward pass is only
good to about `float32 eps * sum|r * y|`, and a central difference to that over the step, so
each element's tolerance is `atol + rtol * |numeric| + 4 * float32 eps * sum|r * y| / step`
with eps, atol and rtol 1e-3. The report gives that rounding allowance as a share of the
typical (root-mean-square) gradient: mistakes larger than it are caught. Where it exceeds
INCONCLUSIVE (a large output summed, large values) the check cannot tell a 25% error from
rounding, so it fails as inconclusive instead of passing: a larger `eps` or float64 helps.
Perturbations are applied to the float32 values, and the step actually taken is used.
The default atol scales down with each input's typical (RMS) gradient where that is below 1:
a fixed 1e-3 passes any error in gradients of 1e-4. A backward that writes into its incoming
gradient (the seed) fails the check by name.

`fn` runs twice per input element. State it changes in the Tensors its ops receive (BatchNorm's
running statistics in training mode) is put back afterwards, so the model is left as it was.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from topgrad.observe import Observer, dtype_name, observing
from topgrad.registry import get_backend
from topgrad.tensor import Tensor, no_grad

DEFAULTS = {  # precision -> (eps, atol, rtol)
    "float64": (1e-6, 1e-5, 1e-3),
    "float32": (1e-3, 1e-3, 1e-3),  # plus the rounding noise of a float32 forward pass
}


NOISE_FACTOR = 4.0  # float32 rounding of one forward pass, in units of eps * sum|r * y|
INCONCLUSIVE = 0.25  # rounding allowance over the typical gradient beyond which nothing is shown


class GradcheckError(AssertionError):
    """The analytic and numeric gradients disagree; `result` holds the details."""

    def __init__(self, result: GradcheckResult) -> None:
        super().__init__(str(result))
        self.result = result


@dataclass
class Mismatch:
    """One element: where it is and both gradients."""

    input: int
    index: tuple[int, ...]
    analytic: float
    numeric: float

    @property
    def abs_err(self) -> float:
        """|analytic - numeric|: the absolute error of this element."""
        return abs(self.analytic - self.numeric)

    @property
    def rel_err(self) -> float:
        """The absolute error relative to |numeric| (a tiny floor avoids dividing by 0)."""
        return self.abs_err / max(abs(self.numeric), 1e-30)


@dataclass
class GradcheckResult:
    """The outcome; true when every element is within `atol + rtol * |numeric|`."""

    ok: bool
    precision: str
    eps: float
    atol: float
    rtol: float
    checked: int
    failures: int
    worst: Mismatch | None  # the element furthest beyond (or closest to) its tolerance
    note: str = ""
    blur: float = 0.0  # float32: the rounding allowance over the root-mean-square gradient
    violation: str = ""  # a rule of the Op protocol the backward broke (it fails the check)

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        verdict = ("passed" if self.ok else f"FAILED on {self.failures} of {self.checked} elements"
                   if self.failures else "FAILED" if self.violation else "INCONCLUSIVE")
        shown = self.precision == "float32" or self.blur > 1e-3
        rounding = f", rounding allowance {self.blur:.2%} of the typical gradient" if shown else ""
        lines = [f"gradcheck {verdict} ({self.precision}, eps={self.eps:g}, atol={self.atol:g}, "
                 f"rtol={self.rtol:g}{rounding})"]
        if self.worst is not None:
            w = self.worst
            lines.append(
                f"  worst element: input {w.input}, index {w.index}: analytic {w.analytic:.8g}, "
                f"numeric {w.numeric:.8g} (abs err {w.abs_err:.3g}, rel err {w.rel_err:.3g})"
            )
        if self.violation:
            lines.append(f"  {self.violation}")
        if self.note:
            lines.append(f"  note: {self.note}")
        return "\n".join(lines)


def gradcheck(
    fn: Callable[..., Tensor],
    *inputs: Any,
    eps: float | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    seed: int = 0,
    raise_on_failure: bool = True,
    dtype: str | None = None,
) -> GradcheckResult:
    """Compare backward's gradients of `fn` at `inputs` with central finite differences.

    Inputs are Tensors, numpy arrays or nested lists; each is differentiated. Returns a
    `GradcheckResult` (true when it passed); raises `GradcheckError` on failure unless
    `raise_on_failure=False`. `dtype="float32"` forces the float32 check; by default float64
    is used where the backend and `fn` keep it.
    """
    backend = get_backend()
    xs = [_as_float64(x, backend) for x in inputs]
    if not xs:
        raise ValueError("gradcheck needs at least one input to differentiate")
    if dtype not in (None, "float32", "float64"):
        raise ValueError(f"gradcheck: dtype must be None, 'float32' or 'float64', got {dtype!r}")
    with observing(_StateKeeper()) as state:
        try:
            return _check(fn, xs, eps, atol, rtol, seed, raise_on_failure, dtype)
        finally:
            state.restore()


def _check(
    fn: Callable[..., Tensor], xs: list[Any], eps: float | None, atol: float | None,
    rtol: float | None, seed: int, raise_on_failure: bool, dtype: str | None,
) -> GradcheckResult:
    """The comparison itself, at the float64 points `xs`, with `gradcheck`'s arguments."""
    import numpy as np

    backend = get_backend()
    precision, note = (dtype, "") if dtype else _precision(fn, xs, backend)
    d_eps, d_atol, d_rtol = DEFAULTS[precision]
    eps = d_eps if eps is None else eps
    scaled_atol = atol is None
    atol = d_atol if atol is None else atol
    rtol = d_rtol if rtol is None else rtol
    if precision == "float32":  # the point where float32 evaluates: its rounded values
        xs = [x.astype(np.float32).astype(np.float64) for x in xs]

    def tensor(x: Any) -> Tensor:
        return Tensor._from_array(backend.asarray(x, dtype=precision), None)

    def as64(t: Any) -> Any:
        return np.asarray(backend.to_numpy(t.data if isinstance(t, Tensor) else t), dtype=np.float64)

    # Analytic: one backward of sum(r * y), i.e. seeded with r.
    leaves = [tensor(x) for x in xs]
    y = _call(fn, leaves)
    r = np.random.default_rng(seed).standard_normal(y.shape)
    seed_tensor = tensor(r.copy())  # a Tensor: backward would cast a raw array to float32
    y.backward(seed_tensor)  # a copy: an op that writes into its grad must not change r
    analytic = [np.zeros_like(x) if t.grad is None else as64(t.grad) for x, t in zip(xs, leaves)]
    violation = ("" if np.array_equal(as64(seed_tensor), r.astype(precision)) else
                 "an op's backward wrote into its incoming gradient (the seed changed); a backward "
                 "must leave `grad` as it is: the engine hands one array to several ops (Add passes "
                 "its grad to both inputs), so the others' gradients come out wrong")

    # In float32 a forward pass is only good to about float32 eps * sum|r * y|, so the central
    # difference carries a noise of that over the step: it is added to the tolerance. Output
    # elements a perturbation leaves bit-for-bit unchanged add no noise, so only those that moved
    # count (all of them when none moved: a change below their rounding may have been lost).
    # float64 gets the same allowance at its own eps: tiny, but it keeps a scaled-down atol from
    # failing a near-zero gradient of a function with large values.
    rounding = NOISE_FACTOR * float(np.finfo(precision).eps) * np.abs(r)
    whole = float(np.sum(rounding * np.abs(as64(y))))

    def f(point: list[Any]) -> Any:
        with no_grad():
            return as64(_call(fn, [tensor(p) for p in point]))

    def noise(y_plus: Any, y_minus: Any) -> float:
        moved = y_plus != y_minus
        if not moved.any():
            return whole
        return float(np.sum((rounding * np.maximum(np.abs(y_plus), np.abs(y_minus)))[moved]))

    # Numeric: central differences, element by element, with each one's rounding allowance.
    numeric = [np.zeros_like(x) for x in xs]
    allowance = [np.zeros_like(x) for x in xs]
    cast = np.float32 if precision == "float32" else np.float64
    for i, x in enumerate(xs):
        for j in np.ndindex(x.shape):
            point = list(xs)
            plus, minus = x.copy(), x.copy()
            plus[j] = float(cast(x[j] + eps))
            minus[j] = float(cast(x[j] - eps))
            step = plus[j] - minus[j]
            point[i] = plus
            y_plus = f(point)
            point[i] = minus
            y_minus = f(point)
            numeric[i][j] = float(np.sum(r * (y_plus - y_minus))) / step
            allowance[i][j] = noise(y_plus, y_minus) / step

    # Compare. Each input's typical gradient (the larger RMS of the two) scales the default atol
    # down where it is below 1: a fixed 1e-3 would pass any error in gradients of 1e-4.
    worst: Mismatch | None = None
    worst_ratio = -1.0
    failures = checked = 0
    blur = 0.0
    for i, (a, n, allow) in enumerate(zip(analytic, numeric, allowance)):
        typical = max(_rms(a), _rms(n))
        atol_i = atol * min(1.0, typical) if scaled_atol and typical > 0 else atol
        if typical > 0 and allow.size:
            blur = max(blur, float(allow.max()) / typical)
        err, tolerance = np.abs(a - n), atol_i + rtol * np.abs(n) + allow
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(err == 0, 0.0, err / tolerance)
        ratio[np.isnan(ratio)] = np.inf  # NaN counts as a failure
        checked += ratio.size
        failures += int(np.count_nonzero(ratio > 1.0))
        if ratio.size and float(ratio.max()) > worst_ratio:
            j = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
            worst_ratio = float(ratio.max())
            worst = Mismatch(i, tuple(int(k) for k in j), float(a[j]), float(n[j]))
    ok = bool(failures == 0 and blur <= INCONCLUSIVE and not violation)
    if failures == 0 and not ok and not violation:
        wider = ", or a backend that keeps float64" if precision == "float32" else ""
        note = "; ".join(filter(None, [note, (
            f"{precision} rounding of fn's output allows {blur:.0%} of the typical gradient, so errors "
            f"that size would pass unseen: use a larger eps (the step, now {eps:g}), an output of "
            f"fewer elements or smaller values{wider}")]))
    result = GradcheckResult(ok, precision, eps, atol, rtol, checked, failures, worst, note, blur, violation)
    if not result.ok and raise_on_failure:
        raise GradcheckError(result)
    return result


def _rms(a: Any) -> float:
    import numpy as np

    return float(np.sqrt(np.mean(np.square(a)))) if a.size else 0.0


class _StateKeeper(Observer):
    """Remembers the state ops may update, to put it back when the check ends: the array of every
    leaf Tensor an op takes by keyword (BatchNorm's running statistics; BatchNorm gives a Tensor
    a new array) or as a constant, and a copy of every raw array it takes by keyword (updated in
    place). Only this thread's ops: another thread's model is not the check's business."""

    def __init__(self) -> None:
        self.thread = threading.get_ident()
        self.tensors: dict[int, tuple[Tensor, Any]] = {}
        self.arrays: dict[int, tuple[Any, Any]] = {}

    def before_forward(self, op: Any, args: tuple[Any, ...], params: dict[str, Any]) -> None:
        """Remember the leaf Tensors and raw arrays this op may update, before it does."""
        if threading.get_ident() != self.thread:
            return
        constants = [a for a in args if isinstance(a, Tensor) and not a.requires_grad]
        for v in (*constants, *params.values()):
            if isinstance(v, Tensor):
                if v._op is None and id(v) not in self.tensors:
                    self.tensors[id(v)] = (v, v.data)
            elif hasattr(v, "shape") and hasattr(v, "dtype") and id(v) not in self.arrays:
                self.arrays[id(v)] = (v, get_backend().copy(v))

    def restore(self) -> None:
        """Put every remembered array back, so that the check leaves the model as it found it."""
        for t, data in self.tensors.values():
            t.data = data
        for array, saved in self.arrays.values():
            array[...] = saved


def _call(fn: Callable[..., Tensor], args: list[Tensor]) -> Tensor:
    y = fn(*args)
    if not isinstance(y, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(y).__name__}")
    return y


def _as_float64(x: Any, backend: Any) -> Any:
    import numpy as np

    if isinstance(x, Tensor):
        x = backend.to_numpy(x.data)
    return np.array(x, dtype=np.float64)  # a copy: the caller's arrays are never perturbed


def _precision(fn: Callable[..., Tensor], xs: list[Any], backend: Any) -> tuple[str, str]:
    """'float64' when the backend and `fn` keep float64 end to end, forward and backward.

    Float64 dtypes are not enough: a backend may store float64 and compute in float32. So a
    directional derivative is also taken with steps 1e-4 and 1e-6: in float64 both agree to
    about 1e-8, while float32 arithmetic makes the small step's one wrong by percents.
    """
    import numpy as np

    fallback = f"backend {backend.name!r} {{}}; checked in float32 with looser tolerances"

    def run(point: list[Any]) -> Tensor:
        return fn(*[Tensor._from_array(backend.asarray(x, dtype="float64"), None) for x in point])

    try:
        leaves = [Tensor._from_array(backend.asarray(x, dtype="float64"), None) for x in xs]
        out = fn(*leaves)
        kinds = {dtype_name(out)}
        if kinds == {"float64"}:
            out.backward(Tensor._from_array(backend.asarray(np.ones(out.shape), dtype="float64"), None))
            kinds |= {dtype_name(t.grad) for t in leaves if t.grad is not None}
        if kinds == {"float64"}:
            rng = np.random.default_rng(12345)
            directions = [rng.standard_normal(x.shape) for x in xs]
            r = rng.standard_normal(out.shape)

            def f(t: float) -> float:
                with no_grad():
                    y = run([x + t * d for x, d in zip(xs, directions)])
                return float(np.sum(r * np.asarray(backend.to_numpy(y.data), dtype=np.float64)))

            scale = float(np.sum(np.abs(r * np.asarray(backend.to_numpy(out.data), dtype=np.float64))))
            d4 = (f(1e-4) - f(-1e-4)) / 2e-4
            d6 = (f(1e-6) - f(-1e-6)) / 2e-6
    except Exception as exc:  # the backend has no float64 (or an op refuses it)
        return "float32", fallback.format(f"cannot run this in float64 ({type(exc).__name__}: {exc})")
    if kinds != {"float64"}:
        return "float32", fallback.format(f"gave {'/'.join(sorted(kinds))} for float64 inputs")
    if not abs(d6 - d4) <= 1e-6 * (abs(d4) + scale):
        return "float32", fallback.format(
            "stores float64 but this function's derivative along a random direction is "
            f"{d4:.8g} with step 1e-4 and {d6:.8g} with step 1e-6: either the backend computes in "
            "lower precision, or the function has a kink within 1e-4 of the inputs (ReLU at 0; then "
            "dtype='float64' checks in float64, with a step that does not cross it)")
    return "float64", ""
