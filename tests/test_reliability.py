"""Reliability: no memory growth across training steps, saved arrays freed, very deep graphs, garbage input.

Garbage input to the public API must give a clear error (ValueError or TypeError naming the
op) or the right answer (checked against PyTorch), never a wrong answer or an exception from
deep inside the array library. Hypothesis draws shapes near valid ones for that part.
"""

from __future__ import annotations

import gc
import os
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
import topgrad
import torch
import torch.nn.functional as F  # noqa: N812 - the usual PyTorch spelling
from helpers import (
    assert_as_accurate,
    assert_close,
    check_against_torch,
    is_contiguous,
    laid_out,
    rand,
    torch_attention,
    torch_conv2d,
    torch_run,
)
from hypothesis import assume, given
from hypothesis import strategies as st
from topgrad import Op, Tensor

seeds = st.integers(0, 2**16)


# ---- memory across training steps --------------------------------------------------------------
def _rss() -> int:
    """Resident set size of this process in bytes."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: peak RSS is the best the standard library offers
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def _live_graph_objects() -> tuple[int, int]:
    """How many Tensors and Ops are alive."""
    gc.collect()
    objects = gc.get_objects()
    kinds = [type(o) for o in objects]  # type(), not isinstance(): no module proxy's __class__ runs
    return sum(issubclass(k, Tensor) for k in kinds), sum(issubclass(k, Op) for k in kinds)


def _cross_entropy(logits: Tensor, onehot: Tensor) -> Tensor:
    return (logits.logsoftmax() * onehot).sum() * (-1.0 / logits.shape[0])


def _mlp(batch: int, d: int, hidden: int) -> tuple[list[Tensor], Callable[[Tensor], Tensor]]:
    w1, b1 = Tensor.He(d, hidden, seed=1), Tensor.zeros(hidden)
    w2, b2 = Tensor.He(hidden, 10, seed=2), Tensor.zeros(10)
    return [w1, b1, w2, b2], lambda x: x.linear(w1, b1).relu().linear(w2, b2)


def _attention_model(batch: int, d: int, hidden: int) -> tuple[list[Tensor], Callable[[Tensor], Tensor]]:
    with topgrad.no_grad():
        wq, wk, wv = (Tensor.He(d, d, seed=i) * 0.5 for i in range(3))
    for w in (wq, wk, wv):
        w.requires_grad = True  # made under no_grad: a constant until marked trainable
    g, b = Tensor.ones(d), Tensor.zeros(d)
    w_in, w_out = Tensor.He(d, hidden, seed=5), Tensor.He(hidden, 10, seed=6)

    def forward(x: Tensor) -> Tensor:  # x (batch, tokens, d)
        n = x.layernorm(g, b)
        h = x + topgrad.attention(n.linear(wq), n.linear(wk), n.linear(wv), causal=True)
        return h.mean(axis=1).linear(w_in).relu().linear(w_out)

    return [wq, wk, wv, g, b, w_in, w_out], forward


@pytest.mark.parametrize("model", ["mlp", "attention"])
def test_memory_does_not_grow_across_training_steps(model: str, interpreted: bool) -> None:
    """300 SGD steps: RSS after step 300 within 5% of RSS after step 50; no Tensor or Op leaks.

    In an interpreter (a second or more per step) 30 steps, checked after 10 and 30.
    """
    batch, d, hidden = (4, 8, 8) if interpreted else (16, 32, 64)
    first, last = (10, 30) if interpreted else (50, 300)
    rng = np.random.default_rng(0)
    if model == "mlp":
        params, forward = _mlp(batch, d, hidden)
        data = rng.standard_normal((batch, d)).astype(np.float32)
    else:
        params, forward = _attention_model(batch, d, hidden)
        data = rng.standard_normal((batch, 4, d)).astype(np.float32)
    onehot = np.eye(10, dtype=np.float32)[rng.integers(0, 10, batch)]
    opt = topgrad.optim.SGD(params, lr=0.01, momentum=0.9)
    counts: dict[int, tuple[int, int]] = {}
    rss: dict[int, int] = {}
    for step in range(1, last + 1):
        loss = _cross_entropy(forward(Tensor(data)), Tensor(onehot))
        opt.zero_grad()
        loss.backward()
        opt.step()
        del loss
        if step in (first, last):
            counts[step] = _live_graph_objects()
            rss[step] = _rss()
    assert counts[last] == counts[first], (
        f"live (Tensors, Ops) grew from {counts[first]} (step {first}) to {counts[last]} (step {last})")
    growth = rss[last] / rss[first] - 1.0
    assert growth <= 0.05, (
        f"RSS grew by {growth:.1%} between step {first} and step {last} ({rss[first]} -> {rss[last]} B)")


# ---- saved intermediates are freed --------------------------------------------------------------
def _weak(arrays: Sequence[Any]) -> list[weakref.ref]:
    refs = []
    for a in arrays:
        try:
            refs.append(weakref.ref(a))
        except TypeError:  # Python scalars and None cannot be weakly referenced; they hold no memory
            pass
    return refs


def test_saved_intermediates_die_after_backward() -> None:
    x, w, g, b = Tensor(rand((2, 4, 8), 1)), Tensor(rand((8, 8), 2)), Tensor.ones(8), Tensor.zeros(8)
    h = x.layernorm(g, b)
    a = topgrad.attention(h.linear(w), h, h, causal=True)
    loss = (a.relu().logsoftmax() * 0.5).mean()
    graph = loss.graph()
    op_refs = [weakref.ref(op) for op in _ops(loss)]
    extra = [s for n in graph.ops for s in n.saved if s.alias is None]
    assert extra, "LayerNorm and Attention save arrays that are not inputs or outputs"
    saved_refs = _weak([a for op in _ops(loss) for a in op._intermediate])
    held = {id(_owner(t.data)) for t in _held_tensors(loss)}
    loss.backward()
    gc.collect()
    # a backward may write a gradient over its own saved scratch (numpy LayerNorm's x-hat becomes
    # dL/dx): that memory is held by the leaf's .grad now, not leaked
    grads = {id(_owner(t.grad)) for t in (x, w, g, b) if t.grad is not None}
    held |= grads
    alive = [r() for r in saved_refs]
    stray = [getattr(o, "shape", "?") for o in alive if o is not None and id(_owner(o)) not in held]
    assert not stray, f"saved arrays of shapes {stray} outlived backward although no tensor holds them"
    del alive
    del loss, a, h, graph
    gc.collect()
    assert all(r() is None for r in op_refs), "ops outlived the graph"
    leaves = {id(_owner(t.data)) for t in (x, w, g, b)} | grads
    survivors = [r() for r in saved_refs]
    assert all(o is None or id(_owner(o)) in leaves for o in survivors), "saved arrays outlived the graph"


def _owner(a: Any) -> Any:
    """The array that owns `a`'s memory (numpy `.base`, torch `._base`): a view keeps it alive."""
    while True:
        base = getattr(a, "_base", None)
        if base is None:
            base = getattr(a, "base", None)
        if base is None or not hasattr(base, "shape"):
            return a
        a = base


def _ops(root: Tensor) -> list[Op]:
    """The ops of the graph behind `root`."""
    from topgrad.tensor import _toposort

    return [n for n in _toposort(root._op) if isinstance(n, Op)]


def _held_tensors(root: Tensor) -> list[Tensor]:
    """The graph's leaves and the op outputs that something still holds."""
    from topgrad.tensor import _toposort

    nodes = _toposort(root._op)
    outputs = [n.output() for n in nodes if isinstance(n, Op)]
    return [n for n in nodes if isinstance(n, Tensor)] + [t for t in outputs if t is not None]


# ---- a very deep graph ---------------------------------------------------------------------------
def test_graph_of_100_000_ops_runs_backward() -> None:
    """Reshapes (views: cheap on every backend) with a Mul every 1,000 ops; then the graph is freed."""
    x = Tensor(rand((3,), 1))
    y = x
    for i in range(100_000):
        if i % 1000 == 999:
            y = y * 1.0
        else:
            y = y.reshape(1, 3) if y.ndim == 1 else y.reshape(3)
    seed = y.numpy() * 0 + np.array([1.0, 2.0, 3.0], np.float32).reshape(y.shape)
    y.backward(seed)
    assert_close(x.grad, np.array([1.0, 2.0, 3.0], np.float32), "gradient through 100,000 ops")
    probe = weakref.ref(y._op)
    del y
    gc.collect()
    assert probe() is None


# ---- garbage in: a clear error or the right answer -----------------------------------------------
# Known backend issues, reported to the backends' authors: backend -> case -> what goes wrong.
# Such a case is marked xfail on that backend (an XPASS in the summary means: fixed, delete it).
KNOWN_ISSUES: dict[str, dict[str, str]] = {
    "numpy": {},
    "triton": {},
}


def _case_id(op: str, shapes: Sequence[Any]) -> str:
    return f"{op}{list(shapes)}".replace(" ", "")


def _mark_known(request: pytest.FixtureRequest, backend: str, case: str) -> None:
    reason = KNOWN_ISSUES.get(backend, {}).get(case)
    if reason:
        request.node.add_marker(pytest.mark.xfail(reason=f"{backend} backend: {reason}", strict=False))


def _agrees_or_refuses(
    op: str, top_fn: Callable[..., Tensor], ref_fn: Callable[..., torch.Tensor], arrays: Sequence[Any],
    dtype: str = "float32", data: Callable[[np.ndarray], Any] | None = None,
) -> bool:
    """Run `top_fn` on Tensors of `arrays` (None stays None): a ValueError/TypeError naming `op`
    where `ref_fn` refuses too (it encodes PyTorch's and Topgrad's agreed refusals), or a result
    and gradients that match `ref_fn` in PyTorch. With `data`, each Tensor's `.data` is then set to
    data(array) (a backend array in another memory layout), and so is the upstream gradient's.
    Returns True when it ran."""
    shapes = [None if a is None else tuple(np.shape(a)) for a in arrays]
    try:
        tensors = [None if a is None else Tensor(a, dtype=dtype) for a in arrays]
    except (ValueError, TypeError) as exc:
        if dtype == "float32":
            raise
        assert dtype in str(exc), f"{op}: refusing dtype {dtype!r} without naming it: {exc}"
        return False  # the backend has no such dtype, and says so
    if data is not None:
        for t, a in zip(tensors, arrays):
            if t is not None:
                t.data = data(a)
    try:
        out = top_fn(*tensors)
    except (ValueError, TypeError) as exc:
        assert op in str(exc), f"{op} with shapes {shapes}: the error does not name the op: {exc!r}"
        try:
            torch_run(ref_fn, arrays, torch.float64, lambda shape: rand(shape, 3))
        except Exception:
            return False  # both refuse
        pytest.fail(f"{op} refuses shapes {shapes}, which PyTorch computes: {exc}")
    except Exception as exc:
        pytest.fail(f"{op} with shapes {shapes} crashed: {type(exc).__name__}: {exc}")

    def upstream(shape: tuple[int, ...]) -> np.ndarray:
        return rand(shape, 3)

    try:  # float64, the reference; float32, how close float32 gets (helpers.assert_as_accurate)
        exact, exact_grads = torch_run(ref_fn, arrays, torch.float64, upstream)
        single, single_grads = torch_run(ref_fn, arrays, torch.float32, upstream)
    except Exception as exc:
        pytest.fail(f"{op} accepted shapes {shapes}, which PyTorch refuses ({type(exc).__name__}: {exc}); "
                    f"it returned shape {out.shape}")
    assert_as_accurate(out, exact, single, f"{op} forward, shapes {shapes}")
    seed = upstream(tuple(exact.shape))
    out.backward(seed if data is None else data(seed))
    for i, t in enumerate(tensors):
        if t is not None:
            what = f"{op} gradient of input {i}, shapes {shapes}"
            assert t.grad is not None, f"{what}: none (PyTorch's is {exact_grads[i]})"  # zeros would hide it
            assert_as_accurate(t.grad, exact_grads[i], single_grads[i], what)
    return True


def _ref_linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    if w.ndim != 2 or x.ndim < 1 or (b is not None and b.shape != (w.shape[1],)):
        raise ValueError("not a Linear")
    return x @ w + (b if b is not None else 0.0)


def _ref_conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, stride: int = 1,
              padding: int = 0) -> torch.Tensor:
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError("not NHWC/HWIO")
    return torch_conv2d(x, w, b, stride=stride, padding=padding)


def _ref_batchnorm(x: torch.Tensor, g: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if x.ndim < 1:
        raise ValueError("no feature axis")
    c = x.shape[-1]
    if g.shape != (c,) or b.shape != (c,):  # PyTorch broadcasts a 0-d gamma or beta; Topgrad takes (C,)
        raise ValueError("gamma and beta of shape (C,) only")
    if x.numel() < 2 * c:  # PyTorch refuses one value per channel and returns an empty batch as is;
        raise ValueError("fewer than two values per channel")  # Topgrad refuses both
    return F.batch_norm(x.reshape(-1, c), None, None, g, b, training=True).reshape(x.shape)


def _ref_layernorm(x: torch.Tensor, g: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if x.ndim < 1 or x.shape[-1] == 0:  # no features: Topgrad refuses, PyTorch returns it empty
        raise ValueError("no feature axis")
    return F.layer_norm(x, (x.shape[-1],), g, b)


def _ref_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    if q.ndim != 3 or k.ndim != 3 or v.ndim != 3:
        raise ValueError("attention takes (B, T, D)")
    if k.shape[1] == 0 and q.shape[1] > 0:
        raise ValueError("no keys")
    if not q.shape[0] == k.shape[0] == v.shape[0]:  # PyTorch broadcasts a batch of 1; Topgrad does not
        raise ValueError("one batch size")
    return torch_attention(q, k, v)


OPS: dict[str, tuple[Callable[..., Tensor], Callable[..., torch.Tensor]]] = {
    "Linear": (lambda x, w, b: x.linear(w, b), _ref_linear),
    "Conv2d": (lambda x, w, b: x.conv2d(w, b, padding=1), lambda x, w, b: _ref_conv(x, w, b, padding=1)),
    "BatchNorm": (lambda x, g, b: x.batchnorm(g, b), _ref_batchnorm),
    "LayerNorm": (lambda x, g, b: x.layernorm(g, b), _ref_layernorm),
    "Attention": (lambda q, k, v: topgrad.attention(q, k, v), _ref_attention),
}

# op -> shapes that break the contract: wrong ranks, mismatched parameters, empty batches
BAD_SHAPES: dict[str, list[list[tuple[int, ...] | None]]] = {
    "Linear": [[(3, 4), (5, 2), None], [(3, 4), (4,), None], [(3, 4), (4, 2, 1), None],
               [(3, 4), (4, 2), (3,)], [(), (4, 2), None], [(0, 4), (4, 2), (2,)], [(4,), (4, 2), (2,)],
               [(3, 4), (4, 0), (0,)]],
    "Conv2d": [[(2, 5, 5), (3, 3, 5, 2), None], [(2, 5, 5, 3), (3, 3, 3), None],
               [(2, 5, 5, 3), (3, 3, 4, 2), None], [(2, 5, 5, 3), (3, 3, 3, 2), (3,)],
               [(2, 1, 1, 3), (5, 5, 3, 2), None],
               [(0, 5, 5, 3), (3, 3, 3, 2), (2,)], [(1, 5, 5, 3, 1), (3, 3, 3, 2), None]],
    "BatchNorm": [[(), (1,), (1,)], [(4, 3), (4,), (3,)], [(4, 3), (3,), (2,)], [(1, 3), (3,), (3,)],
                  [(0, 3), (3,), (3,)], [(4, 3), (3, 1), (3,)]],
    "LayerNorm": [[(), (1,), (1,)], [(4, 3), (4,), (3,)], [(4, 3), (3,), (4,)], [(0, 3), (3,), (3,)],
                  [(4, 0), (0,), (0,)]],
    "Attention": [[(4, 3), (4, 3), (4, 3)], [(2, 4, 3), (2, 4, 2), (2, 4, 3)],
                  [(2, 4, 3), (2, 5, 3), (2, 4, 3)],
                  [(2, 4, 3), (3, 4, 3), (3, 4, 3)], [(0, 4, 3), (0, 4, 3), (0, 4, 3)],
                  [(2, 0, 3), (2, 4, 3), (2, 4, 3)], [(2, 4, 3), (2, 0, 3), (2, 0, 3)],
                  [(1, 2, 4, 3), (1, 2, 4, 3), (1, 2, 4, 3)]],
}


@pytest.mark.parametrize(("op", "shapes"), [(op, s) for op, cases in BAD_SHAPES.items() for s in cases],
                         ids=[_case_id(op, s) for op, cases in BAD_SHAPES.items() for s in cases])
def test_bad_shapes_give_a_clear_error_or_the_right_answer(op: str, shapes: list[Any], backend_name: str,
                                                          request: pytest.FixtureRequest) -> None:
    _mark_known(request, backend_name, _case_id(op, shapes))
    top, ref = OPS[op]
    arrays = [None if s is None else rand(s, i) for i, s in enumerate(shapes)]
    _agrees_or_refuses(op, top, ref, arrays)


def _near(shape: tuple[int, ...]) -> st.SearchStrategy[tuple[int, ...]]:
    """The shape itself, or one with a dimension changed, dropped or added."""
    def mutate(data: tuple[int, int, int]) -> tuple[int, ...]:
        kind, where, delta = data
        s = list(shape)
        if kind == 0 or not s:
            s.insert(where % (len(s) + 1), 1 + delta % 3)
        elif kind == 1:
            del s[where % len(s)]
        else:
            i = where % len(s)
            s[i] = max(0, s[i] + delta)
        return tuple(s)

    mutated = st.tuples(st.integers(0, 2), st.integers(0, 4), st.integers(-2, 2)).map(mutate)
    return st.one_of(st.just(shape), mutated)


BASE_SHAPES = {
    "Linear": [(3, 4), (4, 2), (2,)],
    "Conv2d": [(2, 5, 5, 3), (3, 3, 3, 2), (2,)],
    "BatchNorm": [(4, 3), (3,), (3,)],
    "LayerNorm": [(4, 3), (3,), (3,)],
    "Attention": [(2, 4, 3), (2, 5, 3), (2, 5, 3)],
}


@pytest.mark.parametrize("op", sorted(BASE_SHAPES))
@given(data=st.data(), seed=seeds)
def test_shapes_near_valid_ones_give_a_clear_error_or_the_right_answer(op: str, data: st.DataObject,
                                                                      seed: int, backend_name: str) -> None:
    shapes = [data.draw(_near(s), label=f"shape {i}") for i, s in enumerate(BASE_SHAPES[op])]
    assume(_case_id(op, shapes) not in KNOWN_ISSUES.get(backend_name, {}))  # those have their own test
    top, ref = OPS[op]
    arrays = [rand(s, seed + i) for i, s in enumerate(shapes)]
    _agrees_or_refuses(op, top, ref, arrays)


@pytest.mark.parametrize("op", sorted(BASE_SHAPES))
def test_nan_data_propagates_like_pytorch(op: str) -> None:
    arrays = [rand(s, i) for i, s in enumerate(BASE_SHAPES[op])]
    arrays[0].reshape(-1)[1] = np.nan
    top, ref = OPS[op]
    assert _agrees_or_refuses(op, top, ref, arrays)


def test_layernorm_of_one_feature_has_no_input_gradient() -> None:
    """A draw the soak found: with one feature, x - mean is 0 and dL/dx exactly 0 (the output is
    beta whatever x is). Topgrad and PyTorch's float64 give 0; PyTorch's float32 gives 1.2e-4
    for one row through round-off, so a float32 reference failed this case."""
    top, ref = OPS["LayerNorm"]
    arrays = [rand((4, 1), 11563), rand((1,), 11564), rand((1,), 11565)]
    assert _agrees_or_refuses("LayerNorm", top, ref, arrays)


ELEMENTWISE: dict[str, tuple[Callable[[Tensor], Tensor], Callable[[torch.Tensor], torch.Tensor]]] = {
    "ReLU": (lambda x: x.relu(), torch.relu),
    "LogSoftmax": (lambda x: x.logsoftmax(), lambda x: torch.log_softmax(x, -1)),
    "Sum": (lambda x: x.sum(axis=1), lambda x: x.sum(1)),
    "Mean": (lambda x: x.mean(axis=0), lambda x: x.mean(0)),
    "Mul": (lambda x: x * 2.0, lambda x: x * 2.0),
    "Add": (lambda x: x + x, lambda x: x + x),
}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("op", sorted(ELEMENTWISE))
def test_nan_and_inf_pass_through_like_pytorch(op: str, backend_name: str,
                                               request: pytest.FixtureRequest) -> None:
    _mark_known(request, backend_name, f"{op}-nan")
    rows = [[np.nan, 1.0, -1.0, 2.0], [np.inf, -np.inf, 0.0, 1.0], [3.0, -2.0, 0.5, 1.0]]
    data = np.array(rows, np.float32)
    top, ref = ELEMENTWISE[op]
    check_against_torch(top, ref, [data])  # the output and the gradient, NaN for NaN


def _read_only(a: np.ndarray) -> Any:
    """A read-only view of a backend array holding `a`'s values where the backend's arrays have
    such a flag (numpy's); a fresh array elsewhere (torch tensors have none)."""
    array = topgrad.get_backend().asarray(np.array(a, np.float32))
    if isinstance(array, np.ndarray):
        array = array.view()
        array.flags.writeable = False
    return array


@pytest.mark.parametrize("layout", ["strided", "transposed", "fortran", "readonly", "readonly-given",
                                    "float64"])
@pytest.mark.parametrize("op", sorted(BASE_SHAPES))
def test_non_contiguous_and_read_only_inputs_give_the_right_answer(op: str, layout: str) -> None:
    """The op meets its inputs and its upstream gradient in another memory layout, as views of the
    backend's own arrays set as the Tensors' `.data` (`helpers.laid_out`: `Tensor(view)` would
    not do, since a trainable Tensor copies what it could share), or read-only (numpy's flag). The
    constructor takes a read-only numpy array ("readonly-given") and float64 data ("float64")."""
    arrays = [rand(s, i) for i, s in enumerate(BASE_SHAPES[op])]
    top, ref = OPS[op]
    if layout == "readonly-given":
        arrays = [np.broadcast_to(a, a.shape) for a in arrays]
    elif layout == "float64":
        arrays = [a.astype(np.float64) for a in arrays]
    if layout in ("readonly-given", "float64"):
        assert _agrees_or_refuses(op, top, ref, arrays)
        return
    seen: list[Any] = []

    def data(a: np.ndarray) -> Any:
        seen.append(_read_only(a) if layout == "readonly" else laid_out(a, layout))
        return seen[-1]

    def top_fn(*tensors: Tensor) -> Tensor:
        assert all(t.data is view for t, view in zip(tensors, seen)), "a Tensor did not keep its data"
        if layout == "readonly" and isinstance(tensors[0].data, np.ndarray):
            assert not tensors[0].data.flags.writeable
        elif layout != "readonly":  # the first input has two sides > 1: none of these views is contiguous
            assert not is_contiguous(tensors[0].data), f"{layout}: the op got contiguous data"
        return top(*tensors)

    assert _agrees_or_refuses(op, top_fn, ref, arrays, data=data)


@pytest.mark.parametrize("op", sorted(BASE_SHAPES))
def test_float64_tensors_give_a_clear_error_or_the_right_answer(op: str, backend_name: str,
                                                                request: pytest.FixtureRequest) -> None:
    """`Tensor(data, dtype="float64")` is public API: a backend supports it or refuses it clearly."""
    _mark_known(request, backend_name, f"{op}-float64")
    top, ref = OPS[op]
    _agrees_or_refuses(op, top, ref, [rand(s, i) for i, s in enumerate(BASE_SHAPES[op])], dtype="float64")


def test_integer_and_boolean_data_become_float32() -> None:
    x_int, w_int = np.arange(6).reshape(2, 3), np.array([[1, 0], [0, 1], [1, 1]])
    x = Tensor(x_int)
    assert str(x.dtype).endswith("float32")
    w = Tensor(w_int.tolist())
    y = x.linear(w)
    assert_close(y, (x_int @ w_int).astype(np.float32), "int data through Linear")
    y.backward(np.ones((2, 2), dtype=np.int64))
    assert_close(w.grad, (x_int.T @ np.ones((2, 2))).astype(np.float32), "gradient from an int seed")
    m = Tensor(np.array([True, False, True]))
    assert_close(m * 2.0, np.array([2.0, 0.0, 2.0], np.float32), "bool data")


@pytest.mark.parametrize("garbage", [None, "abc", [[1.0, 2.0], [3.0]], {"a": 1}, object()],
                         ids=["None", "str", "ragged", "dict", "object"])
def test_tensor_of_garbage_is_refused(garbage: Any) -> None:
    """A TypeError that says what the data was, never numpy's bare message from deep inside."""
    refused = (r"Tensor\(None\)|Tensor\('abc'\): text is not|backend: cannot make a float32 array from |"
               r"Tensor\(data\): the nested lists are ragged")
    with pytest.raises(TypeError, match=refused):
        Tensor(garbage)


def test_empty_batch_through_a_small_network() -> None:
    x = Tensor(np.zeros((0, 4), np.float32))
    w, b = Tensor(rand((4, 3), 1)), Tensor(rand((3,), 2))
    y = x.linear(w, b).relu().logsoftmax()
    assert y.shape == (0, 3)
    y.sum().backward()
    assert_close(w.grad, np.zeros((4, 3), np.float32), "no rows: zero weight gradient")
    assert_close(b.grad, np.zeros(3, np.float32), "no rows: zero bias gradient")


def test_batchnorm_running_stats_of_the_wrong_shape_are_refused(backend_name: str,
                                                                request: pytest.FixtureRequest) -> None:
    _mark_known(request, backend_name, "BatchNorm-running-stats")
    x, g, b = Tensor(rand((4, 3), 1)), Tensor.ones(3), Tensor.zeros(3)
    with pytest.raises(ValueError, match=r"BatchNorm: running_mean must have shape \(3,\) for x of shape "
                       r"\(4, 3\).*got \(4,\)"):
        x.batchnorm(g, b, running_mean=Tensor.zeros(4), running_var=Tensor.ones(4))
    with pytest.raises(ValueError, match=r"BatchNorm: running_var must have shape \(3,\).*got \(4,\)"):
        x.batchnorm(g, b, running_mean=Tensor.zeros(3), running_var=Tensor.ones(4))


def test_conv_with_bad_stride_or_padding_is_refused(backend_name: str,
                                                    request: pytest.FixtureRequest) -> None:
    _mark_known(request, backend_name, "Conv2d-stride")
    x, w = Tensor(rand((1, 5, 5, 2), 1)), Tensor(rand((3, 3, 2, 2), 2))
    bad = ({"stride": 0}, {"padding": -1}, {"stride": 1.5}, {"padding": (1, -1)}, {"stride": (2, 1, 1)},
           {"stride": True})
    for kwargs in bad:
        with pytest.raises((ValueError, TypeError), match="Conv2d"):
            x.conv2d(w, **kwargs)
