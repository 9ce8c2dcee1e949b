"""`python -m topgrad.testing NAME`: run the conformance kit on a backend and print the table."""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    """Exit status 0 when every check passes, 1 when one fails, 2 when the backend cannot be loaded."""
    parser = argparse.ArgumentParser(
        prog="python -m topgrad.testing",
        description="Check a Topgrad backend: every op of the table (forward and backward) against a "
        "float64 numpy reference, the array helpers, and the optimizers.",
    )
    parser.add_argument("backend", nargs="?", help="backend name (default: $TOPGRAD_BACKEND, else numpy, "
                        "else the only one installed)")
    parser.add_argument("-k", dest="only", metavar="EXPR",
                        help="only the rows, or an op's cases (named as the failure lines name them: "
                        "'Conv2d[3x3 s2 p1]'), whose name contains EXPR, ignoring case; or, as pytest's -k, "
                        "an expression of such substrings with and, or, not and parentheses "
                        "('Reshape or SGD')")
    parser.add_argument("--rtol", type=float, default=None, help="tolerance on each value's error, "
                        "|got - expected| / max(1, |expected|) (relative for large values, absolute near 0); "
                        "default 1e-4 (float32)")
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="register this plugin module first (a backend not yet packaged); repeatable")
    parser.add_argument("--list", action="store_true", help="list the installed backends and exit")
    args = parser.parse_args(argv)
    if args.rtol is not None and not args.rtol >= 0:  # -1 failed every row, NaN passed none
        parser.error(f"--rtol must be 0 or more (0: exact), got {args.rtol}")

    import importlib

    import topgrad
    from topgrad.registry import _conflict, _default_name, _offers
    from topgrad.testing import NEEDS_NUMPY

    given: list[str] = []  # the names the --plugin modules are registered under
    for module in args.plugin:
        try:
            plugin = importlib.import_module(module)
        except ImportError as exc:
            print(f"error: --plugin {module}: cannot import it ({exc}); {_importable(module)}",
                  file=sys.stderr)
            return 2
        except Exception as exc:  # the module's own code failed: a bug there, not a failed check (1)
            print(f"error: --plugin {module}: importing it raised {type(exc).__name__}: {exc}",
                  file=sys.stderr)
            return 2
        manager = topgrad.registry.plugin_manager()
        if manager.is_registered(plugin):  # installed already: its entry point registered it
            given.append(str(manager.get_name(plugin)))
            continue
        try:
            given.append(topgrad.register_plugin(plugin, name=module))
        except Exception as exc:  # its name taken by another plugin, or rejected by pluggy
            print(f"error: --plugin {module}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2
    if args.list:
        found = sorted(_offers().items())
        for name, offers in found:
            clash = f"  [{_conflict(name, [owner for owner, _ in offers])}]" if len(offers) > 1 else ""
            print(f"{name:<12} {offers[0][1].description}{clash}")
        if not found:
            print("no topgrad backend is installed (pip install topgrad-numpy)")
        return 0
    try:
        import numpy  # noqa: F401
    except ImportError:
        print(NEEDS_NUMPY, file=sys.stderr)
        return 2
    from topgrad.testing.outcome import RTOL
    from topgrad.testing.runner import LOAD_ERRORS, format_report, run
    from topgrad.testing.selection import matcher

    try:
        matcher(args.only)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        name = args.backend or os.environ.get("TOPGRAD_BACKEND") or _default_name()
        backend = topgrad.load_backend(name)
    except LOAD_ERRORS as exc:
        for line in _offering_nothing(given):  # the likelier cause, when it is one: said first
            print(f"error: {line}", file=sys.stderr)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"topgrad conformance kit: backend {name!r}")
    origins = backend.ops.origins() if hasattr(backend.ops, "origins") else {}
    if origins:  # a failure there is the plugin's, not the backend's
        print("ops from plugins: " + ", ".join(f"{op} ({how})" for op, how in sorted(origins.items())))
    print()
    report = run(name, rtol=RTOL if args.rtol is None else args.rtol, only=args.only)
    if not report.rows:
        print(f"error: no check matches -k {args.only!r}", file=sys.stderr)
        return 2
    print(format_report(report))
    return 0 if report.ok else 1


def _importable(module: str) -> str:
    """How to give --plugin `module`, which did not import: a module name, not a file."""
    if module.endswith(".py"):
        folder, _, name = module[:-3].replace("\\", "/").rpartition("/")
        where = f" with {folder or '.'} on PYTHONPATH" if folder else ""
        return f"--plugin takes a module name, not a file: --plugin {name}{where}"
    return "give an importable module name (its folder on PYTHONPATH)"


def _offering_nothing(given: list[str]) -> list[str]:
    """Why each plugin given with --plugin offers no backend, where one does not: it implements
    no hook, its topgrad_backends failed or returned nothing (the registry records each)."""
    from topgrad.registry import _offered_none, _skipped

    hooks = "--plugin takes the module with the @topgrad.hookimpl functions (topgrad_backends)"
    lines = [f"--plugin {name}: {_skipped[name]}, so it offers no backend"
             + (f": {hooks}" if _skipped[name].endswith("no topgrad hook") else "")
             for name in given if name in _skipped]
    lines += [f"--plugin {name}: its topgrad_backends() returned {_offered_none[name]}, so it offers no "
              "backend" for name in given if name in _offered_none and name not in _skipped]
    return lines


if __name__ == "__main__":
    sys.exit(main())
