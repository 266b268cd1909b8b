"""``python -m prism``: the same command line as ``prism``."""

from __future__ import annotations

import sys

from prism.cli import main

if __name__ == "__main__":
    sys.exit(main())
