"""docs/inspecting.md quotes lines of the example models, as anomaly mode prints them
(`path:LINE in function: source`): each must still be that line, or the doc points at another.
It said `models/layers.py:129` for a statement that had moved to line 141. Its anomaly-mode output
is what `python docs/nan_demo.py` prints: that script was given nowhere, so no reader could run it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "inspecting.md"
EXAMPLES = ROOT / "topgrad-examples" / "src" / "topgrad_examples"
DEMO = "docs/nan_demo.py"
TEXT_BLOCK = re.compile(r"^```text\n(.*?)^```", re.M | re.S)
QUOTE = re.compile(r"([\w./-]+\.py):(\d+)\s+in\s+(\w+):\s+([^`\n]+)")  # may wrap after "in"


def _source(path: str) -> Path:
    """The file a quote names: relative to the repository's root, or (anomaly mode's short form in
    `graph()`, its last two parts) to the examples' package."""
    return ROOT / path if (ROOT / path).exists() else EXAMPLES / path


def test_every_quoted_line_is_at_the_line_number_given() -> None:
    """Each full quote is its line, in its function; each short one repeats a full quote's place."""
    quotes = QUOTE.findall(DOC.read_text())
    assert len(quotes) >= 4, quotes
    full = {(Path(path).parts[-2:], number) for path, number, _, source in quotes if source.strip() != "..."}
    for path, number, function, source in quotes:
        lines = _source(path).read_text().splitlines()
        line = lines[int(number) - 1].strip()
        if source.strip() == "...":  # the prose's short form: the line of a full quote above
            assert (Path(path).parts[-2:], number) in full, f"{path}:{number} is quoted in full nowhere"
        else:
            assert line == source.strip(), f"{DOC.name} quotes {path}:{number} as {source!r}; it is {line!r}"
        defined = [text for text in lines[: int(number)] if re.match(r"\s*def \w+", text)]
        assert defined and f"def {function}(" in defined[-1], f"{path}:{number} is not in {function}"


def _lines(text: str) -> list[str]:
    """The lines of a text, trailing spaces and trailing blank lines aside, and the example models'
    folder as the package's name: an editable install shows topgrad-examples/src/topgrad_examples/,
    a regular one (nox's) the site-packages path."""
    return [EXAMPLES_FOLDER.sub("topgrad_examples/", line.rstrip()) for line in text.rstrip().splitlines()]


EXAMPLES_FOLDER = re.compile(r"\S*\btopgrad_examples/")


def _shown_output(script: str) -> str:
    """The ```text block after the doc's first `python SCRIPT`: what the doc says the script prints."""
    text = DOC.read_text()
    start = text.find(f"`python {script}`")
    assert start >= 0, f"{DOC.name} never says which script prints its anomaly-mode output ({script})"
    block = TEXT_BLOCK.search(text, start)
    assert block, f"{DOC.name} shows no output after `python {script}`"
    return block.group(1)


def test_the_anomaly_output_shown_is_what_the_named_script_prints() -> None:
    """The block is the script's output, run as the doc says (from the repository's root), on numpy."""
    shown = _shown_output(DEMO)
    done = subprocess.run([sys.executable, DEMO], cwd=ROOT, env={**os.environ, "TOPGRAD_BACKEND": "numpy"},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _lines(shown) == _lines(done.stdout), f"{DOC.name} shows:\n{shown}\n{DEMO} prints:\n{done.stdout}"
