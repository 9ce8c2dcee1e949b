"""The Triton backend itself: plugin, availability errors, array helpers, fused optimizer steps, precision.

Op semantics are checked by the shared suite (`TOPGRAD_BACKEND=triton TRITON_INTERPRET=1
pytest tests`); here is what is specific to this backend. Kernel tests skip where the
backend cannot run; the plugin and availability tests run in subprocesses.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

import numpy as np  # noqa: E402
import topgrad  # noqa: E402
import topgrad_triton  # noqa: E402
from helpers import compile_for_cuda  # noqa: E402
from topgrad import Tensor  # noqa: E402


@pytest.fixture
def backend(triton_backend):
    """The selected triton backend (conftest's `triton_backend`), by a shorter name."""
    return triton_backend


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True,
                          text=True, timeout=300)


# ---- plugin and availability ---------------------------------------------------------------
def test_plugin_lists_backend_without_importing_torch_or_triton():
    result = run_python("""
        import sys, topgrad
        assert "triton" in topgrad.available_backends()
        print(sorted(m for m in ("torch", "triton") if m in sys.modules))
    """, env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_unavailable_without_gpu_or_interpreter_says_how_to_interpret():
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "TOPGRAD_BACKEND")}
    env["CUDA_VISIBLE_DEVICES"] = ""  # hide any GPU
    result = run_python("""
        import topgrad
        try:
            topgrad.set_backend("triton")
        except topgrad.BackendUnavailableError as exc:
            print(exc)
        else:
            print("LOADED")
    """, env=env)
    assert result.returncode == 0, result.stderr
    message = result.stdout
    assert "LOADED" not in message
    assert "neither is available" in message and "torch.cuda.is_available() is False" in message
    assert "TRITON_INTERPRET=1" in message and "before" in message


def test_setting_the_variable_after_a_failed_try_works():
    """The failed try imported triton before it failed, so a retry with TRITON_INTERPRET set (as
    the message advises) was told the variable came after triton's import. Triton's own true
    values ('on', 'yes') count; a false one is named as such."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "TOPGRAD_BACKEND")}
    env["CUDA_VISIBLE_DEVICES"] = ""
    result = run_python("""
        import os, sys, topgrad
        try:
            topgrad.set_backend("triton")
        except topgrad.BackendUnavailableError as exc:
            print("first:", "is not set" in str(exc), "triton" in sys.modules)
        os.environ["TRITON_INTERPRET"] = "off"
        try:
            topgrad.set_backend("triton")
        except topgrad.BackendUnavailableError as exc:
            print("off:", "is 'off', which Triton reads as false" in str(exc))
        os.environ["TRITON_INTERPRET"] = "On"
        backend = topgrad.set_backend("triton")
        x = topgrad.Tensor.randn(3, seed=0)
        print("then:", backend.device.type, x.data.device.type, float((x * 2.0).sum()) == 2 * float(x.sum()))
    """, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:3] == ["first: True False", "off: True", "then: cpu cpu True"]


def test_a_missing_dependency_is_named_with_what_to_install():
    result = run_python("""
        import sys, topgrad
        sys.modules["triton"] = None  # as if triton were not installed
        try:
            topgrad.set_backend("triton")
        except topgrad.BackendUnavailableError as exc:
            print(exc)
    """, env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    assert "cannot import its dependencies" in result.stdout and "pip install triton" in result.stdout
    broken = run_python("""
        import sys, topgrad
        sys.modules["triton.language"] = None  # a broken install: a submodule, not a distribution
        from topgrad_triton import runtime
        try:
            runtime.check_available()
        except topgrad.BackendUnavailableError as exc:
            print(exc)
    """, env=dict(os.environ))
    assert broken.stdout.strip().endswith("pip install triton"), broken.stdout  # the distribution


def test_backend_is_named_and_on_its_device(backend):
    assert backend.name == "triton"
    expected = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"
    assert backend.device.type == expected
    assert Tensor([1.0, 2.0]).data.device.type == expected


# ---- array helpers ---------------------------------------------------------------------------
def test_asarray_converts_lists_numpy_and_torch_to_float32_on_device(backend):
    for obj in ([[1, 2], [3, 4]], np.array([[1, 2], [3, 4]], dtype=np.float64),
                torch.tensor([[1, 2], [3, 4]], dtype=torch.float64)):
        a = backend.asarray(obj)
        assert isinstance(a, torch.Tensor) and a.dtype == torch.float32 and a.device == backend.device
        assert backend.to_numpy(a).tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert tuple(backend.asarray(3.5).shape) == ()


def test_asarray_takes_lists_of_its_own_0d_arrays_and_refuses_none(backend):
    """`Tensor([loss.data, ...])` (0-d torch tensors collected in a list) failed with the compute
    guard's error: numpy read each through float(), a torch op under the guard. Each is read back
    to the host first now, as a GPU tensor must be for numpy anyway. A bare None became NaN,
    where the numpy backend refuses it."""
    loss = (Tensor([1.0, 2.0]) * 2.0).sum()
    assert Tensor([loss.data, loss.data], requires_grad=False).numpy().tolist() == [6.0, 6.0]
    mixed = backend.asarray([torch.tensor(1.0), 2.0, torch.tensor([3.0])[0]])
    assert backend.to_numpy(mixed).tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(TypeError, match=r"^triton backend: cannot make an array from None$"):
        backend.asarray(None)
    with pytest.raises(TypeError, match=r"^triton backend: cannot make a float32 array from list"):
        backend.asarray([[1.0, 2.0], [3.0]])  # ragged, without tensors: the conversion's own error


def test_a_triton_tensor_under_the_numpy_backend_is_named(backend):
    """A Reshape of a triton Tensor after set_backend("numpy") blamed the op ("Reshape.forward
    returned a torch.Tensor"), not the operand, as the ops that fail in forward do."""
    b = Tensor([[3.0, -4.0]])
    topgrad.set_backend("numpy")
    try:
        with pytest.raises(TypeError, match=r"^Reshape: operand 0 belongs to backend 'triton'"):
            b.reshape(2)
    finally:
        topgrad.set_backend("triton")


def test_interpreting_reads_the_variable_as_triton_does(monkeypatch):
    """' 1' counted as on here (stripped) and as off in Triton, so the no-GPU error said the
    variable had been set after triton's import."""
    from topgrad_triton import runtime

    for value, on in (("1", True), ("On", True), ("yes", True), (" 1", False), ("0", False), ("", False)):
        monkeypatch.setenv("TRITON_INTERPRET", value)
        assert runtime.interpreting() is on, value


def test_a_complex_torch_operand_is_refused(backend):
    """The kernels have no complex loads: Triton's KeyError said only 'complex64'."""
    with pytest.raises(TypeError, match=r"^Mul: operands must hold real numbers, got a torch.complex64 "
                                        r"tensor \(Topgrad's arrays are real\)"):
        Tensor([1.0, 2.0, 3.0]) * torch.tensor([1j, 1j, 1j])


def test_complex_values_inside_lists_are_refused(backend):
    """A complex array was refused, but numpy made a list's complex values float32 by dropping their
    imaginary parts, with only a ComplexWarning: `Tensor([np.complex128(1+5j)])` was [1.], and a list
    operand or backward seed lost its imaginary parts too. The list gets the array's refusal now."""
    complex_refusal = (r"^triton backend: complex values are not supported \(arrays are real, and the "
                       r"imaginary part would be dropped\)")
    x = Tensor([1.0, 2.0], requires_grad=True)
    makers = [
        lambda: Tensor([np.complex128(1 + 5j)]),
        lambda: Tensor([[1.0], [np.complex64(2j)]]),
        lambda: Tensor((1 + 2j, 3.0)),  # Python's: float() refused it, with another message
        lambda: x + [np.complex128(5j), 0.0],  # noqa: RUF005 (an operand, not concatenation)
        lambda: (x * 2.0).backward([np.complex128(1j), 1.0]),
        lambda: backend.asarray([np.array([1j])]),
        lambda: backend.asarray([torch.tensor(1j), 2.0]),  # read back to the host: numpy would drop it
    ]
    for make in makers:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # and no ComplexWarning on the way
            with pytest.raises(TypeError, match=complex_refusal):
                make()
    assert x.grad is None
    assert Tensor([np.float64(1.5), 2]).numpy().tolist() == [1.5, 2.0]  # real numpy scalars pass


def test_subtracting_a_torch_mask_is_advised_in_torch_calls(backend):
    """The refusal of `x - mask` for a torch bool mask advised np.logical_not(mask) and
    mask.astype('float32'), numpy's calls, which fail on a torch tensor: torch's now, which work."""
    mask, x = torch.tensor([True, False]), Tensor([1.0, 2.0])
    for subtract in (lambda: x - mask, lambda: mask - x):
        with pytest.raises(TypeError, match=r"torch.Tensor of bools: .* To invert a mask, use ~mask "
                                            r"\(torch.logical_not\(mask\)\); .*"
                                            r"\(mask.float\(\), or 1.0 for True\)$"):
            subtract()
    assert (x - mask.float()).numpy().tolist() == [0.0, 2.0]  # the advice works
    assert (x - (~mask).float()).numpy().tolist() == [1.0, 1.0]
    with pytest.raises(TypeError, match=r"np.logical_not\(mask\).*mask.astype\('float32'\)"):
        x - np.array([True, False])  # a numpy mask's advice is numpy's, as before


def test_asarray_refuses_other_dtypes_clearly(backend):
    """float64 (in any spelling) points to the numpy backend, which has it; float16 did too, though
    numpy refuses it as well."""
    for float64 in ("float64", "double", torch.float64):
        with pytest.raises(TypeError, match=r"float32 arrays only.*; the numpy backend computes in float64"):
            backend.asarray([1.0, 2.0], dtype=float64)
    with pytest.raises(TypeError, match=r"float32 arrays only .*got dtype='float16'$"):
        backend.asarray([1.0, 2.0], dtype="float16")


def test_to_numpy_returns_a_copy(backend):
    a = backend.ones((3,))
    n = backend.to_numpy(a)
    n[0] = 7.0
    assert backend.to_numpy(a).tolist() == [1.0, 1.0, 1.0]
    assert n.dtype == np.float32


def test_constructors(backend):
    assert backend.to_numpy(backend.zeros((2, 3))).tolist() == [[0.0] * 3] * 2
    assert backend.to_numpy(backend.ones((2,))).tolist() == [1.0, 1.0]
    assert backend.to_numpy(backend.full((2, 2), -1.5)).tolist() == [[-1.5, -1.5]] * 2
    assert tuple(backend.zeros(()).shape) == ()


def test_constructors_take_an_int_shape_as_numpy_does(backend):
    """`zeros(3)` (ones, full, randn too) raised "'int' object is not iterable", where the numpy
    backend, as numpy, makes a (3,) array of it."""
    assert backend.to_numpy(backend.zeros(3)).tolist() == [0.0] * 3
    assert backend.to_numpy(backend.ones(np.int64(2))).tolist() == [1.0, 1.0]
    assert backend.to_numpy(backend.full(2, -1.5)).tolist() == [-1.5, -1.5]
    assert tuple(backend.zeros(0).shape) == (0,)
    drawn = backend.to_numpy(backend.randn(5, seed=3))
    assert np.array_equal(drawn, backend.to_numpy(backend.randn((5,), seed=3)))


def test_randn_is_seeded_and_standard_normal(backend):
    a = backend.to_numpy(backend.randn((100, 100), seed=3))
    assert np.array_equal(a, backend.to_numpy(backend.randn((100, 100), seed=3)))
    assert not np.array_equal(a, backend.to_numpy(backend.randn((100, 100), seed=4)))
    assert abs(a.mean()) < 0.05 and abs(a.std() - 1.0) < 0.05
    assert not np.array_equal(backend.to_numpy(backend.randn((8,))), backend.to_numpy(backend.randn((8,))))


@pytest.mark.parametrize("name", ["add", "sub", "mul", "div"])
def test_arithmetic_helpers_broadcast_and_take_scalars(backend, name):
    ref = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide}[name]
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 4)).astype(np.float32)
    b = rng.standard_normal((4,)).astype(np.float32) + 3.0
    f = getattr(backend, name)
    for x, y in ((a, b), (a, 2.5), (2.5, b)):
        xa = backend.asarray(x) if isinstance(x, np.ndarray) else x
        ya = backend.asarray(y) if isinstance(y, np.ndarray) else y
        np.testing.assert_allclose(backend.to_numpy(f(xa, ya)), ref(x, y), rtol=1e-6, atol=1e-6)


def test_sqrt(backend):
    assert backend.to_numpy(backend.sqrt(backend.asarray([4.0, 9.0]))).tolist() == [2.0, 3.0]


def test_helpers_reject_incompatible_shapes(backend):
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4,\)"):
        backend.add(backend.ones((2, 3)), backend.ones((4,)))


# ---- fused optimizer updates against torch.optim -------------------------------------------
OPTIMIZERS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
    ("Adam", dict(lr=0.01, weight_decay=0.1)),
    ("AdamW", dict(lr=0.01)),
]


@pytest.mark.parametrize(("name", "kwargs"), OPTIMIZERS)
def test_fused_optimizer_steps_match_torch(backend, name, kwargs):
    rng = np.random.default_rng(1)
    p0 = rng.standard_normal((5, 3)).astype(np.float32)
    grads = [rng.standard_normal((5, 3)).astype(np.float32) for _ in range(3)]
    p = Tensor(p0)
    opt = getattr(topgrad.optim, name)([p], **kwargs)
    pt = torch.tensor(p0, requires_grad=True)
    opt_t = getattr(torch.optim, name)([pt], **kwargs)
    for g in grads:
        opt.zero_grad()
        p.grad = backend.asarray(g)
        opt.step()
        opt_t.zero_grad()
        pt.grad = torch.tensor(g)
        opt_t.step()
    np.testing.assert_allclose(p.numpy(), pt.detach().numpy(), rtol=1e-5, atol=1e-6)


# ---- matmul precision -----------------------------------------------------------------------
def test_precision_defaults_to_exact_fp32_and_tf32_is_opt_in(monkeypatch):
    monkeypatch.setattr("topgrad_triton.precision._precision", None)
    monkeypatch.delenv("TOPGRAD_TRITON_TF32", raising=False)
    assert topgrad_triton.get_precision() == "ieee"
    monkeypatch.setenv("TOPGRAD_TRITON_TF32", "1")
    assert topgrad_triton.get_precision() == "tf32"
    topgrad_triton.set_precision("ieee")  # an explicit choice wins over the variable
    assert topgrad_triton.get_precision() == "ieee"
    topgrad_triton.set_precision("tf32")
    assert topgrad_triton.get_precision() == "tf32"
    with pytest.raises(ValueError, match="ieee"):
        topgrad_triton.set_precision("fp16")


def test_linear_runs_in_either_precision(backend, monkeypatch):
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((6, 20)).astype(np.float32), rng.standard_normal((20, 5)).astype(np.float32)
    for mode, tol in (("ieee", 1e-5), ("tf32", 5e-2)):
        monkeypatch.setattr("topgrad_triton.precision._precision", mode)
        np.testing.assert_allclose(Tensor(x).linear(Tensor(w)).numpy(), x @ w, rtol=tol, atol=tol)


# ---- the interpreter's bounds checks (tests/interpreter_bounds.py) --------------------------
def test_interpreted_kernels_may_not_touch_memory_outside_their_tensors(backend):
    """conftest wraps the interpreter so that a store a mask lets past the end of its tensor
    fails, naming the kernel, instead of writing into the test process's heap."""
    import interpreter_bounds
    import triton
    import triton.language as tl

    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("kernels are compiled: the GPU checks addresses itself")
    if not interpreter_bounds.installed:
        pytest.skip("conftest installs the checks where Triton allows (else it warns)")

    @triton.jit
    def fill_zeros(ptr, n, BLOCK: tl.constexpr):
        offsets = tl.arange(0, BLOCK)
        tl.store(ptr + offsets, tl.zeros([BLOCK], tl.float32), mask=offsets < n)

    x = torch.ones(4)
    fill_zeros[(1,)](x, 4, BLOCK=8)  # four stores, inside
    assert x.tolist() == [0.0] * 4
    with pytest.raises(Exception, match="fill_zeros: 2 of 6 stores fall outside"):  # InterpreterError
        fill_zeros[(1,)](x, 6, BLOCK=8)


# ---- GPU code paths, compiled without a GPU (nox runs it) -----------------------------------
_COMPILE_ALL = r"""
import os, sys
os.environ.pop("TRITON_INTERPRET", None)
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from topgrad_triton.kernels import conv, elementwise as ew, fill, matmul, optim, pool, reduce, softmax

FLOATS = {"a_val", "b_val", "value", "scale", "lr", "momentum", "dampening", "weight_decay", "beta1",
          "beta2", "eps", "step_size", "bias2_sqrt"}
def kind(name):
    if name.endswith("_ptr") or name in ("p_out", "buf_out", "m_out", "v_out"):
        return "*fp32"
    return "fp32" if name in FLOATS else "i32"
def build(fn, types=None, **consts):
    for wide in (False, True) if "WIDE" in fn.arg_names else (None,):  # int32 and int64 offsets
        given = consts if wide is None else {**consts, "WIDE": wide}
        sig = {n: "constexpr" if n in given else (types or {}).get(n, kind(n)) for n in fn.arg_names}
        kernel = triton.compile(ASTSource(fn, sig, given), target=GPUTarget("cuda", int(sys.argv[1]), 32))
    return kernel
BINARY = (ew.ADD, ew.SUB, ew.MUL, ew.DIV, ew.RELU_GRAD, ew.NEG_MUL, ew.TANH_GRAD, ew.SIGMOID_GRAD, ew.EQUAL,
          ew.SQRT_GRAD, ew.ABS_GRAD)
for op in range(ew.ABS_GRAD + 1):
    kernel = build(ew._elementwise_kernel, OP=op, A_MODE=2, B_MODE=1 if op in BINARY else 0, BLOCK=1024)
    if op in (ew.DIV, ew.SQRT, ew.SQRT_GRAD):  # correctly rounded, as PyTorch's; the approximations
        ptx = kernel.asm["ptx"]  # are off by 2 ulp (div.full) or flush a subnormal to 0 (sqrt.approx.ftz)
        assert "div.full" not in ptx and "sqrt.approx" not in ptx, f"elementwise op {op}: an approximation"
build(ew._elementwise_kernel, OP=0, A_MODE=0, B_MODE=2, BLOCK=1024)
build(ew._store_strided_kernel, BLOCK=1024)
build(fill._fill_kernel, BLOCK=1024)
build(fill._randn_kernel, BLOCK=1024)
for maximum in (False, True):
    build(reduce._reduce_rows_kernel, MAX=maximum, BLOCK_K=8, BLOCK_R=512)
    build(reduce._reduce_rows_kernel, MAX=maximum, BLOCK_K=1, BLOCK_R=512)
for log in (True, False):  # LogSoftmax, Softmax
    build(softmax._logsoftmax_fwd_kernel, BLOCK_M=4, BLOCK_N=1024, LOG=log)
    build(softmax._logsoftmax_bwd_kernel, BLOCK_M=256, BLOCK_N=16, LOG=log)
for prec in ("ieee", "tf32"):
    build(matmul._matmul_kernel, HAS_BIAS=True, PRECISION=prec, BLOCK_M=64, BLOCK_N=64, BLOCK_K=32, GROUP_M=8)
build(matmul._matmul_kernel, HAS_BIAS=False, PRECISION="ieee", BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, GROUP_M=8)
build(conv._im2col_kernel, BLOCK_M=64, BLOCK_K=64)
build(conv._col2im_kernel, BLOCK=256)
for tap in ("*i8", "*i32"):
    build(pool._maxpool_kernel, types={"tap_ptr": tap}, BLOCK=256)
    build(pool._maxpool_grad_kernel, types={"tap_ptr": tap}, BLOCK=256)
for has_buf in (False, True):
    for nesterov in (False, True):
        build(optim._sgd_kernel, HAS_BUF=has_buf, MOMENTUM=True, NESTEROV=nesterov, BLOCK=1024)
build(optim._sgd_kernel, HAS_BUF=False, MOMENTUM=False, NESTEROV=False, BLOCK=1024)
for decoupled in (False, True):
    build(optim._adam_kernel, DECOUPLED=decoupled, BLOCK=1024)
"""


@pytest.mark.skipif(not os.environ.get("TOPGRAD_TRITON_COMPILE_CHECK"),
                    reason="set TOPGRAD_TRITON_COMPILE_CHECK=90 (an sm arch; nox's triton session does)")
def test_kernels_compile_for_gpu_without_one(tmp_path):
    """Compile every elementwise, reduce, softmax, matmul, conv, pool, fill and optimizer kernel variant
    for a CUDA target (codegen and ptxas, no GPU needed): what the interpreter lets through."""
    compile_for_cuda(_COMPILE_ALL, tmp_path)


@pytest.mark.parametrize(("op", "call"), [
    ("Linear", lambda x, a: x.linear(a)),
    ("Linear", lambda x, a: x.linear(Tensor.ones(3, 2), a[:2])),
    ("Conv2d", lambda x, a: x.reshape(1, 1, 3, 3).conv2d(a.reshape(1, 1, 3, 3))),
    ("Conv2d", lambda x, a: x.reshape(1, 1, 3, 3).conv2d(Tensor.ones(1, 1, 3, 1), a[:1])),
    ("LayerNorm", lambda x, a: x.layernorm(a[:3], Tensor.zeros(3))),
    ("BatchNorm", lambda x, a: x.batchnorm(Tensor.ones(3), a[:3])),
    ("Attention", lambda x, a: topgrad.attention(x.reshape(1, 3, 3), a.reshape(1, 3, 3), x.reshape(1, 3, 3))),
])
def test_a_raw_array_operand_is_one_clear_type_error(backend, op: str, call) -> None:
    """Every op refuses an operand that is a raw numpy array by name, before a kernel sees it
    (Conv2d failed on `.is_contiguous`, the norms inside the interpreter)."""
    x = Tensor(np.arange(9, dtype=np.float32).reshape(3, 3))
    with pytest.raises(TypeError, match=rf"{op}: \w+ must be a Tensor, got ndarray: wrap an array"):
        call(x, np.ones((3, 3), np.float32))


def test_a_numpy_array_operand_hints_at_a_tensor_of_another_backend(backend):
    """Tensors keep the arrays of the backend they were made under; after set_backend an old one
    reaches the triton ops as a numpy array, and the error says what probably happened."""
    from topgrad_triton.ops.elementwise import Add

    with pytest.raises(TypeError, match="another backend"):
        Add().forward(np.ones(3, np.float32), 1.0)


@pytest.mark.parametrize(("op", "call"), [
    ("ReLU", lambda t: t.relu()), ("Sum", lambda t: t.sum()), ("Mean", lambda t: t.mean(axis=0)),
    ("LogSoftmax", lambda t: t.logsoftmax()), ("Reshape", lambda t: t.reshape(9)),
    ("Permute", lambda t: t.permute(1, 0)), ("Slice", lambda t: t[1:]),
])
def test_a_tensor_of_another_backend_is_named_by_every_one_operand_op(backend, op: str, call) -> None:
    """A Tensor made under numpy (its data a numpy array) reaching a one-operand op: the op and
    the likely cause, not 'only 0-dimensional arrays can be converted to Python scalars'. The
    engine names the Tensor's backend where numpy's is loaded (the op's own error is the cause)."""
    old = Tensor._from_array(np.ones((3, 3), np.float32), None)
    with pytest.raises(TypeError) as info:
        call(old)
    errors = [str(info.value), str(info.value.__cause__)]
    pattern = rf"{op}: x must be a Tensor, got ndarray.*another backend"
    assert any(re.match(pattern, e) for e in errors), errors
    topgrad.load_backend("numpy")
    with pytest.raises(TypeError, match=rf"{op}: operand 0 belongs to backend 'numpy'"):
        call(old)


def test_backward_of_a_graph_made_under_numpy_names_it(backend) -> None:
    """A loss computed under numpy, backward called after set_backend("triton"): one clear error,
    not 'only 0-dimensional arrays can be converted to Python scalars'."""
    topgrad.set_backend("numpy")
    loss = (Tensor(np.ones((2, 3), np.float32)) @ Tensor(np.ones((3, 4), np.float32))).relu().sum()
    topgrad.set_backend("triton")
    with pytest.raises(TypeError, match="backward: the tensor belongs to backend 'numpy'"):
        loss.backward()


def test_tensors_of_both_backends_read_out_side_by_side(backend) -> None:
    """numpy() asks the backend a Tensor belongs to: a float64 numpy Tensor read after
    set_backend("triton") keeps its dtype and values (triton's to_numpy would make float32)."""
    topgrad.set_backend("numpy")
    values = np.array([1.0 + 1e-12, 2.0, 3.0])
    old = Tensor(values, dtype="float64")
    topgrad.set_backend("triton")
    new = Tensor(values)
    np.testing.assert_array_equal(old.numpy(), values)
    assert old.numpy().dtype == np.float64
    np.testing.assert_array_equal(new.numpy(), values.astype(np.float32))


def test_an_optimizer_state_saved_under_numpy_resumes_under_triton(backend) -> None:
    """state_dict() holds numpy arrays: Adam's state after two steps on numpy, loaded by an Adam
    over triton Tensors of the same values, gives the third step numpy gives."""
    from topgrad.optim import Adam

    grads = [np.random.default_rng(s).standard_normal((3, 2)).astype(np.float32) for s in range(3)]
    topgrad.set_backend("numpy")
    w = Tensor(np.ones((3, 2), np.float32))
    opt = Adam([w], lr=0.1)
    for g in grads[:2]:
        w.grad = g.copy()
        opt.step()
    saved = opt.state_dict()
    topgrad.set_backend("triton")
    w2 = Tensor(w.numpy())
    opt2 = Adam([w2])
    opt2.load_state_dict(saved)
    w2.grad = Tensor(grads[2]).data
    opt2.step()
    topgrad.set_backend("numpy")
    w.grad = grads[2].copy()
    opt.step()
    np.testing.assert_allclose(w2.numpy(), w.numpy(), rtol=1e-6, atol=1e-7)
    assert opt2.state_dict()["state"][0]["step"] == 3


# ---- operands the numpy backend and PyTorch take --------------------------------------------
def _grad_of(t):
    return t.grad.detach().cpu().numpy() if isinstance(t.grad, torch.Tensor) else np.asarray(t.grad)


@pytest.mark.parametrize("scalar", [np.float32(2.5), np.int64(2), np.float64(-1.5)])
def test_elementwise_ops_take_numpy_scalars_as_pytorch_does(backend, scalar):
    a = np.random.default_rng(3).standard_normal((2, 3)).astype(np.float32)
    x, xt = Tensor(a), torch.tensor(a, requires_grad=True)
    y = x * scalar + x / scalar - scalar + np.int64(1)
    yt = xt * scalar + xt / scalar - scalar + np.int64(1)
    y.sum().backward()
    yt.sum().backward()
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(_grad_of(x), xt.grad.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(padding="full"), r"Conv2d: padding must be an int >= 0, an \(h, w\) pair of them, 'valid' or "),
    (dict(stride=(2, 1, 1)), r"Conv2d: stride must be an int >= 1 or an \(h, w\) pair"),
    (dict(padding=("same", "same")), r"Conv2d: padding must be an int >= 0"),
    (dict(stride=0), r"Conv2d: stride must be an int >= 1"),
    (dict(padding=1.5), r"Conv2d: padding must be an int"),
])
def test_conv2d_refuses_padding_and_stride_it_cannot_take_by_name(backend, kwargs, match):
    x, w = Tensor.randn(1, 4, 4, 2, seed=0), Tensor.randn(3, 3, 2, 2, seed=1)
    with pytest.raises(ValueError, match=match):
        x.conv2d(w, **kwargs)


def test_batchnorm_updates_numpy_running_stats_in_place_as_the_numpy_backend_does(backend):
    rng = np.random.default_rng(4)
    a = rng.standard_normal((5, 3)).astype(np.float32)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    rmt, rvt = torch.zeros(3), torch.ones(3)
    y = Tensor(a).batchnorm(None, None, running_mean=rm, running_var=rv, momentum=0.2)
    yt = torch.nn.functional.batch_norm(torch.tensor(a), rmt, rvt, training=True, momentum=0.2)
    np.testing.assert_allclose(y.numpy(), yt.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rm, rmt.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rv, rvt.numpy(), rtol=1e-5, atol=1e-6)
    rv.flags.writeable = False  # eval mode only reads them
    y = Tensor(a).batchnorm(None, None, running_mean=rm, running_var=rv, training=False)
    yt = torch.nn.functional.batch_norm(torch.tensor(a), rmt, rvt, training=False)
    np.testing.assert_allclose(y.numpy(), yt.numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(TypeError, match=r"BatchNorm: a numpy running_var must be a C-contiguous float32"):
        Tensor(a).batchnorm(None, None, running_mean=rm, running_var=np.ones(3))


def test_batchnorm_reads_a_strided_numpy_running_stat_in_eval_mode(backend):
    """Eval mode only reads the statistics: a strided numpy one was refused as "not C-contiguous",
    though the numpy backend, PyTorch and a strided torch one here are all taken."""
    rng = np.random.default_rng(5)
    a = rng.standard_normal((4, 5)).astype(np.float32)
    rm, rv = rng.standard_normal(10).astype(np.float32)[::2], rng.uniform(0.5, 2, 10).astype(np.float32)[::2]
    y = Tensor(a).batchnorm(None, None, running_mean=rm, running_var=rv, training=False)
    yt = torch.nn.functional.batch_norm(torch.tensor(a), torch.tensor(rm), torch.tensor(rv), training=False)
    np.testing.assert_allclose(y.numpy(), yt.numpy(), rtol=1e-5, atol=1e-5)


def test_attention_refuses_a_numpy_operand_asking_for_a_tensor(backend):
    from topgrad_triton.ops.attention import Attention

    k = Tensor.randn(1, 2, 4, seed=0).data
    with pytest.raises(TypeError, match=r"Attention: q must be a Tensor, got ndarray"):
        Attention().forward(np.zeros((1, 2, 4), np.float32), k, k)


def test_more_strided_dimensions_than_the_kernels_take_are_split(backend) -> None:
    """The elementwise kernel reads strided operands through six dimensions; a seventh that does
    not merge was a ValueError (PyTorch and numpy compute): it is now a launch per index of the
    first axis. A broadcast product, reductions over every other axis (copied through the kernel
    first), a slice cutting every axis and its gradient's strided write."""
    from topgrad_triton.kernels.elementwise import copy_into

    r = np.random.default_rng(0)
    a, b = r.standard_normal((2, 1, 2, 1, 2, 1, 2)), r.standard_normal((1, 2, 1, 2, 1, 2, 1))
    np.testing.assert_allclose((Tensor(a) * Tensor(b)).numpy(), (a * b).astype(np.float32), rtol=1e-6)
    c = r.standard_normal((2,) * 7).astype(np.float32)
    for reduce, reference in (("sum", np.sum), ("mean", np.mean), ("max", np.max)):
        got = getattr(Tensor(c), reduce)(axis=(0, 2, 4, 6)).numpy()
        np.testing.assert_allclose(got, reference(c, axis=(0, 2, 4, 6)), rtol=1e-5, atol=1e-6)
    x = Tensor(np.ones((3,) * 7, np.float32))
    y = x[(slice(0, 2),) * 7]
    y.sum().backward()
    assert y.shape == (2,) * 7 and float(x.grad.sum()) == 2**7
    with pytest.raises(ValueError, match=r"Concat: cannot write an array of shape \(2,\) into a view of"):
        copy_into(x.grad[0, 0, 0, 0, 0, 0], Tensor(np.ones(2, np.float32)).data, "Concat")


def test_none_as_a_required_operand_is_refused_by_name(backend) -> None:
    """Ops applied directly (as a backend author does) name a missing operand; a bias may be None."""
    from topgrad_triton.ops.attention import Attention
    from topgrad_triton.ops.conv import Conv2d
    from topgrad_triton.ops.linear import Linear
    from topgrad_triton.ops.norm import LayerNorm

    x = Tensor.randn(1, 3, 3, 2, seed=0).data
    for call, match in ((lambda: Attention().forward(x[0], None, x[0]), "Attention: k must be a Tensor"),
                        (lambda: Linear().forward(x, None), "Linear: w must be a Tensor"),
                        (lambda: Conv2d().forward(None, x), "Conv2d: x must be a Tensor"),
                        (lambda: LayerNorm().forward(None, None, None), "LayerNorm: x must be a Tensor")):
        with pytest.raises(TypeError, match=f"{match}, got None"):
            call()
    assert tuple(Linear().forward(x, Tensor.ones(2, 4).data, None).shape) == (1, 3, 3, 4)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.int64])
def test_linear_casts_a_raw_torch_weight_of_another_dtype(backend, dtype) -> None:
    """As the other ops cast raw torch operands to float32; Linear's kernel failed instead
    ('Both operands must be same dtype', a 49-line interpreter traceback)."""
    x = Tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
    w = torch.arange(6).reshape(3, 2).to(dtype)
    y = x @ w
    np.testing.assert_allclose(y.numpy(), np.arange(6).reshape(2, 3) @ np.arange(6).reshape(3, 2))
    y.sum().backward()
    np.testing.assert_allclose(backend.to_numpy(x.grad), np.tile(np.arange(6).reshape(3, 2).sum(1), (2, 1)))


def test_arrays_deeper_than_the_kernels_index_are_split(backend) -> None:
    """Seven dimensions that do not merge were a ValueError on triton ("at most 6 dimensions",
    naming an internal permuted view's shape), where numpy and PyTorch compute: a sum over every
    other axis, a full reversal of the axes, a broadcast product, and their gradients."""
    r = np.random.default_rng(0)
    a = r.standard_normal((2, 3, 2, 3, 2, 3, 2)).astype(np.float32)
    b = r.standard_normal((3, 1, 3, 1, 3, 1)).astype(np.float32)
    x, y = Tensor(a), Tensor(b)
    total = x.sum(axis=(0, 2, 4, 6)).sum() + (x.permute(6, 5, 4, 3, 2, 1, 0) ** 2).sum() + (x * y).sum()
    total.backward()
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    ref = ta.sum(dim=(0, 2, 4, 6)).sum() + (ta.permute(6, 5, 4, 3, 2, 1, 0) ** 2).sum() + (ta * tb).sum()
    ref.backward()
    np.testing.assert_allclose(total.item(), ref.item(), rtol=1e-5)
    np.testing.assert_allclose(_grad_of(x), ta.grad.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_grad_of(y), tb.grad.numpy(), rtol=1e-5, atol=1e-5)
