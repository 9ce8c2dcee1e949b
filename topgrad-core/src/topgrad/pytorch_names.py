"""What to write in Topgrad for a `torch.Tensor` method or keyword it does not have.

A learner comparing with PyTorch types PyTorch's names first; `Tensor.__getattr__` (asked only for
a missing attribute, so no op pays for it) adds the Topgrad spelling to the AttributeError, and
`keywords` does the same for `dim=`/`keepdim=`, for PyTorch's names of arguments Topgrad names
otherwise (`bias=`, `weight=`, `shape=`), for PyTorch's options Topgrad lacks (`device=`,
`retain_graph=`, `inplace=`) and for numpy's own `np.sum(x)` call.
"""

from __future__ import annotations

import functools
import inspect
import types
import warnings
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
    "expand": "broadcasting: x * Tensor.ones(*shape, requires_grad=False) (a constant of ones)",
    "expand_as": "broadcasting: x * Tensor.ones(*other.shape, requires_grad=False)",
    "norm": "(x * x).sum().sqrt() for the 2-norm ((x * x).sum(axis).sqrt() for one per row)",
    "masked_fill": "x + Tensor(np.where(mask, -np.inf, 0.0), requires_grad=False) for an additive "
                   "-inf mask (or topgrad.attention(q, k, v, causal=True) for a causal one)",

    "bmm": "not an op of the table: x @ w takes a 2-d w; a batch of products is one per item, "
           "topgrad.stack([x[i] @ w[i] for i in range(len(x))]), and attention's is topgrad.attention",
    "logsumexp": "m + (x - m).exp().sum(axis, keepdims=True).log() with m = Tensor(x.numpy().max(axis, "
                 "keepdims=True), requires_grad=False), a constant that keeps exp from overflowing",
    "normal_": "w.data = Tensor.randn(*w.shape, seed=n).data (times a std under topgrad.no_grad()), or "
               "Tensor.He(*shape) for a new weight",
    "uniform_": "w.data = Tensor(np.random.default_rng(n).uniform(a, b, w.shape)).data, which keeps w the "
                "same leaf",
    "fill_": "w.data = Tensor(np.full(w.shape, value)).data, which keeps w the same leaf",
    "argmax": "x.numpy().argmax(axis) (no gradient flows through an index)",
    "tolist": "x.numpy().tolist()",
    "copy_": "x.data = Tensor(values, dtype=<x's dtype name>).data, which keeps x the same leaf (an "
             "optimizer holding x sees the new values; nothing checks the shape or dtype: give x's); README, "
             "'Saving and loading weights'",
    "contiguous": "x (every op returns a dense array)",
    "clone": "x * 1.0 (a node of the graph); a constant copy is Tensor(x.numpy(), requires_grad=False) "
             "(x.detach() shares x's memory, which an optimizer step overwrites)",
    "requires_grad_": "x.requires_grad = True",
    "zero_": "w.data = Tensor.zeros(*w.shape).data for a float32 w (w *= 0.0 under topgrad.no_grad() "
             "keeps NaN and Inf entries); for gradients: opt.zero_grad() or w.grad = None",
    "float": "x itself where x is float32 (the default dtype); a float64 x in the graph: x + "
             "Tensor(0.0, requires_grad=False) is float32 and passes gradients back (Tensor(x.numpy()) "
             "would be a new leaf, cut from x's graph)",
    "double": "Tensor(x.numpy(), dtype='float64') (numpy backend), a new leaf cut from x's graph: "
              "ops on float32 and float64 operands give float32, so there is no differentiable cast up",
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

for _name in ("chunk", "split"):
    INSTEAD[_name] = "slices, x[..., :d], x[..., d:2 * d], ... (each a Slice op; the gradient flows back)"
for _name, _sign in (("gt", ">"), ("lt", "<"), ("ge", ">="), ("le", "<="), ("eq", "=="), ("ne", "!=")):
    INSTEAD[_name] = (f"x.numpy() {_sign} y, a mask of the values (comparisons are not ops: no gradient "
                      "flows through them)")

OP_INSTEAD: dict[str, str] = {  # torch's grad_fn.<name> -> the Op's way
    "next_functions": "op.parents (per input: the Op that made it, the leaf Tensor, or the plain value)",
    "saved_tensors": "op.saved (the backend arrays it saved for backward; empty after backward)",
    "_saved_*": "op.saved, by the names in op._saved_names (or print(t.graph()): each op and what it saved)",
    "needs_input_grad": "op.needs_grad(i) (whether positional input i gets a gradient)",
    "name": "type(op).__name__",
    "register_hook": INSTEAD["register_hook"],
    "register_prehook": "an Observer's after_backward hook, which gets the incoming gradient too "
                        "(topgrad.observe; docs/inspecting.md)",
}

MODULE_INSTEAD: dict[str, str] = {  # torch.<name> -> what to write with topgrad
    "randn": "Tensor.randn(*shape, seed=n)",
    "zeros": "Tensor.zeros(*shape)",
    "ones": "Tensor.ones(*shape)",
    "zeros_like": "Tensor.zeros(*x.shape, requires_grad=False) (Tensor.zeros is trainable by default)",
    "ones_like": "Tensor.ones(*x.shape, requires_grad=False) (Tensor.ones is trainable by default)",
    "randn_like": "Tensor.randn(*x.shape, requires_grad=False) (Tensor.randn is trainable by default)",
    "where": "a blend of masks: x * Tensor(mask, requires_grad=False) + y * Tensor(1 - mask, "
             "requires_grad=False), mask a 0/1 float array",
    "arange": "Tensor(np.arange(n), requires_grad=False)",
    "eye": "Tensor(np.eye(n), requires_grad=False)",
    "full": "Tensor(np.full(shape, value), requires_grad=False)",
    "bmm": INSTEAD["bmm"],
    "norm": INSTEAD["norm"],
    "logsumexp": INSTEAD["logsumexp"],
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
    "argmax": INSTEAD["argmax"],
    "save": "np.savez(path, **{name: w.numpy() for name, w in params.items()}) (README, 'Saving and loading "
            "weights')",
    "load": "np.load(path), then w.data = Tensor(saved[name], dtype=...).data for each parameter, in its "
            "shape and dtype (README, 'Saving and loading weights')",
    "autograd": "not one module: loss.backward(seed) fills each leaf's .grad (torch.autograd.backward and "
                ".grad), topgrad.gradcheck(fn, x) checks a backward (autograd.gradcheck), a subclass of "
                "topgrad.Op with forward and backward is a custom op (autograd.Function), x.op is the Op "
                "that made x (grad_fn), `with topgrad.detect_anomaly():` finds the op that made a NaN "
                "(detect_anomaly and set_detect_anomaly: on while the block runs)",
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


class EngineModule(types.ModuleType):
    """The type of the module `topgrad.tensor`: its name hides the package's hint for PyTorch's
    torch.tensor, so calling it as PyTorch's function is called says what to write instead."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Refused: `topgrad.tensor(data)` is PyTorch's torch.tensor(data), Topgrad's Tensor(data)."""
        raise TypeError("topgrad.tensor is the engine's module, not a function: in Topgrad, PyTorch's "
                        "torch.tensor(data) is Tensor(data, requires_grad=False) (a constant, as "
                        "torch.tensor's default; Tensor(data) is a trainable leaf), with "
                        "`from topgrad import Tensor`")


NO_ITEM_ASSIGNMENT = (
    "Tensor does not support item assignment (x[...] = v): no op records a write into a "
    "tensor. Compute the new values instead: under topgrad.no_grad(), `w *= Tensor(mask)` "
    "(a 0/1 array) keeps w the same leaf; `Tensor(values)` makes a new one from an array"
)

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
    if name.endswith("_") and not name.startswith("_") and name[:-1] in INSTEAD:  # clamp_, pow_
        return (f"PyTorch's x.{name}() works in place; Topgrad has no in-place ops, and PyTorch's "
                f"x.{name[:-1]} is {INSTEAD[name[:-1]]}")
    return None


KEYWORDS: dict[str, str] = {"dim": "axis", "keepdim": "keepdims", "start_dim": "start", "is_causal": "causal",
                            "gradient": "grad"}
RENAMED: dict[str, dict[str, str]] = {
    # method -> PyTorch's keyword for one of its arguments -> how Topgrad writes that argument
    "linear": {"weight": "w= (not weight=), shaped (in, out): F.linear's weight transposed",
               "bias": "b= (not bias=)"},
    "conv2d": {"weight": "w= (not weight=), shaped (kh, kw, Cin, Cout)", "bias": "b= (not bias=)"},
    "layernorm": {"weight": "gamma= (not weight=)", "bias": "beta= (not bias=)",
                  "normalized_shape": "x.layernorm(gamma, beta), over the last axis (no normalized_shape=)"},
    "batchnorm": {"weight": "gamma= (not weight=)", "bias": "beta= (not bias=)"},
    "reshape": {"shape": "the sizes as arguments, x.reshape(2, -1) (not shape=)"},
    "permute": {"dims": "the axes as arguments, x.permute(0, 2, 1) (not dims=)"},
    "attention": {"query": "q= (not query=)", "key": "k= (not key=)", "value": "v= (not value=)"},
    **{factory: {"size": f"the sizes as arguments, Tensor.{factory}(2, 3) (not size=)"}
       for factory in ("zeros", "ones", "randn", "He")},
}
NOT_TAKEN: dict[str, tuple[Any, str, str]] = {
    # PyTorch's keyword -> (PyTorch's default, which Topgrad accepts and ignores; what it is; what to write)
    "device": (None, "device placement", "the backend holds every array: call topgrad.set_backend(name) "
               "before making tensors"),
    "pin_memory": (False, "pinned host memory", "the backend holds every array; drop pin_memory="),
    "layout": (None, "tensor layout", "tensors are dense; drop layout="),
    "generator": (None, "random number generator", "give seed=n (the same seed gives the same values)"),
    "out": (None, "output tensor", "ops return a new tensor: write y = ... instead of out=y"),
    "inplace": (False, "in-place variant", "ops return a new tensor: assign it (x = x.relu() for "
                "F.relu(x, inplace=True))"),
    "dtype": (None, "result dtype", "factories make float32 and ops keep their input's dtype (dtype=None "
              "and float32 are taken); for float64 (numpy backend), convert: "
              "Tensor(t.numpy(), dtype='float64')"),
    "end_dim": (-1, "last axis to flatten", "x.flatten(start) always flattens through the last axis; for "
                "another end, x.reshape(...) with the sizes you want"),
    # Tensor.backward's
    "retain_graph": (False, "graph kept for a second backward", "there is no retain_graph; for a second "
                     "backward, run the forward pass again"),
    "create_graph": (False, "graph of the backward pass", "there are no higher-order gradients (backward "
                     "builds no graph)"),
    "inputs": (None, "leaves to fill", "backward fills every leaf's .grad; read the ones you need"),
    # scaled_dot_product_attention's other options
    "attn_mask": (None, "attention mask", "masks other than causal=True are not supported"),
    "scale": (None, "score scale", "the scale is 1/sqrt(D): for another s, pass q * (s * D ** 0.5)"),
    "dropout_p": (0.0, "attention dropout", "there is no dropout"),
    "enable_gqa": (False, "grouped-query attention", "k and v have q's batch: repeat them per query head"),
}
NUMPY_CALLS = {"sum": ("out", "dtype", "where", "initial"),  # what np.sum(x) / np.mean(x) pass to x.sum(...)
               "mean": ("out", "dtype", "where"), "max": ("out", "where", "initial")}


def keywords(method: F) -> F:
    """`method` with its TypeError for a keyword it does not take naming Topgrad's (numpy's) name for a
    PyTorch one, saying what to write for a PyTorch option Topgrad lacks (accepted at PyTorch's
    default, which is what Topgrad does), and what to write when numpy's functions call it
    (`np.sum(x)`), and PyTorch's name for an argument Topgrad names otherwise (`RENAMED`). The
    wrapper is one Python call, ~0.3 us: a few percent of a tiny op's own overhead, nothing next
    to its work."""
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)  # reshape's *shape
    known = {name for name, p in inspect.signature(method).parameters.items() if p.kind not in variadic}
    numpy_call = NUMPY_CALLS.get(method.__name__, ())

    @functools.wraps(method)
    def checked(*args: Any, **kwargs: Any) -> Any:
        if kwargs and not known.issuperset(kwargs):
            unknown = {k: v for k, v in kwargs.items() if k not in known}
            if _from_numpy(unknown, numpy_call) or not all(_is_default(k, v) for k, v in unknown.items()):
                raise TypeError(_keyword_message(method.__qualname__, unknown))
            kwargs = {k: v for k, v in kwargs.items() if k in known}  # PyTorch's defaults, spelled out
        return method(*args, **kwargs)

    return cast(F, checked)


def _from_numpy(unknown: dict[str, Any], numpy_call: tuple[str, ...]) -> bool:
    """Whether keywords Topgrad's method does not take come from numpy's function (`np.sum(x)`
    calls x.sum(axis=..., dtype=None, out=None)): numpy always passes out=, and a direct
    x.sum(dtype=None) is PyTorch's default, taken."""
    return "out" in unknown and any(k in numpy_call for k in unknown)


def _is_default(keyword: str, value: Any) -> bool:
    """Whether `keyword` is an option of NOT_TAKEN given at PyTorch's default (None, False, 0.0)."""
    if keyword not in NOT_TAKEN:
        return False
    default = NOT_TAKEN[keyword][0]
    if keyword == "dtype":  # None, or float32 (numpy's or torch's spelling): what Topgrad makes
        return value is None or str(value) in ("float32", "torch.float32", "f4") or getattr(
            value, "__name__", None) == "float32"
    if keyword == "retain_graph":  # torch's default is None, which means create_graph's False
        return value is None or value is False
    if default is None or isinstance(default, bool):
        return value is default
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == default


def _keyword_message(qualname: str, unknown: dict[str, Any]) -> str:
    name = qualname.rsplit(".", 1)[-1]
    given = ", ".join(f"{k}=" for k in unknown)
    if _from_numpy(unknown, NUMPY_CALLS.get(name, ())):  # np.sum(x) calls x.sum(out=None, ...)
        return (f"np.{name}(x) on a Tensor calls {qualname}() with {given}, which Topgrad does not take: "
                f"numpy's result would leave the graph. Write x.{name}() for the op, or np.{name}(x.numpy()) "
                "for the values")
    unknown = {k: v for k, v in unknown.items() if not _is_default(k, v)}  # PyTorch's defaults are taken
    names = {**{k: f"{v}= (not {k}=)" for k, v in KEYWORDS.items()}, **RENAMED.get(name, {})}
    renamed = [names[k] for k in unknown if k in names]
    lacking = [str(not_taken(qualname, k, v, *NOT_TAKEN[k][1:])) for k, v in unknown.items()
               if k in NOT_TAKEN]
    if len(lacking) == len(unknown):  # PyTorch's options alone: what each is, and what to write
        return "; ".join(lacking)
    hint = f": Topgrad writes {', '.join(renamed)}" if renamed else ""
    hint += "".join(f"; {why}" for why in lacking)
    first = next(k for k in unknown if k not in NOT_TAKEN)
    return f"{qualname}() got an unexpected keyword argument {first!r}{hint}"


def not_taken(function: str, keyword: str, value: Any, what: str, instead: str) -> TypeError:
    """The TypeError for PyTorch's option `keyword`, given as `value`, that Topgrad's `function`
    does not take: what the option is in PyTorch, and what to write instead."""
    shown = repr(value) if len(repr(value)) <= 40 else f"<{type(value).__name__}>"
    name = function.replace(".__init__", "")
    return TypeError(f"Topgrad's {name}() does not take {keyword}={shown} (PyTorch's {what}): {instead}")


def warn_non_leaf_grad(op: Any) -> None:
    """Warn, as PyTorch does, that `.grad` of a tensor computed by `op` is read: only leaves get one."""
    warnings.warn(
        f"The .grad of a Tensor that is not a leaf (computed by {type(op).__name__}) is being read: backward "
        "fills the .grad of leaves only, so this one is None (PyTorch's too, unless retain_grad() was "
        "called; Topgrad has no retain_grad). For the gradient reaching it, use an Observer whose "
        "after_backward hook sees each op's incoming gradient (topgrad.observe; docs/inspecting.md); "
        "for a parameter's, read that leaf's .grad",
        UserWarning, stacklevel=3)


class Count(int):
    """`x.size`, the element count: an int, which says what to write when called as PyTorch's
    x.size() (the shape) is."""

    def __call__(self, *dim: Any) -> Any:
        """Refused: PyTorch's x.size() is Topgrad's x.shape, x.size(d) its x.shape[d]."""
        shown = f"x.shape[{dim[0]}]" if len(dim) == 1 else "x.shape"
        raise TypeError(f"x.size is the element count in Topgrad (numpy's name, an int: {int(self)}), "
                        f"not a method: PyTorch's x.size({', '.join(map(str, dim))}) is {shown}")


def refuse_function_style(cls: type) -> None:
    """TypeError for an Op subclass written as a torch.autograd.Function: a staticmethod
    forward(ctx, ...) or backward, or an __init__ that needs arguments (Op.apply makes the op
    itself, with cls()). Called when the class is defined, so the error points at it."""
    name = cls.__name__
    for method in ("forward", "backward"):
        if isinstance(cls.__dict__.get(method), staticmethod):
            raise TypeError(f"{name}.{method} is a staticmethod, as in PyTorch's autograd.Function "
                            f"({method}(ctx, ...)); a Topgrad op's {method} is a plain method whose self "
                            "is the ctx: def forward(self, x), with self.save_for_backward(...), self.saved")
    init = cls.__dict__.get("__init__")
    if init is None:
        return
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD,
             inspect.Parameter.KEYWORD_ONLY)
    needed = [p.name for p in list(inspect.signature(init).parameters.values())[1:]
              if p.default is p.empty and p.kind in kinds]
    if needed:
        raise TypeError(f"{name}.__init__ needs {', '.join(needed)}, but {name}.apply makes the op itself "
                        f"with {name}(): pass settings to apply as keywords ({name}.apply(x, "
                        f"{needed[0]}=...)), which reach forward")
