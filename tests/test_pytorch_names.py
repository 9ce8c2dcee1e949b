"""The hints for PyTorch method names a Tensor does not have: each names a real torch.Tensor
attribute Topgrad lacks, and the recipes that are formulas give PyTorch's values."""

from __future__ import annotations

import numpy as np
import pytest
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
