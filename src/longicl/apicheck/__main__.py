"""``python -m longicl.apicheck`` (the same as ``python api_test.py``)."""

import sys

from longicl.apicheck.cli import main

sys.exit(main())
