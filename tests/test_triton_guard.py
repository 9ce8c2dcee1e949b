"""The Triton backend's compute guard: inside ops and helpers torch may allocate and view, never compute.

Runtime: a torch compute op inside a `TritonOp` raises a clear error naming the torch
function and the op; allocation, views and kernel launches pass. Static: the ops' and
kernels' source calls no torch compute function (an AST scan against an allow-list).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

import topgrad  # noqa: E402
from topgrad import Tensor  # noqa: E402
from topgrad_triton.guard import TorchComputeError, guarded  # noqa: E402
from topgrad_triton.ops.base import TritonOp  # noqa: E402


class ComputesInForward(TritonOp):
    def forward(self, x):
        return x * 2  # torch math: forbidden

    def backward(self, grad):
        return (grad,)


class ComputesInBackward(TritonOp):
    def forward(self, x):
        self.save_for_backward(x)
        return x.view(x.shape)

    def backward(self, grad):
        return (grad.exp(),)  # torch math: forbidden


class OnlyAllocatesAndViews(TritonOp):
    def forward(self, x):
        out = torch.empty((x.shape[1], x.shape[0]), dtype=x.dtype, device=x.device)
        _ = (x.t(), x.permute(1, 0), x.unsqueeze(0).expand(3, *x.shape), x[1:], x.reshape(-1), out.view(-1))
        return topgrad.get_backend().add(x, 0.0)  # a helper: its kernel launch passes the guard

    def backward(self, grad):
        return (grad.view(grad.shape),)


def test_compute_in_forward_raises_naming_torch_function_and_op(triton_backend):
    x = Tensor([[1.0, 2.0]])
    with pytest.raises(TorchComputeError) as info:
        ComputesInForward.apply(x)
    message = str(info.value)
    assert "torch.mul" in message
    assert "ComputesInForward.forward" in message
    assert "all math must run in Triton kernels" in message


def test_compute_in_backward_raises(triton_backend):
    x = Tensor([[1.0, 2.0]])
    y = ComputesInBackward.apply(x)
    expected = r"torch\.exp ran inside topgrad-triton op ComputesInBackward\.backward"
    with pytest.raises(TorchComputeError, match=expected):
        y.backward()


def test_allocation_views_and_kernels_pass(triton_backend):
    x = Tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    y = OnlyAllocatesAndViews.apply(x)
    y.backward()
    assert y.numpy().tolist() == x.numpy().tolist()
    assert x.grad.shape == (2, 3)


def test_guard_is_off_outside_ops(triton_backend):
    x = Tensor([1.0, 2.0])
    assert (x.data * 2).tolist() == [2.0, 4.0]  # user code may use torch freely


def test_guards_nest_and_name_the_innermost(triton_backend):
    a = torch.ones(3)
    with guarded("Outer.forward"), guarded("Inner.backward"):
        with pytest.raises(TorchComputeError, match=r"Inner\.backward"):
            torch.add(a, a)
    assert torch.add(a, a).tolist() == [2.0, 2.0, 2.0]


def test_helpers_are_guarded(triton_backend, monkeypatch):
    from topgrad_triton.kernels import elementwise

    def torch_math(op, a, b=None, **kwargs):
        return a + b

    monkeypatch.setattr(elementwise, "elementwise", torch_math)
    backend = topgrad.get_backend()
    a = backend.ones((2,))
    expected = r"torch\.add ran inside topgrad-triton op TritonBackend\.add"
    with pytest.raises(TorchComputeError, match=expected):
        backend.add(a, a)


def test_every_table_op_is_guarded(triton_backend):
    for name in topgrad.get_backend().ops.names():
        op = getattr(topgrad.get_backend().ops, name)
        assert issubclass(op, TritonOp), f"{name} does not subclass TritonOp, so it runs unguarded"


# ---- static check: no torch compute calls in the source ------------------------------------
PACKAGE = Path(__import__("topgrad_triton").__file__).parent
#: torch.<name> the source may use: allocation, types and devices.
TORCH_ALLOWED = {"empty", "empty_like", "empty_strided", "from_numpy", "device", "dtype", "Tensor",
                 "float32", "float64", "float16", "bfloat16", "int32", "int64", "bool", "cuda", "Size"}
#: tensor methods that compute (the guard would stop them; the source should not contain them).
COMPUTE_METHODS = {
    "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "matmul", "mm", "bmm", "exp", "log",
    "sqrt", "rsqrt", "pow", "abs", "neg", "relu", "softmax", "log_softmax", "sum", "mean", "var", "std",
    "max", "min", "amax", "amin", "argmax", "clamp", "clamp_", "where", "masked_fill", "clone",
    "contiguous", "fill_", "zero_", "copy_", "cumsum", "norm", "tanh", "sigmoid", "einsum", "addmm",
    "baddbmm", "float", "double", "normal_", "uniform_", "index_select", "gather", "scatter",
    "scatter_add", "index_add", "conv2d", "unfold_backward", "sort", "topk", "square", "reciprocal",
}
#: receivers whose methods are not torch tensors: Triton language, numpy, math.
NOT_TORCH = {"tl", "triton", "np", "math", "libdevice", "os", "warnings", "functools", "importlib"}


def _sources() -> list[Path]:
    files = sorted((PACKAGE / "ops").glob("*.py")) + sorted((PACKAGE / "kernels").glob("*.py"))
    return [*files, PACKAGE / "backend.py"]


def _is_jit(fn: ast.FunctionDef) -> bool:
    return any("jit" in ast.unparse(d) for d in fn.decorator_list)


def _violations(path: Path, base: Path = PACKAGE) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    kernels = [f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and _is_jit(f)]
    jitted = {id(n) for f in kernels for n in ast.walk(f)}
    found = []
    for node in ast.walk(tree):
        if id(node) in jitted or not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        attr, receiver = node.func.attr, node.func.value
        root = receiver
        while isinstance(root, ast.Attribute):
            root = root.value
        root_name = root.id if isinstance(root, ast.Name) else ""
        where = f"{path.relative_to(base)}:{node.lineno}: {ast.unparse(node.func)}"
        if isinstance(receiver, ast.Name) and receiver.id == "torch":
            if attr not in TORCH_ALLOWED:
                found.append(where)
        elif root_name not in NOT_TORCH and root_name != "torch" and attr in COMPUTE_METHODS:
            found.append(where)
    return found


def test_static_scan_finds_a_planted_violation(tmp_path):
    bad = tmp_path / "planted.py"  # outside the package: the source scan never sees it
    bad.write_text("import torch\n\ndef f(x):\n    return torch.matmul(x, x.exp())\n")
    found = _violations(bad, base=tmp_path)
    assert len(found) == 2, found


def test_ops_and_kernels_source_call_no_torch_compute():
    violations = [v for path in _sources() for v in _violations(path)]
    listing = "\n".join(violations)
    assert not violations, f"torch compute calls in topgrad-triton (math must be Triton kernels):\n{listing}"
