"""BatchNorm and LayerNorm ops of the Triton backend (kernels in `topgrad_triton.kernels.norm`).

Both see their input as a (rows, features) matrix: BatchNorm normalizes each feature
column over all rows (every axis but the last), LayerNorm each row over its features.
Forward saves the statistics (mean, rstd) so backward never recomputes them.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from topgrad.arguments import batchnorm_settings, check_eps
from topgrad.normalization import eval_statistics_missing, feature_count

from topgrad_triton import runtime
from topgrad_triton.kernels import norm as kernels
from topgrad_triton.kernels.elementwise import COPY, contiguous, elementwise
from topgrad_triton.ops.base import OTHER_BACKEND_HINT, TritonOp, check_tensors


def as_rows(x: torch.Tensor, op: str) -> torch.Tensor:
    """x viewed as (prod(shape[:-1]), shape[-1]) float32; a dense float32 copy (Triton kernel) if no
    view exists, or x holds another dtype (the kernels allocate their results in x's dtype)."""
    C = x.shape[-1]
    M = x.numel() // C if C else 0
    if x.dtype != torch.float32:
        x = contiguous(x, op)
    try:
        return x.view(M, C)
    except RuntimeError:
        return contiguous(x, op).view(M, C)


def _check(op: str, x: Any, **params: Any) -> None:
    """TypeError for an operand that is not a tensor; ValueError naming the op and the shapes unless
    every given parameter (each may be None) has shape (features,)."""
    check_tensors(op, optional=tuple(params), x=x, **params)
    shapes = {name: None if p is None else tuple(p.shape) for name, p in params.items()}
    feature_count(op, tuple(x.shape), **shapes)


def _dense(op: str, p: Any) -> Any:
    """gamma or beta as the kernels read it, dense float32 (a raw strided torch tensor, `t[::2]`, as
    a copy: the kernels index features as offsets)."""
    return None if p is None else contiguous(p, op)


def _array(name: str, stat: Any, training: bool) -> Any:
    """The torch tensor behind a running statistic, or None: a topgrad Tensor's array, a torch
    tensor itself, or a numpy float32 array's memory (on the GPU, a device copy; `_store` copies
    the update back into the array, as the numpy backend writes a raw array in place)."""
    if stat is None:
        return stat
    if isinstance(stat, torch.Tensor):  # the kernels index features as offsets of a dense float32 array
        if stat.dtype == torch.float32 and stat.is_contiguous():
            return stat
        if training:
            raise TypeError(
                f"BatchNorm: a raw torch {name} is updated in place in training; this one ({stat.dtype}, "
                f"shape {tuple(stat.shape)}, {'strided' if not stat.is_contiguous() else 'dense'}) is not a "
                f"contiguous float32 tensor. Pass {name}.contiguous().float() (and read the update from "
                "it) or a Tensor"
            )
        return contiguous(stat, "BatchNorm")  # eval mode only reads it
    if isinstance(stat, np.ndarray):
        if not training and stat.dtype == np.float32 and not stat.flags.c_contiguous:
            stat = np.ascontiguousarray(stat)  # eval mode only reads it: a dense copy serves, as for torch's
        wrong = ("not float32" if stat.dtype != np.float32
                 else "not C-contiguous" if not stat.flags.c_contiguous
                 else "read-only, and training updates it in place" if training and not stat.flags.writeable
                 else "")
        if wrong:
            raise TypeError(
                f"BatchNorm: a numpy {name} must be a C-contiguous float32 array (writeable when training: "
                f"it is updated in place); this one ({stat.dtype}, shape {stat.shape}) is {wrong}. Pass "
                f"np.ascontiguousarray({name}, dtype=np.float32) or a Tensor"
            )
        with warnings.catch_warnings():  # a read-only array (eval mode) is only read
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(stat).to(runtime.device())  # on the CPU, the array's own memory
    data = getattr(stat, "data", None)
    if not isinstance(data, torch.Tensor):
        raise TypeError(f"BatchNorm: {name} must be a Tensor (or None), got {type(stat).__name__}"
                        + (f"; {OTHER_BACKEND_HINT}" if data is not None else ""))
    # a Tensor may hold a strided view (`Tensor(t[::2])` shares t): the kernels read a dense copy,
    # and training gives the Tensor a fresh array (`_updated`), so the copy is never written back
    return contiguous(data, "BatchNorm")


class LayerNorm(TritonOp):
    """y = (x - mean) / sqrt(var + eps) * gamma + beta over the last axis (biased variance)."""

    def forward(self, x: Any, gamma: Any, beta: Any, eps: float = 1e-5) -> Any:
        """Normalize each row by the layernorm kernel; saves x, gamma and each row's mean and 1/std."""
        check_eps("LayerNorm", eps)
        _check("LayerNorm", x, gamma=gamma, beta=beta)
        gamma, beta = _dense("LayerNorm", gamma), _dense("LayerNorm", beta)
        x2 = as_rows(x, "LayerNorm")
        y, mean, rstd = kernels.layernorm_forward(x2, gamma, beta, eps)
        self.shape, self.has_gamma, self.has_beta = tuple(x.shape), gamma is not None, beta is not None
        self.save_for_backward(x=x2, gamma=gamma, mean=mean, inv_std=rstd)
        return y.view(x.shape)

    def backward(self, grad: Any) -> tuple[Any, Any, Any]:
        """dx, dgamma and dbeta by the layernorm backward kernel (None for an absent gamma or beta)."""
        x2, gamma, mean, rstd = self.saved
        dx, dgamma, dbeta = kernels.layernorm_backward(x2, gamma, mean, rstd, as_rows(grad, "LayerNorm"))
        return (dx.view(self.shape), dgamma if self.has_gamma else None, dbeta if self.has_beta else None)


class BatchNorm(TritonOp):
    """Normalize each feature (last axis) over all other axes, as torch.nn.functional.batch_norm.

    Training uses the batch mean and biased variance and, when running statistics are
    given, replaces their `.data` with `(1 - momentum) * old + momentum * batch_stat`
    (unbiased variance for the running estimate); a raw array (torch, or numpy float32, as
    the numpy backend takes) is updated in place. Eval mode uses the running statistics and,
    like torch's batch_norm and the numpy backend, refuses to run without them.
    """

    def forward(
        self,
        x: Any,
        gamma: Any,
        beta: Any,
        running_mean: Any = None,
        running_var: Any = None,
        training: bool = True,
        momentum: float = 0.1,
        eps: float = 1e-5,
    ) -> Any:
        """Normalize by the batch statistics (training: updating the running ones) or the running ones."""
        training = batchnorm_settings("BatchNorm", running_mean, running_var, training, momentum, eps)
        rm, rv = _array("running_mean", running_mean, training), _array("running_var", running_var, training)
        _check("BatchNorm", x, gamma=gamma, beta=beta, running_mean=rm, running_var=rv)
        if not training and (rm is None or rv is None):
            raise eval_statistics_missing("BatchNorm", x.shape)
        gamma, beta = _dense("BatchNorm", gamma), _dense("BatchNorm", beta)
        x2 = as_rows(x, "BatchNorm")
        use_batch = training
        if use_batch:
            if x2.shape[0] < 2:
                raise ValueError(
                    f"BatchNorm: expected more than 1 value per channel when training, got input of shape "
                    f"{tuple(x.shape)}"
                )
            rm_out, rv_out = _updated(running_mean, rm), _updated(running_var, rv)
            mean, rstd = kernels.batchnorm_stats(x2, eps, momentum, rm, rv, rm_out, rv_out)
            _store(running_mean, rm, rm_out)
            _store(running_var, rv, rv_out)
        else:
            mean, rstd = rm, kernels.rstd_from_var(rv, eps)
            if isinstance(running_mean, (torch.Tensor, np.ndarray)):  # the caller's own array, which a
                mean = elementwise(COPY, rm, name="BatchNorm")  # training call may update before backward
        y = kernels.batchnorm_apply(x2, gamma, beta, mean, rstd)
        self.shape, self.batch_stats = tuple(x.shape), use_batch
        self.has_gamma, self.has_beta = gamma is not None, beta is not None
        self.save_for_backward(x=x2, gamma=gamma, mean=mean, inv_std=rstd)
        return y.view(x.shape)

    def backward(self, grad: Any) -> tuple[Any, Any, Any]:
        """dx, dgamma and dbeta by the batchnorm backward kernels (None for an absent gamma or beta)."""
        x2, gamma, mean, rstd = self.saved
        g2 = as_rows(grad, "BatchNorm")
        dx, dgamma, dbeta = kernels.batchnorm_backward(x2, gamma, mean, rstd, g2, self.batch_stats)
        return (dx.view(self.shape), dgamma if self.has_gamma else None, dbeta if self.has_beta else None)


def _updated(stat: Any, array: Any) -> Any:
    """Where a running statistic's update goes: a raw array in place, a Tensor a fresh array."""
    if array is None or isinstance(stat, (torch.Tensor, np.ndarray)):
        return array
    return array.new_empty(array.shape)


def _store(stat: Any, array: Any, out: Any) -> None:
    """Give a running statistic its update `out`: a Tensor gets the new array; a numpy array,
    updated in place on the CPU, gets it copied back from the GPU."""
    if array is None:
        return
    if isinstance(stat, np.ndarray):
        if out.device.type != "cpu":
            stat[...] = out.cpu().numpy()  # a device-to-host transfer, written in place
    elif out is not array:
        stat.data = out
