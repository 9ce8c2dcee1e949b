"""Triton BatchNorm, LayerNorm and Attention ops against PyTorch (forward, gradients, running stats).

The ops are called directly (forward on torch tensors, then backward), so no backend needs
selecting. Without a GPU the kernels run in Triton's interpreter, which must be switched on
before any Triton kernel is defined: conftest switches it on (and its bounds checks).
"""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

import topgrad  # noqa: E402
import torch.nn.functional as F  # noqa: E402, N812
from helpers import compile_for_cuda  # noqa: E402
from topgrad import Tensor  # noqa: E402
from topgrad_triton import runtime  # noqa: E402
from topgrad_triton.kernels import attention as attention_kernels  # noqa: E402
from topgrad_triton.kernels import norm as norm_kernels  # noqa: E402
from topgrad_triton.ops.attention import Attention  # noqa: E402
from topgrad_triton.ops.norm import BatchNorm, LayerNorm  # noqa: E402

TOL = {"rtol": 1e-4, "atol": 1e-4}
DEV = runtime.device()

torch.set_num_threads(1)


def randn(*shape: int, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
    return (torch.randn(*shape) * scale + shift).to(DEV)


def close(got: torch.Tensor, want: torch.Tensor) -> None:
    assert tuple(got.shape) == tuple(want.shape)
    torch.testing.assert_close(got, want.detach(), **TOL)


def leaves(*xs: torch.Tensor | None) -> list[torch.Tensor | None]:
    return [None if x is None else x.clone().requires_grad_() for x in xs]


def stat(x: torch.Tensor) -> Tensor:
    """A topgrad Tensor wrapping a torch array, as the backend's running statistics are."""
    return Tensor._from_array(x.clone(), None)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _triton_loaded() -> None:
    """The ops here run outside the registry, but a BatchNorm writes its running statistics
    through `Tensor.data`, which finds their backend among the loaded ones: load it, or the test
    fails wherever no earlier test in its process has (alone, or on an xdist worker)."""
    topgrad.load_backend("triton")


@pytest.fixture(params=["plan", "gpu-plan"])
def plan(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run with the interpreter's block sizes and again with the GPU's (smaller blocks, more chunks)."""
    if request.param == "gpu-plan":
        monkeypatch.setattr(norm_kernels, "interpreting", lambda: False)
        monkeypatch.setattr(attention_kernels, "interpreting", lambda: False)
    return request.param


# ------------------------------------------------------------------------------ LayerNorm


@pytest.mark.parametrize("shape", [(3, 5), (2, 7, 33), (150, 64)])
def test_layernorm_matches_torch(shape: tuple[int, ...], plan: str) -> None:
    x, g, b, dy = randn(*shape, scale=3, shift=1), randn(shape[-1]), randn(shape[-1]), randn(*shape)
    op = LayerNorm()
    y = op.forward(x, g, b, eps=1e-5)
    dx, dg, db = op.backward(dy)
    xr, gr, br = leaves(x, g, b)
    yr = F.layer_norm(xr, (shape[-1],), gr, br, 1e-5)
    yr.backward(dy)
    for got, want in [(y, yr), (dx, xr.grad), (dg, gr.grad), (db, br.grad)]:
        close(got, want)


def test_layernorm_without_affine_and_strided_inputs() -> None:
    x = randn(4, 6, 9).permute(1, 0, 2)  # not viewable as (rows, 9): copied by a Triton kernel
    dy = randn(9, 6).t()  # a strided 2-D gradient, read in place
    x2 = randn(9, 6).t()
    op = LayerNorm()
    y = op.forward(x2, None, None, eps=1e-3)
    (dx, dg, db) = op.backward(dy)
    xr = x2.clone().requires_grad_()
    yr = F.layer_norm(xr, (9,), None, None, 1e-3)
    yr.backward(dy)
    close(y, yr)
    close(dx, xr.grad)
    assert dg is None and db is None
    op = LayerNorm()
    close(op.forward(x, None, None), F.layer_norm(x, (9,)))


def test_layernorm_shape_error_names_op() -> None:
    with pytest.raises(ValueError, match="LayerNorm"):
        LayerNorm().forward(randn(2, 4), randn(5), randn(4))


# ------------------------------------------------------------------------------ BatchNorm


def _torch_bn(x, g, b, rm, rv, training, momentum, eps):
    xr, gr, br = leaves(x, g, b)
    y = F.batch_norm(xr.reshape(-1, x.shape[-1]), rm, rv, gr, br, training, momentum, eps).reshape(x.shape)
    return y, xr, gr, br


@pytest.mark.parametrize("shape", [(3, 5), (2, 3, 4, 6), (150, 64), (1000, 3)])
def test_batchnorm_training_matches_torch(shape: tuple[int, ...], plan: str) -> None:
    C = shape[-1]
    x, g, b, dy = randn(*shape, scale=2, shift=3), randn(C), randn(C), randn(*shape)
    rm0, rv0 = randn(C), randn(C).abs() + 0.5
    rm, rv = stat(rm0), stat(rv0)
    op = BatchNorm()
    y = op.forward(x, g, b, running_mean=rm, running_var=rv, training=True, momentum=0.3, eps=1e-5)
    dx, dg, db = op.backward(dy)
    rm_t, rv_t = rm0.clone(), rv0.clone()
    yr, xr, gr, br = _torch_bn(x, g, b, rm_t, rv_t, True, 0.3, 1e-5)
    yr.backward(dy)
    for got, want in [(y, yr), (dx, xr.grad), (dg, gr.grad), (db, br.grad), (rm.data, rm_t), (rv.data, rv_t)]:
        close(got, want)


@pytest.mark.parametrize("shape", [(3, 5), (2, 5, 7)])
def test_batchnorm_eval_uses_running_stats(shape: tuple[int, ...]) -> None:
    C = shape[-1]
    x, g, b, dy = randn(*shape), randn(C), randn(C), randn(*shape)
    rm0, rv0 = randn(C), randn(C).abs() + 0.5
    rm, rv = stat(rm0), stat(rv0)
    before = rm.data
    op = BatchNorm()
    y = op.forward(x, g, b, running_mean=rm, running_var=rv, training=False, eps=1e-3)
    dx, dg, db = op.backward(dy)
    yr, xr, gr, br = _torch_bn(x, g, b, rm0.clone(), rv0.clone(), False, 0.1, 1e-3)
    yr.backward(dy)
    for got, want in [(y, yr), (dx, xr.grad), (dg, gr.grad), (db, br.grad), (rm.data, rm0), (rv.data, rv0)]:
        close(got, want)
    assert rm.data is before  # eval mode leaves the running statistics alone


def test_batchnorm_without_running_stats_or_affine() -> None:
    x, dy = randn(7, 3, 5), randn(7, 3, 5)
    op = BatchNorm()
    y = op.forward(x, None, None, training=True)
    dx, dg, db = op.backward(dy)
    yr, xr, _, _ = _torch_bn(x, None, None, None, None, True, 0.1, 1e-5)
    yr.backward(dy)
    close(y, yr)
    close(dx, xr.grad)
    assert dg is None and db is None


def test_batchnorm_raw_array_stats_update_in_place() -> None:
    x = randn(6, 4)
    rm, rv = torch.zeros(4, device=DEV), torch.ones(4, device=DEV)
    rm_t, rv_t = rm.clone(), rv.clone()
    BatchNorm().forward(x, None, None, running_mean=rm, running_var=rv, momentum=0.1)
    F.batch_norm(x, rm_t, rv_t, None, None, True, 0.1, 1e-5)
    close(rm, rm_t)
    close(rv, rv_t)


@pytest.mark.parametrize("dtype", [torch.int64, torch.float64, torch.float16])
def test_norms_compute_in_float32_whatever_the_inputs_dtype(dtype: torch.dtype) -> None:
    """The kernels allocated their results in x's dtype: integer rows came back truncated
    ([-1, 0, 0, 1] for 0..3) and BatchNorm all zeros, float64 and float16 leaked out. Every other
    op returns float32; the norms now read such x as a float32 copy."""
    x = (torch.arange(24, device=DEV) % 5).reshape(6, 4).to(dtype)
    for y, want in ((LayerNorm().forward(x, None, None), F.layer_norm(x.float(), (4,))),
                    (BatchNorm().forward(x, None, None), F.batch_norm(x.float(), None, None, training=True))):
        assert y.dtype == torch.float32
        close(y, want)


def test_norms_read_strided_raw_parameters_and_refuse_strided_statistics() -> None:
    """The kernels index features as offsets: a raw strided gamma (t[::2]) was read as its
    neighbours' values, and a strided running mean was updated outside its view; gamma and beta
    are now made dense, and raw statistics that training would update in place must be dense
    float32 (in eval mode they are only read, so any layout does)."""
    x = randn(5, 3)
    gamma, beta = randn(6)[::2], randn(6)[::2]
    close(LayerNorm().forward(x, gamma, beta), F.layer_norm(x, (3,), gamma, beta))
    close(BatchNorm().forward(x, gamma, beta), F.batch_norm(x, None, None, gamma, beta, True))
    base = torch.zeros(3, 2, device=DEV)
    with pytest.raises(TypeError, match=r"raw torch running_mean is updated in place .* strided"):
        BatchNorm().forward(x, None, None, running_mean=base[:, 0], running_var=torch.ones(3, device=DEV))
    assert not base.any(), "nothing was written"
    with pytest.raises(TypeError, match=r"running_var .*torch.int64"):
        BatchNorm().forward(x, None, None, running_mean=torch.zeros(3, device=DEV),
                            running_var=torch.ones(3, dtype=torch.int64, device=DEV))
    stats = torch.randn(3, 2, device=DEV).abs() + 0.5
    mean, var = stats[:, 0], stats[:, 1]  # strided views
    close(BatchNorm().forward(x, None, None, running_mean=mean, running_var=var, training=False),
          F.batch_norm(x, mean, var, None, None, False))


def test_batchnorm_single_value_per_channel_and_bad_shapes() -> None:
    with pytest.raises(ValueError, match="more than 1 value"):
        BatchNorm().forward(randn(1, 4), randn(4), randn(4))
    with pytest.raises(ValueError, match="BatchNorm"):
        BatchNorm().forward(randn(3, 4), randn(3), randn(4))


# ------------------------------------------------------------------------------ Attention


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    "B,T,S,D", [(2, 7, 7, 5), (1, 70, 70, 16), (3, 5, 5, 128), (2, 9, 40, 8), (1, 40, 9, 3)]
)
def test_attention_matches_torch(B: int, T: int, S: int, D: int, causal: bool, plan: str) -> None:
    q, k, v, do = randn(B, T, D, scale=2), randn(B, S, D, scale=2), randn(B, S, D), randn(B, T, D)
    op = Attention()
    o = op.forward(q, k, v, causal=causal)
    dq, dk, dv = op.backward(do)
    qr, kr, vr = leaves(q, k, v)
    orf = F.scaled_dot_product_attention(qr, kr, vr, is_causal=causal)
    orf.backward(do)
    for got, want in [(o, orf), (dq, qr.grad), (dk, kr.grad), (dv, vr.grad)]:
        close(got, want)


def test_attention_strided_inputs_and_large_logits() -> None:
    base = randn(3, 6, 2, 8, scale=30)  # big scores: the online softmax must stay finite
    q, k, v = base[0].transpose(0, 1), base[1].transpose(0, 1), base[2].transpose(0, 1)  # (2, 6, 8) views
    do = randn(8, 6, 2).permute(2, 1, 0)
    op = Attention()
    o = op.forward(q, k, v, causal=True)
    grads = op.backward(do)
    qr, kr, vr = leaves(q, k, v)
    orf = F.scaled_dot_product_attention(qr, kr, vr, is_causal=True)
    orf.backward(do)
    close(o, orf)
    for got, want in zip(grads, (qr.grad, kr.grad, vr.grad)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-3)  # |grad| ~ 30: same relative tolerance


def test_attention_casts_raw_operands_of_another_dtype() -> None:
    """A raw float64 or int torch v failed inside the kernel (the interpreter's 'Both operands
    must be same dtype'); it is cast, as Linear casts its weight."""
    q, k = randn(1, 3, 4), randn(1, 5, 4)
    for v in (torch.randn(1, 5, 2, dtype=torch.float64, device=DEV),
              torch.arange(10, device=DEV).view(1, 5, 2)):
        close(Attention().forward(q, k, v), F.scaled_dot_product_attention(q, k, v.float()))


def test_attention_shape_error_names_op() -> None:
    with pytest.raises(ValueError, match="Attention"):
        Attention().forward(randn(2, 4, 8), randn(2, 4, 7), randn(2, 4, 7))


def test_layernorm_over_rows_longer_than_a_triton_block_is_refused_naming_the_limit() -> None:
    """A row of 2**21 features failed inside Triton ("numel (2097152) exceeds triton maximum tensor
    numel"), blaming no op: LayerNorm keeps a row in one block. Refused before any kernel."""
    n = 2**20 + 1
    with pytest.raises(ValueError, match=r"^LayerNorm: the triton backend normalizes rows of at most 1048576 "
                                         r"features .*this one has 1048577\. Use the numpy backend"):
        LayerNorm().forward(randn(2, n), randn(n), randn(n))


@pytest.mark.parametrize(("d", "dv"), [(513, 8), (8, 600)])
def test_attention_wider_than_the_kernels_take_is_refused_naming_the_limit(d: int, dv: int) -> None:
    """Rows of more than 512 features need more GPU shared memory than an H100 has (the kernels
    hold whole rows): the launch failed with Triton's OutOfResources, on a GPU only. Refused in
    the interpreter too, before any kernel, with the way round."""
    with pytest.raises(ValueError, match=rf"Attention: the triton backend takes rows of at most 512 "
                                         rf"features .*q and k have {d}, v {dv}\. The op is single-head"):
        Attention().forward(randn(1, 2, d), randn(1, 3, d), randn(1, 3, dv))


def test_ops_are_guarded() -> None:
    for cls in (BatchNorm, LayerNorm, Attention):
        assert getattr(cls.forward, "_guarded", False) and getattr(cls.backward, "_guarded", False)


# ------------------------------------------------------------------ GPU compile check (nox runs it)

_COMPILE_ALL = r"""
import os, sys
os.environ.pop("TRITON_INTERPRET", None)
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from topgrad_triton.kernels import attention as A, norm as N

INTS = {"M", "N", "C", "R", "T", "S", "D", "DV", "CHUNK"}
def kind(name):
    if name in ("eps", "momentum", "scale"):
        return "fp32"
    return "*fp32" if name.isupper() and name not in INTS else "i32"
def build(fn, options=None, **consts):
    for wide in (False, True) if "WIDE" in fn.arg_names else (None,):  # int32 and int64 offsets
        given = consts if wide is None else {**consts, "WIDE": wide}
        sig = {n: "constexpr" if n in given else kind(n) for n in fn.arg_names}
        kernel = triton.compile(ASTSource(fn, sig, given), target=GPUTarget("cuda", int(sys.argv[1]), 32),
                                options=options)
    return kernel
def exact_sqrt(kernel, name):  # sqrt.approx.ftz flushes a subnormal var + eps to 0: NaN for a constant row
    assert "sqrt.approx" not in kernel.asm["ptx"], f"{name}: an approximate square root"
flags = dict(BLOCK_M=64, BLOCK_C=32)
exact_sqrt(build(N.ln_fwd_kernel, HAS_W=True, HAS_B=False, B=None, BLOCK_M=4, BLOCK_N=1024), "ln_fwd")
build(N.ln_bwd_kernel, HAS_W=True, BLOCK_M=4, BLOCK_N=1024)
build(N.sum_rows_kernel, BLOCK_R=16, BLOCK_C=128)
build(N.bn_partial_stats_kernel, **flags)
exact_sqrt(build(N.bn_finalize_stats_kernel, HAS_RM=True, HAS_RV=True, BLOCK_R=16, BLOCK_C=128), "bn_final")
exact_sqrt(build(N.rstd_kernel, BLOCK_C=1024), "rstd")
build(N.bn_apply_kernel, HAS_W=True, HAS_B=True, **flags)
build(N.bn_partial_grad_kernel, **flags)
build(N.bn_bwd_dx_kernel, TRAINING=True, HAS_W=True, **flags)
attn = dict(CAUSAL=True, PRECISION="ieee", BLOCK_M=64, BLOCK_N=32, BLOCK_D=128, BLOCK_DV=64)
build(A.attn_fwd_kernel, **attn)
build(A.attn_bwd_delta_kernel, **attn)
build(A.attn_bwd_dkdv_kernel, **attn)
build(A.attn_bwd_dq_kernel, **attn)
for width in (256, 512):  # the blocks the launchers pick must fit an A100's 167 KB of shared memory
    for fn, backward in ((A.attn_fwd_kernel, False), (A.attn_bwd_delta_kernel, True),
                         (A.attn_bwd_dkdv_kernel, True), (A.attn_bwd_dq_kernel, True)):
        bm, bn, launch = A._blocks(width, width, backward)
        kernel = build(fn, dict(launch), CAUSAL=False, PRECISION="ieee", BLOCK_M=bm, BLOCK_N=bn,
                       BLOCK_D=width, BLOCK_DV=width)
        assert kernel.metadata.shared <= 166912, (fn.__name__, width, kernel.metadata.shared)
"""


@pytest.mark.skipif(not os.environ.get("TOPGRAD_TRITON_COMPILE_CHECK"),
                    reason="set TOPGRAD_TRITON_COMPILE_CHECK=90 (an sm arch; nox's triton session does)")
def test_kernels_compile_for_gpu_without_one(tmp_path) -> None:
    """Compile every kernel for a CUDA target (codegen + ptxas, no GPU needed): catches what
    the interpreter lets through (globals that are not constexpr, type errors in branches)."""
    compile_for_cuda(_COMPILE_ALL, tmp_path)
