"""Differential privacy for updates: clip, add Gaussian noise, account (ε, δ).

Clipping every update to L2 norm ``C`` bounds one node's influence
(sensitivity ``C``); adding N(0, (σC)²) noise per coordinate is the Gaussian
mechanism with noise multiplier σ. Its privacy loss is accounted with Rényi
DP (Mironov 2017): one release is (α, α / (2σ²))-RDP, ``T`` releases compose
to (α, Tα / (2σ²)), and converting gives
ε(δ) = min over α > 1 of  Tα / (2σ²) + ln(1/δ) / (α − 1).
This is node-level (local) DP per released summary: ε bounds what the merger
and anyone downstream can learn about the node's data across ``T`` rounds.

>>> round(epsilon_for(noise_multiplier=1.0, delta=1e-5, rounds=1), 2)
5.3
"""

from __future__ import annotations

import numpy as np

from models.errors import ModelError


def clip_by_l2_norm(vector: np.ndarray, max_norm: float) -> np.ndarray:
    if max_norm <= 0:
        raise ModelError(f"max_norm must be > 0, got {max_norm}")
    values = np.asarray(vector, dtype=np.float64)
    norm = float(np.linalg.norm(values))
    return values if norm <= max_norm else values * (max_norm / norm)


def gaussian_mechanism(
    vector: np.ndarray, max_norm: float, noise_multiplier: float, rng: np.random.Generator
) -> np.ndarray:
    """Clip to ``max_norm`` then add N(0, (noise_multiplier · max_norm)²) per coordinate."""
    if noise_multiplier < 0:
        raise ModelError(f"noise_multiplier must be >= 0, got {noise_multiplier}")
    clipped = clip_by_l2_norm(vector, max_norm)
    return clipped + rng.normal(0.0, noise_multiplier * max_norm, size=clipped.shape)


def epsilon_for(noise_multiplier: float, delta: float, rounds: int = 1) -> float:
    """ε of ``rounds`` Gaussian releases at ``delta`` (RDP accountant, see module doc)."""
    if noise_multiplier <= 0:
        return float("inf")
    if not 0 < delta < 1 or rounds < 1:
        raise ModelError("need 0 < delta < 1 and rounds >= 1")
    alphas = np.concatenate([np.linspace(1.01, 10, 200), np.linspace(10.5, 512, 400)])
    rdp = rounds * alphas / (2 * noise_multiplier**2)
    return float(np.min(rdp + np.log(1 / delta) / (alphas - 1)))
