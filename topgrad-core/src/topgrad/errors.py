"""The errors the plugin registry raises, each saying what to install or fix."""


class BackendNotFoundError(LookupError):
    """No installed plugin offers a backend of that name."""


class BackendUnavailableError(RuntimeError):
    """The backend is installed but cannot run here (import failed, no GPU, ...)."""


class OpConflictError(RuntimeError):
    """Two plugins give the same op (or two overrides of one op) to one backend."""


class BackendConflictError(RuntimeError):
    """Two plugins offer a backend under the same name."""
