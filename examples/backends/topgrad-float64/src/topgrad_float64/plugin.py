"""The plugin module named by the entry point: cheap to import, it only describes the backend."""

import topgrad


@topgrad.hookimpl
def topgrad_backends() -> list[topgrad.BackendSpec]:
    return [
        topgrad.BackendSpec(
            name="float64",
            load="topgrad_float64.backend:Float64Backend",
            description="numpy in float64, for gradient checking",
        )
    ]
