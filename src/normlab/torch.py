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
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import DTypeError, FileFormatError, NormlabError, ShapeError

LAYOUTS = ("CHW", "HWC", "HW", "F")
_SAMPLE_NDIM = {"CHW": 3, "HWC": 3, "HW": 2, "F": 1}
_CHANNEL_DIM = {"CHW": -3, "HWC": -1}
_META_KEY = "normlab_torch_normalize"


class Normalize(nn.Module):
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
        for gray images, ``HWC``/``CHW`` from ``channel_axis``); pass ``"CHW"`` to apply
        statistics fitted on ``HWC`` arrays to channels-first tensors.
        """
        from .export import _affine

        n = _affine(
            normalizer,
            "normlab.torch.Normalize",
            "apply normlab's transform to the data (for example in the Dataset) instead",
        )
        shape = tuple(n.sample_shape_)
        fitted = (
            layout if layout and n.stats_axis == "global" else _fitted_layout(shape, n.channel_axis)
        )
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
        """From a saved normlab normalizer, or from a state dict written by ``normlab export --to torch``."""
        from safetensors import safe_open

        from .io import check_regular

        check_regular(path, error=FileFormatError)
        try:
            with safe_open(os.fspath(path), framework="pt") as f:
                meta = (f.metadata() or {}).get(_META_KEY)
                tensors = {k: f.get_tensor(k) for k in f.keys()} if meta else {}
        except FileNotFoundError:
            raise FileFormatError(f"{path}: no such file") from None
        except Exception as exc:  # safetensors' own error types for files that are not safetensors
            raise FileFormatError(f"{path}: not a safetensors file ({exc})") from None
        if meta is None:
            from .io import load

            return cls.from_normalizer(load(path), layout=layout)
        try:
            config = json.loads(meta)
            layout_saved, value_max = config["layout"], config["value_max"]
        except (ValueError, KeyError, TypeError):
            raise FileFormatError(
                f"{path}: corrupt state dict metadata (need layout and value_max)"
            ) from None
        if "mean" not in tensors or "std" not in tensors:
            raise FileFormatError(f"{path}: state dict without 'mean' and 'std'")
        if layout is not None and layout != layout_saved:
            raise NormlabError(f"{path}: holds a {layout_saved} module; got layout={layout!r}")
        return cls(tensors["mean"], tensors["std"], layout=layout_saved, value_max=value_max)

    def save(self, path: str | os.PathLike) -> None:
        """Write the state dict as safetensors (atomically), with layout and value_max as metadata."""
        from safetensors.torch import save

        from .io import atomic_write

        config = json.dumps({"layout": self.layout, "value_max": self.value_max})
        payload = save(
            {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()},
            metadata={_META_KEY: config},
        )
        with atomic_write(path) as handle:
            handle.write(payload)

    def extra_repr(self) -> str:
        shape = tuple(self.mean.shape)
        return f"per={self.per}, layout={self.layout}, value_max={self.value_max:g}, shape={shape}"

    # ------------------------------------------------------------ apply
    def _sample_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        sample_ndim = _SAMPLE_NDIM[self.layout]
        if x.ndim not in (sample_ndim, sample_ndim + 1):
            raise ShapeError(
                f"expected one {self.layout} sample ({sample_ndim} dims) or a batch "
                f"(N, {', '.join(self.layout)}) ({sample_ndim + 1} dims); got shape {tuple(x.shape)}"
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
                f"expected {self.layout} samples of shape {tuple(self.mean.shape)}; got shape {tuple(x.shape)}"
            )
        return sample

    def _factors(self, divisor: float, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``(m, −o)`` with ``x·m − o`` the normalized value, broadcastable to a sample.

        ``m = 1/(divisor·std)`` is rounded to ``dtype`` first and the offset is computed from
        that rounded ``m`` in float64 (``o = divisor·mean·m``), so ``x·m − o = (x − divisor·mean)·m``
        before the last rounding: the error of ``m`` scales with ``|z|``, not with ``x``, and
        the result is within ``2⁻²⁴·(|mean/std| + 2|z|)`` of float64 for float32 output.
        """
        mult = (1.0 / (self.std * divisor)).to(dtype)
        neg_offset = -(self.mean * divisor) * mult.to(torch.float64)
        if self.per == "channel" and self.layout == "CHW":
            mult, neg_offset = mult[:, None, None], neg_offset[:, None, None]
        return mult, neg_offset.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize one sample or a batch; integer input → ``dtype``, float input keeps its dtype."""
        self._sample_shape(x)
        if x.dtype.is_floating_point:
            mult, neg_offset = self._factors(1.0, x.dtype)
            return torch.addcmul(neg_offset, x, mult)
        if x.dtype not in (
            torch.uint8,
            torch.int8,
            torch.int16,
            torch.int32,
            torch.int64,
            torch.bool,
        ):
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


def _fitted_layout(shape: tuple[int, ...], channel_axis: int) -> str:
    if len(shape) == 1:
        return "F"
    if len(shape) == 2:
        return "HW"
    if len(shape) == 3 and channel_axis % 3 != 1:
        return "CHW" if channel_axis % 3 == 0 else "HWC"
    raise ShapeError(
        f"samples of shape {shape}: normlab.torch.Normalize handles feature vectors, gray HW images and CHW/HWC images (channel_axis 0 or -1)"
    )
