"""topgrad-triton: a Topgrad backend whose ops, helpers and optimizer updates are Triton kernels.

Select it with ``topgrad.set_backend("triton")``. Storage is torch tensors (on the GPU,
or on the CPU under Triton's interpreter, ``TRITON_INTERPRET=1``); torch only allocates,
views and moves memory, which `topgrad_triton.guard` enforces. Importing this package
is cheap: torch and triton load with the backend.
"""

from topgrad_triton.precision import get_precision, set_precision

__version__ = "0.1.0"

__all__ = ["get_precision", "set_precision"]
