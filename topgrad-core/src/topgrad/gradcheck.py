"""Check a backward against central finite differences: `topgrad.gradcheck(fn, x, w)`.

`fn` takes Tensors and returns a Tensor `y`. With a fixed random `r` of `y`'s shape the check
compares, for every element of every input, the gradient of `sum(r * y)` that backward gives
with `(f(x + h) - f(x - h)) / 2h` computed from forward passes. One backward pass, and two
forward passes per input element: keep the inputs small.

Precision: when the backend accepts `asarray(..., dtype="float64")` and `fn` keeps float64
end to end, everything runs in float64 (PyTorch's defaults: eps 1e-6, atol 1e-5, rtol 1e-3).
Otherwise the check runs in float32 and says so in its report. There a forward pass is only
good to about `float32 eps * sum|r * y|`, and a central difference to that over the step, so
each element's tolerance is `atol + rtol * |numeric| + 4 * float32 eps * sum|r * y| / step`
with eps, atol and rtol 1e-3. The report gives that rounding allowance as a share of the
typical (root-mean-square) gradient: mistakes larger than it are caught. Where it exceeds 25%
(`INCONCLUSIVE`; a large output summed, large values) the check cannot tell a 25% error from
rounding, so it fails as inconclusive instead of passing: a larger `eps` or float64 helps.
Perturbations are applied to the float32 values, and the step actually taken is used.
Where an input fails or is blurred, its differences are taken again at 4x the step (`PROBE`):
noise shrinks there and a true gradient does not, so their disagreement joins the tolerance,
and an input of noise alone has a gradient of 0 (the output's size underrates the rounding of
terms that cancel, as in a normalization summed).
The default atol scales down with each input's typical (RMS) gradient where that is below 1:
a fixed 1e-3 passes any error in gradients of 1e-4 (the report shows the default; the worst
element's line shows the tolerance it was held to). A backward that writes into its incoming
gradient (the seed) fails the check by name; one that returns None for an input needing a gradient
counts as 0 there, so the values fail, and the report names it.

`fn` runs twice per input element (four times for an input probed so), and in float64 six times
more (the check that `fn` keeps float64). State it changes in the Tensors its ops receive
(BatchNorm's running statistics in training mode, and the `.grad` of weights `fn` uses) is put
back afterwards, so the model is left as it was.

The check's own arithmetic is plain Python, so core needs no numpy and any backend will do: values
are read with `Backend.to_numpy(a).tolist()` and sent back with `Backend.asarray(nested list,
dtype=...)`. Python floats are float64, float32 rounding is `array.array("f")`'s, sums are
`math.fsum` (exactly rounded), and `r` is drawn by `random.Random(seed).gauss`.
"""

from __future__ import annotations

import math
import random
import threading
from array import array as packed
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import compress
from numbers import Real
from operator import mul, ne, sub
from typing import Any

from topgrad.arrays import FLOAT32_MAX, dtype_name
from topgrad.errors import counted
from topgrad.observe import Observer, observing
from topgrad.registry import get_backend
from topgrad.tensor import Tensor, _grad_mode, _toposort, no_grad
from topgrad.versions import _updates

DEFAULTS = {  # precision -> (eps, atol, rtol)
    "float64": (1e-6, 1e-5, 1e-3),
    "float32": (1e-3, 1e-3, 1e-3),  # plus the rounding noise of a float32 forward pass
}


MACHINE_EPS = {"float64": 2.0**-52, "float32": 2.0**-23}  # numpy's finfo(dtype).eps
NOISE_FACTOR = 4.0  # float32 rounding of one forward pass, in units of eps * sum|r * y|
INCONCLUSIVE = 0.25  # rounding allowance over the typical gradient beyond which nothing is shown
PROBE = 4.0  # the second step, in steps, where an input fails or is blurred (see `_check`)
SPREAD = 3.0  # what each element's tolerance gains, in units of its two differences' disagreement


class GradcheckError(AssertionError):
    """The analytic and numeric gradients disagree; `result` holds the details."""

    def __init__(self, result: GradcheckResult) -> None:
        super().__init__(str(result))
        self.result = result


@dataclass
class Mismatch:
    """One element: where it is, both gradients, and the tolerance their difference was held to
    (atol, scaled down for small gradients, + rtol * |numeric| + the float32 rounding allowance)."""

    input: int
    index: tuple[int, ...]
    analytic: float
    numeric: float
    tolerance: float = math.nan

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
        verdict = (f"passed on {counted(self.checked, 'element')}" if self.ok
                   else f"FAILED on {self.failures} of {self.checked} elements"
                   if self.failures else "FAILED" if self.violation else "INCONCLUSIVE")
        shown = self.precision == "float32" or self.blur > 1e-3
        rounding = f", rounding allowance {self.blur:.2%} of the typical gradient" if shown else ""
        lines = [f"gradcheck {verdict} ({self.precision}, eps={self.eps:g}, atol={self.atol:g}, "
                 f"rtol={self.rtol:g}{rounding})"]
        if self.worst is not None:
            w = self.worst
            label = "worst element" if self.failures or self.ok else "worst element (within its tolerance)"
            lines.append(
                f"  {label}: input {w.input}, index {w.index}: analytic {w.analytic:.8g}, "
                f"numeric {w.numeric:.8g} (abs err {w.abs_err:.3g}, tolerance {w.tolerance:.3g}, "
                f"rel err {w.rel_err:.3g})"
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

    Inputs are Tensors, numpy arrays (anything with `.tolist()` and `.shape`) or nested lists;
    each is differentiated. One tuple of Tensors or arrays, as torch.autograd.gradcheck takes
    them, counts as the inputs. Returns a `GradcheckResult` (true when it passed); raises
    `GradcheckError` on failure unless `raise_on_failure=False`. `dtype="float32"` forces the
    float32 check; by default float64 is used where the backend and `fn` keep it.
    """
    backend = get_backend()
    if len(inputs) == 1 and _is_pytorch_tuple(inputs[0]):  # gradcheck(fn, (a, b)), as PyTorch's takes them
        inputs = tuple(inputs[0])
    xs = [_as_float64(x, backend) for x in inputs]
    if not xs:
        raise ValueError("gradcheck needs at least one input to differentiate")
    if dtype not in (None, "float32", "float64"):
        raise ValueError(f"gradcheck: dtype must be None, 'float32' or 'float64', got {dtype!r}")
    _check_setting("eps", eps, zero_ok=False)
    _check_setting("atol", atol)
    _check_setting("rtol", rtol)
    with observing(_StateKeeper()) as state:
        try:
            return _check(fn, xs, eps, atol, rtol, seed, raise_on_failure, dtype)
        finally:
            state.restore()


def _check_setting(name: str, value: Any, zero_ok: bool = True) -> None:
    """ValueError unless `value` is None (the default) or a finite number >= 0 (> 0 for eps): a
    negative tolerance makes every error/tolerance ratio negative, so any gradient would pass."""
    number = isinstance(value, Real) and not isinstance(value, bool)  # numpy's scalars too
    if value is None or (number and math.isfinite(value) and (value > 0 or (zero_ok and value == 0))):
        return
    raise ValueError(f"gradcheck: {name} must be a finite number {'>=' if zero_ok else '>'} 0, or None for "
                     f"the default; got {value!r}")


def _is_pytorch_tuple(given: Any) -> bool:
    """A tuple of Tensors or arrays: the inputs in torch.autograd.gradcheck's form, not one nested
    list of numbers (read as data, (a,) would be a new leading axis of size 1)."""
    return isinstance(given, tuple) and len(given) > 0 and all(
        isinstance(g, Tensor) or _is_host_array(g) for g in given)


def _check(
    fn: Callable[..., Tensor], xs: list[_Grid], eps: float | None, atol: float | None,
    rtol: float | None, seed: int, raise_on_failure: bool, dtype: str | None,
) -> GradcheckResult:
    """The comparison itself, at the float64 points `xs`, with `gradcheck`'s arguments."""
    backend = get_backend()
    precision, note = (dtype, "") if dtype else _precision(fn, xs, backend)
    d_eps, d_atol, d_rtol = DEFAULTS[precision]
    eps = d_eps if eps is None else eps
    scaled_atol = atol is None
    atol = d_atol if atol is None else atol
    rtol = d_rtol if rtol is None else rtol
    single = precision == "float32"
    if single:  # the point where float32 evaluates: its rounded values
        xs = [_Grid(x.shape, _float32(x.values)) for x in xs]

    def tensor(x: _Grid) -> Tensor:
        return Tensor._from_array(_array(backend, x, precision), None)

    def as64(t: Any) -> _Grid:
        return _read(backend.to_numpy(t.data if isinstance(t, Tensor) else t))

    # Analytic: one backward of sum(r * y), i.e. seeded with r.
    leaves = [tensor(x) for x in xs]
    y = _call(fn, leaves)
    unchecked = ("gradcheck: fn's output does not depend on its inputs ({}), so there is no gradient to "
                 "check: every one would be 0 both ways; compute it from fn's arguments")
    if not y.requires_grad:
        raise ValueError(unchecked.format("it is a constant: made under no_grad, or from detach() or "
                                          "constants only"))
    gauss = random.Random(seed).gauss
    r = _Grid(tuple(y.shape), [gauss(0.0, 1.0) for _ in range(math.prod(y.shape))])
    seed_tensor = tensor(r)  # a Tensor: backward would cast a raw array to float32
    if not _reaches_any(y, leaves):  # by the graph, not by .grad: a backward may return None
        raise ValueError(unchecked.format("none of them is in its graph: it is made from other Tensors"))
    with observing(_DroppedGradients()) as dropped:  # a gradient None where one is needed: 0
        y.backward(seed_tensor)  # a copy: an op that writes into its grad must not change r
    analytic = [_Grid(x.shape, [0.0] * x.size) if t.grad is None else as64(t.grad)
                for x, t in zip(xs, leaves)]
    for i, (x, a) in enumerate(zip(xs, analytic)):
        if a.shape != x.shape:
            raise ValueError(f"gradcheck: backward gave input {i} (shape {x.shape}) a gradient of "
                             f"shape {a.shape}")
    sent = as64(seed_tensor)
    violation = ("" if sent.shape == r.shape and sent.values == (_float32(r.values) if single else r.values)
                 else "a backward wrote into its incoming gradient (the seed changed; it went first to "
                 f"{_op_name(y)}, and ops such as Add hand that array on to the ops before them); "
                 "a backward must leave `grad` as it is: the engine hands one array to several ops (Add "
                 "passes its grad to both inputs), so the others' gradients come out wrong")

    # In float32 a forward pass is only good to about float32 eps * sum|r * y|, so the central
    # difference carries a noise of that over the step: it is added to the tolerance. Output
    # elements a perturbation leaves bit-for-bit unchanged add no noise, so only those that moved
    # count (all of them when none moved: a change below their rounding may have been lost).
    # float64 gets the same allowance at its own eps: tiny, but it keeps a scaled-down atol from
    # failing a near-zero gradient of a function with large values.
    unit = NOISE_FACTOR * MACHINE_EPS[precision]
    rounding = [unit * abs(v) for v in r.values]
    whole = _sum(k * abs(v) for k, v in zip(rounding, as64(y).values))

    def f(point: list[_Grid]) -> list[float]:
        with no_grad():
            out = as64(_call(fn, [tensor(p) for p in point]))
        if out.shape != r.shape:
            raise ValueError(f"gradcheck: fn's output has shape {out.shape} at a perturbed input, "
                             f"{r.shape} at the inputs given: it must not depend on the values")
        return out.values

    def noise(y_plus: list[float], y_minus: list[float]) -> float:
        moved = list(compress(range(len(y_plus)), map(ne, y_plus, y_minus)))
        if not moved:
            return whole
        return _sum(rounding[k] * _max(abs(y_plus[k]), abs(y_minus[k])) for k in moved)

    def central(i: int, h: float) -> tuple[list[float], list[float]]:
        """Input i's numeric gradient at step h, element by element, with each one's allowance."""
        numeric, allowance = [], []
        x = xs[i]
        for j, value in enumerate(x.values):
            point = list(xs)
            plus, minus = list(x.values), list(x.values)
            plus[j], minus[j] = value + h, value - h
            if single:
                plus[j], minus[j] = _float32([plus[j], minus[j]])
            step = plus[j] - minus[j]
            point[i] = _Grid(x.shape, plus)
            y_plus = f(point)
            point[i] = _Grid(x.shape, minus)
            y_minus = f(point)
            numeric.append(_divide(_sum(map(mul, r.values, map(sub, y_plus, y_minus))), step))
            allowance.append(_divide(noise(y_plus, y_minus), step))
        return numeric, allowance

    # Numeric: central differences, element by element, with each one's rounding allowance.
    numeric, allowance = map(list, zip(*[central(i, eps) for i in range(len(xs))])) if xs else ([], [])

    # Compare. Each input's typical gradient (the larger RMS of the two) scales the default atol
    # down where it is below 1: a fixed 1e-3 would pass any error in gradients of 1e-4.
    # Where an input fails, or its allowance blurs its gradient, the rounding may be larger than
    # the output's size says: a true gradient of 0 (a normalization's output summed) comes out of
    # large terms that cancel. A second difference at 4x the step measures it: rounding noise
    # shrinks 4x there while a true gradient stays, so their disagreement is added to each
    # element's tolerance, and an input whose numeric gradient is all noise is one of 0 (each of
    # its elements then allowed the input's typical disagreement).
    worst: Mismatch | None = None
    worst_ratio = -1.0
    failures = checked = 0
    blur = 0.0
    zeros: list[str] = []
    for i, (x, a, n, allow) in enumerate(zip(xs, analytic, numeric, allowance)):
        typical = max(_rms(a.values), _rms(n))
        atol_i = atol * min(1.0, typical) if scaled_atol and typical > 0 else atol
        errors = [abs(ak - nk) for ak, nk in zip(a.values, n)]
        plain = [atol_i + rtol * abs(nk) + allow_k for nk, allow_k in zip(n, allow)]  # before any probe
        spread = [0.0] * len(n)
        failing = not all(e <= t for e, t in zip(errors, plain))  # NaN fails
        if n and (_blur(allow, typical) > INCONCLUSIVE or failing):
            wide, _ = central(i, PROBE * eps)
            diffs = [abs(p - q) for p, q in zip(n, wide)]
            sigma = _rms(diffs)
            spread = [SPREAD * d for d in diffs]
            if sigma >= 0.5 * _rms(n):  # the numeric gradient is noise: a gradient of 0
                typical = 0.0
                spread = [SPREAD * _max(d, sigma) for d in diffs]  # one element's d may be small by chance
                zeros.append(f"input {i}'s gradient is 0 up to rounding (numeric {_rms(n):.2g} rms, "
                             f"{sigma:.2g} apart at step {eps:g} and {PROBE * eps:g})" if sigma else
                             f"input {i}'s numeric gradient is exactly 0")
        blur = max(blur, _blur(allow, typical))
        tolerances = [t + s for t, s in zip(plain, spread)]
        ratio = []
        for err, tolerance in zip(errors, tolerances):
            q = 0.0 if err == 0 else _divide(err, tolerance)
            ratio.append(math.inf if math.isnan(q) else q)  # NaN counts as a failure
        checked += len(ratio)
        failures += sum(q > 1.0 for q in ratio)
        if ratio and max(ratio) > worst_ratio:
            worst_ratio = max(ratio)
            k = ratio.index(worst_ratio)
            worst = Mismatch(i, _unravel(k, x.shape), a.values[k], n[k], tolerances[k])
    ok = bool(failures == 0 and blur <= INCONCLUSIVE and not violation)
    note = "; ".join(filter(None, [note, *zeros]))
    if not ok and dropped.ops:
        note = "; ".join(filter(None, [note, (
            f"a backward returned None where a gradient is needed, counted as 0: {_listed(dropped.ops)}; "
            "return the gradient there (None only for an input that has none)")]))
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


# ---- plain-Python float64 arithmetic on flat values (no numpy in core) ------------------------
@dataclass(frozen=True)
class _Grid:
    """An array's values in C order, as Python floats (float64), with its shape."""

    shape: tuple[int, ...]
    values: list[float]

    @property
    def size(self) -> int:
        """The number of elements."""
        return len(self.values)


def _is_host_array(obj: Any) -> bool:
    """A numpy array or the like: anything with `.tolist()` and `.shape`."""
    return hasattr(obj, "tolist") and hasattr(obj, "shape")


def _read(obj: Any) -> _Grid:
    """The float64 values of a host array (anything with `.tolist()` and `.shape`: what
    `Backend.to_numpy` returns, a torch tensor), a nested list or a number; always a copy."""
    if _is_host_array(obj):
        shape = tuple(int(d) for d in obj.shape)  # keeps an empty axis's length
        if hasattr(obj, "reshape"):  # flat first: one list, not a walk over nested ones
            return _Grid(shape, list(map(float, obj.reshape(-1).tolist())))
        return _Grid(shape, _nested_grid(obj.tolist()).values)
    return _nested_grid(obj)


def _nested_grid(nested: Any) -> _Grid:
    """A nested list (or tuple) of numbers, or a number, as a `_Grid`; ValueError when ragged."""
    if isinstance(nested, (list, tuple)) and any(hasattr(item, "tolist") for item in nested):
        nested = [item.tolist() if hasattr(item, "tolist") else item for item in nested]  # a list of arrays
    shape: list[int] = []
    level = nested
    while isinstance(level, (list, tuple)):
        shape.append(len(level))
        if not level:
            break
        level = level[0]
    values: list[float] = []

    def walk(item: Any, depth: int) -> None:
        if depth == len(shape):
            if isinstance(item, (list, tuple)):
                raise ValueError(f"gradcheck: a ragged input (nested lists of unequal depths): {nested!r}")
            values.append(float(item))
        elif not isinstance(item, (list, tuple)) or len(item) != shape[depth]:
            raise ValueError(f"gradcheck: a ragged input (nested lists of unequal lengths): {nested!r}")
        else:
            for sub in item:
                walk(sub, depth + 1)

    walk(nested, 0)
    return _Grid(tuple(shape), values)


def _nest(values: list[float], shape: tuple[int, ...]) -> Any:
    """Flat C-order `values` as nested lists of `shape` (a number for shape ())."""
    if not shape:
        return values[0]
    if len(shape) == 1:
        return list(values)
    inner = math.prod(shape[1:])
    return [_nest(values[k * inner:(k + 1) * inner], shape[1:]) for k in range(shape[0])]


def _array(backend: Any, grid: _Grid, dtype: str) -> Any:
    """A backend array of `dtype` holding `grid`, made from a nested list (or from zeros, when
    it has no elements: a nested list would lose the lengths of the axes after an empty one)."""
    if not grid.values and grid.shape:
        return backend.asarray(backend.zeros(grid.shape), dtype=dtype)
    if len(grid.shape) > 1:  # a flat list reshaped is much quicker than nested lists parsed
        flat = backend.asarray(grid.values, dtype=dtype)
        if hasattr(flat, "reshape"):
            return flat.reshape(grid.shape)
    return backend.asarray(_nest(grid.values, grid.shape), dtype=dtype)


def _float32(values: list[float]) -> list[float]:
    """`values` rounded to float32 (to nearest, ties to even; beyond its range to +-Inf), as numpy's
    `astype(np.float32)` rounds them, and read back as float64."""
    try:
        return packed("f", values).tolist()
    except OverflowError:  # some Pythons refuse a finite value beyond float32's range: round by hand
        return [_float32_beyond_range(v) for v in values]


_FLOAT32_HALFWAY = 3.4028235677973366e38  # between float32's largest value and 2**128: rounds to Inf


def _float32_beyond_range(v: float) -> float:
    """One value rounded to float32 where `array("f")` may refuse it (beyond float32's range)."""
    if math.isfinite(v) and abs(v) >= _FLOAT32_HALFWAY:
        return math.copysign(math.inf, v)
    if math.isfinite(v) and abs(v) > FLOAT32_MAX:
        return math.copysign(FLOAT32_MAX, v)
    return packed("f", [v])[0]


def _sum(values: Iterable[float]) -> float:
    """The exactly rounded sum (`math.fsum`); with an Inf or NaN among the values, or when the sum
    overflows, what float arithmetic gives (Inf, NaN), as numpy's sum does."""
    items = list(values)
    try:
        return math.fsum(items)
    except (OverflowError, ValueError):  # fsum refuses Inf - Inf and a sum beyond the float range
        return sum(items, 0.0)


def _max(*values: float) -> float:
    """The largest of `values`, NaN when one is NaN (numpy's max and maximum; Python's max is not)."""
    best = values[0]
    for v in values[1:]:
        if math.isnan(v) or v > best:
            best = v
            if math.isnan(v):
                break
    return best


def _divide(a: float, b: float) -> float:
    """a / b with IEEE's answer for b == 0 (+-Inf, or NaN for 0 / 0), as numpy gives it."""
    if b != 0:
        return a / b
    if a == 0 or math.isnan(a):
        return math.nan
    return math.copysign(math.inf, a) * math.copysign(1.0, b)


def _unravel(k: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The index of flat C-order position `k` in an array of `shape` (numpy's unravel_index)."""
    index = []
    for length in reversed(shape):
        k, i = divmod(k, length)
        index.append(i)
    return tuple(reversed(index))


def _blur(allowance: list[float], typical: float) -> float:
    """An input's largest rounding allowance over its typical gradient (0 where either is 0)."""
    return _max(*allowance) / typical if typical > 0 and allowance else 0.0


def _rms(values: list[float]) -> float:
    return math.sqrt(_sum(v * v for v in values) / len(values)) if values else 0.0


class _StateKeeper(Observer):
    """Remembers the state ops may update, to put it back when the check ends: the array of every
    leaf Tensor an op takes by keyword (BatchNorm's running statistics; BatchNorm gives a Tensor
    a new array) or as a constant, and a copy of every raw array it takes by keyword (updated in
    place). The `.grad` of every trainable leaf fn reaches (a model's weights) is set aside, so
    the check's backward passes make arrays of their own instead of adding into it, and put
    back. Only this thread's ops: another thread's model is not the check's business."""

    def __init__(self) -> None:
        self.thread = threading.get_ident()
        self.tensors: dict[int, tuple[Tensor, Any]] = {}
        self.arrays: dict[int, tuple[Any, Any]] = {}
        self.grads: dict[int, tuple[Tensor, Any, int | None]] = {}  # leaf, its .grad, when added into

    def before_forward(self, op: Any, args: tuple[Any, ...], params: dict[str, Any]) -> None:
        """Remember the leaf Tensors and raw arrays this op may update, before it does, and set the
        trainable leaves' gradients aside."""
        if threading.get_ident() != self.thread:
            return
        # Only where backward may follow: the perturbed passes run under no_grad, and remembering
        # the two leaves each of them makes per element held memory growing with size squared.
        for a in args if _grad_mode.enabled else ():
            if isinstance(a, Tensor) and a._op is None and a._requires_grad and id(a) not in self.grads:
                with _updates.lock:
                    self.grads[id(a)] = (a, a._grad, _updates.grads.get(a))
                a._grad = None
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
        for t, grad, written in self.grads.values():
            t._grad = grad
            with _updates.lock:
                if written is None:
                    _updates.grads.pop(t, None)
                else:
                    _updates.grads[t] = written


class _DroppedGradients(Observer):
    """Notes, in this thread, each op whose backward returned None for an input that needs a
    gradient (a forgotten gradient, `return (None,)`): gradcheck counts those as 0 and names them."""

    def __init__(self) -> None:
        self.thread = threading.get_ident()
        self.ops: list[str] = []  # "Forgot.backward for input 0", each once, in the order backward met them

    def after_backward(self, op: Any, grad: Any, grads: tuple[Any, ...], seconds: float) -> None:
        """Note `op` where it gave no gradient for an input that needs one."""
        if threading.get_ident() != self.thread:
            return
        for i, g in enumerate(grads):
            name = f"{type(op).__name__}.backward for input {i}"
            if g is None and op.needs_grad(i) and name not in self.ops:
                self.ops.append(name)


def _listed(names: list[str], shown: int = 4) -> str:
    """"A, B and 3 more": the first few of a list, for a one-line note."""
    rest = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {rest} more" if rest > 0 else "")


def _reaches_any(y: Tensor, leaves: list[Tensor]) -> bool:
    """Whether some of `leaves` is in the graph that made `y` (walking its ops' parents), whatever
    gradients their backwards return."""
    ids = {id(t) for t in leaves}
    if y._op is None:
        return id(y) in ids
    return any(id(node) in ids for node in _toposort(y._op))


def _op_name(y: Tensor) -> str:
    """The op that made fn's output (the one handed the check's seed), as a gradcheck report names it."""
    return f"{type(y.op).__name__} (which made fn's output)" if y.op is not None else "fn's last op"


def _call(fn: Callable[..., Tensor], args: list[Tensor]) -> Tensor:
    """`fn(*args)`, refused with a TypeError that says what to do unless it is one Tensor."""
    y = fn(*args)
    if isinstance(y, (tuple, list)) and y and all(isinstance(t, Tensor) for t in y):
        raise TypeError(f"gradcheck: fn must return one Tensor, got a {type(y).__name__} of {len(y)}: "
                        "combine them into one, e.g. sum them (a + b, same shapes) or "
                        "topgrad.cat([a.reshape(-1), b.reshape(-1)]) to check every output's gradient")
    if not isinstance(y, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(y).__name__}")
    return y


def _as_float64(x: Any, backend: Any) -> _Grid:
    if isinstance(x, Tensor):
        x = backend.to_numpy(x.data)
    return _read(x)  # a copy: the caller's arrays are never perturbed


def _precision(fn: Callable[..., Tensor], xs: list[_Grid], backend: Any) -> tuple[str, str]:
    """'float64' when the backend and `fn` keep float64 end to end, forward and backward.

    Float64 dtypes are not enough: a backend may store float64 and compute in float32. So a
    directional derivative is also taken with steps 1e-4 and 1e-6: in float64 both agree to
    about 1e-8 of the values computed, while float32 arithmetic makes the small step's one wrong
    by percents.
    """
    fallback = f"backend {backend.name!r} {{}}; checked in float32 with looser tolerances"

    def run(point: list[_Grid]) -> Tensor:
        return fn(*[Tensor._from_array(_array(backend, x, "float64"), None) for x in point])

    try:
        leaves = [Tensor._from_array(_array(backend, x, "float64"), None) for x in xs]
        out = fn(*leaves)
        kinds = {dtype_name(out)}
        if kinds == {"float64"}:
            ones = _Grid(tuple(out.shape), [1.0] * math.prod(out.shape))
            out.backward(Tensor._from_array(_array(backend, ones, "float64"), None))
            kinds |= {dtype_name(t.grad) for t in leaves if t.grad is not None}
        if kinds == {"float64"}:
            gauss = random.Random(12345).gauss
            directions = [[gauss(0.0, 1.0) for _ in x.values] for x in xs]
            r = [gauss(0.0, 1.0) for _ in range(math.prod(out.shape))]

            def f(t: float) -> float:
                with no_grad():
                    y = run([_Grid(x.shape, [v + t * d for v, d in zip(x.values, ds)])
                             for x, ds in zip(xs, directions)])
                return _sum(k * v for k, v in zip(r, _read(backend.to_numpy(y.data)).values))

            # the size of what fn computes: its output's, or its inputs' where the output cancels
            # to near 0 (a normalization summed), whose derivative is then float64's noise alone
            largest = _max(0.0, *[abs(v) for x in xs for v in x.values])
            scale = _sum(abs(k * v) for k, v in zip(r, _read(backend.to_numpy(out.data)).values)) \
                + _sum(map(abs, r)) * largest
            d4 = (f(1e-4) - f(-1e-4)) / 2e-4
            d6 = (f(1e-6) - f(-1e-6)) / 2e-6
    except Exception as exc:  # the backend has no float64 (or an op refuses it)
        return "float32", fallback.format(f"cannot run this in float64 ({type(exc).__name__}: {exc})")
    if kinds != {"float64"}:  # the backend's ops, or a Tensor that fn makes itself (float32 by default)
        return "float32", (f"fn gave {'/'.join(sorted(kinds))} for float64 inputs (backend {backend.name!r}, "
                           "or a Tensor fn makes: Tensor(...) is float32 unless dtype='float64'); checked "
                           "in float32 with looser tolerances")
    if not abs(d6 - d4) <= 1e-6 * (abs(d4) + scale):
        return "float32", fallback.format(
            "stores float64 but this function's derivative along a random direction is "
            f"{d4:.8g} with step 1e-4 and {d6:.8g} with step 1e-6: either the backend computes in "
            "lower precision, or the function has a kink within 1e-4 of the inputs (ReLU at 0; then "
            "dtype='float64' checks in float64, with a step that does not cross it)")
    return "float64", ""
