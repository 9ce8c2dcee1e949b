"""The `topgrad-train` console script: imports the trainer inside a guard, so that Ctrl-C (or a
stop signal) while numpy, topgrad and a backend are imported, a second or more, ends with one
line and status 130 rather than a traceback from whichever import it landed in."""

from __future__ import annotations

import sys

EXIT_INTERRUPTED = 130  # as `cli.EXIT_INTERRUPTED`, which this module must not import (it is heavy)


def main() -> int:
    """Import `topgrad_examples.train` and run its `main`; an interrupt during the import is
    reported as one line (nothing was run yet)."""
    try:
        from topgrad_examples.train import main as train
    except KeyboardInterrupt:
        print("topgrad-train: interrupted while starting; nothing was run", file=sys.stderr)
        return EXIT_INTERRUPTED
    return train()


if __name__ == "__main__":
    sys.exit(main())
