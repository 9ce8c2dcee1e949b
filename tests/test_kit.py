"""The conformance kit (`topgrad.testing`): on the backend under test, on the example backend
installed from its own pyproject, and on a deliberately broken backend whose table must say what broke.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import topgrad
from topgrad import registry
from topgrad.testing.cases import CASES, OP_NAMES, OPTIONAL_OPS
from topgrad.testing.helpers import HELPER_CHECKS
from topgrad.testing.optimizers import OPTIMIZER_CHECKS
from topgrad.testing.runner import format_report, run
from venvs import make_venv, offline_pip

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "backends" / "topgrad-float64"
CLOSING = re.compile(r"^(\d+) passed, (?:(\d+) not provided, )?(\d+) failed$")


def _env(**extra: str) -> dict[str, str]:
    """This process's environment, one thread, and `extra`; an extra PYTHONPATH goes before this
    process's own, so that the child imports the topgrad under test (a worktree's, say) too."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **extra}
    path = os.pathsep.join(filter(None, [extra.get("PYTHONPATH"), os.environ.get("PYTHONPATH")]))
    env.pop("PYTHONPATH", None)
    return {**env, "PYTHONPATH": path} if path else env


def _kit(python: str | Path, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), "-m", "topgrad.testing", *args], cwd=cwd, env=_env(**env),
        capture_output=True, text=True, timeout=600,
    )


def pip_install(python: Path, *args: str) -> None:
    """pip install into `python`'s venv, offline (`offline_pip`)."""
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", *args],
        capture_output=True, text=True, timeout=600, env={**os.environ, **offline_pip()},
    )
    assert done.returncode == 0, done.stdout + done.stderr


# ---- the backend under test ----------------------------------------------------------------
def test_kit_passes_on_the_backend_under_test(backend_name: str) -> None:
    report = run(backend_name)
    assert report.ok, format_report(report)
    assert [row.name for row in report.rows if row.section == "op"] == [
        "Add", "Mul", "Div", "Sum", "Mean", "Max", "ReLU", "Exp", "Log", "Sqrt", "Abs", "Tanh", "Sigmoid",
        "LogSoftmax", "Softmax", "Linear", "Reshape", "Permute", "Slice", "Concat", "Conv2d", "MaxPool2d",
        "BatchNorm", "LayerNorm", "Attention",
    ]


def test_cli_prints_the_table_and_closing_line(backend_name: str, tmp_path: Path) -> None:
    done = _kit(sys.executable, backend_name, "-k", "Linear", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert re.match(r"^op\s+forward\s+backward\s+max error$", lines[2])
    assert re.match(r"^Linear\s+ok\s+ok\s+\d\.\de[+-]\d\d$", lines[4])
    assert lines[-1] == "1 passed, 0 failed"


def test_pytest_pyargs_runs_the_same_checks(backend_name: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--pyargs", "topgrad.testing",
         "--topgrad-backend", backend_name, "-k", "Reshape or SGD"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    reshape = sum(1 + (c.raises is None) for c in CASES if c.op == "Reshape")  # a raises case: no backward
    assert f"{reshape + 2} passed" in done.stdout, done.stdout


def test_unknown_backend_says_what_to_install(tmp_path: Path) -> None:
    done = _kit(sys.executable, "nosuchbackend", cwd=tmp_path)
    assert done.returncode == 2
    assert "pip install topgrad-nosuchbackend" in done.stderr


def test_a_plugin_module_that_does_not_import_is_a_clear_error(tmp_path: Path) -> None:
    done = _kit(sys.executable, "numpy", "--plugin", "no_such_plugin_module", cwd=tmp_path)
    assert done.returncode == 2 and "--plugin no_such_plugin_module: cannot import it" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_plugin_module_that_offers_nothing_is_named_first(tmp_path: Path) -> None:
    """`--plugin nohook` (a module without hooks) led with "To get it: pip install topgrad-mine" and
    named the plugin only at the end, among the skipped ones; `--plugin myplug.py` was not told
    that --plugin takes the module name."""
    (tmp_path / "nohook.py").write_text("x = 1\n")
    (tmp_path / "empty.py").write_text(
        "import topgrad\n\n@topgrad.hookimpl\ndef topgrad_backends():\n    return []\n")
    for module, says in [
        ("nohook", "error: --plugin nohook: it implements no topgrad hook, so it offers no backend: --plugin "
                   "takes the module with the @topgrad.hookimpl functions (topgrad_backends)"),
        ("empty", "error: --plugin empty: its topgrad_backends() returned [], so it offers no backend"),
    ]:
        done = _kit(sys.executable, "mine", "--plugin", module, cwd=tmp_path, PYTHONPATH=str(tmp_path))
        assert done.returncode == 2, done.stdout + done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert errors[0] == says and errors[1].startswith("error: no backend named 'mine'"), done.stderr
    done = _kit(sys.executable, "mine", "--plugin", "nohook.py", cwd=tmp_path, PYTHONPATH=str(tmp_path))
    assert done.returncode == 2 and done.stderr.strip().endswith(
        "--plugin takes a module name, not a file: --plugin nohook"), done.stderr


def test_a_plugin_module_that_raises_on_import_is_a_clear_error(tmp_path: Path) -> None:
    """Only ImportError was caught: a module whose own code raised gave a traceback and exit 1,
    which means a failed check."""
    (tmp_path / "raising_plugin.py").write_text("raise RuntimeError('no config file')\n")
    done = _kit(sys.executable, "numpy", "--plugin", "raising_plugin", cwd=tmp_path, PYTHONPATH=str(tmp_path))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "--plugin raising_plugin: importing it raised RuntimeError: no config file" in done.stderr
    assert "Traceback" not in done.stderr


def test_pytest_route_reports_an_op_clash_as_a_usage_error(tmp_path: Path) -> None:
    """--topgrad-backend caught only unknown and unusable backends: two plugins replacing one op
    ended pytest with an INTERNALERROR traceback instead of the registry's message."""
    plugin = textwrap.dedent("""
        import topgrad
        from topgrad import Op

        class Same(Op):
            def forward(self, x):
                return x

            def backward(self, grad):
                return (grad,)

        @topgrad.hookimpl
        def topgrad_ops(backend):
            return {"Tanh": topgrad.override(Same)} if backend == "numpy" else {}
    """)
    for name in ("tanh_one", "tanh_two"):
        (tmp_path / f"{name}.py").write_text(plugin)
    (tmp_path / "conftest.py").write_text(
        "import tanh_one, tanh_two, topgrad\n"
        "topgrad.register_plugin(tanh_one, name='one')\ntopgrad.register_plugin(tanh_two, name='two')\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--pyargs", "topgrad.testing",
         "--topgrad-backend", "numpy", "-k", "Reshape"],
        cwd=tmp_path, env=_env(PYTHONPATH=str(tmp_path)), capture_output=True, text=True, timeout=600,
    )
    out = done.stdout + done.stderr
    says = "ERROR: --topgrad-backend numpy: op 'Tanh' of backend 'numpy' is overridden by two plugins"
    assert says in out, out
    assert "INTERNALERROR" not in out and done.returncode == 4, out


def test_a_plugin_module_pluggy_rejects_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "wrong_hook.py").write_text(
        "import topgrad\n\n@topgrad.hookimpl\ndef topgrad_ops(name):\n    return None\n"
    )
    done = _kit(sys.executable, "numpy", "--plugin", "wrong_hook", cwd=tmp_path, PYTHONPATH=str(tmp_path))
    says = "--plugin wrong_hook: TypeError: plugin 'wrong_hook': its topgrad_ops(name) asks for 'name'"
    assert done.returncode == 2 and says in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_the_header_names_ops_that_plugins_replaced(tmp_path: Path) -> None:
    """A plugin that overrides an op with a 1% wrong one made the backend's row fail with nothing
    saying whose op it was; the header now names the plugin."""
    (tmp_path / "off_tanh.py").write_text(textwrap.dedent("""
        import numpy as np
        import topgrad
        from topgrad import Op

        class OffTanh(Op):
            def forward(self, x):
                out = np.tanh(x)
                self.save_for_backward(out)
                return out

            def backward(self, grad):
                (out,) = self.saved
                return (grad * (1 - out * out) * 1.01,)

        @topgrad.hookimpl
        def topgrad_ops(backend):
            return {"Tanh": topgrad.override(OffTanh)} if backend == "numpy" else {}
    """))
    done = _kit(sys.executable, "numpy", "--plugin", "off_tanh", "-k", "Tanh", cwd=tmp_path,
                PYTHONPATH=str(tmp_path))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "ops from plugins: Tanh (plugin 'off_tanh' replaces the backend's)" in done.stdout, done.stdout


def test_a_forward_that_raises_is_reported_once_per_case(tmp_path: Path) -> None:
    """Backward reruns the forward, so each case printed the same error again as 'backward raised
    ... in forward'; the backward column now fails without a second line."""
    (tmp_path / "broken_tanh.py").write_text(textwrap.dedent("""
        import topgrad
        from topgrad import Op

        class BrokenTanh(Op):
            def forward(self, x):
                raise RuntimeError("not written yet")

        @topgrad.hookimpl
        def topgrad_ops(backend):
            return {"Tanh": topgrad.override(BrokenTanh)} if backend == "numpy" else {}
    """))
    done = _kit(sys.executable, "numpy", "--plugin", "broken_tanh", "-k", "Tanh", cwd=tmp_path,
                PYTHONPATH=str(tmp_path))
    cases = sum(c.op == "Tanh" for c in CASES)
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.search(r"^Tanh\s+FAIL\s+FAIL\s+crashed$", done.stdout, re.MULTILINE), done.stdout
    assert done.stdout.count("forward: raised RuntimeError: not written yet") == cases, done.stdout
    assert "backward:" not in done.stdout, done.stdout


def test_plugin_option_for_an_installed_plugin_and_zero_tolerance(backend_name: str, tmp_path: Path) -> None:
    """--plugin naming a plugin its entry point registered already is harmless, and --rtol 0 is
    taken as given (not as the default)."""
    plugin = f"topgrad_{backend_name}.plugin"
    done = _kit(sys.executable, backend_name, "--plugin", plugin, "-k", "Reshape", "--rtol", "0",
                cwd=tmp_path)
    out = done.stdout + done.stderr
    assert done.returncode == 0 and done.stdout.strip().endswith("1 passed, 0 failed"), out
    done = _kit(sys.executable, backend_name, "-k", "Linear", "--rtol", "0", cwd=tmp_path)
    assert done.returncode == 1 and "> 0 at index" in done.stdout, done.stdout + done.stderr
    # the values show the difference the row reports (6 digits printed "got -1.10387, expected -1.10387")
    shown = re.findall(r"\(got (\S+), expected (\S+)\)", done.stdout)
    assert shown and all(got != want for got, want in shown), done.stdout


@pytest.mark.parametrize("rtol", ["-1", "nan"])
def test_a_tolerance_below_zero_is_a_usage_error(rtol: str, tmp_path: Path) -> None:
    """--rtol -1 ran and failed every row ("max error 9.68e-08 > -1"); NaN would pass none."""
    done = _kit(sys.executable, "numpy", "-k", "Linear", "--rtol", rtol, cwd=tmp_path)
    assert done.returncode == 2 and "--rtol must be 0 or more (0: exact)" in done.stderr, done.stderr


def test_subclassing_backend_conformance(backend_name: str, tmp_path: Path) -> None:
    """An author's own suite: subclass, set `backend`, run pytest; the summary names the backend
    checked and how it was chosen (a class without `backend` checks the default one)."""
    (tmp_path / "test_mine.py").write_text(textwrap.dedent(f"""
        import topgrad.testing

        class TestMine(topgrad.testing.BackendConformance):
            backend = {backend_name!r}

        class TestForgotten(topgrad.testing.BackendConformance):
            pass
    """))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_mine.py", "-k", "Mean"],
        cwd=tmp_path, env=_env(TOPGRAD_BACKEND="numpy"), capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{4 * sum(c.op == 'Mean' for c in CASES)} passed" in done.stdout
    assert f"TestMine checked backend {backend_name!r} (its `backend`)" in done.stdout, done.stdout
    assert "TestForgotten checked backend 'numpy' (chosen by $TOPGRAD_BACKEND)" in done.stdout, done.stdout
    env = {k: v for k, v in _env().items() if k != "TOPGRAD_BACKEND"}  # said "`backend` not set" either way
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_mine.py",
         "-k", "Forgotten and Mean", "--topgrad-backend", "numpy"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert "TestForgotten checked backend 'numpy' (chosen by --topgrad-backend)" in done.stdout, done.stdout


def test_list_names_both_plugins_of_a_clashing_backend_name(tmp_path: Path) -> None:
    for module in ("clash_a", "clash_b"):
        (tmp_path / f"{module}.py").write_text(
            "import topgrad\n\n@topgrad.hookimpl\ndef topgrad_backends():\n"
            "    return [topgrad.BackendSpec('numpy', 'nowhere:Backend', 'a second numpy')]\n"
        )
    done = _kit(sys.executable, "--plugin", "clash_a", "--plugin", "clash_b", "--list", cwd=tmp_path,
                PYTHONPATH=str(tmp_path))
    line = next(x for x in done.stdout.splitlines() if x.startswith("numpy"))
    assert "offered by" in line and "'clash_a'" in line and "'clash_b'" in line, done.stdout


# ---- the example backend, installed from its pyproject ----------------------------------------
@pytest.fixture(scope="module")
def example_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    python = make_venv(tmp_path_factory.mktemp("venv-float64"))
    source = tmp_path_factory.mktemp("src") / EXAMPLE.name  # a copy: the build leaves the tree alone
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    pip_install(python, str(source))
    return python


def test_example_backend_passes_the_kit(example_python: Path, tmp_path: Path) -> None:
    done = _kit(example_python, "float64", "--rtol", "1e-12", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    passed, absent, failed = map(int, CLOSING.match(done.stdout.strip().splitlines()[-1]).groups())
    assert failed == 0 and absent == len(OPTIONAL_OPS), done.stdout  # the example has none of them
    assert passed == len(OP_NAMES) - len(OPTIONAL_OPS) + len(HELPER_CHECKS) + len(OPTIMIZER_CHECKS)
    for op in OPTIONAL_OPS:
        assert re.search(rf"^{op}\s+-\s+-\s+not provided \(optional\)$", done.stdout, re.M), done.stdout


def test_example_backend_is_found_through_its_entry_point(example_python: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [str(example_python), "-c",
         "import sys, topgrad; print(sorted(topgrad.available_backends())); "
         "print('topgrad_float64.backend' in sys.modules, 'numpy' in sys.modules)"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    names, loaded = done.stdout.splitlines()
    assert "float64" in names
    assert loaded == "False False", "listing backends must import neither the backend nor numpy"


DEGENERATE = """
import warnings

import numpy as np
import pytest
import topgrad
import topgrad_float64.plugin
from topgrad import Tensor

warnings.simplefilter("error")  # a numpy RuntimeWarning on the way fails too
topgrad.register_plugin(topgrad_float64.plugin)
topgrad.set_backend("float64")


def grads(out, *inputs):
    out.backward(np.ones(out.shape))
    return [t.grad.shape for t in inputs]


x, w, b = Tensor.ones(2, 3), Tensor.ones(3, 0), Tensor.ones(0)
assert grads(x.linear(w, b), x, w, b) == [(2, 3), (3, 0), (0,)]
x, w, b = Tensor.ones(2, 0), Tensor.ones(0, 4), Tensor.ones(4)
out = x.linear(w, b)
assert np.array_equal(out.numpy(), np.ones((2, 4))) and grads(out, x, w, b) == [(2, 0), (0, 4), (4,)]
assert np.array_equal(b.grad, [2, 2, 2, 2])
for shape, axis in (((3, 0), -1), ((0, 5), 0)):
    x = Tensor.ones(*shape)
    assert grads(x.logsoftmax(axis=axis), x) == [shape]
x = Tensor(2.0)
out = x.logsoftmax()
assert out.item() == 0.0 and grads(out, x) == [()] and x.grad == 0.0
x, w, b = Tensor.ones(1, 5, 5, 0), Tensor.ones(3, 3, 0, 4), Tensor.ones(4)
out = x.conv2d(w, b)
assert np.array_equal(out.numpy(), np.ones((1, 3, 3, 4)))
assert grads(out, x, w, b) == [(1, 5, 5, 0), (3, 3, 0, 4), (4,)]
running_mean, running_var = Tensor.zeros(3, requires_grad=False), Tensor.ones(3, requires_grad=False)
with pytest.raises(ValueError, match=r"^BatchNorm: training needs more than one value per channel"):
    Tensor.ones(1, 3).batchnorm(None, None, running_mean=running_mean, running_var=running_var)
assert np.array_equal(running_var.numpy(), np.ones(3))
with pytest.raises(ValueError, match=r"eval mode \\(training=False\\) needs running_mean and running_var"):
    Tensor.ones(2, 3).batchnorm(Tensor.ones(3), Tensor.zeros(3), training=False)
x = Tensor.ones(0, 3)  # the mean of nothing is NaN, as in PyTorch, with no numpy warning
assert np.isnan(x.mean().item()) and np.isnan(x.mean(axis=0).numpy()).all()
assert grads(x.mean(axis=0), x) == [(0, 3)]
print("all ok")
"""


def test_example_backend_takes_degenerate_shapes(tmp_path: Path) -> None:
    """The guide's backend failed inside numpy: Linear's and Conv2d's backward reshaped with -1,
    which cannot be inferred where an axis is 0; LogSoftmax took the max of an empty axis and gave
    a 0-d input a numpy scalar back; BatchNorm trained on one value per channel (running_var NaN,
    where PyTorch and the shipped backends refuse) and met eval without running statistics with an
    AttributeError; Mean warned "Mean of empty slice". Each now gives PyTorch's shapes and values, or
    the shipped backends' error."""
    (tmp_path / "degenerate.py").write_text(DEGENERATE)
    done = subprocess.run([sys.executable, "degenerate.py"], cwd=tmp_path, capture_output=True, text=True,
                          env=_env(PYTHONPATH=str(EXAMPLE / "src")), timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "all ok", done.stdout + done.stderr


# ---- a broken backend ------------------------------------------------------------------------
BROKEN = '''
"""The example float64 backend with six deliberate mistakes."""
from types import SimpleNamespace

import numpy as np

import topgrad
from topgrad_float64 import ops as good
from topgrad_float64.backend import Float64Backend


class Mul(good.Mul):
    def backward(self, grad):  # forgets to reduce broadcast gradients
        a, b = self.saved
        return grad * b, grad * a


class ReLU(good.ReLU):
    def backward(self, grad):  # gradient 1 at 0
        (x,) = self.saved
        return (np.asarray(grad * (x >= 0)),)


class LogSoftmax(good.LogSoftmax):
    def forward(self, x, axis=-1):  # not stable: overflows for large logits
        e = np.exp(x)
        out = np.log(e / e.sum(axis=axis, keepdims=True))
        self.axis = axis
        self.save_for_backward(out)
        return out


class BatchNorm(good.BatchNorm):
    def forward(self, x, gamma, beta, running_mean=None, running_var=None, **params):
        return super().forward(x, gamma, beta, **params)  # never updates the running statistics


table = {name: getattr(good, name) for name in dir(good) if isinstance(getattr(good, name), type)}
table.update(Mul=Mul, ReLU=ReLU, LogSoftmax=LogSoftmax, BatchNorm=BatchNorm)
del table["Attention"]  # missing op


class Broken(Float64Backend):
    name = "broken"
    ops = SimpleNamespace(**table)

    def randn(self, shape, seed=None):  # ignores the seed
        return np.random.default_rng().standard_normal(shape)


@topgrad.hookimpl
def topgrad_backends():
    return [topgrad.BackendSpec("broken", Broken)]
'''


def table_rows(out: str) -> dict[str, list[str]]:
    """The kit's table as {row name: [forward, backward, max error]}."""
    body = out.split("-" * 10, 1)[1].split("\n\n", 1)[0]
    cells = [re.split(r"\s{2,}", line.strip()) for line in body.splitlines()]
    return {c[0]: c[1:] for c in cells if len(c) == 4}


EXPECTED_FAILURES = {
    "Mul": "Mul.backward returned a gradient of shape (2, 3) for input 1 of shape (3,)",
    "ReLU": "gradient of input 0 (x): max error",
    "LogSoftmax": "LogSoftmax[(2,6) logits ~1000] forward: output: max error inf",
    "BatchNorm": "running_mean after forward: max error",
    "Attention": "backend 'broken' has no op 'Attention'",
    "randn": "randn with the same seed gave different arrays",
}


def test_broken_backend_fails_with_a_useful_table(tmp_path: Path) -> None:
    (tmp_path / "broken_backend.py").write_text(BROKEN)
    path = os.pathsep.join([str(tmp_path), str(EXAMPLE / "src")])
    done = _kit(sys.executable, "broken", "--plugin", "broken_backend", cwd=tmp_path, PYTHONPATH=path)
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    rows = table_rows(out)
    assert {name for name, cells in rows.items() if "FAIL" in cells} == set(EXPECTED_FAILURES), out
    assert re.search(r"^Mul\s+ok\s+FAIL\s", out, re.M), out
    assert re.search(r"^ReLU\s+ok\s+FAIL\s", out, re.M), out
    assert re.search(r"^Attention\s+FAIL\s+FAIL\s+missing$", out, re.M), out
    failures = out.split("failures:")[1]
    for name, message in EXPECTED_FAILURES.items():
        assert message in failures, f"{name}: {message!r} not in\n{failures}"
    absent = len(OPTIONAL_OPS)
    assert out.strip().splitlines()[-1] == f"{len(rows) - 6 - absent} passed, {absent} not provided, 6 failed"
    assert "ReLU[(2,4) zeros] backward" in failures  # the case that failed is named
    assert "ReLU[(3,4)]" not in failures


def test_backend_conformance_subclass_reports_the_broken_case(tmp_path: Path) -> None:
    (tmp_path / "broken_backend.py").write_text(BROKEN)
    (tmp_path / "test_broken.py").write_text(textwrap.dedent("""
        import topgrad
        import topgrad.testing
        import broken_backend

        topgrad.register_plugin(broken_backend, name="broken_backend")

        class TestBroken(topgrad.testing.BackendConformance):
            backend = "broken"

        class TestBrokenKnown(topgrad.testing.BackendConformance):
            backend = "broken"
            expected_failures = {"ReLU[(2,4) zeros] backward": "gradient 1 at 0", "Reshape": "passes"}
    """))
    path = os.pathsep.join([str(tmp_path), str(EXAMPLE / "src")])
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_broken.py", "-k",
         "ReLU or Reshape"],
        cwd=tmp_path, env=_env(PYTHONPATH=path), capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    # TestBroken: the ReLU-at-0 backward fails; TestBrokenKnown: it is an expected failure,
    # and the Reshape tests (forward and backward of each case), listed but passing, fail as
    # strict xfails that passed
    relu, reshape = (sum(1 + (c.raises is None) for c in CASES if c.op == op) for op in ("ReLU", "Reshape"))
    failed, passed = 1 + reshape, (relu - 1) + reshape + (relu - 1)
    summary = rf"{failed} failed, {passed} passed, (\d+ deselected, )?1 xfailed"
    assert re.search(summary, done.stdout), done.stdout
    assert "TestBroken::test_backward[ReLU[(2,4) zeros]]" in done.stdout
    # the failure names the op, the case and the input, as the kit's own failure lines do
    assert "ReLU[(2,4) zeros] backward: gradient of input 0 (x): max error" in done.stdout, done.stdout
    # a bare op name says how to mark one direction only
    assert ("[XPASS(strict)] passes ('Reshape' marks forward and backward alike; 'Reshape forward' or "
            "'Reshape backward' marks one)") in done.stdout, done.stdout


@contextmanager
def _numpy_variant(name: str, **ops: type) -> Iterator[type]:
    """The numpy backend with some ops replaced, registered in-process as `name` while inside."""
    pytest.importorskip("topgrad_numpy")
    from topgrad_numpy import ops as numpy_ops
    from topgrad_numpy.backend import NumpyBackend

    table = {op: getattr(numpy_ops, op) for op in OP_NAMES}
    variant = type(name.title(), (NumpyBackend,), {"name": name, "ops": SimpleNamespace(**{**table, **ops})})
    topgrad.register_backend(topgrad.BackendSpec(name, variant))
    try:
        yield variant
    finally:
        registry._in_process.pop(name)
        registry._loaded.pop(name, None)


@contextmanager
def _selected(name: str) -> Iterator[None]:
    """Backend `name` selected while inside; afterwards the one selected before."""
    before = topgrad.get_backend().name
    topgrad.set_backend(name)
    try:
        yield
    finally:
        topgrad.set_backend(before)


def test_a_property_needing_a_missing_op_names_the_op() -> None:
    """x.T on a backend without Permute said "'Tensor' object has no attribute 'T'": Python hands a
    property's AttributeError to Tensor.__getattr__, which answered as for a missing attribute."""
    with _numpy_variant("no-permute") as variant:
        ops = vars(variant.ops).copy()
        del ops["Permute"]
        variant.ops = SimpleNamespace(**ops)
        with _selected("no-permute"), pytest.raises(AttributeError,
                                                     match="backend 'no-permute' has no op 'Permute'"):
            _ = topgrad.Tensor([[1.0, 2.0]]).T


def test_softmax_without_its_ops_names_what_the_fallback_needs() -> None:
    """x.softmax falls back to logsoftmax(x).exp(); on a backend with neither Softmax nor Exp (both
    optional) the error was "has no op 'Exp'", naming neither softmax nor what would fix it."""
    with _numpy_variant("no-softmax") as variant:
        ops = vars(variant.ops).copy()
        for name in ("Softmax", "Exp"):
            ops.pop(name, None)
        variant.ops = SimpleNamespace(**ops)
        with _selected("no-softmax"), pytest.raises(AttributeError, match=re.escape(
                "x.softmax: backend 'no-softmax' has no Softmax op, and the fallback, logsoftmax(x).exp(), "
                "needs Exp, which it lacks too")):
            topgrad.Tensor([[1.0, 2.0]]).softmax()


def test_a_leaf_of_another_type_than_the_backends_arrays_is_refused() -> None:
    """numpy's multiply of a 0-d array gives a numpy scalar: a backend whose copy() is mul(a, 1.0)
    stored one in the leaf, which then silently got no gradient."""
    import numpy as np

    with _numpy_variant("scalar-copy") as variant:
        variant.copy = lambda self, a: np.multiply(a, 1.0)
        with _selected("scalar-copy"), pytest.raises(
                TypeError, match=r"backend 'scalar-copy' made a numpy.float32 of the data, not one of its "
                                 r"arrays \(numpy.ndarray\): its asarray and"):
            topgrad.Tensor(np.array(2.0, np.float32))


def test_helpers_that_return_numpy_scalars_for_0d_arrays_fail_their_own_rows() -> None:
    """mul written as `a * b` gives a numpy scalar for 0-d arrays: its row said ok, and the failure
    showed up in Add[()+()] and Mul rows, or in an optimizer step on a 0-d parameter."""
    import numpy as np

    def scalar_of(f: Callable[..., object]) -> Callable[..., object]:  # numpy's result as it comes
        return lambda self, *arrays: f(*arrays)[()]

    with _numpy_variant("scalar-helpers") as variant:
        variant.add, variant.sub = scalar_of(np.add), scalar_of(np.subtract)
        variant.mul, variant.div = scalar_of(np.multiply), scalar_of(np.divide)
        variant.sqrt, variant.copy = scalar_of(np.sqrt), scalar_of(np.array)
        with _selected("scalar-helpers"):
            for helper in ("add", "sub", "mul", "div", "sqrt", "copy/memory_key"):
                outcome = HELPER_CHECKS[helper](1e-4)
                assert not outcome.ok, helper
                says = r"0-d arrays? returned a numpy\.float.*np\.asarray"
                assert re.search(says, outcome.message), outcome


def test_a_gradient_for_a_plain_value_argument_fails() -> None:
    """The guide's example returned dL/dgamma and dL/dbeta for gamma=None and beta=None; the
    engine drops such arrays without a word, and the kit said nothing either."""
    import numpy as np
    from topgrad_numpy import ops as numpy_ops

    class Wasteful(numpy_ops.LayerNorm):
        def backward(self, grad: np.ndarray) -> tuple[object, ...]:
            gx, gg, gb = super().backward(grad)
            ones = np.ones(grad.shape[-1], grad.dtype)
            return gx, ones if gg is None else gg, ones if gb is None else gb

    with _numpy_variant("wasteful", LayerNorm=Wasteful):
        text = format_report(run("wasteful", only="LayerNorm"))
    says = "backward returned an array for input 1 (gamma), which is None, not a Tensor: return None there"
    assert says in text, text
    assert re.search(r"^LayerNorm\s+ok\s+FAIL\s", text, re.M), text


def test_the_kit_counts_inputs_from_0_as_the_engine_does() -> None:
    """The kit named Linear's w "input 2 (w)", counting from 1, while the engine's messages in the
    same report ("returned a gradient of shape ... for input 1"), graph() and anomaly mode count
    from 0: one report named one input by two numbers."""
    from topgrad_numpy import ops as numpy_ops

    class DoubledW(numpy_ops.Linear):
        def backward(self, grad: object) -> tuple[object, ...]:
            gx, gw, gb = super().backward(grad)
            return gx, gw * 2, gb

    class ShortW(numpy_ops.Linear):
        def backward(self, grad: object) -> tuple[object, ...]:
            gx, gw, gb = super().backward(grad)
            return gx, gw[:-1], gb

    said = {}
    for name, op in (("doubled-w", DoubledW), ("short-w", ShortW)):
        with _numpy_variant(name, Linear=op):
            said[name] = format_report(run(name, only="Linear[(4,3)@(3,5)+(5,)]"))
    assert "backward: gradient of input 1 (w): max error" in said["doubled-w"], said["doubled-w"]
    assert "a gradient of shape (2, 5) for input 1 of shape (3, 5)" in said["short-w"], said["short-w"]


def test_a_zero_out_that_leaves_a_0d_value_fails_its_row() -> None:
    """The 0-d case checked only that the result was a backend array, not that it held zero."""
    import numpy as np

    with _numpy_variant("lazy-zero") as variant:
        variant.zero_out = lambda self, a: a if a.ndim == 0 else np.zeros_like(a)
        with _selected("lazy-zero"):
            outcome = HELPER_CHECKS["zero_out"](1e-4)
    assert not outcome.ok and "zero_out(0-d a)" in outcome.message, outcome


def test_an_add_gradients_that_drops_a_part_fails_its_row() -> None:
    """backward sums a tensor's gradients with add_gradients: one that keeps only the first
    fails the kit's row, not only the residual graphs later."""
    with _numpy_variant("first-only") as variant:
        variant.add_gradients = lambda self, total, part: total
        with _selected("first-only"):
            outcome = HELPER_CHECKS["add_gradients"](1e-4)
    assert not outcome.ok and "add_gradients(a, b)" in outcome.message, outcome


def test_ops_written_for_ordinary_shapes_fail_the_degenerate_cases() -> None:
    """The kit had one degenerate case (an empty Slice), and passed the guide's backend, which
    failed inside numpy on shapes PyTorch takes. Ops written as it was fail exactly those cases:
    a Linear whose backward reshapes with -1 (no inputs, no outputs), a LogSoftmax taking an empty
    axis's max and giving a 0-d input a numpy scalar back, a BatchNorm training on one value per
    channel. The kit's own reference passes them (its Linear reshaped with -1 too)."""
    import numpy as np
    from topgrad_numpy import ops as numpy_ops

    class MinusOneLinear(topgrad.Op):
        def forward(self, x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
            if x.shape[-1] != w.shape[0]:
                raise ValueError(f"Linear: x of shape {x.shape} does not match w of shape {w.shape}")
            self.save_for_backward(x, w)
            self.has_bias = b is not None
            return x @ w + b if b is not None else x @ w

        def backward(self, grad: np.ndarray) -> tuple[object, ...]:
            x, w = self.saved
            rows = grad.reshape(-1, grad.shape[-1])
            grad_b = rows.sum(axis=0) if self.has_bias else None
            return grad @ w.T, x.reshape(-1, x.shape[-1]).T @ rows, grad_b

    class UnguardedLogSoftmax(topgrad.Op):
        def forward(self, x: np.ndarray, axis: int = -1) -> np.ndarray:
            shifted = x - x.max(axis=axis, keepdims=True)
            out = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
            self.axis = axis
            self.save_for_backward(out)
            return out

        def backward(self, grad: np.ndarray) -> tuple[np.ndarray]:
            (out,) = self.saved
            return (np.asarray(grad - np.exp(out) * grad.sum(axis=self.axis, keepdims=True)),)

    class OneValueBatchNorm(numpy_ops.BatchNorm):
        def forward(self, x: np.ndarray, *args: object, **params: object) -> np.ndarray:
            if params.get("training", True) and x.size == x.shape[-1]:
                return np.zeros_like(x)  # normalizes one value per channel, as the guide's did
            return super().forward(x, *args, **params)

    with _numpy_variant("ordinary-shapes", Linear=MinusOneLinear, LogSoftmax=UnguardedLogSoftmax,
                        BatchNorm=OneValueBatchNorm):
        report = run("ordinary-shapes", only="Linear or LogSoftmax or BatchNorm")
    failures = [f for row in report.rows for f in row.failures]
    assert [f.split(":")[0] for f in failures] == [
        "LogSoftmax[() 0-d] forward", "LogSoftmax[(0,5) axis=0 empty axis] forward",
        "Linear[(2,3)@(3,0)+(0,) no outputs] backward", "Linear[(2,0)@(0,4)+(4,) no inputs] backward",
        "BatchNorm[(1,3) train one value per channel raises] forward",
    ], failures
    assert "cannot reshape array of size 0" in failures[2] and "returned a numpy.float32" in failures[0]
    assert failures[4].endswith("forward: returned an output where it must raise ValueError (inputs of "
                                "shapes (1, 3), (3,), (3,))")


def test_an_op_that_changes_the_dtype_fails() -> None:
    """Values right, dtype promoted to float64: the kit says so (parameters would follow)."""
    from topgrad_numpy import ops as numpy_ops

    class PromotingAdd(numpy_ops.Add):
        def forward(self, a: object, b: object) -> object:
            return super().forward(a, b).astype("float64")

    with _numpy_variant("promoting", Add=PromotingAdd):
        text = format_report(run("promoting", only="Add"))
    assert "output: dtype float64, but the inputs are float32 (numpy promotes: np.zeros" in text, text
    assert re.search(r"^Add\s+FAIL\s+FAIL\s+-$", text, re.M), text


def test_an_op_writing_into_its_input_is_told_the_usual_causes() -> None:
    """The failure named the problem alone; the usual cause is an out= or a += on the input array."""
    from topgrad_numpy import ops as numpy_ops

    class InPlaceExp(numpy_ops.Exp):
        def forward(self, x: Any) -> Any:
            out = super().forward(x)
            x += 1.0  # the habit the kit catches: the input's array is written
            return out

    with _numpy_variant("inplace", Exp=InPlaceExp):
        text = format_report(run("inplace", only="Exp"))
    assert "the op modified its input 0 (x) in place (an out= or an in-place operator such as += on an " \
           "input array; write into a new array)" in text, text


def test_a_forward_of_the_wrong_shape_does_not_blame_backward() -> None:
    """The backward row used to say "backward: grad of shape (3, 4) for a tensor of shape (12,)",
    from the kit's own seed: the op's backward never ran. A backward returning nothing for a
    one-input op is asked about its `return`."""
    from topgrad_numpy import ops as numpy_ops

    class FlatReLU(numpy_ops.ReLU):
        def forward(self, x: object) -> object:
            return super().forward(x).ravel()

    class SilentExp(numpy_ops.Exp):
        def backward(self, grad: object) -> None:
            super().backward(grad)  # the `return` forgotten

    with _numpy_variant("flat", ReLU=FlatReLU, Exp=SilentExp), pytest.warns(RuntimeWarning, match="Exp"):
        text = format_report(run("flat", only="ReLU")) + format_report(run("flat", only="Exp"))
    assert re.search(r"output: shape \(\d+,\), expected \(", text), text
    assert "not run: forward's output has shape" in text and "fix forward first" in text, text
    assert "grad of shape" not in text, text
    assert "got no gradient (its backward entry was None; is a `return` missing?)" in text, text


def test_a_conv2d_that_mishandles_named_padding_and_unnamed_shape_errors_fail() -> None:
    """The kit passed a Conv2d that took padding='same' for no padding (it had no named-padding case),
    and no case of Reshape, Conv2d, BatchNorm, LayerNorm or Attention checked that incompatible
    shapes raise a ValueError naming the op and both shapes (CONTRACT 4)."""
    import numpy as np
    from topgrad_numpy import ops as numpy_ops

    class UnnamedPadding(numpy_ops.Conv2d):
        def forward(self, x: np.ndarray, w: np.ndarray, b: object = None, stride: object = 1,
                    padding: object = 0) -> np.ndarray:
            return super().forward(x, w, b, stride=stride, padding=0 if isinstance(padding, str) else padding)

    class PlainReshape(topgrad.Op):
        def forward(self, x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
            self.shape = x.shape
            return x.reshape(shape)  # numpy's error names neither Reshape nor x's shape

        def backward(self, grad: np.ndarray) -> tuple[np.ndarray]:
            return (grad.reshape(self.shape),)

    with _numpy_variant("unnamed", Conv2d=UnnamedPadding, Reshape=PlainReshape):
        report = run("unnamed", only="Conv2d or Reshape")
    failures = [line for row in report.rows for line in row.failures]
    assert sorted({re.split(" (?:forward|backward):", line)[0] for line in failures}) == [
        "Conv2d[(1,5,4,2) 3x3 same bias]", "Conv2d[(2,4,6,2) 3x5 same]", "Reshape[(2,3)->(4,) raises]"
    ], failures
    assert "its message should name the op 'Reshape' and the shapes (2, 3)" in failures[0]
    cases = {c.id for c in CASES if c.raises is not None}
    for op in ("Add", "Mul", "Linear", "Reshape", "Conv2d", "BatchNorm", "LayerNorm", "Attention"):
        assert any(case.startswith(f"{op}[") for case in cases), f"no bad-shape case for {op}"


def test_batchnorm_in_eval_mode_without_running_statistics_must_be_refused() -> None:
    """No case checked it: a backend that normalized by the batch's own statistics in eval mode
    without running statistics (PyTorch's batch_norm, and the shipped backends, refuse it) passed."""
    import numpy as np
    from topgrad_numpy import ops as numpy_ops

    class BatchStatsInEval(numpy_ops.BatchNorm):
        def forward(self, x: np.ndarray, gamma: Any, beta: Any, running_mean: Any = None,
                    running_var: Any = None, training: bool = True, momentum: float = 0.1,
                    eps: float = 1e-5) -> np.ndarray:
            batch = training or running_mean is None  # as torch's module without running statistics
            return super().forward(x, gamma, beta, running_mean, running_var, batch, momentum, eps)

    with _numpy_variant("batch-stats-in-eval", BatchNorm=BatchStatsInEval):
        report = run("batch-stats-in-eval", only="BatchNorm")
    assert report.rows[0].failures == [
        "BatchNorm[(5,3) eval no running stats raises] forward: returned an output where it must raise "
        "ValueError (inputs of shapes (5, 3), (3,), (3,))"
    ], format_report(report)


def test_mistakes_that_give_right_values_are_caught() -> None:
    """Right numbers, wrong habits, each of which breaks something the kit's values cannot show:
    a backward writing into `grad` (Add hands one array to two ops), arrays kept on the op
    (never freed), a forward that forgets save_for_backward, and copy() returning its input."""
    import numpy as np
    from topgrad_numpy import ops as numpy_ops

    class ScribblingReLU(numpy_ops.ReLU):
        def backward(self, grad: np.ndarray) -> tuple[np.ndarray]:
            (out,) = self.saved
            grad *= out != 0
            return (grad,)

    class HoardingMul(numpy_ops.Mul):
        def forward(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
            self.a, self.b = a, b
            return super().forward(a, b)

    class ForgetfulLogSoftmax(numpy_ops.LogSoftmax):
        def forward(self, x: np.ndarray, axis: int = -1) -> np.ndarray:
            out = super().forward(x, axis)
            self._intermediate = ()
            return out

    with _numpy_variant("sloppy", ReLU=ScribblingReLU, Mul=HoardingMul, LogSoftmax=ForgetfulLogSoftmax) as b:
        b.copy = lambda self, a: a
        text = format_report(run("sloppy"))
    assert "backward wrote into its incoming gradient `grad`" in text, text
    assert "forward kept arrays on the op (self.a, self.b)" in text, text
    assert "LogSoftmax saved nothing for backward" in text and "save_for_backward" in text, text
    assert "copy(a) returned a itself" in text, text
    assert text.strip().splitlines()[-1].endswith(", 4 failed"), text
    for row in ("ReLU", "Mul", "LogSoftmax"):
        assert re.search(rf"^{row}\s+ok\s+FAIL\s", text, re.M), text


def test_to_numpy_returning_another_type_is_named_instead_of_every_row_failing_obscurely() -> None:
    """The kit reads every result through to_numpy: a backend whose to_numpy returns its own array
    (not an ndarray) saw 'modified its input in place' and other false messages on every row."""
    with _numpy_variant("own-to-numpy") as b:
        b.to_numpy = lambda self, a: a.tolist()
        text = format_report(run("own-to-numpy", only="Add"))
    assert "to_numpy returned a builtins.list; it must return a numpy.ndarray" in text, text
    assert "in place" not in text and "incoming gradient" not in text, text
    assert "reading the result back failed" in text and "forward: raised" not in text, text  # not the op


def test_a_failure_line_names_its_row_once() -> None:
    """A helper's or optimizer's crash repeated the row's name ("sqrt: sqrt: reading the result
    back failed", "sqrt: sqrt raised ValueError"), and an op case its direction ("Add[...] forward:
    forward: reading ..."): the line's prefix names it already."""
    def refusing_sqrt(self: object, a: object) -> object:
        raise ValueError("not written yet")

    with _numpy_variant("own-to-numpy") as b:
        b.to_numpy = lambda self, a: a.tolist()
        unread = format_report(run("own-to-numpy", only="sqrt or SGD momentum=0.9 or Add[(2,3)+(2,3)]"))
    with _numpy_variant("refusing-sqrt") as b:
        b.sqrt = refusing_sqrt
        raised = format_report(run("refusing-sqrt", only="sqrt"))
    for line in ("  sqrt: reading the result back failed: to_numpy returned a builtins.list",
                 "  SGD momentum=0.9: reading the result back failed: to_numpy returned",
                 "  Add[(2,3)+(2,3)] forward: reading the result back failed: to_numpy returned"):
        assert line in unread, unread
    assert "  sqrt: raised ValueError: not written yet (at " in raised, raised


def test_a_raising_forward_is_named_once_in_each_line() -> None:
    """A forward that raised read "Tanh[()] forward: forward raised ...", and, under pytest, its
    backward "Tanh[()] backward: backward raised ... in forward", blaming backward, which never ran;
    a raises case's wrong exception "... forward: shapes ... should raise ValueError; forward raised"."""
    import numpy as np
    from topgrad.testing.opcheck import check_backward

    class RaisingTanh(topgrad.Op):
        def forward(self, x: np.ndarray) -> np.ndarray:
            raise RuntimeError("not written yet")

    class TypeErrorAdd(topgrad.Op):
        def forward(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
            raise TypeError("no broadcasting here")

    with _numpy_variant("raising", Tanh=RaisingTanh, Add=TypeErrorAdd):
        report = run("raising", only="Tanh[()] or Add[(2,3)+(4,) raises]")
        with _selected("raising"):  # what BackendConformance's test_backward reports
            backward = check_backward(next(c for c in CASES if c.id == "Tanh[()]"))
    text = format_report(report)
    assert "  Tanh[()] forward: raised RuntimeError: not written yet (at " in text, text
    assert ("  Add[(2,3)+(4,) raises] forward: should raise ValueError (inputs of shapes (2, 3), (4,)), "
            "but raised TypeError: no broadcasting here (at ") in text, text
    assert text.count("forward raised") == 0 and "Tanh[()] backward" not in text, text
    tanh = report.rows[1].backward  # the table's backward cell: FAIL, and no line of its own
    assert tanh is not None and tanh.message == "not run: forward raised", tanh
    assert backward is not None and backward.message.startswith(
        "not run: forward raised RuntimeError: not written yet (at "), backward.message


def test_asarray_ignoring_float64_fails() -> None:
    """A float32 answer to dtype='float64' made gradcheck and users believe they ran in float64;
    refusing float64 (an exception) is allowed."""
    import numpy as np

    with _numpy_variant("narrow") as b:
        base = b.asarray
        b.asarray = lambda self, obj, dtype="float32": base(self, obj, "float32")
        text = format_report(run("narrow", only="asarray"))
    assert "asarray(dtype='float64') returned dtype float32: return float64 or raise" in text, text

    with _numpy_variant("refusing") as b:
        def refuse(self: object, obj: object, dtype: str = "float32") -> np.ndarray:
            if dtype == "float64":
                raise TypeError("no float64 here")
            return np.asarray(obj, dtype=np.float32)
        b.asarray = refuse
        text = format_report(run("refusing", only="asarray"))
    assert re.search(r"^asarray\s+ok", text, re.M), text


def test_constructors_in_another_dtype_than_the_backends_fail_their_rows() -> None:
    """randn written as default_rng(seed).standard_normal(shape), or full as np.full(shape, value),
    makes float64 in a float32 backend: the kit passed both, and Tensor.He, Tensor.zeros and what
    is computed from them were float64, training slower with no word. A float64 backend's float64
    constructors pass: the backend's float dtype is that of asarray([1.0])."""
    import numpy as np
    from topgrad.backend import Backend

    with _numpy_variant("wide-randn") as b:
        b.randn = lambda self, shape, seed=None: np.random.default_rng(seed).standard_normal(shape)
        text = format_report(run("wide-randn", only="randn or zeros"))
    assert ("randn: randn returned dtype float64, not the backend's float dtype float32 (that of "
            "asarray([1.0]), as Tensor([1.0]) makes it)") in text, text
    assert "numpy's constructors default to float64: pass them dtype='float32'" in text, text
    assert re.search(r"^zeros/ones/full\s+ok", text, re.M), text

    with _numpy_variant("wide-full") as b:
        b.full = lambda self, shape, value: np.full(shape, value)
        b.zeros, b.ones = Backend.zeros, Backend.ones  # made by full
        text = format_report(run("wide-full", only="randn or zeros"))
    assert ("zeros/ones/full: zeros returned dtype float64, ones returned dtype float64, full returned "
            "dtype float64, not the backend's float dtype float32") in text, text
    assert re.search(r"^randn\s+ok", text, re.M), text

    with _numpy_variant("all-float64") as b:
        b.asarray = lambda self, obj, dtype="float32": np.array(obj, dtype=np.float64)
        b.zeros, b.ones = Backend.zeros, Backend.ones
        b.full = lambda self, shape, value: np.full(shape, value)
        b.randn = lambda self, shape, seed=None: np.random.default_rng(seed).standard_normal(shape)
        report = run("all-float64", only="randn or zeros")
    assert report.ok, format_report(report)


def test_an_optimizer_step_that_changes_the_parameters_dtype_or_shape_fails() -> None:
    """A float32 backend whose full made float64 (Backend.adam_update builds Adam's state from
    zeros) turned float32 parameters into float64 ones: the kit's Adam rows crashed at the next step
    with ".grad must match the tensor", blaming .grad; an sgd_update returning float64 passed. Each
    now names the update; so does one that returns another shape."""
    import numpy as np
    from topgrad.backend import Backend

    def plain(f: Callable[..., object]) -> Callable[..., object]:  # numpy's promotion, as it comes
        return lambda self, *arrays: np.asarray(f(*arrays))

    with _numpy_variant("wide-state") as b:
        b.add, b.sub, b.mul, b.div, b.sqrt = (plain(f) for f in (np.add, np.subtract, np.multiply,
                                                                   np.divide, np.sqrt))
        b.full = lambda self, shape, value: np.full(shape, value)
        b.zeros, b.ones, b.adam_update = Backend.zeros, Backend.ones, Backend.adam_update
        text = format_report(run("wide-state", only="Adam or SGD"))
    for row, cls in (("Adam", "Adam"), ("Adam weight_decay", "Adam"), ("AdamW", "AdamW")):
        assert re.search(rf"^{row}\s+FAIL", text, re.M), text
        assert (f"  {row}: raised TypeError: {cls}.step: backend 'wide-state''s adam_update returned "
                "parameter 0 as float64, given it as float32 with .grad float32, exp_avg float64, "
                "exp_avg_sq float64 (Adam's state starts as the backend's zeros)") in text, text
    assert ".grad must match" not in text and re.search(r"^SGD momentum=0.9\s+ok", text, re.M), text

    def returning(change: Callable[[Any], Any]) -> Callable[..., object]:
        def update(self: Any, *args: Any, **settings: Any) -> tuple[Any, Any]:
            param, buf = type(self).__mro__[1].sgd_update(self, *args, **settings)
            return change(param), buf
        return update

    with _numpy_variant("wide-sgd") as b:
        b.sgd_update = returning(lambda p: p.astype(np.float64))
        text = format_report(run("wide-sgd", only="SGD momentum"))
    assert ("SGD momentum=0.9: raised TypeError: SGD.step: backend 'wide-sgd''s sgd_update returned "
            "parameter 0 as float64, given it as float32 with .grad float32") in text, text

    with _numpy_variant("lifted-sgd") as b:
        b.sgd_update = returning(lambda p: p[None])
        text = format_report(run("lifted-sgd", only="SGD momentum"))
    assert ("SGD momentum=0.9: step 1: sgd_update returned the parameter with shape (1, 3, 4), given "
            "(3, 4): an update keeps the parameter's shape and dtype") in text, text
    assert ".grad must match" not in text, text


def test_a_misspelt_expected_failure_is_an_error_at_import() -> None:
    import topgrad.testing

    with pytest.raises(ValueError, match="did you mean 'Attention'"):
        type("TestTypo", (topgrad.testing.BackendConformance,), {"expected_failures": {"Atention": "todo"}})


def test_importing_topgrad_testing_does_not_import_numpy(tmp_path: Path) -> None:
    code = ("import sys, topgrad, topgrad.testing, topgrad_pytest_plugin; "
            "assert 'numpy' not in sys.modules, 'numpy imported'")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(), capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr


def test_the_pytest_plugin_imports_no_topgrad_in_a_project_that_does_not_use_it(tmp_path: Path) -> None:
    """pytest loads the plugin wherever topgrad-core is installed; inside the package it imported
    (and pytest assertion-rewrote) all of topgrad in every run of every project, 0.1-0.4 s each."""
    (tmp_path / "test_other.py").write_text(
        "import sys\n\ndef test_no_topgrad():\n"
        "    assert not [m for m in sys.modules if m.split('.')[0] == 'topgrad']\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_other.py"],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_pytest_suite_without_pytest_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without pytest, `topgrad.testing.BackendConformance` failed with a bare "No module named
    'pytest'"; only a missing numpy got the install line."""
    import topgrad.testing as kit

    for module in [m for m in sys.modules if m.startswith("topgrad.testing.")]:
        monkeypatch.delitem(sys.modules, module)  # imported by earlier tests: import them afresh
    monkeypatch.setitem(sys.modules, "pytest", None)  # `import pytest` now raises ModuleNotFoundError
    with pytest.raises(ModuleNotFoundError, match=r"needs pytest: pip install pytest \(topgrad-core's "
                       r"\[testing\] extra\); `python -m topgrad.testing NAME` runs"):
        kit.BackendConformance  # noqa: B018 - the attribute's import is the point


def test_backend_selection_is_restored() -> None:
    """Running the kit on another backend leaves the selection as it was, also for a later
    reload (register_plugin rebuilds the selected backend by name)."""
    before, chosen = topgrad.get_backend(), registry._selected
    topgrad.register_backend(topgrad.BackendSpec("kit-probe", type(before)))
    try:
        run("kit-probe", only="Reshape")
        assert topgrad.get_backend() is before and registry._selected == chosen
    finally:
        registry._in_process.pop("kit-probe")
        registry._loaded.pop("kit-probe", None)


# ---- a backend missing a helper, a backend that does not load, -k ------------------------------
def _without(variant: type, *helpers: str) -> None:
    """Give `variant` the base class's unimplemented `helpers`, as a third-party backend that forgot them."""
    for helper in helpers:
        setattr(variant, helper, getattr(topgrad.Backend, helper))


def test_the_kit_knows_which_helpers_the_base_class_leaves_to_backends() -> None:
    from topgrad.testing.outcome import REQUIRED_HELPERS
    from topgrad.testing.runner import helper_row

    assert set(REQUIRED_HELPERS) == {"asarray", "to_numpy", "full", "randn", "add", "sub", "mul", "div",
                                     "sqrt"}
    assert {helper_row(h) for h in REQUIRED_HELPERS} <= set(HELPER_CHECKS)  # each has a row to fail


@pytest.mark.parametrize(("helper", "closing"), [("asarray", "2 passed, 40 not run, 1 failed"),
                                                  ("to_numpy", "0 passed, 42 not run, 1 failed")])
def test_a_missing_helper_fails_its_own_row_and_the_rows_needing_it_are_not_run(helper: str,
                                                                                 closing: str) -> None:
    """Every row failed, each repeating the base class's NotImplementedError traceback."""
    with _numpy_variant(f"no-{helper}") as variant:
        _without(variant, helper)
        report = run(f"no-{helper}")
        only_conv = run(f"no-{helper}", only="Conv2d")
    text = format_report(report)
    assert text.strip().splitlines()[-1] == closing, text
    assert "NotImplementedError" not in text and "crashed" not in text, text
    assert re.search(rf"^{helper}\s+FAIL\s+-\s+missing$", text, re.M), text
    assert f"  {helper}: backend 'no-{helper}' does not implement the array helper {helper}(" in text, text
    assert "Implement it in" in text, text
    assert re.search(rf"^Conv2d\s+-\s+-\s+not run: backend lacks {helper}$", text, re.M), text
    if helper == "asarray":  # rows that do not need it still run
        assert re.search(r"^zeros/ones/full\s+ok\s", text, re.M), text
    # -k leaves the helper's row out, but a selected row needs it: the row that says why comes too
    assert not only_conv.ok, format_report(only_conv)
    assert [r.name for r in only_conv.rows] == ["Conv2d", helper], format_report(only_conv)


def _relu_one_at_zero() -> type:
    """A ReLU whose gradient is 1 at 0: right on every case but `ReLU[(2,4) zeros]`."""
    import numpy as np

    class OneAtZero(topgrad.Op):
        def forward(self, x: np.ndarray) -> np.ndarray:
            self.save_for_backward(x)
            return np.asarray(np.maximum(x, 0))

        def backward(self, grad: np.ndarray) -> tuple[np.ndarray]:
            (x,) = self.saved
            return (np.asarray(grad * (x >= 0), dtype=grad.dtype),)

    return OneAtZero


def test_a_missing_helper_hides_no_real_failure() -> None:
    """A backend without randn and with a ReLU whose gradient is 1 at 0: both are reported."""
    with _numpy_variant("no-randn", ReLU=_relu_one_at_zero()) as variant:
        _without(variant, "randn")
        text = format_report(run("no-randn", only="ReLU or randn"))
    assert re.search(r"^ReLU\s+ok\s+FAIL\s", text, re.M), text
    assert re.search(r"^randn\s+FAIL\s+-\s+missing$", text, re.M), text
    assert text.strip().splitlines()[-1] == "0 passed, 2 failed", text


def test_backend_conformance_reports_a_backend_that_does_not_load_once(tmp_path: Path) -> None:
    """A load error was one error per test (257 of them); a missing helper, one failure per test."""
    (tmp_path / "test_mine.py").write_text(textwrap.dedent("""
        import topgrad
        import topgrad.testing
        from topgrad_numpy.backend import NumpyBackend


        def _load():
            raise ImportError("No module named 'cupy'")


        class NoAsarray(NumpyBackend):
            asarray = topgrad.Backend.asarray


        topgrad.register_backend(topgrad.BackendSpec("gpuish", _load))
        topgrad.register_backend(topgrad.BackendSpec("no-asarray", NoAsarray))


        class TestGpuish(topgrad.testing.BackendConformance):
            backend = "gpuish"


        class TestNoAsarray(topgrad.testing.BackendConformance):
            backend = "no-asarray"
    """))

    def pytest_run(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider",
                               "test_mine.py", *args], cwd=tmp_path, env=_env(), capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 1, done.stdout + done.stderr
        return done.stdout

    out = pytest_run()
    tests = sum(1 for _ in CASES) + sum(c.raises is None for c in CASES) + len(HELPER_CHECKS) + len(
        OPTIMIZER_CHECKS)
    assert f"1 failed, 2 passed, {2 * tests - 4} skipped, 1 error" in out, out
    first = "test_mine.py::TestGpuish::test_forward[Add[(2,3)+(2,3)]]"
    # pytest's short summary repeats the message in full where $CI is set (it truncates elsewhere)
    body = out.split("short test summary info")[0]
    assert f"ERROR {first}" in out and body.count("No module named 'cupy'") == 1, out
    assert f"not run: backend 'gpuish' did not load: {first} says why" in out, out
    assert "TestGpuish could not load backend 'gpuish' (its `backend`); its tests are skipped" in out, out
    assert "FAILED test_mine.py::TestNoAsarray::test_helper[asarray]" in out, out
    assert ("not run: backend 'no-asarray' lacks asarray: test_mine.py::TestNoAsarray::test_helper[asarray] "
            "says what to implement") in out, out
    assert "NotImplementedError" not in out, out
    # -k leaves test_helper[asarray] out: the first test needing it fails with what to implement
    out = pytest_run("-k", "TestNoAsarray and Reshape")
    assert re.search(r"1 failed, \d+ skipped", out), out
    assert "does not implement the array helper asarray" in out, out


def test_k_takes_pytest_expressions_and_case_names(backend_name: str, tmp_path: Path) -> None:
    """-k was a plain substring of row names: the pytest run's `-k "Reshape or SGD"` matched no row,
    nor did a case named in a failure line ("Conv2d[3x3 s2 p1]")."""
    report = run(backend_name, only="Reshape or SGD")
    assert [r.name for r in report.rows] == ["Reshape", "SGD momentum=0.9", "SGD nesterov, weight_decay"]
    report = run(backend_name, only="Adam and not (weight_decay or W)")
    assert [r.name for r in report.rows] == ["Adam"], format_report(report)
    report = run(backend_name, only="Adam weight_decay")  # text without and/or/not: one substring
    assert [r.name for r in report.rows] == ["Adam weight_decay"], format_report(report)
    done = _kit(sys.executable, backend_name, "-k", "Reshape or", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "-k 'Reshape or': a name is missing at the end" in done.stderr, done.stderr
    with pytest.raises(ValueError, match=r"a '\[' has no '\]'"):  # not quietly dropped: more selected
        run(backend_name, only="Conv2d[ or SGD")


def test_k_runs_only_the_cases_it_names() -> None:
    """A case id selects that case of its op's row: the case a failure line names can be rerun."""
    with _numpy_variant("one-at-zero", ReLU=_relu_one_at_zero()):
        wrong = format_report(run("one-at-zero", only="ReLU[(2,4) zeros]"))
        right = format_report(run("one-at-zero", only="ReLU[(3,4)]"))
    assert "ReLU[(2,4) zeros] backward" in wrong and wrong.endswith("0 passed, 1 failed"), wrong
    assert right.endswith("1 passed, 0 failed"), right
    with _numpy_variant("one-at-zero", ReLU=_relu_one_at_zero()):  # a case id inside an expression:
        both = run("one-at-zero", only="ReLU[(2,4) zeros] or Reshape")  # its brackets hold its parentheses
    assert [r.name for r in both.rows] == ["ReLU", "Reshape"], format_report(both)
    assert both.rows[0].failures and all("ReLU[(2,4) zeros]" in f for f in both.rows[0].failures)
