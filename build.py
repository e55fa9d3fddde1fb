#!/usr/bin/env python3
"""Build and test the QEMU snapshot-identity series: the entry point (harness/cli.py).

Runs on the system python3 (standard library only): `setup` creates the
project venv that everything else uses. See README.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.cli import main, parser  # noqa: E402

__all__ = ["main", "parser"]

if __name__ == "__main__":
    sys.exit(main())
