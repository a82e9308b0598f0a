"""Numbers for people: statistics and fitted normalizers as short lines of text.

Nothing here prints; the command line prints these lines and ``repr`` uses :func:`numpy_text`.
Per-channel and global values are shown in data units and on the 0..1 scale of the value scale
(uint8 data divided by 255), the form torchvision, albumentations and Keras take; per-feature
values as a range with where its extremes are.

>>> import numpy as np
>>> array_text(np.array([0.48512, 0.456, 0.40649]))
'[0.485, 0.456, 0.406]'
>>> array_text(np.arange(100.0) / 8)
'[0.000, 0.125, 0.250, ..., 12.125, 12.250, 12.375]'
>>> paste_tuple(np.array([0.48512, 0.456, 0.40649]))
'(0.485, 0.456, 0.406)'
"""

from __future__ import annotations

import textwrap
from typing import Any

import numpy as np

SHOWN_VALUES = 8  # arrays with more values are abbreviated (numpy's style: first 3 ... last 3)
SHOWN_PLACES = 5  # locations listed for constant/rare features
SHOWN_ROWS = 40  # named features (table columns) listed one per line
NAME_WIDTH = 24  # longer names are cut to this many characters in those lines
LINE_WIDTH = 80
LABEL_WIDTH = 13


def _is_integral(arr: np.ndarray) -> bool:
    finite = arr[np.isfinite(arr)]
    return bool(arr.dtype.kind in "iub" or (finite.size and np.all(finite == np.round(finite))))


def number_text(value: float, decimals: int = 3, integral: bool = False) -> str:
    """One value: ``decimals`` places, an integer as an integer, very large/small ones in e-form."""
    value = float(value)
    if not np.isfinite(value):
        return str(value)
    if integral and value == round(value) and abs(value) < 1e15:
        return str(int(value))
    if value != 0 and not 10.0**-decimals <= abs(value) < 1e9:
        return f"{value:.{decimals}e}"
    return f"{value:.{decimals}f}"


def array_text(values: Any, decimals: int = 3, width: int | None = None) -> str:
    """numpy's style, one line: ``[a, b, c]``, abbreviated to ``[a, b, c, ..., x, y, z]``.

    Integral values (exact integer data's min/max) show no decimals. Multi-dimensional arrays
    are shown flat (their shape is given beside them).
    """
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    integral = _is_integral(arr)
    texts = [number_text(v, decimals, integral) for v in arr]
    if len(texts) > SHOWN_VALUES:
        texts = [*texts[:3], "...", *texts[-3:]]
    text = "[" + ", ".join(texts) + "]"
    if width is not None and len(text) > width:
        return "\n".join(textwrap.wrap(text, width, subsequent_indent=" "))
    return text


def numpy_text(values: Any) -> str:
    """numpy's own style (4 decimals, abbreviated when large), flat and on one line, for ``repr``.

    >>> numpy_text(np.array([[0.5, 0.25], [0.125, 1e-6]]))
    '[5.00e-01, 2.50e-01, 1.25e-01, 1.00e-06]'
    """
    arr = np.asarray(values).reshape(-1)
    return np.array2string(
        arr, precision=4, separator=", ", threshold=SHOWN_VALUES, edgeitems=3, max_line_width=10**6
    )


def paste_tuple(values: Any, decimals: int = 3) -> str:
    """A Python tuple of every value: ``(0.485, 0.456, 0.406)`` (``(0.5,)`` for one value)."""
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    texts = [number_text(v, decimals) for v in arr]
    return "(" + ", ".join(texts) + ("," if len(texts) == 1 else "") + ")"


def scale_text(value_scale: dict[str, Any] | None) -> str:
    """``uint8 0..255``, or ``float (no fixed range)``."""
    if not value_scale or value_scale.get("max_value") is None:
        return "float (no fixed range)"
    return f"{value_scale['dtype']} {value_scale['min_value']}..{value_scale['max_value']}"


def _where(flat_index: int, shape: tuple[int, ...], names: list[str] | None = None) -> str:
    if names is not None:
        return label_text(names[flat_index])
    if len(shape) <= 1:
        return str(flat_index)
    return str(tuple(int(i) for i in np.unravel_index(flat_index, shape)))


def _places(mask: np.ndarray, shape: tuple[int, ...], names: list[str] | None = None) -> str:
    idx = np.flatnonzero(mask.reshape(-1))
    shown = ", ".join(_where(int(i), shape, names) for i in idx[:SHOWN_PLACES])
    more = ", ..." if idx.size > SHOWN_PLACES else ""
    return f" at {shown}{more}" if idx.size else ""


def label_text(name: str, width: int | None = None) -> str:
    """A column name for one line of text: unprintable characters as ``?``; longer than
    ``width``, its middle becomes ``~`` (names of one table often differ at the end only)."""
    text = "".join(ch if ch.isprintable() else "?" for ch in name)
    if width is not None and len(text) > width:
        head = (width - 1) // 2
        return text[:head] + "~" + text[len(text) - (width - 1 - head) :]
    return text


def distinct_labels(names: list[str], width: int) -> list[str]:
    """:func:`label_text` of each name, cut to ``width``; names that would still read the same
    (or that read like another's label) are told apart by their column number (``#12 a~z``)."""
    labels = [label_text(name, width) for name in names]
    seen: dict[str, int] = {}
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
    out = []
    for i, (name, label) in enumerate(zip(names, labels, strict=True)):
        if seen[label] > 1:
            tag = f"#{i} "
            label = tag + label_text(name, max(3, width - len(tag)))
        out.append(label)
    return out


def named_rows(names: list[str], columns: dict[str, Any]) -> list[str]:
    """One line per feature, labelled by its name: ``price  2.932  1.988 ...`` (the first
    :data:`SHOWN_ROWS`; how many more follow is said)."""
    arrays = {k: np.asarray(v, dtype=np.float64).reshape(-1) for k, v in columns.items()}
    width = min(NAME_WIDTH, max([len("column"), *(len(label_text(n)) for n in names)]))
    extremes = ("min", "max")  # integer columns' min and max show as integers
    texts = {
        k: [number_text(v, integral=k in extremes) for v in arr[:SHOWN_ROWS]]
        for k, arr in arrays.items()
    }
    cell = max([10, *(len(t) + 1 for values in texts.values() for t in values)])
    lines = ["column".ljust(width) + "".join(k.rjust(cell) for k in texts)]
    labels = distinct_labels(names, NAME_WIDTH)
    for i in range(min(len(names), SHOWN_ROWS)):
        values = "".join(texts[k][i].rjust(cell) for k in texts)
        lines.append(labels[i].ljust(width) + values)
    if len(names) > SHOWN_ROWS:
        lines.append(f"... {len(names) - SHOWN_ROWS} more columns (`show --format json` lists all)")
    return lines


def range_text(values: np.ndarray, shape: tuple[int, ...], decimals: int = 3) -> str:
    """``lo at (i, j) .. hi at (k, l)``: a per-feature array's extremes and where they are."""
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.isfinite(flat).any():
        return "no finite values"
    integral = _is_integral(flat)
    lo, hi = int(np.nanargmin(flat)), int(np.nanargmax(flat))
    return (
        f"{number_text(flat[lo], decimals, integral)} at {_where(lo, shape)} .. "
        f"{number_text(flat[hi], decimals, integral)} at {_where(hi, shape)}"
    )


def _line(label: str, text: str) -> str:
    """``label`` then ``text`` wrapped to the line width (a long label gets a line of its own)."""
    body = textwrap.wrap(text, LINE_WIDTH - LABEL_WIDTH) or [""]
    pad = " " * LABEL_WIDTH
    head = [f"{label:<{LABEL_WIDTH}}{body[0]}"]
    if len(label) >= LABEL_WIDTH:  # a line of its own, broken after "; " before anywhere else
        clauses = label.replace("; ", ";\n").splitlines()
        head = [*(part for c in clauses for part in textwrap.wrap(c, LINE_WIDTH)), pad + body[0]]
    return "\n".join([*head, *(pad + b for b in body[1:])])


def _units(stats: Any) -> str:
    axis, shape = stats.axis, tuple(stats.sample_shape or ())
    size = int(np.prod(stats.reduced_shape)) if stats.reduced_shape else 1
    if axis == "global":
        return "global (one value over all features)"
    if axis == "channel":
        several = " and other shapes" if getattr(stats, "mixed_shapes", False) else ""
        return f"channel ({size} of {stats.layout.letters} samples {shape}{several})"
    return f"feature ({size} features: samples {shape})"


def health_lines(stats: Any) -> list[str]:
    """Constant and rare features (channels) with where the first few are."""
    from .normalizers import constant_mask
    from .rarity import rare_limit, rare_rule

    shape = tuple(stats.reduced_shape)
    names = feature_names(stats)
    what = {"feature": "features", "channel": "channels", "global": "values"}[stats.axis]
    const = constant_mask(stats)
    empty = stats.no_values()
    rare = ~const & ~empty & (stats.n_nonzero <= rare_limit(stats.n_samples_seen))
    total = const.size
    lines = (
        [
            _line(
                "no values",
                f"{int(empty.sum())} of {total} {what} (all NaN/inf, omitted)"
                f"{_places(empty, shape, names)}",
            )
        ]
        if empty.any()
        else []
    )
    if stats.axis == "global":
        return [*lines, _line("constant", "yes" if const.all() else "no")]
    if stats.axis == "channel":  # rare is a per-feature notion: few samples non-zero
        return [
            *lines,
            _line("constant", f"{int(const.sum())} of {total} {what}{_places(const, shape)}"),
            _line("rare", "counted per feature (statistics with --axis feature)"),
        ]
    return [
        *lines,
        _line("constant", f"{int(const.sum())} of {total} {what}{_places(const, shape, names)}"),
        _line(
            "rare",
            f"{int(rare.sum())} of {total} {what} ({rare_rule(stats.n_samples_seen)})"
            f"{_places(rare, shape, names)}"
            if rare_limit(stats.n_samples_seen)
            else rare_rule(stats.n_samples_seen),
        ),
    ]


def python_number(value: float) -> str:
    """``value`` as a Python literal that reads back exactly: ``255``, ``2147483647``, ``0.1``."""
    number = float(value)
    return str(int(number)) if number.is_integer() and abs(number) < 2**63 else repr(number)


def paste_lines(mean: Any, std: Any, value_scale: dict[str, Any] | None) -> list[str]:
    """The 0..1-scale mean and std as Python lines to paste, and how each library takes them."""
    scale = value_scale or {}
    top = scale.get("max_value")
    signed = top is not None and (scale.get("min_value") or 0) < 0
    divisor = float(top) if top and not signed else 1.0
    mean01 = np.asarray(mean, np.float64).reshape(-1) / divisor
    std01 = np.asarray(std, np.float64).reshape(-1) / divisor
    if signed:  # int8/int16/int32 …: no library maps them to 0..1; data / max would span −1..1
        head = f"# {scale.get('dtype')} is signed (no 0..1 scale): data units, for unscaled floats"
        pixel = ", max_pixel_value=1.0"
    elif top:
        exact = python_number(top)  # 2147483647, never 2.14748e+09: pasted, it must be exact
        after = "ToTensor() or " if int(top) == 255 else ""  # ToTensor rescales uint8 only
        head = f"# on the 0..1 scale (data / {exact}), as after {after}Rescaling(1/{exact}):"
        pixel = f", max_pixel_value={float(top)!r}"
    else:
        head = "# float data: taken to be on the 0..1 scale already"
        pixel = ", max_pixel_value=1.0"
    wrap: dict[str, Any] = {
        "width": LINE_WIDTH,
        "subsequent_indent": "    ",
        "break_on_hyphens": False,
    }
    return [
        head,
        *textwrap.wrap(f"mean = {paste_tuple(mean01)}", **wrap),
        *textwrap.wrap(f"std = {paste_tuple(std01)}", **wrap),
        "# torchvision: transforms.Normalize(mean, std)",
        f"# albumentations: A.Normalize(mean, std{pixel})",
        "# keras: layers.Normalization(mean=mean, variance=[s * s for s in std])",
    ]


def stats_lines(stats: Any) -> list[str]:
    """What ``normlab stats`` prints: per-channel/global values, or a per-feature summary."""
    std = stats.std()
    lines = [
        _line("axis", _units(stats)),
        _line("samples", str(stats.n_samples_seen)),
        _line("count", _count_text(stats)),
        _line("value scale", scale_text(stats.value_scale)),
    ]
    names = feature_names(stats)
    if stats.axis == "feature" and names is not None:  # table columns: one line each
        values = {"mean": stats.mean, "std": std, "min": stats.min, "max": stats.max}
        return [*lines, *health_lines(stats), *_extra_lines(stats), *named_rows(names, values)]
    if stats.axis == "feature":
        shape = tuple(stats.reduced_shape)
        lines += [
            _line("mean", range_text(stats.mean, shape)),
            _line("std", range_text(std, shape)),
            _line("min", range_text(stats.min, shape)),
            _line("max", range_text(stats.max, shape)),
            *health_lines(stats),
            *_extra_lines(stats),
        ]
        per_channel = _per_channel(stats)
        if per_channel is not None:
            lines += ["", f"per channel ({per_channel.layout.letters}, exact from these):"]
            lines += _value_lines(per_channel, per_channel.std())
            lines += _paste_or_why(per_channel, per_channel.std(), stats.value_scale)
        return lines
    lines += _value_lines(stats, std)
    lines += health_lines(stats)
    lines += _extra_lines(stats)
    lines += _paste_or_why(stats, std, stats.value_scale)
    return lines


def _paste_or_why(stats: Any, std: Any, value_scale: dict[str, Any] | None) -> list[str]:
    """:func:`paste_lines`, unless some channel has no values (no NaN to paste)."""
    empty = stats.no_values()
    if empty.any():
        what = "channel(s)" if stats.axis == "channel" else "statistic(s)"
        return [f"# nothing to paste: {int(empty.sum())} {what} without values (see above)"]
    return paste_lines(stats.mean, std, value_scale)


def feature_names(stats: Any) -> list[str] | None:
    """The names of per-feature statistics' features (table columns), None when unnamed."""
    names = getattr(stats, "feature_names", None)
    if names is None or stats.axis != "feature" or len(names) != np.prod(stats.reduced_shape):
        return None
    return list(names)


def _extra_lines(stats: Any) -> list[str]:
    """What a richer statistic (histograms, per-image stds, skipped files) adds to the summary."""
    from .moments import Moments

    base = Moments.summary(stats)
    return [
        _line(k, array_text(v) if isinstance(v, list) else str(v))
        for k, v in stats.summary().items()
        if k not in base
    ]


def _value_lines(stats: Any, std: np.ndarray) -> list[str]:
    values = {"mean": stats.mean, "std": std, "min": stats.min, "max": stats.max}
    return [_line(name, _values_text(value)) for name, value in values.items()]


def _values_text(values: Any) -> str:
    """One number for one value, else the array (numpy's style, 3 decimals)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 1:
        return number_text(float(arr.reshape(-1)[0]), integral=_is_integral(arr))
    return array_text(arr, width=LINE_WIDTH - LABEL_WIDTH)


def _count_text(stats: Any) -> str:
    """Values counted per channel/feature (fewer where non-finite values were omitted)."""
    count = np.asarray(stats.count).reshape(-1)
    each = {"feature": "per feature", "channel": "per channel", "global": "in all"}[stats.axis]
    if count.size and np.all(count == count[0]):
        return f"{int(count[0])} values {each}"
    return f"{int(count.min())}..{int(count.max())} values {each}"


def _per_channel(stats: Any) -> Any:
    """Exact per-channel statistics of per-feature ones, for image-shaped samples (else None)."""
    shape = tuple(stats.sample_shape or ())
    if len(shape) < 2 or shape[stats.channel_axis] > 16:
        return None
    return stats.reduce("channel")


def comoments_lines(comoments: Any) -> list[str]:
    """What ``normlab comoments`` prints: size, kind, and the spectrum's extremes."""
    shape = tuple(comoments.sample_shape or ())
    kind = "dense" if comoments.dense else f"a sketch of {comoments.sketch_size} columns"
    lines = [
        _line("samples", str(comoments.n_samples_seen)),
        _line("features", f"{comoments.n_features} (samples {shape})"),
        _line("value scale", scale_text(comoments.value_scale)),
        _line("kept", f"{kind}, {'exact' if comoments.exact else 'float64'}"),
        _line("mean", range_text(comoments.mean, shape)),
    ]
    if comoments.dense:
        eigenvalues = np.linalg.eigvalsh(comoments.cov())
        lines.append(
            _line(
                "covariance",
                f"eigenvalues {number_text(eigenvalues[0])} .. {number_text(eigenvalues[-1])}",
            )
        )
    return lines


def normalizer_lines(normalizer: Any) -> list[str]:
    """What ``normlab fit`` prints: the fitted map and, per channel or global, the paste lines."""
    lines = [_line("scheme", f"{normalizer.scheme}: {_params_text(normalizer)}")]
    if not normalizer.is_fitted or not hasattr(normalizer, "stats_"):
        return lines + [_line("fitted", "nothing to fit: the same for every data set")]
    stats = normalizer.stats_
    lines.append(
        _line(
            "fitted on",
            f"{normalizer.n_samples_seen_} samples of shape {tuple(stats.sample_shape or ())}, "
            f"{scale_text(normalizer.value_scale_)}",
        )
    )
    fitted = normalizer.fitted_values()
    names = getattr(normalizer, "feature_names_", None)
    flat = all(np.size(v) == len(names or ()) for v in fitted.values())
    if names is not None and normalizer.stats_axis == "feature" and fitted and flat:
        lines += named_rows(names, fitted)  # table columns: one line each
    elif normalizer.stats_axis == "feature" or any(np.ndim(v) > 1 for v in fitted.values()):
        lines += [_line(name, _fitted_text(value)) for name, value in fitted.items()]
    else:
        lines += [_line(name, _values_text(value)) for name, value in fitted.items()]
    if hasattr(normalizer, "shift_") and normalizer.stats_axis != "feature":
        lines.append("# output = (x - shift_) / scale_, i.e. Normalize(mean, std) with:")
        lines += paste_lines(normalizer.shift_, normalizer.scale_, normalizer.value_scale_)[1:]
    return lines


def _fitted_text(value: np.ndarray) -> str:
    if np.ndim(value) == 0:
        return number_text(float(value))
    return f"{range_text(value, tuple(value.shape))}  (shape {tuple(value.shape)})"


def _params_text(normalizer: Any) -> str:
    """The parameters that are set (None means "the default": left out)."""
    params = {k: v for k, v in normalizer.get_params().items() if v is not None}
    return ", ".join(f"{k}={v!r}" for k, v in params.items()) or "default parameters"
