"""Sites, regions and non-IID skew: who sees which part of the stream.

Federated learning is only hard when sites see different data, so every
generator and dataset export draws each site's mix from a Dirichlet
distribution: ``alpha`` large (100) gives every site nearly the global mix,
``alpha`` small (0.1) gives each site a few dominant categories. The distance
helpers measure that skew, so tests (and users) can check it is really there.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> dirichlet_mix(3, 4, alpha=1.0, rng=rng).sum(axis=1).round(6).tolist()
[1.0, 1.0, 1.0]
>>> site_names(2), region_names(1)
(['site-0000', 'site-0001'], ['region-00'])
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "assign_regions",
    "categorical",
    "dirichlet_mix",
    "mean_js_distance",
    "mean_tv_distance",
    "mix_by_site",
    "region_names",
    "site_names",
    "split_by_class",
]


def site_names(n_sites: int, prefix: str = "site") -> list[str]:
    return [f"{prefix}-{i:04d}" for i in range(n_sites)]


def region_names(n_regions: int) -> list[str]:
    return [f"region-{i:02d}" for i in range(n_regions)]


def assign_regions(n_sites: int, n_regions: int) -> np.ndarray:
    """Region index per site, in contiguous blocks so regions have similar site counts."""
    if n_regions < 1 or n_sites < n_regions:
        raise ValueError(f"need 1 <= regions <= sites, got {n_regions} regions, {n_sites} sites")
    return (np.arange(n_sites) * n_regions) // n_sites


def dirichlet_mix(
    n_sites: int,
    n_categories: int,
    *,
    alpha: float,
    rng: np.random.Generator,
    prior: np.ndarray | None = None,
) -> np.ndarray:
    """One probability vector per site, ``Dirichlet(alpha * K * prior)``.

    Scaling by the category count ``K`` keeps ``alpha`` comparable across
    category counts: ``alpha=1`` with a uniform prior is the flat Dirichlet.
    """
    if alpha <= 0:
        raise ValueError(f"skew alpha must be > 0, got {alpha}")
    p = np.full(n_categories, 1.0 / n_categories) if prior is None else np.asarray(prior, float)
    conc = np.maximum(alpha * n_categories * p / p.sum(), 1e-3)
    mix = rng.dirichlet(conc, size=n_sites)
    mix = np.maximum(mix, 1e-12)  # tiny alphas underflow to exact zeros
    return mix / mix.sum(axis=1, keepdims=True)


def categorical(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One draw per row of ``probs`` (rows sum to 1), vectorised by inverse CDF."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random((probs.shape[0], 1)) * cdf[:, -1:]
    return np.minimum((u > cdf).sum(axis=1), probs.shape[1] - 1)


def split_by_class(
    labels: np.ndarray, n_sites: int, *, alpha: float, rng: np.random.Generator
) -> np.ndarray:
    """A site per sample such that each site's class mix follows ``Dirichlet(alpha)``.

    Sites get equal expected volume; the stream order is untouched, only the
    site of each sample is drawn (``P(site | class)`` from the site mixes).
    """
    classes, codes = np.unique(np.asarray(labels), return_inverse=True)
    prior = np.bincount(codes, minlength=len(classes)) / len(codes)
    mix = dirichlet_mix(n_sites, len(classes), alpha=alpha, rng=rng, prior=prior)
    site_given_class = mix.T / mix.T.sum(axis=1, keepdims=True)  # (classes, sites)
    return categorical(site_given_class[codes], rng)


def mix_by_site(sites: np.ndarray, categories: np.ndarray, n_sites: int, n_cat: int) -> np.ndarray:
    """Row-normalised counts ``(n_sites, n_cat)``; rows of empty sites are dropped."""
    counts = np.zeros((n_sites, n_cat))
    np.add.at(counts, (np.asarray(sites), np.asarray(categories)), 1.0)
    counts = counts[counts.sum(axis=1) > 0]
    return counts / counts.sum(axis=1, keepdims=True)


def mean_tv_distance(mix: np.ndarray) -> float:
    """Mean total-variation distance of each site's mix to the average mix."""
    centre = mix.mean(axis=0)
    return float(0.5 * np.abs(mix - centre).sum(axis=1).mean())


def mean_js_distance(mix: np.ndarray) -> float:
    """Mean Jensen-Shannon divergence (base 2, in [0, 1]) of each site to the average."""
    centre = mix.mean(axis=0)
    m = 0.5 * (mix + centre)

    def kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(p > 0, p * np.log2(p / q), 0.0)
        return terms.sum(axis=1)

    return float((0.5 * kl(mix, m) + 0.5 * kl(np.broadcast_to(centre, mix.shape), m)).mean())
