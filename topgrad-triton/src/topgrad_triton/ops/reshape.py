"""Reshape: a view when the input is dense, else a dense copy by the copy kernel, then a view.
Permute: a permuted view, made dense by the copy kernel. Slice: a view by torch's basic
indexing (ints, slices, None), made dense by the copy kernel; its backward writes the gradient
into zeros through the same view. Concat: each input written into its part of the output, and
each part of the gradient copied out."""

from __future__ import annotations

from typing import Any

import torch
from topgrad.arguments import axes_order, reshaped
from topgrad.indexing import basic_index
from topgrad.joining import joined_shape

from topgrad_triton.kernels.elementwise import contiguous, copy_into
from topgrad_triton.kernels.fill import full
from topgrad_triton.ops.base import TritonOp, check_tensors


class Reshape(TritonOp):
    """x with a new shape of the same size; -1 stands for the remaining size."""

    def forward(self, x: torch.Tensor, shape: Any = None) -> torch.Tensor:
        """A view of x (made dense first) with the new shape; keeps x's shape. The sizes are
        checked as x.reshape checks them (`topgrad.arguments.reshaped`)."""
        check_tensors("Reshape", x=x)
        self.x_shape = tuple(x.shape)
        new = reshaped("Reshape", self.x_shape, shape)  # before the copy, which a refusal would waste
        return contiguous(x, name="Reshape").view(new)

    def backward(self, grad: torch.Tensor) -> tuple[torch.Tensor]:
        """grad, dense, viewed with x's shape."""
        return (contiguous(grad, name="Reshape.backward").view(self.x_shape),)


class Permute(TritonOp):
    """x with its axes reordered, dense: the copy kernel reads the permuted view by stride (no copy
    where the order leaves memory as it is, as numpy's Permute)."""

    def forward(self, x: torch.Tensor, axes: Any = None) -> torch.Tensor:
        """x's axes in the order `axes`, dense; keeps the inverse order. The axes are checked as
        x.permute checks them (negative ones count from the end)."""
        check_tensors("Permute", x=x)
        try:
            if type(axes) is not tuple or sorted(axes) != list(range(x.dim())):
                raise TypeError
            view = x.permute(axes)
        except TypeError:  # not a tuple of ints ordering x's axes (1.0 == 1, but torch refuses it)
            axes = axes_order(axes, tuple(x.shape))
            view = x.permute(axes)
        self.inverse = tuple(sorted(range(len(axes)), key=axes.__getitem__))
        return contiguous(view, name="Permute")

    def backward(self, grad: torch.Tensor) -> tuple[torch.Tensor]:
        """grad with the inverse order applied, dense."""
        return (contiguous(grad.permute(self.inverse), name="Permute.backward"),)


class Slice(TritonOp):
    """x[index] for a basic index (see `topgrad.indexing`), dense; saves the index and x's shape."""

    def forward(self, x: torch.Tensor, index: tuple = ()) -> torch.Tensor:
        """x[index], dense; keeps the index and x's shape."""
        check_tensors("Slice", x=x)
        self.index, self.x_shape = basic_index(index, tuple(x.shape)), tuple(x.shape)
        return contiguous(x[self.index], name="Slice")

    def backward(self, grad: torch.Tensor) -> tuple[torch.Tensor]:
        """Zeros of x's shape with grad copied into the selected places."""
        gx = full(self.x_shape, 0.0)
        place = gx[tuple(i for i in self.index if i is not None)]  # the new axes are grad's size-1 dims
        copy_into(place, contiguous(grad, name="Slice.backward").view(place.shape), name="Slice.backward")
        return (gx,)


class Concat(TritonOp):
    """The arrays joined along `axis`: each is written into its part of the output (a narrowed
    view) by the strided-write kernel. Saves where the parts start and their sizes."""

    def forward(self, *xs: torch.Tensor, axis: int = 0) -> torch.Tensor:
        """The arrays copied into their parts of one output along `axis`; keeps where the parts lie."""
        check_tensors("Concat", (), **{f"tensor {i}": x for i, x in enumerate(xs)})
        shape, self.axis = joined_shape("Concat", [tuple(x.shape) for x in xs], axis)
        out = torch.empty(shape, dtype=torch.float32, device=xs[0].device)
        self.parts, start = [], 0
        for x in xs:
            size = x.shape[self.axis]
            copy_into(out.narrow(self.axis, start, size), x, name="Concat")
            self.parts.append((start, size))
            start += size
        return out

    def backward(self, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        """Each input's part of grad, dense (None where not needed)."""
        return tuple(contiguous(grad.narrow(self.axis, start, size), name="Concat.backward")
                     if self.needs_grad(i) else None for i, (start, size) in enumerate(self.parts))
