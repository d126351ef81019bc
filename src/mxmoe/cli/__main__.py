"""`python -m mxmoe.cli ...`: the same as the `mxmoe` console script."""

import sys

from mxmoe.cli.main import main

sys.exit(main())
