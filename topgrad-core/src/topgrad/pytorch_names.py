"""What to write in Topgrad for a `torch.Tensor` method or keyword it does not have.

A learner comparing with PyTorch types PyTorch's names first; `Tensor.__getattr__` (asked only for
a missing attribute, so no op pays for it) adds the Topgrad spelling to the AttributeError, and
`numpy_keywords` does the same for `dim=`/`keepdim=` and for numpy's own `np.sum(x)` call.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar, cast

F = TypeVar("F", bound=Callable[..., Any])

INSTEAD: dict[str, str] = {
    "view": "x.reshape(*shape)",
    "view_as": "x.reshape(*other.shape)",
    "reshape_as": "x.reshape(*other.shape)",
    "unsqueeze": "x.reshape(...) with a 1 where the new axis goes, or x[:, None]",
    "squeeze": "x.reshape(...) without the size-1 axes",
    "transpose": "x.permute(*axes) with the two axes swapped (x.T for a 2-d x)",
    "swapaxes": "x.permute(*axes)",
    "t": "x.T",
    "mT": "x.permute(...) with the last two axes swapped",
    "matmul": "x @ w, the Linear op (w 2-d, (in, out))",
    "mm": "x @ w, the Linear op (w 2-d, (in, out))",
    "dim": "x.ndim",
    "numel": "x.size (numpy's name, a property)",
    "nelement": "x.size (numpy's name, a property)",
    "pow": "x ** n (n a whole number >= 1, or 0.5)",
    "square": "x * x",
    "neg": "-x",
    "add": "x + y",
    "sub": "x - y",
    "mul": "x * y",
    "div": "x / y",
    "min": "-(-x).max(axis)",
    "amax": "x.max(axis)",
    "clamp": "a composition (x.relu() is max(x, 0))",
    "clip": "a composition (x.relu() is max(x, 0))",
    "var": "((x - x.mean(axis, keepdims=True)) ** 2).mean(axis) (over n; PyTorch's default n - 1)",
    "std": "((x - x.mean(axis, keepdims=True)) ** 2).mean(axis).sqrt() (over n; PyTorch's n - 1)",
    "expand": "broadcasting: x * Tensor.ones(*shape) or x + Tensor.zeros(*shape)",
    "expand_as": "broadcasting: x * Tensor.ones(*other.shape)",
    "argmax": "x.numpy().argmax(axis) (no gradient flows through an index)",
    "tolist": "x.numpy().tolist()",
    "contiguous": "x (every op returns a dense array)",
    "clone": "x * 1.0 (a node of the graph); a constant copy is Tensor(x.numpy(), requires_grad=False) "
             "(x.detach() shares x's memory, which an optimizer step overwrites)",
    "requires_grad_": "x.requires_grad = True",
    "zero_": "w *= 0.0 under topgrad.no_grad() (for gradients: opt.zero_grad() or w.grad = None)",
    "float": "Tensor(x.numpy()) (float32, the default dtype)",
    "double": "Tensor(x.numpy(), dtype='float64') (numpy backend)",
    "to": "topgrad.set_backend(name) before making tensors: the backend holds the arrays",
    "cpu": "x.numpy() for the values; the backend decides where arrays live",
    "cuda": "topgrad.set_backend('triton') before making tensors",
    "grad_fn": "x.op (the Op that made x: its .saved arrays and .parents), shown by repr(x) and x.graph()",
    "retain_grad": "an Observer whose after_backward hook sees each op's incoming gradient, dL/d(its "
                   "output) (docs/inspecting.md, the last example)",
    "register_hook": "an Observer with an after_backward hook (topgrad.observe; docs/inspecting.md)",
    "is_leaf": "shown by repr(x) (a leaf has no op=...)",
    "log_softmax": "x.logsoftmax(axis)",
    "long": "x.numpy().astype('int64') for the values (Tensors hold float32 or float64)",
    "int": "x.numpy().astype('int64') for the values (Tensors hold float32 or float64)",
    "half": "not available: Tensors hold float32 (the default) or float64",
    "bool": "x.numpy() != 0 for a mask of the values (Tensors hold floats)",
    "device": "topgrad.get_backend() (the backend holds every array; repr(topgrad.get_backend()) says where)",
    "is_cuda": "topgrad.get_backend().where == 'CUDA' (the backend holds every array; triton's may run "
               "in the interpreter on a CPU)",
    "detach_": "x = x.detach() (a new constant sharing x's data)",
    "values": "x itself when x came from y.max(axis), which returns the values alone (as torch.amax, "
              "not a (values, indices) pair); the indices are y.numpy().argmax(axis)",
    "indices": "y.numpy().argmax(axis) when x came from y.max(axis), which returns the values alone",
}

MODULE_INSTEAD: dict[str, str] = {  # torch.<name> -> what to write with topgrad
    "randn": "Tensor.randn(*shape, seed=n)",
    "zeros": "Tensor.zeros(*shape)",
    "ones": "Tensor.ones(*shape)",
    "zeros_like": "Tensor.zeros(*x.shape)",
    "ones_like": "Tensor.ones(*x.shape)",
    "randn_like": "Tensor.randn(*x.shape)",
    "from_numpy": "Tensor(a, requires_grad=False) (a constant sharing a float32 array)",
    "as_tensor": "Tensor(a)",
    "manual_seed": "a seed per call: Tensor.randn(*shape, seed=n), Tensor.He(*shape, seed=n)",
    "enable_grad": "the default: outside `with topgrad.no_grad():` ops record the graph",
    "set_grad_enabled": "`with topgrad.no_grad():` for set_grad_enabled(False)",
    "inference_mode": "topgrad.no_grad()",
    "matmul": "x @ w, the Linear op (w 2-d, (in, out))",
    "mm": "x @ w, the Linear op (w 2-d, (in, out))",
    "float32": "dtype='float32' (a string; the default)",
    "float64": "dtype='float64' (a string; numpy backend)",
    "device": "topgrad.set_backend(name): the backend holds every array",
    "cuda": "topgrad.set_backend('triton') (on a CUDA GPU) before making tensors",
    "nn": "not there (no module system): a model is a function of Tensors, its parameters a list given to an "
          "optimizer from topgrad.optim (topgrad_examples.models has examples, topgrad_examples.loss "
          "has cross_entropy)",
    "functional": "the Tensor methods: x.relu(), x.logsoftmax(axis), x.linear(w, b), x.conv2d(w, b), "
                  "topgrad.attention(q, k, v)",
}
for _name in ("relu", "exp", "log", "sqrt", "abs", "tanh", "sigmoid", "sum", "mean", "max", "softmax",
              "reshape", "permute", "flatten", "conv2d"):
    MODULE_INSTEAD[_name] = f"the method x.{_name}(...)"
MODULE_INSTEAD.update(log_softmax="the method x.logsoftmax(axis)", transpose="x.permute(*axes)",
                      layer_norm="the method x.layernorm(gamma, beta)",
                      max_pool2d="the method x.maxpool2d(kernel_size)",
                      batch_norm="the method x.batchnorm(gamma, beta, running_mean=..., running_var=...)")


def module_hint(name: str) -> str | None:
    """What to write with topgrad for `torch.<name>`, or None when there is no entry."""
    way = MODULE_INSTEAD.get(name)
    return None if way is None else f"in Topgrad, PyTorch's torch.{name} is {way}"


IN_PLACE_OPERATORS = {"add_": "+=", "sub_": "-=", "mul_": "*=", "div_": "/="}


def hint(name: str, has: Callable[[str], bool] = lambda name: False) -> str | None:
    """The Topgrad way to do what `torch.Tensor.<name>` does, or None when there is no entry.
    `has(name)` tells whether Tensor has a method of that name (for PyTorch's in-place x.relu_())."""
    way = INSTEAD.get(name)
    if way is not None:
        return f"in Topgrad, PyTorch's x.{name} is {way}"
    if name in IN_PLACE_OPERATORS:
        return (f"PyTorch's x.{name}(y) works in place; Topgrad writes x {IN_PLACE_OPERATORS[name]} y "
                "(on a leaf that requires grad: inside `with topgrad.no_grad():`)")
    if name.endswith("_") and not name.startswith("_") and has(name[:-1]):
        return (f"PyTorch's x.{name}() works in place; Topgrad has no in-place ops: "
                f"x = x.{name[:-1]}() makes a new tensor")
    return None


KEYWORDS: dict[str, str] = {"dim": "axis", "keepdim": "keepdims", "start_dim": "start", "is_causal": "causal",
                            "gradient": "grad"}
UNSUPPORTED: dict[str, str] = {
    # Tensor.backward's
    "retain_graph": "there is no retain_graph; for a second backward, run the forward pass again",
    "create_graph": "there are no higher-order gradients (backward builds no graph)",
    "inputs": "backward fills every leaf's .grad; read the ones you need",
    # scaled_dot_product_attention's other options
    "attn_mask": "masks other than causal=True are not supported",
    "scale": "the scale is 1/sqrt(D): for another s, pass q * (s * D ** 0.5)",
    "dropout_p": "there is no dropout",
    "enable_gqa": "k and v have q's batch: repeat them per query head",
}
NUMPY_CALL = ("out", "dtype", "where", "initial")  # what np.sum(x) / np.mean(x) pass to x.sum(...)


def numpy_keywords(method: F) -> F:
    """`method` with its TypeError for an unknown keyword naming Topgrad's (numpy's) name for a
    PyTorch one, and saying what to write when numpy's functions call it (`np.sum(x)`)."""
    known = set(inspect.signature(method).parameters)

    @functools.wraps(method)
    def checked(*args: Any, **kwargs: Any) -> Any:
        if kwargs and not known.issuperset(kwargs):
            raise TypeError(_keyword_message(method.__qualname__, [k for k in kwargs if k not in known]))
        return method(*args, **kwargs)

    return cast(F, checked)


def _keyword_message(qualname: str, unknown: list[str]) -> str:
    name = qualname.rsplit(".", 1)[-1]
    given = ", ".join(f"{k}=" for k in unknown)
    if any(k in NUMPY_CALL for k in unknown):
        return (f"{qualname}() got {given} as numpy's np.{name}(x) passes them, and numpy's result would "
                f"leave the graph: write x.{name}() for the op, or np.{name}(x.numpy()) for the values")
    renamed = [f"{KEYWORDS[k]}= (not {k}=)" for k in unknown if k in KEYWORDS]
    hint = f": Topgrad writes {', '.join(renamed)}" if renamed else ""
    hint += "".join(f"; {k}=: {UNSUPPORTED[k]}" for k in unknown if k in UNSUPPORTED)
    return f"{qualname}() got an unexpected keyword argument {unknown[0]!r}{hint}"
