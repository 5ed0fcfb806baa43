"""`python -m mmtune ...`: the `mmtune` command where no console script is installed (e.g. on a
GPU machine that runs the checkout from PYTHONPATH)."""

import sys

from mmtune.cli import main

sys.exit(main())
