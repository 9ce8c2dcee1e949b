"""The pluggy plugin that offers the ``triton`` backend; cheap to import (no torch, no triton).

The backend itself (`topgrad_triton.backend`) is imported only when it is selected.
"""

from __future__ import annotations

import topgrad


@topgrad.hookimpl
def topgrad_backends() -> list[topgrad.BackendSpec]:
    """The `triton` backend, loaded lazily by name."""
    return [
        topgrad.BackendSpec(
            name="triton",
            load="topgrad_triton.backend:TritonBackend",
            description="every op as a Triton kernel (CUDA GPU, or TRITON_INTERPRET=1 on CPU)",
        )
    ]
