"""Checking one op case on the selected backend: forward, backward, and the reference's own gradient."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from topgrad.arrays import dtype_name
from topgrad.observe import Observer, observing
from topgrad.registry import get_backend
from topgrad.tensor import Tensor
from topgrad.testing.cases import Case, argument
from topgrad.testing.numeric import numeric_vjp
from topgrad.testing.outcome import RTOL, Outcome, compare, host_values, max_error, merge
from topgrad.testing.reference import REFERENCE, forward_output


def _to_backend(value: Any, requires_grad: bool = True) -> Any:
    """float64 reference input -> a Tensor on the selected backend (scalars and None pass through)."""
    if isinstance(value, np.ndarray):
        return Tensor(value.astype(np.float32), requires_grad=requires_grad)
    return value


def _apply(
    case: Case, args64: list[Any], params64: dict[str, Any]
) -> tuple[Tensor, list[Any], dict[str, Any]]:
    op = getattr(get_backend().ops, case.op)
    args = [_to_backend(a, i not in case.constants) for i, a in enumerate(args64)]
    params = {k: _to_backend(v) for k, v in params64.items()}
    return op.apply(*args, **params), args, params


def _unchanged(op: str, args: list[Any], args64: list[Any]) -> list[Outcome]:
    """Ops must not write into their inputs."""
    return [
        Outcome.failed(f"the op modified its {argument(op, i)} in place (an out= or an in-place "
                       "operator such as += on an input array; write into a new array)")
        for i, (t, ref) in enumerate(zip(args, args64))
        if isinstance(t, Tensor) and not np.array_equal(host_values(t.data), ref.astype(np.float32))
    ]


def _same_dtype(what: str, array: Any, args: list[Any]) -> list[Outcome]:
    """A result keeps its inputs' dtype: one that promotes float32 to float64 would turn the
    parameters into float64 at the first optimizer step (and pass every value check)."""
    want = next((dtype_name(t.data) for t in args if isinstance(t, Tensor)), None)
    got = dtype_name(array)
    if want is None or got == want:
        return []
    return [Outcome.failed(f"{what}: dtype {got}, but the inputs are {want} (numpy promotes: np.zeros, "
                           "np.ones or np.full without dtype=, or a numpy float64 scalar such as "
                           "np.sqrt(D), makes a float64 result)")]


def check_forward(case: Case, rtol: float = RTOL) -> Outcome:
    """The backend's forward output (and in-place parameter updates) against the float64 reference."""
    args64, params64 = case.materialize()
    if case.raises is not None:
        return _check_raises(case, args64, params64)
    ref = REFERENCE[case.op].forward(*args64, **params64)
    try:
        out, args, params = _apply(case, args64, params64)
        outcomes = [compare("output", host_values(out.data), forward_output(ref), rtol)]
        outcomes += _same_dtype("output", out.data, args)
        for name, expected in (ref[1] if isinstance(ref, tuple) else {}).items():
            outcomes.append(compare(f"{name} after forward", host_values(params[name].data), expected, rtol))
        outcomes += _unchanged(case.op, args, args64)
    except Exception as exc:  # the failure line names the case and "forward" already
        return Outcome.crashed("", exc)
    return merge(outcomes)


def _check_raises(case: Case, args64: list[Any], params64: dict[str, Any]) -> Outcome:
    expected = case.raises or ValueError
    shapes = [a.shape for a in args64 if isinstance(a, np.ndarray)]
    listed = ", ".join(map(str, shapes))
    try:
        _apply(case, args64, params64)
    except expected as exc:
        text = str(exc)
        missing = [str(s) for s in shapes if not re.search(r"\D+".join(map(str, s)), text)]
        if case.op.lower() not in text.lower() or missing:
            return Outcome.failed(
                f"{expected.__name__} raised, but its message should name the op {case.op!r} and "
                f"the shapes {listed}: {text!r}"
            )
        return Outcome(True)
    except Exception as exc:
        return Outcome.crashed(f"should raise {expected.__name__} (inputs of shapes {listed}), but", exc)
    return Outcome.failed(f"returned an output where it must raise {expected.__name__} "
                          f"(inputs of shapes {listed})")


def upstream_gradient(case: Case, shape: tuple[int, ...]) -> Any:
    """The gradient fed to backward: random, float32-representable, from the case's seed."""
    rng = np.random.default_rng(case.seed() + 1)
    return np.asarray(rng.standard_normal(shape), dtype=np.float32).astype(np.float64)


class _Returned(Observer):
    """The gradients each op's backward returned, before the engine casts a leaf's gradient to
    the leaf's dtype (the kit checks what the op itself computes), and the incoming gradient as
    backward left it."""

    def __init__(self) -> None:
        self.grads: dict[int, tuple[Any, ...]] = {}
        self.incoming: dict[int, Any] = {}

    def after_backward(self, op: Any, grad: Any, grads: tuple[Any, ...], seconds: float) -> None:
        """Keep what the op's backward returned and a copy of the gradient it was given."""
        self.grads[id(op)] = grads
        self.incoming[id(op)] = host_values(grad).copy()


def _kept_on_self(op: Any) -> list[Outcome]:
    """Arrays an op keeps as its own attributes live as long as the graph (the engine frees only
    what `save_for_backward` holds), and `graph()` cannot show them as saved."""
    kept = [name for name, value in getattr(op, "__dict__", {}).items()
            if not name.startswith("_") and name != "parents" and not isinstance(value, Tensor)
            and getattr(value, "dtype", None) is not None and len(getattr(value, "shape", ())) > 0]
    if not kept:
        return []
    listed = ", ".join(f"self.{name}" for name in kept)
    return [Outcome.failed(f"forward kept arrays on the op ({listed}): pass them to "
                           "self.save_for_backward(...) and read them from self.saved, so the "
                           "engine frees them after backward")]


def check_backward(case: Case, rtol: float = RTOL) -> Outcome | None:
    """Each input's gradient after `out.backward(g)` against the reference's vector-Jacobian product."""
    if case.raises is not None:
        return None
    args64, params64 = case.materialize()
    ref = REFERENCE[case.op]
    g = upstream_gradient(case, np.shape(forward_output(ref.forward(*args64, **params64))))
    expected = ref.vjp(g, *args64, **params64)
    try:
        out, args, _ = _apply(case, args64, params64)
    except Exception as exc:  # the forward check reports it; this one says why backward did not run
        return Outcome.crashed("not run: forward", exc)
    try:
        if tuple(out.shape) != np.shape(g):  # the forward check reports it; seeding backward with
            # the reference's shape would fail in the engine's own check and blame backward
            return Outcome.failed(f"not run: forward's output has shape {tuple(out.shape)}, expected "
                                  f"{np.shape(g)}; fix forward first")
        with observing(_Returned()) as returned:
            out.backward(g.astype(np.float32))
        op_grads = returned.grads.get(id(out._op), ())
        outcomes = _kept_on_self(out._op)
        incoming = returned.incoming.get(id(out._op))
        if incoming is not None and not np.array_equal(incoming, g.astype(np.float32)):
            outcomes.append(Outcome.failed(
                "backward wrote into its incoming gradient `grad`; it must leave it as it is (the "
                "engine may hand one array to several ops: Add passes its grad to both inputs)"))
        for i, (t, want) in enumerate(zip(args, expected)):
            which = argument(case.op, i)
            if not isinstance(t, Tensor):  # None, a number: the engine would drop an array silently
                if i < len(op_grads) and op_grads[i] is not None:
                    outcomes.append(Outcome.failed(f"backward returned an array for {which}, which is "
                                                   f"{t!r}, not a Tensor: return None there"))
                continue
            if i in case.constants:
                if t.grad is not None:
                    outcomes.append(Outcome.failed(f"{which} is a constant (requires_grad=False) "
                                                   "but got a gradient"))
                continue
            if t.grad is None:
                outcomes.append(Outcome.failed(f"{which} got no gradient (its backward entry was None; "
                                               "is a `return` missing?)"))
                continue
            outcomes.append(compare(f"gradient of {which}", host_values(t.grad), want, rtol))
            own = op_grads[i] if i < len(op_grads) and op_grads[i] is not None else t.grad
            outcomes += _same_dtype(f"gradient of {which}", own, [t])
    except Exception as exc:  # the failure line names the case and "backward" already
        return Outcome.crashed("", exc)
    return merge(outcomes)


def check_reference(case: Case) -> Outcome:
    """The kit's own float64 gradients against central differences (a failure is a kit bug)."""
    if case.raises is not None or not case.fd:
        return Outcome(True)
    args64, params64 = case.materialize()
    ref = REFERENCE[case.op]

    def f(*args: Any) -> Any:
        return forward_output(ref.forward(*args, **params64))

    g = upstream_gradient(case, np.shape(f(*args64)))
    analytic = ref.vjp(g, *args64, **params64)
    errors = []
    for i, a in enumerate(args64):
        if isinstance(a, np.ndarray):
            errors.append(max_error(analytic[i], numeric_vjp(f, args64, i, g)))
    err = max(errors, default=0.0)
    if not err <= 1e-6:
        return Outcome.failed(f"kit bug: the float64 reference gradient of {case.id} is off by {err:.1e}",
                              err)
    return Outcome(True, err)
