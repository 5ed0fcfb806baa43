#!/usr/bin/env python
"""The sweep's entry point, the same as `mmtune search`: `python run_search.py --help`.

With no arguments it runs the default sweep (search_spaces/default.yaml: a small all-models
sweep on a local Ray, CPU, about 10 minutes on 2 cores) and writes its results under
./experiments/NAME.
"""

from __future__ import annotations

import sys

from mmtune.cli.report import after_sweep
from mmtune.cli.search import main

if __name__ == "__main__":
    sys.exit(main(after=after_sweep))
