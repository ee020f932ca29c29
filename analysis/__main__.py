"""``python -m analysis RESULTS_DIR``: same as ``fedsim analyze RESULTS_DIR``."""

import sys

from analysis.cli import main

sys.exit(main())
