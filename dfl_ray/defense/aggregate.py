"""Numeric kernels shared by the aggregation rules: means, order statistics, distances, clipping.

Rows are float32 model vectors. With d = 431,080 and a few dozen rows a float64 copy of all rows
would cost tens of megabytes per aggregation, so the kernels keep [n, d] work in float32 and use
float64 only for [d] vectors and for sums of squares, where float32 would lose precision.

Kernels that only sum rows or measure them (`weighted_sum`, `weighted_mean`, `distances_to`)
take n rows as an [n, d] array or as n separate [d] arrays, and read each row where it lies
(read-only Ray object-store views included); so does `coordinate_trimmed_mean`, which sorts
them a block of coordinates at a time. The other kernels that sort or compare across rows take
an [n, d] array, which `stack_candidates` builds. Every kernel returns fresh arrays that alias no
input and no other call's result, and keeps no state between calls, so any number of nodes may
share a thread or a process.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# Elements per block of `distances_to`: a 512 KiB float64 buffer (2^16 values) stays in a
# core's L2 cache while a row's differences pass through it.
_BLOCK = 1 << 17

# Elements per block of `weighted_sum`: the float32 block of the result and the block of one
# scaled row (256 KiB each) stay in L2 cache while every row adds its part.
_SUM_BLOCK = 1 << 16

# Coordinates per block of `coordinate_trimmed_mean`: for ten rows the values and their sort
# order (float32 and int64, 1.9 MiB together) stay in L2 cache.
_SORT_BLOCK = 1 << 14

Rows = np.ndarray | Sequence[np.ndarray]
"""n float32 [d] rows: an [n, d] array, or a sequence of separate [d] arrays."""


def stack_candidates(own: np.ndarray, rows: Rows) -> np.ndarray:
    """float32 [k + 1, d]: the own model (row 0) and the received rows, in one fresh array.

    For the rules that compare candidates across rows (Krum, centered clipping, dfl_trust).
    The array belongs to the caller: nothing else holds or reuses it.
    """
    return np.stack((own, *rows)).astype(np.float32, copy=False)


def weighted_sum(rows: Rows, weights: np.ndarray) -> np.ndarray:
    """float32 [d]: sum(w_i x_i) as a fresh array, reading each row where it lies.

    The sum runs block by block (`_SUM_BLOCK` elements), so the block of the result stays in
    cache while every row adds its part: each row is scaled into a per-call block buffer, in
    float32 with its weight rounded to float32, and added, row 0 first, then row 1, and so on.
    No [n, d] temporary is made and the rows may be read-only or strided views.
    """
    w = np.asarray(weights, dtype=np.float64)
    n = len(rows)
    if n == 0:
        raise ValueError("weighted_sum needs at least one row")
    if w.shape != (n,):
        raise ValueError(f"weights must have shape ({n},), got {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError(f"weights must be finite, got {w.tolist()}")
    d = _check_rows(rows)
    first, alpha0 = rows[0], np.float32(w[0])
    rest = [(row, np.float32(alpha)) for row, alpha in zip(rows[1:], w[1:].tolist(), strict=True)]
    out = np.empty(d, dtype=np.float32)
    scaled = np.empty(min(d, _SUM_BLOCK), dtype=np.float32)
    for start in range(0, d, _SUM_BLOCK):
        stop = min(start + _SUM_BLOCK, d)
        acc, part = out[start:stop], scaled[: stop - start]
        np.multiply(first[start:stop], alpha0, out=acc)
        for row, alpha in rest:
            np.multiply(row[start:stop], alpha, out=part)
            np.add(acc, part, out=acc)
    return out


def weighted_mean(rows: Rows, weights: np.ndarray) -> np.ndarray:
    """float32 [d]: sum(w_i x_i) / sum(w_i) as a fresh array.

    The weights are normalised in float64. An [n, d] array is reduced with one float32
    matrix-vector product (the rows already lie in one array, so one BLAS pass reads them best);
    a sequence of rows goes through `weighted_sum` and is read in place. Neither makes an
    [n, d] temporary.
    """
    w = np.asarray(weights, dtype=np.float64)
    n = len(rows)
    if w.shape != (n,):
        raise ValueError(f"weights must have shape ({n},), got {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"weights must be finite and non-negative, got {w.tolist()}")
    total = float(w.sum())
    if total <= 0.0:
        raise ValueError("weights must not all be zero")
    if isinstance(rows, np.ndarray) and rows.ndim == 2:
        return (w / total).astype(np.float32) @ rows
    return weighted_sum(rows, w / total)


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


def coordinate_trimmed_mean(rows: Rows, trim: int) -> tuple[np.ndarray, np.ndarray]:
    """Coordinate-wise mean of the values left after dropping the `trim` lowest and highest.

    Returns the float32 [d] mean and each row's share of it, float64 [n]: the fraction of the
    result it contributes, averaged over coordinates (the shares sum to 1). Equal values are
    credited to one of their rows arbitrarily; that changes the shares, never the mean.
    `trim = (n - 1) // 2` gives the median.

    The rows (an [n, d] array or n separate [d] arrays) are read `_SORT_BLOCK` coordinates at a
    time into a per-call [n, block] buffer and sorted there, so neither an [n, d] copy nor an
    [n, d] index array is made; each coordinate is sorted and averaged exactly as it would be
    in one [n, d] array.
    """
    n = len(rows)
    if trim < 0 or 2 * trim >= n:
        raise ValueError(f"trim must be in [0, {(n - 1) // 2}] for {n} rows, got {trim}")
    d = _check_rows(rows)
    mean = np.empty(d, dtype=np.float32)
    counts = np.zeros(n, dtype=np.int64)
    buf = np.empty((n, min(d, _SORT_BLOCK)), dtype=np.float32)
    for start in range(0, d, _SORT_BLOCK):
        stop = min(start + _SORT_BLOCK, d)
        block = buf[:, : stop - start]
        for i, row in enumerate(rows):
            block[i] = row[start:stop]
        # Unstable argsort: faster for short columns, and ties only move credit between rows.
        order = np.argsort(block, axis=0)[trim : n - trim]
        kept = np.take_along_axis(block, order, axis=0)
        mean[start:stop] = kept.mean(axis=0, dtype=np.float64)
        counts += np.bincount(order.ravel(), minlength=n)
    shares = counts.astype(np.float64)
    return mean, shares / shares.sum()


def distances_to(rows: Rows, centre: np.ndarray) -> np.ndarray:
    """float64 [n]: Euclidean distance of each row to `centre`, reading each row where it lies.

    Differences and squares are float64, taken block by block into one per-call 512 KiB buffer
    that stays in cache, instead of a fresh float64 difference per row.
    """
    d = centre.shape[0]
    _check_rows(rows, d)
    out = np.empty(len(rows), dtype=np.float64)
    step = _BLOCK // 2  # float64 elements in 512 KiB
    buf = np.empty(min(d, step), dtype=np.float64)
    for i, row in enumerate(rows):
        total = 0.0
        for start in range(0, d, step):
            diff = buf[: min(step, d - start)]
            np.subtract(row[start : start + step], centre[start : start + step], out=diff,
                        dtype=np.float64)
            total += float(diff @ diff)
        out[i] = math.sqrt(total)
    return out


def pairwise_sq_distances(rows: np.ndarray) -> np.ndarray:
    """float64 [n, n]: squared Euclidean distances between all pairs of rows.

    Differences are taken directly rather than through |a|^2 + |b|^2 - 2ab, which cancels
    catastrophically for models that are close together, exactly the ones that matter. Each
    pair goes through one per-call [d] buffer, so no [n, d] temporary is made.
    """
    n = rows.shape[0]
    out = np.zeros((n, n), dtype=np.float64)
    diff = np.empty(rows.shape[1:], dtype=rows.dtype)
    for i in range(n - 1):
        for j in range(i + 1, n):
            np.subtract(rows[j], rows[i], out=diff)
            np.square(diff, out=diff)
            out[i, j] = diff.sum(dtype=np.float64)
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


def _check_rows(rows: Rows, d: int | None = None) -> int:
    """The length shared by float32 [d] rows (`d` itself if given); ValueError names the first
    row that is not a float32 array of that length."""
    for i, row in enumerate(rows):
        if d is None and isinstance(row, np.ndarray) and row.ndim == 1:
            d = row.shape[0]
        if not isinstance(row, np.ndarray) or row.dtype != np.float32 or row.shape != (d,):
            got = (f"{row.dtype} array of shape {row.shape}" if isinstance(row, np.ndarray)
                   else type(row).__name__)
            want = "1-D float32 arrays" if d is None else f"float32 arrays of shape ({d},)"
            raise ValueError(f"rows must be {want}; row {i} is {got}")
    return 0 if d is None else d
