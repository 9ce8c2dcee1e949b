"""The pluggy plugin that offers the numpy backend; imports neither numpy nor the ops."""

from __future__ import annotations

from topgrad import BackendSpec, hookimpl


@hookimpl
def topgrad_backends() -> list[BackendSpec]:
    """Offer the `numpy` backend, loaded only when it is selected."""
    return [
        BackendSpec(
            "numpy",
            "topgrad_numpy.backend:NumpyBackend",
            "CPU, float32 numpy arrays (float64 where asked), GEMMs on BLAS",
        )
    ]
