import sys

from longicl.report.build import main

sys.exit(main())
