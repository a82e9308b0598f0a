"""``normlab diagnose``: what the data will do to gradient descent, before training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..cli import KeyOpt, QuietOpt, cli_errors, console, progress_flag


def register(app: typer.Typer) -> None:
    @app.command()
    @cli_errors
    def diagnose(
        data: Annotated[
            Optional[str],
            typer.Argument(help="DATA.npy (or .npz, image folder) or a saved co-moments file."),
        ] = None,
        dataset: Annotated[
            Optional[str],
            typer.Option("--dataset", help="A bundled dataset instead: mnist5k or digits."),
        ] = None,
        labels: Annotated[
            Optional[Path],
            typer.Option("--labels", help="y.npy of integer labels (for --measure with DATA)."),
        ] = None,
        holdout: Annotated[
            Optional[str],
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
        mask_png: Annotated[
            Optional[Path],
            typer.Option(
                "--mask-png", help="Images: write a PNG of constant (red) and rare (orange) pixels."
            ),
        ] = None,
        save_comoments: Annotated[
            Optional[Path],
            typer.Option(
                "--save-comoments",
                help="Also save the co-moments (diagnose the file later, fit zca/pca).",
            ),
        ] = None,
        rare: Annotated[
            int,
            typer.Option("--rare", help="A feature non-zero in at most this many samples is rare."),
        ] = 5,
        key: KeyOpt = None,
        quiet: QuietOpt = False,
    ) -> None:
        """Hessian spectrum (E x·xᵀ) per scheme, largest stable LR, predicted speed-up, feature health."""
        from ..comoments import compute_comoments
        from ..diagnostics import diagnose as run_diagnose
        from ..errors import NormlabError

        if (data is None) == (dataset is None):
            raise NormlabError(
                "give either DATA (or a co-moments file) or --dataset mnist5k|digits"
            )
        name = dataset or data
        source: Any = data
        if save_comoments is not None:
            if dataset is not None:
                from ..lab.datasets import load_arrays

                x, y, _ = load_arrays(dataset)
                source, dataset = x, None
                labels_arg: Any = y
            else:
                labels_arg = labels
            comoments = compute_comoments(source, key=key, progress=progress_flag(quiet))
            comoments.save(save_comoments)
            if not measure:
                source, labels_arg = comoments, None
        else:
            labels_arg = labels
        report = run_diagnose(
            source,
            dataset=dataset,
            labels=labels_arg,
            key=key,
            holdout=holdout,
            measure=measure,
            rare_threshold=rare,
            mask_png=mask_png,
            progress=progress_flag(quiet),
        )
        if as_json:
            typer.echo(json.dumps(report))
            return
        _print(report, str(name))
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


def _print(report: dict[str, Any], title: str) -> None:
    from rich.markup import escape
    from rich.table import Table

    out = console()
    out.width = max(out.width, 150)  # the spectrum table has 12 columns
    info = report["data"]
    spectrum = Table(
        title=escape(
            f"{title}: {info['samples']} samples x {info['features']} features — spectrum of "
            "E[yyᵀ] per scheme (the Hessian of least squares)"
        )
    )
    for col in (
        "scheme",
        "λ_max",
        "λ_2",
        "λmax/λ2",
        "λmax/λ10",
        "k99",
        "κ₉₉=λmax/λk99",
        "eff. rank",
        "# ~0",
        "LR ≤ 2/λmax",
        "vs raw",
        "vs max",
    ):
        spectrum.add_column(col, justify="left" if col == "scheme" else "right")
    preds = report["predictions"]["schemes"]
    skipped = []
    for name, s in report["spectrum"].items():
        if "skipped" in s:
            skipped.append(f"{name}: {s['skipped']}")
            continue
        p = preds[name]
        spectrum.add_row(
            name,
            _num(s["lambda_max"], ".4g"),
            _num(s["lambda_2"], ".4g"),
            _num(s["ratio_max_2"]),
            _num(s["ratio_max_10"]),
            _num(s["k99"]),
            _num(s["ratio_max_k99"], ".4g"),
            _num(s["effective_rank"], ".1f"),
            _num(s["n_zero"]),
            _num(p["lr_max"]),
            _num(p["speedup_vs_raw"]) + "×",
            _num(p["speedup_vs_max"]) + "×",
        )
    out.print(spectrum)
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
            f"at {tuple(held['index'])}; {held['count_above_training_bound']} above the training bound; "
            f"{held['train_constant_that_vary']['count']} training-constant feature(s) vary",
        )
    out.print(table)
    measured = report.get("measured")
    if measured:
        table = Table(title=escape(f"measured: {measured['model']}"))
        for col in (
            "scheme",
            "2/λ_max",
            "measured threshold",
            "ratio",
            "iterations",
            "speed-up vs raw (pred / meas)",
            "vs max (pred / meas)",
        ):
            table.add_column(col, justify="left" if col == "scheme" else "right")
        for name, row in measured["schemes"].items():
            p = preds[name]
            iterations = row["iterations_to_tolerance"]
            table.add_row(
                name,
                _num(row["lr_predicted"]),
                _num(row["lr_threshold"]),
                _num(row["ratio_measured_to_predicted"]),
                _num(iterations) if iterations is not None else f"> {measured['max_iterations']}",
                f"{_num(p['speedup_vs_raw'])} / {_speedup(row, 'raw')}",
                f"{_num(p['speedup_vs_max'])} / {_speedup(row, 'max')}",
            )
        out.print(table)
        out.print(
            f"threshold: {measured['threshold']}; iterations: {measured['tolerance']}", markup=False
        )
    out.print("[bold]recommendation[/bold]")
    for line in report["recommendation"]:
        out.print(f"• {line}", markup=False)


def _speedup(row: dict[str, Any], ref: str) -> str:
    value = _num(row[f"measured_speedup_vs_{ref}"])
    return f"> {value}" if row[f"measured_speedup_vs_{ref}_is_lower_bound"] else value


def _where(indices: list[list[int]]) -> str:
    shown = ", ".join(str(tuple(i)) if len(i) > 1 else str(i[0]) for i in indices[:8])
    return shown + (" …" if len(indices) > 8 else "")
