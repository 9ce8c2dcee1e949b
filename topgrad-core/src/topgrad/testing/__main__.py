"""`python -m topgrad.testing NAME`: run the conformance kit on a backend and print the table."""

from __future__ import annotations

import argparse
import glob
import importlib.util
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

    import topgrad
    from topgrad.registry import _conflict, _default_name, _offers
    from topgrad.testing import NEEDS_NUMPY

    given: list[str] = []  # the names the --plugin modules are registered under
    for module in args.plugin:
        try:
            plugin = importlib.import_module(module)
        except ImportError as exc:
            print(f"error: --plugin {module}: cannot import it ({exc}); {_importable(module, exc)}",
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


_RUN = "PYTHONPATH={} python -m topgrad.testing ..."


def _importable(module: str, exc: ImportError) -> str:
    """How to give --plugin `module`, which did not import (`exc`): a module name, not a file, and
    for a package's module its dotted name with the folder that holds the package on PYTHONPATH."""
    if module.endswith(".py"):
        dotted, root = _module_of_file(module.replace("\\", "/"))
        return f"--plugin takes a module name, not a file: --plugin {dotted}{_on_path(root)}"
    missing = exc.name or module
    if module == missing or module.startswith(f"{missing}."):  # the module itself was not found
        return _where_it_is(module, missing)
    found = _origin(module)  # found, but what it imports was not: its own package, by its file's name?
    dotted, root = _module_of_file(found) if found else (module, "")
    if dotted != module and f"{dotted}.".startswith(f"{missing}."):
        return f"it is the module {dotted} of a package: --plugin {dotted}{_on_path(root)}"
    return (f"it imports the module {missing!r}, which cannot be found: install the package that provides "
            "it, or put the folder that contains it on PYTHONPATH")


def _where_it_is(module: str, missing: str) -> str:
    """Where the package of --plugin `module` is, which was not found (`missing`: its package, or a
    module in it): the folder here that holds the package, to put on PYTHONPATH."""
    top = module.partition(".")[0]
    if missing != top and _origin(top):
        return f"the package {top} has no module {missing!r}: check the name (the module with the hooks)"
    folder = _folder_holding(top)
    if folder is not None:
        return f"{top} is in {folder}, which is not on PYTHONPATH: run {_RUN.format(folder)}"
    example = module if "." in module else "your_package.plugin"
    return (f"give the module's dotted name ({example}) with the folder that contains its package on "
            "PYTHONPATH (for a src/ layout: PYTHONPATH=src), or pip install -e the package")


def _module_of_file(path: str) -> tuple[str, str]:
    """The dotted module name of the Python file at `path` and the folder to put on PYTHONPATH for it:
    above every folder, from the file's up, that holds an `__init__.py` (a package of a src/ layout)."""
    folder, name = os.path.split(os.path.abspath(path.removesuffix(".py")))
    parts = [name]
    while os.path.isfile(os.path.join(folder, "__init__.py")) and os.path.dirname(folder) != folder:
        folder, package = os.path.split(folder)
        parts.insert(0, package)
    root = os.path.relpath(folder)
    return ".".join(parts), folder if root.startswith(os.pardir) else root  # relative where it is here


def _on_path(root: str) -> str:
    """What --plugin's module needs besides its name: `root` on PYTHONPATH (not the current folder,
    which `python -m` puts on the path)."""
    return "" if root == os.curdir else f" with {root} on PYTHONPATH ({_RUN.format(root)})"


def _origin(module: str) -> str | None:
    """The file of importable `module`, without running it (its packages' __init__ do run), else None."""
    try:
        spec = importlib.util.find_spec(module)
    except Exception:  # a package above it that does not import
        return None
    return spec.origin if spec is not None and spec.origin and os.path.isfile(spec.origin) else None


def _folder_holding(package: str) -> str | None:
    """The folder under this one (src/, a project's src/, a subfolder) that holds package or module
    `package`, else None (this folder is on the path already: `python -m` puts it there)."""
    for pattern in ("src", os.path.join("*", "src"), "*"):
        for folder in sorted(glob.glob(pattern)):
            if os.path.isfile(os.path.join(folder, package, "__init__.py")) or \
                    os.path.isfile(os.path.join(folder, f"{package}.py")):
                return folder
    return None


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
