"""Argument types the benchmark scripts share: counts that must be positive, output files
checked before a run (a bad path found after minutes of measuring loses them), and comma lists
of names checked against the allowed ones."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence


def positive_int(text: str) -> int:
    """An int of at least 1 (samples, threads, batch, steps): 0 or less would measure nothing."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def count(text: str) -> int:
    """An int of at least 0 (warm-up calls)."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def output_file(text: str) -> str:
    """A file path this process can write, checked now: its folder exists and is writable, and
    the path is not a folder."""
    folder = os.path.dirname(os.path.abspath(text))
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name")
    if text.endswith(tuple(sep for sep in (os.sep, os.altsep) if sep)):  # abspath would drop it
        raise argparse.ArgumentTypeError(f"{text} ends in a path separator (a folder); give a file name")
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"its folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (os.path.exists(text) and not os.access(text, os.W_OK)):
        raise argparse.ArgumentTypeError(f"{text} cannot be written")
    return text


def names_help(allowed: Sequence[str]) -> str:
    """The help text of a name list that `names` reads (one wording for every script)."""
    return f"comma list of {', '.join(allowed)} (any case), or all (the default), or none"


def names(parser: argparse.ArgumentParser, flag: str, value: str, allowed: Sequence[str]) -> list[str]:
    """The names of a comma list, spelled as in `allowed` (any case, empty items skipped, repeats
    once); `all` or `none` (any case) alone for all or none; else a usage error naming `flag`
    (exit status 2, before anything is measured)."""
    items = [v.strip() for v in value.split(",") if v.strip()]
    if len(items) == 1 and items[0].lower() in ("all", "none"):
        return list(allowed) if items[0].lower() == "all" else []
    lookup = {a.lower(): a for a in allowed}
    bad = [v for v in items if v.lower() not in lookup]
    if bad:
        parser.error(f"{flag}: unknown name(s) {', '.join(bad)}; choose from {', '.join(allowed)} "
                     "(a comma list), or all, or none")
    return list(dict.fromkeys(lookup[v.lower()] for v in items))


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
