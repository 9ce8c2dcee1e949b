"""Optimizers with PyTorch's update rules and defaults; the array math goes through the backend.

Each step calls the backend's `sgd_update` / `adam_update`, which a backend may implement
as one fused kernel; the defaults in `topgrad.backend.Backend` compose the array helpers.
`state_dict()` and `load_state_dict()` save and restore the settings and per-parameter state,
the content of torch.optim's (in Topgrad's own layout), with numpy arrays, so a state saved
under one backend loads under another.
"""

from __future__ import annotations

import difflib
import math
import operator
from collections.abc import Callable, Iterable
from numbers import Real
from typing import Any, ClassVar

from topgrad import tensor as _tensor
from topgrad.arrays import dtype_name
from topgrad.errors import type_name
from topgrad.pytorch_names import not_taken
from topgrad.registry import _array_type, backend_of, get_backend, owner_of
from topgrad.tensor import Tensor
from topgrad.versions import mark_grad_written, mark_updated


class _State(list[dict[str, Any]]):
    """An optimizer's per-parameter state: a list in the parameters' order, not torch.optim's dict
    keyed by the parameter, so `opt.state[p]` says how to index it instead of list's TypeError."""

    def __init__(self, opt: Optimizer, states: Iterable[dict[str, Any]]) -> None:
        super().__init__(states)
        self._name, self._params = type(opt).__name__, opt.params

    def __getitem__(self, index: Any) -> Any:
        self._refuse_a_tensor(index)
        return super().__getitem__(index)

    def __setitem__(self, index: Any, value: Any) -> None:
        self._refuse_a_tensor(index)
        super().__setitem__(index, value)

    def __contains__(self, item: Any) -> bool:
        """`p in opt.state` (torch.optim's idiom for "has p a state yet") would quietly be False."""
        self._refuse_a_tensor(item)
        return super().__contains__(item)

    def clear(self) -> None:
        """Forget every parameter's state (moments, momentum, step count), as torch.optim's
        `opt.state.clear()` does; the list keeps one empty entry per parameter (emptied, a step
        would update none of them)."""
        for i in range(len(self)):
            super().__setitem__(i, {})

    def _refuse_a_tensor(self, index: Any) -> None:
        if isinstance(index, Tensor):
            where = next((f"this Tensor is parameter {i}: opt.state[{i}]"
                          for i, p in enumerate(self._params) if p is index),
                         "this Tensor is none of its parameters")
            raise TypeError(f"{self._name}.state is a list in the order of the parameters given (state[i] "
                            f"is opt.params[i]'s, as state_dict() numbers them), not torch.optim's dict "
                            f"keyed by the parameter; {where}")


class _Params(list[Tensor]):
    """An optimizer's parameters, fixed when it is made: its state and state_dict are kept per
    parameter, by position, so a parameter appended later would never be updated."""

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("an optimizer's params cannot change once it is made (its state is kept per "
                        "parameter, by position): make a new optimizer over the new list (torch.optim's "
                        "add_param_group is one more optimizer here)")

    append = extend = insert = pop = remove = clear = sort = reverse = _refuse
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse

    def __reduce__(self) -> tuple[Any, ...]:
        """Made again from its items (copy.deepcopy, pickle), not by appending them one by one."""
        return (_Params, (list(self),))


_SETTINGS_ELSEWHERE = {"momentum": "SGD", "nesterov": "SGD", "dampening": "SGD", "betas": "Adam and AdamW",
                       "eps": "Adam and AdamW", "learning_rate": "lr"}
"""Settings of another optimizer (or another spelling): set on this one they would do nothing."""


class Optimizer:
    """Holds the parameters; `zero_grad` clears their gradients, `step` updates them.

    The settings are attributes (`opt.lr = 0.01`, as a schedule sets it between steps), checked
    whenever they are set, by the constructor's checks (`_checked`)."""

    settings: ClassVar[tuple[str, ...]] = ("lr",)
    """The constructor's keyword arguments, which `state_dict` saves."""
    state_keys: ClassVar[frozenset[str]] = frozenset()
    """What the optimizer keeps per parameter once that parameter has been updated."""

    def __init__(self, params: Iterable[Tensor], lr: float) -> None:
        name = type(self).__name__
        if isinstance(params, (Tensor, dict, set, frozenset)) or not isinstance(params, Iterable):
            hint = ("pass its .values()" if isinstance(params, dict)
                    else "wrap a single Tensor in a list" if isinstance(params, Tensor)
                    else "a set has no fixed order, so a saved state could load onto another "
                         "parameter: pass a list" if isinstance(params, (set, frozenset))
                    else "pass a list of the Tensors to train")
            raise TypeError(f"{name} takes an iterable of Tensors, got {type(params).__name__}: {hint}")
        object.__setattr__(self, "params", _Params(params))
        if not self.params:
            spent = (": this generator or iterator gave none (its items come once: did another optimizer "
                     "use them up?); pass a list") if iter(params) is params else ""
            raise ValueError(f"{name} got an empty parameter list{spent}")
        for p in self.params:
            if isinstance(p, dict):  # torch.optim's parameter groups
                raise TypeError(f"{name} takes a list of Topgrad Tensors, got a dict (PyTorch's parameter "
                                f"group): there are no parameter groups; use one {name} per group, each "
                                "with its own settings")
            if not isinstance(p, Tensor):
                raise TypeError(f"{name} takes Topgrad Tensors, got {type_name(p)}")
            if p._op is not None:  # as torch.optim: "can't optimize a non-leaf Tensor"
                raise ValueError(f"{name}: a Tensor made by {type(p._op).__name__} is not a leaf; "
                                 "optimize the leaves it was computed from")
        if len({id(p) for p in self.params}) < len(self.params):
            raise ValueError(f"{name}: a Tensor appears twice in the parameters (it would be updated twice)")
        self.lr = lr
        self.state: list[dict[str, Any]] = _State(self, [{} for _ in self.params])

    def __setattr__(self, name: str, value: Any) -> None:
        """A setting is checked as the constructor checks it, whenever it is set: a refused value
        changes nothing (a later step would crash on it, or a saved state refuse to load). Any other
        public name the class does not define (torch.optim's maximize=True, another optimizer's
        momentum, a misspelling) is refused rather than kept and ignored, and torch.optim's options
        are taken at the values the constructor takes; `state` is checked against the parameters."""
        if name in self.settings:
            value = self._checked(name, _scalar(value))
        elif name == "params":
            _Params._refuse(self.params)
        elif name == "state":
            value = self._new_state(value)
        elif name in _NOT_TAKEN:
            _refuse_options(self, **{name: value})  # False or None: what Topgrad does, kept harmlessly
        elif not name.startswith("_") and not hasattr(type(self), name):
            raise AttributeError(self._no_setting(name))
        super().__setattr__(name, value)

    def _no_setting(self, name: str) -> str:
        """Why `opt.<name> = ...` is refused, and what was likely meant: the setting a misspelling
        is near, the optimizer whose setting it is, torch.optim's spelling."""
        where = _SETTINGS_ELSEWHERE.get(name)
        near = difflib.get_close_matches(name.lower(), self.settings, n=1, cutoff=0.6)
        why, hint = "", ""
        if name == "learning_rate":
            why = " (write lr, as torch.optim does)"
        elif where:
            why = f" (a setting of {where})"
        elif near:
            why, hint = " (a misspelling?)", f": did you mean {near[0]}?"
        elif name == "param_groups":
            why = " (Topgrad's optimizers have one group, whose settings are attributes)"
        else:
            hint = ("; a subclass keeps attributes of its own under a leading underscore (or defines them "
                    "on the class)")
        return (f"{type(self).__name__} has no setting {name!r}{why}; its settings are "
                f"{', '.join(self.settings)}, and one set by another name would change nothing{hint}")

    def _new_state(self, value: Any) -> _State:
        """`opt.state = ...`: an empty dict or list (torch.optim's `defaultdict(dict)` reset) is a fresh
        state per parameter; a list of one dict per parameter is taken as it is; else TypeError."""
        n = len(self.params)
        if isinstance(value, (dict, list)) and not value:
            return _State(self, [{} for _ in range(n)])
        if isinstance(value, list) and len(value) == n and all(isinstance(s, dict) for s in value):
            return value if isinstance(value, _State) else _State(self, value)
        raise TypeError(f"{type(self).__name__}.state holds one dict per parameter ({n}), in their order; "
                        f"got {type_name(value)}: to reset it, opt.state.clear() (or opt.state = {{}}); to "
                        "restore a saved one, load_state_dict")

    def _checked(self, name: str, value: Any) -> Any:
        """The value to keep for setting `name`, or ValueError / TypeError as the constructor's.
        Subclasses check their own settings and pass the others on."""
        if name == "lr":
            _check_non_negative(self, learning_rate=value)
            return float(value)  # a Fraction or Decimal would reach the backend's arrays as an object
        return value

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every parameter's `.grad`: None (PyTorch's default, set_to_none=True), or zeros of
        its shape and dtype where it has one (set_to_none=False), written into that array where the
        backend can, as in PyTorch (`g = w.grad` sees the zeros, then what backward adds)."""
        if set_to_none is True:
            for p in self.params:
                p._grad = None  # the field: the property would warn for a non-leaf
        elif set_to_none is False:
            for p in self.params:
                if p._grad is None:
                    continue
                # w's backend (maybe not the selected one) zeroes the array in place where it can, as
                # torch.optim does; that write is clocked as backward's adds into .grad are, so that an
                # op that saved this memory (a constant Tensor(w.grad)) refuses its backward
                zeros = backend_of(p.data).zero_out(p._grad)
                if zeros is p._grad:
                    mark_grad_written(p)
                p._grad = zeros
        else:
            raise TypeError(f"{type(self).__name__}.zero_grad: set_to_none must be True or False, "
                            f"got {set_to_none!r}")

    def __getattr__(self, name: str) -> Any:
        """Asked only for a missing attribute: PyTorch's param_groups gets the Topgrad way."""
        way = (": Topgrad's optimizers have one group, and its settings are attributes (opt.lr = 0.01 sets "
               f"the learning rate; also {', '.join(self.settings[1:])})") if name == "param_groups" else ""
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}{way}",
                             name=name, obj=self)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a `.grad` (in place, as torch.optim does); others are skipped.
        As in PyTorch, a `closure` is called first (it recomputes the loss and calls backward) and step
        returns what it returns; without one, None."""
        loss = None
        if closure is not None:
            if not callable(closure):
                raise TypeError(f"{type(self).__name__}.step: closure must be a function that recomputes the "
                                f"loss and calls backward (as in PyTorch), got {type_name(closure)}")
            previous, _tensor._grad_mode.enabled = _tensor._grad_mode.enabled, True
            try:  # as torch.optim does (enable_grad): the closure's backward needs its graph
                loss = closure()
            finally:
                _tensor._grad_mode.enabled = previous
        backend = get_backend()
        if len(self.state) != len(self.params):  # an entry popped or appended by hand
            raise RuntimeError(f"{type(self).__name__}.state has {len(self.state)} entries for "
                               f"{len(self.params)} parameters; reset it with opt.state.clear()")
        stepped = [(i, p, state) for i, (p, state) in enumerate(zip(self.params, self.state))
                   if p._grad is not None]  # the field, as backward writes it (no property call)
        for i, p, state in stepped:  # all checked first: an error leaves every parameter as it was
            self._check_grad(backend, i, p)
            self._check_state(i, p, state)
        for _, p, state in stepped:
            self._update(backend, p, state)
            mark_updated(p)  # written in place: a graph built before this step cannot backward
        return loss

    def _check_state(self, i: int, p: Tensor, state: dict[str, Any]) -> None:
        """A parameter whose `.data` changed shape since its state was made (a momentum buffer of the
        old shape) is refused before any parameter is updated, naming both shapes."""
        for key, value in state.items():
            shape = getattr(value, "shape", None)
            if shape is not None and tuple(shape) != p.shape:
                raise ValueError(f"{type(self).__name__}.step: parameter {i} has shape {p.shape}, but its "
                                 f"{key} has shape {tuple(shape)} (its .data changed shape since): reset "
                                 f"its state with opt.state[{i}] = {{}}, or all with opt.state.clear()")

    def _check_grad(self, backend: Any, i: int, p: Tensor) -> None:
        """A `.grad` set by hand must be an array of the parameter's shape (PyTorch refuses
        the assignment): a (4,) gradient for a (3, 4) weight would broadcast over every row."""
        g: Any = p._grad
        array_type: Any = _array_type(backend)  # Any: the isinstance below must not narrow g
        if not isinstance(g, array_type):
            owner = owner_of(g)
            if owner is not None:  # made before set_backend switched: so is the parameter, most likely
                raise TypeError(f"{type(self).__name__}.step: parameter {i}'s .grad is an array of backend "
                                f"{owner.name!r}, and the selected backend is {backend.name!r}: tensors keep "
                                "the backend they were made under. Make the model and optimizer again after "
                                f"set_backend({backend.name!r}), or select {owner.name!r} again")
            hint = " (.grad holds the array itself: t.data)" if isinstance(g, Tensor) else ""
            raise TypeError(f"{type(self).__name__}.step: parameter {i}'s .grad must be an array of the "
                            f"backend {backend.name!r}, got {type_name(g)}{hint}")
        if tuple(g.shape) != p.shape:
            raise ValueError(f"{type(self).__name__}.step: parameter {i} has shape {p.shape} but its .grad "
                             f"has shape {tuple(g.shape)}")

    def _update(self, backend: Any, p: Tensor, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """`{"optimizer": class name, "settings": {lr, ...}, "shapes": [each parameter's shape],
        "state": {i: {key: value}}}`: the state of parameter i (in the order given) as numpy copies
        and ints, for the parameters that have state, as torch.optim's state_dict numbers them."""
        def value(v: Any) -> Any:
            return v if isinstance(v, int) else backend_of(v).to_numpy(v).copy()

        return {
            "optimizer": type(self).__name__,
            "settings": {name: getattr(self, name) for name in self.settings},
            "shapes": [tuple(p.shape) for p in self.params],
            "state": {i: {k: value(v) for k, v in s.items()} for i, s in enumerate(self.state) if s},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Take the settings and state of `state_dict()` (of an optimizer of this class over
        parameters of the same shapes). Everything is checked first: on an error, nothing changed.
        A dict without "shapes" (saved before they were recorded) is checked by its state alone."""
        name = type(self).__name__
        keys = set(state_dict) - {"shapes"} if isinstance(state_dict, dict) else None
        if keys != {"optimizer", "settings", "state"}:
            raise ValueError(f"{name}.load_state_dict takes what state_dict() returns: a dict with "
                             "'optimizer', 'settings', 'shapes' and 'state'")
        if state_dict["optimizer"] != name:
            raise ValueError(f"{name}.load_state_dict: the state was saved by {state_dict['optimizer']}, "
                             f"not {name}")
        if "shapes" in state_dict:
            self._check_shapes(state_dict["shapes"])
        settings = state_dict["settings"]
        unknown = sorted(set(settings) - set(self.settings)) if isinstance(settings, dict) else None
        if unknown is None or unknown:
            raise ValueError(f"{name}.load_state_dict: the saved settings have {unknown}, which {name} "
                             f"does not take (it takes {', '.join(self.settings)})")
        lacking = [key for key in self.settings if key not in settings]
        if lacking:  # the constructor's defaults would replace this optimizer's own without a word
            raise ValueError(f"{name}.load_state_dict: the saved settings lack {', '.join(lacking)} (a "
                             f"state_dict() has all of {', '.join(self.settings)})")
        try:  # the constructor checks the settings
            probe = type(self)(self.params, **settings)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{name}.load_state_dict: the saved settings: {exc}") from None
        states = [self._loaded(i, s) for i, s in self._numbered(state_dict["state"])]
        # the probe checked the settings together; checked one at a time, SGD's could clash on the
        # way (a subclass's property setter still runs)
        for setting in self.settings:
            object.__setattr__(self, setting, getattr(probe, setting))
        self.state = _State(self, states)

    def _check_shapes(self, saved: Any) -> None:
        """ValueError unless `saved` lists this optimizer's parameter shapes, in order."""
        where = f"{type(self).__name__}.load_state_dict"
        try:
            theirs = [tuple(int(n) for n in shape) for shape in saved]
        except (TypeError, ValueError):
            raise ValueError(f"{where}: 'shapes' must list each parameter's shape, got {saved!r}") from None
        mine = [tuple(p.shape) for p in self.params]
        if len(theirs) != len(mine):
            raise ValueError(f"{where}: the state is of an optimizer over {len(theirs)} parameter(s), this "
                             f"one has {len(mine)}: build it over the same parameters, in the same order")
        for i, (a, b) in enumerate(zip(theirs, mine)):
            if a != b:
                raise ValueError(f"{where}: parameter {i} had shape {a} in the saved state, here {b}: build "
                                 "the optimizer over the same parameters, in the same order")

    def _numbered(self, given: Any) -> list[tuple[int, Any]]:
        """One (index, state) pair per parameter, {} where `given` has none; ValueError for an
        index that is no parameter's."""
        mine = set(range(len(self.params)))
        extra = sorted(set(given) - mine, key=str) if isinstance(given, dict) else None
        if extra and all(isinstance(k, str) for k in extra):
            shown = extra[:3] + ["..."] * (len(extra) > 3)
            raise ValueError(f"{type(self).__name__}.load_state_dict: the state's keys must be the "
                             f"parameters' positions as ints, got {shown} (a JSON round trip makes "
                             "them strings: convert with {int(k): v for k, v in ...})")
        if extra is None or extra:
            raise ValueError(f"{type(self).__name__}.load_state_dict: the state has entries {extra} for "
                             f"parameters this optimizer does not have (it has {len(self.params)})")
        return [(i, given.get(i, {})) for i in range(len(self.params))]

    def _loaded(self, i: int, saved: Any) -> dict[str, Any]:
        """Parameter i's saved state as backend arrays, checked against what this class keeps:
        a count for `step`, arrays of the parameter's shape for the rest, cast to its dtype (as
        torch.optim does: a float64 state loads on a backend that holds float32 only)."""
        where = f"{type(self).__name__}.load_state_dict: the state of parameter {i}"
        if not isinstance(saved, dict) or (saved and set(saved) != self.state_keys):
            keys = sorted(saved) if isinstance(saved, dict) else type(saved).__name__
            raise ValueError(f"{where} has {keys}; {type(self).__name__} keeps {sorted(self.state_keys)}")
        backend = get_backend()
        out: dict[str, Any] = {}
        for key, v in saved.items():
            if key == "step":
                out[key] = _count(where, v)
            elif tuple(getattr(v, "shape", ())) != self.params[i].shape or dtype_name(v) not in _FLOATS:
                dtype = dtype_name(v) if hasattr(v, "dtype") else ""
                got = f"{type(v).__name__} {getattr(v, 'shape', '')} {dtype}".strip()
                raise ValueError(f"{where}: {key} must be a float32 or float64 array of the parameter's "
                                 f"shape {self.params[i].shape}, got {got}")
            else:  # a copy: steps write state in place, and the saved dict may load elsewhere too
                out[key] = backend.copy(backend.asarray(v, dtype=dtype_name(self.params[i].data)))
        return out


_FLOATS = ("float32", "float64")


def _refuse_dtype_change(opt: Optimizer, backend: Any, update: str, p: Tensor, new: Any,
                         state: dict[str, Any]) -> None:
    """TypeError where the backend's `update` returned the parameter in another dtype than it was
    given (float64 for a float32 one): the model would go on in that dtype, silently, where a
    torch.optim step keeps each parameter's. The steps call it before the parameter and its `state`
    are assigned, where the dtype objects differ: that test, inline, costs ~70 ns a parameter (the
    smallest numpy update takes ~10 us)."""
    if not hasattr(new, "dtype") or dtype_name(new) == dtype_name(p._data):
        return  # not an array (the .data setter refuses it), or one dtype in two objects
    i = next(i for i, q in enumerate(opt.params) if q is p)
    given = {".grad": p._grad, **{k: a for k, a in state.items() if hasattr(a, "dtype")}}
    inputs = ", ".join(f"{name} {dtype_name(a)}" for name, a in given.items())
    hint = " (Adam's state starts as the backend's zeros)" if update == "adam_update" else ""
    raise TypeError(f"{type(opt).__name__}.step: backend {backend.name!r}'s {update} returned parameter {i} "
                    f"as {dtype_name(new)}, given it as {dtype_name(p._data)} with {inputs}{hint}: an "
                    "optimizer step keeps each parameter's dtype, as torch.optim's do, or the model would "
                    f"go on in {dtype_name(new)}. Fix the backend's {update} (or the helpers it is "
                    f"composed of); `python -m topgrad.testing {backend.name}` checks it")


def _count(where: str, v: Any) -> int:
    """A saved step count as an int: Python's or numpy's integers, 0-d ones (np.savez) included."""
    try:
        n = operator.index(v) if not isinstance(v, bool) else -1
    except TypeError:
        n = -1
    if n < 0:
        raise ValueError(f"{where}: step must be a whole number >= 0, got {v!r}")
    return n


_NOT_TAKEN = {  # torch.optim's options: what each is, and what to write instead
    "amsgrad": ("AMSGrad variant", "not implemented; Adam and AdamW run the original update"),
    "decoupled_weight_decay": ("AdamW's update", "use topgrad.optim.AdamW(params, lr, weight_decay=...)"),
    "maximize": ("gradient ascent", "minimize the negated objective instead: (-objective).backward()"),
    "foreach": ("multi-tensor kernels", "each step is one backend update per parameter (sgd_update, "
                "adam_update, which a backend may fuse); drop foreach="),
    "fused": ("fused kernels", "each step is one backend update per parameter (sgd_update, adam_update, "
              "which a backend may fuse); drop fused="),
    "capturable": ("CUDA-graph capture", "steps run eagerly; drop capturable="),
    "differentiable": ("autograd through the step", "the step runs outside the graph (no higher-order "
                       "gradients); drop differentiable="),
}


def _refuse_options(opt: Optimizer, **given: Any) -> None:
    """TypeError for a torch.optim option that Topgrad's optimizers do not take, at a value other than
    one meaning what Topgrad does (False, or None where that is PyTorch's default)."""
    for name, value in given.items():
        if value is not None and value is not False:
            raise not_taken(type(opt).__name__, name, value, *_NOT_TAKEN[name])


def _scalar(value: Any) -> Any:
    """A 0-d array (numpy's, torch's: `np.load(f)["lr"]`, `torch.tensor(0.01)`) as its Python number,
    as torch.optim takes one; anything else as it is, for the setting's own check."""
    if getattr(value, "ndim", None) == 0 and callable(getattr(value, "item", None)):
        return value.item()
    return value


def _check_non_negative(opt: Optimizer, **values: float) -> None:
    """torch.optim refuses a negative learning rate, momentum, weight decay and eps; so do we,
    and anything that is not a finite number."""
    for name, value in values.items():
        if not isinstance(value, Real) or isinstance(value, bool) or not 0 <= value < math.inf:
            raise ValueError(
                f"{type(opt).__name__}: {name.replace('_', ' ')} must be a finite number >= 0, got {value!r}"
            )


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov momentum and weight decay."""

    settings = ("lr", "momentum", "weight_decay", "nesterov", "dampening")
    state_keys = frozenset({"momentum_buffer"})

    def __init__(
        self, params: Iterable[Tensor], lr: float, momentum: float = 0.0, *positional: Any,
        weight_decay: float = 0.0, nesterov: bool = False, dampening: float = 0.0,
        maximize: bool = False, foreach: bool | None = None, differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        """The options after `momentum` are keyword-only: torch.optim.SGD's positional order
        (momentum, dampening, weight_decay, nesterov) differs, and code ported positionally would
        train with other settings without a word. PyTorch's maximize, foreach, differentiable and
        fused are taken at False or None only (other values say what to write instead)."""
        if positional:
            raise TypeError(f"SGD takes params, lr and momentum by position, and its other options by name "
                            f"only (weight_decay=, nesterov=, dampening=), got {len(positional)} more by "
                            "position: torch.optim.SGD's order (momentum, dampening, weight_decay, nesterov) "
                            "differs, and code ported by position would train with other settings")
        _refuse_options(self, maximize=maximize, foreach=foreach, differentiable=differentiable, fused=fused)
        super().__init__(params, lr)
        self.momentum, self.weight_decay, self.dampening, self.nesterov = (
            momentum, weight_decay, dampening, nesterov)

    def _checked(self, name: str, value: Any) -> Any:
        """momentum, weight decay and dampening: finite numbers >= 0; nesterov: a bool, and with it
        momentum > 0 and dampening 0 (checked whichever of the three is set)."""
        if name in ("momentum", "weight_decay", "dampening"):
            _check_non_negative(self, **{name: value})
            value = float(value)
        elif name == "nesterov" and not isinstance(value, bool):
            raise TypeError(f"SGD: nesterov must be True or False, got {value!r}")
        if name in ("momentum", "dampening", "nesterov"):  # the three as they would be (the
            # constructor sets nesterov last, so its rule is checked once all three are there)
            three = ("momentum", "dampening", "nesterov")
            after: dict[str, Any] = {key: getattr(self, key, None) for key in three}
            after[name] = value
            known = after["momentum"] is not None and after["dampening"] is not None
            if after["nesterov"] and known and (after["momentum"] <= 0 or after["dampening"] != 0):
                raise ValueError("SGD: Nesterov momentum needs momentum > 0 and dampening 0")
        return super()._checked(name, value)

    def _update(self, backend: Any, p: Tensor, state: dict[str, Any]) -> None:
        new, buf = backend.sgd_update(
            p.data, p._grad, state.get("momentum_buffer"), lr=self.lr, momentum=self.momentum,
            dampening=self.dampening, weight_decay=self.weight_decay, nesterov=self.nesterov,
        )
        if getattr(new, "dtype", None) is not p._data.dtype:
            _refuse_dtype_change(self, backend, "sgd_update", p, new, state)
        p.data = new
        if buf is not None:
            state["momentum_buffer"] = buf


class Adam(Optimizer):
    """Adam (Kingma and Ba); weight decay is added to the gradient, as torch.optim.Adam does."""

    decoupled = False
    settings = ("lr", "betas", "eps", "weight_decay")
    state_keys = frozenset({"step", "exp_avg", "exp_avg_sq"})

    def __init__(
        self, params: Iterable[Tensor], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False, *, maximize: bool = False,
        foreach: bool | None = None, capturable: bool = False, differentiable: bool = False,
        fused: bool | None = None, decoupled_weight_decay: bool = False,
    ) -> None:
        """torch.optim.Adam's arguments, in its order; amsgrad and the options after it are taken
        at False or None only (other values say what to write instead)."""
        _refuse_options(self, amsgrad=amsgrad, maximize=maximize, foreach=foreach, capturable=capturable,
                        differentiable=differentiable, fused=fused,
                        decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, lr)
        self.eps, self.weight_decay, self.betas = eps, weight_decay, betas

    def _checked(self, name: str, value: Any) -> Any:
        """eps and weight decay: finite numbers >= 0; betas: two numbers in [0, 1), kept as a tuple of
        floats (any sequence is taken, a numpy array too, as torch takes; the caller's list may change)."""
        if name in ("eps", "weight_decay"):
            _check_non_negative(self, **{name: value})
            return float(value)
        elif name == "betas":
            try:
                pair = tuple(map(_scalar, value)) if not isinstance(value, (str, bytes)) else ()
            except TypeError:
                pair = ()
            if len(pair) != 2 or not all(isinstance(b, Real) and not isinstance(b, bool)
                                         and 0.0 <= float(b) < 1.0 for b in pair):
                raise ValueError(f"{type(self).__name__}: betas must be two numbers in [0, 1), got {value!r}")
            return (float(pair[0]), float(pair[1]))
        return super()._checked(name, value)

    def _update(self, backend: Any, p: Tensor, state: dict[str, Any]) -> None:
        if not state:
            state.update(step=0, exp_avg=backend.zeros(p.shape), exp_avg_sq=backend.zeros(p.shape))
        new, m, v = backend.adam_update(
            p.data, p._grad, state["exp_avg"], state["exp_avg_sq"], step=state["step"] + 1, lr=self.lr,
            beta1=self.betas[0], beta2=self.betas[1], eps=self.eps,
            weight_decay=self.weight_decay, decoupled=self.decoupled,
        )
        if getattr(new, "dtype", None) is not p._data.dtype:
            _refuse_dtype_change(self, backend, "adam_update", p, new, state)
        p.data, state["exp_avg"], state["exp_avg_sq"] = new, m, v
        state["step"] += 1


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov and Hutter), as torch.optim.AdamW."""

    decoupled = True

    def __init__(
        self, params: Iterable[Tensor], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False,
        foreach: bool | None = None, capturable: bool = False, differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        """torch.optim.AdamW's arguments, in its order, taken as Adam's."""
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize, foreach=foreach,
                         capturable=capturable, differentiable=differentiable, fused=fused)
