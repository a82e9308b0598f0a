"""``normlab export``: a saved normalizer in another framework's terms (no pickle anywhere)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import NormlabError

TARGETS = ("sklearn", "torch", "keras", "torchvision", "json")
SINGLE_FILE_TARGETS = ("torchvision", "json")  # the others write a loading snippet beside

TORCH_SNIPPET = """\
# Load the normalization exported by normlab: a safetensors state dict (no pickle).
import json
from pathlib import Path

import torch
from safetensors import safe_open

PATH = Path(__file__).resolve().with_name({path!r})  # the file beside this snippet
with safe_open(PATH, framework="pt") as f:
    config = json.loads(f.metadata()["normlab_torch_normalize"])  # layout, value_max
    state = {{name: f.get_tensor(name) for name in f.keys()}}  # "mean", "std" (float64)
# the input's features in order (table columns; None: unnamed)
FEATURE_NAMES = {names!r}

# With normlab installed (fused uint8 -> float32 apply, torch.export-able):
#     from normlab.torch import Normalize
#     normalize = Normalize.from_file(PATH)
# Without normlab, the same numbers:
layout, value_max = config["layout"], config["value_max"]  # {layout!r}, {value_max!r}
mean, std = state["mean"], state["std"]
if layout == "CHW" and mean.ndim == 1:  # one value per channel, channels first
    mean, std = mean[:, None, None], std[:, None, None]


def normalize(x: torch.Tensor) -> torch.Tensor:
    if not x.dtype.is_floating_point:
        x = x.float() / value_max
    return ((x - mean) / std).to(x.dtype)
"""

TORCH_WHITENING_SNIPPET = """\
# Load the {method} whitening exported by normlab: a safetensors state dict (no pickle).
import json
from pathlib import Path

import torch
from safetensors import safe_open

PATH = Path(__file__).resolve().with_name({path!r})  # the file beside this snippet
with safe_open(PATH, framework="pt") as f:
    config = json.loads(f.metadata()["normlab_torch_whitening"])  # sample_shape, method, ...
    state = {{name: f.get_tensor(name) for name in f.keys()}}  # "mean", "linear.weight"
# the input's features in order (table columns; None: unnamed)
FEATURE_NAMES = {names!r}

# With normlab installed (fused uint8 -> float32 apply):
#     from normlab.torch import Whitening
#     whiten = Whitening.from_file(PATH)
# Without normlab, the same numbers: y = W (x - mean) per flattened sample
shape, value_max = tuple(config["sample_shape"]), config["value_max"]  # {shape!r}, {value_max!r}
mean, weight = state["mean"], state["linear.weight"].to(torch.float64)


def whiten(x: torch.Tensor) -> torch.Tensor:
    if not x.dtype.is_floating_point:
        x = x.to(torch.float64) / value_max  # integer input (uint8 images) onto the 0..1 scale
    batch = x.shape[: x.ndim - len(shape)]
    y = (x.reshape(*batch, -1).to(torch.float64) - mean) @ weight.T
    return (y.reshape(*batch, *shape) if config["method"] == "zca" else y).float()
"""

KERAS_SNIPPET = """\
# Build the Keras layer exported by normlab (KERAS_BACKEND as you use it).
import json
from pathlib import Path

import keras
import numpy as np

with open(Path(__file__).resolve().with_name({path!r})) as f:  # the file beside this snippet
    spec = json.load(f)
# the input's features in order (table columns; None: unnamed)
FEATURE_NAMES = {names!r}
if spec.get("kind") != "whitening":  # an affine scheme: one Normalization layer
    if isinstance(spec["axis"], list):
        spec["axis"] = tuple(spec["axis"])
    layer = keras.layers.Normalization(**spec)
else:  # ZCA/PCA: y = matrix @ (x - mean) per flattened sample
    shape = tuple(spec["sample_shape"])
    mean, matrix = np.asarray(spec["mean"]), np.asarray(spec["matrix"])
    dense = keras.layers.Dense(matrix.shape[0], use_bias=False)
    layer = keras.Sequential(
        [
            keras.Input(shape=shape),
            keras.layers.Reshape((mean.size,)),
            keras.layers.Normalization(mean=mean, variance=np.ones_like(mean)),
            dense,
            *([keras.layers.Reshape(shape)] if spec["method"] == "zca" else []),
        ]
    )
    dense.set_weights([matrix.T])
"""


def snippet_path(output: Path) -> Path:
    """``load_<name>_normalizer.py`` beside ``output``: a module name no package has.

    Naming it after the output (``keras.json`` → ``keras.py``) shadowed the very package it
    imports, for the snippet and for every script run from that folder.
    """
    if output.suffix == ".py":
        raise NormlabError(
            f"{output}: the output is data; its loading snippet goes beside it as "
            f"{_snippet_name(output)}"
        )
    return output.with_name(_snippet_name(output))


def _snippet_name(output: Path) -> str:
    stem = re.sub(r"\W", "_", output.stem).strip("_").lower() or "exported"
    return f"load_{stem}_normalizer.py"


def _write_text(path: Path, text: str) -> None:
    from ..io import atomic_write

    with atomic_write(path, "w") as handle:
        handle.write(text)


def _write_json(path: Path, data: Any) -> None:
    _write_text(path, json.dumps(data, indent=1, allow_nan=False) + "\n")


def export_file(
    normalizer_file: Path,
    target: str,
    output: Path,
    *,
    layout: str | None = None,
    scale: str | None = None,
) -> list[Path]:
    """Export a saved normalizer to ``target``; returns the paths written.

    Every path is checked before anything is written, and the data file and its loading
    snippet appear together or not at all (:func:`normlab.io.written_together`).
    """
    from ..io import check_destination, written_together

    if target not in TARGETS:
        raise NormlabError(f"--to must be one of {', '.join(TARGETS)}; got {target!r}")
    paths = output_paths(target, output)
    for path in paths:
        check_destination(path)
    with written_together():
        _export(normalizer_file, target, output, layout=layout, scale=scale)
    return paths


def output_paths(target: str, output: Path) -> list[Path]:
    """The files ``export --to target -o output`` writes: the data, and a loading snippet."""
    return [output] if target in SINGLE_FILE_TARGETS else [output, snippet_path(output)]


def _export(
    normalizer_file: Path,
    target: str,
    output: Path,
    *,
    layout: str | None,
    scale: str | None,
) -> None:
    from .. import export
    from ..io import load
    from ..whitening import Whiten

    normalizer = load(normalizer_file)
    names = export.feature_names_of(normalizer)
    if target == "sklearn":
        _write_json(output, export.sklearn_state(export.to_sklearn(normalizer)))
        _write_text(snippet_path(output), export.SKLEARN_SNIPPET.format(path=output.name))
    elif target == "torch":
        module = export.to_torch(normalizer, layout=layout)
        module.save(output)
        if isinstance(normalizer, Whiten):
            text = TORCH_WHITENING_SNIPPET.format(
                path=output.name,
                names=names,
                method=module.method,
                shape=module.sample_shape,
                value_max=module.value_max,
            )
        else:
            text = TORCH_SNIPPET.format(
                path=output.name, layout=module.layout, value_max=module.value_max, names=names
            )
        _write_text(snippet_path(output), text)
    elif target == "keras":
        _write_json(output, export.to_keras(normalizer, scale=scale))
        _write_text(snippet_path(output), KERAS_SNIPPET.format(path=output.name, names=names))
    elif target == "torchvision":
        _write_json(output, export.to_torchvision(normalizer, scale=scale or "0..1"))
    else:
        _write_json(output, export.to_json(normalizer))


def register(app: typer.Typer) -> None:
    from ..cli import cli_errors  # here, not at the top: cli imports this module while it loads

    @app.command("export")
    @cli_errors
    def export_command(
        normalizer_file: Annotated[
            Path, typer.Argument(help="A normalizer saved by `normlab fit`.")
        ],
        target: Annotated[
            str, typer.Option("--to", help="sklearn, torch, keras, torchvision or json.")
        ],
        output: Annotated[
            Path,
            typer.Option(
                "--output",
                "-o",
                help="The file to write (a loading snippet goes beside it as .py).",
            ),
        ],
        layout: Annotated[
            str | None, typer.Option(help="torch: CHW, HWC, HW or F (default: as fitted).")
        ] = None,
        scale: Annotated[
            str | None,
            typer.Option(
                help="torchvision: 0..1 (ToTensor's, the default) or 0..255; keras: the scale "
                "the layer is fed, 0..1 after Rescaling(1/255) (default: the data's units)."
            ),
        ] = None,
    ) -> None:
        """Write NORMALIZER_FILE for scikit-learn, PyTorch, Keras, torchvision or as plain JSON."""
        from ..io import refuse_overwrite

        if target in TARGETS:
            refuse_overwrite(output_paths(target, output), [normalizer_file])
        for path in export_file(normalizer_file, target, output, layout=layout, scale=scale):
            typer.echo(f"{target}: {path}")
