"""Checks of the arguments Tensor methods take (sizes, axes, switches, seeds, eps, Tensor operands)
and of the values a Tensor is given (its data, its .grad): each refuses a bad value by the op's
name before a backend sees it, so the engine in tensor.py reads without them."""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any, NoReturn

from topgrad import registry
from topgrad.arrays import dtype_name
from topgrad.errors import numpy_scalar_hint, qualified_name, type_name


def sizes(op: str, shape: tuple[Any, ...], least: int = -1) -> tuple[int, ...]:
    """Accept both `f(2, 3)` and `f((2, 3))`; whole numbers >= `least` only (2.5 is no size)."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    whole = _whole_sizes(op, shape, least)
    if least >= 0 and math.prod(whole) > LARGEST_ARRAY:  # torch overflowed with C++ frames in its text
        raise ValueError(f"{op}: shape {whole} holds {math.prod(whole):.3g} elements, more than any "
                         "array can (their bytes would pass 2**63)")
    return whole


LARGEST_ARRAY = (2**63 - 1) // 8
"""The most elements an array of float64 can have: its bytes count in a signed 64-bit integer."""


def _whole_sizes(op: str, shape: tuple[Any, ...], least: int) -> tuple[int, ...]:
    """`shape` as ints, each a whole number >= `least`; ValueError naming `op` else."""
    try:  # a bool is no size (True would be 1), as PyTorch refuses it
        whole = () if any(isinstance(s, bool) for s in shape) else tuple(operator.index(s) for s in shape)
    except TypeError:
        whole = ()
    if len(whole) != len(shape) or any(s < least for s in whole):
        floor = " >= 0" if least >= 0 else " >= 0, or -1 for the one size inferred" if least == -1 else ""
        raise ValueError(f"{op}: shape {shape!r}: every size must be a whole number{floor}")
    return whole


def permutation(axes: tuple[Any, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    """`permute(1, 0)` or `permute((1, 0))` as non-negative axes; ValueError unless every axis of
    `shape` appears once."""
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = tuple(axes[0])
    if not all(is_whole(a) for a in axes):
        raise TypeError(f"Permute: axes must be ints, got {axes!r}")
    ndim = len(shape)
    given = tuple(int(a) % ndim if ndim and -ndim <= a < ndim else -1 for a in axes)
    if len(axes) != ndim or sorted(given) != list(range(ndim)):
        want = f"each of 0 to {ndim - 1} once (negative ones count from the end)" if ndim else "none"
        raise ValueError(f"Permute: axes {tuple(axes)} are no ordering of the {ndim} axes of shape {shape}; "
                         f"give {want}")
    return given


def new_shape(op: str, shape: Any) -> tuple[int, ...]:
    """Reshape.apply's `shape=` checked as x.reshape checks its sizes: a tuple or list of whole
    numbers, -1 allowed (one int for a 1-d result, as numpy's reshape takes it); TypeError where
    none was given (a default () would make a 0-d array of a 1-element x, or fail saying "into
    shape ()")."""
    if shape is None:
        raise TypeError(f"{op}: shape is required: {op}.apply(x, shape=(2, -1)), as x.reshape(2, -1) does "
                        "(shape=() for a 0-d result)")
    return _whole_sizes(op, tuple(shape) if isinstance(shape, (tuple, list)) else (shape,), -1)


def refuse_reshape(op: str, old: tuple[int, ...], shape: Any, why: str = "") -> NoReturn:
    """Raise why an array of shape `old` takes no `shape`, once a backend's reshape refused it: a
    size that is no whole number >= -1 (`new_shape`), more than one -1, a -1 among sizes whose
    product is 0, or a different number of elements; else `why`, the backend's own reason
    (numpy's limit of 64 dimensions), is the message."""
    shape = new_shape(op, shape)
    old, known = tuple(old), math.prod(s for s in shape if s != -1)
    count = math.prod(old)
    if shape.count(-1) > 1:
        raise ValueError(f"{op}: at most one size may be -1 (inferred from the others), got shape {shape}")
    if -1 in shape and known == 0:
        raise ValueError(f"{op}: cannot infer the -1 of shape {shape} for an array of shape {old}: the "
                         "other sizes multiply to 0")
    if (count % known if -1 in shape else count != known):
        raise ValueError(f"{op}: cannot reshape an array of shape {old} ({count} elements) into "
                         f"shape {shape}")
    raise ValueError(f"{op}: cannot reshape an array of shape {old} into shape {shape}"
                     + (f": {why}" if why else ""))


def reshaped(op: str, old: tuple[int, ...], shape: Any) -> tuple[int, ...]:
    """`shape` (as `new_shape` takes it) with its -1 filled in, for an array of shape `old`: the
    sizes a view takes; ValueError (`refuse_reshape`) where it does not fit."""
    if type(shape) is not tuple or not all(type(s) is int for s in shape):
        shape = new_shape(op, shape)
    count = math.prod(old)
    if -1 in shape and shape.count(-1) == 1:
        known = -math.prod(shape)
        if known > 0 and count % known == 0:
            shape = tuple(count // known if s == -1 else s for s in shape)
    if math.prod(shape) != count or min(shape, default=0) < 0:
        refuse_reshape(op, old, shape)
    return shape


def axes_order(axes: Any, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Permute.apply's `axes=` checked as x.permute checks them (`permutation`): a tuple or list
    of ints, negative ones counting from the end; TypeError where none was given."""
    if axes is None:
        raise TypeError("Permute: axes is required: Permute.apply(x, axes=(1, 0)), as x.permute(1, 0) does")
    return permutation(tuple(axes) if isinstance(axes, (tuple, list)) else (axes,), shape)


def is_number(value: Any) -> bool:
    """A real number (Python's or numpy's), not a bool: what division, powers and the norms'
    settings take."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_whole(value: Any) -> bool:
    """An int (Python's or numpy's), not a bool: what axes are."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def with_article(noun: str) -> str:
    """`noun` with its indefinite article: 'a list', 'an int', 'an ndarray' (said "en-darray")."""
    return f"{'an' if noun[:1] in 'aeiou' or noun == 'ndarray' else 'a'} {noun}"


def seed(op: str, seed: Any) -> int | None:
    """A random seed: None, or a whole number >= 0 (numpy's generator would fail deep inside)."""
    if seed is not None and not (is_whole(seed) and seed >= 0):
        raise ValueError(f"{op}: seed must be None or a whole number >= 0, got {seed!r}")
    return seed


def one_axis(op: str, axis: Any) -> int:
    """The one int axis a normalization runs along (LogSoftmax, Softmax); a tuple or None fails
    deep inside a backend otherwise."""
    if not is_whole(axis):
        raise TypeError(f"{op}: axis must be one int (it normalizes along one axis), got {axis!r}")
    return axis


def tensor_axes(op: str, axis: Any, ndim: int) -> tuple[int, ...] | None:
    """The axes a Tensor method hands its backend's reduction: None (every axis) or sorted
    non-negative ints (`normal_axes`), so no backend's forward meets a list, a negative axis or a
    numpy integer. A 0-d tensor's axis 0 is every axis: None."""
    if axis is None:
        return None
    axes = normal_axes(op, axis, ndim)
    return axes if ndim else None


def normal_axes(op: str, axis: Any, ndim: int) -> tuple[int, ...]:
    """`axis` (None: every axis; an int or a sequence, negatives counting from the end) as sorted
    non-negative axes of an array of `ndim` dimensions, for a backend's reductions. An axis is a
    whole number (operator.index: a 0-d float or bool array, which has __index__ too, is none,
    not truncated); out of range, repeated or `()` is a ValueError naming `op`."""
    if axis is None:
        return tuple(range(ndim))
    if type(axis) is int and -ndim <= axis < ndim:  # the usual case, told at once (0-d arrays fall through)
        return (axis % ndim,)
    given = (axis,) if hasattr(axis, "__index__") else axis if isinstance(axis, (tuple, list)) else None
    whole = None
    if given is not None and not any(isinstance(a, bool) for a in given):
        try:
            whole = [operator.index(a) for a in given]
        except TypeError:
            pass
    if whole is None:
        raise TypeError(f"{op}: axis must be None, an int or a tuple of ints, got {axis!r}")
    if not whole:  # () is no axis to numpy and every axis to PyTorch: refused
        raise ValueError(f"{op}: axis=() is ambiguous (numpy reduces no axis, PyTorch every one); "
                         "use axis=None to reduce every axis")
    out = []
    for a in whole:
        if not (a in (0, -1) if ndim == 0 else -ndim <= a < ndim):  # 0-d: axis 0 or -1, as in PyTorch
            raise ValueError(f"{op}: axis {a} is out of range for an array with {ndim} dimensions")
        out.append(a % max(ndim, 1))
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: repeated axis in {axis!r}")
    return tuple(sorted(out)) if ndim else ()  # a 0-d array has no axis to reduce


def flag(op: str, name: str, value: Any) -> bool:
    """A True/False switch, as PyTorch wants one: `causal="no"` would otherwise count as true."""
    if value is True or value is False:  # the usual case, told at once (ops check their switches too)
        return value
    if isinstance(value, bool) or type(value).__name__ in ("bool", "bool_"):  # numpy's bool too
        return bool(value)
    raise TypeError(f"{op}: {name} must be True or False, got {value!r}")


def check_eps(op: str, eps: Any) -> None:
    """eps must be a number, as PyTorch's norms need a float (a str ran on triton and failed inside
    numpy), finite and >= 0 (a negative one can make var + eps negative)."""
    if type(eps) is float and 0.0 <= eps < math.inf:  # the usual 1e-5, told at once
        return
    if not is_number(eps):
        raise TypeError(f"{op}: eps must be a number, got {type(eps).__name__}")
    if not 0 <= float(eps) < math.inf:
        raise ValueError(f"{op}: eps must be finite and >= 0, got {eps!r}")


def check_momentum(op: str, momentum: Any) -> None:
    """A running average's momentum: a number in [0, 1] (PyTorch's None, a cumulative average,
    is not supported)."""
    if not is_number(momentum) or not 0 <= momentum <= 1:
        raise ValueError(
            f"{op}: momentum must be a number in [0, 1], got {momentum!r} (PyTorch's "
            "momentum=None, a cumulative average of every batch, is not supported)"
        )


def running_stats(op: str, running_mean: Any, running_var: Any) -> None:
    """Both running statistics or neither, as PyTorch's batch_norm takes them: given one alone,
    training would update it and eval would fail for want of the other."""
    if (running_mean is None) != (running_var is None):
        names = ["running_mean", "running_var"]
        given, missing = names if running_var is None else names[::-1]
        raise ValueError(f"{op}: got {given} without {missing}: give both running statistics "
                         "(Tensor.zeros(C, requires_grad=False) and Tensor.ones(C, requires_grad=False) "
                         "to start) or neither, as PyTorch's batch_norm")


def batchnorm_settings(op: str, running_mean: Any, running_var: Any, training: Any, momentum: Any,
                       eps: Any) -> bool:
    """BatchNorm.apply's keywords checked as x.batchnorm checks them (momentum, eps, the running
    statistics, then training), in its words; `training` returned as a bool. The usual values
    (a bool, float momentum and eps in range, both statistics or neither) pass at once."""
    if ((training is True or training is False) and (running_mean is None) is (running_var is None)
            and type(momentum) is float and 0.0 <= momentum <= 1.0 and type(eps) is float
            and 0.0 <= eps < math.inf):
        return training
    check_momentum(op, momentum)
    check_eps(op, eps)
    running_stats(op, running_mean, running_var)
    return flag(op, "training", training)


def not_a_tensor(op: str, name: str, value: Any) -> TypeError:
    """The TypeError for an operand given as a list, a number or text where a Tensor belongs (a
    norm's gamma), in the words of the Tensor methods."""
    return TypeError(f"{op}: {name} must be a Tensor, got {with_article(type_name(value))}: make it "
                     f"Tensor({name})")


def objects_are_not_numbers(backend: str) -> TypeError:
    """The TypeError of every backend for an object array (numpy would make its None a NaN)."""
    return TypeError(f"{backend} backend: object arrays are not supported; give numbers")


def none_is_not_numbers(backend: str, data: Any) -> TypeError:
    """The TypeError of every backend for None among the numbers of a list (numpy would make it NaN,
    which then trains silently; PyTorch refuses it)."""
    return TypeError(f"{backend} backend: a {type(data).__name__} holding None is not numbers (PyTorch "
                     "refuses it too; numpy would make it NaN): give a number, or float('nan') for a "
                     "missing value")


def text_is_not_numbers(backend: str, data: Any, dtype: str, example: Any = None) -> TypeError:
    """The TypeError of every backend for text where numbers belong (numpy would parse '2.5'; PyTorch
    refuses it): `data` is an array of text of `dtype`, or a list or tuple holding text (`example`)."""
    if isinstance(data, (list, tuple)):
        return TypeError(f"{backend} backend: a {type(data).__name__} of text ({example!r}, ...) is not "
                         "numbers (PyTorch refuses it too); parse it first: "
                         "np.asarray(data).astype('float32'), or float(text) for one item")
    return TypeError(f"{backend} backend: an array of text ({dtype}) is not numbers; convert it first "
                     "(a.astype('float32') parses it)")


def dates_are_not_numbers(backend: str, dtype: str) -> TypeError:
    """The TypeError of every backend for datetime64 or timedelta64 values (numpy would read their
    counts of the unit as numbers; PyTorch refuses them)."""
    return TypeError(f"{backend} backend: {dtype} values are dates or durations, not numbers (PyTorch "
                     "refuses them too); convert them first: (a - a.min()) / np.timedelta64(1, 's') gives "
                     "seconds as floats")


def refuse_non_numbers(backend: str, data: Any, probe: Any = None) -> None:
    """Every backend's TypeError for what numpy would silently turn into numbers: text (parsed),
    dates and time spans (counted), an object array and None in a list (NaN). `data` is what the
    user gave; `probe`, for a (nested) list or tuple, numpy's reading of it (where only None among
    objects is refused: asarray says what is wrong with the rest)."""
    array = data if probe is None else probe
    dtype = getattr(array, "dtype", None)
    kind = getattr(dtype, "kind", None)  # numpy's; a torch dtype has none
    if kind in ("U", "S"):
        example = None if probe is None else probe.reshape(-1)[0].item()
        raise text_is_not_numbers(backend, data, str(dtype), example)
    if kind in ("M", "m"):
        raise dates_are_not_numbers(backend, str(dtype))
    if kind == "O" and probe is None:
        raise objects_are_not_numbers(backend)
    if kind == "O" and any(v is None for v in probe.reshape(-1)):
        raise none_is_not_numbers(backend, data)


def is_bool(value: Any) -> bool:
    """A bool (Python's or numpy's) or an array of bools (numpy's, torch's): a mask."""
    if value is True or value is False:
        return True
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        return False
    kind = getattr(dtype, "kind", None)  # numpy's dtype: a character, quick to read
    return kind == "b" if kind is not None else str(dtype) == "torch.bool"


def refuse_bool_subtraction(side: str, value: Any) -> None:
    """TypeError where `value`, operand `side` ("x" or "y") of x - y, is a bool or a mask of bools:
    PyTorch refuses a bool on either side of `-` (numpy too, but only on the right)."""
    if not is_bool(value):
        return
    what = f"a bool ({value!r})" if value is True or value is False else (
        f"a {type_name(value)} of bools" if getattr(value, "shape", ()) else f"a bool ({value!r})")
    raise TypeError(f"x - y: {side} is {what}: subtraction, the `-` operator, with a bool is not "
                    f"supported, as in PyTorch. {_mask_advice(value)}") from None


def _mask_advice(value: Any) -> str:
    """How to invert or convert the bool mask `value`, in its own library's calls: numpy's
    (np.logical_not, .astype) fail on a torch tensor, which has its own (.float()), and on a
    Python bool, whose ~ is an int's (~True is -2)."""
    if isinstance(value, bool):
        return "To invert a bool, use `not b`; to subtract its 0/1 value, use float(b) (1.0 for True)"
    if str(getattr(value, "dtype", None)) == "torch.bool":
        return ("To invert a mask, use ~mask (torch.logical_not(mask)); to subtract its 0/1 values, "
                "convert it first (mask.float(), or 1.0 for True)")
    return ("To invert a mask, use ~mask (np.logical_not(mask)); to subtract its 0/1 values, convert "
            "it first (mask.astype('float32'), or 1.0 for True)")


def refuse_no_negative(value: Any, exc: Exception) -> None:
    """After `-y` failed in x - y: a TypeError naming y, a bool mask as PyTorch names one; another
    kind of error (not a TypeError) is left to propagate as it is."""
    refuse_bool_subtraction("y", value)
    dtype = getattr(value, "dtype", None)
    if getattr(dtype, "kind", None) in ("M", "m"):  # numpy's dates and time spans
        raise TypeError(f"x - y: y holds {dtype} values, dates or durations, not numbers (PyTorch refuses "
                        "them too): convert them first") from exc
    if isinstance(exc, TypeError):
        what = with_article(type(value).__name__)
        raise TypeError(f"x - y: y is {what} with no negative ({exc}); subtract a Tensor, a float array "
                        "or a number") from exc


# ---- values given to a Tensor: its data, its .grad, its operands -------------------------------
def refuse_tensor_data(data: Any, exc: Exception, tensor_type: type[Any]) -> None:
    """After the backend's asarray failed on `Tensor(data)`: a TypeError saying the way for a list of
    Tensors (PyTorch's torch.tensor([t1, t2])) or for ragged nested lists."""
    if isinstance(data, (list, tuple)) and any(isinstance(d, tensor_type) for d in data):
        raise TypeError(
            "Tensor(a list of Tensors): a Tensor made from their values would be outside the graph; "
            "topgrad.stack(tensors) joins them as an op (gradients flow back), and "
            "Tensor([t.item() for t in tensors]) copies one-element tensors' values") from exc
    if isinstance(data, (list, tuple)) and _nested_shape(data) is None:
        raise TypeError("Tensor(data): the nested lists are ragged (lists side by side have "
                        "different lengths, as [[1, 2], [3]]); a tensor needs every list at one "
                        "depth to be as long as the others") from exc


def _nested_shape(data: Any) -> tuple[int, ...] | None:
    """The shape of nested lists and tuples of numbers, or None where they are ragged."""
    if not isinstance(data, (list, tuple)):
        return ()
    inner = {_nested_shape(d) for d in data}
    if len(inner) > 1:
        return None
    shape = inner.pop() if inner else ()
    return None if shape is None else (len(data), *shape)


def check_data(old: Any, value: Any) -> None:
    """TypeError unless `value` can replace a Tensor's data `old` (PyTorch's `x.data = ...`): an array
    of the same backend's, of a dtype it makes Tensors of, as `Tensor(values).data` is; anything else
    would fail later, inside some op, or (integers) compute wrong values."""
    backend = registry.backend_of(old)
    kind = registry._array_type(backend)
    if not isinstance(value, kind):
        raise TypeError(f"Tensor.data must be a {qualified_name(kind)} (this tensor's backend's array), "
                        f"got {with_article(type_name(value))}: assign "
                        "Tensor(values, dtype=...).data")
    if type(value) is not kind and type(backend.asarray(value)) is not type(value):
        raise TypeError(f"Tensor.data must be a plain {qualified_name(kind)}, got "
                        f"{qualified_name(type(value))}, a subclass the backend does not keep (np.matrix "
                        "keeps 2 axes in a sum; a masked array's mask is ignored): assign "
                        "Tensor(values, dtype=...).data")
    dtype = dtype_name(value)
    if dtype != dtype_name(old):  # a dtype the backend makes Tensors of: ask it, on no data
        try:
            backend.asarray(backend.zeros((0,)), dtype=dtype)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"Tensor.data must hold a dtype this backend makes Tensors of, got {dtype} "
                            f"({exc}): assign Tensor(values, dtype=...).data") from None


def check_grad(t: Any, value: Any, tensor_type: type[Any]) -> None:
    """TypeError or ValueError unless `value` can be t's `.grad`: an array of t's backend, of t's
    shape, dtype and device (an optimizer step would broadcast a wrong shape, or mix dtypes, silently;
    a kernel cannot write another device's memory)."""
    if isinstance(value, tensor_type):
        raise TypeError(f"a Tensor's .grad {GRAD_IS_AN_ARRAY}")
    backend = registry.backend_of(t._data)
    kind = registry._array_type(backend)
    if kind is not type(None) and not isinstance(value, kind):
        raise TypeError(f".grad must be an array of backend {backend.name!r} ({qualified_name(kind)}), got "
                        f"{with_article(type_name(value))}{numpy_scalar_hint(value, kind)}")
    if tuple(value.shape) != t.shape or dtype_name(value) != dtype_name(t._data):
        raise ValueError(f".grad must match the tensor: shape {t.shape} and {dtype_name(t._data)}, got "
                         f"shape {tuple(value.shape)} and {dtype_name(value)} (as PyTorch refuses it)")
    device = getattr(t._data, "device", None)  # a backend's arrays may live on a GPU (triton's)
    if device is not None and getattr(value, "device", device) != device:
        raise ValueError(f".grad must be on the tensor's device, {device}; got an array on {value.device} "
                         "(as PyTorch refuses it): move it there first")


def refuse_tensor_grads(nodes: Any, exc: Exception, tensor_type: type[Any]) -> None:
    """After backward failed: a TypeError naming the leaf among `nodes` (the graph's) whose `.grad`
    was set to a Tensor (PyTorch's `w.grad = torch.zeros_like(w)`), which backward cannot add into."""
    for node in nodes:
        if isinstance(node, tensor_type) and isinstance(node._grad, tensor_type):
            raise TypeError(f"backward: a leaf of shape {node.shape} has a Tensor for its .grad, which "
                            f"{GRAD_IS_AN_ARRAY}") from exc


GRAD_IS_AN_ARRAY = ("holds the backend's array in Topgrad (not a Tensor): clear it with w.grad = None "
                    "(opt.zero_grad()), or set w.grad = t.data")


def operand(op: str, name: str, value: Any, tensor_type: type[Any], optional: bool = False) -> Any:
    """`value`, or a TypeError naming the op where a Tensor operand is missing (None) or is a
    number or a list (which the backend would fail on deep inside, with numpy's words)."""
    if value is None and not optional:
        raise TypeError(f"{op}: {name} is required (a Tensor), got None")
    if isinstance(value, (list, tuple, int, float, str)):
        got = type(value).__name__
        raise TypeError(f"{op}: {name} must be a Tensor, got {with_article(got)}: make it "
                        f"Tensor({name})")
    if type(value).__module__.startswith("torch") and not isinstance(value, tensor_type):
        backend = registry.get_backend()
        if not isinstance(value, registry._array_type(backend)):  # numpy would fail deep inside
            raise TypeError(f"{op}: {name} must be a Tensor, got a {type_name(value)}, which backend "
                            f"{backend.name!r} cannot use: make it Tensor({name}) (a copy of its values)")
    return value


def affine(op: str, gamma: Any, beta: Any, tensor_type: type[Any]) -> tuple[Any, Any]:
    """A norm's scale and shift: Tensors, or None for none (PyTorch's weight=None, bias=None)."""
    return operand(op, "gamma", gamma, tensor_type, True), operand(op, "beta", beta, tensor_type, True)


def refuse_normalized_shape(gamma: Any) -> None:
    """TypeError where LayerNorm's gamma is a size or sizes: F.layer_norm's normalized_shape, ported."""
    if is_whole(gamma) or (isinstance(gamma, (tuple, list)) and gamma and all(map(is_whole, gamma))):
        raise TypeError(f"LayerNorm: gamma must be a Tensor (or None), got {gamma!r}: x.layernorm(gamma, "
                        "beta, eps) takes no normalized_shape (F.layer_norm's second argument); it "
                        "normalizes over the last axis")


def flatten_start(start: Any, shape: tuple[int, ...]) -> int:
    """flatten's `start` as an axis of `shape` in [0, ndim) (0 for a 0-d tensor); TypeError for a
    non-int, ValueError out of range."""
    ndim = len(shape)
    if not is_whole(start):
        raise TypeError(f"flatten: start must be an int (an axis), got {start!r}")
    if ndim and not -ndim <= start < ndim:
        raise ValueError(f"flatten: start {start} is out of range for a tensor of shape {shape}")
    return start % ndim if ndim else 0
