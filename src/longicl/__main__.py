"""``python -m longicl``: the same as the ``longicl`` command (`longicl.console`)."""

import sys

from longicl.console import main

sys.exit(main())
