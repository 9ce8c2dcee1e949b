"""The architecture rules, checked statically: every module of the four packages is parsed with `ast`
(nothing is imported), so a rule broken inside a function body or in a module no test runs is found too.

- topgrad-core imports no backend, no example and no heavy library (numpy, torch, triton); its kit,
  `topgrad.testing`, may import numpy and pytest (the `topgrad-core[testing]` extra).
- topgrad-numpy and topgrad-triton never import each other (nor torch/triton into numpy).
- topgrad-examples uses only Topgrad's public API: `topgrad` and the names in `topgrad.__all__`.
- Public functions and methods have type hints and a docstring.
- README.md and tensor.py's docstring name one reading order for the engine, and its true size.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {  # import name -> its folder
    "topgrad": ROOT / "topgrad-core" / "src" / "topgrad",
    "topgrad_numpy": ROOT / "topgrad-numpy" / "src" / "topgrad_numpy",
    "topgrad_triton": ROOT / "topgrad-triton" / "src" / "topgrad_triton",
    "topgrad_examples": ROOT / "topgrad-examples" / "src" / "topgrad_examples",
}
HEAVY = {"numpy", "torch", "triton"}
BACKENDS = {"topgrad_numpy", "topgrad_triton"}
Function = ast.FunctionDef | ast.AsyncFunctionDef

#: Top-level modules each package must never import (the kit, `topgrad.testing`, is checked apart).
FORBIDDEN = {
    "topgrad": HEAVY | BACKENDS | {"topgrad_examples"},
    "topgrad.testing": {"torch", "triton"} | BACKENDS | {"topgrad_examples"},
    "topgrad_numpy": {"torch", "triton", "topgrad_triton", "topgrad_examples"},
    "topgrad_triton": {"topgrad_numpy", "topgrad_examples"},  # numpy: a dependency (asarray, to_numpy)
    "topgrad_examples": BACKENDS | {"torch", "triton"},
}

#: Known breaks of FORBIDDEN, each (package, path below its package folder, module imported); none
#: now (gradcheck and anomaly mode compute in plain Python and through the backend, without numpy).
#: Remove an entry once its import is gone (test_known_exceptions_are_still_needed says when).
KNOWN: set[tuple[str, str, str]] = set()


def modules(package: str) -> list[Path]:
    """Every module of `package`, sorted."""
    return sorted(PACKAGES[package].rglob("*.py"))


def module_name(path: Path) -> str:
    """The dotted name of the module at `path` (`topgrad/testing/__init__.py` -> `topgrad.testing`)."""
    for package, folder in PACKAGES.items():
        if path.is_relative_to(folder):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    return path.stem


def imported(path: Path, name: str | None = None) -> Iterator[tuple[int, str, tuple[str, ...]]]:
    """(line, module, names taken from it) for every import in the file, at any depth: `import`,
    `from ... import` (relative ones resolved against `name`, the module's dotted name) and
    `importlib.import_module("...")` / `__import__("...")` with a literal name."""
    name = name or module_name(path)
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                module = ".".join([*base, module] if module else base)
            yield node.lineno, module, tuple(alias.name for alias in node.names)
        elif isinstance(node, ast.Call) and node.args:
            called = ast.unparse(node.func)
            first = node.args[0]
            dynamic = called == "__import__" or called.endswith("import_module")
            if dynamic and isinstance(first, ast.Constant) and isinstance(first.value, str):
                yield node.lineno, first.value, ()


def rule_for(path: Path) -> str:
    """Which FORBIDDEN entry applies to the module at `path`."""
    name = module_name(path)
    return "topgrad.testing" if name.split(".")[:2] == ["topgrad", "testing"] else name.split(".")[0]


def breaks(package: str) -> set[tuple[str, str, str, int]]:
    """(package, path, forbidden root, line) for every forbidden import in `package`."""
    found = set()
    for path in modules(package):
        forbidden = FORBIDDEN[rule_for(path)]
        for line, module, _ in imported(path):
            root = module.split(".")[0]
            if root in forbidden:
                found.add((package, path.relative_to(PACKAGES[package]).as_posix(), root, line))
    return found


def public_names() -> set[str]:
    """`topgrad.__all__`, read from the source (importing topgrad would load more than it says)."""
    tree = ast.parse((PACKAGES["topgrad"] / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return set(ast.literal_eval(node.value))
    raise AssertionError("topgrad/__init__.py defines no __all__")


# ---- the import rules --------------------------------------------------------------------------
def test_the_scan_sees_nested_relative_and_dynamic_imports(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text(
        "import os\n"
        "def f():\n"
        "    import numpy as np\n"
        "    from torch.nn import functional\n"
        "    from . import sibling\n"
        "    return importlib.import_module('topgrad_numpy.ops')\n"
    )
    found = {(module, names) for _, module, names in imported(planted, name="pkg.planted")}
    assert found == {("os", ()), ("numpy", ()), ("torch.nn", ("functional",)), ("pkg", ("sibling",)),
                     ("topgrad_numpy.ops", ())}, found


def test_every_package_has_modules() -> None:
    for package in PACKAGES:
        assert len(modules(package)) > 1, f"no modules found for {package} under {PACKAGES[package]}"


@pytest.mark.parametrize("package", list(PACKAGES))
def test_no_forbidden_imports(package: str) -> None:
    """Core imports no backend and no heavy library, backends never import each other, examples
    import no backend."""
    new = sorted(b for b in breaks(package) if b[:3] not in KNOWN)
    listing = "\n".join(f"  {p}/{path}:{line}: imports {root}" for p, path, root, line in new)
    assert not new, f"forbidden imports (see FORBIDDEN in {Path(__file__).name}):\n{listing}"


def test_known_exceptions_are_still_needed() -> None:
    found = {b[:3] for package in PACKAGES for b in breaks(package)}
    stale = sorted(KNOWN - found)
    assert not stale, f"these imports are gone: remove them from KNOWN: {stale}"


def test_examples_import_only_the_public_api() -> None:
    """`import topgrad`, `from topgrad import <public name>` and `topgrad.<public name>`: never a
    core module such as `topgrad.tensor` or `topgrad.registry`, whose names may change."""
    public = public_names() | {"__version__"}
    wrong = []
    for path in modules("topgrad_examples"):
        where = path.relative_to(PACKAGES["topgrad_examples"]).as_posix()
        for line, module, names in imported(path):
            parts = module.split(".")
            if parts[0] != "topgrad":
                continue
            if len(parts) > 2 or (len(parts) == 2 and parts[1] not in public):
                wrong.append(f"{where}:{line}: imports {module}")
            wrong += [f"{where}:{line}: from topgrad import {n}" for n in names
                      if len(parts) == 1 and n not in public]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id == "topgrad" and node.attr not in public):
                wrong.append(f"{where}:{node.lineno}: uses topgrad.{node.attr}")
    listing = "\n".join(f"  {w}" for w in wrong)
    assert not wrong, f"topgrad-examples reaches past topgrad's public API (topgrad.__all__):\n{listing}"


def test_core_imports_only_what_it_declares() -> None:
    """topgrad-core depends on pluggy alone; its kit adds numpy and pytest (the `testing` extra)."""
    wrong = []
    for path in modules("topgrad"):
        kit = rule_for(path) == "topgrad.testing"
        allowed = {"topgrad", "pluggy"} | ({"numpy", "pytest"} if kit else set())
        for line, module, _ in imported(path):
            root = module.split(".")[0]
            if root not in sys.stdlib_module_names and root not in allowed:
                if ("topgrad", path.relative_to(PACKAGES["topgrad"]).as_posix(), root) not in KNOWN:
                    wrong.append(f"  {path.relative_to(ROOT)}:{line}: imports {module}")
    assert not wrong, "topgrad-core imports an undeclared library:\n" + "\n".join(wrong)


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_each_package_states_its_version_once(package: str) -> None:
    """A release changes one line per package: pyproject.toml reads the version from the package's
    `__version__`, a string literal, which setuptools reads without importing the package (so a
    build needs none of its dependencies)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11 on
    project = tomllib.loads((PACKAGES[package].parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"] and project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": f"{package}.__version__"}
    literals = [node.value.value for node in ast.parse((PACKAGES[package] / "__init__.py").read_text()).body
                if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "__version__"
                and isinstance(node.value, ast.Constant)]
    assert len(literals) == 1 and re.fullmatch(r"\d+\.\d+\.\d+", literals[0]), literals


# ---- public functions: type hints and a docstring ----------------------------------------------
def public_functions(path: Path) -> Iterator[tuple[str, Function, bool]]:
    """(qualified name, node, is a method) for each function of the module or of its classes
    (nested classes too) whose name has no leading underscore; functions inside functions are
    helpers, not API."""
    def walk(body: list[ast.stmt], prefix: str) -> Iterator[tuple[str, Function, bool]]:
        for node in body:
            if isinstance(node, ast.ClassDef):
                yield from walk(node.body, f"{prefix}{node.name}.")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
                yield f"{prefix}{node.name}", node, bool(prefix)

    yield from walk(ast.parse(path.read_text(encoding="utf-8")).body, "")


def is_triton_kernel(fn: Function) -> bool:
    """A @triton.jit function: Triton reads its annotations (`tl.constexpr`), so hints there are code."""
    return any(ast.unparse(d).split("(")[0].endswith("jit") for d in fn.decorator_list)


def unhinted(fn: Function, is_method: bool) -> list[str]:
    """The parameters (and `return`) of `fn` that have no annotation; `self`/`cls` need none."""
    args = fn.args
    positional = [*args.posonlyargs, *args.args]
    if is_method and positional and not any(ast.unparse(d) == "staticmethod" for d in fn.decorator_list):
        positional = positional[1:]
    params = [*positional, *args.kwonlyargs, *(p for p in (args.vararg, args.kwarg) if p)]
    missing = [p.arg for p in params if p.annotation is None]
    return missing + ([] if fn.returns is not None else ["return"])


def all_public_functions() -> Iterator[tuple[str, Function, bool]]:
    """(where, node, is a method) over every module of every package."""
    for package in PACKAGES:
        for path in modules(package):
            for name, fn, is_method in public_functions(path):
                yield f"{path.relative_to(ROOT)}:{fn.lineno} {name}", fn, is_method


def test_public_functions_have_type_hints() -> None:
    wrong = [f"  {where}: {', '.join(missing)}" for where, fn, is_method in all_public_functions()
             if not is_triton_kernel(fn) and (missing := unhinted(fn, is_method))]
    assert not wrong, "public functions without type hints:\n" + "\n".join(wrong)


def test_public_functions_have_docstrings() -> None:
    wrong = [f"  {where}" for where, fn, _ in all_public_functions() if ast.get_docstring(fn) is None]
    assert not wrong, "public functions without a docstring (a line on what and why):\n" + "\n".join(wrong)


def test_the_hint_check_sees_what_is_missing(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text(
        "class A:\n"
        "    def f(self, x, *args: int, y: int = 0, **kw) -> None:\n"
        "        '''Doc.'''\n"
        "    @staticmethod\n"
        "    def g(x: int):\n"
        "        pass\n"
        "    def _private(self, x): pass\n"
        "def h(x: int) -> int:\n"
        "    def nested(y): pass\n"
        "    return x\n"
    )
    found = {name: (unhinted(fn, is_method), ast.get_docstring(fn) is not None)
             for name, fn, is_method in public_functions(planted)}
    assert found == {"A.f": (["x", "kw"], True), "A.g": (["return"], False), "h": ([], False)}, found


# ---- the engine's reading order ----------------------------------------------------------------
#: The functions README.md and tensor.py's docstring send a newcomer through, file by file, in order.
READING_ORDER = {
    "tensor.py": ["Tensor.__init__", "Tensor._from_array", "Tensor.backward", "Tensor._backward", "_seed",
                  "_toposort"],
    "op.py": ["Op.apply", "_set_parents", "_link", "run_backward"],
}


def function_lines(path: Path, qualname: str) -> int:
    """The lines of function `qualname` (`Class.method` or a module function), decorators included."""
    body = ast.parse(path.read_text(encoding="utf-8")).body
    *owner, name = qualname.split(".")
    if owner:
        body = next(n for n in body if isinstance(n, ast.ClassDef) and n.name == owner[0]).body
    fn = next(n for n in body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name)
    return (fn.end_lineno or fn.lineno) - min([fn.lineno, *(d.lineno for d in fn.decorator_list)]) + 1


@pytest.mark.parametrize("where", ["README.md", "tensor.py"])
def test_the_engine_reading_order_is_told_once(where: str) -> None:
    """README.md and tensor.py's docstring disagreed (README: about 150 lines, from `_toposort` "at
    the end of tensor.py", which it no longer is): both name the same functions, an "about N lines"
    within a tenth of what those functions hold, and versions.py as the part one may skip."""
    core = PACKAGES["topgrad"]
    total = sum(function_lines(core / file, q) for file, names in READING_ORDER.items() for q in names)
    if where == "README.md":
        source = (ROOT / "README.md").read_text(encoding="utf-8")
    else:
        source = ast.get_docstring(ast.parse((core / "tensor.py").read_text(encoding="utf-8"))) or ""
    text = " ".join(source.split())  # the same words however the lines wrap
    sizes = [int(n) for n in re.findall(r"about (\d+) lines", text)]
    assert len(sizes) == 1 and abs(sizes[0] - total) <= total / 10, f"{where}: about {sizes}, counted {total}"
    missing = [q for names in READING_ORDER.values() for q in names
               if f"`{q}`" not in text and f"`{q.split('.')[-1]}`" not in text]
    assert not missing and "`versions.py`" in text, f"{where} does not name {missing or 'versions.py'}"
