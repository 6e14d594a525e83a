"""`semidisent report`: one page summing up an experiment, in Markdown and self-contained HTML.

Reads what train and evaluate wrote (``train_stats.json``, ``curves.json``, ``metrics.json``,
``metrics_meta.json``, ``plots/*.png``) and the parameters; draws the training curves and a
metric bar chart; writes ``report.md`` (pictures beside it in ``assets/``) and ``report.html``
(pictures embedded, so the one file can be attached to an MLflow run or a Kubeflow UI).
"""

from __future__ import annotations

import base64
import html
import json
import shutil
from pathlib import Path
from typing import Any

from ..artifacts.hashing import atomic_directory
from ..config.schema import Params
from ..config.validation import to_plain
from ..errors import ArtifactError


def _read_json(path: Path, what: str) -> Any:
    if not path.exists():
        raise ArtifactError(f"{what} {path} does not exist; run the stage that writes it first")
    return json.loads(path.read_text())


def _numbers(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            out.update(_numbers(v, key))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = float(v)
    return out


def _plot_curves(curves: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in curves[0] if k != "step"] if curves else []
    fig, axes = plt.subplots(
        1, max(1, len(keys)), figsize=(3.2 * max(1, len(keys)), 2.6), squeeze=False
    )
    steps = [c["step"] for c in curves]
    for ax, key in zip(axes[0], keys, strict=False):
        ax.plot(steps, [c[key] for c in curves], lw=1.2)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_summary(summary: dict[str, float], baseline: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(summary)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(names) + 1.5), 2.8))
    width = 0.4 if baseline else 0.8
    bars = ax.bar(x, [summary[n] for n in names], width, color="#4c72b0", label="model")
    ax.bar_label(bars, fmt="%.3f", fontsize=7)
    if baseline:
        ref = [baseline.get(n, np.nan) for n in names]
        ax.bar(x + width, ref, width, color="#aaaaaa", label="random encoder")
        ax.legend(fontsize=7)
    ax.set_xticks(x + (width / 2 if baseline else 0), names)
    ax.set_ylim(0, max(1.0, max(summary.values(), default=1.0) * 1.1))
    ax.set_title("disentanglement metrics", fontsize=9)
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _scale_note(sample_scale: Any) -> str:
    """The warning beside scores computed on fewer points than disentanglement_lib's study."""
    if sample_scale is None or float(sample_scale) >= 1.0:
        return ""
    return (
        f"Scores at eval.sample_scale {sample_scale} ({float(sample_scale):.0%} of "
        "disentanglement_lib's study sample sizes): not comparable with study figures "
        "(a perfect dSprites code scores MIG 0.828 at 0.1, 0.896 at 1.0); "
        "use eval.sample_scale 1.0 for any figure that is reported or compared."
    )


def _table(rows: list[tuple[str, str]], header: tuple[str, str]) -> list[str]:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return lines


def run_report(
    params: Params,
    model_dir: str | Path,
    eval_dir: str | Path,
    out: str | Path,
    title: str = "semidisent experiment",
) -> Path:
    model_dir, eval_dir, out = Path(model_dir), Path(eval_dir), Path(out)
    stats = _read_json(model_dir / "train_stats.json", "training statistics")
    curves = _read_json(model_dir / "curves.json", "training curves")
    metrics = _read_json(eval_dir / "metrics.json", "metrics")
    meta = _read_json(eval_dir / "metrics_meta.json", "metrics provenance")
    summary = {k: float(v) for k, v in metrics.get("summary", {}).items()}
    baseline = {k: float(v) for k, v in metrics.get("random_encoder", {}).items() if v is not None}
    pictures = sorted((eval_dir / "plots").glob("*.png"))

    with atomic_directory(out) as tmp:
        assets = tmp / "assets"
        assets.mkdir()
        _plot_curves(curves, assets / "training_curves.png")
        if summary:
            _plot_summary(summary, baseline, assets / "metrics.png")
        for p in pictures:
            shutil.copy2(p, assets / p.name)
        images = sorted(
            assets.glob("*.png"),
            key=lambda p: (p.name not in ("metrics.png", "training_curves.png"), p.name),
        )

        t, d, s = params.train, params.data, params.supervision
        setting = [
            ("dataset", f"{d.dataset} ({'official file' if d.path else 'procedural / embedded'})"),
            (
                "labels",
                f"{s.n_labels or s.label_fraction} ({s.labeller}, seed {s.seed}, "
                f"{s.validation_fraction:.0%} held out)",
            ),
            ("objective", _objective(params)),
            ("training", f"{t.steps} steps, batch {t.batch_size}, lr {t.lr}, seed {t.seed}"),
            ("device", str(stats.get("device", "?"))),
            (
                "throughput",
                f"{stats.get('steps_per_s', float('nan')):.1f} steps/s, "
                f"{stats.get('wall_s', float('nan')):.0f} s wall",
            ),
            (
                "metrics",
                f"{meta.get('mode', '?')} mode, seed {meta.get('seed', '?')}, "
                f"sample scale {meta.get('sample_scale', '?')}, "
                f"scikit-learn {meta.get('versions', {}).get('scikit-learn', '?')}",
            ),
        ]
        flat = _numbers(
            {k: v for k, v in metrics.items() if k not in ("summary", "random_encoder")}
        )
        # One text per summary score for both documents, with the baseline beside it.
        scores = {
            k: f"{v:.4f}" + (f" (random encoder {baseline[k]:.4f})" if k in baseline else "")
            for k, v in summary.items()
        }
        # The sample-size note concerns the disentanglement scores (metrics.json's factor
        # metrics), not a family's classification, probes or generation scores.
        suite = meta.get("evaluations") is None or "factor_metrics" in meta.get("evaluations", ())
        note = _scale_note(meta.get("sample_scale")) if suite else None
        md = [f"# {title}", "", *_table(setting, ("setting", "value")), ""]
        if scores:
            md += ["## Summary", "", *([note, ""] if note else [])]
            md += [*_table(list(scores.items()), ("metric", "score")), ""]
        md += [
            "## All scores",
            "",
            *_table([(k, f"{v:.4f}") for k, v in flat.items()], ("score", "value")),
            "",
        ]
        final = stats.get("final_losses", {})
        if final:
            md += [
                "## Final training losses",
                "",
                *_table([(k, f"{float(v):.4f}") for k, v in final.items()], ("loss", "value")),
                "",
            ]
        md += ["## Pictures", ""]
        md += [f"![{p.stem}](assets/{p.name})" for p in images]
        (tmp / "report.md").write_text("\n".join(md) + "\n")
        (tmp / "report.html").write_text(_html(title, setting, scores, flat, final, images, note))
    return out


def _html(
    title: str,
    setting: list[tuple[str, str]],
    summary: dict[str, str],
    flat: dict[str, float],
    final: dict[str, Any],
    images: list[Path],
    note: str = "",
) -> str:
    def table(rows: list[tuple[str, str]], header: tuple[str, str]) -> str:
        body = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in rows
        )
        return (
            f"<table><thead><tr><th>{header[0]}</th><th>{header[1]}</th></tr></thead>"
            f"<tbody>{body}</tbody></table>"
        )

    figs = "".join(
        f'<figure><img alt="{p.stem}" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}"><figcaption>{html.escape(p.stem)}'
        "</figcaption></figure>"
        for p in images
    )
    parts = [f"<h1>{html.escape(title)}</h1>", table(setting, ("setting", "value"))]
    if summary:
        parts += [
            "<h2>Summary</h2>",
            *([f"<p><strong>{html.escape(note)}</strong></p>"] if note else []),
            table(list(summary.items()), ("metric", "score")),
        ]
    parts += [
        "<h2>All scores</h2>",
        table([(k, f"{v:.4f}") for k, v in flat.items()], ("score", "value")),
    ]
    if final:
        parts += [
            "<h2>Final training losses</h2>",
            table([(k, f"{float(v):.4f}") for k, v in final.items()], ("loss", "value")),
        ]
    parts += ["<h2>Pictures</h2>", f'<div class="figs">{figs}</div>']
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;"
        "padding:.25em .6em;font-size:.9em;text-align:left}th{background:#f3f3f3}"
        ".figs{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0}"
        "img{max-width:520px;image-rendering:pixelated;border:1px solid #ddd}"
        "figcaption{font-size:.8em;color:#555}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><style>{style}</style></head><body>{''.join(parts)}</body></html>\n"
    )


def run_report_tracked(
    params: Params, model_dir: str | Path, eval_dir: str | Path, out: str | Path
) -> Path:
    """:func:`run_report`, then (tracking enabled) the report and the model go to the
    experiment's MLflow run and the model is registered with its metrics."""
    from ..artifacts.hashing import write_json
    from ..tracking.experiment import experiment_run
    from ..tracking.factory import resolve_tracking_uri
    from ..tracking.model_registry import log_and_register

    out = run_report(params, model_dir, eval_dir, out)
    if not params.tracking.enabled:
        return out
    metrics = json.loads((Path(eval_dir) / "metrics.json").read_text())
    with experiment_run(params, model_dir, "report") as tracker:
        tracker.log_artifact(out / "report.html", "report")
        tracker.log_artifact(out / "report.md", "report")
        tracker.log_artifact(out / "assets", "report/assets")
        flush = getattr(tracker, "flush", None)
        if flush is not None:
            flush()
        registered = log_and_register(
            resolve_tracking_uri(params.tracking),
            tracker.run_id,
            Path(model_dir) / "model.pt",
            params.tracking.registered_model,
            metrics.get("summary", {}),
            description=f"semidisent VAE, run {tracker.run_id}",
        )
        tracker.set_tags({"model_uri": registered.model_uri})
    write_json(
        out / "registered_model.json",
        {
            "model_uri": registered.model_uri,
            "name": registered.name,
            "version": registered.version,
            "run_id": tracker.run_id,
        },
    )
    return out


def _objective(params: Params) -> str:
    """The objective in one line: the semi-supervised family's keys, or another family's own
    section (its objective is not written in train.*)."""
    from ..methods.names import S2_FAMILY

    t = params.train
    if params.model.name in S2_FAMILY:
        return (
            f"beta {t.beta}, {t.supervised_loss} x gamma_sup {t.gamma_sup} "
            f"({t.gamma_schedule}), replacement rate {t.replacement_rate} "
            f"per {t.replacement_unit} (target {t.replacement_target}, noise "
            f"{t.replacement_noise}), labelled reconstruction {t.labelled_recon} "
            f"x {t.labelled_weight}"
        )
    own = params.method_params()
    keys = to_plain(own) if own is not None else {}
    return f"{params.model.name}: " + ", ".join(f"{k} {v}" for k, v in keys.items())
