"""hostpower benchmarks: `make bench` (python -m bench) runs them all and
writes docs/benchmarks.md."""

import sys
from pathlib import Path

# The benchmarks drive the same lab and engine kits as the tests.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
