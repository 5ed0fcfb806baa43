"""A sweep from end to end: plan it, run (or resume) it on Ray, evaluate what it found, write it.

Each step is a function of its own: `plan_sweep` validates everything into a `SweepPlan` before
anything is written or Ray is started; `fit_cluster` sizes it to the cluster; the adapter runs the
trials; `evaluate` tests each model's best checkpoint and computes the baselines (`Findings`);
`write_findings` writes them. The experiment directory's files and their records belong to
`mmtune.experiment`; only `tune_adapter` imports Ray.

Example:
    >>> from mmtune.search.sweep import SweepArgs, run_sweep
    >>> run_sweep(SweepArgs(space="search_spaces/smoke.yaml", samples=4))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmtune._hardware import machine
from mmtune._num import as_finite
from mmtune.data.datasets import make_data_config
from mmtune.experiment import (
    SPACE_FILE,
    STUDY_FILE,
    ClusterInfo,
    EffectiveSettings,
    RunRecord,
    SweepMeta,
    TrialRecord,
    results_frame,
    trial_counts,
    write_results,
    write_sweep,
)
from mmtune.metrics.verdict import Verdict, result_line
from mmtune.search import owner
from mmtune.search.budget import format_duration
from mmtune.search.evaluate import Findings, best_per_model, checkpoint_for, evaluate, write_findings
from mmtune.search.final import (
    REPORT_S,
    FinalStart,
    cpu_threads,
    family_infer_ms,
    reserve_for_test_s,
    run_final,
)
from mmtune.search.plan import SweepArgs, SweepPlan, fit_cluster, plan_sweep


@dataclass(frozen=True)
class SweepResult:
    """Where a finished (or interrupted) sweep wrote its files, and its status."""

    exp_dir: Path
    status: str  # completed | interrupted
    num_trials: int
    wall_seconds: float



# -- run ---------------------------------------------------------------------------------------


def _start(plan: SweepPlan, cluster: ClusterInfo, max_concurrent: int, t_start: float) -> SweepMeta:
    """Create the experiment directory (a copy of the space, sweep.json "running"); its SweepMeta."""
    a, prev = plan.args, plan.previous
    plan.exp_dir.mkdir(parents=True, exist_ok=True)
    if prev is None:
        shutil.copyfile(plan.space_path, plan.exp_dir / SPACE_FILE)
    meta = SweepMeta(
        name=plan.name, models=plan.space.models, args=a.to_dict(),
        effective=EffectiveSettings(plan.samples, plan.max_epochs, plan.grace_period, plan.reduction_factor,
                                    max_concurrent, a.cpus_per_trial, a.gpus_per_trial, plan.train_overrides),
        space=str(plan.space_path), space_copy=SPACE_FILE, protocol=_protocol_meta(plan), storage=plan.storage,
        exp_dir=str(plan.exp_dir), cluster=cluster, hardware=machine(),
        started=prev.started if prev else _iso(t_start),
        runs=(*(prev.runs if prev else ()), RunRecord(_iso(t_start), a.resume)), status="running",
        objective=a.objective, warm_start=plan.warm.record() if plan.warm else (prev.warm_start if prev else None),
        budget={"budget_s": plan.budget_s, "budget": format_duration(plan.budget_s)} if plan.budget_s else None,
        clip_spec=dataclasses.asdict(make_data_config(plan.space.data).spec),
    )
    write_sweep(plan.exp_dir, meta)
    return meta


def _protocol_meta(plan: SweepPlan) -> dict[str, Any] | None:
    """sweep.json's record of the protocol the sweep followed (None without one)."""
    if not plan.args.protocol:
        return None
    from mmtune.training.protocols import protocol_record

    overridden = ["epochs"] if plan.args.max_epochs is not None else []
    return protocol_record(plan.args.protocol, make_data_config(plan.space.data), overridden)


def _search_budget(plan: SweepPlan, deadline: float | None) -> float | None:
    """The search's seconds: what is left of the budget, less a first guess of the test split's and the
    report's time (`REPORT_S` + a tenth of the budget; the final phase measures it), less the final
    phase's share."""
    if deadline is None or plan.budget_s is None:
        return None
    left = deadline - time.time() - (REPORT_S + 0.1 * plan.budget_s)
    return max(1.0, left * (1.0 - plan.final_share))


def _run_trials(plan: SweepPlan, meta: SweepMeta, budget_s: float | None, driver: owner.Ident,
                mlflow: Any = None) -> Any:
    """Run (or resume) the trials on Ray within `budget_s`, by `driver` (whose workers write only while
    it owns the experiment), each logging its MLflow run live when `mlflow` (a `tracking.LiveMLflow`)
    is given; the adapter's TuneOutcome."""
    from mmtune.search import tune_adapter as ta

    a, eff = plan.args, meta.effective
    settings = ta.TuneSettings(
        name=plan.name, storage=plan.storage, study_db=str(plan.exp_dir / STUDY_FILE), samples=plan.samples,
        scheduler=a.scheduler, sampler=a.sampler, seed=a.seed, max_epochs=plan.max_epochs,
        grace_period=plan.grace_period, reduction_factor=plan.reduction_factor, cpus_per_trial=a.cpus_per_trial,
        gpus_per_trial=a.gpus_per_trial, max_concurrent=eff.max_concurrent, verbose=a.verbose,
        multi_objective=a.objective != "mse", budget_s=budget_s, warm=plan.warm,
        # With a final phase, the space's default config runs first: the search then at worst continues
        # the run it has to beat, with less of the budget, and any config it finds better replaces it.
        first=plan.space.default_params() if plan.final_share > 0 and not a.resume else None,
    )
    spec = ta.RunSpec(space=plan.space, train_overrides=plan.train_overrides, cpus_per_trial=a.cpus_per_trial,
                      gpus_per_trial=a.gpus_per_trial, exp_dir=str(plan.exp_dir), driver=driver, mlflow=mlflow)
    extras = (f", objective {a.objective}"
              + (f", time budget {format_duration(plan.budget_s)} in all, {budget_s:.0f}s of it to search"
                 if plan.budget_s and budget_s else "")
              + (f", warm start: {len(plan.warm.enqueued)} configs of {plan.warm.source} first" if plan.warm else ""))
    _say(f"mmtune search: {plan.samples} trials of {plan.space.path} ({', '.join(plan.space.models)}), "
         f"{a.scheduler} over {plan.max_epochs} epochs, {eff.max_concurrent} at once on "
         f"{meta.cluster.nodes} node(s){extras} -> {plan.exp_dir}")
    return ta.run(settings, spec, resume=a.resume)


def _finish(meta: SweepMeta, status: str, df: Any, t_start: float, t_tuned: float, outcome: Any) -> SweepMeta:
    """The sweep.json of a run that ended: its run record closed, its counts set, its budget's use."""
    t_end = time.time()
    last = dataclasses.replace(meta.runs[-1], ended=_iso(t_end), wall_seconds=t_end - t_start, status=status)
    runs = (*meta.runs[:-1], last)
    counts = trial_counts(df)
    budget = None
    if meta.budget:  # used: this run's trials (Tuner.fit), as the budget counts; Ray's start and the test come besides
        budget = {**meta.budget, "used_s": outcome.fit_seconds, "sweep_s": t_end - t_start,
                  "search_s": outcome.budget.budget_s if outcome.budget else None,
                  "ended_by_budget": outcome.budget_ended, "trials_started": counts.get("num_trials"),
                  "refused": outcome.budget.refused if outcome.budget else 0, "cut": counts.get("cut_by_budget")}
        if outcome.budget and outcome.budget.last_start:  # the soft limit's last yes: when, and what it expected
            budget["last_start_s"], budget["last_expected_s"] = outcome.budget.last_start
    return dataclasses.replace(meta, runs=runs, ended=_iso(t_end), status=status, tune_seconds=t_tuned - t_start,
                               wall_seconds=sum(float(r.wall_seconds or 0) for r in runs), budget=budget, **counts)


def _annotate_study(exp_dir: Path, name: str, df: Any) -> None:
    """Mirror the results' per-trial facts into the Optuna study's user attributes where missing."""
    import optuna

    db = exp_dir / STUDY_FILE
    if not db.is_file() or df.empty:
        return
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return
    by_number = {int(n): g for n, g in df.dropna(subset=["optuna_trial"]).groupby("optuna_trial")}
    for ft in study.get_trials(deepcopy=False):
        g = by_number.get(ft.number)
        if g is None or "value_epoch" in ft.user_attrs:
            continue
        if ft.state.is_finished():
            continue  # finished trials are read-only in Optuna; the searcher wrote the attributes it had
        storage.set_trial_user_attr(ft._trial_id, "value_epoch", int(g["epoch"].max()))


# -- the whole sweep ---------------------------------------------------------------------------


def run_sweep(args: SweepArgs) -> SweepResult:
    """Plan the sweep, run (or resume) it, train the winner on what is left of the budget (with a
    final share), evaluate the best of each model, and write the experiment directory.

    Returns:
        Where the files went and whether every trial finished.
    """
    t_start = time.time()
    plan = plan_sweep(args)
    deadline = t_start + plan.budget_s if plan.budget_s else None
    if plan.args.no_search:
        return _run_no_search(plan, t_start, float(deadline or t_start))
    from mmtune.search import tune_adapter as ta
    from mmtune.search.tracking import live_mlflow

    # Before Ray starts: a tracking server that cannot be reached is one line, nothing trained.
    mlflow = live_mlflow(plan.args.tracker, plan.exp_dir, plan.name, plan.args.tracker_live)
    cluster = ta.connect(plan.args.address)
    with contextlib.ExitStack() as stack:
        try:
            driver = stack.enter_context(owner.hold(plan.exp_dir))  # one driver at a time (owner.py)
            meta = _start(plan, cluster, fit_cluster(plan, cluster), t_start)
            outcome = _run_trials(plan, meta, _search_budget(plan, deadline), driver, mlflow)
        finally:
            ta.shutdown()  # the final phase and the test split run in this process, on every CPU
        t_tuned = time.time()
        trials, final = list(outcome.trials), None
        if plan.final_share > 0 and deadline is not None and not outcome.interrupted:
            trials, final = _final_phase(plan, trials, deadline)
        return _conclude(plan, meta, outcome, trials, t_start, t_tuned, final)


def _run_no_search(plan: SweepPlan, t_start: float, deadline: float) -> SweepResult:
    """--no-search: the space's default config trained from scratch for the whole budget (no Ray)."""
    threads = cpu_threads()
    cluster = ClusterInfo(None, float(threads), 0.0, 1, float(threads), 0.0)
    with owner.hold(plan.exp_dir):
        meta = _start(plan, cluster, 1, t_start)
        start = FinalStart(plan.space.default_params())
        t0 = time.time()
        record = run_final(plan.space, plan.train_overrides, start, deadline, REPORT_S, plan.exp_dir, threads)
        final = _final_record(plan, start, record, t0, threads, REPORT_S)
        outcome = _NoTrials(trials=[record] if record else [], fit_seconds=0.0)
        return _conclude(plan, meta, outcome, list(outcome.trials), t_start, time.time(), final)


@dataclass
class _NoTrials:
    """The search's outcome when no search ran (--no-search): what `_finish` reads of a TuneOutcome."""

    trials: list[TrialRecord]
    fit_seconds: float
    interrupted: bool = False
    budget_ended: bool = True
    budget: Any = None


def _final_phase(plan: SweepPlan, trials: list[TrialRecord],
                 deadline: float) -> tuple[list[TrialRecord], dict[str, Any] | None]:
    """The best trial's best checkpoint continued on every CPU until the deadline (less the test's time)."""
    best = best_per_model(trials, plan.space)
    ranked = sorted(best.items(), key=lambda kv: as_finite(kv[1][1]["val_mse"]))
    ref = checkpoint_for(ranked[0][1][0], int(ranked[0][1][1].get("epoch") or 0)) if ranked else None
    if ref is None:
        _say("mmtune search: final phase skipped: no trial kept a checkpoint to continue")
        return trials, None
    model, (trial, _row) = ranked[0]
    start = FinalStart({k: v for k, v in trial.config.items() if k != "optuna_trial"}, trial.trial_id, ref,
                       int(ref.metrics.get("epoch", 0)))
    threads = cpu_threads()
    test_clips = make_data_config(plan.space.data).test_size
    reserve = reserve_for_test_s(trials, test_clips, threads, skip_model=model)
    t0 = time.time()
    record = run_final(plan.space, plan.train_overrides, start, deadline, reserve, plan.exp_dir, threads,
                       family_infer_ms(trials).get(model))
    return trials + ([record] if record else []), _final_record(plan, start, record, t0, threads, reserve)


def _final_record(plan: SweepPlan, start: FinalStart, record: TrialRecord | None, t0: float, threads: int,
                  reserve_s: float) -> dict[str, Any]:
    """sweep.json's `final`: what the final phase trained, from where, for how long, on what."""
    rows = record.rows if record else []
    return {"share": plan.final_share, "no_search": plan.args.no_search, "params": start.params,
            "source_trial": start.source, "source_epoch": start.epoch, "start": start.note(),
            "ran": record is not None, "seconds": time.time() - t0, "threads": threads, "reserve_s": reserve_s,
            "time_budget_s": rows[0].get("time_budget_s") if rows else None,
            "epochs": len(rows), "train_samples": int(sum(int(r.get("train_samples") or 0) for r in rows)),
            "best_val_mse": min((as_finite(r.get("val_mse")) for r in rows), default=None)}


def _conclude(plan: SweepPlan, meta: SweepMeta, outcome: Any, trials: list[TrialRecord], t_start: float,
              t_tuned: float, final: dict[str, Any] | None) -> SweepResult:
    """Write the results, test each model's best, write sweep.json, the report and the console summary."""
    df = results_frame(trials)
    write_results(plan.exp_dir, df)
    found = evaluate(plan.space, plan.train_overrides, trials)
    write_findings(plan.exp_dir, found)
    _annotate_study(plan.exp_dir, plan.name, df)
    meta = _finish(meta, "interrupted" if outcome.interrupted else "completed", df, t_start, t_tuned, outcome)
    meta = dataclasses.replace(meta, final=final, training_share=training_share(df, meta.effective.max_concurrent,
                                                                                outcome.fit_seconds, final))
    write_sweep(plan.exp_dir, meta)
    _print_summary(plan.exp_dir, meta, found)
    return SweepResult(plan.exp_dir, meta.status, int(meta.num_trials or 0), float(meta.wall_seconds or 0.0))


def training_share(df: Any, slots: int, search_s: float, final: dict[str, Any] | None) -> float | None:
    """Of the machine's time in the search (`slots` x its seconds) and the final phase, the share spent
    in training steps (the rest: starting trials, validation, checkpoints, waiting)."""
    if df.empty:
        return None
    train = df["train_seconds"].astype(float).fillna(0.0)
    final_rows = (df["phase"] == "final") if "phase" in df else train != train  # no phase column: all search
    search_train = float(train[~final_rows].sum())
    final_train, final_s = float(train[final_rows].sum()), float(final["seconds"]) if final else 0.0
    wall = search_s + final_s
    return (search_train / max(slots, 1) + final_train) / wall if wall > 0 else None


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _print_summary(exp_dir: Path, meta: SweepMeta, found: Findings) -> None:
    cut = f"{meta.cut_by_budget} cut at the time budget, " if meta.cut_by_budget else ""
    cut += f"{meta.infeasible} infeasible (too big for memory), " if meta.infeasible else ""
    print(f"sweep {meta.status}: {meta.num_trials} trials ({meta.stopped_early} stopped early, {cut}"
          f"{meta.errored} errored, {meta.diverged} diverged) in {meta.wall_seconds or 0:.0f}s -> {exp_dir}")
    for model, entry in sorted(found.best_configs.items()):
        tested = found.test_metrics.get(model)
        line = f"  trial {entry.trial_id} epoch {entry.best_epoch}: val mse_frame {as_finite(entry.val_mse):.2f}; "
        if tested is not None and tested.test:
            vs = tested.vs_best_baseline
            line += result_line(model, tested.test, Verdict(**{k: vs[k] for k in Verdict._fields}) if vs else None)
        else:
            line += f"{model}: not tested"
        print(line)
    if meta.budget and meta.budget.get("used_s") is not None:
        b = meta.budget
        ended = ["the budget ended the sweep"] if b.get("ended_by_budget") else []
        if ended and b.get("refused"):
            ended.append(f"{b['refused']} trial(s) not started, as they would not have ended in time")
        if ended and b.get("cut"):
            ended.append(f"{b['cut']} trial(s) cut at the budget, at their last finished epoch")
        final_s = f" and the final phase {meta.final['seconds']:.0f}s" if meta.final and meta.final["ran"] else ""
        print(f"  time budget {b['budget']} for the whole sweep ({meta.wall_seconds or 0:.0f}s used): the search "
              f"ran {b['used_s']:.0f}s of its {b.get('search_s') or b['budget_s']:.0f}s{final_s}"
              + (f" ({'; '.join(ended)})" if ended else ""))
    if meta.final:
        f = meta.final
        if f["ran"]:
            print(f"  final phase: {f['start']}, {f['epochs']} validation(s), {f['train_samples']} clips in "
                  f"{f['seconds']:.0f}s on {f['threads']} thread(s), best val mse_frame {as_finite(f['best_val_mse']):.2f}")
        else:
            print(f"  final phase: not run ({f['start']}): too little of the budget was left")
    if meta.training_share is not None:
        print(f"  the machine spent {meta.training_share:.0%} of the trials' time in training steps "
              f"(median per-trial overhead {as_finite(meta.median_trial_overhead_s):.1f}s)")
    test_base = found.baselines.splits["test"]
    print(f"  baselines on the {test_base.size} test clips (no training), test mse_frame: "
          + ", ".join(f"{k} {v['mse_frame']:.2f}" for k, v in sorted(test_base.metrics.items(),
                                                                    key=lambda kv: kv[1]["mse_frame"])))
