"""Quantum generative adversarial networks: generators, discriminators, losses, the GAN.

* :class:`QuantumGenerator` (a Born machine over a grid) and :class:`LatentGenerator`
  (latent noise in, a continuous sample out), built from any weight-parameterized circuit,
  with ready ansatzes (:func:`ry_cz_ansatz`, :func:`hardware_efficient_ansatz`,
  :func:`efficient_su2`) and initial states (:func:`initial_state`);
* discriminators: :func:`mlp_discriminator` (50-20-1 by default) or any ``torch.nn.Module``,
  :class:`QuantumDiscriminator`;
* :class:`QuantumGAN` with :class:`GANConfig`: BCE, non-saturating, the weighted BCE of
  Zoufal et al., WGAN-GP and MMD; checkpoints, resume and the BackendManager;
* long-run monitors (``quantum_ml.qgan.monitors``): early stopping on distribution metrics,
  critical stops, mode-collapse detection and recovery, the adaptive controller, adaptive
  shots.
"""

from __future__ import annotations

from .ansatz import efficient_su2, hardware_efficient_ansatz, initial_state, ry_cz_ansatz
from .config import GANConfig
from .discriminators import QuantumDiscriminator, mlp_discriminator
from .gan import GANContext, GANHistory, GANState, QuantumGAN, TargetDistribution
from .generators import LatentGenerator, QuantumGenerator
from .grid import Grid
from .monitors import (
    AdaptiveController,
    AdaptiveShots,
    CriticalStop,
    GANEarlyStopping,
    ModeCollapseDetector,
    RecoveryPolicy,
)

__all__ = [
    "AdaptiveController",
    "AdaptiveShots",
    "CriticalStop",
    "GANConfig",
    "GANContext",
    "GANEarlyStopping",
    "GANHistory",
    "GANState",
    "Grid",
    "LatentGenerator",
    "ModeCollapseDetector",
    "QuantumDiscriminator",
    "QuantumGAN",
    "QuantumGenerator",
    "RecoveryPolicy",
    "TargetDistribution",
    "efficient_su2",
    "hardware_efficient_ansatz",
    "initial_state",
    "mlp_discriminator",
    "ry_cz_ansatz",
]
