"""What the benchmark tells the operator on stderr (stdout is for the results):
progress, warnings, and the one line that ends a run which cannot go on."""

from __future__ import annotations

import sys
from typing import NoReturn


class BenchError(RuntimeError):
    """The benchmark cannot go on; the message is one line for the operator."""


def fail(message: str) -> NoReturn:
    """The one ``bench: error:`` line, and exit 2."""
    print(f"bench: error: {message}", file=sys.stderr)
    sys.exit(2)


def warn(problems: list[str], message: str) -> None:
    """A problem found in the answers: said now, and kept for the JSON report."""
    problems.append(message)
    print(f"bench: warning: {message}", file=sys.stderr, flush=True)


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)
