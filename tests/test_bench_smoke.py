"""Smoke test of benchmarks/vs_torch.py: its smallest path runs and prints a complete table.

Tiny sizes, one sample each; numbers are not checked, only that every row is there and its
ratios are positive. Runs only against the numpy backend (the benchmark compares it with PyTorch).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from types import ModuleType

import pytest
from helpers import BENCHMARKS, benchmarks_on_path


@pytest.fixture(scope="module")
def vs_torch(backend_name: str) -> Iterator[ModuleType]:
    """benchmarks/vs_torch.py as a module; afterwards sys.path and sys.modules are as they were
    (the benchmark scripts import their helper modules from benchmarks/)."""
    yield from _benchmark("vs_torch", backend_name)


@pytest.fixture(scope="module")
def shapes(backend_name: str) -> Iterator[ModuleType]:
    """benchmarks/shapes.py as a module, on the same terms as `vs_torch` (which it imports)."""
    yield from _benchmark("shapes", backend_name)


def _benchmark(name: str, backend_name: str) -> Iterator[ModuleType]:
    """The benchmark script `name`, loaded with benchmarks/ on sys.path; skipped off numpy."""
    if backend_name != "numpy":
        pytest.skip("the benchmark compares the numpy backend with PyTorch")
    pytest.importorskip("torch")
    pytest.importorskip("topgrad_numpy")
    with benchmarks_on_path():
        yield _load(name)


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _table_rows(lines: list[str]) -> dict[tuple[str, str], list[str]]:
    """(kind, case) -> the cells of each data row of the markdown table."""
    rows = {}
    for line in lines:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] in ("model", "op"):
            rows[(cells[0], cells[1])] = cells
    return rows


def _run(vs_torch: ModuleType, argv: list[str]) -> tuple[list[str], list]:
    printed: list[str] = []
    rows = vs_torch.run(vs_torch.parse_args(argv), out=lambda s: printed.extend(s.splitlines()))
    return printed, rows


def test_every_row_with_positive_ratios(vs_torch: ModuleType) -> None:
    argv = ["--tiny", "--batch", "2", "--repeat", "1", "--warmup", "0", "--no-memory", "--gemm-size", "64"]
    printed, rows = _run(vs_torch, argv)
    table = _table_rows(printed)
    expected = {("model", m) for m in vs_torch._models_topgrad.MODELS}
    expected |= {("op", o) for o in vs_torch._ops.OPS}
    assert set(table) == expected
    for cells in table.values():
        ratio, best = float(cells[5]), float(cells[6])
        assert ratio > 0 and best > 0
    assert all(r.max_diff < 1e-3 for r in rows), [(r.name, r.max_diff) for r in rows if r.max_diff >= 1e-3]


def test_memory_child(vs_torch: ModuleType) -> None:
    argv = ["--tiny", "--models", "none", "--ops", "ReLU", "--repeat", "1", "--warmup", "0",
            "--gemm-size", "64"]
    _, rows = _run(vs_torch, argv)
    (row,) = rows
    assert row.topgrad_mib is not None and row.torch_mib is not None
    assert row.topgrad_mib >= 0 and row.torch_mib >= 0


def test_conv_layers_lists_every_convolution_of_the_models(vs_torch: ModuleType, capsys) -> None:
    """benchmarks/conv_layers.py records each model's convolutions and times each in both layouts
    (loaded while the `vs_torch` fixture holds benchmarks/ on sys.path)."""
    conv_layers = _load("conv_layers")
    layers = conv_layers.model_layers("deepconv", 2)
    assert sum(layers.values()) == 9  # stem, two per block, two projections
    assert [layer.input_grad for layer in layers].count(False) == 1  # the stem's image batch
    assert conv_layers.main(["--models", "conv", "--repeat", "1", "--batch", "2"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "->" in line]
    assert len(rows) == len(conv_layers.model_layers("conv", 2))  # one row per layer
    for row in rows:
        assert float(row.strip().strip("|").split("|")[-1]) > 0


def _shape_rows(lines: list[str]) -> dict[str, list[str]]:
    """case -> the cells of each data row of shapes.py's markdown table."""
    rows = {}
    for line in lines:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] != "case":
            rows[cells[0]] = cells
    return rows


def test_shapes_prints_every_case_with_positive_ratios(shapes: ModuleType) -> None:
    """benchmarks/shapes.py at tiny sizes, one sample: a row per case of _shape_cases.CASES."""
    printed: list[str] = []
    args = shapes.parse_args(["--tiny", "--repeat", "1"])
    rows = shapes.run(args, out=lambda s: printed.extend(s.splitlines()))
    table = _shape_rows(printed)
    assert set(table) == {c.name for c in shapes._shape_cases.CASES}
    for cells in table.values():
        assert float(cells[3]) > 0  # ratio
    assert all(r.max_diff < 1e-3 for r in rows), [(r.name, r.max_diff) for r in rows if r.max_diff >= 1e-3]


def test_shapes_memory_child(shapes: ModuleType) -> None:
    """--mem measures a case in a child process of its own and fills in both memory columns."""
    argv = ["--tiny", "--repeat", "1", "--mem", "--filter", "^Linear b1 784"]
    (row,) = shapes.run(shapes.parse_args(argv), out=lambda s: None)
    assert row.topgrad_mib is not None and row.torch_mib is not None
    assert row.topgrad_mib >= 0 and row.torch_mib >= 0


def test_the_prototypes_run_a_training_step(vs_torch: ModuleType) -> None:
    """`--prototype` and ab_prototype.py crashed on every model row (the prototype Mul unpacked
    saved operands that `x * number` no longer saves; ab_prototype read a moved helper). In a
    child process each: installing the prototypes replaces ops for the whole process."""
    tiny = ["--repeat", "1", "--batch", "2"]
    runs = [
        ["vs_torch.py", "--prototype", "--tiny", "--models", "mlp,attention", "--ops", "none",
         "--warmup", "0", "--no-memory", "--gemm-size", "64", *tiny],
        ["ab_prototype.py", "--models", "mlp", "--ops", "LayerNorm", *tiny],
    ]
    for script, *argv in runs:
        done = subprocess.run([sys.executable, str(BENCHMARKS / script), *argv], capture_output=True,
                              text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert done.returncode == 0, done.stderr[-3000:]
        assert "| model | mlp |" in done.stdout, done.stdout


@pytest.mark.parametrize(("argv", "says"), [
    (["--repeat", "0"], "argument --repeat: must be 1 or more, got 0"),
    (["--threads", "-1"], "argument --threads: must be 1 or more, got -1"),
    (["--warmup", "-1"], "argument --warmup: must be 0 or more, got -1"),
    (["--gemm-size", "x"], "argument --gemm-size: not a whole number: 'x'"),
    (["--json", "/nonexistent-folder/rows.json"], "--json: its folder /nonexistent-folder does not exist"),
])
def test_bad_values_are_refused_before_anything_is_measured(
    vs_torch: ModuleType, capsys: pytest.CaptureFixture[str], argv: list[str], says: str,
) -> None:
    """--repeat 0 was replaced by the default, a negative one ended in a StatisticsError after the
    run, and an unwritable --json lost the run's rows at its end."""
    with pytest.raises(SystemExit):
        vs_torch.parse_args(argv)
    assert says in capsys.readouterr().err


def test_a_folder_given_as_an_output_file_is_refused(vs_torch: ModuleType, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit):
        vs_torch.parse_args(["--json", str(tmp_path)])
    assert f"{tmp_path} is a folder; give a file name" in capsys.readouterr().err
    assert vs_torch.parse_args(["--json", str(tmp_path / "rows.json")]).json == str(tmp_path / "rows.json")


def test_conv_layers_takes_only_the_nets_with_convolutions(vs_torch: ModuleType) -> None:
    """`--models mlp` (no convolutions) divided by zero; an unknown name was a traceback."""
    conv_layers = _load("conv_layers")
    for name in ("mlp", "nope"):
        with pytest.raises(SystemExit, match=f"unknown name.*{name}; choose from conv, deepconv"):
            conv_layers.main(["--models", name])
