"""PyTorch: a ``Normalize`` module with the fused uint8 → float32 apply.

:class:`Normalize` is what torchvision's ``ToTensor()`` + ``Normalize(mean, std)`` do, in one
module: uint8 images (``CHW`` or ``HWC``, one image or a batch) become float32 normalized
values, ``(x / value_max − mean) / std``. The affine map is folded into one multiply-add,
``x · (1/(value_max·std)) − mean/std``, with both factors precomputed in float64. The uint8
tensor is converted once into the output buffer and the multiply-add runs in place in it
(``torch.addcmul``): no intermediate float copy of the batch. (On CPU a single mixed-dtype
``addcmul(uint8 → float)`` pass measured slower than convert-then-FMA: PyTorch's casting
loop is not vectorized; see ``bench/bench_torch.py``.)

``mean``/``std`` are buffers, so they are in ``state_dict`` and move with ``.to(device)``;
the module exports with ``torch.export`` and works as a ``Dataset`` transform.

NaN and inf pass through both modules unchecked (NaN stays NaN): they are model layers, and a
data-dependent check would break ``torch.compile``/``torch.export`` and synchronise the GPU on
every batch. The numpy normalizers and ``normlab apply`` refuse them by default.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import DTypeError, FileFormatError, NormlabError, NormlabWarning, ShapeError

LAYOUTS = ("CHW", "HWC", "HW", "F")
_SAMPLE_NDIM = {"CHW": 3, "HWC": 3, "HW": 2, "F": 1}
_CHANNEL_DIM = {"CHW": -3, "HWC": -1}
_META_KEY = "normlab_torch_normalize"
_WHITEN_META_KEY = "normlab_torch_whitening"
_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.bool)
# a float input whose maximum passes this is taken to be still on the 0..value_max scale
_UNSCALED_MAX = 1.5


class _FloatScale(nn.Module):
    """What both modules share: integer input is divided by ``value_max``, float is 0..1."""

    value_max: float
    _warned_unscaled: bool = False

    def _warn_if_unscaled(self, x: torch.Tensor) -> None:
        """Warn once per module when float input looks like unscaled integer values (0..255).

        The numpy normalizers warn about the opposite mistake (dividing twice); here float
        input is taken to be on the 0..1 scale, so a maximum above 1.5 with ``value_max=255``
        means the ``/255`` was forgotten. Skipped while compiling or exporting (a
        data-dependent branch cannot be traced).
        """
        if self._warned_unscaled or self.value_max <= _UNSCALED_MAX or x.numel() == 0:
            return
        if torch.compiler.is_compiling():
            return
        top = float(x.detach().max())
        if top > _UNSCALED_MAX:
            self._warned_unscaled = True
            warnings.warn(
                f"{type(self).__name__} got a float {x.dtype} input with values up to {top:.4g}, "
                "but takes float input on the 0..1 scale (integer input is divided by "
                f"{self.value_max:g}): pass the integer tensor itself, or x / {self.value_max:g}",
                NormlabWarning,
                stacklevel=3,
            )


class Normalize(_FloatScale):
    """Normalize images or feature vectors: ``(x / value_max − mean) / std``.

    Parameters
    ----------
    mean, std : float, sequence or tensor
        A scalar (global), one value per channel (layouts ``CHW``/``HWC``), or one value per
        feature of a sample in ``layout`` (per-pixel statistics). On the 0..1 scale when
        ``value_max=255`` (torchvision's convention).
    layout : {"CHW", "HWC", "HW", "F"}
        Dims of one sample: channels first, channels last, gray images, feature vectors.
        Inputs are one sample or a batch (one more leading dim); the output keeps the layout.
    value_max : float
        Integer inputs are divided by it first (255: uint8 images onto 0..1). Float inputs
        are taken as already on the scale of ``mean``/``std``.
    dtype : torch.dtype
        Output dtype for integer inputs (float inputs keep their float dtype).

    Examples
    --------
    >>> import torch
    >>> norm = Normalize([0.5, 0.5, 0.5], [0.25, 0.25, 0.25], layout="HWC")
    >>> norm(torch.tensor([[[0, 128, 255]]], dtype=torch.uint8))
    tensor([[[-2.0000,  0.0078,  2.0000]]])
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        mean: Any,
        std: Any,
        *,
        layout: str = "CHW",
        value_max: float = 255.0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise NormlabError(f"layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
        mean_t = torch.as_tensor(mean, dtype=torch.float64).clone()
        std_t = torch.as_tensor(std, dtype=torch.float64).clone()
        if mean_t.shape != std_t.shape:
            raise ShapeError(
                f"mean has shape {tuple(mean_t.shape)} but std has {tuple(std_t.shape)}"
            )
        if not bool(torch.isfinite(std_t).all()) or not bool((std_t > 0).all()):
            raise NormlabError(
                "std must be positive and finite everywhere (normlab's fitted scales are: zero "
                "variance gets scale 1)"
            )
        if not bool(torch.isfinite(mean_t).all()):
            raise NormlabError("mean must be finite everywhere")
        if not (math.isfinite(value_max) and value_max > 0):
            raise NormlabError(f"value_max must be a positive number; got {value_max}")
        sample_ndim = _SAMPLE_NDIM[layout]
        if mean_t.ndim == 1 and layout in _CHANNEL_DIM:
            self.per = "channel"
        elif mean_t.ndim == 0:
            self.per = "global"
        elif mean_t.ndim == sample_ndim:
            self.per = "feature"
        else:
            raise ShapeError(
                f"mean/std of shape {tuple(mean_t.shape)} fit neither one value, one per channel "
                f"nor one per feature of a {layout} sample ({sample_ndim} dims)"
            )
        self.layout = layout
        self.value_max = float(value_max)
        self.out_dtype = dtype
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    # ------------------------------------------------------------ construction
    @classmethod
    def from_normalizer(
        cls, normalizer: Any, *, layout: str | None = None, dtype: torch.dtype = torch.float32
    ) -> Normalize:
        """The module of a fitted affine normlab normalizer (same outputs, float32).

        ``layout`` defaults to the layout of the fitted samples (``F`` for vectors, ``HW``
        for gray images, ``HWC``/``CHW`` from the statistics' layout); pass ``"CHW"`` to apply
        statistics fitted on ``HWC`` arrays to channels-first tensors.
        """
        from .fitted import as_affine

        n = as_affine(
            normalizer,
            "normlab.torch.Normalize",
            "apply normlab's transform to the data (for example in the Dataset) instead",
        )
        shape = tuple(n.sample_shape_)
        fitted = layout if layout and n.stats_axis == "global" else n.layout_.torch_layout
        layout = layout or fitted
        if layout not in LAYOUTS:
            raise NormlabError(f"layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
        divisor = float((n.value_scale_ or {}).get("max_value") or 1.0)
        mean, std = np.asarray(n.shift_) / divisor, np.asarray(n.scale_) / divisor
        if n.stats_axis == "channel" and not {fitted, layout} <= {"CHW", "HWC"}:
            raise ShapeError(
                f"per-channel statistics of samples {shape} need a CHW or HWC layout; got {layout}"
            )
        if n.stats_axis == "feature" and layout != fitted:
            if {layout, fitted} != {"CHW", "HWC"}:
                raise ShapeError(
                    f"per-feature statistics of samples {shape} (layout {fitted}) cannot be "
                    f"applied to {layout} samples"
                )
            order = (2, 0, 1) if layout == "CHW" else (1, 2, 0)
            mean, std = mean.transpose(order), std.transpose(order)
        return cls(mean, std, layout=layout, value_max=divisor, dtype=dtype)

    @classmethod
    def from_file(cls, path: str | os.PathLike, *, layout: str | None = None) -> Normalize:
        """From a saved normlab normalizer, or from a state dict written by
        ``normlab export --to torch``."""
        config, tensors = _read_state(path, _META_KEY)
        if config is None:
            from .io import load

            return cls.from_normalizer(load(path), layout=layout)
        try:
            layout_saved, value_max = config["layout"], config["value_max"]
        except KeyError:
            raise FileFormatError(
                f"{path}: corrupt state dict metadata (need layout and value_max)"
            ) from None
        if "mean" not in tensors or "std" not in tensors:
            raise FileFormatError(f"{path}: state dict without 'mean' and 'std'")
        if layout is not None and layout != layout_saved:
            raise NormlabError(f"{path}: holds a {layout_saved} module; got layout={layout!r}")
        return cls(tensors["mean"], tensors["std"], layout=layout_saved, value_max=value_max)

    def save(self, path: str | os.PathLike) -> None:
        """Write the state dict as safetensors (atomically), with layout and value_max as
        metadata."""
        _write_state(self, path, _META_KEY, {"layout": self.layout, "value_max": self.value_max})

    def extra_repr(self) -> str:
        shape = tuple(self.mean.shape)
        return f"per={self.per}, layout={self.layout}, value_max={self.value_max:g}, shape={shape}"

    # ------------------------------------------------------------ apply
    def _sample_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        sample_ndim = _SAMPLE_NDIM[self.layout]
        if x.ndim not in (sample_ndim, sample_ndim + 1):
            raise ShapeError(
                f"expected one {self.layout} sample ({sample_ndim} dims) or a batch "
                f"(N, {', '.join(self.layout)}) ({sample_ndim + 1} dims); got shape "
                f"{tuple(x.shape)}"
            )
        sample = tuple(x.shape[x.ndim - sample_ndim :])
        if self.per == "channel":
            channels = sample[_CHANNEL_DIM[self.layout]]
            if channels != self.mean.shape[0]:
                raise ShapeError(
                    f"expected {self.mean.shape[0]} channels in {self.layout} layout (dim "
                    f"{_CHANNEL_DIM[self.layout]}); got shape {tuple(x.shape)}"
                )
        elif self.per == "feature" and sample != tuple(self.mean.shape):
            raise ShapeError(
                f"expected {self.layout} samples of shape {tuple(self.mean.shape)}; got shape "
                f"{tuple(x.shape)}"
            )
        return sample

    def _factors(self, divisor: float, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``(m, −o)`` with ``x·m − o`` the normalized value, broadcastable to a sample.

        ``m = 1/(divisor·std)`` is rounded to ``dtype`` first and the offset is computed from
        that rounded ``m`` in float64 (``o = divisor·mean·m``), so
        ``x·m − o = (x − divisor·mean)·m`` before the last rounding: the error of ``m`` scales
        with ``|z|``, not with ``x``, and the result is within ``2⁻²⁴·(|mean/std| + 2|z|)`` of
        float64 for float32 output.
        """
        mult = (1.0 / (self.std * divisor)).to(dtype)
        neg_offset = -(self.mean * divisor) * mult.to(torch.float64)
        if self.per == "channel" and self.layout == "CHW":
            mult, neg_offset = mult[:, None, None], neg_offset[:, None, None]
        return mult, neg_offset.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize one sample or a batch.

        Integer input becomes ``dtype``; float input keeps its dtype.
        """
        self._sample_shape(x)
        if x.dtype.is_floating_point:
            self._warn_if_unscaled(x)
            mult, neg_offset = self._factors(1.0, x.dtype)
            return torch.addcmul(neg_offset, x, mult)
        if x.dtype not in _INTEGER_DTYPES:
            raise DTypeError(f"expected an integer or float tensor; got {x.dtype}")
        out = torch.empty(x.shape, dtype=self.out_dtype, device=x.device)
        out.copy_(x)  # the one conversion, straight into the output buffer
        mult, neg_offset = self._factors(self.value_max, out.dtype)
        return torch.addcmul(neg_offset, out, mult, out=out)  # in place: one FMA pass

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """Back to the 0..1 scale (``y · std + mean``), float64 factors rounded once."""
        self._sample_shape(y)
        mult, neg_offset = self._factors(1.0, y.dtype)
        return (y - neg_offset) / mult


class Whitening(_FloatScale):
    """ZCA or PCA whitening as a module: subtract the mean, then one matrix multiply.

    ``y = (x − mean) Wᵀ`` on each flattened sample, with ``W`` the weight of an
    ``nn.Linear`` without bias (``mean`` a float64 buffer). ZCA outputs keep the sample's
    shape; PCA outputs are ``(N, n_components)``. As for :class:`Normalize`, integer input
    (uint8 images) is converted once into the float32 output buffer, the mean (in integer
    units) is subtracted in place there, and the matrix multiply reads that buffer; float
    input is taken to be on the 0..1 scale (``x / value_max``).

    Parameters
    ----------
    mean : sequence or tensor, shape (d,)
        On the 0..1 scale when ``value_max=255``.
    matrix : sequence or tensor, shape (k, d)
        ``y = matrix @ (x − mean)`` per flattened sample, on the same scale.
    sample_shape : tuple of int
        The shape of one sample (``d`` values); inputs are one sample or a batch of them.
    method : {"zca", "pca"}
    value_max : float
        Integer inputs are divided by it (the statistics' integer scale; 1 for float data).
    """

    mean: torch.Tensor

    def __init__(
        self,
        mean: Any,
        matrix: Any,
        *,
        sample_shape: tuple[int, ...],
        method: str = "zca",
        value_max: float = 255.0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float64).reshape(-1).clone()
        matrix_t = torch.as_tensor(matrix, dtype=torch.float64)
        d = math.prod(sample_shape)
        if method not in ("zca", "pca"):
            raise NormlabError(f"method must be 'zca' or 'pca'; got {method!r}")
        if mean_t.numel() != d or matrix_t.ndim != 2 or matrix_t.shape[1] != d:
            raise ShapeError(
                f"samples of shape {tuple(sample_shape)} ({d} values) need a mean of {d} values "
                f"and a (k, {d}) matrix; got {tuple(mean_t.shape)} and {tuple(matrix_t.shape)}"
            )
        if method == "zca" and matrix_t.shape[0] != d:
            raise ShapeError(f"a ZCA matrix is square ({d} x {d}); got {tuple(matrix_t.shape)}")
        if not (bool(torch.isfinite(mean_t).all()) and bool(torch.isfinite(matrix_t).all())):
            raise NormlabError("mean and matrix must be finite everywhere")
        if not (math.isfinite(value_max) and value_max > 0):
            raise NormlabError(f"value_max must be a positive number; got {value_max}")
        self.sample_shape = tuple(int(v) for v in sample_shape)
        self.method = method
        self.value_max = float(value_max)
        self.out_dtype = dtype
        self.register_buffer("mean", mean_t)
        self.linear = nn.Linear(d, matrix_t.shape[0], bias=False, dtype=dtype)
        with torch.no_grad():
            self.linear.weight.copy_(matrix_t)
        self.linear.weight.requires_grad_(False)

    @classmethod
    def from_normalizer(cls, normalizer: Any, *, dtype: torch.dtype = torch.float32) -> Whitening:
        """The module of a fitted :class:`normlab.Whiten` (ZCA or PCA), same outputs."""
        from .fitted import fitted_whitening

        w = fitted_whitening(normalizer, "normlab.torch.Whitening")
        mean, matrix = w.linear_map()
        divisor = float((w.value_scale_ or {}).get("max_value") or 1.0)
        return cls(
            mean / divisor,
            matrix * divisor,
            sample_shape=tuple(w.sample_shape_ or ()),
            method=w.method,
            value_max=divisor,
            dtype=dtype,
        )

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Whitening:
        """From a state dict written by ``normlab export --to torch`` or a saved ``Whiten``."""
        config, tensors = _read_state(path, _WHITEN_META_KEY)
        if config is None:
            from .io import load

            return cls.from_normalizer(load(path))
        try:
            shape, method, value_max = config["sample_shape"], config["method"], config["value_max"]
            mean, matrix = tensors["mean"], tensors["linear.weight"]
        except (KeyError, TypeError):
            raise FileFormatError(
                f"{path}: corrupt whitening state dict (need sample_shape, method, value_max, "
                "mean and linear.weight)"
            ) from None
        return cls(mean, matrix, sample_shape=tuple(shape), method=method, value_max=value_max)

    def save(self, path: str | os.PathLike) -> None:
        """Write the state dict as safetensors (atomically), with the shape as metadata."""
        config = {
            "sample_shape": list(self.sample_shape),
            "method": self.method,
            "value_max": self.value_max,
        }
        _write_state(self, path, _WHITEN_META_KEY, config)

    def extra_repr(self) -> str:
        return (
            f"method={self.method}, sample_shape={self.sample_shape}, value_max={self.value_max:g}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Whiten one sample or a batch; integer input → ``dtype``, float keeps its dtype."""
        nd = len(self.sample_shape)
        if x.ndim not in (nd, nd + 1) or tuple(x.shape[x.ndim - nd :]) != self.sample_shape:
            raise ShapeError(
                f"expected one sample of shape {self.sample_shape} or a batch (N, "
                f"{', '.join(map(str, self.sample_shape))}); got shape {tuple(x.shape)}"
            )
        batch = tuple(x.shape[: x.ndim - nd])
        flat = x.reshape(*batch, -1)
        if x.dtype.is_floating_point:
            self._warn_if_unscaled(x)
            centered = flat - self.mean.to(x.dtype)
            out = nn.functional.linear(centered, self.linear.weight.to(x.dtype))
        elif x.dtype in _INTEGER_DTYPES:
            centered = torch.empty(flat.shape, dtype=self.out_dtype, device=x.device)
            centered.copy_(flat)  # the one conversion, straight into the float buffer
            centered.sub_((self.mean * self.value_max).to(self.out_dtype))  # in integer units
            out = self.linear(centered).div_(self.value_max)
        else:
            raise DTypeError(f"expected an integer or float tensor; got {x.dtype}")
        return out.reshape(*batch, *self.sample_shape) if self.method == "zca" else out


def _read_state(
    path: str | os.PathLike, key: str
) -> tuple[dict[str, Any] | None, dict[str, torch.Tensor]]:
    """``(config, tensors)`` of a state dict written by ``save``; config None for other files."""
    from safetensors import safe_open

    from .io import check_regular

    check_regular(path, error=FileFormatError)
    try:
        with safe_open(os.fspath(path), framework="pt") as f:
            meta = (f.metadata() or {}).get(key)
            tensors = {k: f.get_tensor(k) for k in f.keys()} if meta else {}
    except FileNotFoundError:
        raise FileFormatError(f"{path}: no such file") from None
    except Exception as exc:  # safetensors' own error types for files that are not safetensors
        raise FileFormatError(f"{path}: not a safetensors file ({exc})") from None
    if meta is None:
        return None, {}
    try:
        config = json.loads(meta)
    except ValueError:
        raise FileFormatError(f"{path}: corrupt state dict metadata") from None
    if not isinstance(config, dict):
        raise FileFormatError(f"{path}: corrupt state dict metadata")
    return config, tensors


def _write_state(module: nn.Module, path: str | os.PathLike, key: str, config: Any) -> None:
    from safetensors.torch import save

    from .io import atomic_write

    payload = save(
        {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()},
        metadata={key: json.dumps(config)},
    )
    with atomic_write(path) as handle:
        handle.write(payload)
