"""A batch of a table's columns held apart, as the reader decoded them.

Arrow decodes each column of a row group into its own buffer. Copying those into one
``(n, k)`` array cost more than the statistics themselves (a fresh 30 MB array a chunk is
page-faulted in each time), so a table source yields a :class:`ColumnBatch` instead:
:class:`~normlab.moments.Moments` reads its columns where they lie, and everything else sees
it as the ``(n, k)`` array it stands for (``np.asarray`` copies the columns into one).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import ShapeError


class ColumnBatch:
    """``n`` samples of ``k`` features given as ``k`` 1-D arrays of one dtype and length.

    Examples
    --------
    >>> batch = ColumnBatch([np.array([1.0, 2.0]), np.array([3.0, 4.0])])
    >>> batch.shape, len(batch), np.asarray(batch).tolist()
    ((2, 2), 2, [[1.0, 3.0], [2.0, 4.0]])
    """

    __slots__ = ("columns", "dtype", "shape")
    ndim = 2

    def __init__(self, columns: Sequence[np.ndarray]) -> None:
        if not columns:
            raise ShapeError("a column batch needs at least one column")
        self.columns = tuple(columns)
        self.dtype = self.columns[0].dtype
        n = len(self.columns[0])
        for column in self.columns:
            if column.ndim != 1 or len(column) != n or column.dtype != self.dtype:
                raise ShapeError(
                    f"columns of a batch need one length and dtype: {column.shape} "
                    f"{column.dtype} beside ({n},) {self.dtype}"
                )
        self.shape = (n, len(self.columns))

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.shape[1] * self.dtype.itemsize

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """The ``(n, k)`` array (column-major: each column is copied once, contiguously).
        ``copy=False`` (numpy's "never copy") raises: the columns are not one block."""
        if copy is False:
            raise ValueError("a ColumnBatch's columns are not one array: it cannot be viewed")
        out = np.empty(self.shape[::-1], dtype=dtype or self.dtype)
        for row, column in zip(out, self.columns, strict=True):
            row[...] = column
        return out.T

    def head(self) -> np.ndarray:
        """No rows, the batch's dtype and width: what shape and dtype checks read."""
        return np.empty((0, self.shape[1]), self.dtype)
