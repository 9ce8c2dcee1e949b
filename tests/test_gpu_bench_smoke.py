"""Smoke test of benchmarks/gpu.py: `--smoke` runs every row at tiny sizes and prints the whole table.

Without a GPU the script runs on the CPU under Triton's interpreter, in a subprocess (the
interpreter must be switched on before triton is imported). Numbers are not checked, only
that every row is there with positive times, that the outputs agree, and that `--out`
and `--json` write the report and the samples. Needs triton and topgrad-triton installed;
about 20-40 s on one core.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu.py"
MODELS = ("mlp", "conv", "deepconv", "attention")


def _needs_triton() -> None:
    for name in ("torch", "triton", "topgrad_triton"):
        if importlib.util.find_spec(name) is None:  # find, not import: triton must load in the child
            pytest.skip(f"{name} is not installed")


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          check=False, env=env, cwd=ROOT, timeout=600)


def _rows(text: str) -> dict[tuple[str, str, str, str], list[str]]:
    """(kind, case, shape, precision) -> the cells of each data row of the markdown table."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] in ("matmul", "attention", "norm", "model"):
            rows[tuple(cells[:4])] = cells
    return rows


def _expected() -> set[tuple[str, str, str, str]]:
    rows = set()
    for prec in ("ieee", "tf32"):
        rows.add(("matmul", "Linear forward", "64x64 @ 64x64", prec))
        for shape in ("B=2 T=32 D=16", "B=1 T=32 D=32"):
            rows |= {("attention", name, shape, prec) for name in ("attention", "attention causal")}
        rows |= {("model", m, "batch 4", prec) for m in MODELS}
    return rows | {("norm", "LayerNorm", "64x32", "ieee"), ("norm", "BatchNorm", "4x4x4x8", "ieee")}


def test_smoke_prints_every_row(tmp_path: Path) -> None:
    _needs_triton()
    out, raw = tmp_path / "gpu.md", tmp_path / "gpu.json"
    res = _run("--smoke", "--out", str(out), "--json", str(raw))
    assert res.returncode == 0, res.stderr[-3000:]
    rows = _rows(res.stdout)
    assert set(rows) == _expected()
    for key, cells in rows.items():
        topgrad_ms, torch_ms, diff = float(cells[4]), float(cells[5]), float(cells[12])
        assert topgrad_ms > 0 and torch_ms > 0, key
        assert diff < 1e-3, (key, diff)  # the interpreter computes in fp32, tf32 rows included
        assert cells[-1] in ("pass", "**FAIL**", "–"), key
    assert "Targets met:" in res.stdout
    assert out.read_text().strip() == res.stdout.strip()
    saved = json.loads(raw.read_text())["rows"]
    assert len(saved) == len(rows) and all(len(r["samples_ms"]["topgrad"]) == 1 for r in saved)


def test_without_cuda_it_refuses_unless_smoke() -> None:
    _needs_triton()
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the script would measure it")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, str(SCRIPT), "--only", "matmul"], capture_output=True, text=True,
                         check=False, env=env, cwd=ROOT, timeout=300)
    assert res.returncode != 0
    assert "CUDA" in res.stderr and "--smoke" in res.stderr
