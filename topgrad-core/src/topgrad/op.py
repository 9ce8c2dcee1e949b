"""The Op protocol: one differentiable operation, its forward, its backward and what it saved.

A backend implements each op of the table as a subclass of `Op`. `Op.apply` runs
`forward` on raw backend arrays and, unless `no_grad` is active, links the result into
the graph so that `Tensor.backward` can later call `backward` on this very instance.

The graph is made of ops, as PyTorch's is made of grad_fns: `op.parents` holds, per
positional argument, the Op that produced it, or the leaf Tensor itself, or the plain value
(a scalar, None). It holds no intermediate output, so an activation that no op saved for
backward is freed as soon as the model's code lets go of it.

Constants (`Tensor(x, requires_grad=False)`: an input batch) get no gradient: an op asks
`needs_grad(i)` which gradients to compute, and an op whose Tensor inputs are all constants
builds no graph at all; its output is a constant too.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from topgrad import pytorch_names, registry
from topgrad import tensor as _tensor
from topgrad.errors import (
    counted,
    name_the_op,
    not_an_array,
    note_saved_nothing,
    numpy_scalar_hint,
    qualified_name,
    released_text,
    shape_fix,
)
from topgrad.tensor import Tensor
from topgrad.versions import _updates
from topgrad.warning_location import warn_once_at


class Op:
    """Base class of every operation; subclasses define `forward` and `backward`.

    `needs_grad(i)` is known in forward too (`apply` sets the parents first), so forward may skip
    saving what only that gradient reads (Mul, `x * mask`). While the engine runs backward,
    `saved_are_scratch` is True and backward may write into the saved arrays (numpy's BatchNorm
    writes dL/dx over x - mean); a backward called by hand must leave them as they were."""

    parents: tuple[Any, ...] = ()  # per positional argument: its Op, a leaf Tensor, or the value
    # The output's shape and dtype, kept after the output itself is freed (graph views read them).
    # Underscored, like every engine attribute: the op's own names belong to the op.
    _out_shape: tuple[int, ...] = ()
    _out_dtype: Any = None
    _output: Any = None  # weakref to the output Tensor (see `output`)
    _intermediate: tuple[Any, ...] = ()
    _saved_names: tuple[str, ...] = ()  # save_for_backward's keywords, for display ("#0" if none)
    _born = 0  # the update clock's count at forward: a later count means arrays were written in place
    _constants = 0  # bit i: argument i was a constant leaf at forward (`needs_grad`)
    saved_are_scratch = False  # True while the engine runs backward (see above)
    # Observers (profiler, tracer, anomaly detector) registered by topgrad's tools: a tuple,
    # replaced whole on each change, so a reader's snapshot never shifts under it while another
    # thread leaves its block. Empty in normal runs, so `apply` and backward take their short path.
    _observers: ClassVar[tuple[Any, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Where the class is written, refuse what `apply` cannot run (PyTorch's Function shapes)."""
        super().__init_subclass__(**kwargs)
        pytorch_names.refuse_function_style(cls)

    def forward(self, *arrays: Any, **params: Any) -> Any:
        """Compute the output array from raw backend arrays (or scalars)."""
        raise NotImplementedError(f"{type(self).__name__}.forward is not implemented")

    def backward(self, grad: Any) -> tuple[Any, ...]:
        """Return one gradient per positional argument of `apply` (None where none is needed)."""
        raise NotImplementedError(f"{type(self).__name__}.backward is not implemented")

    def save_for_backward(self, *arrays: Any, **named: Any) -> None:
        """Keep the arrays `backward` needs, read back from `self.saved` in the order given (the
        keyword ones after the others); the engine releases them after backward. Keywords name
        them for graph() and a learner (`x=x, w=w`); positional ones show as #0, #1. (Arrays kept
        as attributes, `self.x = x`, live as long as the graph instead; the kit flags them.)"""
        if not _tensor._grad_mode.enabled:
            return
        if not named:
            self._intermediate, self._saved_names = arrays, ()  # no names left from an earlier call
        elif not arrays:
            self._intermediate, self._saved_names = tuple(named.values()), tuple(named)
        else:
            self._intermediate = (*arrays, *named.values())
            self._saved_names = (*(f"#{i}" for i in range(len(arrays))), *named)

    @property
    def saved(self) -> tuple[Any, ...]:
        """The arrays this op saved for backward. Once backward has run it is empty, and unpacking
        it (a backward run by hand) says that they were released."""
        return self._intermediate

    def _release(self) -> None:
        """Let go of the saved arrays once the engine's backward has used them."""
        self._intermediate = ReleasedArrays(type(self).__name__)

    @property
    def _released(self) -> bool:
        """Has backward released what this op saved?"""
        return type(self._intermediate) is ReleasedArrays

    def needs_grad(self, i: int) -> bool:
        """Does backward need argument `i`'s gradient? False for a plain value, or a leaf that was a
        constant at forward or is one now (as in PyTorch); True for an op run by hand."""
        parents = self.parents
        if i >= len(parents):
            return True
        p = parents[i]
        if isinstance(p, Op):
            return True
        # the fields, not the properties: no calls on the hot path
        return isinstance(p, Tensor) and p._requires_grad and not self._constants >> i & 1

    def output(self) -> Tensor | None:
        """The Tensor this op produced, while something still holds it; else None."""
        return self._output() if self._output is not None else None

    @classmethod
    def apply(cls, *args: Any, **params: Any) -> Tensor:
        """Run the op on Tensors (or scalars/None) and return the output Tensor."""
        if cls._observers:
            return _apply_observed(cls, args, params)
        op = cls()
        if _tensor._grad_mode.enabled:  # before forward: needs_grad(i) tells it what backward will use
            _set_parents(op, args)
        try:
            out = op.forward(*[a._data if isinstance(a, Tensor) else a for a in args], **params)
        except Exception as exc:
            _forward_failed(cls, args, params, exc)
            raise
        if not _tensor._grad_mode.enabled:  # a constant, as in PyTorch: backward from it is an error
            return _constant(op, out)
        return _link(op, args, out)

    def __repr__(self) -> str:
        """`<Linear op: (2, 3) float32, saved 2 arrays>`: what it made and what it holds."""
        if self._out_dtype is None:
            return f"<{type(self).__name__} op: not applied>"
        if self._released:
            held = "saved arrays released"
        else:
            from topgrad.graph import saved_count  # graph imports this module: bound at the call

            held = f"saved {counted(saved_count(self), 'array')}"
        dtype = str(self._out_dtype).removeprefix("torch.")
        return f"<{type(self).__name__} op: {tuple(int(d) for d in self._out_shape)} {dtype}, {held}>"

    if not TYPE_CHECKING:  # for mypy an Op keeps only the attributes it declares

        def __getattr__(self, name: str) -> Any:
            """Asked only for a missing attribute: a PyTorch grad_fn name gets the Topgrad way."""
            way = pytorch_names.OP_INSTEAD.get("_saved_*" if name.startswith("_saved_") else name)
            hint = f": PyTorch's grad_fn.{name} is {way}" if way else ""
            raise AttributeError(f"{type(self).__name__!r} op has no attribute {name!r}{hint}",
                                 name=name, obj=self)


def _apply_observed(cls: type[Op], args: tuple[Any, ...], params: dict[str, Any]) -> Tensor:
    """The slow path of `apply`, taken only while an observer is registered."""
    op, observers = cls(), cls._observers  # one snapshot: each hook pair goes to the same observers
    if _tensor._grad_mode.enabled:
        _set_parents(op, args)
    for obs in observers:
        obs.before_forward(op, args, params)
    start = time.perf_counter()
    try:
        out = op.forward(*[a._data if isinstance(a, Tensor) else a for a in args], **params)
    except Exception as exc:
        _forward_failed(cls, args, params, exc)
        raise
    seconds = time.perf_counter() - start
    result = _link(op, args, out) if _tensor._grad_mode.enabled else _constant(op, out)
    for obs in observers:
        obs.after_forward(op, args, params, result, seconds)
    return result


def _forward_failed(cls: type[Op], args: tuple[Any, ...], params: dict[str, Any], exc: Exception) -> None:
    """After a forward raised `exc`: a TypeError if an operand is another backend's Tensor, else a
    note naming the op and the operands' shapes."""
    registry.refuse_foreign_tensors(cls.__name__, _numbered(args, params), exc, Tensor)
    name_the_op(exc, cls, "forward", args)


def _numbered(args: tuple[Any, ...], params: dict[str, Any] | None = None) -> Iterator[tuple[str, Any]]:
    """Each operand with its name for an error: "operand 0", ..., then the keyword ones by keyword."""
    yield from ((f"operand {i}", a) for i, a in enumerate(args))
    yield from (params or {}).items()


def _link(op: Op, args: tuple[Any, ...], out: Any) -> Tensor:
    """Make `out` the output Tensor of `op`, whose parents (ops and leaves) `apply` set before its
    forward; with constants alone for inputs, `out` is a constant and `op` is dropped."""
    if not any(isinstance(a, Tensor) and a._requires_grad for a in args):
        op._intermediate = ()  # nothing will run its backward: let go of what it saved
        return _constant(op, out)
    if not isinstance(out, _array_type()):
        error = _not_an_array(op, out)
        # another backend's Tensor among the operands: the likelier cause, named first
        registry.refuse_foreign_tensors(type(op).__name__, _numbered(args), error, Tensor)
        raise error
    op._born = _updates.now
    try:
        op._out_shape, op._out_dtype = out.shape, out.dtype
    except AttributeError:  # a backend whose array type is unknown
        raise _not_an_array(op, out) from None
    result = Tensor._from_array(out, op)
    op._output = weakref.ref(result)
    return result


def _set_parents(op: Op, args: tuple[Any, ...]) -> None:
    """An op's parents: per argument the op that made it, the leaf Tensor, or the plain value;
    and which leaves were constants then (a bit each), since a leaf's flag may change later."""
    parents, constants = [], 0
    for i, a in enumerate(args):
        if isinstance(a, Tensor):
            if a._op is not None:
                a = a._op
            elif not a._requires_grad:
                constants |= 1 << i
        parents.append(a)
    op.parents, op._constants = tuple(parents), constants


def _constant(op: Op, out: Any) -> Tensor:
    """`out` as a constant Tensor (no graph: under no_grad, or from constants only)."""
    if not isinstance(out, _array_type()):
        raise _not_an_array(op, out)
    return Tensor._from_array(out, None, requires_grad=False)


def _not_an_array(op: Op, out: Any) -> TypeError:
    """The error for a forward's result that is not one of the current backend's arrays."""
    return not_an_array(type(op).__name__, out, _array_type(), Tensor)


def _array_type() -> Any:
    """The type of the current backend's arrays (`object` where its `zeros` cannot tell)."""
    kind = registry._array_type(registry.get_backend())
    return object if kind is type(None) else kind


class ReleasedArrays(tuple):
    """What an op holds once backward released its saved arrays: empty and false, as () is, but
    a backward run by hand (`op.backward(g)`) that unpacks or indexes it is told why, not
    "not enough values to unpack"."""

    op_name: str

    def __new__(cls, op_name: str) -> ReleasedArrays:
        released = super().__new__(cls)
        released.op_name = op_name
        return released

    def __iter__(self) -> Iterator[Any]:
        raise RuntimeError(released_text(self.op_name))

    def __getitem__(self, index: Any) -> Any:
        raise RuntimeError(released_text(self.op_name))


def run_backward(op: Op, grad: Any) -> tuple[Any, ...]:
    """Call `op.backward`, check what it returned, then inform observers (so an observer such as
    detect_anomaly sees only well-formed gradients); used by the engine for every node."""
    if op._released:
        raise RuntimeError(released_text(type(op).__name__))
    scratch = bool(op._intermediate)  # saved arrays: this walk's alone, to use and release
    if scratch:
        _claim(op)
        op.saved_are_scratch = True  # the caller, the engine, releases them next
    start = time.perf_counter() if Op._observers else None
    try:
        returned = op.backward(grad)
    except Exception as exc:
        if not op._intermediate:
            note_saved_nothing(exc, type(op))
        name_the_op(exc, type(op), "backward", (grad,))
        raise
    finally:
        if scratch:
            del op.saved_are_scratch  # the class's False again (and no setting for graph() to show)
    seconds = 0.0 if start is None else time.perf_counter() - start  # 0: none watched it start
    try:
        grads = _checked_gradients(op, returned)
        for obs in Op._observers:  # those watching now, one registered during the backward too
            obs.after_backward(op, grad, grads, seconds)
    except Exception:  # detect_anomaly, a wrong gradient: backward ran, and may have used its
        if op._intermediate:  # saved arrays as scratch, so a hand call must not read them again
            op._release()
        raise
    return grads


def _claim(op: Op) -> None:
    """Take `op`'s saved arrays for this walk, or raise as for released ones: two threads sharing a
    graph must not both run its backward (one would write dL/dx over what the other reads)."""
    mine = object()  # setdefault is atomic: one walk wins, and the claim stays (as PyTorch's error)
    if op.__dict__.setdefault("_backward_claim", mine) is not mine:
        raise RuntimeError(released_text(type(op).__name__))


def _checked_gradients(op: Op, returned: Any) -> tuple[Any, ...]:
    """`op.backward`'s result as a tuple, one gradient per positional argument, each None or a
    backend array of its input's shape; an error naming the op and the input otherwise."""
    if returned is None and len(op.parents) != 1:
        raise RuntimeError(f"{type(op).__name__}.backward returned None (is its `return` missing?); it "
                           f"must return {counted(len(op.parents), 'gradient')}, one per positional "
                           "argument, None where there is none")
    if returned is None and op.needs_grad(0):  # a real "no gradient" op says (None,)
        warn_once_at(f"{type(op).__name__}.backward returned None for an input that requires a gradient, "
                     "so nothing before it trains; is its `return` missing? (return (None,) where no "
                     "gradient is meant)", type(op).backward, type(op).__module__)
    grads = returned if isinstance(returned, tuple) else (
        tuple(returned) if isinstance(returned, list) else (returned,))
    if len(grads) != len(op.parents):
        raise RuntimeError(
            f"{type(op).__name__}.backward returned {counted(len(grads), 'gradient')} for "
            f"{counted(len(op.parents), 'positional argument')} (one per argument, None where there is none)"
        )
    kind = None  # the backend's array type, looked up once a gradient needs it
    for i, (parent, g) in enumerate(zip(op.parents, grads)):
        if g is None or not isinstance(parent, (Op, Tensor)):
            continue
        if isinstance(g, Tensor):  # it would become a leaf's .grad, or fail later
            raise TypeError(f"{type(op).__name__}.backward returned a Tensor for input {i}; backward works "
                            "on the backend's arrays, as forward does: return its .data (or compute "
                            "with the arrays self.saved holds)")
        if not isinstance(g, kind := kind or _array_type()):
            raise TypeError(f"{type(op).__name__}.backward returned a {qualified_name(type(g))} for input "
                            f"{i}; it must return the backend's arrays ({qualified_name(kind)}, the type "
                            f"its zeros((0,)) returns), or None where there is no gradient"
                            f"{numpy_scalar_hint(g, kind)}")
        want = parent._out_shape if isinstance(parent, Op) else parent.shape
        if tuple(g.shape) != tuple(want):
            leaf = "" if isinstance(parent, Op) else (
                f"; or input {i}, a leaf, was given .data of another shape after this forward pass "
                "(then run the forward pass again)")
            raise RuntimeError(
                f"{type(op).__name__}.backward returned a gradient of shape {tuple(g.shape)} for "
                f"input {i} of shape {tuple(want)} ({shape_fix(tuple(g.shape), tuple(want))}{leaf})"
            )
    return grads
