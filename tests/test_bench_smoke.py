"""Smoke test of benchmarks/vs_torch.py: its smallest path runs and prints a complete table.

Tiny sizes, one sample each; numbers are not checked, only that every row is there and its
ratios are positive. Runs only against the numpy backend (the benchmark compares it with PyTorch).
"""

from __future__ import annotations

import ast
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
    child process each: installing the prototypes replaces ops for the whole process. The one
    left is LayerNorm's (the attention model and the LayerNorm op row run it)."""
    tiny = ["--repeat", "1", "--batch", "2"]
    runs = [
        ["vs_torch.py", "--prototype", "ops", "--tiny", "--models", "mlp,attention", "--ops", "LayerNorm",
         "--warmup", "0", "--no-memory", "--gemm-size", "64", *tiny],
        ["ab_prototype.py", "--models", "mlp,attention", "--ops", "LayerNorm", *tiny],
    ]
    for script, *argv in runs:
        done = subprocess.run([sys.executable, str(BENCHMARKS / script), *argv], capture_output=True,
                              text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert done.returncode == 0, done.stderr[-3000:]
        assert "| model | mlp |" in done.stdout and "| model | attention |" in done.stdout, done.stdout
        assert "| op | LayerNorm |" in done.stdout, done.stdout


def test_the_prototypes_are_only_changes_the_backend_lacks(vs_torch: ModuleType) -> None:
    """The Add, Mul and Linear prototypes outlived their adoption (f883847, 3d31ddd) as copies of
    the backend's past code, slower than it (no two-stage long sums, dL/dw always), so
    `--prototype` timed the backend against its own past. What is left is LayerNorm's
    `fill_rows` variant, a change the backend does not make on this host."""
    prototypes = _load("_prototype_ops")
    assert set(prototypes.PROTOTYPES) == {"LayerNorm"}
    assert not any(hasattr(prototypes, name) for name in ("Add", "Mul", "Linear", "reduce_to"))


@pytest.mark.parametrize(("argv", "says"), [
    (["--repeat", "0"], "argument --repeat: must be 1 or more, got 0"),
    (["--threads", "-1"], "argument --threads: must be 1 or more, got -1"),
    (["--warmup", "-1"], "argument --warmup: must be 0 or more, got -1"),
    (["--gemm-size", "x"], "argument --gemm-size: not a whole number: 'x'"),
    (["--json", "/nonexistent-folder/rows.json"], "--json: its folder /nonexistent-folder does not exist"),
    (["--seed", "-1"], "argument --seed: must be 0 or more, got -1"),
    (["--ops", "Add,Nope"], "--ops: unknown name(s) Nope; choose from Add, Mul,"),
    (["--ops", "Add,Nope"], "or all, or none"),
    (["--models", "mlp,all"], "--models: unknown name(s) all;"),
    (["--mem"], "unrecognized arguments: --mem"),  # ran the hidden --memory-child mode
    (["--keep-blas"], "unrecognized arguments: --keep-blas"),  # accepted, but the BLAS pins went
])
def test_bad_values_are_refused_before_anything_is_measured(
    vs_torch: ModuleType, capsys: pytest.CaptureFixture[str], argv: list[str], says: str,
) -> None:
    """--repeat 0 was replaced by the default, a negative one ended in a StatisticsError after the
    run, and an unwritable --json lost the run's rows at its end."""
    with pytest.raises(SystemExit) as exits:
        vs_torch.parse_args(argv)
    assert exits.value.code == 2  # argparse's usage error, as for every bad value
    assert says in capsys.readouterr().err


@pytest.mark.parametrize(("value", "names"), [
    ("Add,", ["Add"]), ("add,,MUL", ["Add", "Mul"]), ("Add,add", ["Add"]), ("ALL", "all"), ("None", []),
    ("", []), (" relu , Exp ", ["ReLU", "Exp"]),
])
def test_name_lists_skip_empty_items_and_take_any_case(vs_torch: ModuleType, value: str,
                                                       names: list[str] | str) -> None:
    """`--ops Add,` was refused naming an empty name, `--ops ALL` as unknown."""
    expected = list(vs_torch._ops.OPS) if names == "all" else names
    assert vs_torch.parse_args(["--ops", value]).ops == expected


def test_a_path_ending_in_a_separator_is_refused(vs_torch: ModuleType, tmp_path, capsys) -> None:
    """`--json DIR/nonexist/` wrote a file named `nonexist` (abspath dropped the slash)."""
    with pytest.raises(SystemExit):
        vs_torch.parse_args(["--json", f"{tmp_path / 'nonexist'}{os.sep}"])
    assert "ends in a path separator (a folder); give a file name" in capsys.readouterr().err


def test_shapes_has_no_abbreviations(shapes: ModuleType, capsys) -> None:
    """`--memory` was taken for the hidden --memory-child (and then failed, naming it)."""
    with pytest.raises(SystemExit):
        shapes.parse_args(["--memory"])
    err = capsys.readouterr().err
    assert "unrecognized arguments: --memory" in err and "--memory-child" not in err


def _calls(attribute: str) -> Iterator[tuple[str, ast.Call]]:
    """(file:line, call) of every `<something>.attribute(...)` call in benchmarks/*.py."""
    for path in sorted(BENCHMARKS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            func = node.func if isinstance(node, ast.Call) else None
            if isinstance(func, ast.Attribute) and func.attr == attribute:
                assert isinstance(node, ast.Call)
                yield f"{path.name}:{node.lineno}", node


def test_every_parser_refuses_abbreviations_and_every_option_has_help() -> None:
    """argparse's prefix matching reached hidden modes (`vs_torch.py --mem` ran --memory-child) and
    took `--keep-blas` for --keep-blas-env, which the re-run without BLAS pins looks for spelled
    out; and profile_topgrad.py and ab_prototype.py explained none of their options."""
    parsers = list(_calls("ArgumentParser"))
    assert len(parsers) >= 7
    for where, call in parsers:
        flags = {k.arg: k.value for k in call.keywords}
        value = flags.get("allow_abbrev")
        assert isinstance(value, ast.Constant) and value.value is False, where
    for where, call in _calls("add_argument"):
        assert "help" in {k.arg for k in call.keywords}, where


def test_a_folder_given_as_an_output_file_is_refused(vs_torch: ModuleType, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit):
        vs_torch.parse_args(["--json", str(tmp_path)])
    assert f"{tmp_path} is a folder; give a file name" in capsys.readouterr().err
    assert vs_torch.parse_args(["--json", str(tmp_path / "rows.json")]).json == str(tmp_path / "rows.json")


def test_conv_layers_takes_only_the_nets_with_convolutions(vs_torch: ModuleType, capsys) -> None:
    """`--models mlp` (no convolutions) divided by zero; an unknown name was a traceback."""
    conv_layers = _load("conv_layers")
    for name in ("mlp", "nope"):
        with pytest.raises(SystemExit) as exits:
            conv_layers.main(["--models", name])
        assert exits.value.code == 2
        assert f"--models: unknown name(s) {name}; choose from conv, deepconv" in capsys.readouterr().err


def test_ab_prototype_checks_both_lists_before_measuring(vs_torch: ModuleType, capsys) -> None:
    """A misspelt --ops name was reported only after every model had been measured."""
    ab_prototype = _load("ab_prototype")
    with pytest.raises(SystemExit) as exits:
        ab_prototype.main(["--models", "mlp", "--ops", "LayerNrom", "--repeat", "1"])
    assert exits.value.code == 2
    captured = capsys.readouterr()
    assert "--ops: unknown name(s) LayerNrom" in captured.err
    assert captured.out == ""  # not a row measured


def test_profile_puts_the_rest_of_the_step_under_its_own_column(vs_torch: ModuleType) -> None:
    """The engine + loss + optimizer time sat under "bwd ms", as if it were a backward time."""
    profile_topgrad = _load("profile_topgrad")
    text = profile_topgrad.breakdown(vs_torch.model_case("mlp", 2, 0), 1)
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    head = [c.strip() for c in lines[0].strip().strip("|").split("|")]
    rest = [c.strip() for c in lines[-1].strip().strip("|").split("|")]
    assert len(head) == len(rest)
    assert rest[0] == "engine + loss + optimizer"
    assert rest[head.index("fwd ms")] == rest[head.index("bwd ms")] == ""  # not split into phases
    float(rest[head.index("total ms")])  # a number in its column


def test_another_backend_in_the_environment_is_ignored(tmp_path) -> None:
    """With $TOPGRAD_BACKEND=triton the script measured triton (under its interpreter, ratio 300)
    and called it Topgrad-numpy; now it measures numpy and says the variable was ignored. A name
    no backend has shows it: before, the first Tensor failed to find that backend."""
    argv = ["--models", "none", "--ops", "Add", "--tiny", "--repeat", "1", "--warmup", "0", "--no-memory",
            "--gemm-size", "64"]
    done = subprocess.run([sys.executable, str(BENCHMARKS / "vs_torch.py"), *argv], capture_output=True,
                          text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "TOPGRAD_BACKEND": "no-such-backend"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "(backend numpy; $TOPGRAD_BACKEND=no-such-backend ignored)" in done.stdout
    assert "$TOPGRAD_BACKEND=no-such-backend is ignored" in done.stderr


@pytest.fixture
def gpu_script() -> Iterator[ModuleType]:
    """benchmarks/gpu.py as a module, for its argument parsing only (topgrad_triton imports
    neither torch's CUDA nor triton; nothing here runs a kernel)."""
    pytest.importorskip("torch")
    pytest.importorskip("topgrad_triton")
    with benchmarks_on_path():
        yield _load("gpu")


@pytest.mark.parametrize(("argv", "attr", "expected"), [
    (["--only", "none"], "only", []),  # vs_torch.py took none, gpu.py refused it
    (["--only", "NORM,"], "only", ["norm"]),
    (["--models", "All"], "models", ["mlp", "conv", "deepconv", "attention"]),
])
def test_gpu_names_as_the_other_scripts(gpu_script: ModuleType, argv: list[str], attr: str,
                                        expected: list[str]) -> None:
    assert getattr(gpu_script.parse_args(argv), attr) == expected


@pytest.mark.parametrize(("argv", "says"), [
    (["--seed", "-1"], "argument --seed: must be 0 or more, got -1"),  # was numpy's traceback
    (["--only", "matmul,nope"], "--only: unknown name(s) nope; choose from matmul, attention, norm, model"),
    (["--smo"], "unrecognized arguments: --smo"),
])
def test_gpu_refuses_bad_values_as_usage_errors(gpu_script: ModuleType, capsys, argv: list[str],
                                                says: str) -> None:
    with pytest.raises(SystemExit) as exits:
        gpu_script.parse_args(argv)
    assert exits.value.code == 2
    assert says in capsys.readouterr().err


def _train_output(images: int, source: str, accuracy: float) -> str:
    """What topgrad-train prints, in the shape accuracy.py reads (its first line, epochs, result)."""
    return (f"mlp on mnist ({images:,} training, 1,000 test images from {source}), backend numpy, adam lr "
            f"0.002, batch 128, 3 epochs\nepoch 1/3: train loss 0.6586, test acc {accuracy}, 0.9 s "
            f"(6,376 img/s)\ntest accuracy: {accuracy}\n")


@pytest.mark.parametrize(("images", "from_subset", "accuracy", "verdict", "status"), [
    (6_000, True, 0.952, "SUBSET", 3),  # was "LOW", exit status 1: a floor set for 60,000 images
    (60_000, False, 0.985, "ok", 0),
    (60_000, False, 0.952, "LOW", 1),
])
def test_accuracy_does_not_judge_the_bundled_subset_by_the_full_sets_floor(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], images: int, from_subset: bool,
    accuracy: float, verdict: str, status: int,
) -> None:
    pytest.importorskip("topgrad_examples")
    from topgrad_examples.data import BUNDLED

    with benchmarks_on_path():
        script = _load("accuracy")
    source = BUNDLED if from_subset else "/data/mnist"
    done = subprocess.CompletedProcess([], 0, _train_output(images, source, accuracy), "")
    monkeypatch.setattr(script.subprocess, "run", lambda *a, **k: done)
    assert script.main(["--models", "mlp", "--datasets", "mnist"]) == status
    out = capsys.readouterr().out
    (row,) = [line.split() for line in out.splitlines() if line.startswith("mnist ")]
    assert row[5] == verdict
    assert ("SUBSET: floor not applicable" in out) == from_subset
    assert ("pass --mnist-dir DIR" in out) == from_subset


def test_accuracy_fails_a_run_that_does_not_say_its_data(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """Without topgrad-train's line naming the data, the floor's premise is unknown: FAIL, not ok."""
    pytest.importorskip("topgrad_examples")
    with benchmarks_on_path():
        script = _load("accuracy")
    done = subprocess.CompletedProcess([], 0, "test accuracy: 0.99\n", "")
    monkeypatch.setattr(script.subprocess, "run", lambda *a, **k: done)
    assert script.main(["--models", "mlp", "--datasets", "mnist"]) == 1
    captured = capsys.readouterr()
    assert "no line says which data it trained on" in captured.err
    assert "FAIL" in captured.out
