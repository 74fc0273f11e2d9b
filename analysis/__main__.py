"""``python -m analysis RESULTS_DIR ...`` is the same as ``python -m analysis.report``."""

import sys

from analysis.report import main

sys.exit(main())
