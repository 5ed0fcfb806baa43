"""`mmtune report EXPERIMENT_DIR [--out PATH] [--beside DIR ...]`: build the HTML report of a sweep."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmtune.cli._common import add_tracker_argument


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `mmtune report`."""
    p = sub.add_parser("report", help="write the self-contained HTML report of a sweep")
    p.add_argument("experiment_dir", metavar="EXPERIMENT_DIR", help="the sweep's experiment directory")
    p.add_argument("--out", help="HTML file, or a directory for NAME.html (default EXPERIMENT_DIR/report.html)")
    p.add_argument("--top-k", type=int, default=5, help="trials per model on the leaderboard (default 5)")
    p.add_argument("--beside", action="append", default=[], metavar="DIR",
                   help="another experiment directory whose best-val-MSE-so-far curve is drawn beside this "
                        "sweep's, e.g. the --no-search run or random search at the same budget (repeatable)")
    add_tracker_argument(p, "sweep", "each trial a run, the sweep a parent run holding its files; a sweep "
                                     "logged before is replaced in MLflow")
    p.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    """Build the report and print its path; then log the sweep to the --tracker's."""
    from mmtune.report.build import build_report
    from mmtune.report.trackers import log_to, parse_trackers, sweep_log

    trackers = parse_trackers(args.tracker)
    t0 = time.perf_counter()
    path = build_report(args.experiment_dir, args.out, top_k=args.top_k, beside=args.beside)
    size = path.stat().st_size / 1e6
    print(f"wrote {path} ({size:.1f} MB in {time.perf_counter() - t0:.1f} s)")
    if trackers:
        for line in log_to(trackers, sweep_log(args.experiment_dir)):
            print(line, file=sys.stderr)
    return 0


def report_after_sweep(exp_dir: Path) -> None:
    """A finished sweep's report.html (what `mmtune search` and run_search.py do after the sweep); a
    report that fails is a warning, since the sweep's results are written."""
    from mmtune.report.build import build_report

    try:
        path = build_report(exp_dir)
        print(f"report: {path}", file=sys.stderr)
    except Exception as exc:  # the sweep's results are written; a report bug must not hide them
        print(f"mmtune search: warning: the report failed ({type(exc).__name__}: {exc})", file=sys.stderr)


def after_sweep(ns: argparse.Namespace) -> Callable[[Path], None]:
    """What `mmtune search` / run_search.py do with a written sweep: its report (unless --no-report),
    then its --tracker runs. The trackers are checked now, before the sweep: one line if unknown or
    not installed."""
    trackers: list[Any] = []
    if getattr(ns, "tracker", None):
        from mmtune.report.trackers import parse_trackers

        trackers = parse_trackers(ns.tracker)

    def finish(exp_dir: Path) -> None:
        if getattr(ns, "report", True):
            report_after_sweep(exp_dir)
        if trackers:
            from mmtune.report.trackers import log_to, sweep_log

            for line in log_to(trackers, sweep_log(exp_dir)):
                print(line, file=sys.stderr)

    return finish
