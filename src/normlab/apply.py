"""Apply a fitted normalizer to a ``.npy`` file in windows: memory stays one window."""

from __future__ import annotations

import os

import numpy as np

from .errors import NormlabError
from .io import atomic_write, reading, refuse_overwrite
from .normalizers import Normalizer
from .progress import progress_bar
from .sources import resolve


def apply_file(
    normalizer: Normalizer,
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    chunk_size: int | None = None,
    progress: bool | None = None,
    key: str | None = None,
    nan_policy: str = "raise",
) -> tuple[int, ...]:
    """Normalize ``source`` (``.npy``/``.npz``) into the ``.npy`` file ``output``, atomically.

    Reads and writes one window at a time, so a file larger than RAM works. Returns the
    output's shape. A NaN/inf in ``source`` raises :class:`~normlab.errors.NonFiniteError`
    naming the file, row and column, and nothing is written; ``nan_policy="propagate"`` keeps
    them in the output (see :meth:`Normalizer.transform`). Outputs beyond the output dtype
    raise either way.
    """
    from .finite import check_policy
    from .validate import optional_integer, path_like

    if not isinstance(normalizer, Normalizer):
        raise NormlabError(f"normalizer must be a fitted normlab normalizer; got {normalizer!r}")
    path_like("source", source)
    path_like("output", output)
    optional_integer("chunk_size", chunk_size, minimum=1)
    nan_policy = check_policy(nan_policy)
    refuse_overwrite([output], [source])
    with reading(source):
        return _apply_file(normalizer, source, output, chunk_size, progress, key, nan_policy)


def _apply_file(
    normalizer: Normalizer,
    source: str | os.PathLike,
    output: str | os.PathLike,
    chunk_size: int | None,
    progress: bool | None,
    key: str | None,
    nan_policy: str,
) -> tuple[int, ...]:
    src = resolve(source, chunk_size=chunk_size, key=key)
    shape = tuple(src.info.get("shape", ()))
    in_dtype = np.dtype(src.info.get("dtype", "float64"))
    if not shape:
        raise NormlabError(f"{source}: apply needs an array file (.npy or .npz)")
    out_dtype = normalizer.output_dtype(np.empty(0, in_dtype))
    header = {
        "descr": np.lib.format.dtype_to_descr(out_dtype),
        "fortran_order": False,
        "shape": shape,
    }
    written = 0
    with (
        atomic_write(output) as handle,
        progress_bar(shape[0], "apply", enabled=progress) as advance,
    ):
        np.lib.format.write_array_header_2_0(handle, header)
        for task in src.tasks:
            for chunk in task.chunks():
                out = _transform(normalizer, chunk, nan_policy, source, first_row=written)
                handle.write(np.ascontiguousarray(out, dtype=out_dtype).tobytes())
                written += out.shape[0]
                advance(out.shape[0])
        if written != shape[0]:
            raise NormlabError(f"{source}: read {written} of {shape[0]} samples")
    return shape


def _transform(
    normalizer: Normalizer,
    chunk: np.ndarray,
    nan_policy: str,
    source: str | os.PathLike,
    *,
    first_row: int,
) -> np.ndarray:
    """``normalizer.transform(chunk)``; an error about a row names the file and the row in it."""
    from .finite import rows_of

    with rows_of(os.fspath(source), first_row):
        return normalizer.transform(chunk, nan_policy=nan_policy)
