"""The convergence lab's report: PNG plots (matplotlib, Agg) and one self-contained HTML page.

:func:`write_report` turns the content of ``results.json`` into ``plots/*.png`` and
``report.html``; the page embeds the plots as PNG data URIs and loads nothing from the
network, so it can be mailed or archived as one file.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any

from .errors import NormlabError, require
from .io import atomic_write

REPORT_FILE = "report.html"
PLOTS_DIR = "plots"

_PROBE_LABELS = {
    "single_signed": "single-signed rows",
    "sign_agreement": "sign agreement",
    "mean_share": "share along the mean",
    "reversed": "reversed steps",
}


def write_report(results: dict[str, Any], out_dir: str | Path) -> Path:
    """Write ``plots/*.png`` and ``report.html`` for ``results`` into ``out_dir``; returns the page."""
    if results.get("format") != "normlab-lab-results":
        raise NormlabError(
            "write_report needs the content of a lab results.json (format normlab-lab-results)"
        )
    matplotlib = require("matplotlib", "lab")
    matplotlib.use("Agg")
    out = Path(out_dir)
    figures = []
    for name, make, caption in _FIGURES:
        png = _render(make, results)
        if png is None:
            continue
        with atomic_write(out / PLOTS_DIR / f"{name}.png") as handle:
            handle.write(png)
        figures.append((name, png, caption(results)))
    page = _page(results, figures)
    path = out / REPORT_FILE
    with atomic_write(path, "w") as handle:
        handle.write(page)
    return path


# ----------------------------------------------------------------- data helpers
def _schemes(results: dict[str, Any]) -> list[str]:
    return [s for s, info in results["schemes"].items() if "summary" in info]


def _best_runs(results: dict[str, Any], scheme: str) -> list[dict[str, Any]]:
    best = results["schemes"][scheme]["best_lr"]
    return [r for r in results["runs"] if r["scheme"] == scheme and r["lr"] == best]


def _color(results: dict[str, Any], scheme: str) -> Any:
    import matplotlib

    order = list(results["schemes"])
    return matplotlib.colormaps["tab10"](order.index(scheme) % 10)


def _mean_curve(
    runs: list[dict[str, Any]], key: str, column: int
) -> tuple[list[float], list[float]]:
    """Mean over seeds of checkpoint ``column``, up to the shortest run (diverged runs stop early)."""
    curves = [r[key] for r in runs]
    length = min(len(c) for c in curves)
    xs, ys = [], []
    for i in range(length):
        values = [c[i][column] for c in curves]
        if any(v is None for v in values):
            break
        xs.append(curves[0][i][0])
        ys.append(sum(values) / len(values))
    return xs, ys


def _legend(axis: Any, **options: Any) -> None:
    if axis.get_legend_handles_labels()[0]:
        axis.legend(fontsize=8, **options)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


# ----------------------------------------------------------------- figures
def _render(make: Any, results: dict[str, Any]) -> bytes | None:
    import matplotlib.pyplot as plt

    fig = make(results)
    if fig is None:
        return None
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def _learning_curves(results: dict[str, Any]) -> Any:
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for scheme in _schemes(results):
        runs = _best_runs(results, scheme)
        if not runs:
            continue
        label = f"{scheme} (lr {_fmt(results['schemes'][scheme]['best_lr'])})"
        xs, ys = _mean_curve(runs, "checkpoints", 2)
        left.plot(xs, ys, label=label, color=_color(results, scheme))
        epochs = [[[e["samples"], e["test_acc"]] for e in r["epochs"]] for r in runs]
        xs, ys = _mean_curve([{"e": e} for e in epochs], "e", 1)
        right.plot(xs, ys, marker="o", ms=3, label=label, color=_color(results, scheme))
    target = results["config"]["target"]
    left.axhline(target, color="grey", ls=":", lw=1)
    left.set(
        xlabel="training samples seen",
        ylabel="train accuracy",
        title="train accuracy (mean over seeds)",
    )
    right.set(
        xlabel="training samples seen",
        ylabel="test accuracy",
        title="test accuracy after each epoch",
    )
    _legend(left)
    fig.tight_layout()
    return fig


def _lr_sweep(results: dict[str, Any]) -> Any:
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for scheme in _schemes(results):
        info = results["schemes"][scheme]
        color = _color(results, scheme)
        lrs = info["grid"]
        losses, samples = [], []
        for lr in lrs:
            runs = [r for r in results["runs"] if r["scheme"] == scheme and r["lr"] == lr]
            finals = [r["final_train_loss"] for r in runs if r["final_train_loss"] is not None]
            losses.append(
                sum(finals) / len(finals) if len(finals) == len(runs) and runs else math.nan
            )
            reached = [r["samples_to_target"] for r in runs if r["samples_to_target"] is not None]
            samples.append(sum(reached) / len(reached) if reached else math.nan)
        left.plot(lrs, losses, marker="o", ms=3, color=color, label=scheme)
        right.plot(lrs, samples, marker="o", ms=3, color=color, label=scheme)
        for axis in (left, right):
            if info.get("lr_bound"):
                axis.axvline(info["lr_bound"], color=color, ls="--", lw=0.8)
            axis.axvline(info["best_lr"], color=color, ls="-", lw=2, alpha=0.25)
    left.set(
        xscale="log",
        yscale="log",
        xlabel="learning rate",
        ylabel="final train loss",
        title="final train loss (gaps: a seed diverged)",
    )
    right.set(
        xscale="log",
        xlabel="learning rate",
        ylabel="samples to target",
        title="samples to target (gaps: not reached)",
    )
    _legend(left)
    fig.tight_layout()
    return fig


def _probe_bars(results: dict[str, Any]) -> Any:
    import matplotlib.pyplot as plt
    import numpy as np

    schemes = _schemes(results)
    fig, ax = plt.subplots(figsize=(11, 4))
    keys = list(_PROBE_LABELS)
    width = 0.8 / (len(keys) + 1)
    x = np.arange(len(schemes))
    for i, key in enumerate(keys):
        values = [results["schemes"][s]["summary"].get(key) for s in schemes]
        ax.bar(
            x + i * width,
            [v if v is not None else 0 for v in values],
            width,
            label=_PROBE_LABELS[key],
        )
    batch1 = [results["schemes"][s]["batch1_single_signed"] for s in schemes]
    ax.bar(
        x + len(keys) * width,
        [v if v is not None else 0 for v in batch1],
        width,
        hatch="//",
        fill=False,
        label="batch size 1: single-signed (illustration)",
    )
    ax.axhline(0.5, color="grey", ls=":", lw=1)
    ax.set_xticks(x + width * len(keys) / 2, schemes)
    ax.set(
        ylim=(0, 1.05),
        ylabel="fraction",
        title=f"first-layer updates at batch size {results['config']['batch_size']} (best LR, mean over seeds and steps)",
    )
    _legend(ax, ncol=3, loc="upper right")
    fig.tight_layout()
    return fig


def _probe_epochs(results: dict[str, Any]) -> Any:
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for scheme in _schemes(results):
        runs = _best_runs(results, scheme)
        color = _color(results, scheme)
        for axis, key in ((left, "sign_agreement"), (right, "cosine")):
            curves = [[[e["epoch"], e[key]] for e in r["epochs"]] for r in runs]
            xs, ys = _mean_curve([{"e": c} for c in curves], "e", 1)
            axis.plot(xs, ys, marker="o", ms=3, color=color, label=scheme)
    left.axhline(0.5, color="grey", ls=":", lw=1)
    right.axhline(0.0, color="grey", ls=":", lw=1)
    left.set(
        xlabel="epoch",
        ylabel="sign agreement",
        title="sign agreement of update rows (1 = single-signed)",
    )
    right.set(
        xlabel="epoch", ylabel="cosine", title="cosine between successive row updates (<0 = zigzag)"
    )
    _legend(left)
    fig.tight_layout()
    return fig


def _diagonal(results: dict[str, Any]) -> Any:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4))
    drawn = False
    for scheme in results["schemes"]:
        info = results["schemes"][scheme]
        quantiles = info["diagonal"]["quantiles"]
        if not quantiles:
            continue
        steps = [i / (len(quantiles) - 1) for i in range(len(quantiles))]
        ax.plot(
            steps,
            quantiles,
            marker="o",
            ms=3,
            color=_color(results, scheme),
            label=f"{scheme}: λ_max {_fmt(info['lambda_max'])}, max/median {_fmt(info['diagonal']['ratio'])}",
        )
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set(
        yscale="log",
        xlabel="quantile over inputs (nonzero entries)",
        ylabel="E[x_k²]",
        title="per-input diagonal of E[x xᵀ] on the normalized training data",
    )
    _legend(ax)
    fig.tight_layout()
    return fig


def _caption_curves(results: dict[str, Any]) -> str:
    return (
        "Learning curves at each scheme's best learning rate, averaged over seeds. Left: accuracy on "
        f"the whole training split, measured {results['config'].get('checkpoints_per_epoch', 10)} times "
        "per epoch; the dotted line is the target "
        f"({results['config']['target']:g}). The scheme whose curve crosses it first needed the fewest "
        "training samples. Right: accuracy on the held-out test split after each epoch."
    )


def _caption_sweep(results: dict[str, Any]) -> str:
    return (
        "The learning-rate search. Each scheme's grid is centred on its own 2/λ_max (dashed line), "
        "where λ_max is the largest eigenvalue of E[x xᵀ] of its normalized training inputs — the "
        "largest step plain gradient descent can take on a linear unit. The pale thick line marks "
        "the chosen rate; the grid was widened until that rate lay strictly inside it. Schemes with "
        "a large input mean have a huge λ_max, so they are only stable at tiny rates."
    )


def _caption_probes(results: dict[str, Any]) -> str:
    batch = results["config"]["batch_size"]
    return (
        f"What the first-layer updates looked like during training, at the run's batch size ({batch}). "
        "Single-signed rows: share of hidden units whose whole incoming-weight update had one sign. "
        "Sign agreement: share of a unit's update (by magnitude) that carried its majority sign — 1 "
        "means every weight of the unit moved the same way, 0.5 means balanced signs. Share along "
        "the mean: how much of each step pointed along the mean input, the direction a non-zero mean "
        "forces on all weights at once. Reversed steps: share of successive updates of a unit that "
        "pointed backwards (zigzag). The hatched bars are an illustration, not a training result: "
        "with one sample per step, a unit's update is δ_j·x, so its row is single-signed exactly when "
        "the input's nonzero values share one sign — 100 % for any non-negative data, whatever the model."
    )


def _caption_epochs(results: dict[str, Any]) -> str:
    return (
        "The same probes per epoch at the best learning rate: sign agreement of the update rows "
        "(left) and the mean cosine between a unit's successive updates (right; below zero the "
        "weights zigzag back and forth)."
    )


def _caption_diagonal(results: dict[str, Any]) -> str:
    return (
        "The diagonal of E[x xᵀ] — each input's mean square — sorted, for each scheme. Gradient "
        "descent's effective learning rate for weight k scales with this value, so a spread-out "
        "curve means some weights learn much faster than others; per-feature z-scoring makes it "
        "flat (1 for every non-constant input)."
    )


_FIGURES = (
    ("learning_curves", _learning_curves, _caption_curves),
    ("lr_sweep", _lr_sweep, _caption_sweep),
    ("probes", _probe_bars, _caption_probes),
    ("probes_per_epoch", _probe_epochs, _caption_epochs),
    ("diagonal", _diagonal, _caption_diagonal),
)


# ----------------------------------------------------------------- the page
_STYLE = """
body { font-family: sans-serif; max-width: 1150px; margin: 1.5em auto; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.3em 0.6em; text-align: right; }
th { background: #eef; } td:first-child { text-align: left; font-weight: bold; }
figure { margin: 1.5em 0; } figcaption { max-width: 1050px; font-size: 0.92em; color: #333; }
img { max-width: 100%; } .note { background: #ffd; padding: 0.5em; border: 1px solid #cc9; }
code { background: #f4f4f4; }
"""


def summary_rows(results: dict[str, Any]) -> list[dict[str, str]]:
    """One row of formatted strings per scheme: the report's (and the CLI's) summary table."""
    rows = []
    for scheme, info in results["schemes"].items():
        if "summary" not in info:
            continue
        s = info["summary"]
        if s["samples_to_target_mean"] is None:
            to_target = f"not reached (0/{s['n_seeds']})"
        else:
            to_target = f"{s['samples_to_target_mean']:,.0f} ± {s['samples_to_target_std']:,.0f} ({s['n_reached']}/{s['n_seeds']})"
        acc = s["final_test_acc_mean"]
        rows.append(
            {
                "scheme": scheme,
                "chosen LR": _fmt(info["best_lr"])
                + ("" if info["best_lr_inside_grid"] else " (grid edge)"),
                "2/λ_max": _fmt(info["lr_bound"]),
                "samples to target": to_target,
                "final test acc": "—"
                if acc is None
                else f"{acc:.3f} ± {s['final_test_acc_std']:.3f}",
                "single-signed rows": _fmt(s["single_signed"], 2),
                "sign agreement": _fmt(s["sign_agreement"], 2),
                "zigzag cosine": _fmt(s["cosine"], 2),
                "reversed steps": _fmt(s["reversed"], 2),
                "batch-1 single-signed": _fmt(info["batch1_single_signed"], 2),
            }
        )
    return rows


def _table(results: dict[str, Any]) -> str:
    rows = summary_rows(results)
    if not rows:
        return "<p>No scheme has finished a learning-rate search yet.</p>"
    head = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row.values()) + "</tr>"
        for row in rows
    )
    return f'<table id="summary"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _diagnosis_section(results: dict[str, Any]) -> list[str]:
    """What ``normlab diagnose`` predicted from the training data, before any training."""
    diagnosis = results.get("diagnosis")
    if not diagnosis:
        return []
    e = html.escape
    if "error" in diagnosis:
        return ["<h2>Diagnosis</h2>", f"<p>No diagnosis: {e(diagnosis['error'])}</p>"]
    predictions = diagnosis["predictions"]["schemes"]
    rows = [
        "<tr><th>scheme</th><th>λ_max</th><th>λ_max/λ_2</th><th>largest stable LR 2/λ_max</th>"
        "<th>κ₉₉</th><th>predicted speed-up vs raw</th></tr>"
    ]
    for scheme, spectrum in diagnosis["spectrum"].items():
        head = f'<tr><th scope="row">{e(scheme)}</th>'
        if "skipped" in spectrum:
            rows.append(f'{head}<td colspan="5">not applicable: {e(spectrum["skipped"])}</td></tr>')
            continue
        pred = predictions.get(scheme, {})
        rows.append(
            f"{head}<td>{_fmt(spectrum.get('lambda_max'))}</td>"
            f"<td>{_fmt(spectrum.get('ratio_max_2'))}</td><td>{_fmt(pred.get('lr_max'))}</td>"
            f"<td>{_fmt(pred.get('kappa99'))}</td><td>{_fmt(pred.get('speedup_vs_raw'))}</td></tr>"
        )
    advice = "".join(f"<li>{e(text)}</li>" for text in diagnosis["recommendation"])
    return [
        "<h2>Diagnosis (before training)</h2>",
        "<p>The spectrum of E[x xᵀ] of the training inputs after each scheme (Efficient BackProp "
        "§5: the Hessian of a linear least-squares unit). A large λ_max/λ_2 is the mean spike that "
        "centering removes; 2/λ_max is the largest stable learning rate of plain gradient descent; "
        f"the speed-ups follow {e(diagnosis['predictions']['formula'])}.</p>",
        f'<table class="diagnosis">{"".join(rows)}</table>',
        f"<ul>{advice}</ul>",
    ]


def _page(results: dict[str, Any], figures: list[tuple[str, bytes, str]]) -> str:
    cfg = results["config"]
    ds = results["dataset"]
    e = html.escape
    setup = (
        f"Dataset <b>{e(ds['name'])}</b> ({e(ds['description'])}): {ds['n_train']:,} training and "
        f"{ds['n_test']:,} test samples of shape {tuple(ds['sample_shape'])}, {e(ds['dtype'])}. "
        f"Model <b>{e(cfg['model'])}</b>"
        + (
            f" ({cfg['hidden']} hidden units, {e(cfg['activation'])})"
            if cfg["model"] == "mlp"
            else ""
        )
        + f", optimizer <b>{e(cfg['optimizer'])}</b>, batch size {cfg['batch_size']}, {cfg['epochs']} "
        f"epochs, {cfg['seeds']} seeds, target train accuracy {cfg['target']:g}. Every normalizer was "
        "fitted on the training split only."
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>normlab convergence lab: {e(ds['name'])} / {e(cfg['model'])}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Convergence lab: {e(ds['name'])}, {e(cfg['model'])}, {e(cfg['optimizer'])}</h1>",
        f"<p>{setup}</p>",
    ]
    if results.get("command"):
        parts.append(f"<p>Command: <code>{e(results['command'])}</code></p>")
    if not results.get("complete"):
        parts.append(
            '<p class="note">This run was interrupted: the page shows the finished runs only.</p>'
        )
    parts += [
        "<h2>Summary</h2>",
        _table(results),
        "<p>Chosen LR: the learning rate, per scheme, that reached the target in the most seeds with "
        "the fewest samples (then: lowest final train loss). Samples to target: mean ± std over "
        "the seeds that reached it. The probe columns are means over seeds and steps at the chosen "
        f"LR and the run's batch size ({cfg['batch_size']}); batch-1 single-signed is an "
        "illustration computed from the inputs alone (see the probe figure).</p>",
    ]
    parts += _diagnosis_section(results)
    for name, png, caption in figures:
        data = base64.b64encode(png).decode("ascii")
        parts.append(
            f'<figure id="{name}"><img alt="{e(name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{e(caption)}</figcaption></figure>"
        )
    parts.append("<h2>Schemes</h2><ul>")
    for scheme, info in results["schemes"].items():
        notes = "; ".join(info.get("warnings", []))
        parts.append(
            f"<li><b>{e(scheme)}</b>: <code>{e(info['normalizer'])}</code>, λ_max "
            f"{_fmt(info['lambda_max'])}, learning rates tried: "
            f"{e(', '.join(_fmt(v) for v in info.get('grid', [])))}"
            + (f". {e(info['skipped'])}" if "skipped" in info else "")
            + (f". Note: {e(notes)}" if notes else "")
            + "</li>"
        )
    parts.append("</ul></body></html>")
    return "\n".join(parts)
