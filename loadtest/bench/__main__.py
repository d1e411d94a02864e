"""``python -m loadtest.bench``; see the package docstring and :mod:`loadtest.bench.cli`."""

from __future__ import annotations

import sys

from loadtest.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
