"""The triton backend's `accumulate` and `zero_out` write a `.grad` in place whatever its layout.

PyTorch adds into `.grad` and zeroes it in place (AccumulateGrad's `grad += new`, zero_grad's
`grad.zero_()`), also when `.grad` is a view: `w.grad = big[:, ::2]` writes `big`. The triton
backend wrote in place only into a dense float32 `.grad`. The behaviour against torch is in
`test_grad_inplace.py` (both backends); here are the backend's own cases: views whose elements
share memory, a part sharing the total's memory, float64, another device, and the GPU compile.
"""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

import numpy as np  # noqa: E402
from helpers import compile_for_cuda, rand  # noqa: E402


@pytest.fixture
def backend(triton_backend):
    return triton_backend


def _views(big: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"strided": big[:, ::2], "transposed": big.T[::2], "offset, strided": big[1:, 1::3]}


@pytest.mark.parametrize("kind", ["strided", "transposed", "offset, strided"])
def test_accumulate_and_zero_out_write_a_strided_view_into_its_array(backend, kind: str) -> None:
    values = rand((4, 6), 0)
    big = backend.asarray(values)
    total = _views(big)[kind]
    expected_big = values.copy()
    view_of_expected = _views(torch.from_numpy(expected_big))[kind]
    part_values = rand(tuple(total.shape), 1)
    part = backend.asarray(part_values)

    assert backend.accumulate(total, part) is total
    view_of_expected += torch.from_numpy(part_values)
    np.testing.assert_array_equal(big.numpy(), expected_big)
    np.testing.assert_array_equal(part.numpy(), part_values)

    total[0, 0] = float("nan")  # zeroes, not a product with 0
    assert backend.zero_out(total) is total
    view_of_expected.fill_(0.0)
    np.testing.assert_array_equal(big.numpy(), expected_big)


def test_accumulate_reads_a_part_sharing_the_totals_memory_before_writing_it(backend) -> None:
    """w.backward(w.grad.T): the part is the total transposed. Written as it is read, a program
    would read elements another already summed (two programs under the interpreter from 2**16)."""
    values = rand((300, 300), 2)
    total = backend.asarray(values)
    assert backend.accumulate(total, total.T) is total
    np.testing.assert_allclose(total.numpy(), values + values.T, rtol=1e-6, atol=1e-6)
    strided = backend.asarray(rand((4, 8), 3))[:, ::2]
    before = strided.numpy().copy()
    assert backend.accumulate(strided, strided.T.T) is strided  # the same view: no copy needed
    np.testing.assert_array_equal(strided.numpy(), 2 * before)


def test_a_view_whose_elements_share_memory_is_zeroed_in_place_and_summed_into_a_new_array(backend) -> None:
    """An expanded `.grad`: torch zeroes it in place and refuses `grad += new` (its elements share
    memory); the backend zeroes it in place and returns the sum as a new array, leaving it alone."""
    row = backend.asarray(rand((3,), 4))
    total = row.expand(2, 3)
    part_values = rand((2, 3), 5)
    result = backend.accumulate(total, backend.asarray(part_values))
    assert result is not total and result.is_contiguous()
    np.testing.assert_allclose(result.numpy(), row.numpy() + part_values, rtol=1e-6)
    assert backend.zero_out(total) is total
    np.testing.assert_array_equal(row.numpy(), np.zeros(3, np.float32))


@pytest.mark.parametrize("strided", [False, True])
def test_zero_out_keeps_a_float64_array_and_writes_it_in_place(backend, strided: bool) -> None:
    """The backend holds float32 arrays, but a float64 torch tensor can reach `.grad` past the
    property (`w._grad = ...`): zeros are exact in float64, so it is zeroed in place, keeping its
    dtype (it became a new float32 array). A sum into it is fp32 math: a new float32 array."""
    big = torch.from_numpy(np.arange(1.0, 13.0).reshape(3, 4))
    a = big[:, ::2] if strided else big
    assert backend.zero_out(a) is a and a.dtype == torch.float64
    expected = np.arange(1.0, 13.0).reshape(3, 4)
    expected[:, ::2 if strided else 1] = 0.0
    np.testing.assert_array_equal(big.numpy(), expected)
    part = backend.asarray(np.ones(tuple(a.shape), np.float32))
    result = backend.accumulate(a, part)
    assert result is not a and result.dtype == torch.float32
    np.testing.assert_array_equal(result.numpy(), a.numpy() + 1.0)
    np.testing.assert_array_equal(big.numpy(), expected)


def test_zero_out_gives_zero_dim_and_dense_grads_back_written(backend) -> None:
    a, b = backend.asarray(np.float32(2.5)), backend.asarray(rand((5,), 6))
    assert backend.zero_out(a) is a and backend.zero_out(b) is b
    assert a.item() == 0.0 and not b.numpy().any()
    assert backend.accumulate(a, backend.asarray(np.float32(1.5))) is a
    assert a.item() == 1.5


def test_a_view_past_the_strided_stores_dimensions_gets_new_arrays(backend) -> None:
    """A 7-d strided .grad collapses to more dimensions than the strided store takes: zero_out raised
    (the store's limit) where it had given new zeros, and gives new zeros again. (accumulate reads
    such a .grad through the same six dimensions, and says so, as before.)"""
    big = torch.ones((4,) * 7, device=backend.device)
    grad = big[(slice(None, None, 2),) * 7]
    zeros = backend.zero_out(grad)
    assert zeros is not grad and not zeros.any().item() and big.all().item()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="another device than the backend's: a GPU")
def test_a_grad_on_another_device_gets_new_arrays_on_the_backends(backend) -> None:
    """A CPU `.grad` for a backend on the GPU (kernels cannot write host memory): new arrays on the
    GPU, the CPU array untouched (a kernel given it would fail on its pointer)."""
    if backend.device.type != "cuda":
        pytest.skip("the backend runs on the CPU (interpreter)")
    host = torch.ones(2, 3)
    result = backend.accumulate(host, backend.asarray(np.ones((2, 3), np.float32)))
    assert result.device == backend.device and result.cpu().tolist() == [[2.0] * 3] * 2
    zeros = backend.zero_out(host)
    assert zeros.device == backend.device and not zeros.cpu().numpy().any()
    assert host.tolist() == [[1.0] * 3] * 2


_COMPILE = r"""
import sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from topgrad_triton.kernels import elementwise as ew

def build(fn, out_type, **consts):
    def kind(n):
        if n in consts:
            return "constexpr"
        if n.endswith("_ptr"):
            return out_type if n in ("out_ptr", "dst_ptr") else "*fp32"
        return "fp32" if n in ("a_val", "b_val") else "i32"
    sig = {n: kind(n) for n in fn.arg_names}
    triton.compile(ASTSource(fn, sig, consts), target=GPUTarget("cuda", int(sys.argv[1]), 32))
for wide in (False, True):
    for out_type in ("*fp32", "*fp64"):  # zero_out's zeros; float64 .grad arrays
        build(ew._elementwise_kernel, out_type, OP=ew.COPY, A_MODE=0, B_MODE=0, BLOCK=1024, WIDE=wide)
        build(ew._store_strided_kernel, out_type, BLOCK=1024, WIDE=wide)
    build(ew._elementwise_kernel, "*fp32", OP=ew.ADD, A_MODE=2, B_MODE=1, BLOCK=1024, WIDE=wide)
    build(ew._elementwise_kernel, "*fp32", OP=ew.ADD, A_MODE=1, B_MODE=2, BLOCK=1024, WIDE=wide)
"""


@pytest.mark.skipif(not os.environ.get("TOPGRAD_TRITON_COMPILE_CHECK"),
                    reason="set TOPGRAD_TRITON_COMPILE_CHECK=90 (an sm arch; nox's triton session does)")
def test_the_kernels_writing_grads_compile_for_gpu_without_one(tmp_path) -> None:
    """accumulate's and zero_out's kernel variants (fp32 and fp64 outputs, strided stores) compile
    for a CUDA target (codegen and ptxas, no GPU needed)."""
    compile_for_cuda(_COMPILE, tmp_path)
