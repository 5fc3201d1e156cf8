"""The adversarial losses of a QuantumGAN, as weighted sums over points.

Every loss sees the generated points with their weights (a Born machine: every grid point,
weighted by its probability, so the loss is the exact expectation over the generator's
distribution; a latent generator: its samples, weighted ``1/B``) and the real points with
theirs (the data distribution on the grid, or a batch of samples):

* ``"bce"``: the minimax GAN of Goodfellow et al.; the generator minimizes
  ``E_fake log(1 - D)``.
* ``"non-saturating"``: the same discriminator; the generator minimizes ``-E_fake log D``.
* ``"weighted-bce"``: the probability-weighted BCE of Zoufal et al. 2019, written as the
  Qiskit Machine Learning PyTorch QGAN tutorial writes it: the generator's loss is
  ``-sum_k p_k log D(x_k)``, the discriminator's is the mean of the real and the fake terms.
* ``"wgan-gp"``: Wasserstein with gradient penalty (Gulrajani et al. 2017); the critic has
  no sigmoid and the penalty pulls ``|grad C|`` to 1 on random interpolates.
* ``"mmd"``: the squared maximum mean discrepancy under a multi-bandwidth Gaussian kernel,
  for a generator trained without a discriminator (a quantum circuit Born machine).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from backends.errors import MissingDependencyError

try:
    import torch
except ImportError as exc:  # the QGAN trains torch networks: say how to get torch
    raise MissingDependencyError(
        f"{__name__} needs PyTorch ({exc}): pip install 'quantum-db[torch]'"
    ) from exc

__all__ = [
    "LOSSES",
    "discriminator_loss",
    "generator_loss",
    "gradient_penalty",
    "mmd_squared",
]

#: Every loss a GANConfig accepts.
LOSSES = ("bce", "non-saturating", "weighted-bce", "wgan-gp", "mmd")


def _log(x: torch.Tensor) -> torch.Tensor:
    # Floored at the dtype's smallest normal number: a saturated sigmoid (exactly 0 or 1)
    # gives a large finite loss instead of inf, and nothing changes anywhere else.
    return torch.log(x.clamp_min(torch.finfo(x.dtype).tiny))


def generator_loss(
    loss: str,
    fake_weights: torch.Tensor,
    fake_scores: torch.Tensor | None,
    *,
    mmd: Callable[[], torch.Tensor] | None = None,
) -> torch.Tensor:
    """The generator's loss from the discriminator's scores of the generated points."""
    if loss == "mmd":
        assert mmd is not None
        return mmd()
    assert fake_scores is not None
    if loss == "bce":
        return (fake_weights * _log(1.0 - fake_scores)).sum()
    if loss in ("non-saturating", "weighted-bce"):
        return -(fake_weights * _log(fake_scores)).sum()
    if loss == "wgan-gp":
        return -(fake_weights * fake_scores).sum()
    raise ValueError(f"unknown loss {loss!r}")  # GANConfig checks names first


def discriminator_loss(
    loss: str,
    real_weights: torch.Tensor,
    real_scores: torch.Tensor,
    fake_weights: torch.Tensor,
    fake_scores: torch.Tensor,
    penalty: torch.Tensor | None = None,
) -> torch.Tensor:
    """The discriminator's (critic's) loss; ``penalty`` is the weighted gradient penalty."""
    if loss == "wgan-gp":
        out = (fake_weights * fake_scores).sum() - (real_weights * real_scores).sum()
        return out + penalty if penalty is not None else out
    real = -(real_weights * _log(real_scores)).sum()
    fake = -(fake_weights * _log(1.0 - fake_scores)).sum()
    if loss == "weighted-bce":
        return (real + fake) / 2
    return real + fake


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """``mean((|grad C(x_hat)| - 1)^2)`` on ``x_hat`` between paired real and fake points."""
    eps = torch.rand((real.shape[0], 1), generator=generator, dtype=real.dtype)
    mixed = (eps * real + (1.0 - eps) * fake).detach().requires_grad_(True)
    scores = critic(mixed)
    (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    penalty: torch.Tensor = ((grad.norm(dim=1) - 1.0) ** 2).mean()
    return penalty


def mmd_squared(
    x: torch.Tensor,
    x_weights: torch.Tensor,
    y: torch.Tensor,
    y_weights: torch.Tensor,
    bandwidths: Sequence[float],
) -> torch.Tensor:
    """``|mu_x - mu_y|^2`` in the RKHS of ``sum_b exp(-|a-b|^2 / (2 b^2))``, for the weighted
    point sets ``x`` and ``y`` (the exact quadratic form: no sampling estimate)."""
    points = torch.cat([x, y])
    weights = torch.cat([x_weights, -y_weights])
    d2 = torch.cdist(points, points).pow(2)
    kernel = sum(torch.exp(-d2 / (2.0 * b * b)) for b in bandwidths)
    assert isinstance(kernel, torch.Tensor)
    return weights @ kernel @ weights
