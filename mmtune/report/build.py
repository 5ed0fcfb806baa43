"""`build_report`: one self-contained HTML page from a sweep's experiment directory."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from mmtune._hardware import gpu_name
from mmtune._io import atomic_write_bytes
from mmtune._num import is_finite
from mmtune.data.spec import MOVING_MNIST, ClipSpec
from mmtune.errors import MMTuneError
from mmtune.experiment import REPORT_FILE, Outcome, as_json
from mmtune.report._anytime import TITLE as ANYTIME_TITLE
from mmtune.report._anytime import AnytimeInfo, anytime_of, draw_anytime
from mmtune.report._curves import draw_curves, get_curves_info
from mmtune.report._flow import draw_flow, get_flow_info
from mmtune.report._frames import animation_gif, get_frames_info, strip_png
from mmtune.report._horizon import draw_horizon, get_horizon_info
from mmtune.report._html import details, esc, figure_div, fmt, img, notes_list, num, page, table
from mmtune.report._leaderboard import (
    METRICS,
    MSE_FRAME_LABEL,
    MSE_PIXEL_LABEL,
    BaselineInfo,
    LeaderboardInfo,
    ReferenceInfo,
    clip_spec,
    draw_reference,
    get_baseline_info,
    get_leaderboard_info,
    get_reference_info,
)
from mmtune.report._load import Experiment, load_experiment
from mmtune.report._params import draw_importance, draw_parallel, get_importance_info, get_parallel_info
from mmtune.report._pareto import ParetoInfo, draw_pareto, front_rows, get_pareto_info
from mmtune.report._summary import SummaryInfo, get_summary_info

_DIGITS = {"mse_frame": 2, "mse_pixel255": 1, "mae_frame": 2, "ssim": 4, "psnr": 2}


def default_out(exp_dir: str | Path) -> Path:
    """Where the report goes without --out: ``EXP/report.html``, beside the results it reads."""
    return Path(exp_dir) / REPORT_FILE


def _resolve_out(exp: Experiment, out: str | Path | None) -> Path:
    if out is None:
        return default_out(exp.path)
    path = Path(out)
    if path.is_dir() or str(out).endswith(("/", "\\")):
        return path / f"{exp.name}.html"
    if path.suffix.lower() not in (".html", ".htm"):
        return path.with_name(path.name + ".html")
    return path


def _hours(x: float) -> str:
    return "unknown" if not is_finite(x) else f"{x:.3f} h"


def _duration(seconds: float) -> str:
    if not is_finite(seconds):
        return "unknown"
    s = int(round(seconds))
    return f"{s // 3600}h {s % 3600 // 60:02d}m {s % 60:02d}s ({seconds:.0f} s)"


def _summary_html(s: SummaryInfo, exp: Experiment) -> str:
    cls = "ok" if s.status == "completed" else "warn"
    banner = f'<div class="banner {cls}">Sweep status: {esc(s.status)}</div>'
    models = ", ".join(f"{esc(m)} ({s.trials_per_model.get(m, 0)} trials)" for m in s.models) or "none recorded"
    planned = f" of {s.num_trials_planned} planned" if s.num_trials_planned is not None else ""
    outcome_text = ", ".join(f"{esc(o.label)}: {n}" for o, n in s.outcomes.items() if n) or "none"
    res = ", ".join(f"{k} {v:g}" for k, v in s.resources_per_trial.items()) or "unknown"
    gpu = gpu_name(s.hardware)
    device = "GPU" if gpu else "CPU"
    rows = [
        ["Experiment", esc(s.name)],
        ["Directory", esc(exp.path.resolve())],
        ["Ran on", f"{device} ({esc(gpu) if device == 'GPU' else 'no GPU'}), "
                   f"{esc(s.hardware.get('logical_cpus', '?'))} CPUs; hosts: {esc(', '.join(s.hosts) or '?')}"],
        ["Models searched", models],
        ["Trials run", f"{s.trials}{planned}"],
        ["Outcomes", outcome_text],
        ["Stopped early by ASHA", str(s.outcomes[Outcome.STOPPED_EARLY])],
        ["Failed / diverged", f"{s.outcomes[Outcome.FAILED]} failed, {s.outcomes[Outcome.DIVERGED]} diverged (NaN)"],
        ["Resources per trial", res],
        ["Trial-hours (sum of trial wall times)", _hours(s.trial_hours)],
        ["CPU-hours", _hours(s.cpu_hours)],
        ["GPU-hours", _hours(s.gpu_hours)],
        ["Objective", "val MSE/frame and FLOPs per training sample (multi-objective)" if s.objective == "mse+flops"
                      else "val MSE/frame"],
        *([["Time budget", esc(s.budget)]] if s.budget else []),
        *([["Warm start", esc(s.warm_start)]] if s.warm_start else []),
        *([["Final phase", esc(s.final_phase)]] if s.final_phase else []),
        *([["Time in training steps", esc(s.training_share)]] if s.training_share else []),
        ["Sweep wall time", _duration(s.wall_seconds)],
        ["Started / ended", f"{esc(s.started or '?')} / "
                            f"{esc(s.ended or ('not yet' if s.status == 'running' else '?'))}"],
    ]
    hw = table(["hardware", "value"], [[esc(k), esc(v)] for k, v in s.hardware.items()]) if s.hardware else ""
    vers = table(["package", "version"], [[esc(k), esc(v)] for k, v in s.versions.items()]) if s.versions else ""
    args = {k: v for k, v in as_json(exp.sweep).items() if k != "hardware"} if exp.sweep else {}
    extra = details("sweep arguments (sweep.json)", args) if args else ""
    extra += details("search space", exp.space) if exp.space else ""
    return (banner + table("", rows) + notes_list(s.notes)
            + f'<div class="frames"><div>{hw}</div><div>{vers}</div></div>' + extra)


def _units_html(spec: ClipSpec = MOVING_MNIST) -> str:
    """The two MSE conventions, for this sweep's clip size (C x H x W values per frame)."""
    values = (f"{spec.height}×{spec.width} pixels" if spec.channels == 1
              else f"{spec.channels}×{spec.height}×{spec.width} values")
    return ('<div class="units"><b>Two MSE conventions.</b> '
            f"<b>{esc(MSE_FRAME_LABEL)}</b>: per frame, the sum over the {values} of the squared error "
            "with pixels in [0, 1], averaged over frames (OpenSTL, SimVP, TAU). "
            f"<b>{esc(MSE_PIXEL_LABEL)}</b>: the mean squared error per pixel on the 0–255 scale "
            f"(the reference report's table). MSE/pixel = MSE/frame × 65025 / {spec.pixels} "
            f"≈ MSE/frame × {65025 / spec.pixels:.3f}.</div>")


def _leaderboard_html(info: LeaderboardInfo) -> str:
    head = ('<tr><th rowspan="2">rank</th><th rowspan="2">trial</th><th rowspan="2">outcome</th>'
            '<th rowspan="2">best epoch / epochs run</th>'
            f'<th colspan="{len(METRICS)}">validation, at the best epoch</th>'
            f'<th colspan="{len(METRICS)}">test, best checkpoint</th><th rowspan="2">config</th></tr>'
            "<tr>" + "".join(f"<th>{esc(label)}</th>" for _, label in METRICS) * 2 + "</tr>")
    parts = []
    for model, rows in info.models.items():
        parts.append(f"<h3>{esc(model)}</h3>")
        if not rows:
            parts.append(f'<p class="note">{esc(model)}: no trial with a finite val MSE.</p>')
            continue
        body, classes = [], []
        for r in rows:
            test = r.test or {}
            cfg = details("full trial config", r.trial_config) if r.trial_config else ""
            body.append([str(r.rank), esc(r.trial_id), esc(r.outcome.label if r.outcome else "?"),
                         f"{r.best_epoch if r.best_epoch is not None else '—'} / {r.epochs or '—'}"]
                        + [num(r.val.get(m), _DIGITS[m]) for m, _ in METRICS]
                        + [num(test.get(m), _DIGITS[m]) for m, _ in METRICS]
                        + [details("searched params", r.params) + cfg])
            classes.append("tested" if r.test else "")
        parts.append(table(head, body, classes))
    return (f'<p class="note">Top {info.k} trials of each model by best val MSE over all epochs (not the last '
            "epoch). Test metrics exist for the best checkpoint of each model only (shaded row).</p>"
            + "".join(parts) + notes_list(info.notes))


def _verdict_html(info: BaselineInfo) -> str:
    """One banner per tested model: how its test MSE compares with the best trivial baseline."""
    if not info.rows:
        return notes_list(info.notes)
    out = []
    for model, v in info.verdicts.items():
        out.append(f'<div class="banner {"ok" if v.beats else "warn"}">{esc(v.words(model))}</div>')
    if info.verdicts and len(info.losers) == len(info.verdicts):
        out.insert(0, '<div class="banner warn">No model of this sweep beats the best trivial baseline: '
                      "the numbers below say what a constant frame already scores, not what was learned.</div>")
    return "".join(out)


def _baselines_html(info: BaselineInfo) -> str:
    if not info.rows:
        return notes_list(info.notes)
    size = f"the {info.test_size} test clips" if info.test_size else "the test split"
    rows = [[esc(r.name) + (" (best)" if r.best else ""), esc(r.description)]
            + [num(r.test.get(m), _DIGITS[m]) for m, _ in METRICS] for r in info.rows]
    return (f'<p class="note">Predictors that need no training, on {esc(size)} the models were tested on. '
            "A model that does not beat the best of them has not learned to predict the motion.</p>"
            + table(["baseline", "prediction"] + [f"test {esc(label)}" for _, label in METRICS], rows,
                    ["tested" if r.best else "" for r in info.rows]) + notes_list(info.notes))


def _reference_html(info: ReferenceInfo) -> str:
    rows = [[esc(r.label), esc(r.source), esc(r.epochs), num(r.mse_pixel255, 1), num(r.mse_frame, 2)]
            for r in info.rows if r.kind != "baseline"]
    return table(["model", "source", "epochs", f"test {esc(MSE_PIXEL_LABEL)}", f"test {esc(MSE_FRAME_LABEL)}"],
                 rows, ["tested" if r.ours else "" for r in info.rows if r.kind != "baseline"]) + notes_list(info.notes)


def _pareto_intro() -> str:
    """How to read the Pareto panel and its table."""
    return ('<p class="note">Each trial\'s best val MSE/frame against what its config costs: FLOPs of one '
            "training sample (forward + loss + backward, counted by torch's FlopCounterMode, so the same on any "
            "machine) and trainable parameters. A config is on a front when no other trial is at least as cheap and "
            "at least as accurate, and better in one of the two. Large markers and the coloured steps: each family's front; black ring and the "
            "dotted steps: the front across families. The two speeds in the table were measured where the "
            "trial ran (see the hardware in the summary), so they compare trials of one sweep only.</p>")


def _pareto_html(info: ParetoInfo) -> str:
    """The frontier's configs, one row each (family's or overall front, against FLOPs or parameters)."""
    def where(front: dict[str, bool]) -> str:
        return ", ".join(name for key, name in (("flops_per_sample", "FLOPs"), ("params", "params")) if front[key]) or "—"

    rows = [[esc(p.model), esc(p.trial_id), num(p.val_mse, 2), num(p.flops_per_sample / 1e9, 3),
             num(p.params / 1e6, 3), num(p.train_samples_per_s, 1), num(p.infer_ms_per_clip, 2),
             where(p.front), where(p.front_all), details("searched params", p.config)]
            for p in front_rows(info)]
    head = ["model", "trial", f"best val {esc(MSE_FRAME_LABEL)}", "GFLOPs / training sample", "parameters (M)",
            "train samples/s (median)", "inference ms/clip", "on its family's front", "on the front across families",
            "config"]
    return "<h3>The configs on a front</h3>" + table(head, rows) + notes_list(info.notes)


def _anytime_intro() -> str:
    """How to read the anytime panel."""
    return ('<p class="note">The best val MSE/frame reached so far, after each epoch any trial reported, in the '
            "order they were reported: what the run would have delivered had it been stopped then. Left: against "
            "the seconds since the sweep started; right: against the training FLOPs spent so far (FLOPs of one "
            "training clip × clips trained, summed over every trial, those ASHA stopped and those that diverged "
            "included, and the final phase). Diamonds: the final phase, which continues the best trial on the whole "
            "machine. Other runs drawn beside this one (<code>--beside</code>) share the axes.</p>")


def _anytime_html(infos: list[AnytimeInfo]) -> str:
    """One row per run: what it was, its best val MSE at the end, when it got there, and the training it spent."""
    def reached(i: AnytimeInfo) -> float | None:  # the first point at the final best
        return i.x_seconds[i.best_val_mse.index(i.best_val_mse[-1])] if i.best_val_mse else None

    rows = [[esc(i.name), esc(i.label), num(i.best_val_mse[-1] if i.best_val_mse else None, 2),
             num(reached(i), 0), num(i.x_seconds[-1] if i.x_seconds else None, 0),
             num(i.total_flops / 1e12 if is_finite(i.total_flops) else None, 2), str(sum(i.final))]
            for i in infos]
    head = ["run", "what ran", f"best val {esc(MSE_FRAME_LABEL)} at the end", "reached at (s)", "last report (s)",
            "training TFLOPs in all", "final-phase points"]
    notes = [f"{i.name}: {n}" if len(infos) > 1 else n for i in infos for n in i.notes]
    return table(head, rows) + notes_list(notes)


def _load_beside(exp_dir: str | Path) -> Experiment:
    """An experiment to draw beside the report's own, or one MMTuneError saying which and why."""
    try:
        return load_experiment(exp_dir)
    except MMTuneError as exc:
        raise MMTuneError(f"cannot draw {str(exp_dir)!r} beside the report's sweep: {exc}") from None


def _frames_html(exp: Experiment) -> str:
    parts, notes = [], []
    for model in exp.models:
        info = get_frames_info(exp, model)
        if info is None:
            notes.append(f"{model}: no predictions/{model}.npz (no completed trial, or not tested yet).")
            continue
        parts.append(
            f"<h3>{esc(model)}</h3><div class=\"frames\">"
            f"<figure>{img(strip_png(info), 'image/png', f'{model} strip')}<figcaption>rows: input, ground truth, "
            f"prediction, |error| (test clip 0, MSE/frame {fmt(info.mse_frame)})</figcaption></figure>"
            f"<figure>{img(animation_gif(info), 'image/gif', f'{model} animation')}<figcaption>input → prediction "
            "(left) beside the truth (right), looping</figcaption></figure></div>")
    return "".join(parts) + notes_list(notes) if parts or notes else '<p class="note">No models.</p>'


def build_report(exp_dir: str | Path, out: str | Path | None = None, top_k: int = 5,
                 beside: Sequence[str | Path] = ()) -> Path:
    """Write the HTML report of one sweep.

    Args:
        exp_dir: The experiment directory a sweep wrote (results.parquet, best_configs.json,
            test_metrics.json, predictions/, sweep.json, study.db); any of them may be missing.
        out: The HTML file to write; a directory (existing, or ending in /) gets ``<name>.html``,
            a path without .html gets it appended. Default: ``EXP/report.html``.
        top_k: Trials per model on the leaderboard.
        beside: Other experiment directories whose anytime curves (best val MSE so far) are drawn in
            the same panel, e.g. the --no-search run and random search at the same time budget.

    Returns:
        The path written.

    Raises:
        MMTuneError: `exp_dir`, or one of `beside`, does not exist or holds nothing a sweep writes.

    Example:
        >>> build_report("experiments/smoke")  # doctest: +SKIP
        PosixPath('experiments/smoke/report.html')
    """
    t0 = time.perf_counter()
    exp = load_experiment(exp_dir)
    others = [_load_beside(d) for d in beside]  # a bad one stops the report before anything is written
    path = _resolve_out(exp, out)
    figs = _Figures()
    body = [*_top_sections(exp, top_k, figs), *_curve_sections(exp, others, figs), *_param_sections(exp, figs),
            *_frame_sections(exp, figs)]
    body.append(f'<p class="note">Built by <code>mmtune report</code> on {time.strftime("%Y-%m-%d %H:%M:%S")} '
                f"in {time.perf_counter() - t0:.1f} s from {esc(exp.path.resolve())}; {len(figs.names)} figures.</p>")
    return atomic_write_bytes(page(f"mmtune report: {exp.name}", "\n".join(body)).encode("utf-8"), path)


class _Figures:
    """The report's figures, each in a div named after its panel (tests look figures up by it)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def __call__(self, f: object, panel: str) -> str:
        self.names.append(f"fig-{panel}")
        return figure_div(f, self.names[-1])  # type: ignore[arg-type]


def _top_sections(exp: Experiment, top_k: int, fig: _Figures) -> list[str]:
    """Title, summary, verdict, leaderboard, published numbers and the cost panel."""
    summary = get_summary_info(exp)
    device = "GPU sweep" if gpu_name(summary.hardware) else "CPU sweep"
    body = [f"<h1>mmtune sweep report: {esc(exp.name)} <small>({device})</small></h1>",
            "<h2>Summary</h2>" + _summary_html(summary, exp)]
    if exp.notes:
        body.append("<h3>What the experiment directory lacks</h3>" + notes_list(exp.notes))
    base = get_baseline_info(exp)
    body.append("<h2>Against the trivial baselines</h2>" + _verdict_html(base))
    body.append(_units_html(clip_spec(exp)))
    body.append("<h2>Leaderboard</h2>" + _leaderboard_html(get_leaderboard_info(exp, top_k))
                + "<h3>Trivial baselines (no training)</h3>" + _baselines_html(base))
    ref = get_reference_info(exp)
    body.append("<h2>Best test MSE beside published numbers</h2>" + fig(draw_reference(ref), "reference") + _reference_html(ref))
    pareto = get_pareto_info(exp.results, exp.models)
    # No trial with a cost (a sweep from before costs were recorded): the note says so, no empty plot.
    cost = (_pareto_intro() + fig(draw_pareto(pareto), "pareto") + _pareto_html(pareto) if pareto.points
            else notes_list(pareto.notes))
    body.append("<h2>Accuracy against cost</h2>" + cost)
    return body


def _curve_sections(exp: Experiment, others: list[Experiment], fig: _Figures) -> list[str]:
    """The learning curves and the anytime panel (with the experiments drawn beside it)."""
    curves = get_curves_info(exp)
    anytime = [anytime_of(e) for e in (exp, *others)]
    return ["<h2>Learning curves</h2>" + fig(draw_curves(curves), "curves") + notes_list(curves.notes),
            f"<h2>{esc(ANYTIME_TITLE)}</h2>" + _anytime_intro() + fig(draw_anytime(anytime), "anytime")
            + _anytime_html(anytime)]


def _param_sections(exp: Experiment, fig: _Figures) -> list[str]:
    """Per model: its parallel coordinates and parameter importances."""
    body = ["<h2>Hyperparameters against val MSE</h2><p class=\"note\">Per model: the search space is "
            "conditional, so parameters of different families are never mixed. Importances are Optuna's "
            "(PED-ANOVA, else fANOVA) on a study rebuilt from results.parquet with each trial's best val MSE "
            "over its epochs: study.db holds the last value OptunaSearch was told, which for an "
            "ASHA-stopped trial is its truncated one.</p>"]
    for model in exp.models:
        par, imp = get_parallel_info(exp, model), get_importance_info(exp, model)
        # An empty figure shows its note itself; below a drawn one the note is a caveat.
        body.append(f"<h3>{esc(model)}</h3>" + fig(draw_parallel(par), f"parallel-{model}")
                    + notes_list([par.note] if par.note and par.axes else [])
                    + fig(draw_importance(imp), f"importance-{model}") + notes_list([imp.note] if imp.note and imp.importances else []))
    return body


def _frame_sections(exp: Experiment, fig: _Figures) -> list[str]:
    """Error against horizon, the predicted frames, and flow against no flow."""
    hz, flow = get_horizon_info(exp), get_flow_info(exp)
    return ["<h2>Error against horizon</h2>" + fig(draw_horizon(hz), "horizon") + notes_list(hz.notes),
            "<h2>Predicted frames</h2>" + _frames_html(exp),
            "<h2>Flow against no flow</h2>" + fig(draw_flow(flow), "flow") + notes_list([flow.note] if flow.note else [])]


__all__ = ["build_report", "default_out"]
