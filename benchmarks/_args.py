"""Argument types the benchmark scripts share: counts that must be positive, and output files
checked before a run (a bad path found after minutes of measuring loses them)."""

from __future__ import annotations

import argparse
import os


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
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"its folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (os.path.exists(text) and not os.access(text, os.W_OK)):
        raise argparse.ArgumentTypeError(f"{text} cannot be written")
    return text


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
