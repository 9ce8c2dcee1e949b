"""Where topgrad's warnings point: at the plugin's line a warning is about, or the user's line
that led to it, never at topgrad's own code or the import machinery between them (the file and
line a warning shows are where the fix goes)."""

from __future__ import annotations

import inspect
import os
import sys
import warnings
from pathlib import Path
from types import CodeType, FrameType, ModuleType, TracebackType
from typing import Any

import pluggy

TOPGRAD_DIR = os.path.join(str(Path(__file__).parent), "")
"""topgrad's own folder, with the separator: installed side by side, site-packages/topgrad_numpy/
and topgrad_examples/ begin with site-packages/topgrad too, and are not topgrad's."""
_STDLIB = os.path.dirname(os.__file__)
# What runs between the user and topgrad (`python -m`, the import of a plugin module): never the
# line a warning is about, so warnings look past it.
_MACHINERY = (os.path.join(_STDLIB, "importlib", ""), os.path.join(_STDLIB, "runpy.py"),
              "<frozen importlib", "<frozen runpy>", os.path.join(os.path.dirname(pluggy.__file__), ""))
_PLUGIN_WARNINGS: dict[Any, Any] = {}  # warnings shown at a plugin's line: each once, like any warning

Location = tuple[str, int, dict[str, Any]]  # filename, line, its module's globals (for its name)


def warn(message: str, *where: object) -> None:
    """A RuntimeWarning at the line it is about, so that its file and line are where the fix goes:
    the first of `where` (a plugin's hook function, module, class or object, or an exception it
    raised) found outside topgrad; else the user's first line outside topgrad, importlib and runpy
    (never registry.py, nor `<frozen runpy>` under `python -m`)."""
    for place in where:
        found = _location(place) if place is not None else None
        if found is not None:
            _emit(message, found, _PLUGIN_WARNINGS)
            return
    frame = _caller(sys._getframe(1))
    registry = frame.f_globals.setdefault("__warningregistry__", {})  # once per line, as warnings.warn
    _emit(message, (frame.f_code.co_filename, frame.f_lineno, frame.f_globals), registry)


def _emit(message: str, location: Location, registry: dict[Any, Any]) -> None:
    """Issue the warning at `location`, filtered by its module's name like any other warning (no
    module_globals: as warnings.warn, the source line is read from the file; a `__main__` module's
    loader refuses to give it). `module=None` would drop the warning: unknown, the file names it."""
    filename, lineno, module_globals = location
    module = module_globals.get("__name__")
    module = module if isinstance(module, str) else filename.removesuffix(".py")  # as warnings does
    warnings.warn_explicit(message, RuntimeWarning, filename, lineno, module=module, registry=registry)


def _ours(filename: str) -> bool:
    """Whether `filename` is topgrad's own code or the import / `python -m` machinery."""
    return filename.startswith(TOPGRAD_DIR) or filename.startswith(_MACHINERY)


def _caller(frame: FrameType) -> FrameType:
    """The first frame from `frame` outwards outside topgrad and the machinery (the user's line);
    where there is none (`python -m topgrad.testing`), the innermost of the program run
    (`__main__`), else `frame` itself."""
    main = None
    walk: FrameType | None = frame
    while walk is not None:
        if not _ours(walk.f_code.co_filename):
            return walk
        if main is None and walk.f_globals.get("__name__") == "__main__":
            main = walk
        walk = walk.f_back
    return main or frame


def _location(place: object) -> Location | None:
    """Where `place` is, outside topgrad: for an exception, its outermost frame there (the plugin's
    line that raised, or that imported what failed); a function's `def`; a module's file; a class's
    (or an object's class's) definition. None where unknown: a location is a nicety, never an error."""
    try:
        if isinstance(place, BaseException):
            found = _raised_at(place.__traceback__)
        elif isinstance(place, ModuleType):
            found = (place.__file__, 1, vars(place)) if isinstance(place.__file__, str) else None
        else:
            found = _defined_at(place)
    except Exception:
        return None
    return found if found is not None and not _ours(found[0]) else None


def _raised_at(tb: TracebackType | None) -> Location | None:
    """The outermost frame of a traceback outside topgrad and the import machinery."""
    while tb is not None:
        if not _ours(tb.tb_frame.f_code.co_filename):
            return tb.tb_frame.f_code.co_filename, tb.tb_lineno, tb.tb_frame.f_globals
        tb = tb.tb_next
    return None


def _defined_at(place: object) -> Location | None:
    """Where a function (its `def`) or a class (its `class`, or an instance's) is defined."""
    function = inspect.unwrap(getattr(place, "__func__", place)) if callable(place) else place
    code = getattr(function, "__code__", None)
    if isinstance(code, CodeType):
        return code.co_filename, code.co_firstlineno, getattr(function, "__globals__", {})
    kind = place if isinstance(place, type) else type(place)
    filename = inspect.getsourcefile(kind)
    module = sys.modules.get(kind.__module__)
    if filename is None:
        return None
    return filename, max(inspect.getsourcelines(kind)[1], 1), vars(module) if module else {}


def warn_once_at(message: str, function: Any, module: str) -> None:
    """A RuntimeWarning shown at `function`'s first line (an op's own `backward`, where the fix
    goes), filtered as from `module`, once per process for that function: Python's own once-per-place
    registry is cleared whenever any code changes the warning filters (triton's code does, every call)."""
    code = function.__code__
    if code in _WARNED_AT:
        return
    _WARNED_AT.add(code)
    warnings.warn_explicit(message, RuntimeWarning, code.co_filename, code.co_firstlineno,
                           module=module)


_WARNED_AT: set[CodeType] = set()  # the code of each function warned about
