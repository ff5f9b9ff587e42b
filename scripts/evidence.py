#!/usr/bin/env python
"""GPU evidence (issues 12 and 17): stages that turn lent GPU time into committed numbers.

The entry point of ``scripts/evidence_runner/`` (plan, parts, preflight, runner, transport, report); run
``python scripts/evidence.py --help`` for the commands, and see "GPU evidence" in benchmarks/README.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from evidence_runner.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
