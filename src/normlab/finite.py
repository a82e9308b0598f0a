"""NaN and inf on the way through a normalizer: refused where they are, or passed on by choice.

Every ``transform``/``inverse_transform`` of a fitted normalizer takes ``nan_policy``:

- ``"raise"`` (the default): a NaN or ±inf in the input, or an output beyond the output dtype's
  range (inf after the rounding), raises :class:`~normlab.errors.NonFiniteError` naming the
  first row and position, the value, and how many there are in all;
- ``"propagate"``: a NaN input gives NaN and ±inf gives ±inf (an affine map keeps the sign;
  whitening spreads it over the sample's outputs), as numpy would. Outputs that overflow the
  output dtype from *finite* inputs still raise: they are never what the data said.

The check costs nothing on clean data for the affine schemes: their kernel flags rows with a
non-finite output while writing them, and only then is the input looked at.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import numpy as np

from .errors import NonFiniteError, NormlabError

NAN_POLICIES = ("raise", "propagate")

# (file, row of the window's first row) while a window of a file is transformed
_ROWS_OF: contextvars.ContextVar[tuple[str, int] | None] = contextvars.ContextVar(
    "normlab_rows_of", default=None
)


@contextlib.contextmanager
def rows_of(source: str, first_row: int) -> Iterator[None]:
    """Within this block the rows transformed are rows ``first_row, ...`` of the file
    ``source``: messages name the file and the row in it."""
    token = _ROWS_OF.set((source, first_row))
    try:
        yield
    finally:
        _ROWS_OF.reset(token)


def check_policy(nan_policy: object) -> str:
    """``nan_policy`` of a transform: one of :data:`NAN_POLICIES`."""
    if nan_policy not in NAN_POLICIES:
        raise NormlabError(
            f"nan_policy must be 'raise' or 'propagate' when transforming; got {nan_policy!r}"
        )
    return str(nan_policy)


def where(
    row: int,
    position: int,
    sample_shape: tuple[int, ...],
    names: list[str] | None = None,
    *,
    named: bool = True,
) -> str:
    """``row 7, column 1 (feature 'b')`` or ``row 3 at (0, 2, 1)`` for image-shaped samples;
    inside :func:`rows_of`, the row in the file (after the file's name unless not ``named``)."""
    located = _ROWS_OF.get()
    prefix = ""
    if located is not None:
        prefix, row = f"{located[0]}: " if named else "", located[1] + row
    if len(sample_shape) <= 1:
        text = f"{prefix}row {row}, column {position}"
        if names is not None and position < len(names):
            text += f" (feature {names[position]!r})"
        return text
    index = tuple(int(i) for i in np.unravel_index(position, sample_shape))
    return f"{prefix}row {row} at {index}"


def refuse_non_finite(
    flat: np.ndarray,
    sample_shape: tuple[int, ...],
    *,
    what: str = "X",
    names: list[str] | None = None,
) -> None:
    """Raise :class:`NonFiniteError` when ``flat`` (rows × values) holds NaN or ±inf."""
    if flat.dtype.kind != "f" or flat.size == 0:
        return
    bad = ~np.isfinite(flat)
    if not bad.any():
        return
    rows = np.flatnonzero(bad.any(axis=1))
    row = int(rows[0])
    position = int(np.argmax(bad[row]))
    value = flat[row, position]
    total = int(bad.sum())
    located = _ROWS_OF.get()
    if located is not None:  # one window of a file: its rows, not the file's count
        what = located[0]
        start = located[1]
        more = f"; {total} in rows {start}..{start + len(flat) - 1}"
    else:
        more = f"; {total} non-finite values in {len(rows)} rows in all" if total > 1 else ""
    raise NonFiniteError(
        f"{what} holds {value} at {where(row, position, sample_shape, names, named=False)}{more}"
        ". Clean the data, or pass nan_policy='propagate' to keep NaN/inf in the output"
    )


def refuse_overflow(
    bad: np.ndarray,
    sample_shape: tuple[int, ...],
    out_dtype: np.dtype,
    *,
    names: list[str] | None = None,
) -> None:
    """Raise when finite inputs gave outputs beyond ``out_dtype`` (``bad``: rows × values)."""
    if not bad.any():
        return
    rows = np.flatnonzero(bad.any(axis=1))
    row = int(rows[0])
    position = int(np.argmax(bad[row]))
    wider = "float64" if out_dtype != np.float64 else None
    fix = f"pass dtype='{wider}' or check the inputs" if wider else "check the inputs"
    raise NormlabError(
        f"{int(bad.sum())} output value(s) exceed the range of {out_dtype} (largest "
        f"{np.finfo(out_dtype).max:.4g}), the first at {where(row, position, sample_shape, names)}"
        f": the inputs lie far outside the data the normalizer was fitted on; {fix}"
    )


def check_output(
    x_flat: np.ndarray,
    out_flat: np.ndarray,
    sample_shape: tuple[int, ...],
    nan_policy: str,
    *,
    whole_sample: bool = False,
    what: str = "X",
    names: list[str] | None = None,
) -> None:
    """After a transform of rows ``x_flat`` into rows ``out_flat``: refuse non-finite inputs
    (``nan_policy="raise"``) and outputs that overflowed from finite inputs.

    ``whole_sample``: each output depends on the whole input row (whitening, per-image), so a
    non-finite input excuses every output of its row; otherwise output ``j`` comes from input
    ``j`` (same width).
    """
    with np.errstate(invalid="ignore"):
        out_ok = np.isfinite(out_flat)
    if out_ok.all():
        return
    if nan_policy == "raise":
        refuse_non_finite(x_flat, sample_shape, what=what, names=names)
    finite_in = np.ones((len(x_flat), 1), bool)
    if x_flat.dtype.kind == "f":
        finite_in = np.isfinite(x_flat)
        if whole_sample:
            finite_in = np.all(finite_in, axis=1, keepdims=True)
    if out_flat.shape != x_flat.shape:  # PCA: components, not the input's features
        sample_shape, names = (out_flat.shape[1],), None
    refuse_overflow(~out_ok & finite_in, sample_shape, out_flat.dtype, names=names)
