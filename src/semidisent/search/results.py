"""A study's results as files: the trial table, the picture, the summary and the best params.

Works on Optuna's frozen trials without importing optuna (states are read by name), so the
summary of a finished study can be written by any process that can read the storage.

Besides the best trial, the summary measures how well few-label selection did: the rank
correlation between the objective (e.g. ``val_mig``, computed on the labelled pool) and its
full-ground-truth counterpart (``mig``) over the completed trials, and the *regret*: the
ground-truth score of the truly best trial minus that of the trial the objective selected.

It also reports the best trial with replacement rate p = 0 (the semi-supervised baseline,
``search.baseline_trials``) beside the best trial, with its objective values, its ground-truth
metrics and the differences, or says plainly that no p = 0 trial completed.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .space import BASELINE_KEY, MODEL_KEY, applied_params, qualified, trial_sections

# The ground-truth metric each few-label objective estimates.
GT_COUNTERPART = {"val_mig": "mig", "val_dci": "dci", "val_sap": "sap"}
PLOT_AXES = ("beta", "replacement_rate")


@dataclass(frozen=True)
class StudyView:
    """What the writers need to know about the study besides its trials."""

    name: str
    objectives: tuple[str, ...]
    directions: tuple[str, ...]
    space: tuple[str, ...]  # searched keys (train: bare; model.name; <family>.<key>)
    log_axes: tuple[str, ...]  # searched keys with a log-uniform range
    fixed: dict[str, Any]  # train values of the plot axes that are not searched
    gt_metrics: tuple[str, ...]
    # The fixed model.name (the family of every trial unless model.name is searched); None:
    # not known (a trial's family is then only known when searched).
    model_name: str | None = None


def trial_family(t: Any, view: StudyView) -> str | None:
    """The trial's model.name (searched, or the fixed one)."""
    return t.params.get(MODEL_KEY, view.model_name)


def trial_applied(t: Any, view: StudyView) -> dict[str, Any]:
    """The trial's searched keys that apply to it, in the space's order (not the keys of other
    families, drawn for every trial)."""
    applied = applied_params(t.params, view.model_name)
    return {k: applied[k] for k in view.space if k in applied}


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _better(a: float, b: float, direction: str) -> bool:
    return a > b if direction == "maximize" else a < b


def complete_trials(trials: Sequence[Any]) -> list[Any]:
    return [
        t
        for t in trials
        if t.state.name == "COMPLETE" and t.values and all(_finite(v) for v in t.values)
    ]


def pareto_front(trials: Sequence[Any], directions: Sequence[str]) -> list[Any]:
    def dominates(a: Any, b: Any) -> bool:
        pairs = list(zip(a.values, b.values, directions, strict=True))
        no_worse = all(not _better(y, x, d) for x, y, d in pairs)
        return no_worse and any(_better(x, y, d) for x, y, d in pairs)

    done = complete_trials(trials)
    return [t for t in done if not any(dominates(o, t) for o in done if o is not t)]


def best_trial(trials: Sequence[Any], directions: Sequence[str]) -> Any | None:
    """The best complete trial; with several objectives, the Pareto-optimal trial that is best
    on the first objective (ties: the earliest)."""
    front = pareto_front(trials, directions)
    best = None
    for t in sorted(front, key=lambda t: t.number):
        if best is None or _better(t.values[0], best.values[0], directions[0]):
            best = t
    return best


def trial_rows(trials: Sequence[Any], view: StudyView) -> list[dict[str, Any]]:
    """One row per trial: number, state, objective values, parameters, ground-truth metrics."""
    axes = list(view.space) + [a for a in PLOT_AXES if a not in view.space]
    rows = []
    for t in sorted(trials, key=lambda t: t.number):
        a = t.user_attrs
        values = list(t.values) if t.values else []
        row: dict[str, Any] = {"number": t.number, "state": t.state.name}
        for i, name in enumerate(view.objectives):
            row[name] = values[i] if i < len(values) else None
        for name in axes:
            row[name] = t.params.get(name, view.fixed.get(name))
        gt = a.get("gt") or {}
        for name in view.gt_metrics:
            row[f"gt_{name}"] = gt.get(name)
        steps = a.get("steps")
        if steps is None and t.intermediate_values:
            steps = max(t.intermediate_values)
        row["steps"] = steps
        row["duration_s"] = a.get("duration_s")
        row["worker"] = a.get("worker")
        row["retry_of"] = (t.system_attrs.get("retry_history") or [None])[0]
        row["mlflow_run_id"] = a.get("mlflow_run_id")
        row["failure"] = a.get("failure")
        rows.append(row)
    return rows


def write_csv(path: str | Path, rows: Sequence[dict[str, Any]], view: StudyView) -> Path:
    path = Path(path)
    columns = ["number", "state", *view.objectives]
    columns += list(view.space) + [a for a in PLOT_AXES if a not in view.space]
    columns += [f"gt_{m}" for m in view.gt_metrics]
    columns += ["steps", "duration_s", "worker", "retry_of", "mlflow_run_id", "failure"]
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    tmp.replace(path)
    return path


def _ranks(x: Sequence[float]) -> list[float]:
    order = sorted(range(len(x)), key=lambda i: x[i])
    ranks = [0.0] * len(x)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
            j += 1
        for k in range(i, j + 1):  # ties share their mean rank
            ranks[order[k]] = (i + j) / 2.0
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    if len(x) < 3:
        return None
    rx, ry = _ranks(x), _ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def selection_quality(trials: Sequence[Any], view: StudyView) -> dict[str, Any] | None:
    """How well the (first) objective picks the truly best model, over complete trials."""
    objective, direction = view.objectives[0], view.directions[0]
    gt_name = GT_COUNTERPART.get(objective)
    if gt_name not in view.gt_metrics:
        gt_name = view.gt_metrics[0] if view.gt_metrics else None
    if gt_name is None:
        return None
    pairs = [
        (t, t.values[0], (t.user_attrs.get("gt") or {}).get(gt_name))
        for t in complete_trials(trials)
    ]
    pairs = [(t, v, g) for t, v, g in pairs if _finite(g)]
    if not pairs:
        return None
    selected = pairs[0]
    for p in pairs[1:]:
        if _better(p[1], selected[1], direction):
            selected = p
    truly_best = max(pairs, key=lambda p: p[2])  # every ground-truth metric: higher is better
    return {
        "objective": objective,
        "gt_metric": gt_name,
        "n": len(pairs),
        "spearman": spearman([p[1] for p in pairs], [p[2] for p in pairs]),
        "selected_trial": selected[0].number,
        "gt_of_selected": selected[2],
        "truly_best_trial": truly_best[0].number,
        "gt_best": truly_best[2],
        "regret": truly_best[2] - selected[2],
    }


def _rate(t: Any, view: StudyView) -> Any:
    return t.params.get(BASELINE_KEY, view.fixed.get(BASELINE_KEY))


def baseline_trial(trials: Sequence[Any], view: StudyView) -> Any | None:
    """The best complete trial with replacement rate p = 0 (ranked as :func:`best_trial`)."""
    return best_trial([t for t in trials if _rate(t, view) == 0], view.directions)


def _gt(t: Any) -> dict[str, float]:
    return {k: v for k, v in (t.user_attrs.get("gt") or {}).items() if _finite(v)}


def baseline_summary(trials: Sequence[Any], view: StudyView) -> dict[str, Any]:
    """The best p = 0 trial beside the best trial: its objective values, ground-truth metrics
    (logged, never selected on), searched keys and ``best_minus_baseline``; or a note saying
    why there is none."""
    zero = [t for t in trials if t.params and _rate(t, view) == 0]
    base = baseline_trial(trials, view)
    out: dict[str, Any] = {
        "replacement_rate": 0.0,
        "trial": None if base is None else base.number,
        "trials": len(zero),
        "complete": len(complete_trials(zero)),
    }
    searched = BASELINE_KEY in view.space
    fixed = view.fixed.get(BASELINE_KEY)
    if base is None:
        if not searched and fixed != 0:
            out["note"] = (
                f"no p = 0 trial: replacement_rate is not searched (every trial uses "
                f"train.replacement_rate = {fixed}); search.baseline_trials is ignored"
            )
        else:
            states = sorted({t.state.name for t in zero})
            out["note"] = "no p = 0 trial completed" + (
                f" ({len(zero)} p = 0 trial(s): {', '.join(states)})" if zero else ""
            )
        return out
    out.update(zip(view.objectives, base.values, strict=True))
    out["gt"] = _gt(base)
    out["params"] = trial_applied(base, view)
    if trial_family(base, view) is not None:
        out["model"] = trial_family(base, view)
    best = best_trial(trials, view.directions)
    diff: dict[str, Any] = {
        name: b - a for name, a, b in zip(view.objectives, base.values, best.values, strict=True)
    }
    best_gt, base_gt = _gt(best), _gt(base)
    diff["gt"] = {k: best_gt[k] - base_gt[k] for k in base_gt if k in best_gt}
    out["best_minus_baseline"] = diff
    if not searched:
        out["note"] = "replacement_rate is not searched: every trial uses p = 0"
    return out


def summary(trials: Sequence[Any], view: StudyView, counts: dict[str, int]) -> dict[str, Any]:
    """search_summary.json (DVC metrics): numbers only, nested."""
    best = best_trial(trials, view.directions)
    out: dict[str, Any] = {"trials": {**counts, "total": len(trials)}}
    if best is not None:
        out["best"] = {
            "trial": best.number,
            **dict(zip(view.objectives, best.values, strict=True)),
            "gt": {k: v for k, v in (best.user_attrs.get("gt") or {}).items() if _finite(v)},
            # its searched keys (model.name and family keys included) and family, as the
            # baseline's: what the best trial is, next to how well it did
            "params": trial_applied(best, view),
        }
        if trial_family(best, view) is not None:
            out["best"]["model"] = trial_family(best, view)
    else:
        out["best"] = {"trial": None}
    out["baseline"] = baseline_summary(trials, view)
    if len(view.objectives) > 1:
        out["pareto_trials"] = [t.number for t in pareto_front(trials, view.directions)]
    out["selection"] = selection_quality(trials, view)
    return out


def _override_value(v: Any) -> str:
    """A value as ``-S`` reads it back (YAML): strings as they are, numbers and booleans JSON."""
    return v if isinstance(v, str) else json.dumps(v)


def best_params(trials: Sequence[Any], view: StudyView, steps: int) -> dict[str, Any]:
    """best_params.json: the best trial's searched keys by params section, ready to be merged
    into params (``train``, ``model``, its family's section: what the Kubeflow train step does)
    or used as ``-S`` overrides of a full training (``overrides``).

    ``train``: its searched train keys; ``model``: ``{"name": its family}`` (searched or fixed:
    the family keys mean nothing without it); ``<family>``: its searched family keys (only its
    own family's, when model.name is searched). Empty without a complete trial."""
    best = best_trial(trials, view.directions)
    sections: dict[str, dict[str, Any]] = {"train": {}}
    model: dict[str, Any] = {}
    overrides: list[str] = []
    if best is not None:
        name, sections = trial_sections(best.params, view.model_name)
        if name is not None:
            model = {"name": name}
            overrides.append(f"model.name={name}")
        overrides += [
            f"{qualified(k)}={_override_value(v)}"
            for k, v in trial_applied(best, view).items()
            if k != MODEL_KEY
        ]
    return {
        "study": view.name,
        "trial": None if best is None else best.number,
        "train": sections["train"],
        "model": model,
        **{k: v for k, v in sections.items() if k != "train"},
        "overrides": overrides,
        "values": None if best is None else list(best.values),
        "objectives": list(view.objectives),
        "directions": list(view.directions),
        "steps": steps,
        "gt": {} if best is None else (best.user_attrs.get("gt") or {}),
    }


def _in_xlim(ax: Any, v: float) -> bool:
    lo, hi = ax.get_xlim()
    return lo <= v <= hi


def plot_trials(path: str | Path, trials: Sequence[Any], view: StudyView) -> Path:
    """beta vs replacement rate coloured by the (first) objective; beside it, the objective
    against its ground-truth counterpart (how well few-label selection ranks the models)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    objective = view.objectives[0]
    sel = selection_quality(trials, view)
    ncols = 2 if sel else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6.2 * ncols, 4.8), squeeze=False)
    ax = axes[0][0]

    def xy(t: Any) -> tuple[float, float]:
        x = t.params.get(PLOT_AXES[0], view.fixed.get(PLOT_AXES[0]))
        y = t.params.get(PLOT_AXES[1], view.fixed.get(PLOT_AXES[1]))
        return float(x), float(y)

    done = complete_trials(trials)
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    failed = [t for t in trials if t.state.name == "FAIL"]
    colour_values = [t.values[0] for t in done] + [
        t.values[0] for t in pruned if t.values and _finite(t.values[0])
    ]
    vmin = min(colour_values) if colour_values else 0.0
    vmax = max(colour_values) if colour_values else 1.0
    if vmin == vmax:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    cmap = "viridis" if view.directions[0] == "maximize" else "viridis_r"
    sc = None
    if done:
        pts = [xy(t) for t in done]
        sc = ax.scatter(
            [p[0] for p in pts],
            [p[1] for p in pts],
            c=[t.values[0] for t in done],
            cmap=cmap,
            vmin=vmin,
            vmax=vmax,
            s=60,
            edgecolors="k",
            linewidths=0.5,
            label=f"complete ({len(done)})",
            zorder=3,
        )
    scored = [t for t in pruned if t.values and _finite(t.values[0])]
    if scored:
        pts = [xy(t) for t in scored]
        ax.scatter(
            [p[0] for p in pts],
            [p[1] for p in pts],
            c=[t.values[0] for t in scored],
            cmap=cmap,
            vmin=vmin,
            vmax=vmax,
            marker="X",
            s=45,
            label=f"pruned ({len(pruned)}, last value)",
            zorder=2,
        )
    if failed:
        pts = [xy(t) for t in failed]
        ax.scatter(
            [p[0] for p in pts],
            [p[1] for p in pts],
            marker="o",
            facecolors="none",
            edgecolors="tab:red",
            s=45,
            label=f"failed / interrupted ({len(failed)})",
            zorder=1,
        )
    best = best_trial(trials, view.directions)
    if best is not None:
        bx, by = xy(best)
        ax.scatter(
            [bx], [by], marker="*", s=320, c="none", edgecolors="tab:red", linewidths=1.5,
            label=f"best: trial {best.number}", zorder=4,
        )  # fmt: skip
    base = baseline_trial(trials, view)
    if base is not None:
        bx, by = xy(base)
        ax.scatter(
            [bx], [by], marker="D", s=150, c="none", edgecolors="tab:orange", linewidths=1.5,
            label=f"best p = 0 (baseline): trial {base.number}", zorder=4,
        )  # fmt: skip
    if PLOT_AXES[0] in view.log_axes:
        from matplotlib.ticker import NullFormatter, ScalarFormatter

        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())  # 1, 2, 4 rather than 2 x 10^0
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks([v for v in (0.5, 1, 2, 4, 8, 16, 32, 64) if _in_xlim(ax, v)] or [])
    ax.set_xlabel(PLOT_AXES[0] + ("" if PLOT_AXES[0] in view.space else " (fixed)"))
    ax.set_ylabel(PLOT_AXES[1] + ("" if PLOT_AXES[1] in view.space else " (fixed)"))
    vs = "no p = 0 (baseline) trial completed"
    if BASELINE_KEY not in view.space and view.fixed.get(BASELINE_KEY) != 0:
        vs = f"replacement_rate fixed at {view.fixed.get(BASELINE_KEY)}: no p = 0 trial"
    if best is not None and base is not None:
        vs = (
            f"best {objective} {best.values[0]:.3f} (trial {best.number}) vs "
            f"p = 0 {base.values[0]:.3f} (trial {base.number})"
        )
    ax.set_title(f"{view.name}: {len(trials)} trials, colour = {objective}\n{vs}", fontsize=9)
    if sc is not None:
        fig.colorbar(sc, ax=ax, label=objective)
    if done or pruned or failed:
        ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    if sel:
        ax2 = axes[0][1]
        gt_name = sel["gt_metric"]
        pairs = [(t.values[0], (t.user_attrs.get("gt") or {}).get(gt_name), t.number) for t in done]
        pairs = [p for p in pairs if _finite(p[1])]
        ax2.scatter([p[0] for p in pairs], [p[1] for p in pairs], s=40, edgecolors="k")
        for v, g, n in pairs:
            ax2.annotate(str(n), (v, g), fontsize=6, xytext=(3, 3), textcoords="offset points")
        base_gt = None if base is None else (base.user_attrs.get("gt") or {}).get(gt_name)
        if base is not None and _finite(base_gt):
            ax2.scatter(
                [base.values[0]], [base_gt], marker="D", s=110, c="none",
                edgecolors="tab:orange", linewidths=1.5, label="best p = 0 (baseline)",
            )  # fmt: skip
            ax2.legend(fontsize=7, loc="best")
        rho = sel["spearman"]
        ax2.set_xlabel(f"{objective} (labelled pool: the objective)")
        ax2.set_ylabel(f"{gt_name} (full ground truth: never selected on)")
        ax2.set_title(
            f"selected trial {sel['selected_trial']} ({gt_name} {sel['gt_of_selected']:.3f}), "
            f"truly best {sel['truly_best_trial']} ({sel['gt_best']:.3f}); "
            f"Spearman {'n/a' if rho is None else f'{rho:.2f}'}",
            fontsize=8,
        )
        ax2.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
