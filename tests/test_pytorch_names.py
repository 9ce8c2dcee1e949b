"""The hints for PyTorch method names a Tensor does not have: each names a real torch.Tensor
attribute Topgrad lacks, and the recipes that are formulas give PyTorch's values."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import pytest
import topgrad
import torch
from helpers import rand
from topgrad import Tensor
from topgrad.pytorch_names import INSTEAD


@pytest.mark.parametrize("name", sorted(INSTEAD))
def test_each_hint_is_for_a_torch_name_topgrad_lacks(name: str) -> None:
    x = Tensor(rand((2, 3), 0))
    assert name in dir(torch.Tensor)
    expected = f"no attribute '{name}': in Topgrad, PyTorch's x.{name} is "
    with pytest.raises(AttributeError, match=expected) as info:
        getattr(x, name)
    assert info.value.name == name


def test_a_name_without_hint_is_a_plain_attribute_error() -> None:
    with pytest.raises(AttributeError, match=r"^'Tensor' object has no attribute 'nonsense'$"):
        Tensor(rand((2,), 0)).nonsense  # noqa: B018
    assert not hasattr(Tensor(rand((2,), 0)), "__array_interface__")  # numpy's probes still see none


def test_the_formula_recipes_give_pytorchs_values() -> None:
    a = rand((3, 4), 1)
    x, t = Tensor(a), torch.tensor(a, dtype=torch.float64)
    centred = (x - x.mean(1, keepdims=True)) ** 2
    pairs = [(-(-x).max(1), t.amin(1)), (centred.mean(1), t.var(1, correction=0)),
             (centred.mean(1).sqrt(), t.std(1, correction=0)), (x[:, None], t.unsqueeze(1)),
             (x.permute(1, 0), t.transpose(0, 1)), (x.reshape(4, 3), t.view(4, 3))]
    for got, want in pairs:
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)


def test_the_recipes_for_norm_logsumexp_masks_chunks_and_bmm_give_pytorchs_values_and_gradients() -> None:
    """Each hint added for a common name a port meets (x.norm, x.logsumexp, x.masked_fill, x.chunk,
    torch.where, torch.bmm), written as its message says, against PyTorch: values and gradients."""
    a, b, mask = rand((3, 4), 2), rand((3, 4), 3), rand((3, 4), 4) > 0
    w3 = rand((3, 4, 2), 5)

    def top(x: Tensor, y: Tensor, w: Tensor) -> list[Tensor]:
        m = Tensor(x.numpy().max(1, keepdims=True), requires_grad=False)
        keep = Tensor(mask.astype(np.float32), requires_grad=False)
        return [(x * x).sum().sqrt(), (x * x).sum(1).sqrt(), m + (x - m).exp().sum(1, keepdims=True).log(),
                x + Tensor(np.where(mask, -np.inf, 0.0), requires_grad=False), x[..., :2], x[..., 2:],
                x * keep + y * (1.0 - keep), topgrad.stack([x[i][None] @ w[i] for i in range(len(x))])]

    def ref(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> list[torch.Tensor]:
        m = torch.tensor(mask)
        return [x.norm(), x.norm(dim=1), x.logsumexp(1, keepdim=True), x.masked_fill(m, -torch.inf),
                *x.chunk(2, dim=-1), torch.where(m, x, y), torch.bmm(x[:, None], w)]

    tops = [Tensor(v) for v in (a, b, w3)]
    refs = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (a, b, w3)]
    for got, want in zip(top(*tops), ref(*refs), strict=True):
        finite = torch.isfinite(want)
        np.testing.assert_allclose(got.numpy(), want.detach().numpy(), rtol=1e-5, atol=1e-6)
        (got * Tensor(finite.numpy().astype(np.float32), requires_grad=False)).sum().backward()
        want[finite].sum().backward()
    for t, r in zip(tops, refs, strict=True):
        np.testing.assert_allclose(t.grad, r.grad.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("call", "match"),
    [(lambda x: x.sum(dim=1), r"Tensor.sum\(\) got an unexpected .* 'dim': Topgrad writes axis="),
     (lambda x: x.mean(axis=1, keepdim=True), r"keepdims= \(not keepdim=\)"),
     (lambda x: x.max(dim=0, keepdim=True), r"axis= \(not dim=\), keepdims= \(not keepdim=\)"),
     (lambda x: x.softmax(dim=-1), r"Tensor.softmax\(\) .*axis= \(not dim=\)"),
     (lambda x: x.logsoftmax(dim=-1), r"Tensor.logsoftmax\(\) .*axis= \(not dim=\)"),
     (lambda x: x.flatten(start_dim=0), r"start= \(not start_dim=\)"),
     (lambda x: topgrad.cat([x, x], dim=1), r"^cat\(\) .*axis= \(not dim=\)"),
     (lambda x: topgrad.stack([x, x], dim=1), r"^stack\(\) .*axis= \(not dim=\)"),
     (lambda x: x.linear(Tensor(rand((3, 4), 1)), bias=None),
      r"Tensor.linear\(\) .*'bias': Topgrad writes b= \(not bias=\)"),
     (lambda x: x.linear(weight=x), r"w= \(not weight=\), shaped \(in, out\)"),
     (lambda x: x.reshape(1, 2, 3).conv2d(Tensor(rand((1, 1, 3, 2), 1)), bias=None), r"b= \(not bias=\)"),
     (lambda x: x.layernorm(weight=None, bias=None), r"gamma= \(not weight=\), beta= \(not bias=\)"),
     (lambda x: x.layernorm(None, None, normalized_shape=(3,)), r"the last axis \(no normalized_shape=\)"),
     (lambda x: x.batchnorm(weight=None, bias=None), r"Tensor.batchnorm\(\) .*gamma= \(not weight=\)"),
     (lambda x: x.reshape(shape=(3, 2)), r"the sizes as arguments, x.reshape\(2, -1\) \(not shape=\)"),
     (lambda x: x.permute(dims=(1, 0)), r"the axes as arguments, x.permute\(0, 2, 1\) \(not dims=\)"),
     (lambda x: x.relu(inplace=True), r"relu\(\) does not take inplace=True .*assign it \(x = x.relu\(\)"),
     (lambda x: x.sum(inplace=True), r"sum\(\) does not take inplace=True .*a new tensor: assign it"),
     (lambda x: x.sum(axes=1), r"unexpected keyword argument 'axes'$"),
     (lambda x: np.sum(x), r"np.sum\(x\) on a Tensor calls Tensor.sum\(\) with out=, which Topgrad does not "
                           r"take: .*Write x.sum\(\) for the op, or np.sum\(x.numpy\(\)\)"),
     (lambda x: np.mean(x), r"calls Tensor.mean\(\) with .*out=.*np.mean\(x.numpy\(\)\)"),
     (lambda x: np.max(x), r"calls Tensor.max\(\) with out=.*np.max\(x.numpy\(\)\)"),
     (lambda x: x.sum(dtype="float64"),
      r"^Topgrad's Tensor.sum\(\) does not take dtype='float64' \(PyTorch's result dtype\)"),
     (lambda x: x.flatten(end_dim=0),
      r"^Topgrad's Tensor.flatten\(\) does not take end_dim=0 .*always flattens through the last axis; for "
      r"another end, x.reshape"),
     (lambda x: x.flatten(start_dim=0, end_dim=-1),
      r"'start_dim': Topgrad writes start= \(not start_dim=\)$"),
     (lambda x: Tensor.zeros(size=(2, 3)),
      r"^Tensor.zeros\(\) .*'size': Topgrad writes the sizes as arguments, Tensor.zeros\(2, 3\) "
      r"\(not size=\)$"),
     (lambda x: Tensor.randn(size=(2, 3)), r"Tensor.randn\(2, 3\) \(not size=\)$"),
     (lambda x: topgrad.attention(query=x, key=x, value=x),
      r"^attention\(\) .*'query': Topgrad writes q= \(not query=\), k= \(not key=\), v= \(not value=\)$")],
)
def test_pytorch_and_numpy_keywords_are_refused_with_topgrads_names(call: Any, match: str) -> None:
    with pytest.raises(TypeError, match=match):
        call(Tensor(rand((2, 3), 0)))


def test_the_keyword_check_keeps_signatures_and_valid_calls() -> None:
    x = Tensor(rand((2, 3), 0))
    assert list(inspect.signature(Tensor.sum).parameters) == ["self", "axis", "keepdims"]
    assert x.sum(axis=1, keepdims=True).shape == (2, 1) and topgrad.cat([x, x], axis=1).shape == (2, 6)
    assert list(inspect.signature(Tensor.reshape).parameters) == ["self", "shape"]
    assert x.reshape(3, 2).shape == (3, 2) and x.permute(1, 0).shape == (3, 2)
    assert x.relu(inplace=False).shape == (2, 3)  # PyTorch's default, taken
    # PyTorch's defaults spelled out are taken: x.sum(dtype=None) is no numpy call (np.sum passes out=)
    assert x.sum(dtype=None).shape == () and x.flatten(0, end_dim=-1).shape == (6,)


def test_an_op_written_as_a_pytorch_function_is_refused_where_it_is_defined() -> None:
    """A staticmethod forward(ctx, x) failed at apply with "forward() missing 1 required positional
    argument: 'x'"; an __init__ needing a setting failed there with "__init__() missing 'slope'"."""
    with pytest.raises(TypeError, match=r"Scale.forward is a staticmethod, as in PyTorch's autograd.Function "
                                        r"\(forward\(ctx, ...\)\); a Topgrad op's forward is a plain method"):
        class Scale(topgrad.Op):
            @staticmethod
            def forward(ctx: Any, x: Any) -> Any:
                return x

    with pytest.raises(TypeError, match=r"Leaky.__init__ needs slope, but Leaky.apply makes the op itself "
                                        r"with Leaky\(\): pass settings to apply as keywords "
                                        r"\(Leaky.apply\(x, slope=...\)\)"):
        class Leaky(topgrad.Op):
            def __init__(self, slope: float) -> None:
                self.slope = slope

    class Defaulted(topgrad.Op):  # an __init__ apply can call is fine
        def __init__(self, slope: float = 0.1) -> None:
            self.slope = slope

    assert Defaulted().slope == 0.1


def test_needs_input_grad_points_to_needs_grad() -> None:
    y = Tensor(rand((2, 3), 0)) * 2.0
    with pytest.raises(AttributeError, match=r"grad_fn.needs_input_grad is op.needs_grad\(i\)"):
        y.op.needs_input_grad  # noqa: B018
