"""``compute_stats``: one call from any source to exact :class:`~normlab.Moments`."""

from __future__ import annotations

from typing import Any

from .engines import run_tasks
from .errors import EmptyDataError
from .moments import Axis, Moments
from .sources import resolve


def compute_stats(
    source: Any,
    axis: Axis = "feature",
    *,
    channel_axis: int = -1,
    nan_policy: str = "raise",
    key: str | None = None,
    chunk_size: int | None = None,
    progress: bool | None = None,
    engine: str = "serial",
    workers: int | None = None,
    scheduler: Any = None,
    **source_options: Any,
) -> Moments:
    """Exact statistics of a whole data set, streamed chunk by chunk.

    Parameters
    ----------
    source
        An ndarray or tensor ``(n, *sample_shape)``, a ``.npy`` path (read in windows, never
        loaded whole), a ``.npz`` path (``key=`` names the array), a list of such paths, or an
        iterable of batches (``(inputs, labels)`` pairs take the inputs).
    axis, channel_axis, nan_policy
        As for :class:`~normlab.Moments`.
    chunk_size
        Samples per chunk (default: about 32 MiB of data).
    progress
        Show a progress bar (default: only on a terminal).
    engine, workers, scheduler
        Where tasks run; every engine gives the same bits.

    Examples
    --------
    >>> import numpy as np, normlab
    >>> x = np.random.default_rng(0).integers(0, 256, (100, 4, 4, 3), dtype=np.uint8)
    >>> m = normlab.compute_stats(x, axis="channel", chunk_size=7)
    >>> bool(np.array_equal(m.mean, x.reshape(-1, 3).mean(axis=0)))
    True
    """
    src = resolve(source, key=key, chunk_size=chunk_size, **source_options)

    def make_empty() -> Moments:
        return Moments(axis, channel_axis=channel_axis, nan_policy=nan_policy)

    stats = run_tasks(
        src.tasks, make_empty, engine=engine, workers=workers, scheduler=scheduler, progress=progress
    )
    if stats.n_samples_seen == 0:
        raise EmptyDataError(f"{src.description}: no samples")
    return stats
