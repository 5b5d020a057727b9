"""``python -m longicl.serve``."""

import sys

from longicl.serve.cli import main

sys.exit(main())
