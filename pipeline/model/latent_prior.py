"""The latent mixture: where the training rows' codes actually lie, per condition combination, fitted after
training so that generation draws z from there rather than from the prior p(z|c).

Why: the ELBO pulls each row's posterior q(z|x,c) towards p(z|c), but their average (the aggregated posterior)
never matches a single Gaussian. Decoding z drawn from p(z|c) lands partly where no training code lies (the
decoder never learned those places) and misses clusters that hold many rows. A Gaussian mixture fitted to the
codes ("ex-post density estimation", Ghosh et al., ICLR 2020) fixes that without touching the model or its
training: on Adult it moved mostlyai-qa accuracy on held-out rows from 0.940 to 0.952 (BENCHMARKS.md, Quality).

Fitted on the driver from the posterior means of up to MAX_CODES training rows (kept by a hash of the row, so the
same rows whatever the block order), per exact condition vector with at least ROWS_PER_COMPONENT rows per
component. A combination that calls for at most CLUSTER_MIN_COMPONENTS components gets a full-covariance Gaussian
mixture (EM; `model.latent_mixture` caps it); a larger one gets one k-means cluster per ROWS_PER_COMPONENT rows,
each a Gaussian with its rows' mean and covariance. EM's cost grows with components x latent^2 per row and
iteration, so it was capped at 20 components (11.9 s on Adult); the clusters take 1.5 s there for 384 components,
and the finer density scored higher on held-out rows (0.952 -> 0.957, BENCHMARKS.md), while on tables with a few
thousand rows EM's soft fit scored higher than clusters. Each component's covariance adds its rows' mean
posterior variance (a cluster's own rows; all the combination's rows under EM), since the mixture of the rows'
posteriors has that spread too. A component that ends up holding fewer than MIN_COMPONENT_ROWS rows is dropped:
no component sits on a few rows. Combinations with too few rows, and condition values generation asks for that
training never had, keep p(z|c). Not fitted under `train.privacy` (it would need its own noise).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch

MAX_CODES = 50_000  # training rows whose codes the mixture is fitted on
ROWS_PER_COMPONENT = 100  # a combination with n rows gets at most n // 100 components
MIN_COMPONENT_ROWS = 25  # fewer rows than this in a fitted component: dropped
CLUSTER_MIN_COMPONENTS = 50  # a combination with rows for more components than this is clustered, not fitted by EM
FIT_BATCH_ROWS = 65_536


@dataclass
class LatentMixture:
    """Gaussian components grouped by condition combination: `keys[m]` is combination m's condition vector, and
    the components of m are rows first[m] .. first[m] + count[m] - 1 of weights / means / scale_tril."""
    keys: torch.Tensor        # (M, c_dim) condition vectors
    owner: torch.Tensor       # (T,) combination of each component, ascending
    weights: torch.Tensor     # (T,) component weights; they sum to 1 within each combination
    means: torch.Tensor       # (T, latent)
    scale_tril: torch.Tensor  # (T, latent, latent) Cholesky factors of the covariances

    @property
    def combinations(self) -> int:
        return len(self.keys)

    @property
    def components(self) -> int:
        return len(self.weights)


def keep_row(x: torch.Tensor, c: torch.Tensor, share: float, seed: int) -> torch.Tensor:
    """(n,) bool: a row is kept when a hash of its values falls below `share`, so the kept rows do not depend on
    the order or the blocks in which they arrive. A Gaussian element with no value (NaN: a null, a point mass)
    hashes as a fixed odd number: a NaN would make the whole row's hash NaN and the row never kept, so the
    mixture of a large table would see only rows without a single null or point mass."""
    values = torch.cat([x, c], dim=1).double().nan_to_num(nan=-0.7071067811865476)
    projection = torch.Generator().manual_seed(seed)
    weights = torch.rand(values.shape[1], generator=projection, dtype=torch.float64) + 0.5
    hashed = torch.remainder((values @ weights) * 1_000_003.0 + 0.61803398875, 1.0)  # in [0, 1), any sign
    return hashed < share


@torch.no_grad()
def collect_codes(model: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], rows: int,
                  seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(condition vectors, posterior means, posterior variances) of up to about MAX_CODES training rows, sorted by
    their values so the fit never depends on arrival order."""
    model.eval()
    share = min(1.0, MAX_CODES / max(rows, 1))
    conditions, means, variances = [], [], []
    for x, c in batches:
        kept = keep_row(x, c, share, seed) if share < 1.0 else slice(None)
        mu, logvar = model.posterior(x[kept], c[kept])
        conditions.append(c[kept].numpy())
        means.append(mu.numpy())
        variances.append(logvar.exp().numpy())
    c, mu, var = (np.concatenate(parts).astype(np.float64) for parts in (conditions, means, variances))
    order = np.lexsort(np.concatenate([c, mu], axis=1).T[::-1])
    return c[order], mu[order], var[order]


def fit_mixture(conditions: np.ndarray, means: np.ndarray, variances: np.ndarray, max_components: int,
                seed: int) -> LatentMixture | None:
    """A Gaussian mixture per condition combination with enough rows (None when no combination has)."""
    keys, group = np.unique(conditions, axis=0, return_inverse=True)
    group = group.reshape(-1)
    kept_keys, owner, weights, centres, trils = [], [], [], [], []
    for m in range(len(keys)):
        codes, spread = means[group == m], variances[group == m]
        rows_for = len(codes) // ROWS_PER_COMPONENT
        if rows_for > CLUSTER_MIN_COMPONENTS:
            fitted = _clusters(codes, spread, rows_for, seed)
        elif min(max_components, rows_for) >= 1:
            fitted = _em_mixture(codes, spread, min(max_components, rows_for), seed)
        else:
            continue
        weight, centre, covariance = fitted
        alive = weight * len(codes) >= MIN_COMPONENT_ROWS
        if not alive.any():
            continue
        kept_keys.append(keys[m])
        owner += [len(kept_keys) - 1] * int(alive.sum())
        weights.append(weight[alive] / weight[alive].sum())
        centres.append(centre[alive])
        trils.append(np.linalg.cholesky(covariance[alive]))
    if not kept_keys:
        return None
    as_tensor = lambda parts: torch.from_numpy(np.concatenate(parts)).float()  # noqa: E731
    return LatentMixture(keys=torch.from_numpy(np.stack(kept_keys)).float(), owner=torch.tensor(owner),
                         weights=as_tensor(weights), means=as_tensor(centres), scale_tril=as_tensor(trils))


def _em_mixture(codes: np.ndarray, spread: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray,
                                                                                  np.ndarray]:
    """(weights, means, covariances) of a full-covariance Gaussian mixture fitted by EM to the posterior means;
    every covariance adds the rows' mean posterior variance `spread`."""
    from sklearn.mixture import GaussianMixture

    mixture = GaussianMixture(k, covariance_type="full", reg_covar=1e-4, random_state=seed, max_iter=100)
    mixture.fit(codes)
    return mixture.weights_, mixture.means_, mixture.covariances_ + np.diag(spread.mean(axis=0))


def _clusters(codes: np.ndarray, spread: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray,
                                                                               np.ndarray]:
    """(weights, means, covariances) of k k-means clusters of the posterior means: each cluster's share of the
    rows, their mean, and their covariance plus their own mean posterior variance."""
    from sklearn.cluster import KMeans

    labels = KMeans(k, n_init=1, max_iter=50, random_state=seed).fit(codes).labels_
    sizes = np.bincount(labels, minlength=k)
    centre = np.zeros((k, codes.shape[1]))
    covariance = np.tile(np.eye(codes.shape[1]) * 1e-4, (k, 1, 1))
    for j in np.flatnonzero(sizes):
        members = codes[labels == j]
        centre[j] = members.mean(axis=0)
        covariance[j] += (np.cov(members.T, bias=True).reshape(codes.shape[1], codes.shape[1])
                          + np.diag(spread[labels == j].mean(axis=0)))
    return sizes / len(codes), centre, covariance


def draw(mixture: LatentMixture, combination: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """(n, latent) codes for rows of the given combinations (every entry >= 0): a component by its weight within
    the row's combination, then a Gaussian draw from it. The cumulative weights restart at each combination,
    shifted by its index, so one sorted search finds every row's component."""
    cumulative = torch.cumsum(mixture.weights.double(), 0)
    starts = torch.searchsorted(mixture.owner, torch.arange(mixture.combinations, device=combination.device))
    before = torch.cat([cumulative.new_zeros(1), cumulative])[starts]  # mass of the combinations before each
    shifted = cumulative - before[mixture.owner] + mixture.owner.double()
    uniform = torch.rand(len(combination), generator=generator, device=combination.device, dtype=torch.float64)
    component = torch.searchsorted(shifted, combination.double() + uniform.clamp(max=1 - 1e-12))
    component = torch.minimum(component, starts[combination] + torch.bincount(
        mixture.owner, minlength=mixture.combinations)[combination] - 1)
    noise = torch.randn((len(combination), mixture.means.shape[1]), generator=generator, device=combination.device)
    return mixture.means[component] + _scaled(noise, component, mixture.scale_tril)


def _scaled(noise: torch.Tensor, component: torch.Tensor, scale_tril: torch.Tensor) -> torch.Tensor:
    """(n, latent): each row's noise times its component's Cholesky factor, one matrix product per component
    present. Gathering a (latent x latent) factor per row instead moved 4 KB per row (268 MB per 65,536-row
    batch at latent 32) and cost about a sixth of generation's rate."""
    order = torch.argsort(component, stable=True)
    present, counts = torch.unique_consecutive(component[order], return_counts=True)
    scaled = torch.cat([rows @ scale_tril[k].T for k, rows in zip(present.tolist(),
                                                                    torch.split(noise[order], counts.tolist()))])
    return torch.empty_like(noise).index_copy_(0, order, scaled)
