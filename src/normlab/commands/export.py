"""``normlab export``: a saved normalizer in another framework's terms (no pickle anywhere)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..errors import NormlabError

TARGETS = ("sklearn", "torch", "keras", "torchvision", "json")

TORCH_SNIPPET = """\
# Load the normalization exported by normlab: a safetensors state dict (no pickle).
import json

import torch
from safetensors import safe_open

PATH = {path!r}
with safe_open(PATH, framework="pt") as f:
    config = json.loads(f.metadata()["normlab_torch_normalize"])  # layout, value_max
    state = {{name: f.get_tensor(name) for name in f.keys()}}  # "mean", "std" (float64)

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

KERAS_SNIPPET = """\
# Build the keras.layers.Normalization exported by normlab.
import json

import keras

with open({path!r}) as f:
    kwargs = json.load(f)
if isinstance(kwargs["axis"], list):
    kwargs["axis"] = tuple(kwargs["axis"])
layer = keras.layers.Normalization(**kwargs)
"""


def snippet_path(output: Path) -> Path:
    if output.suffix == ".py":
        raise NormlabError(
            f"{output}: the output is data; its loading snippet goes beside it as .py"
        )
    return output.with_suffix(".py")


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
    scale: str = "0..1",
) -> list[Path]:
    """Export a saved normalizer to ``target``; returns the paths written."""
    from .. import export
    from ..io import load

    if target not in TARGETS:
        raise NormlabError(f"--to must be one of {', '.join(TARGETS)}; got {target!r}")
    normalizer = load(normalizer_file)
    written = [output]
    if target == "sklearn":
        _write_json(output, export.sklearn_state(export.to_sklearn(normalizer)))
        written.append(snippet_path(output))
        _write_text(written[1], export.SKLEARN_SNIPPET.format(path=output.name))
    elif target == "torch":
        module = export.to_torch(normalizer, layout=layout)
        module.save(output)
        written.append(snippet_path(output))
        _write_text(
            written[1],
            TORCH_SNIPPET.format(
                path=output.name, layout=module.layout, value_max=module.value_max
            ),
        )
    elif target == "keras":
        _write_json(output, export.to_keras(normalizer))
        written.append(snippet_path(output))
        _write_text(written[1], KERAS_SNIPPET.format(path=output.name))
    elif target == "torchvision":
        _write_json(output, export.to_torchvision(normalizer, scale=scale))
    else:
        _write_json(output, export.to_json(normalizer))
    return written


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
            Optional[str], typer.Option(help="torch: CHW, HWC, HW or F (default: as fitted).")
        ] = None,
        scale: Annotated[
            str, typer.Option(help="torchvision: 0..1 (ToTensor's) or 0..255.")
        ] = "0..1",
    ) -> None:
        """Write NORMALIZER_FILE for scikit-learn, PyTorch, Keras, torchvision or as plain JSON."""
        from ..io import refuse_overwrite

        if target != "torchvision" and output.suffix != ".py":
            refuse_overwrite([snippet_path(output)], [normalizer_file])
        for path in export_file(normalizer_file, target, output, layout=layout, scale=scale):
            typer.echo(f"{target}: {path}")
