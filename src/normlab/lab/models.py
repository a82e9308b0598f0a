"""The lab's models (PyTorch, CPU): softmax regression, least squares, an MLP, a small CNN.

Every model exposes its first layer (:func:`first_layer_weight`), whose updates the probes
watch: for a dense layer ``∂C/∂w_jk = δ_j x_k`` (Efficient BackProp §4.3), so each row —
one hidden unit — moves with the signs of the inputs.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import NormlabError

MODELS = {
    "linear": "softmax regression (one linear layer, cross-entropy)",
    "lsq": "linear least squares: ½·squared error on one-hot targets (the Hessian is E[x xᵀ])",
    "mlp": "one hidden layer (tanh or relu), cross-entropy",
    "cnn": "two 3x3 conv layers with pooling, then a linear layer (image-shaped samples)",
}
ACTIVATIONS = ("tanh", "relu")
LOSSES = {
    "linear": "cross-entropy",
    "lsq": "half-mse",
    "mlp": "cross-entropy",
    "cnn": "cross-entropy",
}


def model_names() -> list[str]:
    return list(MODELS)


def build_model(
    name: str,
    *,
    sample_shape: tuple[int, ...],
    n_classes: int,
    hidden: int = 64,
    activation: str = "tanh",
    input_bn: bool = False,
) -> Any:
    """A freshly initialised ``torch.nn.Module`` taking float32 input ``(n, *sample_shape)``.

    Seed ``torch.manual_seed`` before calling it for a reproducible initialisation.
    ``input_bn`` puts a BatchNorm layer (learnable scale and shift, PyTorch's defaults) on the
    inputs, before the first layer: per input feature for the dense models, per channel for
    the cnn. It draws no random numbers, so the other layers start as without it.
    """
    import torch
    from torch import nn

    if name not in MODELS:
        raise NormlabError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    if activation not in ACTIVATIONS:
        raise NormlabError(
            f"unknown activation {activation!r}; choose one of: {', '.join(ACTIVATIONS)}"
        )
    if hidden < 1:
        raise NormlabError(f"hidden must be a positive number of units; got {hidden}")
    if not isinstance(input_bn, bool):
        raise NormlabError(f"input_bn must be True or False; got {input_bn!r}")
    n_inputs = math.prod(sample_shape)
    act = nn.Tanh if activation == "tanh" else nn.ReLU
    flat_bn: list[nn.Module] = [nn.BatchNorm1d(n_inputs)] if input_bn else []
    if name in ("linear", "lsq"):
        return nn.Sequential(nn.Flatten(), *flat_bn, nn.Linear(n_inputs, n_classes))
    if name == "mlp":
        return nn.Sequential(
            nn.Flatten(),
            *flat_bn,
            nn.Linear(n_inputs, hidden),
            act(),
            nn.Linear(hidden, n_classes),
        )
    if len(sample_shape) not in (2, 3):
        raise NormlabError(
            f"model 'cnn' needs image-shaped samples (H, W) or (H, W, C); got samples of shape "
            f"{tuple(sample_shape)}: use 'mlp' for flat features"
        )
    height, width = sample_shape[:2]
    channels = sample_shape[2] if len(sample_shape) == 3 else 1
    if min(height, width) < 4:
        raise NormlabError(f"model 'cnn' needs images of at least 4x4 pixels; got {height}x{width}")

    class ToChannelsFirst(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)

    flat = 16 * (height // 4) * (width // 4)
    return nn.Sequential(
        ToChannelsFirst(),
        *([nn.BatchNorm2d(channels)] if input_bn else []),
        nn.Conv2d(channels, 8, 3, padding=1),
        act(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        act(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(flat, n_classes),
    )


def input_norm_layer(model: Any) -> Any:
    """The input BatchNorm layer of a model built with ``input_bn=True``, else ``None``."""
    from torch import nn

    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            return None
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            return module
    return None


def first_layer_weight(model: Any) -> Any:
    """The weight of the first layer that touches the input (its rows are the units)."""
    from torch import nn

    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            return module.weight
    raise NormlabError(f"{type(model).__name__} has no linear or conv layer")


def loss_function(name: str, n_classes: int) -> Any:
    """``loss(logits, y)`` averaged over the batch: cross-entropy, or ½·squared error for lsq."""
    import torch
    from torch.nn import functional as F

    if LOSSES[name] == "cross-entropy":
        return F.cross_entropy

    def half_mse(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        target = F.one_hot(y, n_classes).to(output.dtype)
        return 0.5 * ((output - target) ** 2).sum(dim=1).mean()

    return half_mse
