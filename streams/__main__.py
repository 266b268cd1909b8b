"""``python -m streams``: the same command line as ``prism`` (stream jobs included)."""

from __future__ import annotations

import sys

from prism.cli import main

if __name__ == "__main__":
    sys.exit(main())
