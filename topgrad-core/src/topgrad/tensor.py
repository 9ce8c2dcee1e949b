"""Tensor: an array from the selected backend, the op that made it, and its gradient.

Every Tensor method is one op of the backend's op table, or a few composed (`op.py` defines the
protocol). `backward` walks the graph once in reverse topological order, iteratively, so depth
is bounded by memory rather than by Python's recursion limit.

Reading order for the autograd itself (about 210 lines): `Tensor.__init__` and `_from_array`, then
`op.py`'s `Op.apply`, `_set_parents` and `_link` (forward records the graph), then "autograd" near
the end of this file (`backward`, `_backward`, `_seed`, `_toposort`) and `op.py`'s `run_backward`.
`versions.py`, the check that refuses an op whose saved arrays were overwritten in place after its
forward, can be skipped. The rest is one method per op; most checks behind their error messages
are in `arguments.py`, and the PyTorch names they answer in `pytorch_names.py`.
"""

from __future__ import annotations

import copy
import functools
import inspect
import math
import numbers
import operator
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from topgrad import arguments, pytorch_names, registry
from topgrad.arrays import FLOAT32_MAX, dtype_name
from topgrad.convolution import refuse_conv_options
from topgrad.errors import qualified_name, type_name
from topgrad.indexing import basic_index
from topgrad.joining import joined_shape, normal_axis, one_shape, tensor_list
from topgrad.pooling import pool_geometry, refuse_pool_options
from topgrad.versions import _updates, _Writes, is_view, mark_grad_written, mark_view, refuse_overwritten

if TYPE_CHECKING:
    from topgrad.op import Op


class _GradMode(threading.local):
    """Whether ops build the graph, per thread as in PyTorch: one thread's `no_grad` block
    leaves the others recording."""

    enabled = True


_grad_mode = _GradMode()


class no_grad:  # noqa: N801 - PyTorch's name
    """Run ops forward only: nothing is saved, no graph is built, and every result is a constant
    (`requires_grad=False`, as in PyTorch), so a loss computed here refuses `backward()` instead
    of training nothing. To train a value made here, set its `requires_grad = True`.
    As torch.no_grad: `with topgrad.no_grad():`, or a decorator, `@topgrad.no_grad()` or
    `@topgrad.no_grad`."""

    def __new__(cls, func: Any = None) -> Any:
        if func is None:
            return super().__new__(cls)
        if not callable(func):
            raise TypeError(f"no_grad takes no arguments (or, as a decorator, a function), got {func!r}")
        return _without_grad(func, cls)

    def __enter__(self) -> None:
        self._previous, _grad_mode.enabled = _grad_mode.enabled, False

    def __exit__(self, *exc: object) -> None:
        _grad_mode.enabled = self._previous

    def __call__(self, func: Any) -> Any:
        """`@topgrad.no_grad()` on a function: each call runs under no_grad."""
        return no_grad(func)


def _without_grad(func: Any, mode: type[no_grad]) -> Any:
    """`func` wrapped so that each call runs under `mode()` (no_grad), and for a generator function
    each step of the generator (the caller's code between steps keeps its own mode)."""

    @functools.wraps(func)
    def without_grad(*args: Any, **kwargs: Any) -> Any:
        with mode():
            return func(*args, **kwargs)

    @functools.wraps(func)
    def generator_without_grad(*args: Any, **kwargs: Any) -> Any:
        """A generator's body runs at each next(), after the call returned: each step runs under
        no_grad, and the caller's code between steps keeps its own mode (as torch.no_grad)."""
        steps = func(*args, **kwargs)
        send, value = steps.send, None
        while True:
            try:
                with mode():
                    item = send(value)
            except StopIteration as done:
                return done.value
            try:
                value, send = (yield item), steps.send
            except GeneratorExit:
                with mode():
                    steps.close()
                raise
            except BaseException as exc:  # thrown in by the caller: into the body, under no_grad
                value, send = exc, steps.throw

    return generator_without_grad if inspect.isgeneratorfunction(func) else without_grad


def _ops() -> Any:
    return registry.get_backend().ops


class Tensor:
    """An n-dimensional array (float32 by default, float64 too) that records the op which produced it."""

    __slots__ = ("__weakref__", "_data", "_grad", "_op", "_requires_grad", "_updated_at")
    __array_priority__ = 1000  # so that `numpy_array * tensor` calls Tensor.__rmul__

    @pytorch_names.keywords  # PyTorch's device=, pin_memory=: what to write instead
    def __init__(self, data: Any, dtype: str = "float32", requires_grad: bool = True) -> None:
        """`requires_grad=False` makes a constant (an input batch, targets): backward gives it no
        gradient and ops skip computing one, as PyTorch does for its inputs. A trainable tensor
        copies an array of the caller's that it would otherwise share (optimizers update it in
        place); a constant keeps sharing it (no copy of an input batch or a dataset)."""
        dtype = "float32" if dtype is None else dtype  # PyTorch's dtype=None: the default
        if isinstance(data, Tensor):
            data = data.data
        elif data is None:  # numpy would make a NaN of it
            raise TypeError("Tensor(None): give a number, a nested list or an array")
        elif isinstance(data, (str, bytes)):  # numpy would parse it; PyTorch refuses
            raise TypeError(f"Tensor({data!r}): text is not a number; give numbers (float(text) parses one)")
        backend = registry.get_backend()
        try:
            array = backend.asarray(data, dtype=dtype)
        except Exception as exc:  # a list of Tensors (PyTorch's way), ragged lists: say what to do
            arguments.refuse_tensor_data(data, exc, Tensor)
            raise
        # asarray made a new array from numbers and lists, and from a backend array whose memory
        # key changed; anything else (the same array, a torch tensor or buffer numpy wraps) may share
        made = isinstance(data, (int, float, list, tuple)) or (
            isinstance(data, registry._array_type(backend))
            and backend.memory_key(array) != backend.memory_key(data))
        if requires_grad and not made:
            array = backend.copy(array)
        if not isinstance(array, kind := registry._array_type(backend)):  # a numpy scalar from a 0-d sum
            if kind is type(None):
                raise TypeError(f"Tensor: backend {backend.name!r} cannot tell what its arrays are: its "
                                "zeros((0,)), which says so, failed with "
                                f"{registry.array_type_failure(backend)}")
            raise TypeError(f"Tensor: backend {backend.name!r} made a {type_name(array)} of the data, not "
                            f"one of its arrays ({qualified_name(kind)}): its asarray and "
                            "copy must return those (np.asarray(x) for numpy's 0-d results)")
        self._data: Any = array
        self._grad: Any = None
        self._op: Op | None = None
        self._updated_at = 0
        self._requires_grad = arguments.flag("Tensor", "requires_grad", requires_grad)

    @classmethod
    def _from_array(cls, array: Any, op: Op | None, requires_grad: bool = True) -> Tensor:
        """Wrap a backend array without converting it (the ops' fast path)."""
        t = cls.__new__(cls)
        t._data, t._grad, t._op, t._requires_grad, t._updated_at = array, None, op, requires_grad, 0
        return t

    @property
    def data(self) -> Any:
        """The values: an array of the backend this tensor was made under."""
        return self._data

    @data.setter
    def data(self, value: Any) -> None:
        """Replace the values (PyTorch's `x.data = ...`) with an array of the same backend's, of a
        dtype it makes Tensors of, as `Tensor(values).data` is: anything else would fail later, inside
        some op, or (integers) compute wrong values."""
        arguments.check_data(self._data, value)
        self._data = value

    @property
    def grad(self) -> Any:
        """The gradient backward accumulated, a backend array of this shape, or None. Only leaves get
        one: reading a computed tensor's warns (as in PyTorch), saying where its gradient is seen."""
        if self._grad is None and self._op is not None:
            pytorch_names.warn_non_leaf_grad(self._op)
        return self._grad

    @grad.setter
    def grad(self, value: Any) -> None:
        """Set it (backward adds into an array set here), or clear it with None. As PyTorch, it
        refuses an array of another shape, dtype or device, here where it is set, not at the next step."""
        if value is not None:
            arguments.check_grad(self, value, Tensor)
        self._grad = value

    @property
    def op(self) -> Op | None:
        """The Op that made this tensor (PyTorch's grad_fn); None for a leaf or a constant. Its
        `saved` arrays and its `parents` (Ops, leaf Tensors, plain values) are the graph."""
        return self._op

    @property
    def requires_grad(self) -> bool:
        """True for a trainable leaf and for what is computed from one; False for a constant."""
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        """A leaf (a parameter, a constant, a no_grad result) may change its flag; a computed
        Tensor may not drop it, which would silently cut the graph (PyTorch refuses too). A
        constant made trainable stays a constant to the ops that already used it (their
        backward gives it no gradient, as in PyTorch: `Op.needs_grad`)."""
        if self._op is not None and not value:
            raise RuntimeError(
                f"requires_grad: this Tensor was computed by {type(self._op).__name__}, and only a "
                "leaf's flag can change; for a constant copy of it use t.detach(), as in PyTorch"
            )
        self._requires_grad = arguments.flag("Tensor", "requires_grad", value)

    # ---- constructors: leaves, trainable unless requires_grad=False (torch.zeros's is a constant) ----
    @classmethod
    @pytorch_names.keywords
    def zeros(cls, *shape: int, requires_grad: bool = True) -> Tensor:
        """A leaf of zeros; PyTorch's dtype=, device=, generator= say what to write instead."""
        return _leaf("zeros", registry.get_backend().zeros(arguments.sizes("zeros", shape, 0)), requires_grad)

    @classmethod
    @pytorch_names.keywords
    def ones(cls, *shape: int, requires_grad: bool = True) -> Tensor:
        """A leaf of ones."""
        return _leaf("ones", registry.get_backend().ones(arguments.sizes("ones", shape, 0)), requires_grad)

    @classmethod
    @pytorch_names.keywords
    def randn(cls, *shape: int, seed: int | None = None, requires_grad: bool = True) -> Tensor:
        """A leaf of standard normal draws; the same `seed` gives the same values."""
        shape, seed = arguments.sizes("randn", shape, 0), arguments.seed("randn", seed)
        array = registry.get_backend().randn(shape, seed=seed)
        return _leaf("randn", array, requires_grad)

    @classmethod
    @pytorch_names.keywords
    def He(cls, *shape: int, seed: int | None = None, requires_grad: bool = True) -> Tensor:
        """He-normal init: std sqrt(2 / fan_in), fan_in = product of all but the last dim (a 1-D
        shape's length: PyTorch's kaiming_normal_ refuses one)."""
        shape, seed = arguments.sizes("He", shape, 0), arguments.seed("He", seed)
        fan_in = math.prod(shape[:-1]) if len(shape) > 1 else shape[0] if shape else 0
        if fan_in == 0:
            raise ValueError(f"He: needs a shape with a fan-in of at least 1, got {shape}")
        b = registry.get_backend()
        return _leaf("He", b.mul(b.randn(shape, seed=seed), math.sqrt(2.0 / fan_in)), requires_grad)

    # ---- properties ---------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        """The data's shape, as a tuple of ints."""
        return tuple(self.data.shape)

    @property
    def ndim(self) -> int:
        """The number of axes."""
        return len(self.data.shape)

    @property
    def dtype(self) -> Any:
        """The backend array's dtype (numpy's or torch's)."""
        return self.data.dtype

    def numpy(self) -> Any:
        """A numpy copy of the data, made by the backend the Tensor belongs to (which is the
        current one unless `set_backend` switched since: then its values still read out)."""
        return registry.backend_of(self.data).to_numpy(self.data)

    def item(self) -> float:
        """The value of a one-element tensor as a Python float; any other size is an error."""
        if self.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return float(self.numpy().reshape(-1)[0])

    def __float__(self) -> float:
        return self.item()

    def __format__(self, spec: str) -> str:
        """`f"{loss:.4f}"`: a 0-d tensor (a loss, a sum) formats as its number, as in PyTorch; any
        other takes no format spec (an empty one gives repr's text)."""
        if not self.shape:
            return format(self.item(), spec)
        if not spec:
            return str(self)
        raise TypeError(f"format spec {spec!r} for a Tensor of shape {self.shape}: only a 0-d tensor "
                        "formats as a number, as in PyTorch; format t.item() (one element) or t.numpy()")

    def __int__(self) -> int:
        """`int(t)` of a one-element tensor, truncated toward zero, as in PyTorch."""
        return int(self.item())

    def detach(self) -> Tensor:
        """A constant sharing this tensor's data, outside the graph (as `torch.Tensor.detach`)."""
        return mark_view(Tensor._from_array(self.data, None, requires_grad=False))

    @property
    def size(self) -> int:
        """The element count, numpy's name (PyTorch's x.numel()); calling it, as PyTorch's x.size()
        is, says to write x.shape."""
        return pytorch_names.Count(math.prod(self.data.shape))

    def __repr__(self) -> str:
        """The values (as numpy prints them, summarized when large), the shape, a dtype other
        than float32 (as PyTorch shows one other than its default), the op that made the tensor
        and whether it is a constant."""
        values = str(self.numpy()).replace("\n", "\n       ")
        dtype = dtype_name(self.data)
        shown = f", dtype={dtype}" if dtype != "float32" else ""
        made_by = f", op={type(self._op).__name__}" if self._op is not None else ""
        constant = ", requires_grad=False" if not self.requires_grad else ""
        return f"Tensor({values}, shape={self.shape}{shown}{made_by}{constant})"

    def __array__(self, dtype: Any = None, copy: Any = None) -> Any:
        """`np.asarray(t)`: a constant's values, by numpy's protocol: its own array where that is a
        numpy array of `dtype` (unless copy=True), else a copy (copy=False refuses to make one). As in
        PyTorch, a tensor that requires grad refuses: numpy functions would compute outside the graph."""
        if self.requires_grad:
            raise _outside_the_graph("numpy")
        numpy, data = sys.modules.get("numpy"), self._data
        if numpy is not None and isinstance(data, numpy.ndarray) and (dtype is None or data.dtype == dtype):
            return data.copy() if copy else data
        if copy is False:
            want = "" if dtype is None else f" as {getattr(dtype, '__name__', dtype)}"
            raise ValueError(f"np.array(t, copy=False): this Tensor's values are a {type_name(data)} of "
                             f"{dtype_name(data)}, so numpy needs a copy{want}, which copy=False forbids; "
                             "np.asarray(t) or t.numpy() makes one")
        values = self.numpy()
        return values if dtype is None else values.astype(dtype, copy=False)

    def __dlpack__(self, **kwargs: Any) -> Any:
        """DLPack export, so that `torch.tensor(c)` and `np.from_dlpack(c)` read a constant's values
        (its own array where that speaks DLPack, else a numpy copy); refused, as `__array__` refuses,
        for a tensor that requires grad."""
        return self._exported().__dlpack__(**kwargs)

    def __dlpack_device__(self) -> Any:
        """Where `__dlpack__`'s array lives, as DLPack's (device type, index)."""
        return self._exported().__dlpack_device__()

    def _exported(self) -> Any:
        """The array `__dlpack__` hands out: this constant's own, or its values as numpy."""
        if self.requires_grad:
            raise _outside_the_graph("DLPack (torch.tensor, np.from_dlpack)")
        data = self._data
        return data if hasattr(data, "__dlpack__") and hasattr(data, "__dlpack_device__") else self.numpy()

    def __bool__(self) -> bool:
        """The truth of a one-element tensor; for more elements it is ambiguous, as in PyTorch."""
        if self.size != 1:
            raise ValueError(f"the truth value of a Tensor of shape {self.shape} is ambiguous: "
                             "reduce it first (.sum(), .item())")
        return bool(self.item())

    def __contains__(self, value: Any) -> bool:
        """Refused: `==` on Tensors is identity (they are graph nodes), so `v in t` would answer
        False for values it holds, where PyTorch compares them."""
        raise TypeError("`value in tensor`: Tensors compare by identity, not by value; test the values "
                        "with (t.numpy() == value).any()")

    def __getstate__(self) -> dict[str, Any]:
        """What pickle keeps: values, .grad and requires_grad. A computed tensor comes back a leaf,
        as in PyTorch: the graph (saved arrays, weak references) is not pickled."""
        return {"data": self._data, "grad": self._grad, "requires_grad": self._requires_grad}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._data, self._grad, self._requires_grad = state["data"], state["grad"], state["requires_grad"]
        self._op, self._updated_at = None, 0

    def __copy__(self) -> Tensor:
        """copy.copy: a second Tensor on the same array and op, so a computed tensor's copy still
        leads backward to its graph. A leaf's copy is a leaf of its own with no .grad, as in
        PyTorch: one .grad array for both would have each backward add into the other's."""
        copied = type(self)._from_array(self._data, self._op, self._requires_grad)
        copied._updated_at = self._updated_at
        return copied

    def __deepcopy__(self, memo: dict[int, Any]) -> Tensor:
        """A leaf's copy (values and .grad copied); a computed tensor is refused, as in PyTorch: its
        copy would carry a copy of the whole graph, whose leaves would get the gradients."""
        if self._op is not None:
            raise RuntimeError(
                f"copy.deepcopy of a tensor computed by {type(self._op).__name__}: only leaves (tensors "
                "you made) can be deep-copied, as in PyTorch. Tensor(t.numpy()) is a new leaf with its "
                "values; t.detach() a constant sharing them")
        copied = type(self).__new__(type(self))
        memo[id(self)] = copied
        copied.__setstate__(copy.deepcopy(self.__getstate__(), memo))
        return copied

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d Tensor")
        return self.data.shape[0]

    def __getitem__(self, index: Any) -> Tensor:
        """`x[1]`, `x[:, 2:5]`, `x[..., None]`: basic indexing as in PyTorch (ints, slices with a
        positive step, None, ...), as the Slice op; the result is dense (a view where the picked
        elements are one dense block, a copy elsewhere), and its gradient flows back into them."""
        return mark_view(_ops().Slice.apply(self, index=basic_index(index, self.shape)))

    def __getattr__(self, name: str) -> Any:
        """Asked only for a missing attribute: the error names the Topgrad way to do what a
        `torch.Tensor` method of that name does (`x.view` -> `x.reshape`). A property whose own code
        raised AttributeError (x.T on a backend without Permute) lands here too: its error is shown."""
        if isinstance(prop := getattr(Tensor, name, None), property) and prop.fget is not None:
            return prop.fget(self)
        way = pytorch_names.hint(name, lambda method: callable(getattr(Tensor, method, None)))
        raise AttributeError(f"'Tensor' object has no attribute {name!r}" + (f": {way}" if way else ""),
                             name=name, obj=self)

    def __setitem__(self, index: Any, value: Any) -> None:
        """Refused with the way round: no op of the table writes into a tensor (PyTorch's `x[i] = v`
        is an in-place op with a version counter), so the new values are computed instead."""
        raise TypeError(pytorch_names.NO_ITEM_ASSIGNMENT)

    def __iter__(self) -> Iterator[Tensor]:
        """The rows along the first axis, each a Slice of this tensor (as iterating a torch.Tensor)."""
        if not self.shape:
            raise TypeError("iteration over a 0-d Tensor")
        return (self[i] for i in range(self.data.shape[0]))

    # ---- arithmetic: each is one op of the table, or a composition of them --------
    def __add__(self, other: Any) -> Tensor:
        return _ops().Add.apply(self, _operand(other, self))

    def __radd__(self, other: Any) -> Tensor:
        return _ops().Add.apply(_operand(other, self), self)

    def __mul__(self, other: Any) -> Tensor:
        return _ops().Mul.apply(self, _operand(other, self))

    def __rmul__(self, other: Any) -> Tensor:
        return _ops().Mul.apply(_operand(other, self), self)

    def __neg__(self) -> Tensor:
        return self * -1.0

    def __sub__(self, other: Any) -> Tensor:
        if other is True or other is False:  # -True is -1, but PyTorch refuses a bool on either side
            arguments.refuse_bool_subtraction("y", other)
        other = _operand(other, self)
        try:  # integers as floats first: -0 is 0, and -0.0 + 0.0 would lose x's sign where x is -0.0
            negated = _negated(other)
        except (TypeError, RuntimeError) as exc:  # a str, None, a bool mask (numpy, torch will not negate)
            arguments.refuse_no_negative(other, exc)
            raise
        return self + negated

    def __rsub__(self, other: Any) -> Tensor:
        if type(other) is not float and type(other) is not int:  # 1.0 - x and 1 - x go straight on
            arguments.refuse_bool_subtraction("x", other)  # a mask - x, as PyTorch refuses it
        return _operand(other, self) + (-self)

    def __truediv__(self, other: Any) -> Tensor:
        """x / y is the Div op, x / c for a number c too (correctly rounded, as PyTorch's). On a
        backend without Div (it is optional) x / c is x * (1 / c); where 1 / c overflows the
        tensor's dtype (float32: |c| < 2.9e-39) it is (x * (2^-64 / c)) * 2^64, so that
        1e-40 / 1e-39 is 0.1 and 0 / 1e-39 is 0, as in PyTorch."""
        if not arguments.is_number(other):  # a Tensor, or whatever the backend's Div takes (as `*` does)
            return _ops().Div.apply(self, _operand(other, self))
        c = float(other)
        if c == 0:
            return self * math.copysign(math.inf, c)  # x / 0: ±inf (0 / 0: NaN), as IEEE, -0.0 too
        div = getattr(_ops(), "Div", None)
        if div is not None:
            return div.apply(self, c)
        r = 1.0 / c  # inf where it overflows float64 (|c| < 5.6e-309)
        if abs(r) <= FLOAT32_MAX or (not math.isinf(r) and dtype_name(self.data) == "float64"):
            return self * r
        return (self * (2.0**-64 / c)) * 2.0**64

    def __rtruediv__(self, other: Any) -> Tensor:
        """c / x for a number c (or an operand the backend's Div takes): the Div op."""
        return _ops().Div.apply(_operand(other, self), self)

    def __pow__(self, n: Any) -> Tensor:
        """x ** n for a whole number n >= 1, by repeated squaring (x ** 2 is x * x, x ** 5 is
        x * ((x * x) * (x * x))): Mul ops, so every backend has it, and the engine sums the
        gradient n * x ** (n - 1) over the factors. x ** 0.5 is x.sqrt()."""
        number = arguments.is_number(n)
        k = float(n) if number else math.nan
        if k == 0.5:
            return self.sqrt()
        if not (k >= 1 and k.is_integer()):
            shown = repr(n) if number else type(n).__name__
            raise TypeError(
                f"Tensor ** {shown}: the exponent must be a whole number >= 1 (x ** 3 is x * x * x) "
                "or 0.5 (x.sqrt()); other powers are not an op of the table: write x ** -0.5 as "
                "1 / x.sqrt(), x ** -n as 1 / x ** n, and x ** p for x > 0 as (x.log() * p).exp()"
            )
        if k == 1:
            return self * 1.0  # a new tensor, as in PyTorch
        factors, square, m = [], self, int(k)
        while m:
            if m & 1:
                factors.append(square)
            m >>= 1
            if m:
                square = square * square
        return functools.reduce(operator.mul, factors)

    # In-place updates (`w -= lr * w.grad`), as in PyTorch: under no_grad they replace the data of
    # this very tensor (a leaf keeps its identity, .grad and requires_grad); elsewhere a leaf that
    # requires grad refuses, and any other tensor gets the out-of-place result (a new graph node)
    # of its own shape and dtype. What PyTorch makes a view refuses: its update would write through.
    def __iadd__(self, other: Any) -> Tensor:
        return self._in_place("+=", operator.add, other)

    def __isub__(self, other: Any) -> Tensor:
        return self._in_place("-=", operator.sub, other)

    def __imul__(self, other: Any) -> Tensor:
        return self._in_place("*=", operator.mul, other)

    def __itruediv__(self, other: Any) -> Tensor:
        return self._in_place("/=", operator.truediv, other)

    def __ipow__(self, n: Any) -> Tensor:
        return self._in_place("**=", operator.pow, n)

    def _in_place(self, how: str, op: Any, other: Any) -> Tensor:
        if is_view(self):
            raise RuntimeError(
                f"Tensor {how}: this tensor was made by x[...], x.T, reshape, permute or detach(), a view "
                f"of x in PyTorch, where an in-place update writes through to x; Topgrad's would give "
                f"this tensor new values and leave x as it is. Update x itself (under no_grad: "
                f"x {how} ..., or x.data = new values), or write y = y {how[:-1]} z for a new tensor"
            )
        recording, dtype = _grad_mode.enabled, dtype_name(self._data)
        if recording and self._op is None and self.requires_grad:
            raise RuntimeError(
                f"Tensor {how}: a leaf that requires grad cannot be changed in place while the graph is "
                f"recorded (as in PyTorch); update parameters under `with topgrad.no_grad():`, or "
                f"write x = x {how[:-1]} y for a new tensor"
            )
        if not recording and dtype == "float64" and dtype_name(other) == "float32":
            other = Tensor(other, dtype=dtype, requires_grad=False)  # float32 would win the op, rounding w
        result = op(self, other)
        got = dtype_name(result.data)
        if tuple(result.shape) != self.shape or (recording and got != dtype):
            raise ValueError(f"Tensor {how}: the result is {got} of shape {result.shape}, the tensor {dtype} "
                             f"of shape {self.shape} (an in-place update cannot broadcast it, and keeps the "
                             f"dtype, as PyTorch's); write x = x {how[:-1]} y for a new tensor")
        if recording:  # a new graph node, as x = x + y would be
            return result
        # under no_grad: this very tensor's data replaced; a float64 leaf stays float64, as in PyTorch
        data = result.data
        self.data = data if got == dtype else registry.backend_of(self._data).asarray(data, dtype=dtype)
        return self

    def __matmul__(self, w: Tensor) -> Tensor:
        try:
            return _ops().Linear.apply(self, w, None)
        except Exception:  # a list or a number for w: said as x.linear(w) says it
            arguments.operand("Linear", "w", w, Tensor)
            raise

    def __rmatmul__(self, x: Any) -> Tensor:
        try:
            return _ops().Linear.apply(x, self, None)
        except Exception:
            arguments.operand("Linear", "x", x, Tensor)
            raise

    def __rpow__(self, base: Any) -> Tensor:
        """`c ** x` is no op of the table: say how to write it (PyTorch computes it)."""
        raise TypeError(f"{base!r} ** Tensor: there is no power op with a tensor exponent; for a number "
                        "c > 0, c ** x is (x * math.log(c)).exp()")

    def _no_comparison(self, other: Any) -> bool:
        """Tensors are graph nodes: == is identity (they are hashable) and <, >, <=, >= do not exist."""
        raise TypeError("Topgrad has no comparison ops (a comparison has no gradient; == on tensors is "
                        "identity): compare the values instead, e.g. x.numpy() > 0")

    __lt__ = __le__ = __gt__ = __ge__ = _no_comparison

    @pytorch_names.keywords
    def sum(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
        """The sum over `axis` (every axis by default), as np.sum; the gradient is broadcast back."""
        keep = arguments.flag("sum", "keepdims", keepdims)
        return _ops().Sum.apply(self, axis=arguments.tensor_axes("sum", axis, self.ndim), keepdims=keep)

    @pytorch_names.keywords
    def mean(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
        """The mean over `axis` (every axis by default), as np.mean."""
        keep = arguments.flag("mean", "keepdims", keepdims)
        return _ops().Mean.apply(self, axis=arguments.tensor_axes("mean", axis, self.ndim), keepdims=keep)

    @pytorch_names.keywords
    def max(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
        """The largest element over `axis`, as torch.amax: elements that tie share the gradient."""
        keep = arguments.flag("max", "keepdims", keepdims)
        return _ops().Max.apply(self, axis=arguments.tensor_axes("max", axis, self.ndim), keepdims=keep)

    @pytorch_names.keywords
    def relu(self) -> Tensor:
        """max(x, 0), as torch.relu: its gradient is 0 at 0, as PyTorch's."""
        return _ops().ReLU.apply(self)

    def exp(self) -> Tensor:
        """e ** x, as torch.exp (inf where it overflows)."""
        return _ops().Exp.apply(self)

    def log(self) -> Tensor:
        """The natural logarithm, as torch.log: -inf at 0, NaN below."""
        return _ops().Log.apply(self)

    def sqrt(self) -> Tensor:
        """The square root (NaN below 0), as torch.sqrt; its gradient 1 / (2 sqrt(x)) is inf at 0."""
        return _ops().Sqrt.apply(self)

    def abs(self) -> Tensor:
        """|x|, also `abs(x)`, as torch.abs: its gradient sign(x) is 0 at 0 (and at NaN)."""
        return _ops().Abs.apply(self)

    __abs__ = abs

    def tanh(self) -> Tensor:
        """The hyperbolic tangent, as torch.tanh."""
        return _ops().Tanh.apply(self)

    def sigmoid(self) -> Tensor:
        """1 / (1 + e^-x) as one op: its gradient stays finite where e^-x overflows (written out
        from Exp and Div, the gradient is NaN below x = -88)."""
        return _ops().Sigmoid.apply(self)

    @pytorch_names.keywords
    def logsoftmax(self, axis: int = -1) -> Tensor:
        """log(softmax(x)) along one axis as one op: stable for large logits, for cross-entropy."""
        return _ops().LogSoftmax.apply(self, axis=arguments.one_axis("LogSoftmax", axis))

    @pytorch_names.keywords
    def softmax(self, axis: int = -1) -> Tensor:
        """Normalized exponentials along one axis: the backend's Softmax op (optional) where it has
        one, else e ** logsoftmax(x) (two ops; Exp is optional too), each stable for large logits."""
        ops = vars(_ops())
        fused = ops.get("Softmax")  # not getattr: a missing op's error message is built
        if fused is None:
            if "LogSoftmax" not in ops or "Exp" not in ops:
                missing = " and ".join(name for name in ("LogSoftmax", "Exp") if name not in ops)
                raise AttributeError(
                    f"x.softmax: backend {registry.get_backend().name!r} has no Softmax op, and the "
                    f"fallback, logsoftmax(x).exp(), needs {missing}, which it lacks too; add one of them "
                    "with a plugin's topgrad_ops hook")
            return self.logsoftmax(axis).exp()
        return fused.apply(self, axis=arguments.one_axis("Softmax", axis))

    @pytorch_names.keywords
    def linear(self, w: Tensor, b: Tensor | None = None) -> Tensor:
        """x @ w + b, with `w` as (in, out): F.linear's weight transposed."""
        w, b = arguments.operand("Linear", "w", w, Tensor), arguments.operand("Linear", "b", b, Tensor, True)
        return _ops().Linear.apply(self, w, b)

    @pytorch_names.keywords
    def reshape(self, *shape: int) -> Tensor:
        """The same values in `shape` (one -1 is inferred), as torch.reshape."""
        return mark_view(_ops().Reshape.apply(self, shape=arguments.sizes("reshape", shape)))

    @pytorch_names.keywords
    def flatten(self, start: int = 1) -> Tensor:
        """Merge the axes from `start` on into one (negative counts from the end): by default every
        axis but the batch's, as nn.Flatten and torch.flatten(x, 1) do (torch.flatten starts at 0)."""
        start = arguments.flatten_start(start, self.shape)
        return self.reshape(*self.shape[:start], math.prod(self.shape[start:]))  # -1 fails on 0 elements

    @pytorch_names.keywords
    def permute(self, *axes: int) -> Tensor:
        """The axes reordered, as torch.permute (negative axes count from the end); the result is dense."""
        return mark_view(_ops().Permute.apply(self, axes=arguments.permutation(axes, self.shape)))

    @property
    def T(self) -> Tensor:
        """The transpose of a tensor of at most two axes (PyTorch deprecates .T beyond two)."""
        if self.ndim > 2:
            raise ValueError(f"T: a tensor of shape {self.shape} has {self.ndim} axes; .T is for at most "
                             f"two, use permute({', '.join(map(str, reversed(range(self.ndim))))})")
        return self.permute(*reversed(range(self.ndim)))

    @pytorch_names.keywords
    def conv2d(self, w: Tensor, b: Tensor | None = None, stride: int | tuple[int, int] = 1,
               padding: int | tuple[int, int] | str = 0, *, dilation: int = 1, groups: int = 1) -> Tensor:
        """2-D cross-correlation of NHWC x with `w` as (kh, kw, Cin, Cout), zero padding; stride and
        padding are an int or an (h, w) pair, padding also 'valid' or 'same' (odd kernels); PyTorch's
        dilation and groups at 1 only (other values say how to compose them)."""
        if dilation != 1 or groups != 1:
            refuse_conv_options(dilation, groups)
        w, b = arguments.operand("Conv2d", "w", w, Tensor), arguments.operand("Conv2d", "b", b, Tensor, True)
        return _ops().Conv2d.apply(self, w, b, stride=stride, padding=padding)

    def maxpool2d(self, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None,
                  padding: int | tuple[int, int] = 0, *, dilation: int = 1, ceil_mode: bool = False,
                  return_indices: bool = False) -> Tensor:
        """The maximum of each window of NHWC x, as torch's max_pool2d (stride defaults to the window,
        padding is -inf): the gradient goes to each window's first maximum, or to its last NaN if any."""
        if dilation != 1 or ceil_mode or return_indices:
            refuse_pool_options(dilation, ceil_mode, return_indices)
        kernel, step, pad, _ = pool_geometry(self.shape, kernel_size, stride, padding)
        return _ops().MaxPool2d.apply(self, kernel_size=kernel, stride=step, padding=pad)

    @pytorch_names.keywords
    def batchnorm(
        self,
        gamma: Tensor,
        beta: Tensor,
        *positional: Any,  # F.batch_norm's order (x, running_mean, running_var, weight, bias, ...) differs
        running_mean: Tensor | None = None,
        running_var: Tensor | None = None,
        training: bool = True,
        momentum: float = 0.1,
        eps: float = 1e-5,
    ) -> Tensor:
        """Batch normalization over every axis but the last (NHWC's channels). The statistics and
        options are keyword-only: `F.batch_norm(x, running_mean, running_var, weight, bias, ...)`
        ported positionally would train the statistics and write them into gamma and beta."""
        if positional:
            raise TypeError(
                f"batchnorm takes gamma and beta positionally, then keywords only; {2 + len(positional)} "
                "were given. F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, "
                "eps) is x.batchnorm(weight, bias, running_mean=..., running_var=..., training=..., "
                "momentum=..., eps=...)"
            )
        training = arguments.batchnorm_settings("BatchNorm", running_mean, running_var, training,
                                                momentum, eps)
        gamma, beta = arguments.affine("BatchNorm", gamma, beta, Tensor)
        return _ops().BatchNorm.apply(
            self, gamma, beta, running_mean=running_mean, running_var=running_var,
            training=training, momentum=momentum, eps=eps,
        )

    @pytorch_names.keywords
    def layernorm(self, gamma: Tensor, beta: Tensor, eps: float = 1e-5) -> Tensor:
        """Layer normalization over the last axis: (x - mean) / sqrt(var + eps) * gamma + beta."""
        arguments.refuse_normalized_shape(gamma)
        arguments.check_eps("LayerNorm", eps)
        gamma, beta = arguments.affine("LayerNorm", gamma, beta, Tensor)
        return _ops().LayerNorm.apply(self, gamma, beta, eps=eps)

    # ---- autograd -----------------------------------------------------------------
    def graph(self, names: Any = None) -> Any:
        """The graph behind this tensor: ops, shapes, parents, saved arrays (`topgrad.graph.Graph`).

        `names` ({name: tensor}, e.g. a model's parameters) labels those tensors.
        """
        from topgrad.graph import build

        return build(self, names)

    @pytorch_names.keywords  # PyTorch's gradient=, retain_graph=: what to write instead
    def backward(self, grad: Any = None) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's `.grad`, seeded with `grad` (ones if None)."""
        try:
            self._backward(grad)
        except Exception as exc:  # a graph made under another backend fails obscurely: name it
            registry.refuse_foreign_tensors("backward", [("the tensor", self), ("grad", grad)], exc, Tensor)
            arguments.refuse_tensor_grads([self] if self._op is None else _toposort(self._op), exc, Tensor)
            raise

    def _backward(self, grad: Any) -> None:
        """The walk: check and cast the seed, then run each op's backward in reverse topological
        order, summing what reaches a node and keeping what reaches a leaf."""
        backend = registry.get_backend()
        grad = _seed(self, grad, backend)
        if self._op is None:
            with _updates.grad_lock:
                self._grad = backend.copy(grad) if self._grad is None else _add_in(self, grad, backend)
            return
        add_gradients = backend.add_gradients
        order = _toposort(self._op)
        # memory that leaf gradients must not share: the seed, and every leaf's values (a backward
        # may hand back one input's saved array as another's gradient: dot(x, w) = sum(x * w))
        memory_in_use = {backend.memory_key(node._data) for node in order if isinstance(node, Tensor)}
        memory_in_use.add(backend.memory_key(grad))
        writes: _Writes | None = None  # what the clock counted, by memory: built once an op needs it
        grads: dict[int, Any] = {id(self._op): grad}
        for node in reversed(order):
            g = grads.pop(id(node), None)
            if g is None:  # no gradient flows here (every consumer returned None)
                continue
            if isinstance(node, Tensor):  # a leaf: its gradient is complete, keep it
                if g.dtype != node._data.dtype:  # in the leaf's dtype, as in PyTorch (mixed operands)
                    g = backend.asarray(g, dtype=dtype_name(node._data))
                with _updates.grad_lock:  # another thread's backward may reach this leaf too
                    if node._grad is None:
                        node._grad = _own(backend, g, memory_in_use)
                    else:
                        node._grad = _add_in(node, g, backend, writes)
                for obs in _op.Op._observers:  # anomaly mode: a sum of finite gradients may overflow
                    obs.after_leaf_gradient(node, node._grad)
                continue
            # written in place since its forward (a step, an add into a .grad)? refused if it saved that
            if node._born < _updates.now and node._intermediate:
                writes = refuse_overwritten(node, writes, backend, Tensor)
            for i, (parent, pg) in enumerate(zip(node.parents, _op.run_backward(node, g))):
                if pg is None or not node.needs_grad(i):  # a constant or a plain value
                    continue
                key = id(parent)
                grads[key] = pg if key not in grads else add_gradients(grads.pop(key), pg)  # pop: no ref held
            if node._intermediate:  # an op that saved nothing can run backward again
                node._release()


def _outside_the_graph(reader: str) -> RuntimeError:
    """Why `reader` (numpy, DLPack) may not read a tensor that requires grad, as in PyTorch."""
    return RuntimeError(
        f"{reader} cannot use a Tensor that requires grad: its result would be outside the graph "
        "and get no gradient. Use Topgrad's ops, or t.numpy() for a copy of the values (an Op's "
        "forward and backward, called by hand, take the backend's arrays: pass t.data)"
    )


def _seed(t: Tensor, grad: Any, backend: Any) -> Any:
    """backward's seed for `t`: `grad` as an array of t's dtype (ones if None), checked for t's shape;
    a RuntimeError where t is a constant, from which no gradient flows."""
    dtype = dtype_name(t._data)  # asarray takes a dtype's name: a float64 tensor's seed is float64
    if grad is None:
        grad = backend.asarray(backend.ones(t.shape), dtype=dtype)
    elif isinstance(grad, Tensor):  # in this tensor's dtype, as PyTorch casts the seed
        grad = grad.data if dtype_name(grad.data) == dtype else backend.asarray(grad.data, dtype=dtype)
    elif isinstance(grad, (str, bytes)):  # numpy would parse '2' into a number; PyTorch refuses it
        raise TypeError(f"backward: grad must be a Tensor, an array or a number, got text {grad!r}")
    else:
        grad = backend.asarray(grad, dtype=dtype)
    if tuple(grad.shape) != t.shape:
        raise ValueError(f"backward: grad of shape {tuple(grad.shape)} for a tensor of shape {t.shape}")
    if not t._requires_grad:
        raise RuntimeError(
            "backward: this tensor is a constant (requires_grad=False, computed under "
            "topgrad.no_grad(), or computed from constants only), so no gradient flows from "
            "it; compute the loss outside no_grad, and make the leaves you train with "
            "Tensor(data) (requires_grad=True is the default)"
        )
    return grad


def _add_in(leaf: Tensor, g: Any, backend: Any, writes: _Writes | None = None) -> Any:
    """leaf's `.grad` + g, added into the .grad array where the backend can, as PyTorch does; such
    a write is clocked, as a step is, for ops that saved that memory (a constant Tensor(w.grad)),
    and told to the walk's `writes`."""
    if tuple(leaf._grad.shape) != leaf.shape:  # .data given a new shape since: it would broadcast
        raise RuntimeError(f"backward: a leaf of shape {leaf.shape} has a .grad of shape "
                           f"{tuple(leaf._grad.shape)}, left from before its .data was given a new shape; "
                           "clear it first (w.grad = None, or opt.zero_grad()), as PyTorch refuses it too")
    total = backend.accumulate(leaf._grad, g)
    if total is leaf._grad:
        now = mark_grad_written(leaf)
        if writes is not None:
            writes.grad_added(leaf, now)
    return total


def _own(backend: Any, g: Any, memory_in_use: set[Any]) -> Any:
    """`g`, or a copy where it may share memory with the seed or another leaf's gradient
    (Add hands one array to both inputs) or is read-only: in-place edits of one `.grad` stay in it."""
    key = backend.memory_key(g)
    if key is None or key in memory_in_use or not _writeable(g):
        g = backend.copy(g)
        key = backend.memory_key(g)
    memory_in_use.add(key)
    return g


def _writeable(a: Any) -> bool:
    """False for an array flagged read-only (numpy's broadcast_to view, which a custom backward
    may return): a `.grad` is written in place (`w.grad *= 0.5`, backward's sum into it)."""
    return getattr(getattr(a, "flags", None), "writeable", True) is not False


def _toposort(root: Op) -> list[Any]:
    """The graph's nodes (ops and leaf Tensors) reachable from `root`, each after its parents.

    Iterative depth-first search, so depth is not limited by Python's recursion limit.
    """
    op_type = _op.Op
    order: list[Any] = []
    seen: set[int] = {id(root)}
    stack: list[tuple[Any, Iterator[Any]]] = [(root, iter(root.parents))]
    while stack:
        node, parents = stack[-1]
        for p in parents:
            if id(p) not in seen and isinstance(p, (op_type, Tensor)):
                seen.add(id(p))
                if isinstance(p, op_type):  # visit its parents first
                    stack.append((p, iter(p.parents)))
                    break
                order.append(p)  # a leaf has none
        else:
            stack.pop()
            order.append(node)
    return order


def _negated(other: Any) -> Any:
    """-other, with an integer (Python's or numpy's, or a numpy int array) made float first, and a
    0-d array kept one (numpy's -a is a scalar, which the ops take as a number: x + a would not)."""
    if isinstance(other, numbers.Integral):
        return -float(other)
    if getattr(other, "ndim", None) == 0 and not isinstance(other, numbers.Number):
        return _negated(other.reshape(1)).reshape(())
    if getattr(getattr(other, "dtype", None), "kind", None) in ("i", "u"):
        return other * -1.0
    return -other


def _operand(other: Any, like: Tensor) -> Any:
    """An arithmetic operand: a list or tuple of numbers becomes a constant Tensor in `like`'s
    dtype, so `x * [1.0, 2.0]` and `x - [1.0, 2.0]` work alike on every backend (numpy's took
    some of them as arrays, other backends none); anything else is passed on as it is."""
    if isinstance(other, (list, tuple)):
        return Tensor(other, dtype=dtype_name(like.data), requires_grad=False)
    return other


def _leaf(op: str, array: Any, requires_grad: Any) -> Tensor:
    """A factory's result: a leaf, trainable unless requires_grad=False."""
    return Tensor._from_array(array, None, arguments.flag(op, "requires_grad", requires_grad))


@pytorch_names.keywords
def attention(q: Tensor, k: Tensor, v: Tensor, causal: bool = False) -> Tensor:
    """Single-head scaled dot-product attention, softmax(q kᵀ / √D) v, shapes (B, T, D), as
    PyTorch's scaled_dot_product_attention: a query whose scores are all -inf gets output 0."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        arguments.operand("Attention", name, t, Tensor)
    return _ops().Attention.apply(q, k, v, causal=arguments.flag("attention", "causal", causal))


@pytorch_names.keywords
def cat(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
    """The tensors joined along `axis` (negative counts from the end), as torch.cat: the Concat
    op. Every other axis must match; each input's gradient is its part of the output's."""
    ts = tensor_list("cat", tensors, Tensor)
    _, ax = joined_shape("cat", [t.shape for t in ts], axis)
    return _ops().Concat.apply(*ts, axis=ax)


@pytorch_names.keywords
def stack(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
    """The tensors, all of one shape, stacked along a new axis `axis`, as torch.stack: each
    gets a size-1 axis there (a Reshape, no copy), then Concat joins them."""
    ts = tensor_list("stack", tensors, Tensor)
    one_shape("stack", [t.shape for t in ts])
    ax = normal_axis("stack", axis, ts[0].ndim + 1)
    return cat([t.reshape(*t.shape[:ax], 1, *t.shape[ax:]) for t in ts], axis=ax)


# op.py imports Tensor from this module, so the engine's other half is bound here, last, and
# once: an import statement inside backward costs ~1.4 us on every call.
from topgrad import op as _op  # noqa: E402
