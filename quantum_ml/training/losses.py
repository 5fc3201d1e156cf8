"""Losses: the NumPy ones of :class:`QuantumModel` training, and torch's by name.

The NumPy losses return the mean loss and its gradient with respect to the outputs, so the
trainer applies the chain rule through the circuit's jacobian itself. Torch modules use the
function of ``torch.nn.functional`` the name resolves to; ``"cross-entropy"``, ``"mse"`` and
``"bce"`` mean the same loss for both kinds of model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import TrainingError, UnknownComponentError

__all__ = ["NUMPY_LOSSES", "check_loss_name", "correct_predictions", "loss_and_grad", "torch_loss"]

Array = NDArray[np.float64]

#: Names of the NumPy losses, and their spellings as ``torch.nn.functional`` names.
NUMPY_LOSSES: dict[str, str] = {
    "cross-entropy": "cross-entropy",
    "cross_entropy": "cross-entropy",
    "mse": "mse",
    "mse_loss": "mse",
    "bce": "bce",
    "binary_cross_entropy_with_logits": "bce",
}
_TORCH_NAMES = {
    "cross-entropy": "cross_entropy",
    "mse": "mse_loss",
    "bce": "binary_cross_entropy_with_logits",
}


def _torch_loss_names() -> list[str]:
    import torch.nn.functional as F

    return sorted(
        n
        for n in dir(F)
        if not n.startswith("_")
        and callable(getattr(F, n))
        and (
            n.endswith("_loss")
            or n
            in (
                "cross_entropy",
                "binary_cross_entropy",
                "binary_cross_entropy_with_logits",
                "kl_div",
            )
        )
    )


def check_loss_name(name: str) -> None:
    """Raise :class:`UnknownComponentError` unless ``name`` is a loss this package knows."""
    if name in NUMPY_LOSSES:
        return
    try:
        known = _torch_loss_names()
    except ImportError:  # pragma: no cover - torch is an extra
        raise UnknownComponentError(
            f"no loss named {name!r}: use one of {sorted(NUMPY_LOSSES)} (torch's losses need "
            "pip install 'quantum-db[torch]')"
        ) from None
    if name not in known:
        raise UnknownComponentError(
            f"no loss named {name!r}: use one of {sorted(NUMPY_LOSSES)} or a loss of "
            f"torch.nn.functional ({', '.join(known)})"
        )


def torch_loss(name: str) -> Callable[..., Any]:
    """The ``torch.nn.functional`` function ``name`` stands for."""
    import torch.nn.functional as F

    check_loss_name(name)
    canonical = NUMPY_LOSSES.get(name)
    fn: Callable[..., Any] = getattr(F, _TORCH_NAMES[canonical] if canonical else name)
    return fn


def numpy_loss(name: str) -> str:
    """The NumPy loss ``name`` stands for; others cannot train a QuantumModel."""
    kind = NUMPY_LOSSES.get(name)
    if kind is None:
        raise UnknownComponentError(
            f"a QuantumModel trains with one of {sorted(NUMPY_LOSSES)}, not {name!r} "
            "(torch losses need a torch.nn.Module)"
        )
    return kind


def _targets(y: NDArray[Any], n_out: int) -> Array:
    """Targets shaped like the outputs: one-hot for integer labels with several outputs."""
    labels = np.asarray(y)
    if labels.ndim == 1 and n_out > 1:
        if not np.issubdtype(labels.dtype, np.integer):
            raise TrainingError(f"{n_out} outputs need integer class labels, got {labels.dtype}")
        if labels.size and (labels.min() < 0 or labels.max() >= n_out):
            raise TrainingError(f"class labels must lie in 0..{n_out - 1}")
        return np.eye(n_out)[labels.astype(np.int64)]
    return np.asarray(labels, dtype=np.float64).reshape(len(labels), n_out)


def loss_and_grad(kind: str, z: Array, y: NDArray[Any]) -> tuple[float, Array]:
    """Mean loss over the batch and its gradient with respect to the outputs ``z [B, K]``."""
    kind = numpy_loss(kind)
    b, k = z.shape
    if kind == "cross-entropy":
        if k < 2:
            raise TrainingError("cross-entropy needs at least 2 outputs (use 'bce' for one)")
        t = _targets(y, k)
        shifted = z - z.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        log_p = shifted - log_norm
        loss = float(-(t * log_p).sum() / b)
        return loss, (np.exp(log_p) - t) / b
    t = _targets(y, k)
    if kind == "mse":
        diff = z - t
        return float((diff * diff).sum() / (b * k)), 2.0 * diff / (b * k)
    # bce with logits: softplus(z) - t z, stable for either sign of z.
    softplus = np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))
    sigmoid = np.exp(z - softplus)  # z - softplus(z) <= 0: never overflows
    return float((softplus - t * z).sum() / (b * k)), (sigmoid - t) / (b * k)


def correct_predictions(kind: str, z: Array, y: NDArray[Any]) -> int | None:
    """How many predictions are right, or ``None`` for regression targets."""
    labels = np.asarray(y)
    if labels.ndim != 1 or not (
        np.issubdtype(labels.dtype, np.integer) or np.all(labels == np.round(labels))
    ):
        return None
    if z.shape[1] == 1:
        # Logits (bce) are positive for class 1; probabilities and values pass 0.5.
        pred = (z[:, 0] > (0.0 if kind == "bce" else 0.5)).astype(np.int64)
    else:
        pred = np.argmax(z, axis=1)
    return int(np.sum(pred == labels.astype(np.int64)))
