"""The ``normlab`` command line: thin commands over the Python API.

Each command parses, calls the library and prints. A :class:`NormlabError` becomes one line on
stderr and exit code 1 (a traceback only with ``--debug``). Commands of the larger features
live in ``normlab/commands/<topic>.py``, each with a ``register(app)`` function.
"""

from __future__ import annotations

import functools
import importlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .errors import NormlabError

app = typer.Typer(
    name="normlab",
    help="Input normalization you can verify: exact statistics, normalizers, diagnostics.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_state = {"debug": False}

# Modules under normlab/commands/ that add commands (each has ``register(app)``).
COMMAND_MODULES: list[str] = []


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug


def cli_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a NormlabError into one line on stderr and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (NormlabError, OSError) as exc:
            if _state["debug"]:
                raise
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None

    return wrapper


def console():
    from rich.console import Console

    return Console()


AxisOpt = Annotated[str, typer.Option("--axis", help="feature (per pixel), channel or global.")]
ChannelAxisOpt = Annotated[
    int, typer.Option("--channel-axis", help="Channel axis of a sample: -1 for HWC, 0 for CHW.")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
KeyOpt = Annotated[Optional[str], typer.Option("--key", help="Array name inside a .npz file.")]


def progress_flag(quiet: bool) -> bool | None:
    return False if quiet else None


def print_summary(summary: dict[str, Any], title: str) -> None:
    from rich.table import Table

    table = Table(title=title, show_header=False)
    for k, v in summary.items():
        table.add_row(k, _fmt(v))
    console().print(table)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, list) and v and isinstance(v[0], float):
        return "[" + ", ".join(f"{x:.6g}" for x in v) + "]"
    return str(v)


@app.command()
@cli_errors
def stats(
    data: Annotated[str, typer.Argument(help="A .npy/.npz file, an image folder, a list of shards.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to save the statistics.")],
    axis: AxisOpt = "feature",
    channel_axis: ChannelAxisOpt = -1,
    key: KeyOpt = None,
    nan_policy: Annotated[str, typer.Option(help="raise or omit")] = "raise",
    quiet: QuietOpt = False,
) -> None:
    """Compute exact statistics of DATA and save them (safetensors + JSON metadata)."""
    from .stats import compute_stats

    m = compute_stats(
        data, axis, channel_axis=channel_axis, nan_policy=nan_policy, key=key,
        progress=progress_flag(quiet),
    )  # fmt: skip
    m.save(output)
    print_summary(m.summary(), f"statistics of {data} -> {output}")


@app.command()
@cli_errors
def show(
    path: Annotated[Path, typer.Argument(help="A stats or normalizer file.")],
    format: Annotated[str, typer.Option("--format", help="table, json or torchvision.")] = "table",
) -> None:
    """Print a saved statistics file: a table, JSON, or torchvision's mean/std (0..1 scale)."""
    from .io import load
    from .moments import Moments

    obj = load(path)
    if format not in ("table", "json", "torchvision"):
        raise NormlabError(f"--format must be table, json or torchvision; got {format!r}")
    stats = obj if isinstance(obj, Moments) else getattr(obj, "stats_", None)
    if format == "torchvision":
        if stats is None:
            raise NormlabError(f"{path}: holds a {type(obj).__name__} without statistics")
        typer.echo(json.dumps(torchvision_constants(stats)))
        return
    summary = stats.summary() if stats is not None else {}
    if hasattr(obj, "describe"):
        summary = {**obj.describe(), **summary}
    if format == "json":
        if stats is not None:
            summary["mean"] = stats.mean.tolist()
            summary["std"] = stats.std().tolist()
        typer.echo(json.dumps(summary))
    else:
        print_summary(summary, str(path))


def torchvision_constants(stats: Any) -> dict[str, list[float]]:
    """Per-channel mean/std on the 0..1 scale torchvision's ``Normalize`` expects."""
    if stats.axis == "feature":
        if stats.sample_shape is not None and len(stats.sample_shape) >= 2:
            stats = stats.reduce("channel")
        else:
            stats = stats.reduce("global")
    divisor = float(stats.value_scale.get("max_value") or 1.0)
    mean = (stats.mean / divisor).reshape(-1)
    std = (stats.std() / divisor).reshape(-1)
    return {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}


for _module in COMMAND_MODULES:
    importlib.import_module(f"normlab.commands.{_module}").register(app)


def main() -> None:  # the console script
    app(prog_name="normlab")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
