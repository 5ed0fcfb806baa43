"""The `mmtune` command, one module per subcommand: train, search, report, bench.

Each module has `add_parser(sub)`, which registers its subcommand and the function it runs. mmtune
errors become one line on stderr and exit 2. The package sits above the pipeline (data, models,
training, search, report): it is the one place that joins a sweep to its report.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable

from mmtune.errors import MMTuneError


def subcommands() -> dict[str, Callable[[argparse._SubParsersAction], None]]:
    """The `add_parser` function of every subcommand, by name: train, search, report, bench."""
    from mmtune.cli.bench import add_parser as add_bench
    from mmtune.cli.report import add_parser as add_report
    from mmtune.cli.report import after_sweep
    from mmtune.cli.search import add_parser as add_search
    from mmtune.cli.train import add_parser as add_train

    return {"train": add_train, "search": functools.partial(add_search, after=after_sweep),
            "report": add_report, "bench": add_bench}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `mmtune` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(
        prog="mmtune", description="train, search, report, bench: hyperparameter search for video prediction")
    sub = parser.add_subparsers(dest="command", required=True)
    commands = subcommands()
    # Only the command that runs builds its parser (`mmtune --help` builds them all): the train
    # parser lists the model registry, which imports torch, and `mmtune report` needs none.
    for name in [argv[0]] if argv and argv[0] in commands else list(commands):
        commands[name](sub)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MMTuneError as exc:
        print(f"mmtune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mmtune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
