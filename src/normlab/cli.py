"""The ``normlab`` command line: thin commands over the Python API.

Each command parses, calls the library and prints. A :class:`NormlabError` becomes one line on
stderr and exit code 1 (a traceback only with ``--debug``). Commands of the larger features
live in ``normlab/commands/<topic>.py``, each with a ``register(app)`` function.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import re
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from . import __version__
from .errors import NormlabError
from .schemes import CHOSEN_BY_NAME as CHOSEN_BY_SCHEME_NAME  # noqa: F401 (the CLI option tests)

if TYPE_CHECKING:
    from rich.console import Console


class _Group(TyperGroup):
    """Help without a type column for flags (a flag takes no value, so ``<bool>`` misleads);
    remembers the command being run, so that messages can name its options."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name, command, rest = super().resolve_command(ctx, args)
        _state["command"] = command
        _state["group"] = self
        return name, command, rest

    def get_params(self, ctx: Any) -> list[Any]:
        return _flags_without_type(super().get_params(ctx))

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _flags_without_type([*command.params, command.get_help_option(ctx)])
        return command


def _flags_without_type(params: list[Any]) -> list[Any]:
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


app = typer.Typer(
    cls=_Group,
    name="normlab",
    help="Input normalization you can verify: exact statistics, normalizers, diagnostics.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_state: dict[str, Any] = {"debug": False, "command": None}

# Parameters of commands that name files or folders the command writes. Every other parameter
# naming an existing path is an input: an output that is an input is refused before any work.
OUTPUT_PARAMETERS: frozenset[str] = frozenset(
    {"output", "out", "mask_png", "save_comoments", "checkpoint"}
)
# Those that name a folder (the lab's report, a checkpoint); the others name one file each, and
# every one of them is checked before the command starts, so a bad one writes nothing.
FOLDER_OUTPUTS: frozenset[str] = frozenset({"out", "checkpoint"})

# Modules under normlab/commands/ that add commands (each has ``register(app)``).
COMMAND_MODULES: list[str] = ["lab", "export", "diagnose", "comoments"]


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"normlab {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    _state["debug"] = debug


def cli_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a NormlabError into one line on stderr and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from .io import check_destination, reading, refuse_overwrite

        try:
            outputs, inputs = _paths_of(kwargs)
            refuse_overwrite(outputs, inputs)
            for name in OUTPUT_PARAMETERS - FOLDER_OUTPUTS:
                if kwargs.get(name) is not None:
                    check_destination(kwargs[name])
            with warnings.catch_warnings(), reading(*inputs):
                warnings.showwarning = _show_warning
                return func(*args, **kwargs)
        except BrokenPipeError:  # the reader of stdout left (`normlab stats ... | head`)
            _silence_stdout()
            raise typer.Exit(0) from None
        except (NormlabError, OSError) as exc:
            if _state["debug"]:
                raise
            typer.echo(f"error: {as_options(str(exc))}", err=True)
            raise typer.Exit(1) from None
        except (typer.Exit, typer.Abort, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # a bug of normlab: still one line, with how to see more
            if _state["debug"]:
                raise
            typer.echo(
                f"error: internal error ({type(exc).__name__}: {exc}); please report it with "
                "the output of the same command run as `normlab --debug ...`",
                err=True,
            )
            raise typer.Exit(1) from None

    return wrapper


# A Python keyword in a library message: ``max_value=``, ``nan_policy='omit'``, ``resize=(H, W)``
_KEYWORD = re.compile(r"(?<![\w.\-])([a-z][a-z0-9_]*)=('[^']*'|\"[^\"]*\"|\([^()]*\)|[^\s,;()]*)")
# A keyword named without a value: ``std_floor must be positive``, ``the nan_policy``; never a
# part of a path or file name (``runs/std_floor.npy``)
_BARE_KEYWORD = re.compile(
    r"(?<![\w.\-'\"`/\\])([a-z][a-z0-9]*_[a-z0-9_]*[a-z0-9]|[a-z][a-z0-9]*(?= must ))"
    r"(?![\w=(/\\-]|\.\w)"
)
# Python keywords whose command-line option has another name (keyword: option's parameter)
OPTION_OF_KEYWORD: dict[str, str] = {"rare_threshold": "rare"}


def _scheme_parameters() -> set[str]:
    from . import schemes

    return {name for scheme in schemes.names() for name in schemes.entry(scheme).options}


def _long_flag(param: Any) -> str:
    return str(max((o for o in param.opts if o.startswith("--")), key=len))


def _options_of(command: Any) -> dict[str, Any]:
    return {p.name: p for p in command.params if any(o.startswith("--") for o in p.opts)}


def as_options(message: str) -> str:
    """A library message in the command line's words (the one place that translates).

    Each Python keyword that is an option of the running command becomes that option
    (``max_value=255``: ``--max-value 255``, ``resize=(H, W)``: ``--resize H W``,
    ``std_floor must be positive``: ``--std-floor must be positive``); a keyword with a value
    that only ``fit`` takes (a scheme's parameter) names that command (``std_floor=0.3``:
    ``normlab fit --std-floor 0.3``). Values are written as the option takes them
    (``dtype=np.float64``: ``--dtype float64``).
    """
    command = _state.get("command")
    if command is None:
        return message
    options = _options_of(command)
    # the schemes' parameters are options of `fit`: a hint about a scheme names it there
    fitting = getattr(_state.get("group"), "commands", {}).get("fit")
    others = [("fit", fitting)] if fitting is not None and fitting is not command else []

    def find(name: str) -> tuple[str | None, Any]:
        name = OPTION_OF_KEYWORD.get(name, name)
        if name in options:
            return None, options[name]
        if name not in _scheme_parameters():  # only a scheme's parameter is fit's to take
            return None, None
        for command_name, other in others:  # e.g. diagnose's hint about a fit option
            if name in _options_of(other):
                return command_name, _options_of(other)[name]
        return None, None

    def replace(match: re.Match[str]) -> str:
        where, param = find(match.group(1))
        value = re.sub(r"^np\.", "", match.group(2).strip("'\""))
        if param is None or (value in ("True", "False") and not param.is_flag):
            return match.group(0)
        flag = _long_flag(param)
        if param.is_flag:
            text = flag
        else:
            if value.startswith("("):
                value = " ".join(part.strip() for part in value[1:-1].split(","))
            text = f"{flag} {value}" if value else flag
        return f"`normlab {where} {text}`" if where else text

    def replace_bare(match: re.Match[str]) -> str:
        name = OPTION_OF_KEYWORD.get(match.group(1), match.group(1))
        param = options.get(name)
        return _long_flag(param) if param is not None else match.group(0)

    return _BARE_KEYWORD.sub(replace_bare, _KEYWORD.sub(replace, message))


def _silence_stdout() -> None:
    """Point stdout at the null device, so that the flush at exit raises nothing."""
    import os

    try:
        fileno = sys.stdout.fileno()
    except (OSError, ValueError, AttributeError):
        return
    os.dup2(os.open(os.devnull, os.O_WRONLY), fileno)


def _show_warning(message: Warning | str, *_: Any, **__: Any) -> None:
    """A warning as one line on stderr (no file name and source line of normlab's code)."""
    typer.echo(f"warning: {as_options(str(message))}", err=True)


def _paths_of(kwargs: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(outputs, inputs) among a command's arguments: inputs are the other existing paths."""
    import os

    outputs: list[str] = []
    inputs: list[str] = []
    for name, value in kwargs.items():
        values = value if isinstance(value, (list, tuple)) else [value]  # several DATA paths
        for item in values:
            if not isinstance(item, (str, os.PathLike)):
                continue
            path = os.fspath(item)
            if name in OUTPUT_PARAMETERS:
                outputs.append(path)
            elif path and os.path.lexists(path):
                inputs.append(path)
    return outputs, inputs


def console() -> Console:
    from rich.console import Console

    return Console()


AxisOpt = Annotated[str, typer.Option("--axis", help="feature (per pixel), channel or global.")]
LayoutOpt = Annotated[
    str | None,
    typer.Option(
        "--layout",
        help="Dimension letters of the samples, C for channels: HWC (default), CHW, NCHW.",
    ),
]
ChannelAxisOpt = Annotated[
    int | None,
    typer.Option(
        "--channel-axis", help="Deprecated: use --layout (0 is CHW, -1 HWC).", hidden=True
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
KeyOpt = Annotated[
    str | None,
    typer.Option("--key", help="Array in a .npz, Zarr group or HDF5 file; split of a dataset."),
]
# How to read the data (see `reads_data`).
GlobOpt = Annotated[
    str | None,
    typer.Option(
        "--glob", help="Image folder: only files matching this pattern (e.g. '**/*.png')."
    ),
]
ModeOpt = Annotated[
    str | None,
    typer.Option("--mode", help="Images: RGB, L or keep (default: all files must share one mode)."),
]
ResizeOpt = Annotated[
    tuple[int, int] | None,
    typer.Option("--resize", help="Images: resize to H W (per-pixel stats of mixed sizes)."),
]
InterpolationOpt = Annotated[
    str,
    typer.Option("--interpolation", help="nearest, bilinear, bicubic or lanczos (with --resize)."),
]
SkipBadOpt = Annotated[
    bool,
    typer.Option("--skip-bad", help="Skip unreadable images/items, list them, record the count."),
]
ColumnsOpt = Annotated[
    str | None,
    typer.Option(
        "--columns", help="Tables: the feature columns, e.g. a,b (default: every numeric)."
    ),
]
StorageOptionsOpt = Annotated[
    str | None,
    typer.Option(
        "--storage-options",
        help="URLs (s3://, gs://, ...): fsspec options as JSON, e.g. '{\"anon\": true}'.",
    ),
]
EngineOpt = Annotated[
    str,
    typer.Option(
        "--engine", help="serial, local (worker processes) or dask; all give the same bits."
    ),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        help="Processes of --engine local (default: one per core), or of a local Dask cluster.",
    ),
]
SchedulerOpt = Annotated[
    str | None,
    typer.Option(
        "--scheduler", help="Dask scheduler address, e.g. tcp://HOST:8786 (--engine dask)."
    ),
]


CheckpointOpt = Annotated[
    Path | None,
    typer.Option(
        "--checkpoint", help="Folder to save progress in; rerun the same command to resume."
    ),
]
CheckpointEveryOpt = Annotated[
    int | None,
    typer.Option("--checkpoint-every", help="Tasks between two checkpoint saves (default 10)."),
]
CheckpointKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--checkpoint-key",
        help="A name for data without an identity of its own, to allow a checkpoint.",
    ),
]
CheckpointFingerprintOpt = Annotated[
    str,
    typer.Option(
        "--checkpoint-fingerprint",
        help="How input files are recognised: auto, stat, sample or content.",
    ),
]


# Every command that reads a source (stats, fit, comoments, diagnose) takes these options, declared
# once here: `reads_data` adds them to the command, which receives them as one `reading` dict.
_READING: tuple[tuple[str, Any, Any], ...] = (
    ("key", KeyOpt, None),
    ("glob", GlobOpt, None),
    ("mode", ModeOpt, None),
    ("resize", ResizeOpt, None),
    ("interpolation", InterpolationOpt, "bilinear"),
    ("skip_bad", SkipBadOpt, False),
    ("columns", ColumnsOpt, None),
    ("storage_options", StorageOptionsOpt, None),
    ("engine", EngineOpt, "serial"),
    ("workers", WorkersOpt, None),
    ("scheduler", SchedulerOpt, None),
)
READING_OPTIONS: tuple[str, ...] = tuple(name for name, _, _ in _READING)


def reads_data(func: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command the reading options; it receives their keyword arguments as ``reading``.

    The command declares ``reading: dict[str, Any]``; its other parameters stay as they are.
    """
    signature = inspect.signature(func, eval_str=True)
    if "reading" not in signature.parameters:
        raise TypeError(f"{func.__name__} must take a `reading` parameter")
    own = [p for p in signature.parameters.values() if p.name != "reading"]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind)
        for name, kind, default in _READING
    ]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        given = {name: kwargs.pop(name) for name in READING_OPTIONS if name in kwargs}
        return func(*args, reading=reading_options(**given), **kwargs)

    wrapper.__signature__ = signature.replace(parameters=[*own, *added])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {
        **{k: v for k, v in func.__annotations__.items() if k != "reading"},
        **{name: kind for name, kind, _ in _READING},
    }
    return wrapper


def reading_options(
    *,
    key: str | None = None,
    glob: str | None = None,
    mode: str | None = None,
    resize: tuple[int, int] | None = None,
    interpolation: str = "bilinear",
    skip_bad: bool = False,
    columns: str | None = None,
    storage_options: str | None = None,
    engine: str = "serial",
    workers: int | None = None,
    scheduler: str | None = None,
) -> dict[str, Any]:
    """The keyword arguments of ``compute_stats`` (``compute_comoments``, ``diagnose``) that say
    how to read and where to run, from the command line's reading options."""
    given: dict[str, Any] = {
        "key": key,
        "glob": glob,
        "mode": mode,
        "resize": resize,
        "interpolation": interpolation,
        "columns": columns,
        "storage_options": _json_options(storage_options),
    }
    return {
        "skip_bad": skip_bad,
        "engine": engine,
        "workers": workers,
        "scheduler": scheduler,
        **{k: v for k, v in given.items() if v is not None},
    }


def _json_options(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        options = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NormlabError(f"--storage-options must be a JSON object; {exc}: {text!r}") from None
    if not isinstance(options, dict):
        raise NormlabError(f"--storage-options must be a JSON object ({{...}}); got {text!r}")
    return options


def data_argument(data: list[str]) -> str | list[str]:
    """One path or URL, or the list a shell glob expanded to (``data/*.parquet``)."""
    return data[0] if len(data) == 1 else data


def progress_flag(quiet: bool) -> bool | None:
    return False if quiet else None


@app.command()
@cli_errors
@reads_data
def stats(
    data: Annotated[
        list[str],
        typer.Argument(
            help="A .npy/.npz/.parquet file, an image folder or image file, a .txt list of "
            "image files, a Parquet folder or glob; local paths or URLs (s3://, gs://, ...)."
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to save the statistics.")],
    axis: AxisOpt = "feature",
    layout: LayoutOpt = None,
    channel_axis: ChannelAxisOpt = None,
    nan_policy: Annotated[str, typer.Option(help="raise or omit")] = "raise",
    quiet: QuietOpt = False,
    percentiles: Annotated[
        str | None,
        typer.Option(
            "--percentiles", help="Exact nearest-rank percentiles of 8/16-bit data, e.g. 0.5,99.5."
        ),
    ] = None,
    histogram: Annotated[
        str | None,
        typer.Option(
            "--histogram", help="Keep exact histograms: channel, global or feature (per pixel)."
        ),
    ] = None,
    per_image_std_average: Annotated[
        bool,
        typer.Option(
            "--per-image-std-average",
            help="Also report the average of per-image stds (the biased recipe), labelled as such.",
        ),
    ] = False,
    checkpoint: CheckpointOpt = None,
    checkpoint_every: CheckpointEveryOpt = None,
    checkpoint_key: CheckpointKeyOpt = None,
    checkpoint_fingerprint: CheckpointFingerprintOpt = "auto",
    *,
    reading: dict[str, Any],
) -> None:
    """Compute exact statistics of DATA and save them (safetensors + JSON metadata)."""
    from .display import stats_lines
    from .layout import check_granularity
    from .stats import compute_stats

    m = compute_stats(
        data_argument(data),
        check_granularity(axis),
        layout=layout,
        channel_axis=channel_axis,
        nan_policy=nan_policy,
        progress=progress_flag(quiet),
        histogram=histogram,
        percentiles=_percentile_list(percentiles),
        per_image_std_average=per_image_std_average,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        checkpoint_key=checkpoint_key,
        checkpoint_fingerprint=checkpoint_fingerprint,
        **reading,
    )
    lines = stats_lines(m)  # everything that may fail, before the write: a failure writes nothing
    m.save(output)
    print_lines(f"statistics of {' '.join(data)}\nsaved to {output}", lines)
    print_skipped(m)


def print_lines(title: str, lines: list[str]) -> None:
    """A title and lines of plain text (no table: values stay easy to copy)."""
    typer.echo(title)
    for line in lines:
        typer.echo(line)


def print_skipped(stats: Any) -> None:
    """List on stderr the items that ``--skip-bad`` skipped (statistics record them)."""
    for item in getattr(stats, "skipped", []):
        typer.echo(f"skipped {item['item']}: {item['reason']}", err=True)
    if getattr(stats, "n_skipped", 0) > len(getattr(stats, "skipped", [])):
        typer.echo(f"... {stats.n_skipped} skipped in all", err=True)


def _percentile_list(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise NormlabError(
            f"--percentiles takes numbers separated by commas (0.5,99.5); got {text!r}"
        ) from None


@app.command()
@cli_errors
def show(
    path: Annotated[Path, typer.Argument(help="A stats or normalizer file.")],
    format: Annotated[str, typer.Option("--format", help="table, json or torchvision.")] = "table",
) -> None:
    """Print a saved statistics file: a table, JSON, or torchvision's mean/std (0..1 scale)."""
    from .comoments import CoMoments
    from .display import comoments_lines, normalizer_lines, stats_lines
    from .export import to_torchvision
    from .io import json_text, load
    from .moments import Moments
    from .normalizers import Normalizer

    obj = load(path)
    if format not in ("table", "json", "torchvision"):
        raise NormlabError(f"--format must be table, json or torchvision; got {format!r}")
    held = obj if isinstance(obj, (Moments, CoMoments)) else getattr(obj, "stats_", None)
    stats = held.moments if isinstance(held, CoMoments) else held  # the per-feature moments
    if format == "torchvision":
        if stats is None:
            raise NormlabError(f"{path}: holds a {type(obj).__name__} without statistics")
        typer.echo(json_text(to_torchvision(stats)))
        return
    summary = held.summary() if held is not None else {}
    if obj is not held and hasattr(obj, "summary"):  # a normalizer: its own lines first
        summary = {**obj.summary(), **summary}
    if format == "json":
        if stats is not None:
            summary["mean"] = stats.mean.tolist()
            summary["std"] = stats.std().tolist()
            if stats.feature_names is not None:
                summary["feature_names"] = list(stats.feature_names)
        typer.echo(json_text(summary))
    elif isinstance(obj, Moments):
        print_lines(str(path), stats_lines(obj))
    elif isinstance(obj, Normalizer):
        print_lines(str(path), normalizer_lines(obj))
    elif isinstance(obj, CoMoments):
        print_lines(str(path), comoments_lines(obj))
    else:
        raise NormlabError(f"{path}: holds a {type(obj).__name__}, which `show` cannot print")


@app.command()
@cli_errors
@reads_data
def fit(
    data: Annotated[str | None, typer.Argument(help="Data to fit on (.npy/.npz/folder).")] = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to save the normalizer.")
    ] = Path("norm.safetensors"),
    scheme: Annotated[
        str | None,
        typer.Option(
            "--scheme",
            help="A scheme name (see `normlab schemes`) [default: the registry's default].",
        ),
    ] = None,
    stats_file: Annotated[
        Path | None, typer.Option("--stats", help="Fit from a saved stats file instead of data.")
    ] = None,
    layout: LayoutOpt = None,
    channel_axis: ChannelAxisOpt = None,
    axis: Annotated[
        str | None,
        typer.Option("--axis", help="minmax, maxabs, clip-percentile: feature, channel or global."),
    ] = None,
    std_floor: Annotated[
        float | None,
        typer.Option("--std-floor", help="z-scores: floor of the std, in data units."),
    ] = None,
    ddof: Annotated[
        int | None, typer.Option("--ddof", help="z-scores: delta degrees of freedom (0).")
    ] = None,
    max_value: Annotated[
        float | None,
        typer.Option("--max-value", help="max: divide by this (default: the dtype's maximum)."),
    ] = None,
    low: Annotated[
        float | None,
        typer.Option("--low", help="clip-percentile: the lower percentile, 0..100 (0.5)."),
    ] = None,
    high: Annotated[
        float | None,
        typer.Option("--high", help="clip-percentile: the upper percentile, 0..100 (99.5)."),
    ] = None,
    feature_range: Annotated[
        tuple[float, float] | None,
        typer.Option("--feature-range", help="minmax: map [min, max] onto LOW HIGH (0 1)."),
    ] = None,
    eps: Annotated[
        float | None,
        typer.Option("--eps", help="zca, pca: regularizer added to the eigenvalues (0.01)."),
    ] = None,
    eps_mode: Annotated[
        str | None,
        typer.Option("--eps-mode", help="zca, pca: relative (to the mean eigenvalue) or absolute."),
    ] = None,
    n_components: Annotated[
        int | None,
        typer.Option("--n-components", help="zca, pca: keep the largest components only."),
    ] = None,
    dtype: Annotated[
        str | None,
        typer.Option("--dtype", help="Output dtype: float32, float64 or float16."),
    ] = None,
    nan_policy: Annotated[
        str,
        typer.Option("--nan-policy", help="NaN/inf in DATA: raise, or omit them from the fit."),
    ] = "raise",
    quiet: QuietOpt = False,
    *,
    reading: dict[str, Any],
) -> None:
    """Fit a normalizer (one scheme) on DATA or on saved statistics, and save it."""
    from . import schemes
    from .comoments import CoMoments
    from .display import normalizer_lines
    from .io import load
    from .moments import Moments

    if (data is None) == (stats_file is None):
        raise NormlabError("give either DATA or --stats STATS_FILE (one of them)")
    if scheme is None:
        scheme = schemes.where(default=True)[0]
    entry = schemes.entry(scheme)
    given = {
        "axis": axis,
        "layout": layout,
        "std_floor": std_floor,
        "ddof": ddof,
        "max_value": max_value,
        "low": low,
        "high": high,
        "feature_range": feature_range,
        "eps": eps,
        "eps_mode": eps_mode,
        "n_components": n_components,
        "dtype": output_dtype(dtype),
    }
    normalizer = scheme_normalizer(scheme, {**given, "channel_axis": channel_axis})
    if normalizer.needs_fit:
        if stats_file is not None:
            stats = entry.statistics_from(load(stats_file))  # the layout comes from the file
            if not isinstance(stats, (Moments, CoMoments)):
                raise NormlabError(f"{stats_file}: holds a {type(stats).__name__}, not statistics")
        else:
            if "comoments" in entry.needs and nan_policy != "raise":
                raise NormlabError(
                    f"--nan-policy {nan_policy}: co-moments ({scheme}) need finite data; "
                    "clean the data first"
                )
            if "comoments" not in entry.needs:
                reading["nan_policy"] = nan_policy
            layout_options = {"layout": layout, "channel_axis": channel_axis}
            stats = entry.compute_statistics(
                normalizer,
                data,
                progress=progress_flag(quiet),
                **{k: v for k, v in layout_options.items() if v is not None},
                **reading,
            )
        print_skipped(stats)
        normalizer.fit_stats(stats)
    lines = normalizer_lines(normalizer)  # may fail: before the write, so a failure writes nothing
    normalizer.save(output)
    print_lines(f"fitted {scheme}\nsaved to {output}", lines)


# Every option of every scheme (the registry entry's) is an option of `fit` named after it
# (tests/test_cli_options.py checks that they never drift apart).
OUTPUT_DTYPES = ("float32", "float64", "float16")


def output_dtype(dtype: str | None) -> str | None:
    """``--dtype``: one of :data:`OUTPUT_DTYPES` (or None: the normalizer's default)."""
    if dtype is not None and dtype not in OUTPUT_DTYPES:
        raise NormlabError(f"--dtype must be one of {', '.join(OUTPUT_DTYPES)}; got {dtype!r}")
    return dtype


def scheme_parameters(scheme: str) -> list[str]:
    """The options of ``scheme`` that a user may set (the registry entry's)."""
    from . import schemes

    return list(schemes.entry(scheme).options)


def scheme_normalizer(scheme: str, given: dict[str, Any]) -> Any:
    """An unfitted normalizer of ``scheme`` with the options the user gave (None: not given).

    An option the scheme does not take, or one that turns it into another scheme
    (``--scheme feature --axis channel``), is refused with the options it does take.
    """
    from . import schemes

    accepted = scheme_parameters(scheme)
    chosen = {k: v for k, v in given.items() if v is not None}
    wrong = [k for k in chosen if k not in accepted]
    if wrong:
        takes = ", ".join(_flag(k) for k in accepted) or "no options"
        raise NormlabError(
            f"{', '.join(_flag(k) for k in wrong)}: not an option of scheme {scheme!r} "
            f"(it takes {takes})"
        )
    normalizer = schemes.get(scheme, **chosen)
    if normalizer.scheme != schemes.get(scheme).scheme:
        raise NormlabError(
            f"these options make scheme {scheme!r} into {normalizer.scheme!r}: use --scheme "
            f"{normalizer.scheme}"
        )
    return normalizer


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@app.command()
@cli_errors
def apply(
    data: Annotated[str, typer.Argument(help="A .npy/.npz file to normalize.")],
    normalizer_file: Annotated[
        Path, typer.Option("--normalizer", "-n", help="A saved normalizer.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="The .npy file to write.")],
    dtype: Annotated[
        str | None,
        typer.Option(
            "--dtype", help="Output dtype: float32, float64 or float16 (default: the normalizer's)."
        ),
    ] = None,
    chunk_size: Annotated[
        int | None,
        typer.Option("--chunk-size", help="Samples per window (default: about 32 MiB)."),
    ] = None,
    key: KeyOpt = None,
    nan_policy: Annotated[
        str,
        typer.Option(
            "--nan-policy",
            help="NaN/inf in DATA: raise (nothing is written), or propagate them to the output.",
        ),
    ] = "raise",
    quiet: QuietOpt = False,
) -> None:
    """Normalize DATA in windows (files larger than RAM work) and write it atomically."""
    from .apply import apply_file
    from .io import load
    from .normalizers import Normalizer

    normalizer = load(normalizer_file)
    if not isinstance(normalizer, Normalizer):
        raise NormlabError(
            f"{normalizer_file}: holds a {type(normalizer).__name__}, not a normalizer"
        )
    if dtype is not None:
        normalizer.dtype = output_dtype(dtype)
    shape = apply_file(
        normalizer,
        data,
        output,
        key=key,
        chunk_size=chunk_size,
        progress=progress_flag(quiet),
        nan_policy=nan_policy,
    )
    typer.echo(f"{normalizer.scheme}: {shape[0]} samples of shape {shape[1:]} -> {output}")


@app.command("schemes")
def list_schemes() -> None:
    """List the normalization schemes."""
    import textwrap

    from . import schemes

    for name, text in schemes.describe().items():
        line = f"{name:<16} {text}"
        typer.echo(textwrap.fill(line, 80, subsequent_indent=" " * 17, break_on_hyphens=False))
    roles = {
        "compared by `normlab compare` by default": schemes.where(in_default_set=True),
        "speed-ups are measured against": schemes.where(reference=True),
        "trained by `normlab diagnose --measure` by default": schemes.where(
            measured_by_default=True
        ),
        "fitted by `normlab fit` without --scheme": schemes.where(default=True),
    }
    typer.echo("")
    for role, names in roles.items():
        typer.echo(textwrap.fill(f"{role}: {', '.join(names)}", 80, subsequent_indent="  "))


@app.command()
@cli_errors
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the lab's report.")] = Path(
        "runs/demo"
    ),
    quick: Annotated[
        bool, typer.Option("--quick", help="Only the scheme table, no training.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the report files in an existing --out.")
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """On scikit-learn's digits: statistics once, every scheme from them, and what each does."""
    from .commands.demo import DIGITS_NOTE, digits_uint8, scheme_table

    x, _ = digits_uint8()
    console().print(
        scheme_table(
            x, title="digits (1797 x 8x8, uint8 0..16): every scheme from one pass of statistics"
        )
    )
    console().print(DIGITS_NOTE, markup=False)  # wrapped to the terminal
    if quick:
        return
    try:
        from .lab import demo_comparison
    except ImportError as exc:
        typer.echo(f"(the convergence lab is not available: {exc})")
        return
    report = demo_comparison(out, quiet=quiet, overwrite=overwrite)
    import json

    from .lab.report import verdict
    from .lab.runner import RESULTS_FILE

    results = json.loads((report.parent / RESULTS_FILE).read_text())
    for line in verdict(results):  # the answer: which scheme trained fastest, and why not others
        console().print(line, markup=False)  # wrapped to the terminal
    typer.echo(f"report: {report}")


for _module in COMMAND_MODULES:
    importlib.import_module(f"normlab.commands.{_module}").register(app)


def main() -> None:  # the console script
    app(prog_name="normlab")


if __name__ == "__main__":  # pragma: no cover
    # `python -m normlab.cli`: run the package's module, the one the commands import (their
    # messages read the running command from it), not this second copy named __main__
    from normlab.cli import main as package_main

    package_main()
