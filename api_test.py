"""Check a running OpenAI-compatible server before annotating: prints a PASS/FAIL table.

    python api_test.py                                   # http://127.0.0.1:2026/v1, all checks
    python api_test.py --quick                           # skip the long-context/cache/throughput probes
    python api_test.py --base-url http://gpu-box:2026/v1 --concurrency 16

Exit code 0 when every check that ran passed, 1 when one failed, 2 when no server answers.
The checks live in ``longicl.apicheck``; see docs/serving.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from longicl.apicheck import main
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
    from longicl.apicheck import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
