"""``normlab comoments``: the co-moments (second moments between features) of DATA, saved.

ZCA/PCA whitening and ``diagnose`` start from them; ``normlab fit --stats FILE --scheme zca``
fits from the saved file without another pass over the data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..cli import (
    ColumnsOpt,
    EngineOpt,
    GlobOpt,
    InterpolationOpt,
    KeyOpt,
    ModeOpt,
    QuietOpt,
    ResizeOpt,
    SchedulerOpt,
    SkipBadOpt,
    StorageOptionsOpt,
    WorkersOpt,
    cli_errors,
    data_argument,
    print_lines,
    print_skipped,
    progress_flag,
    source_options,
)


def register(app: typer.Typer) -> None:
    @app.command()
    @cli_errors
    def comoments(
        data: Annotated[
            list[str],
            typer.Argument(help="The data, as for `normlab stats` (files, folders, URLs)."),
        ],
        output: Annotated[
            Path, typer.Option("--output", "-o", help="Where to save the co-moments.")
        ],
        max_features: Annotated[
            int | None,
            typer.Option(
                "--max-features",
                help="Above this many features keep a random sketch instead of the full matrix.",
            ),
        ] = None,
        sketch_size: Annotated[
            int | None, typer.Option("--sketch-size", help="Columns of the sketch.")
        ] = None,
        seed: Annotated[int, typer.Option("--seed", help="Seed of the sketch.")] = 0,
        key: KeyOpt = None,
        quiet: QuietOpt = False,
        glob: GlobOpt = None,
        mode: ModeOpt = None,
        resize: ResizeOpt = None,
        interpolation: InterpolationOpt = "bilinear",
        skip_bad: SkipBadOpt = False,
        columns: ColumnsOpt = None,
        storage_options: StorageOptionsOpt = None,
        engine: EngineOpt = "serial",
        workers: WorkersOpt = None,
        scheduler: SchedulerOpt = None,
    ) -> None:
        """Compute the co-moments of DATA (for zca/pca and diagnose) and save them."""
        from ..comoments import compute_comoments
        from ..display import comoments_lines

        reading = source_options(
            glob=glob,
            mode=mode,
            resize=resize,
            interpolation=interpolation,
            skip_bad=skip_bad,
            engine=engine,
            workers=workers,
            scheduler=scheduler,
            columns=columns,
            storage_options=storage_options,
        )
        sizes = {"max_features": max_features, "sketch_size": sketch_size}
        given: dict[str, Any] = {k: v for k, v in sizes.items() if v is not None}
        result = compute_comoments(
            data_argument(data),
            key=key,
            seed=seed,
            progress=progress_flag(quiet),
            **given,
            **reading,
        )
        result.save(output)
        print_lines(f"co-moments of {' '.join(data)}\nsaved to {output}", comoments_lines(result))
        print_skipped(result)
