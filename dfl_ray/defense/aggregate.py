"""Numeric kernels shared by the aggregation rules: means, order statistics, distances, clipping.

Rows are float32 model vectors. With d = 431,080 and a few dozen rows a float64 copy of all rows
would cost tens of megabytes per aggregation, so the kernels keep [n, d] work in float32 and use
float64 only for [d] vectors and for sums of squares, where float32 would lose precision.
"""

from __future__ import annotations

import numpy as np


def stack_candidates(own: np.ndarray, models: np.ndarray) -> np.ndarray:
    """float32 [k + 1, d]: a fresh array holding the own model (row 0) and the received ones."""
    return np.concatenate([own[None, :], models], axis=0)


def weighted_mean(rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """float32 [d]: sum(w_i x_i) / sum(w_i) as a fresh array.

    The weights are normalised in float64 and the product is a float32 matrix-vector product,
    so no [n, d] temporary is made.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (rows.shape[0],):
        raise ValueError(f"weights must have shape ({rows.shape[0]},), got {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"weights must be finite and non-negative, got {w.tolist()}")
    total = float(w.sum())
    if total <= 0.0:
        raise ValueError("weights must not all be zero")
    return (w / total).astype(np.float32) @ rows


def coordinate_median(rows: np.ndarray) -> np.ndarray:
    """float32 [d]: the coordinate-wise median (mean of the two middle values for even n)."""
    n = rows.shape[0]
    lo, hi = (n - 1) // 2, n // 2
    part = np.partition(rows, [lo, hi], axis=0)
    if lo == hi:
        return part[lo].copy()
    return ((part[lo].astype(np.float64) + part[hi]) * 0.5).astype(np.float32)


def weighted_coordinate_median(rows: np.ndarray, votes: np.ndarray) -> np.ndarray:
    """[d]: per coordinate, the value at which the votes of the rows below and above balance.

    The result has the dtype of `rows`. Where the cumulative vote reaches exactly half, the two
    neighbouring values are averaged, so equal votes give the ordinary median. Rows with vote 0
    have no say. Work is one [n, d] argsort plus [d] vectors, one sorted position at a time.
    """
    w = np.asarray(votes, dtype=np.float64)
    n = rows.shape[0]
    if w.shape != (n,):
        raise ValueError(f"votes must have shape ({n},), got {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0.0:
        raise ValueError(f"votes must be finite, non-negative and not all zero, got {w.tolist()}")
    if np.all(w == w[0]):
        return coordinate_median(rows)
    half = 0.5 * float(w.sum())
    tol = 1e-9 * half
    order = np.argsort(rows, axis=0)
    cols = np.arange(rows.shape[1])
    below = np.zeros(rows.shape[1])
    lower = np.full(rows.shape[1], -1)
    upper = np.full(rows.shape[1], -1)
    waiting = np.zeros(rows.shape[1], dtype=bool)  # balanced exactly, upper neighbour not yet seen
    for j in range(n):
        vote = w[order[j]]
        found = waiting & (vote > 0.0)
        upper[found] = j
        waiting &= ~found
        below += vote
        reached = (lower < 0) & (below >= half - tol)
        lower[reached] = j
        waiting |= reached & (below <= half + tol)
    upper = np.where(upper < 0, lower, upper)
    lo_vals = rows[order[lower, cols], cols]
    hi_vals = rows[order[upper, cols], cols]
    return ((lo_vals.astype(np.float64) + hi_vals) * 0.5).astype(rows.dtype)


def coordinate_trimmed_mean(rows: np.ndarray, trim: int) -> tuple[np.ndarray, np.ndarray]:
    """Coordinate-wise mean of the values left after dropping the `trim` lowest and highest.

    Returns the float32 [d] mean and each row's share of it, float64 [n]: the fraction of the
    result it contributes, averaged over coordinates (the shares sum to 1). Equal values are
    credited to one of their rows arbitrarily; that changes the shares, never the mean.
    `trim = (n - 1) // 2` gives the median.
    """
    n = rows.shape[0]
    if trim < 0 or 2 * trim >= n:
        raise ValueError(f"trim must be in [0, {(n - 1) // 2}] for {n} rows, got {trim}")
    # Unstable argsort: half the time of a stable one for the short columns here.
    order = np.argsort(rows, axis=0)[trim : n - trim]
    kept = np.take_along_axis(rows, order, axis=0)
    mean = kept.mean(axis=0, dtype=np.float64).astype(np.float32)
    counts = np.bincount(order.ravel(), minlength=n).astype(np.float64)
    return mean, counts / counts.sum()


def distances_to(rows: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """float64 [n]: Euclidean distance of each row to `centre`, one row at a time."""
    out = np.empty(rows.shape[0], dtype=np.float64)
    for i in range(rows.shape[0]):
        diff = np.subtract(rows[i], centre, dtype=np.float64)
        out[i] = np.sqrt(diff @ diff)
    return out


def pairwise_sq_distances(rows: np.ndarray) -> np.ndarray:
    """float64 [n, n]: squared Euclidean distances between all pairs of rows.

    Differences are taken directly rather than through |a|^2 + |b|^2 - 2ab, which cancels
    catastrophically for models that are close together, exactly the ones that matter.
    """
    n = rows.shape[0]
    out = np.zeros((n, n), dtype=np.float64)
    for i in range(n - 1):
        diff = rows[i + 1 :] - rows[i]
        np.square(diff, out=diff)
        out[i, i + 1 :] = diff.sum(axis=1, dtype=np.float64)
    return out + out.T


def krum_scores(sq_dists: np.ndarray, f: int) -> np.ndarray:
    """float64 [n]: Krum score of each row, the sum of its squared distances to its nearest others.

    Blanchard et al. (2017) sum over the n - f - 2 nearest. When n <= f + 2 that count is below
    one; we then use the single nearest neighbour, which still ranks rows by isolation.
    """
    n = sq_dists.shape[0]
    if sq_dists.shape != (n, n):
        raise ValueError(f"sq_dists must be square, got shape {sq_dists.shape}")
    if f < 0:
        raise ValueError(f"f must be >= 0, got {f}")
    if n == 1:
        return np.zeros(1)
    nearest = min(max(n - f - 2, 1), n - 1)
    others = np.where(np.eye(n, dtype=bool), np.inf, sq_dists)
    return np.sort(others, axis=1)[:, :nearest].sum(axis=1)


def clip_factors(distances: np.ndarray, radius: float) -> np.ndarray:
    """float64 [n]: min(1, radius / d_i), the factor that pulls each point into the ball.

    A point at distance 0 keeps factor 1; with radius 0 every other point collapses on the centre.
    """
    d = np.asarray(distances, dtype=np.float64)
    if radius < 0 or np.isnan(radius):
        raise ValueError(f"radius must be >= 0, got {radius}")
    out = np.ones_like(d)
    far = d > radius
    out[far] = radius / d[far]
    return out
