"""docs/writing-a-backend.md cannot rot: every code block of it runs here, in order.

The guide is followed in an empty temporary directory, inside a throwaway venv that sees
this interpreter's packages (topgrad-core, numpy, pytest: what the guide's `norun` setup
block installs). Blocks are handled by their info string:

- ``python title="PATH"`` / ``toml title="PATH"``: written to PATH; a repeated title appends;
- ``python``: run as a script with the venv's python; such blocks assert what they show;
- ``console``: each ``$ command`` runs in bash with the venv activated and must exit 0;
  the lines after it are its expected output, an excerpt in which ``...`` stands for
  anything (a whole line of ``...`` for any number of lines);
- ``console norun``: the environment setup, which the venv above stands for (checked to say
  nothing else); ``text``: illustration only.

`pip install` runs as written; pip is told (through its environment) to build without
isolation and not to reach an index, so that the test stays offline (it skips where
setuptools is not here to build with). The files the guide writes for topgrad-float64
must be exactly the files of examples/backends/topgrad-float64.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from venvs import make_venv, offline_pip

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "writing-a-backend.md"
EXAMPLE = ROOT / "examples" / "backends" / "topgrad-float64"
SETUP = {"python -m venv .venv && . .venv/bin/activate",
         "pip install '/path/to/your/clone/topgrad-core[testing]'"}
FENCE = re.compile(r"^```(\w*)([^\n]*)\n(.*?)^```[ \t]*$", re.M | re.S)


@dataclass(frozen=True)
class Block:
    lang: str
    title: str | None
    flags: frozenset[str]
    body: str
    line: int

    def __str__(self) -> str:
        return f"{GUIDE.name}:{self.line} ({self.lang}{' ' + self.title if self.title else ''})"


def blocks(text: str) -> list[Block]:
    found = []
    for m in FENCE.finditer(text):
        info = m.group(2)
        title = re.search(r'title="([^"]+)"', info)
        flags = frozenset(re.sub(r'title="[^"]*"', "", info).split())
        found.append(Block(m.group(1), title.group(1) if title else None, flags, m.group(3),
                           text.count("\n", 0, m.start()) + 1))
    return found


def written_files(found: list[Block]) -> dict[str, str]:
    """What the titled blocks write: a repeated title appends, two blank lines between."""
    files: dict[str, str] = {}
    for b in found:
        if b.title:
            files[b.title] = files[b.title] + "\n\n" + b.body if b.title in files else b.body
    return files


def commands(block: Block) -> list[tuple[str, list[str]]]:
    """The ``$ command`` lines of a console block, each with the expected output after it."""
    steps: list[tuple[str, list[str]]] = []
    for line in block.body.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            assert steps, f"{block}: output before any command"
            steps[-1][1].append(line)
    return steps


def output_matches(expected: list[str], actual: str) -> bool:
    """Whether the expected lines appear in `actual`, in order and adjacent, where a line
    ``...`` stands for any number of lines and ``...`` inside a line for any text; runs of
    spaces are flexible, and blank lines are left out on both sides. Line by line (one regex
    over the whole output backtracked for many minutes when the output differed)."""
    steps = [None if line == "..." else _line_regex(line) for line in (x.strip() for x in expected) if line]
    lines = [line for line in actual.splitlines() if line.strip()]

    @functools.cache
    def fits(i: int, j: int) -> bool:  # steps[i:] match from lines[j] on
        if i == len(steps):
            return True
        step = steps[i]
        if step is None:
            return any(fits(i + 1, k) for k in range(j, len(lines) + 1))
        return j < len(lines) and step.fullmatch(lines[j]) is not None and fits(i + 1, j + 1)

    return any(fits(0, j) for j in range(len(lines) + 1))


def _line_regex(line: str) -> re.Pattern[str]:
    tokens = [".*".join(map(re.escape, tok.split("..."))) for tok in line.split()]
    return re.compile(r"[ \t]*" + r"[ \t]+".join(tokens) + r"[ \t]*")


def _venv(root: Path) -> dict[str, str]:
    """A venv that also sees this interpreter's packages, with a `pip`; returns its environment."""
    python = make_venv(root)
    pip = root / "bin" / "pip"
    pip.write_text(f"#!{python}\nimport sys\nfrom pip._internal.cli.main import main\nsys.exit(main())\n")
    pip.chmod(0o755)
    # PYTHONPATH kept: set, it names the topgrad under test (a worktree's); a block's own
    # `PYTHONPATH=src` replaces it, and then the venv's topgrad is the installed one
    env = {k: v for k, v in os.environ.items() if k not in ("TOPGRAD_BACKEND", "PYTHONHOME")}
    env.update(PATH=f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(root),
               OMP_NUM_THREADS="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.update(offline_pip())
    return env


def _run(cmd: list[str] | str, where: Path, env: dict[str, str], block: Block) -> str:
    done = subprocess.run(cmd, shell=isinstance(cmd, str), executable="/bin/bash" if isinstance(cmd, str)
                          else None, cwd=where, env=env, capture_output=True, text=True, timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode == 0, f"{block}: {cmd!r} exited {done.returncode}\n{out}"
    return out


def test_the_guide_has_only_known_kinds_of_blocks() -> None:
    found = blocks(GUIDE.read_text())
    assert len(found) > 10
    for b in found:
        assert b.lang in {"python", "toml", "console", "text"}, f"{b}: unknown language"
        assert b.lang != "toml" or b.title, f"{b}: a toml block must say which file it is"
        assert b.flags <= {"norun"}, f"{b}: unknown flags {set(b.flags)}"
        if "norun" in b.flags:
            assert {cmd for cmd, _ in commands(b)} <= SETUP, f"{b}: a norun block may only set up the venv"


def test_the_example_package_is_what_the_guide_writes() -> None:
    prefix = "topgrad-float64/"
    guide = {path[len(prefix):]: text for path, text in written_files(blocks(GUIDE.read_text())).items()
             if path.startswith(prefix)}
    example = {
        str(p.relative_to(EXAMPLE)): p.read_text() for p in EXAMPLE.rglob("*")
        if p.is_file() and not {"build", "__pycache__"} & set(p.parts)
        and not any(part.endswith(".egg-info") for part in p.parts) and p.name != "py.typed"
    }
    assert sorted(guide) == sorted(example)
    for path, text in guide.items():
        assert text == example[path], f"{path} differs between the guide and {EXAMPLE}"
    assert (EXAMPLE / "src" / "topgrad_float64" / "py.typed").exists()


def test_the_guide_says_how_every_op_is_applied_and_which_bad_shapes_the_kit_checks() -> None:
    """The guide's "applied as" table lacked the optional ops (Permute's axes=, Max, Softmax, Div),
    and no list said which bad-shape cases the kit checks (an author learned of them as failures)."""
    from topgrad.testing.cases import CASES, OP_NAMES

    text = GUIDE.read_text()
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| `")]
    applied = {op for cells in rows if len(cells) == 4 and ".apply(" in cells[2]
               for op in re.findall(r"`(\w+)`", cells[0])}
    assert set(OP_NAMES) <= applied, f"the guide's tables lack {sorted(set(OP_NAMES) - applied)}"
    errors = text.split("must be raised for\n", 1)[1].split("\n\n", 1)[0]
    listed = set(re.findall(r"`([A-Z]\w*)`", errors))
    raising = {case.op for case in CASES if case.raises is not None}
    assert raising <= listed, f"the guide's list of bad-shape cases lacks {sorted(raising - listed)}"


def test_following_the_guide_gives_a_backend_that_passes_the_kit(tmp_path: Path) -> None:
    work = tmp_path / "project"
    work.mkdir()
    env = _venv(tmp_path / "venv")
    written: dict[str, str] = {}
    kit_ran = False
    for index, b in enumerate(blocks(GUIDE.read_text())):
        if b.lang == "text" or "norun" in b.flags:
            continue
        if b.title:
            path = work / b.title
            path.parent.mkdir(parents=True, exist_ok=True)
            written[b.title] = written[b.title] + "\n\n" + b.body if b.title in written else b.body
            path.write_text(written[b.title])
        elif b.lang == "python":
            script = tmp_path / f"block_{index}.py"
            script.write_text(b.body)
            _run([str(tmp_path / "venv" / "bin" / "python"), str(script)], work, env, b)
        else:
            for cmd, expected in commands(b):
                out = _run(cmd, work, env, b)
                shown = "".join(line + "\n" for line in out.splitlines() if line.strip())
                assert output_matches(expected, shown), f"{b}: {cmd!r} printed otherwise:\n{out}"
                kit_ran |= cmd.startswith("python -m topgrad.testing float64") and "-k" not in cmd
    assert kit_ran, "the guide never runs the whole kit on its backend"


@pytest.mark.parametrize(("expected", "actual", "matches"), [
    (["a  b", "...", "c ... d"], "x\na b\n1\n2\nc zz d\n", True),
    (["a  b", "c"], "a b\nzz\nc\n", False),
    (["7 passed in ..."], "7 passed in 0.1s\n", True),
    (["a b"], "a\nb\n", False),  # an expected line is one line of output
    # a long table that differs only at the end fails at once (no exponential backtracking)
    (["op ok ...", "...", "x ...", "...", "26 passed"],
     "".join(f"op ok {i}\n" for i in range(300)) + "27 passed\n", False),
])
def test_output_excerpts(expected: list[str], actual: str, matches: bool) -> None:
    assert output_matches(expected, actual) is matches
