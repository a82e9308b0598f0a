"""``normlab diagnose``: what the data will do to gradient descent, before training."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from .. import schemes
from ..cli import (
    QuietOpt,
    as_options,
    cli_errors,
    console,
    print_skipped,
    progress_flag,
    reads_data,
)
from ..diagnostics import MAX_ITERATIONS
from ..io import json_text
from .tables import Column, fitted_table


def register(app: typer.Typer) -> None:
    @app.command()
    @cli_errors
    @reads_data
    def diagnose(
        data: Annotated[
            str | None,
            typer.Argument(help="DATA.npy (or .npz, image folder) or a saved co-moments file."),
        ] = None,
        dataset: Annotated[
            str | None,
            typer.Option("--dataset", help="A bundled dataset instead: mnist5k or digits."),
        ] = None,
        labels: Annotated[
            Path | None,
            typer.Option("--labels", help="y.npy of integer labels (for --measure with DATA)."),
        ] = None,
        holdout: Annotated[
            str | None,
            typer.Option("--holdout", help="Held-out TEST.npy: report |z| there too."),
        ] = None,
        measure: Annotated[
            bool,
            typer.Option(
                "--measure",
                help="Run full-batch GD on least squares and compare with the predictions.",
            ),
        ] = False,
        as_json: Annotated[
            bool, typer.Option("--json", help="Print JSON instead of tables.")
        ] = False,
        wide: Annotated[
            bool,
            typer.Option("--wide", help="Every table column, however wide the terminal is."),
        ] = False,
        mask_png: Annotated[
            Path | None,
            typer.Option(
                "--mask-png", help="Images: write a PNG of constant (red) and rare (orange) pixels."
            ),
        ] = None,
        save_comoments: Annotated[
            Path | None,
            typer.Option(
                "--save-comoments",
                help="Also save the co-moments (diagnose the file later, fit zca/pca).",
            ),
        ] = None,
        rare: Annotated[
            int,
            typer.Option("--rare", help="A feature non-zero in at most this many samples is rare."),
        ] = 5,
        quiet: QuietOpt = False,
        *,
        reading: dict[str, Any],
    ) -> None:
        """Hessian spectrum (E x·xᵀ) per scheme, stable LR, predicted speed-up, feature health."""
        from ..comoments import compute_comoments
        from ..diagnostics import diagnose as run_diagnose
        from ..errors import NormlabError
        from ..io import written_together

        if (data is None) == (dataset is None):
            raise NormlabError(
                "give either DATA (or a co-moments file) or --dataset mnist5k|digits"
            )
        name = dataset or data
        source: Any = data
        # the co-moments file and the mask appear together, after the diagnosis succeeded
        with written_together():
            if save_comoments is not None:
                if dataset is not None:
                    from ..lab.datasets import load_arrays

                    x, y, _ = load_arrays(dataset)
                    source, dataset = x, None
                    labels_arg: Any = y
                else:
                    labels_arg = labels
                comoments = compute_comoments(source, progress=progress_flag(quiet), **reading)
                print_skipped(comoments)
                comoments.save(save_comoments)
                if not measure:
                    source, labels_arg = comoments, None
            else:
                labels_arg = labels
            report = run_diagnose(
                source,
                dataset=dataset,
                labels=labels_arg,
                holdout=holdout,
                measure=measure,
                rare_threshold=rare,
                mask_png=mask_png,
                progress=progress_flag(quiet),
                **(reading if dataset is None else {}),
            )
        if as_json:
            typer.echo(json_text(report))
            return
        _print(report, str(name), wide)
        if mask_png is not None:
            typer.echo(f"pixel mask: {mask_png}")
        if save_comoments is not None:
            typer.echo(f"co-moments: {save_comoments}")


def _num(value: Any, spec: str = ".3g") -> str:
    if value is None:
        return "—"
    if isinstance(value, int):
        return str(value)
    return format(value, spec)


# The spectrum table's columns: the key ones always show, the others while they fit.
SPECTRUM_COLUMNS = (
    Column("scheme", key=True, justify="left"),
    Column("λ_max", key=True),
    Column("GD steps", key=True),
    Column("LR ≤ 2/λmax", key=True),
    Column("κ₉₉=λmax/λk99"),
    Column("vs raw", key=True),
    Column("vs max", key=True),
    Column("λmax/λ2"),
    Column("eff. rank"),
    Column("# ~0"),
    Column("k99"),
    Column("λ_2"),
    Column("λmax/λ10"),
)


def speedup_heading(position: int, reference: str) -> str:
    """The measured table's heading for the speed-up over a reference scheme."""
    return f"{'speed-up vs' if position == 0 else 'vs'} {reference} (pred / meas)"


def measured_columns() -> tuple[Column, ...]:
    """The measured table: one speed-up column per reference scheme of the registry."""
    return (
        Column("scheme", key=True, justify="left"),
        Column("iterations (pred / meas)", key=True),
        *(
            Column(speedup_heading(i, ref), key=True)
            for i, ref in enumerate(schemes.where(reference=True))
        ),
        Column("2/λ_max"),
        Column("measured threshold"),
        Column("ratio"),
    )


def _print(report: dict[str, Any], title: str, wide: bool = False) -> None:
    from rich.markup import escape
    from rich.table import Table

    out = console()
    if wide:
        out.width = max(out.width, 200)
    info = report["data"]
    preds = report["predictions"]["schemes"]
    # the answer first (what a person came for), the evidence below it
    out.print(
        f"[bold]recommendation[/bold] for {escape(title)} ({info['samples']} samples x "
        f"{info['features']} features)",
        highlight=False,
    )
    for line in report["recommendation"]:
        out.print(f"• {as_options(line)}", markup=False)  # `fit` options, not Python keywords
    out.print()
    skipped = []
    rows = []
    for name, s in report["spectrum"].items():
        if "skipped" in s:
            skipped.append(f"{name}: {as_options(s['skipped'])}")
            continue
        p = preds[name]
        rows.append(
            {
                "scheme": name,
                "λ_max": _num(s["lambda_max"], ".4g"),
                "λ_2": _num(s["lambda_2"], ".4g"),
                "λmax/λ2": _num(s["ratio_max_2"]),
                "λmax/λ10": _num(s["ratio_max_10"]),
                "k99": _num(s["k99"]),
                "κ₉₉=λmax/λk99": _num(s["ratio_max_k99"], ".4g"),
                "GD steps": _steps(s["gd_steps"], s["estimated"]),
                "eff. rank": _num(s["effective_rank"], ".1f"),
                "# ~0": _num(s["n_zero"]),
                "LR ≤ 2/λmax": _num(p["lr_max"]),
                **{f"vs {ref}": _predicted_speedup(p, ref) for ref in ("raw", "max")},
            }
        )
    spectrum, note = fitted_table(
        f"{title}: {info['samples']} samples x {info['features']} features — spectrum of "
        "E[yyᵀ] per scheme (the Hessian of least squares)",
        SPECTRUM_COLUMNS,
        rows,
        width=out.width,
        wide=wide,
    )
    out.print(spectrum)
    if note:
        out.print(note, markup=False)
    out.print("predicted speed-up: " + report["predictions"]["formula"], markup=False)
    reasons = {s["zero_reason"] for s in report["spectrum"].values() if s.get("zero_reason")}
    for reason in sorted(reasons):
        out.print(f"~0 eigenvalues: {reason}", markup=False)
    for line in skipped:
        out.print(f"not applicable — {line}", markup=False)
    health = report["health"]
    table = Table(title="feature health (from the per-feature moments)")
    table.add_column("finding")
    table.add_column("count", justify="right")
    table.add_column("where (first indices)")
    for key, label in (
        ("constant", "constant"),
        ("near_constant", "near-constant"),
        ("rare", "rare"),
        ("scale_off", "scale off the median"),
    ):
        item = health[key]
        rule = f" ({item['rule']})" if "rule" in item else ""
        table.add_row(label + rule, str(item["count"]), _where(item["indices"]))
    z = health["max_abs_z"]
    table.add_row(
        f"largest training |z| (bound √(n−1) = {z['bound']:.4g})",
        _num(z["value"], ".4g"),
        f"at {tuple(z['index'])}; {z['count_above_10']} feature(s) above 10",
    )
    held = report.get("holdout")
    if held:
        table.add_row(
            f"held-out |z| ({held['samples']} samples)",
            _num(held["max_abs_z"], ".4g"),
            f"at {tuple(held['index'])}; {held['count_above_training_bound']} above the training "
            f"bound; {held['train_constant_that_vary']['count']} training-constant feature(s) vary",
        )
    out.print(table)
    measured = report.get("measured")
    if measured:
        rows = []
        for name, row in measured["schemes"].items():
            p = preds[name]
            iterations = row["iterations_to_tolerance"]
            rows.append(
                {
                    "scheme": name,
                    "2/λ_max": _num(row["lr_predicted"]),
                    "measured threshold": _num(row["lr_threshold"]),
                    "ratio": _num(row["ratio_measured_to_predicted"]),
                    "iterations (pred / meas)": (
                        f"{_steps(p['gd_steps'], report['spectrum'][name]['estimated'])} / "
                        + (_num(iterations) if iterations is not None else f"> {MAX_ITERATIONS}")
                    ),
                    **{
                        speedup_heading(i, ref): (
                            f"{_predicted_speedup(p, ref)} / {_speedup(row, ref)}"
                        )
                        for i, ref in enumerate(schemes.where(reference=True))
                    },
                }
            )
        table, note = fitted_table(
            f"measured: {measured['model']}", measured_columns(), rows, width=out.width, wide=wide
        )
        out.print(table)
        if note:
            out.print(note, markup=False)
        out.print(
            f"threshold: {measured['threshold']}; iterations: {measured['tolerance']}", markup=False
        )


def _steps(steps: int | None, estimated: bool) -> str:
    if estimated:
        return "—"
    return f"> {MAX_ITERATIONS}" if steps is None else str(steps)


def _predicted_speedup(prediction: dict[str, Any], ref: str) -> str:
    value = prediction.get(f"speedup_vs_{ref}")
    if value is None:
        return "—"
    bound = "> " if prediction.get(f"speedup_vs_{ref}_is_lower_bound") else ""
    return f"{bound}{_num(value)}×"


def _speedup(row: dict[str, Any], ref: str) -> str:
    value = _num(row[f"measured_speedup_vs_{ref}"])
    return f"> {value}" if row[f"measured_speedup_vs_{ref}_is_lower_bound"] else value


def _where(indices: list[list[int]]) -> str:
    shown = ", ".join(str(tuple(i)) if len(i) > 1 else str(i[0]) for i in indices[:8])
    return shown + (" …" if len(indices) > 8 else "")
