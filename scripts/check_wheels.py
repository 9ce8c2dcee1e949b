"""Build the four wheels and check them in clean virtualenvs, in the combinations users install.

    python scripts/check_wheels.py [--allow-missing] [--no-isolation] [--keep DIR]

1. Builds a wheel of topgrad-core, topgrad-numpy, topgrad-triton and topgrad-examples,
   each from a clean copy of its folder, and checks what each wheel holds: py.typed, its
   entry points, its license, a README without relative links (PyPI cannot follow them), and
   dependencies (core needs only pluggy; no wheel but triton's needs torch; every third-party
   module a wheel's code imports, anywhere, is declared, if only in an extra).
2. Installs them into fresh virtualenvs, local wheels with --no-deps and their third-party
   dependencies (numpy, pluggy, tqdm) from the index by name, then `pip check`:
   - topgrad-core alone: imports without numpy, `Tensor([1.0])` says to install a backend;
   - core + numpy: a forward and backward, and the conformance kit on the numpy backend;
   - core + numpy + examples: `topgrad-train --help` and every module of topgrad_examples.
   torch and triton are never installed: the triton wheel is built and inspected only.

Prints one line per check; exits 1 when any check fails.
"""

from __future__ import annotations

import argparse
import ast
import email.parser
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import venv
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Dist:
    folder: str
    module: str
    entry_points: tuple[str, ...]  # lines expected in entry_points.txt
    requires: tuple[str, ...]  # distributions its metadata must require
    forbidden: tuple[str, ...] = ("torch", "triton")  # distributions it must not require


DISTS = [
    Dist("topgrad-core", "topgrad", ("[pytest11]", "topgrad_testing = topgrad_pytest_plugin"),
         ("pluggy",), ("torch", "triton", "numpy")),
    Dist("topgrad-numpy", "topgrad_numpy", ("[topgrad]", "numpy = topgrad_numpy.plugin"),
         ("topgrad-core", "numpy")),
    Dist("topgrad-triton", "topgrad_triton", ("[topgrad]", "triton = topgrad_triton.plugin"),
         ("topgrad-core", "triton", "torch", "numpy"), ()),
    Dist("topgrad-examples", "topgrad_examples", ("[console_scripts]", "topgrad-train = "),
         ("topgrad-core", "numpy", "tqdm")),
]

# user-facing combinations: which wheels, and which third-party packages come from the index
COMBINATIONS = {
    "core": (["topgrad-core"], ["pluggy>=1.3"]),
    "core+numpy": (["topgrad-core", "topgrad-numpy"], ["pluggy>=1.3", "numpy>=2.0"]),
    "core+numpy+examples": (["topgrad-core", "topgrad-numpy", "topgrad-examples"],
                            ["pluggy>=1.3", "numpy>=2.0", "tqdm"]),
}

failures: list[str] = []


def report(ok: bool, what: str, detail: str = "") -> bool:
    print(f"{'ok  ' if ok else 'FAIL'}  {what}", flush=True)
    if detail and not ok:
        print(textwrap.indent(detail.strip(), "      "), flush=True)
    if not ok:
        failures.append(what)
    return ok


def run(cmd: list[str], cwd: Path | None = None, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    """Run a command with this environment less what would leak into the clean ones."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV") and not k.startswith("TOPGRAD_")}
    env.update(OMP_NUM_THREADS="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


# ---- building and inspecting ------------------------------------------------------------
def build(dist: Dist, out: Path, isolation: bool) -> Path | None:
    """Build the wheel of `dist` from a clean copy of its folder; returns the wheel's path."""
    source = out / "src" / dist.folder
    junk = shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__", ".pytest_cache")
    shutil.copytree(ROOT / dist.folder, source, ignore=junk)
    cmd = [sys.executable, "-m", "build", "--wheel", "--outdir", str(out / "wheels"), str(source)]
    if not isolation:
        cmd[4:4] = ["--no-isolation", "--skip-dependency-check"]
    done = run(cmd)
    wheels = sorted((out / "wheels").glob(f"{dist.folder.replace('-', '_')}-*.whl"))
    if not report(done.returncode == 0 and len(wheels) == 1, f"{dist.folder}: wheel builds",
                  done.stdout[-3000:] + done.stderr[-3000:]):
        return None
    return wheels[0]


def inspect(dist: Dist, wheel: Path) -> None:
    """What the wheel holds: py.typed, the modules, entry points, and its dependencies."""
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        info = next(n.rsplit("/", 1)[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = email.parser.Parser().parsestr(zf.read(f"{info}/METADATA").decode())
        eps = f"{info}/entry_points.txt"
        entry_points = zf.read(eps).decode() if eps in names else ""
    report(f"{dist.module}/py.typed" in names, f"{dist.folder}: wheel contains {dist.module}/py.typed")
    expression = metadata["License-Expression"]
    report(f"{info}/licenses/LICENSE" in names and expression is not None,
           f"{dist.folder}: wheel carries its LICENSE and a License-Expression ({expression})")
    relative = _relative_links(metadata.get_payload())
    report(not relative, f"{dist.folder}: its README (PyPI's page) has no relative links",
           f"these resolve on GitHub but not on PyPI: {relative}")
    modules = [n for n in names if n.startswith(f"{dist.module}/") and n.endswith(".py")]
    report(bool(modules), f"{dist.folder}: wheel contains the package {dist.module} ({len(modules)} modules)")
    report(metadata["Name"] == dist.folder, f"{dist.folder}: metadata names it {metadata['Name']!r}")
    lines = [line.strip() for line in entry_points.splitlines()]
    missing = [e for e in dist.entry_points if not any(line.startswith(e) for line in lines)]
    report(not missing, f"{dist.folder}: entry points {' '.join(dist.entry_points)}",
           f"missing {missing} in:\n{entry_points}")
    required = {_dist_name(r) for r in metadata.get_all("Requires-Dist") or [] if "extra ==" not in r}
    report(set(dist.requires) <= required, f"{dist.folder}: requires {', '.join(dist.requires)}",
           f"Requires-Dist: {sorted(required)}")
    declared = {_dist_name(r) for r in metadata.get_all("Requires-Dist") or []}  # extras too
    undeclared = {m for m in _imported(_sources(wheel, dist.module)) if m != dist.module} - {
        IMPORT_NAMES.get(d, d.replace("-", "_")) for d in declared}
    report(not undeclared, f"{dist.folder}: declares every third-party module its code imports",
           f"imported but not in Requires-Dist: {sorted(undeclared)}")
    bad = required & set(dist.forbidden)
    report(not bad, f"{dist.folder}: does not require {', '.join(dist.forbidden) or 'anything forbidden'}",
           f"it requires {sorted(bad)}")
    if dist.module == "topgrad":
        kit = {"topgrad/testing/__main__.py", "topgrad/testing/test_conformance.py",
               "topgrad_pytest_plugin.py"}
        report(kit <= set(names), "topgrad-core: wheel contains the conformance kit",
               f"missing {kit - set(names)}")


def _relative_links(markdown: str) -> list[str]:
    """Markdown link targets that are paths (`../README.md`), not URLs or anchors."""
    targets = re.findall(r"\]\(([^)\s]+)[^)]*\)", markdown)
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:|#", t)]


IMPORT_NAMES = {"topgrad-core": "topgrad"}
"""Distribution name -> the module it installs, where the two differ."""


def _sources(wheel: Path, package: str) -> list[str]:
    """The source text of every module of `package` in the wheel."""
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n.startswith(f"{package}/") and n.endswith(".py")]
        return [zf.read(n).decode() for n in names]


def _imported(sources: list[str]) -> set[str]:
    """Top-level names of the non-standard-library modules that `sources` import, at any depth
    (a lazy import inside a function still needs its distribution installed)."""
    names: set[str] = set()
    for text in sources:
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "__future__"}


def _dist_name(requirement: str) -> str:
    name = requirement.split(";")[0].strip()
    for sep in "<>=!~[ (":
        name = name.split(sep)[0]
    return name.lower().replace("_", "-")


# ---- installing and using ------------------------------------------------------------------
def make_env(path: Path, wheels: list[Path], index: list[str]) -> Path | None:
    """A clean virtualenv with `index` from the package index and `wheels` with --no-deps."""
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    python = path / "bin" / "python"
    for cmd in ([str(python), "-m", "pip", "install", "-q", *index],
                [str(python), "-m", "pip", "install", "-q", "--no-deps", *map(str, wheels)]):
        done = run(cmd)
        what = " ".join(Path(c).name for c in cmd[5:])
        if not report(done.returncode == 0, f"{path.name}: pip install {what}", done.stdout + done.stderr):
            return None
    done = run([str(python), "-m", "pip", "check"])
    report(done.returncode == 0, f"{path.name}: pip check (every dependency in the metadata is met)",
           done.stdout + done.stderr)
    done = run([str(python), "-m", "pip", "list", "--format=freeze"])
    present = {_dist_name(line) for line in done.stdout.splitlines()}
    report(not present & {"torch", "triton"}, f"{path.name}: neither torch nor triton installed")
    return python


def check_python(python: Path, what: str, code: str, cwd: Path) -> None:
    done = run([str(python), "-c", textwrap.dedent(code)], cwd=cwd)
    report(done.returncode == 0, f"{python.parents[1].name}: {what}", done.stdout + done.stderr)


CORE_ALONE = """
    import subprocess, sys
    import topgrad
    assert "numpy" not in sys.modules, "importing topgrad imported numpy"
    listed = subprocess.run([sys.executable, "-m", "topgrad.testing", "--list"],
                            capture_output=True, text=True)
    assert listed.returncode == 0 and "no topgrad backend is installed" in listed.stdout, listed
    assert topgrad.available_backends() == {}, topgrad.available_backends()
    try:
        topgrad.Tensor([1.0])
    except topgrad.BackendNotFoundError as exc:
        assert "pip install topgrad-numpy" in str(exc), str(exc)
        print(exc)
    else:
        raise AssertionError("Tensor([1.0]) worked without a backend")
"""

CORE_NUMPY = """
    import numpy as np
    import topgrad
    assert sorted(topgrad.available_backends()) == ["numpy"], topgrad.available_backends()
    x = topgrad.Tensor([[1.0, -2.0], [3.0, 4.0]])
    w = topgrad.Tensor([[0.5], [-1.0]])
    loss = x.linear(w).relu().sum()
    loss.backward()
    assert type(topgrad.get_backend()).__module__.startswith("topgrad_numpy")
    np.testing.assert_allclose(loss.numpy(), 2.5)  # relu([[2.5], [-2.5]]).sum()
    np.testing.assert_allclose(x.grad, [[0.5, -1.0], [0.0, 0.0]])
    np.testing.assert_allclose(w.grad, [[1.0], [-2.0]])
    x.grad = None
    y = (x * x).sum()
    y.backward()
    np.testing.assert_allclose(x.grad, 2 * x.numpy())
"""

EXAMPLES = """
    import importlib, pkgutil
    import topgrad_examples
    names = [m.name for m in pkgutil.walk_packages(topgrad_examples.__path__, "topgrad_examples.")
             if not m.name.endswith("__main__")]
    for name in names:
        importlib.import_module(name)
    assert any("model" in n for n in names), names
    print(len(names), "modules")
"""


def check_combinations(wheels: dict[str, Path], work: Path, allow_missing: bool) -> None:
    for combo, (dists, index) in COMBINATIONS.items():
        if not all(d in wheels for d in dists):
            report(allow_missing, f"{combo}: needs the wheels of {', '.join(dists)}"
                   + (" (skipped: --allow-missing)" if allow_missing else ""))
            continue
        python = make_env(work / combo, [wheels[d] for d in dists], index)
        if python is None:
            continue
        cwd = work / "empty"
        cwd.mkdir(exist_ok=True)
        if combo == "core":
            check_python(python, "import topgrad (no numpy); Tensor([1.0]) says to install a backend",
                         CORE_ALONE, cwd)
            done = run([str(python), "-m", "topgrad.testing"], cwd=cwd)
            report(done.returncode == 2 and "needs numpy: pip install numpy" in done.stderr,
                   "core: python -m topgrad.testing without numpy says what to install", done.stderr)
        elif combo == "core+numpy":
            check_python(python, "a forward and backward on the numpy backend", CORE_NUMPY, cwd)
            done = run([str(python), "-m", "topgrad.testing", "numpy"], cwd=cwd)
            last = done.stdout.strip().splitlines()[-1:] or [""]
            report(done.returncode == 0 and last[0].endswith(" passed, 0 failed"),
                   f"core+numpy: python -m topgrad.testing numpy ({last[0]})", done.stdout + done.stderr)
        else:
            done = run([str(python.parent / "topgrad-train"), "--help"], cwd=cwd)
            report(done.returncode == 0 and "usage" in done.stdout.lower(),
                   "core+numpy+examples: topgrad-train --help", done.stdout + done.stderr)
            check_python(python, "every module of topgrad_examples imports", EXAMPLES, cwd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--allow-missing", action="store_true",
                        help="skip distributions whose folder has no pyproject.toml yet")
    parser.add_argument("--no-isolation", action="store_true",
                        help="build with this interpreter's setuptools instead of an isolated environment")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args(argv)

    work = args.keep or Path(tempfile.mkdtemp(prefix="topgrad-wheels-"))
    work.mkdir(parents=True, exist_ok=True)
    wheels: dict[str, Path] = {}
    try:
        for dist in DISTS:
            if not (ROOT / dist.folder / "pyproject.toml").exists():
                report(args.allow_missing, f"{dist.folder}: has a pyproject.toml"
                       + (" (skipped: --allow-missing)" if args.allow_missing else ""))
                continue
            wheel = build(dist, work, isolation=not args.no_isolation)
            if wheel is not None:
                inspect(dist, wheel)
                wheels[dist.folder] = wheel
        check_combinations(wheels, work, args.allow_missing)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'all wheel checks passed' if not failures else f'{len(failures)} wheel checks failed'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
