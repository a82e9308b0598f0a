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

from ..diagnostics import MAX_ITERATIONS as MAX_STEPS
from ..errors import NormlabError, require
from ..io import atomic_write

REPORT_FILE = "report.html"
PLOTS_DIR = "plots"

_PROBE_LABELS = {
    "single_signed": "single-signed rows",
    "sign_agreement": "sign agreement",
    "mean_share": "share along the mean",
    "reversed": "reversed steps",
}


def write_report(results: dict[str, Any], out_dir: str | Path) -> Path:
    """Write ``plots/*.png`` and ``report.html`` for ``results`` into ``out_dir``."""
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
    """Mean over seeds of checkpoint ``column``, up to the shortest run (diverged ones stop)."""
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


def _stable_cell(t: dict[str, Any]) -> str:
    """The predicted largest stable rates: the lab's batches first, independent ones after."""
    independent = _fmt(t.get("lr_sgd_max_predicted"))
    if t.get("lr_sgd_max_predicted_epoch") is None:  # results written before it existed
        return f"— ({independent})"
    return f"{_fmt(t['lr_sgd_max_predicted_epoch'])} ({independent})"


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
        title=f"first-layer updates at batch size {results['config']['batch_size']} "
        "(best LR, mean over seeds and steps)",
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
    floor = _diagonal_floor(results)
    for scheme in results["schemes"]:
        info = results["schemes"][scheme]
        quantiles = info["diagonal"]["quantiles"]
        if not quantiles:
            continue
        steps = [i / (len(quantiles) - 1) for i in range(len(quantiles))]
        ax.plot(
            steps,
            [max(q, floor) for q in quantiles],
            marker="o",
            ms=3,
            color=_color(results, scheme),
            label=f"{scheme}: λ_max {_fmt(info['lambda_max'])}, "
            f"max/median {_fmt(info['diagonal']['ratio'])}",
        )
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set(
        yscale="log",
        ylim=(floor / 2, None),
        xlabel="quantile over inputs (nonzero entries)",
        ylabel="E[x_k²]",
        title="per-input diagonal of E[x xᵀ] on the normalized training data",
    )
    _legend(ax)
    fig.tight_layout()
    return fig


_DIAGONAL_DECADES = 6  # the diagonal plot shows six decades below the largest entry


def _diagonal_floor(results: dict[str, Any]) -> float:
    tops = [
        max(i["diagonal"]["quantiles"])
        for i in results["schemes"].values()
        if i["diagonal"]["quantiles"]
    ]
    return max(tops) * 10.0**-_DIAGONAL_DECADES if tops else 0.0


def _caption_curves(results: dict[str, Any]) -> str:
    return (
        "Learning curves at each scheme's best learning rate, averaged over seeds. Left: accuracy "
        "on the whole training split, stored "
        f"{results['config'].get('checkpoints_per_epoch', 10)} times per epoch; the dotted line "
        f"is the target ({results['config']['target']:g}). The scheme whose curve crosses it "
        "first needed the fewest training samples. Right: accuracy on the held-out test split "
        "after each epoch."
    )


def _caption_sweep(results: dict[str, Any]) -> str:
    optimizer = results["config"]["optimizer"]
    centre = {
        "momentum": "(1 − β)·2/λ_max, the same effective step η/(1 − β)",
        "adam": "Adam's usual rate 1e-3, the same for every scheme",
    }.get(optimizer, "its own 2/λ_max")
    return (
        f"The learning-rate search. Each scheme's grid is centred on {centre}; the dashed line "
        "is 2/λ_max, where λ_max is the largest eigenvalue of E[z zᵀ], z = (x, 1), of its "
        "normalized inputs with the bias input — the largest step plain gradient descent can "
        "take on a linear unit with a bias. The pale thick line marks "
        "the chosen rate; the grid was widened until that rate lay strictly inside it. Schemes "
        "with a large input mean have a huge λ_max, so they are only stable at tiny rates."
    )


def _caption_probes(results: dict[str, Any]) -> str:
    batch = results["config"]["batch_size"]
    return (
        "What the first-layer updates looked like during training, at the run's batch size "
        f"({batch}). Single-signed rows: share of hidden units whose whole incoming-weight update "
        "had one sign. Sign agreement: share of a unit's update (by magnitude) that carried its "
        "majority sign — 1 means every weight of the unit moved the same way, 0.5 means balanced "
        "signs. Share along the mean: how much of each step pointed along the mean input, the "
        "direction a non-zero mean forces on all weights at once. Reversed steps: share of "
        "successive updates of a unit that pointed backwards (zigzag). The hatched bars are an "
        "illustration, not a training result: with one sample per step, a unit's update is "
        "δ_j·x, so its row is single-signed exactly when the input's nonzero values share one "
        "sign — 100 % for any non-negative data, whatever the model."
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
        + (
            f" Values more than {_DIAGONAL_DECADES} decades below the largest are drawn at that "
            "floor (e.g. ZCA's near-zero constant pixels)."
            if any(
                min(i["diagonal"]["quantiles"]) < _diagonal_floor(results)
                for i in results["schemes"].values()
                if i["diagonal"]["quantiles"]
            )
            else ""
        )
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


def _is_lsq(results: dict[str, Any]) -> bool:
    return results["config"]["model"] == "lsq"


def summary_rows(results: dict[str, Any]) -> list[dict[str, str]]:
    """One row of formatted strings per scheme: the report's (and the CLI's) summary table."""
    rows = []
    theory = results.get("theory", {}).get("schemes", {})
    for scheme, info in results["schemes"].items():
        if "summary" not in info:
            continue
        s = info["summary"]
        if s["samples_to_target_mean"] is None:
            to_target = f"not reached (0/{s['n_seeds']})"
        else:
            to_target = (
                f"{s['samples_to_target_mean']:,.0f} ± {s['samples_to_target_std']:,.0f} "
                f"({s['n_reached']}/{s['n_seeds']})"
            )
        acc = s["final_test_acc_mean"]
        row = {
            "scheme": scheme,
            "chosen LR": _fmt(info["best_lr"])
            + ("" if info["best_lr_inside_grid"] else " (grid edge)"),
            "2/λ_max": _fmt(info["lr_bound"]),
        }
        if results["config"]["optimizer"] in ("momentum", "adam"):
            row["grid centre"] = _fmt(info.get("grid_center"))
        row["samples to target"] = to_target
        if _is_lsq(results):
            t = theory.get(scheme, {})
            row["steps to ε"] = _fmt(s.get("steps_to_epsilon_mean"), 4)
            row["predicted"] = _fmt(t.get("steps_to_epsilon_predicted"), 4)
            row["measured/predicted"] = _ratio_cell(t)
        row["final test acc"] = "—" if acc is None else f"{acc:.3f} ± {s['final_test_acc_std']:.3f}"
        rows.append(row)
    return rows


_PROBE_SENTENCES = {
    "single-signed rows": "share of hidden units whose whole incoming-weight update had one sign",
    "sign agreement": "share of a unit's update (by magnitude) carrying its majority sign; "
    "0.5 is balanced",
    "zigzag cosine": "mean cosine between a unit's successive updates; below 0 it zigzags",
    "reversed steps": "share of successive updates of a unit that pointed backwards",
    "batch-1 single-signed": "from the inputs alone: with one sample per step a row is "
    "single-signed exactly when the input's nonzero values share a sign",
}


def probe_rows(results: dict[str, Any]) -> list[dict[str, str]]:
    """The mechanism probes per scheme (means over seeds and steps at the chosen rate)."""
    rows = []
    for scheme, info in results["schemes"].items():
        if "summary" not in info:
            continue
        s = info["summary"]
        rows.append(
            {
                "scheme": scheme,
                "single-signed rows": _fmt(s["single_signed"], 2),
                "sign agreement": _fmt(s["sign_agreement"], 2),
                "zigzag cosine": _fmt(s["cosine"], 2),
                "reversed steps": _fmt(s["reversed"], 2),
                "batch-1 single-signed": _fmt(info["batch1_single_signed"], 2),
            }
        )
    return rows


# ----------------------------------------------------------------- the verdict
def _metric(results: dict[str, Any]) -> tuple[str, str, str]:
    """(run key, summary key, words) of the speed measure: steps to ε for lsq, else samples."""
    if _is_lsq(results):
        eps = results["config"].get("epsilon")
        return "steps_to_epsilon", "steps_to_epsilon_mean", f"steps to an excess loss of {eps:g}"
    target = results["config"]["target"]
    return "samples_to_target", "samples_to_target_mean", f"samples to {target:g} train accuracy"


def _why_not(results: dict[str, Any], scheme: str) -> str:
    """The reason a scheme never reached the target, where the data explain it."""
    info = results["schemes"][scheme]
    runs = [r for r in results["runs"] if r["scheme"] == scheme]
    low, high = info.get("input_range", [None, None])
    data_low, data_high = info.get("data_range", [None, None])
    if high is not None and low is not None and max(abs(low), abs(high)) < 0.1:
        return (
            f"its inputs span only [{low:.3g}, {high:.3g}]: the scale divides by far more than "
            f"the data's range [{data_low:g}, {data_high:g}] (a value scale far above the data)"
        )
    if runs and all(r["diverged"] for r in runs):
        return "every rate tried diverged"
    entry = results.get("theory", {}).get("schemes", {}).get(scheme, {})
    saturated = entry.get("saturated_share")
    if saturated is not None and saturated > 0.5:
        what = (
            "tanh pre-activations |a| > 2"
            if results["config"]["activation"] == "tanh"
            else ("ReLU units dead")
        )
        return f"{saturated:.0%} of the first layer's {what} at initialization (saturation)"
    predicted = entry.get("steps_to_epsilon_predicted_per_seed")
    unreachable = entry.get("loss_unreachable") or 0.0
    epsilon = results.get("theory", {}).get("epsilon")
    if predicted and epsilon is not None and unreachable >= epsilon:
        return (
            f"{unreachable:.3g} of its loss lies along directions with eigenvalues below "
            "1e-12 of the largest, which no gradient step moves (a large mean against the bias), "
            f"above ε = {epsilon:g}: predicted too"
        )
    if predicted and all(p is None for p in predicted) and entry.get("kappa99"):
        return (
            f"predicted too: more than 4× the steps run at the chosen rate (κ₉₉ of E[z zᵀ] "
            f"= {entry['kappa99']:.3g}, its conditioning)"
        )
    constant = [w for w in info.get("warnings", []) if "constant" in w]
    if constant:
        return f"{constant[0]}; and within {results['config']['epochs']} epochs at every rate tried"
    return f"not within {results['config']['epochs']} epochs at any rate tried"


def verdict(results: dict[str, Any]) -> list[str]:
    """Plain sentences: the winner, by how much against each other scheme, who never got there."""
    run_key, mean_key, words = _metric(results)
    finished = [s for s, i in results["schemes"].items() if "summary" in i]
    if not finished:
        return ["No scheme has finished its learning-rate search yet."]
    means = {s: results["schemes"][s]["summary"].get(mean_key) for s in finished}
    reached = sorted((m, s) for s, m in means.items() if m is not None)
    lines = []
    if not reached:
        lines.append(f"No scheme reached the target ({words}).")
    else:
        best_mean, best = reached[0]
        best_runs = _best_runs(results, best)
        lines.append(
            f"{best} trained fastest: {best_mean:,.0f} {words} (mean over "
            f"{sum(r.get(run_key) is not None for r in best_runs)} seeds)."
        )
        versus = []
        for mean, other in reached[1:]:
            ratios = _paired_ratios(best_runs, _best_runs(results, other), run_key)
            spread = f" (seeds {min(ratios):.2f}–{max(ratios):.2f})" if len(ratios) > 1 else ""
            versus.append(f"{mean / best_mean:.2f}× fewer than {other}{spread}")
        if versus:
            lines.append(f"{best} needed " + "; ".join(versus) + ".")
    for scheme in finished:
        if means[scheme] is None:
            lines.append(f"{scheme} never reached it: {_why_not(results, scheme)}.")
    if not results.get("complete"):
        lines.append("The run was interrupted: this compares the rates tried so far.")
    return lines


def _ratio_cell(t: dict[str, Any]) -> str:
    """``measured/predicted`` of the mean counts: ``> r`` / ``< r`` for bounds, (!) flagged."""
    ratio = t.get("ratio_measured_to_predicted")
    flag = " (!)" if t.get("agrees") is False else ""
    if ratio is None:
        if "agrees" not in t or t.get("agrees") is None:
            return "—"
        return ("both never" if not flag else "—") + flag
    prefix = {"lower": "> ", "upper": "< "}.get(t.get("ratio_bound") or "", "")
    return f"{prefix}{ratio:.2f}{flag}"


def _counts_cell(values: list[Any] | None, side: str, t: dict[str, Any]) -> str:
    """Per-seed counts, ``never`` where a seed did not get there (predicted: within the cap)."""
    if not values:
        return "—"
    limit = t.get("steps_to_epsilon_horizon" if side == "m" else "steps_to_epsilon_prediction_cap")
    never = "never" if limit is None else f"> {limit:,}"
    return ", ".join(never if v is None else f"{v:,}" for v in values)


def _paired_ratios(
    best: list[dict[str, Any]], other: list[dict[str, Any]], key: str
) -> list[float]:
    by_seed = {r["seed"]: r.get(key) for r in best}
    return [
        r[key] / by_seed[r["seed"]]
        for r in other
        if r.get(key) is not None and by_seed.get(r["seed"])
    ]


def _table(
    results: dict[str, Any], rows: list[dict[str, str]] | None = None, ident: str = "summary"
) -> str:
    rows = summary_rows(results) if rows is None else rows
    if not rows:
        return "<p>No scheme has finished a learning-rate search yet.</p>"
    head = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row.values()) + "</tr>"
        for row in rows
    )
    return f'<table id="{ident}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def baseline_scheme() -> str:
    """The registry's baseline scheme (the data as they are): speed-ups are measured against it."""
    from .. import schemes

    return schemes.where(baseline=True)[0]


def _measured_speedups(results: dict[str, Any]) -> dict[str, str]:
    """Measured speed-up over the baseline in the report's metric, beside the prediction."""
    _, mean_key, _ = _metric(results)
    means = {s: i["summary"].get(mean_key) for s, i in results["schemes"].items() if "summary" in i}
    base = baseline_scheme()
    raw = means.get(base)
    out = {}
    for scheme, mean in means.items():
        if mean is None:
            out[scheme] = "never reached"
        elif raw is None:
            out[scheme] = f"{base} never reached" if base in means else f"{base} not run"
        else:
            out[scheme] = f"{raw / mean:.3g}" if mean else "—"
    return out


def _theory_section(results: dict[str, Any]) -> list[str]:
    """Predictions from the statistics alone (made before training) beside the measurements."""
    th = results.get("theory")
    if not th:
        return []
    e = html.escape
    cfg = results["config"]
    parts = ["<h2>Theory against measurement</h2>"]
    if _is_lsq(results):
        parts.append(
            "<p>Least squares has Hessian E[z zᵀ], z = (x, 1): the bias input is included. "
            f"Speed is counted in steps until the loss is within ε = {th['epsilon']:g} of its "
            "optimum (an absolute excess: the one-hot targets are the same under every scheme, "
            "so ε means the same for all). Steps are predicted from the eigen-decomposition, "
            "the fourth moments of the inputs and each seed's initial weights, before training, "
            "for the batches the lab draws (one permutation per epoch, whose batch noise sums "
            "to zero over the epoch); exact for full-batch gradient descent. The largest stable "
            "rate (mean-square stability) is predicted for the lab's batches, one permutation "
            "per epoch, and beside it in closed form for independent batches. Samples to a "
            "target accuracy, the headline "
            "for non-linear models, is also shown: accuracy crosses its target somewhere along "
            "the same loss curve, so the two orders usually agree but the ratios need not. "
            "Counts are per seed; 'never' is beyond the horizon (measured) or beyond 4× it "
            "(predicted), and a ratio involving one is a bound (> or <). (!) marks a "
            "disagreement beyond 25 %, bounds included: never reached against a prediction "
            "well inside the horizon, or reached against a prediction of never.</p>"
        )
        head = (
            "<tr><th>scheme</th><th>2/λ_max (GD)</th><th>largest stable SGD rate at batch "
            f"{th['batch_size']}, predicted: the lab's batches (independent batches)</th>"
            "<th>top direction only</th>"
            "<th>measured on the grid: largest stable – smallest diverging</th><th>chosen rate</th>"
            "<th>steps to ε predicted (per seed)</th><th>measured (per seed)</th>"
            "<th>measured/predicted (means)</th></tr>"
        )
        rows = []
        for scheme, t in th["schemes"].items():
            if "summary" not in results["schemes"].get(scheme, {}):
                continue
            flag = _ratio_cell(t)
            bracket = t.get("lr_stable_measured") or {}
            measured_lr = (
                f"{_fmt(bracket.get('largest_stable'))} – {_fmt(bracket.get('smallest_diverging'))}"
                + (" (!)" if t.get("stability_agrees") is False else "")
            )
            rows.append(
                f"<tr><td>{e(scheme)}</td><td>{_fmt(t.get('lr_gd_max'))}</td>"
                f"<td>{e(_stable_cell(t))}</td>"
                f"<td>{_fmt(t.get('lr_sgd_max_top_direction'))}</td><td>{e(measured_lr)}</td>"
                f"<td>{_fmt(t.get('lr'))}</td>"
                f"<td>{e(_counts_cell(t.get('steps_to_epsilon_predicted_per_seed'), 'p', t))}</td>"
                f"<td>{e(_counts_cell(t.get('steps_to_epsilon_measured_per_seed'), 'm', t))}</td>"
                f"<td>{e(flag)}</td></tr>"
            )
        parts.append(f'<table id="theory">{head}{"".join(rows)}</table>')
        disagree = {
            s: t.get("disagreement") for s, t in th["schemes"].items() if t.get("agrees") is False
        }
        if disagree:
            items = "".join(
                f"<li>{e(s)}: {e(why or 'see the ratio column')}</li>"
                for s, why in disagree.items()
            )
            parts.append(
                "<p>Prediction and measurement disagree by more than 25 % for "
                f"{e(', '.join(disagree))}:</p><ul>{items}</ul>"
            )
        unstable = [s for s, t in th["schemes"].items() if t.get("stability_agrees") is False]
        if unstable:
            parts.append(
                "<p>The predicted largest stable rate lies more than 25 % outside the grid's "
                f"measured bracket for {e(', '.join(unstable))} (marked (!)); "
                "bench/bench_theory.py stability bisects it.</p>"
            )
    else:
        act = cfg.get("activation", "tanh")
        what = "tanh |a| > 2" if act == "tanh" else "ReLU dead on ≥ 99 % of samples"
        parts.append(
            "<p>The spectrum cannot see saturation. The first layer's pre-activations at "
            "initialization follow from each scheme's mean and covariance and the seeds' initial "
            f"weights (predicted), and from the data (measured): share {e(what)}. Ranking rule, "
            f"stated before measuring: {e(th['formulas']['ranking'])}.</p>"
        )
        head = (
            "<tr><th>scheme</th><th>κ₉₉ of E[z zᵀ]</th><th>T½ (GD steps)</th>"
            "<th>saturated, predicted</th>"
            "<th>saturated, measured</th><th>cost (rule)</th><th>samples to target</th></tr>"
        )
        key = "tanh_saturated" if act == "tanh" else "relu_dead"
        rows = []
        for scheme, t in th["schemes"].items():
            if "summary" not in results["schemes"].get(scheme, {}):
                continue
            sat = t.get("saturation", {})
            rows.append(
                f"<tr><td>{e(scheme)}</td><td>{_fmt(t.get('kappa99'))}</td>"
                f"<td>{_fmt(t.get('signal_half_steps'))}</td>"
                f"<td>{_fmt(sat.get(key + '_predicted'), 2)}</td>"
                f"<td>{_fmt(sat.get(key + '_measured'), 2)}</td>"
                f"<td>{_fmt(t.get('ranking_cost'))}</td>"
                f"<td>{_fmt(t.get('samples_to_target_measured'), 5)}</td></tr>"
            )
        parts.append(f'<table id="theory">{head}{"".join(rows)}</table>')
    ranking = th.get("ranking")
    if ranking:
        rho = ranking.get("spearman")

        def order(groups_key: str, flat_key: str) -> str:
            groups = ranking.get(groups_key)
            if not groups:  # results written before tie groups were recorded
                return " < ".join(ranking[flat_key])
            return " < ".join(" = ".join(group) for group in groups)

        def match(key: str) -> str:
            value = ranking.get(key)
            return "undefined" if value is None else ("yes" if value else "no")

        text = (
            f"<p>Predicted order: {e(order('predicted_groups', 'predicted'))}; measured order: "
            f"{e(order('measured_groups', 'measured'))} (= : tied); Spearman ρ = "
            f"{'undefined' if rho is None else f'{rho:.2f}'} (1: the same order)"
        )
        if "best_match" in ranking:
            values = ranking.get("spearman_values")
            text += (
                f", of the raw values {'undefined' if values is None else f'{values:.2f}'}; "
                f"predicted best among the measured best: {match('best_match')}, worst: "
                f"{match('worst_match')}. Ties: {e(ranking.get('ties', ''))}"
            )
        parts.append(text + ".</p>")
    return parts


def _diagnosis_section(results: dict[str, Any]) -> list[str]:
    """What ``normlab diagnose`` predicted from the training data, before any training."""
    diagnosis = results.get("diagnosis")
    if not diagnosis:
        return []
    e = html.escape
    if "error" in diagnosis:
        return ["<h2>Diagnosis</h2>", f"<p>No diagnosis: {e(diagnosis['error'])}</p>"]
    predictions = diagnosis["predictions"]["schemes"]
    base = baseline_scheme()
    rows = [
        "<tr><th>scheme</th><th>λ_max</th><th>λ_max/λ_2</th><th>largest stable LR 2/λ_max</th>"
        f"<th>κ₉₉</th><th>GD steps (predicted)</th><th>predicted speed-up vs {e(base)}</th>"
        f"<th>measured speed-up vs {e(base)}</th></tr>"
    ]
    measured = _measured_speedups(results)
    for scheme, spectrum in diagnosis["spectrum"].items():
        head = f'<tr><th scope="row">{e(scheme)}</th>'
        if "skipped" in spectrum:
            rows.append(f'{head}<td colspan="7">not applicable: {e(spectrum["skipped"])}</td></tr>')
            continue
        pred = predictions.get(scheme, {})
        steps = pred.get("gd_steps")
        if spectrum.get("estimated"):
            steps = "—"  # a sketch: no step count
        elif steps is None:
            steps = f"beyond {MAX_STEPS}"
        bound = "&gt; " if pred.get(f"speedup_vs_{base}_is_lower_bound") else ""
        rows.append(
            f"{head}<td>{_fmt(spectrum.get('lambda_max'))}</td>"
            f"<td>{_fmt(spectrum.get('ratio_max_2'))}</td><td>{_fmt(pred.get('lr_max'))}</td>"
            f"<td>{_fmt(pred.get('kappa99'))}</td>"
            f"<td>{steps}</td>"
            f"<td>{bound}{_fmt(pred.get(f'speedup_vs_{base}'))}</td>"
            f"<td>{e(measured.get(scheme, 'not run'))}</td></tr>"
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


def _grid_sentence(results: dict[str, Any]) -> str:
    """How each scheme's learning-rate grid was centred (one rule per optimizer)."""
    rules = {
        info["grid_center_rule"]
        for info in results["schemes"].values()
        if info.get("grid_center_rule")
    }
    if len(rules) != 1:
        return ""
    cfg = results["config"]
    return (
        f"Each scheme's learning-rate grid is centred on {next(iter(rules))}, "
        f"×{cfg['lr_factor']:g} per point from ×{cfg['lr_min']:g} to ×{cfg['lr_max']:g} "
        "of it, widened while the best rate sits at an edge. "
    )


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
        + (
            ", with an input BatchNorm layer before the first layer (the spectrum, 2/λ_max and "
            "the predictions describe its output at initialization)"
            if cfg.get("input_bn")
            else ""
        )
        + f", optimizer <b>{e(cfg['optimizer'])}</b>, batch size {cfg['batch_size']}, "
        f"{cfg['epochs']} epochs, {cfg['seeds']} seeds, target train accuracy {cfg['target']:g}. "
        + _grid_sentence(results)
        + "Every normalizer was fitted on the training split only."
    )
    lines = verdict(results)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>normlab convergence lab: {e(ds['name'])} / {e(cfg['model'])}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Convergence lab: {e(ds['name'])}, {e(cfg['model'])}, {e(cfg['optimizer'])}</h1>",
        f'<p id="verdict"><b>{e(lines[0])}</b> {e(" ".join(lines[1:]))}</p>',
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
        "<p>Chosen LR: the learning rate, per scheme, that reached the target in the most seeds "
        "with the fewest samples (for lsq: steps to ε), then the lowest final train loss. "
        "Samples to target: mean ± std over the seeds that reached it.</p>",
    ]
    parts += _theory_section(results)
    parts += _diagnosis_section(results)

    def figure(name: str, png: bytes, caption: str) -> str:
        data = base64.b64encode(png).decode("ascii")
        return (
            f'<figure id="{name}"><img alt="{e(name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{e(caption)}</figcaption></figure>"
        )

    probe_figures = ("probes", "probes_per_epoch")
    parts += [figure(*f) for f in figures if f[0] not in probe_figures]
    parts.append("<h2>Probes of the mechanism</h2>")
    parts.append(
        "<p>How the first layer's updates moved at the chosen rate and the run's batch size "
        f"({cfg['batch_size']}), means over seeds and steps. One sentence each: "
        + "; ".join(f"<b>{e(k)}</b>: {e(v)}" for k, v in _PROBE_SENTENCES.items())
        + ".</p>"
    )
    parts.append(_table(results, probe_rows(results), "probes"))
    parts += [figure(*f) for f in figures if f[0] in probe_figures]
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
