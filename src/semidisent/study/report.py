"""A study's outputs: the per-model table, the statistics, the pictures, and the Markdown that
docs/results.md holds between the study's markers.

Written into the study folder by :func:`aggregate` (from the models' ``done.json`` /
``model.json`` files alone, so ``semidisent study report`` can rebuild everything without
training):

- ``models.csv``: one row per planned model (arm, cell, seeds, status, every score);
- ``summary.csv``: per cell, arm and metric: n, mean, std, median, bootstrap CI of the mean;
- ``paired.csv``: per cell, comparison (arm - reference over the same seed pairs) and metric:
  n, mean and median difference, bootstrap CI, Wilcoxon p and its attainable minimum,
  wins / ties / losses, verdict;
- ``selection.csv``: per cell, arm and metric: the regret of picking by the few-label score;
- ``results.json`` (all of it, with the design and the run times), ``results.md`` and
  ``plots/`` (study/plots.py).

Nothing here depends on timings, so an interrupted and resumed study writes the same tables
as an uninterrupted one (timings are in results.json and runs.jsonl).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..artifacts.hashing import write_json
from . import statistics as st
from .definition import Study, StudyError
from .runner import RUN_LOG, done_record, model_labels, read_json, reference_file

NAMES = {
    "mig": "MIG",
    "dci": "DCI disentanglement",
    "sap": "SAP",
    "factor_vae": "FactorVAE",
    "beta_vae": "BetaVAE",
    "modularity": "Modularity",
    "irs": "IRS",
    "unsupervised": "Gaussian TC",
    "downstream": "downstream",
    "val_mig": "val MIG",
    "val_dci": "val DCI",
    "val_sap": "val SAP",
    "classification_accuracy": "test accuracy",
}
FEW_LABEL = ("val_mig", "val_dci", "val_sap")
EXTRA = {
    "dci_completeness": ("dci", "completeness"),
    "dci_informativeness_test": ("dci", "informativeness_test"),
}
MODEL_COLUMNS = (
    "model_id",
    "arm",
    "cell",
    "n_labels",
    "labeller",
    "beta",
    "supervision_seed",
    "training_seed",
    "replacement_rate",
    "labelled_recon",
    "status",
)


def marker(study: Study, end: bool = False) -> str:
    return f"<!-- study:{study.definition.name}:{study.preset or 'none'}:{'end' if end else 'begin'} -->"  # noqa: E501


# ------------------------------------------------------------------------------ rows


def model_rows(study: Study, out: Path) -> list[dict[str, Any]]:
    """One row per planned model, in plan order; scores None where missing."""
    rows = []
    for m in study.models:
        rec = done_record(out, m)
        status = "missing" if rec is None else str(rec.get("status"))
        summary = (rec or {}).get("summary") or {}
        row: dict[str, Any] = {
            **model_labels(m),
            "replacement_rate": m.params.train.replacement_rate,
            "labelled_recon": m.params.train.labelled_recon,
            "status": status,
        }
        for name in (*study.definition.metrics, *FEW_LABEL):
            row[name] = _num(summary.get(name)) if status == "completed" else None
        for col, (metric, key) in EXTRA.items():
            row[col] = (
                _num(((rec or {}).get(metric) or {}).get(key)) if status == "completed" else None
            )
        rows.append(row)
    return rows


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


# ------------------------------------------------------------------------------ statistics


def aggregate(study: Study, out: str | Path) -> dict[str, Any]:
    """Every table, results.json, results.md and the pictures, from the models' files."""
    from . import plots

    out = Path(out)
    d = study.definition
    conf, res, seed = d.statistics.confidence, d.statistics.resamples, d.statistics.seed
    rows = model_rows(study, out)
    done = [r for r in rows if r["status"] == "completed"]
    summary, paired, selection = [], [], []
    for cell in study.cells:
        in_cell = [r for r in done if r["cell"] == cell.id]
        for metric in d.metrics:
            for arm in d.arms:
                values = [r[metric] for r in in_cell if r["arm"] == arm and r[metric] is not None]
                s = st.describe(
                    values,
                    confidence=conf,
                    resamples=res,
                    seed=st.key_seed(seed, f"summary/{cell.id}/{arm}/{metric}"),
                )
                summary.append({"cell": cell.id, "arm": arm, "metric": metric, **s.as_dict()})
            if d.paired:
                for arm, ref in study.comparisons():
                    a = _by_pair(in_cell, arm, metric)
                    b = _by_pair(in_cell, ref, metric)
                    p = st.paired(
                        a,
                        b,
                        confidence=conf,
                        resamples=res,
                        seed=st.key_seed(seed, f"paired/{cell.id}/{arm}-{ref}/{metric}"),
                    )
                    diffs = {k: a[k] - b[k] for k in sorted(a) if k in b}
                    paired.append(
                        {
                            "cell": cell.id,
                            "arm": arm,
                            "reference": ref,
                            "metric": metric,
                            **p.as_dict(),
                            "differences": [diffs[k] for k in sorted(diffs)],
                        }
                    )
            for arm in d.arms:
                selection.append(_selection(in_cell, cell.id, arm, metric, d.selection))
    references = _references(study, out)
    runs = _run_log(out)
    report = {
        "study": d.name,
        "preset": study.preset,
        "digest": study.digest,
        "design": design(study),
        "counts": {
            "planned": len(rows),
            "done": sum(r["status"] in ("completed", "diverged") for r in rows),
            "completed": len(done),
            "diverged": sum(r["status"] == "diverged" for r in rows),
            "missing": sum(r["status"] == "missing" for r in rows),
        },
        "models": rows,
        "summary": summary,
        "paired": paired,
        "selection": selection,
        "reference": references,
        "times": _times(study, out, runs),
    }
    _write_csv(out / "models.csv", rows, [*MODEL_COLUMNS, *d.metrics, *FEW_LABEL, *EXTRA])
    _write_csv(
        out / "summary.csv",
        summary,
        ["cell", "arm", "metric", "n", "mean", "std", "median", "ci_low", "ci_high"],
    )
    _write_csv(
        out / "paired.csv",
        paired,
        [
            "cell",
            "arm",
            "reference",
            "metric",
            "n",
            "mean_diff",
            "median_diff",
            "ci_low",
            "ci_high",
            "p_wilcoxon",
            "p_min",
            "wins",
            "ties",
            "losses",
            "verdict",
            "note",
        ],
    )
    _write_csv(
        out / "selection.csv",
        selection,
        [
            "cell",
            "arm",
            "metric",
            "selection",
            "pools",
            "candidates",
            "regret",
            "random_regret",
            "spearman",
            "picked",
        ],
    )
    report["pictures"] = [str(p.relative_to(out)) for p in plots.write_all(study, out, report)]
    write_json(out / "results.json", _plain(report))
    (out / "results.md").write_text(markdown(study, report, link_prefix="") + "\n")
    return report


def _by_pair(rows: Iterable[Mapping[str, Any]], arm: str, metric: str) -> dict[tuple, float]:
    return {
        (r["supervision_seed"], r["training_seed"]): r[metric]
        for r in rows
        if r["arm"] == arm and r[metric] is not None
    }


def _selection(rows: list[dict[str, Any]], cell: str, arm: str, metric: str, score: str) -> dict:
    """Per labelled pool (a practitioner has one): pick the best few-label score among the arm's
    models, compare with the best by ground truth; mean over pools."""
    mine = [r for r in rows if r["arm"] == arm]
    regrets, randoms, picked, candidates = [], [], [], 0
    for pool in sorted({r["supervision_seed"] for r in mine}):
        group = [r for r in mine if r["supervision_seed"] == pool]
        sel = st.select(
            {r["model_id"]: r[score] for r in group}, {r["model_id"]: r[metric] for r in group}
        )
        if sel is None:
            continue
        regrets.append(sel.regret)
        randoms.append(sel.random_regret)
        picked.append(sel.picked)
        candidates += sel.n
    rho = st.spearman(
        [r[score] if r[score] is not None else float("nan") for r in mine],
        [r[metric] if r[metric] is not None else float("nan") for r in mine],
    )
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    return {
        "cell": cell,
        "arm": arm,
        "metric": metric,
        "selection": score,
        "pools": len(regrets),
        "candidates": candidates,
        "regret": mean(regrets),
        "random_regret": mean(randoms),
        "spearman": rho,
        "picked": " ".join(picked),
    }


def _references(study: Study, out: Path) -> list[dict[str, Any]]:
    rows = []
    for cell in study.cells:
        pools = sorted({m.prepared_id for m in study.models if m.cell == cell})
        values: dict[str, list[float]] = {}
        for pid in pools:
            ref = read_json(reference_file(out, pid)) or {}
            for k, v in (ref.get("summary") or {}).items():
                if isinstance(v, (int, float)):
                    values.setdefault(k, []).append(float(v))
        rows.append(
            {
                "cell": cell.id,
                "pools": len(pools),
                **{k: sum(v) / len(v) for k, v in values.items()},
            }
        )
    return rows


def _run_log(out: Path) -> list[dict[str, Any]]:
    try:
        lines = (out / RUN_LOG).read_text().splitlines()
    except OSError:
        return []
    return [json.loads(x) for x in lines if x.strip()]


def _times(study: Study, out: Path, runs: list[dict[str, Any]]) -> dict[str, Any]:
    train_s = eval_s = 0.0
    devices = set()
    for m in study.models:
        rec = done_record(out, m) or {}
        t = rec.get("train") or {}
        train_s += float(t.get("wall_s") or 0.0)
        eval_s += float(rec.get("eval_s") or 0.0)
        if t.get("device"):
            devices.add(str(t["device"]))
    return {
        "model_train_s": round(train_s, 1),
        "model_eval_s": round(eval_s, 1),
        "wall_s": round(sum(float(r.get("wall_s", 0)) for r in runs), 1),
        "calls": len(runs),
        "jobs": sorted({r.get("jobs") for r in runs if r.get("jobs")}),
        "devices": sorted(devices),
    }


def _per_arm(study: Study, value: Any) -> dict[str, Any]:
    """``value(params)`` of each arm's first model, in the arms' order (None: not applicable)."""
    first: dict[str, Any] = {}
    for m in study.models:
        first.setdefault(m.arm, m.params)
    return {a: value(first[a]) for a in study.definition.arms if a in first}


def _common(per_arm: Mapping[str, Any]) -> Any:
    """The value every arm has, or the values by arm (only the arms it applies to: not None)
    when they differ or apply to some arms only; None when it applies to none."""
    values = list(per_arm.values())
    if values and values[0] is not None and all(v == values[0] for v in values):
        return values[0]
    return {a: v for a, v in per_arm.items() if v is not None} or None


def design(study: Study) -> dict[str, Any]:
    from ..methods.names import S2_FAMILY

    d = study.definition
    p = study.models[0].params
    # What differs between arms (a family, its steps) is reported by arm, not as the first
    # model's value; beta only for the arms of the semi-supervised family, which has one.
    beta = _per_arm(study, lambda q: q.train.beta if q.model.name in S2_FAMILY else None)
    return {
        "arms": study.arms,
        "baseline": d.baseline,
        "comparisons": [list(c) for c in study.comparisons()],
        "cells": [c.id for c in study.cells],
        "supervision_seeds": list(d.supervision_seeds),
        "training_seeds": list(d.training_seeds),
        "metrics": list(d.metrics),
        "selection": d.selection,
        "families": _common(_per_arm(study, lambda q: q.model.name)),
        "steps": _common(_per_arm(study, lambda q: q.train.steps)),
        "batch_size": _common(_per_arm(study, lambda q: q.train.batch_size)),
        "labelled_batch_size": _common(
            _per_arm(study, lambda q: q.train.labelled_batch_size or q.train.batch_size)
        ),
        "beta": list(d.beta) if d.beta is not None else _common(beta),
        "sample_scale": p.eval.sample_scale,
        "eval_mode": p.eval.mode,
        "few_label_protocol": p.eval.few_label_protocol,
        "dataset": p.data.dataset + (" (file)" if p.data.path else " (procedural)"),
        "confidence": d.statistics.confidence,
        "resamples": d.statistics.resamples,
        "jobs": d.jobs,
        "batch": study.batch,
    }


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, float) and obj != obj:
        return None
    return obj


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(buf.getvalue())
    os.replace(tmp, path)


# ------------------------------------------------------------------------------ Markdown


def _f(v: Any, digits: int = 3, sign: bool = False) -> str:
    if v is None:
        return "–"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def _p(v: Any) -> str:
    if v is None:
        return "–"
    return f"{v:.3f}" if v >= 0.001 else f"{v:.1e}"


def _by_arm(value: Any) -> str:
    """A design value: common to every arm, or listed by arm."""
    if isinstance(value, Mapping):
        return "by arm (" + ", ".join(f"`{a}` {v}" for a, v in value.items()) + ")"
    return f"{value}"


def _training(des: Mapping[str, Any]) -> str:
    """The Training line's figures; design reports from before ``families`` lack it."""
    parts = []
    if isinstance(des.get("families"), Mapping):
        parts.append(f"families {_by_arm(des['families'])}")
    steps = des["steps"]
    parts.append(f"steps {_by_arm(steps)}" if isinstance(steps, Mapping) else f"{steps} steps")
    parts.append(f"batch {_by_arm(des['batch_size'])} + {_by_arm(des['labelled_batch_size'])} "
                 "labelled")  # fmt: skip
    if des.get("beta") is not None:
        parts.append(f"beta {_by_arm(des['beta'])}")
    return ", ".join(parts)


def markdown(study: Study, report: Mapping[str, Any], link_prefix: str = "") -> str:
    """The study's results as Markdown (results.md, and docs/results.md's generated section);
    pictures are linked as ``link_prefix + plots/...``."""
    d = study.definition
    des = report["design"]
    c = report["counts"]
    t = report["times"]
    conf = round(des["confidence"] * 100)
    pairs = len(des["supervision_seeds"]) * len(des["training_seeds"])
    arms = "; ".join(
        f"`{a}` ({', '.join(f'{k}={v}' for k, v in o.items()) or 'base'})"
        for a, o in des["arms"].items()
    )
    lines = [
        f"Study `{d.name}`, preset `{study.preset}` (digest `{report['digest']}`): generated by "
        "`semidisent study` from its outputs; do not edit by hand.",
        "",
        f"- Arms: {arms}; baseline `{des['baseline']}`.",
        f"- Cells: {', '.join(des['cells'])}; {pairs} seed pairs per cell (supervision seeds "
        f"{des['supervision_seeds']} x training seeds "
        f"{des['training_seeds']}); every arm of a pair has the same labelled pool, initial "
        "weights and batches.",
        f"- Training: {_training(des)}, {des['dataset']}. Evaluation: "
        f"{', '.join(NAMES.get(m, m) for m in des['metrics'])} at sample_scale "
        f"{des['sample_scale']:g} ({des['eval_mode']} mode); few-label scores under the "
        f"{des['few_label_protocol']} protocol, `{des['selection']}` selects.",
        f"- Models: {c['planned']} planned, {c['completed']} completed, {c['diverged']} diverged, "
        f"{c['missing']} missing. Time: {_hours(t['wall_s'])} wall over {t['calls']} call(s) "
        f"(jobs {', '.join(str(j) for j in t['jobs']) or '–'}); summed over the models: "
        f"training {_hours(t['model_train_s'])}, evaluation {_hours(t['model_eval_s'])}; "
        f"device {', '.join(t['devices']) or '–'}.",
        f"- Statistics: {conf}% bootstrap CIs of the mean (expanded percentile interval, "
        f"Hesterberg 2015; {des['resamples']} resamples); paired differences over the seed "
        "pairs both arms completed; verdict from the CI alone (better: above 0, worse: below 0, "
        f"else inconclusive), and inconclusive below {st.min_pairs(des['confidence'])} pairs; "
        "two-sided Wilcoxon signed-rank p with the smallest p its n can reach. "
        'docs/results.md "What the verdicts mean" gives the intervals\' measured coverage.',
        "",
    ]
    primary = [m for m in ("mig", "dci") if m in d.metrics] or list(d.metrics)
    verdicts = [r for r in report["paired"] if r["metric"] in primary]
    if verdicts:
        shown = " and ".join(NAMES.get(m, m) for m in primary)
        lines += [
            f"**Verdicts on {shown}** (arm - reference: mean difference [CI], pairs, Wilcoxon p; "
            "every metric in the tables below):",
            "",
        ]
        for r in verdicts:
            lines.append(
                f"- {r['cell']}, `{r['arm']}` - `{r['reference']}`, "
                f"{NAMES.get(r['metric'], r['metric'])}: **{r['verdict']}** "
                f"({_f(r['mean_diff'], sign=True)} [{_f(r['ci_low'], sign=True)}, "
                f"{_f(r['ci_high'], sign=True)}], n {r['n']}, p {_p(r['p_wilcoxon'])})"
            )
        lines.append("")
    for cell in study.cells:
        lines += _cell_markdown(study, report, cell.id, link_prefix, conf)
    return "\n".join(lines).rstrip()


def _hours(s: float) -> str:
    if not s:
        return "–"
    return f"{s / 3600:.2f} h" if s >= 3600 else f"{s / 60:.1f} min"


def _cell_markdown(
    study: Study, report: Mapping[str, Any], cell: str, prefix: str, conf: int
) -> list[str]:
    d = study.definition
    arms = list(d.arms)
    lines = [
        f"#### Cell {cell}",
        "",
        f"Per arm: mean ± std, median, [{conf}% CI of the mean], n.",
        "",
        "| metric | " + " | ".join(f"`{a}`" for a in arms) + " |",
        "|---|" + "---|" * len(arms),
    ]
    by = {(r["arm"], r["metric"]): r for r in report["summary"] if r["cell"] == cell}
    for metric in d.metrics:
        cells = []
        for a in arms:
            r = by.get((a, metric))
            if not r or not r["n"]:
                cells.append("–")
                continue
            cells.append(
                f"{_f(r['mean'])} ± {_f(r['std'])}, {_f(r['median'])} "
                f"[{_f(r['ci_low'])}, {_f(r['ci_high'])}], {r['n']}"
            )
        lines.append(f"| {NAMES.get(metric, metric)} | " + " | ".join(cells) + " |")
    ref = next((r for r in report["reference"] if r["cell"] == cell), None)
    if ref and any(k in ref for k in d.metrics):
        shown = ", ".join(f"{NAMES.get(k, k)} {_f(ref[k])}" for k in d.metrics if k in ref)
        lines += ["", f"A random encoder (untrained, the floor) scores {shown}."]
    rows = [r for r in report["paired"] if r["cell"] == cell]
    if rows:
        lines += [
            "",
            f"Paired differences (arm - reference over the same seed pairs; {conf}% CI):",
            "",
            "| comparison | metric | n | mean diff [CI] | median | wins / ties / losses | "
            "Wilcoxon p (min) | verdict |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            lines.append(
                f"| `{r['arm']}` - `{r['reference']}` | {NAMES.get(r['metric'], r['metric'])} | "
                f"{r['n']} | {_f(r['mean_diff'], sign=True)} [{_f(r['ci_low'], sign=True)}, "
                f"{_f(r['ci_high'], sign=True)}] | {_f(r['median_diff'], sign=True)} | "
                f"{r['wins']} / {r['ties']} / {r['losses']} | {_p(r['p_wilcoxon'])} "
                f"({_p(r['p_min'])}) | {r['verdict']} |"
            )
    sel = [r for r in report["selection"] if r["cell"] == cell]
    if sel:
        lines += [
            "",
            f"Model selection by `{d.selection}` (per labelled pool: the arm's model with the best "
            "few-label score; regret = best ground truth - picked model's, mean over pools; random "
            "= best - mean, what a random pick loses; Spearman of the score with the metric over "
            "the arm's models):",
            "",
            "| arm | metric | regret | random pick | Spearman | models |",
            "|---|---|---|---|---|---|",
        ]
        for r in sel:
            lines.append(
                f"| `{r['arm']}` | {NAMES.get(r['metric'], r['metric'])} | {_f(r['regret'])} | "
                f"{_f(r['random_regret'])} | {_f(r['spearman'], 2)} | {r['candidates']} |"
            )
    pics = [p for p in report.get("pictures", []) if cell in Path(p).name or "vs_rate" in p]
    if pics:
        lines += ["", " ".join(f"![{Path(p).stem}]({prefix}{p})" for p in pics)]
    lines.append("")
    return lines


# ------------------------------------------------------------------------------ the doc


def update_doc(doc: str | Path, study: Study, out: str | Path, report: Mapping[str, Any]) -> Path:
    """Replace the text between the study's markers in ``doc`` (e.g. docs/results.md) with the
    generated results, pictures linked relative to the doc. The markers must be there: the
    section's place in the page is a human decision."""
    doc = Path(doc)
    try:
        text = doc.read_text()
    except OSError as e:
        raise StudyError(f"{doc}: cannot be read ({e.strerror})") from None
    begin, end = marker(study), marker(study, end=True)
    if begin not in text or end not in text or text.index(begin) > text.index(end):
        raise StudyError(
            f"{doc} has no generated section for this study: add the lines {begin} and {end} "
            "where its results go"
        )
    prefix = os.path.relpath(Path(out).resolve(), doc.resolve().parent).replace(os.sep, "/") + "/"
    body = markdown(study, report, link_prefix=prefix)
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    doc.write_text(f"{head}{begin}\n{body}\n{end}{tail}")
    return doc
