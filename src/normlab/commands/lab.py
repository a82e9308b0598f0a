"""``normlab compare``: train one model under several normalization schemes and report."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from ..errors import NormlabError

# The summary's columns kept at any terminal width (the others show while they fit).
SUMMARY_KEYS = frozenset({"scheme", "chosen LR", "samples to target", "final test acc"})


def _logger(quiet: bool) -> Callable[[str], None] | None:
    """Plan and estimate always; a line per finished run only off a terminal (no bar there)."""
    if quiet:
        return None
    from ..progress import wanted

    bar = wanted(None)

    def log(text: str) -> None:
        if bar and text.startswith("run "):
            return
        typer.echo(text, err=True)

    return log


def register(app: typer.Typer) -> None:
    from ..cli import cli_errors, console, progress_flag  # inside: cli imports this module

    @app.command()
    @cli_errors
    def compare(
        out: Annotated[
            Path,
            typer.Option("--out", "-o", help="Folder for results.json, plots and report.html."),
        ],
        dataset: Annotated[
            str | None, typer.Option(help="digits (default), mnist5k or lecun-gauss.")
        ] = None,
        data: Annotated[
            Path | None,
            typer.Option(
                help="Own inputs: X.npy of shape (n, *sample) with --labels; a .npz holding x "
                "and y; or a folder with one subfolder of images per class."
            ),
        ] = None,
        labels: Annotated[
            Path | None, typer.Option(help="Own labels: y.npy of n integers.")
        ] = None,
        model: Annotated[str, typer.Option(help="linear, lsq, mlp or cnn.")] = "mlp",
        schemes: Annotated[
            str | None,
            typer.Option(
                help="Comma-separated scheme names [default: the registry's default set: "
                "`normlab schemes` lists it]."
            ),
        ] = None,
        seeds: Annotated[int, typer.Option(help="Seeds per learning rate.")] = 3,
        seed: Annotated[
            int, typer.Option(help="First seed; also shuffles the train/test split.")
        ] = 0,
        epochs: Annotated[int, typer.Option(help="Passes over the training split.")] = 10,
        batch_size: Annotated[
            int | None,
            typer.Option("--batch-size", help="Mini-batch size [default: 32; not for gd]."),
        ] = None,
        target: Annotated[
            float, typer.Option(help="Target train accuracy for samples-to-target.")
        ] = 0.9,
        optimizer: Annotated[
            str, typer.Option(help="sgd, momentum, adam, or gd (full-batch gradient descent).")
        ] = "sgd",
        epsilon: Annotated[
            float | None,
            typer.Option(
                help="lsq: absolute excess loss over the optimum for steps-to-ε [default: 0.01]."
            ),
        ] = None,
        activation: Annotated[
            str, typer.Option(help="Hidden activation of mlp/cnn: tanh or relu.")
        ] = "tanh",
        hidden: Annotated[int, typer.Option(help="Hidden units of the mlp.")] = 64,
        input_bn: Annotated[
            bool,
            typer.Option(
                "--input-bn",
                help="Put a BatchNorm layer on the inputs, before the first layer (per feature; "
                "per channel for cnn). Not for lsq.",
            ),
        ] = False,
        offset: Annotated[
            float, typer.Option(help="lecun-gauss: shift added to every input.")
        ] = 0.0,
        n_samples: Annotated[
            int | None,
            typer.Option(
                "--n-samples",
                help="lecun-gauss: samples to draw; others: a stratified random subset of n "
                "(class shares kept, drawn with --seed, at least 2 per class).",
            ),
        ] = None,
        test_fraction: Annotated[
            float, typer.Option("--test-fraction", help="Held-out share, stratified.")
        ] = 0.2,
        lr_min: Annotated[
            float,
            typer.Option(
                "--lr-min",
                help="Lowest grid point, as a multiple of the grid centre: 2/λ_max "
                "(momentum: 0.1·2/λ_max; adam: 1e-3).",
            ),
        ] = 1 / 16,
        lr_max: Annotated[
            float,
            typer.Option("--lr-max", help="Highest grid point, as a multiple of the grid centre."),
        ] = 16.0,
        lr_factor: Annotated[
            float, typer.Option("--lr-factor", help="Ratio between grid points.")
        ] = 2.0,
        checkpoints: Annotated[
            int,
            typer.Option(help="Train-set evaluations per epoch (samples-to-target resolution)."),
        ] = 10,
        overwrite: Annotated[
            bool, typer.Option(help="Replace the report files in an existing --out folder.")
        ] = False,
        resume: Annotated[
            bool,
            typer.Option(help="Continue a stopped run in --out (same options) from its results."),
        ] = False,
        threads: Annotated[int, typer.Option(help="Torch CPU threads.")] = 1,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    ) -> None:
        """Train the same model under each scheme over a fair learning-rate grid; write a report."""
        from ..lab import compare as run_compare
        from ..lab.report import REPORT_FILE, summary_rows

        if dataset is None and data is None:
            dataset = "digits"
        if epsilon is not None and model != "lsq":
            raise NormlabError(
                f"--epsilon is the excess loss over the least-squares optimum: it applies to "
                f"--model lsq only; drop it for --model {model}"
            )
        if batch_size is not None and optimizer == "gd":
            raise NormlabError(
                "--optimizer gd takes one step on the whole training split: --batch-size does "
                "not apply; drop it, or use --optimizer sgd"
            )
        command = shlex.join(["normlab", *sys.argv[1:]]) if sys.argv[1:2] == ["compare"] else None
        try:
            results = run_compare(
                dataset,
                schemes=None
                if schemes is None
                else [s.strip() for s in schemes.split(",") if s.strip()],
                model=model,
                seeds=seeds,
                seed=seed,
                epochs=epochs,
                batch_size=32 if batch_size is None else batch_size,
                target=target,
                optimizer=optimizer,
                activation=activation,
                hidden=hidden,
                input_bn=input_bn,
                offset=offset,
                n_samples=n_samples,
                test_fraction=test_fraction,
                lr_min=lr_min,
                lr_max=lr_max,
                lr_factor=lr_factor,
                checkpoints_per_epoch=checkpoints,
                data=data,
                labels=labels,
                out=out,
                overwrite=overwrite,
                resume=resume,
                epsilon=0.01 if epsilon is None else epsilon,
                threads=threads,
                progress=progress_flag(quiet),
                command=command,
                log=_logger(quiet),
            )
        except KeyboardInterrupt:
            typer.echo(f"interrupted: the finished runs are in {out / 'results.json'}", err=True)
            raise typer.Exit(130) from None
        if quiet:
            typer.echo(str(out / REPORT_FILE))
            return
        from ..lab.report import verdict
        from .tables import Column, fitted_table

        for line in verdict(results):
            console().print(line, markup=False)  # wrapped to the terminal
        rows = summary_rows(results)
        columns = [
            Column(name, key=name in SUMMARY_KEYS, justify="left" if name == "scheme" else "right")
            for name in (rows[0] if rows else [])
        ]
        out_console = console()
        table, note = fitted_table(
            f"{results['dataset']['name']} / {model} / {optimizer}"
            + (" / input BatchNorm" if input_bn else ""),
            columns,
            rows,
            width=out_console.width,
            rest=f"every column in {out / REPORT_FILE}",
        )
        out_console.print(table)
        if note:
            out_console.print(note, markup=False)
        typer.echo(f"report: {out / REPORT_FILE}")
