"""``normlab comoments``: the co-moments (second moments between features) of DATA, saved.

ZCA/PCA whitening and ``diagnose`` start from them; ``normlab fit --stats FILE --scheme zca``
fits from the saved file without another pass over the data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..cli import (
    CheckpointEveryOpt,
    CheckpointFingerprintOpt,
    CheckpointKeyOpt,
    CheckpointOpt,
    QuietOpt,
    cli_errors,
    data_argument,
    print_lines,
    print_skipped,
    progress_flag,
    reads_data,
)


def register(app: typer.Typer) -> None:
    @app.command()
    @cli_errors
    @reads_data
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
        quiet: QuietOpt = False,
        checkpoint: CheckpointOpt = None,
        checkpoint_every: CheckpointEveryOpt = None,
        checkpoint_key: CheckpointKeyOpt = None,
        checkpoint_fingerprint: CheckpointFingerprintOpt = "auto",
        *,
        reading: dict[str, Any],
    ) -> None:
        """Compute the co-moments of DATA (for zca/pca and diagnose) and save them."""
        from ..comoments import compute_comoments
        from ..display import comoments_lines

        sizes = {"max_features": max_features, "sketch_size": sketch_size}
        given: dict[str, Any] = {k: v for k, v in sizes.items() if v is not None}
        result = compute_comoments(
            data_argument(data),
            seed=seed,
            progress=progress_flag(quiet),
            checkpoint=checkpoint,
            checkpoint_every=checkpoint_every,
            checkpoint_key=checkpoint_key,
            checkpoint_fingerprint=checkpoint_fingerprint,
            **given,
            **reading,
        )
        lines = comoments_lines(result)  # may fail: before the write, so a failure writes nothing
        result.save(output)
        print_lines(f"co-moments of {' '.join(data)}\nsaved to {output}", lines)
        print_skipped(result)
