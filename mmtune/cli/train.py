"""`mmtune train`: one model, one config; the run's files and its test metrics (`mmtune.experiment`)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from mmtune.cli._common import add_tracker_argument, kv
from mmtune.errors import MMTuneError
from mmtune.experiment import RUN_FILES, TEST_METRICS_FILE


def add_parser(sub: argparse._SubParsersAction) -> None:
    """`mmtune train`: one model, one config."""
    from mmtune.flow import FLOW_ESTIMATORS
    from mmtune.models import flow_models, list_models
    from mmtune.training.config import OPTIMIZERS, SCHEDULERS, TrainConfig

    p = sub.add_parser("train", help="train one model config and write its test metrics")
    p.add_argument("--model", default="conv_tau", help=f"{' | '.join(list_models())} (default conv_tau)")
    p.add_argument("--preset", default=None, help="a named preset of the model, e.g. seed2023 or small")
    p.add_argument("--set", dest="model_set", type=kv, action="append", default=[], metavar="KEY=VALUE",
                   help="a model config field, e.g. --set kernel_size=3 (repeatable)")
    p.add_argument("--protocol", help="a named budget: reference (8,000/1,000/1,000 clips, 5 epochs, batch 16, "
                                      "the reference report's); explicit flags override it")
    p.add_argument("--epochs", type=int, help="epochs (default 5, or the protocol's)")
    p.add_argument("--batch-size", type=int, help="batch size (default 16, or the preset's or protocol's)")
    d = TrainConfig()
    p.add_argument("--lr", type=float, help=f"peak learning rate (default {d.lr:g}, or the preset's)")
    p.add_argument("--weight-decay", type=float, help=f"(default {d.weight_decay:g}, or the preset's)")
    p.add_argument("--kl-weight", type=float,
                   help="weight of the KL term of models with one, e.g. conv_tau (default: the model's)")
    p.add_argument("--optimizer", help=f"{' | '.join(OPTIMIZERS)} (default {d.optimizer}, or the preset's)")
    p.add_argument("--scheduler", help=f"{' | '.join(SCHEDULERS)} (default {d.scheduler}, or the preset's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and the weights (default 0)")
    p.add_argument("--device", default="auto", help="auto (cuda before cpu) | cpu | cuda (default auto)")
    p.add_argument("--no-fast", action="store_true",
                   help="train in eager fp32: no bf16 autocast (CUDA, CPUs with AVX512-BF16) nor CUDA speed-ups")
    p.add_argument("--flow", help=f"optical-flow input channels of {', '.join(flow_models())}: "
                                  f"{' | '.join(FLOW_ESTIMATORS)} (default none, or the preset's)")
    p.add_argument("--raft-weights", help="path of the RAFT weights file (for --flow raft_*)")
    p.add_argument("--digits", default="embedded", help="embedded (offline, default) | torchvision")
    p.add_argument("--digits-root", help="torchvision MNIST folder")
    p.add_argument("--num-digits", type=int, default=2, help="digits per clip (default 2)")
    p.add_argument("--train-size", help="number of train sequences, or 'online' (default 10000, or the protocol's)")
    p.add_argument("--val-size", type=int, help="val sequences (default 1000, or the protocol's)")
    p.add_argument("--test-size", type=int, help="test sequences (default 2000, or the protocol's)")
    p.add_argument("--test-file", help="path of the standard mnist_test_seq.npy to test on")
    p.add_argument("--data", metavar="PATH",
                   help="your own clips instead of generated Moving MNIST: a .npy, .npz or .h5 array, split into "
                        "train/val/test by whole clips (see README, 'Your own videos')")
    p.add_argument("--layout", help="the array's axes: NTCHW | NTHWC | NTHW | TNHW (default: detected when unambiguous)")
    p.add_argument("--data-key", help="the array of an .npz or the dataset of an HDF5 file (default: its only one)")
    p.add_argument("--t-in", type=int, help="input frames of a clip of --data (default 10)")
    p.add_argument("--t-out", type=int, help="target frames of a clip of --data (default 10)")
    p.add_argument("--stride", type=int,
                   help="frames between windows of a longer clip of --data (default t_in + t_out: no overlap)")
    p.add_argument("--val-fraction", type=float, help="share of the clips of --data in val (default 0.1)")
    p.add_argument("--test-fraction", type=float, help="share of the clips of --data in test (default 0.1)")
    p.add_argument("--out", help="output folder (default runs/train-MODEL-TIME)")
    p.add_argument("--resume", help="a last.pt checkpoint to continue from (its own folder may be the --out)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results of an earlier run in --out (default off: an --out holding "
                        f"{', '.join(f for f in RUN_FILES if not f.endswith('.sha256'))} is refused)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_tracker_argument(p, "run", "its config, every epoch's metrics, its test metrics and files")
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    from mmtune.metrics.verdict import Verdict, result_line
    from mmtune.training.config import build_trial
    from mmtune.training.protocols import get_protocol
    from mmtune.training.run import train_one

    trackers: list[Any] = []
    if args.tracker:  # an unknown tracker, or one whose extra is missing: one line before anything is trained
        from mmtune.report.trackers import parse_trackers

        trackers = parse_trackers(args.tracker)
    protocol = get_protocol(args.protocol) if args.protocol else None
    train: dict[str, Any] = {"seed": args.seed, "device": args.device, "fast": not args.no_fast,
                             **(protocol.train if protocol else {})}
    explicit = []
    for name in ("epochs", "batch_size", "lr", "weight_decay", "kl_weight", "optimizer", "scheduler", "flow"):
        if getattr(args, name) is not None:
            train[name] = getattr(args, name)
            explicit.append(name)
    if args.data:
        data = _array_data(args)
    else:
        data = _generated_data(args, protocol, explicit)
    if args.raft_weights:
        import os

        os.environ["MMTUNE_RAFT_WEIGHTS"] = args.raft_weights
    trial = build_trial(args.model, args.preset, dict(args.model_set), train, data)
    out = args.out or f"runs/train-{args.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    overridden = [k for k in explicit if protocol and (k in protocol.train or k in protocol.data)]
    done = train_one(trial, out, resume=args.resume, progress=not args.quiet, protocol=args.protocol,
                     protocol_overridden=overridden, overwrite=args.overwrite)
    tested, record = done.tested, done.record
    if tested.test:
        vs = tested.vs_best_baseline
        print(result_line(args.model, tested.test, Verdict(**vs) if vs else None))
    else:
        print(f"{args.model}: {record.status}: {record.message}")
    print(f"wrote {out}/{TEST_METRICS_FILE}")
    if trackers:
        from mmtune.report.trackers import log_to, train_log

        for line in log_to(trackers, train_log(out)):
            print(line, file=sys.stderr)
    return 0 if record.status == "completed" else 3


# The flags of `mmtune train` that only an array file (--data) takes, and those only generated clips take.
_ARRAY_FLAGS = ("layout", "data_key", "t_in", "t_out", "stride", "val_fraction", "test_fraction")
_GENERATED_FLAGS = ("protocol", "train_size", "val_size", "test_size", "test_file", "digits_root")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _array_data(args: argparse.Namespace) -> dict[str, Any]:
    """The data section of `mmtune train --data PATH ...` (an ArrayDataConfig's fields)."""
    given = [_flag(n) for n in _GENERATED_FLAGS if getattr(args, n) is not None]
    if given:
        raise MMTuneError(f"{', '.join(given)} describe(s) generated Moving MNIST; with --data the file "
                          f"decides the clips (use --t-in, --t-out, --stride, --val-fraction, --test-fraction)")
    from mmtune.data.arrays import absolute_paths

    values = {"path": args.data, "layout": args.layout, "key": args.data_key, "t_in": args.t_in,
              "t_out": args.t_out, "stride": args.stride, "val_fraction": args.val_fraction,
              "test_fraction": args.test_fraction, "seed": args.seed}
    return absolute_paths({k: v for k, v in values.items() if v is not None})


def _generated_data(args: argparse.Namespace, protocol: Any, explicit: list[str]) -> dict[str, Any]:
    """The data section of `mmtune train` on generated Moving MNIST (a DataConfig's fields)."""
    given = [_flag(n) for n in _ARRAY_FLAGS if getattr(args, n) is not None]
    if given:
        raise MMTuneError(f"{', '.join(given)} go(es) with --data PATH (an array file); generated Moving MNIST "
                          f"is 10+10 frames of 1x64x64")
    data: dict[str, Any] = {
        "digits": args.digits, "digits_root": args.digits_root, "num_digits": args.num_digits,
        "val_size": 1000, "test_size": 2000, "train_size": 10_000, "test_file": args.test_file,
        "seed": args.seed, **(protocol.data if protocol else {}),
    }
    for name in ("val_size", "test_size"):
        if getattr(args, name) is not None:
            data[name] = getattr(args, name)
            explicit.append(name)
    if args.train_size == "online":
        data["online"] = True
        explicit.append("train_size")
    elif args.train_size is not None:
        explicit.append("train_size")
        try:
            data["train_size"] = int(args.train_size)
        except ValueError:
            raise MMTuneError(f"--train-size must be an integer or 'online', got {args.train_size!r}") from None
    return data
