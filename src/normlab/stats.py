"""``compute_stats``: one call from any source to exact :class:`~normlab.Moments`."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .engines import run
from .errors import EmptyDataError, NormlabError, ShapeError
from .layout import Layout
from .moments import Axis, Moments
from .sources import Source, resolve


def compute_stats(
    source: Any,
    axis: Axis = "feature",
    *,
    layout: str | Layout | None = None,
    channel_axis: int | None = None,
    nan_policy: str = "raise",
    key: str | None = None,
    histogram: bool | str | None = None,
    percentiles: Any = None,
    per_image_std_average: bool = False,
    chunk_size: int | None = None,
    progress: bool | None = None,
    engine: str = "serial",
    workers: int | None = None,
    scheduler: Any = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    checkpoint_key: str | None = None,
    checkpoint_fingerprint: str = "auto",
    sample_weight: Any = None,
    **source_options: Any,
) -> Moments:
    """Exact statistics of a whole data set, streamed chunk by chunk.

    Parameters
    ----------
    source
        An ndarray or tensor ``(n, *sample_shape)``, a ``.npy`` path (read in windows, never
        loaded whole), a ``.npz`` path (``key=`` names the array), a list of such paths, or an
        iterable of batches (``(inputs, labels)`` pairs take the inputs).
        Also an image folder, a list of image files or a ``.txt`` list of them, and a PyTorch
        ``Dataset``/``IterableDataset``/``DataLoader`` (see :mod:`normlab.sources.images` and
        :mod:`normlab.sources.torch`).
    axis, layout, nan_policy
        As for :class:`~normlab.Moments`. ``layout`` (``"HWC"``, ``"CHW"``, ``"NCHW"``, ...)
        defaults to channels last, except for PyTorch inputs with ``axis="channel"``: there it
        must be given (``"CHW"`` for the usual tensors). ``channel_axis`` is its deprecated
        spelling.
    histogram
        Keep exact value counts of uint8/uint16 data: ``True`` or ``"channel"``, ``"global"``,
        ``"feature"`` (per pixel; large). The result is an :class:`~normlab.imagestats.ImageStats`.
    percentiles
        Percentiles to report, e.g. ``(0.5, 99.5)``: exact, nearest rank (implies ``histogram``).
    per_image_std_average
        Also keep the average of per-image stds (the common biased recipe), for comparison.
    source_options
        Image folders: ``glob``, ``mode`` ("RGB", "L", "keep"), ``resize=(H, W)``,
        ``interpolation``; images and datasets: ``skip_bad`` (skip and list unreadable items).
    chunk_size
        Samples per chunk (default: about 32 MiB of data).
    progress
        Show a progress bar (default: only on a terminal).
    engine, workers, scheduler
        Where tasks run: ``"serial"`` (this process), ``"local"`` (``workers`` processes,
        default: one per core) or ``"dask"`` (``scheduler``: an address such as
        ``"tcp://host:8786"``, a ``distributed.Client``, or None for a local cluster). Every
        engine and worker count gives the same bits.
    checkpoint, checkpoint_every
        A folder where the merged state and the finished tasks are saved every
        ``checkpoint_every`` tasks (default 10). Rerun with the same arguments to resume;
        a checkpoint made for other inputs or options is refused.
    checkpoint_key, checkpoint_fingerprint
        ``checkpoint_key`` names data that has no identity of its own (a generator, an
        iterable of batches, a PyTorch dataset): without it such inputs cannot be
        checkpointed. ``checkpoint_fingerprint``: how files are recognised — ``"stat"``
        (size and modification time), ``"sample"`` (also a hash of 17 blocks),
        ``"content"`` (a hash of every byte) or ``"auto"`` (sample up to 1000 files).
    sample_weight
        One weight ≥ 0 per sample, in the order the source yields them (see
        :meth:`Moments.update`): whole-number weights keep integer data exact. Weighted
        statistics run on the serial engine, without checkpoints or histograms.

    Examples
    --------
    >>> import numpy as np, normlab
    >>> x = np.random.default_rng(0).integers(0, 256, (100, 4, 4, 3), dtype=np.uint8)
    >>> m = normlab.compute_stats(x, axis="channel", chunk_size=7)
    >>> bool(np.array_equal(m.mean, x.reshape(-1, 3).mean(axis=0)))
    True
    """
    from .validate import run_options

    run_options(
        chunk_size=chunk_size,
        workers=workers,
        engine=engine,
        scheduler=scheduler,
        channel_axis=channel_axis,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        key=key,
    )
    quantiles = _check_percentiles(percentiles)
    if checkpoint is not None and isinstance(source, (str, os.PathLike)):
        from .io import refuse_overwrite

        refuse_overwrite([checkpoint], [source])
    lay = Layout.parse(axis, layout=layout, channel_axis=channel_axis)
    src = resolve(source, key=key, chunk_size=chunk_size, **source_options)
    _check_layout_given(src, lay, layout, channel_axis)
    if sample_weight is not None:
        refused = [
            name
            for name, used in (
                ("engine", engine != "serial"),
                ("checkpoint", checkpoint is not None),
                ("histogram", bool(histogram or quantiles or per_image_std_average)),
            )
            if used
        ]
        if refused:
            raise NormlabError(
                f"sample_weight works with the serial engine and plain Moments; drop "
                f"{', '.join(refused)} or compute unweighted statistics"
            )
        return _weighted(src, sample_weight, lay, nan_policy)
    extras = bool(histogram or quantiles or per_image_std_average)
    if src.parts and axis == "feature" and not extras:  # integer and float columns read apart
        from .sources.tables import join_columns

        each = [
            compute_stats(
                part,
                axis,
                nan_policy=nan_policy,
                progress=progress,
                engine=engine,
                workers=workers,
                scheduler=scheduler,
                checkpoint=None if checkpoint is None else Path(checkpoint) / f"columns-{k}",
                checkpoint_every=checkpoint_every,
            )
            for k, part in enumerate(src.parts)
        ]
        joined = join_columns(each, [part.info["positions"] for part in src.parts])
        joined.feature_names = src.info.get("feature_names")
        return joined
    make_empty: Callable[[], Moments]
    if extras:
        from .imagestats import ImageStats

        make_empty = functools.partial(
            ImageStats,
            axis,
            layout=lay,
            nan_policy=nan_policy,
            histogram=histogram or bool(quantiles),
            per_image_std_average=per_image_std_average,
        )
    else:  # a partial, not a closure: the local and Dask engines pickle it
        make_empty = functools.partial(Moments, axis, layout=lay, nan_policy=nan_policy)

    result = run(
        src.tasks,
        make_empty,
        engine=engine,
        workers=workers,
        scheduler=scheduler,
        progress=progress,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        checkpoint_key=checkpoint_key,
        checkpoint_fingerprint=checkpoint_fingerprint,
    )
    stats, record = result.nonempty(src.description).stats, result.provenance
    stats.feature_names = _names(src, stats.sample_shape)
    if extras or not record.empty:  # what the source recorded travels with the result
        from .imagestats import ImageStats

        stats = ImageStats.of(stats, record)
        stats.source = src.description
        stats.requested_percentiles = quantiles
    return stats


def _names(src: Source, sample_shape: tuple[int, ...] | None) -> list[str] | None:
    """The source's feature names (table columns), checked against the samples' shape."""
    from .moments import check_feature_names

    return check_feature_names(src.info.get("feature_names"), sample_shape)


def _weighted(src: Any, sample_weight: Any, lay: Layout, nan_policy: str) -> Moments:
    """Weighted statistics: the source's chunks in order, each with its slice of the weights."""
    weights = np.asarray(sample_weight)
    if weights.ndim != 1:
        raise ShapeError(f"sample_weight has shape {weights.shape}; expected one weight per sample")
    stats = Moments(lay.granularity, layout=lay, nan_policy=nan_policy)
    offset = 0
    for task in src.tasks:
        for chunk in task.chunks():
            n = len(chunk)
            if offset + n > len(weights):
                raise ShapeError(
                    f"{src.description}: more samples than the {len(weights)} sample weights"
                )
            stats.update(chunk, sample_weight=weights[offset : offset + n])
            offset += n
    if offset != len(weights):
        raise ShapeError(
            f"{src.description}: {offset} samples but {len(weights)} sample weights; pass one "
            "weight per sample"
        )
    if stats.n_samples_seen == 0:
        raise EmptyDataError(f"{src.description}: no samples of positive weight")
    stats.feature_names = _names(src, stats.sample_shape)
    return stats


def _check_layout_given(src: Source, lay: Layout, layout: Any, channel_axis: int | None) -> None:
    """Sources whose samples may be CHW or HWC (PyTorch) need the layout said, not guessed."""
    if lay.granularity == "channel" and layout is None and channel_axis is None:
        if src.info.get("needs_layout"):
            raise ShapeError(
                f"{src.description}: PyTorch samples are usually CHW but may be HWC; pass "
                "layout='CHW' (formerly channel_axis=0) or layout='HWC' for per-channel "
                "statistics"
            )


def _check_percentiles(percentiles: Any) -> list[float]:
    """Percentiles as floats in [0, 100], checked before the pass over the data."""
    if percentiles is None:
        return []
    if isinstance(percentiles, (int, float)):
        percentiles = [percentiles]
    try:
        values = [float(q) for q in percentiles]
    except (TypeError, ValueError):
        raise NormlabError(
            f"percentiles must be numbers in [0, 100]; got {percentiles!r}"
        ) from None
    bad = [q for q in values if not 0 <= q <= 100]
    if bad:
        raise NormlabError(f"percentiles must lie in [0, 100]; got {bad}")
    return values
