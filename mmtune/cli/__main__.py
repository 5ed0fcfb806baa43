"""`python -m mmtune.cli ...`: the same as `mmtune ...`."""

import sys

from mmtune.cli import main

sys.exit(main())
