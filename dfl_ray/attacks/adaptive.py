"""White-box attacks against this project's own default defenses: the attacker knows the rule
and its parameters and crafts the largest damage that still passes every test the rule makes.

`GateEdge` targets dfl_guard (`dfl_ray.defense.guard`): it keeps the output layer as honestly
trained, so the reversal test (the output layer's update skew) passes, and replaces every other
coordinate by the honest mean update pushed against its own direction, sized so that its
distance to an honest receiver lies just inside the gate radius, gate x the median distance the
receiver sees. It is the adaptive-attack recipe of Tramer et al. ("On Adaptive Attacks to
Adversarial Example Defenses", NeurIPS 2020) applied to a Byzantine-robust rule, as Shejwalkar
and Houmansadr (NDSS 2021) and Fang et al. ("Local Model Poisoning Attacks to Byzantine-Robust
Federated Learning", USENIX Security 2020) do for Krum and trimmed mean. `KinEdge` adds to it
what beats dfl_guard's kin test, `ShieldEdge` does the same against dfl_shield, `SentinelEdge`
against dfl_sentinel. `ReversalEdge` reverses the whole update and writes the output layer
so that dfl_guard's reversal test reads it as learnt; `ReversalFit` sizes that output layer to
the `head_clip` bound.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from dfl_ray.attacks.base import Attack, check_count, check_positive
from dfl_ray.defense.guard import head_factor, head_limits


def edge_updates(trained: np.ndarray, base: np.ndarray, keep_last: int,
                 observed: np.ndarray | None) -> tuple[int, np.ndarray, np.ndarray]:
    """(coordinates before the kept tail, the attacker's own update, the honest updates it
    observed with its own as the last row), in float64: what the edge attacks compute from."""
    body = trained.size - min(int(keep_last), trained.size)
    own = (trained - base).astype(np.float64)
    u = own[None, :] if observed is None or len(observed) == 0 else np.vstack(
        [np.asarray(observed, dtype=np.float64), own[None, :]])
    return body, own, u

@dataclass(frozen=True)
class GateEdge(Attack):
    """Publish base + mean(u) - s * mean(u) / ||mean(u)|| off the output layer, the trained
    output layer on it.

    u are the honest updates observed (see `dfl_ray.attacks.base`). The attacker estimates the
    distance D a receiver's gate is set from as the median distance between two honest models
    it observed, and picks s so that the published model lies about `fraction` x `gate` x D
    from an honest model: s^2 = (fraction gate D)^2 - mean ||u_i - mean(u)||^2. `keep_last`
    is the size of the output layer left as trained (LeNet: 5,010 = 500 x 10 weights + 10
    biases). Without observations yet, the attacker's own update stands in for them.

    Against dfl_guard's opposition test (`oppose` < 1: a model whose update has cosine below
    -oppose with the receiver's own update is left out), the push is shortened to a and padded
    with a direction n orthogonal to every honest update observed, at the same distance from
    the honest models, so that its cosine with each stays above -0.9 x `oppose`: the most
    push the test lets through.
    """

    name: ClassVar[str] = "gate_edge"
    observes: ClassVar[bool] = True
    gate: float = 3.0
    """The gate of the defense attacked (dfl_guard's default 3)."""
    fraction: float = 0.95
    """Where inside the gate radius to sit: 0.95 just inside, 0.5 at half (never clipped)."""
    keep_last: int = 5010
    """Trailing coordinates published as trained (the output layer)."""
    oppose: float = 1.0
    """The opposition test of the defense attacked (dfl_guard's default 1: off)."""
    whole: float = 0.0
    """1: read the gate's median distance over the whole model, the kept output layer included,
    as a receiver that gates the model as one vector does (dfl_guard's default); 0: over the
    rest only, as one that gates the output layer apart does (`split`)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("gate", self.gate)
        check_positive("fraction", self.fraction)
        check_count("keep_last", self.keep_last)
        check_positive("oppose", self.oppose)
        if self.oppose > 1.0:
            raise ValueError(f"attack parameter oppose must be in (0, 1] (1: the test off), "
                             f"got {self.oppose!r}")
        if isinstance(self.whole, bool) or self.whole not in (0, 1):
            raise ValueError(f"attack parameter whole must be 0 or 1, got {self.whole!r}")

    def _observed_body(self, trained: np.ndarray, base: np.ndarray,
                       observed: np.ndarray | None) -> tuple[int, np.ndarray]:
        """(coordinates before the kept output layer, the honest updates observed there in
        float64, or the attacker's own update alone without observations)."""
        body = trained.size - min(int(self.keep_last), trained.size)
        if observed is None or len(observed) == 0:
            return body, (trained - base)[None, :body].astype(np.float64)
        return body, np.asarray(observed[:, :body], dtype=np.float64)

    def _publish(self, trained: np.ndarray, base: np.ndarray, rng: np.random.Generator,
                 turn: int, observed: np.ndarray | None) -> np.ndarray:
        return self._edge(trained, base, rng, observed)[0]

    def _edge(self, trained: np.ndarray, base: np.ndarray, rng: np.random.Generator,
              observed: np.ndarray | None) -> tuple[np.ndarray, int, np.ndarray]:
        """(the published model, the coordinates before the kept output layer, the mean honest
        update observed there)."""
        body, u = self._observed_body(trained, base, observed)
        mean = u.mean(axis=0)
        norm = float(np.linalg.norm(mean))
        out = trained.copy()
        if norm == 0.0 or body == 0:
            return out, body, mean
        # Distances are read where the receiver's gate reads them; the published model's
        # output layer is an honest one, so only the rest has to stay inside.
        read = u
        if self.whole:
            read = (trained - base)[None, :].astype(np.float64) if observed is None \
                or len(observed) == 0 else np.asarray(observed, dtype=np.float64)
        spread = float(np.mean(((u - mean) ** 2).sum(axis=1)))
        if self.whole:
            # Its own output layer adds about one more honest spread there to each distance.
            spread = 2.0 * float(np.mean(((read - read.mean(axis=0)) ** 2).sum(axis=1))) - spread
        if len(read) >= 2:
            sq = (read * read).sum(axis=1)
            pair = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (read @ read.T), 0.0)
            gate_d = float(np.median(np.sqrt(pair[np.triu_indices(len(read), 1)])))
        else:  # one update: two honest models differ by about sqrt(2) update norms
            gate_d = float(np.sqrt(2.0)) * float(np.linalg.norm(read[0]))
        reach = float(self.fraction) * float(self.gate) * gate_d
        s = float(np.sqrt(max(reach * reach - spread, 0.0)))
        direction = mean / norm
        # cos(-a d + n, u_j) = -a c_j / |.|, c_j = cos(d, u_j): keep a / |.| <= q
        lengths = np.linalg.norm(u, axis=1)
        c = float(np.max((u @ direction)[lengths > 0] / lengths[lengths > 0]))
        q = 0.9 * float(self.oppose) / c if c > 0.0 else np.inf
        if q >= 1.0 or s <= norm:
            out[:body] = (base[:body] + (norm - s) * direction).astype(np.float32)
            return out, body, mean
        # The push a and padding |n| keep the distance to the honest models, (norm + a)^2 +
        # |n|^2 = s^2, with |n|^2 = a^2 (1 / q^2 - 1).
        a = q * q * (-norm + float(np.sqrt(norm * norm + (s * s - norm * norm) / (q * q))))
        pad = rng.standard_normal(body)
        basis, _ = np.linalg.qr(u.T)  # the observed updates' span, orthonormal
        pad -= basis @ (basis.T @ pad)
        pad *= a * float(np.sqrt(1.0 / (q * q) - 1.0)) / float(np.linalg.norm(pad))
        out[:body] = (base[:body] - a * direction + pad).astype(np.float32)
        return out, body, mean


@dataclass(frozen=True)
class KinEdge(GateEdge):
    """`GateEdge` with each colluder pushing (away from the honest mean) on a random `share` of
    the coordinates only, the push scaled by 1 / sqrt(share) so that it keeps its length:
    white-box against dfl_guard's kin test (`kin`: models whose deviations from the median
    agree beyond a cosine count as one voice).

    Colluders draw their coordinates independently (each from its own generator), so two of
    their models' deviations have cosine about `share`; below the test's threshold (dfl_guard's
    default 0.5), each counts as a voice of its own. The pushes still add up: k colluders push
    about sqrt(k + k (k - 1) share) times one push's length together, where identical models
    pushed k times.
    """

    name: ClassVar[str] = "kin_edge"
    share: float = 1.0 / 3.0
    """Share of the coordinates (outside the kept output layer) each colluder pushes on."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("share", self.share)
        if self.share > 1.0:
            raise ValueError(f"attack parameter share must be in (0, 1], got {self.share!r}")

    def _publish(self, trained: np.ndarray, base: np.ndarray, rng: np.random.Generator,
                 turn: int, observed: np.ndarray | None) -> np.ndarray:
        out, body, mean = self._edge(trained, base, rng, observed)
        centre = base[:body] + mean
        push = out[:body] - centre  # what gate_edge adds to the honest mean
        mask = rng.random(body) < float(self.share)
        out[:body] = (centre + np.where(mask, push / np.sqrt(float(self.share)), 0.0)
                      ).astype(np.float32)
        return out


@dataclass(frozen=True)
class ProbeEdge(GateEdge):
    """`GateEdge` shortened until it passes dfl_guard's validation probe as the attacker
    reads it on its own validation split: white-box against `dfl_guard:probe=...`.

    The probe moves a receiver's model w `probe_step` of the way towards a received model's
    feature layers and rejects it when the validation loss rises by more than `probe` x the
    median rise of the received models + `probe_slack`. The attacker cannot measure a
    receiver's rise (it lacks the receiver's data), so it plays the receiver itself: it
    measures, on its own split, the rise each observed honest model causes from its own
    trained model, sets the threshold from their median as the rule does, and publishes
    trained + t (gate edge - trained) off the output layer, t in [0, 1] the largest (by
    bisection) whose rise stays under `safety` x that threshold.

    Against `forgive` (a sender of good standing keeps its weight in a round it fails the
    probe alone), every `burst`-th publication is the whole gate-edge model: with dfl_guard's
    beta 0.3, a failure every n-th round leaves a reputation of (1 - 0.7^(n-1)) / (1 - 0.7^n)
    before the next failure (0.78 for n = 3, 0.86 for n = 4), so against `forgive` 0.8 the
    most frequent burst still forgiven is every 4th.
    """

    name: ClassVar[str] = "probe_edge"
    uses_loss: ClassVar[bool] = True
    probe: float = 2.0
    """The probe ratio of the defense attacked."""
    probe_step: float = 0.5
    """The probe step of the defense attacked (dfl_guard's default 0.5)."""
    probe_slack: float = 0.05
    """The probe slack of the defense attacked (dfl_guard's default 0.05)."""
    safety: float = 0.8
    """Share of the threshold (as the attacker reads it) to stay under."""
    burst: int = 0
    """Publish the unshortened gate-edge model every this many publications (0: never)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("probe", "probe_step", "safety"):
            check_positive(name, getattr(self, name))
        if (isinstance(self.probe_slack, bool) or not isinstance(self.probe_slack, int | float)
                or not self.probe_slack >= 0.0):
            raise ValueError(f"attack parameter probe_slack must be a number >= 0, "
                             f"got {self.probe_slack!r}")
        check_count("burst", self.burst)

    def _publish_with_loss(self, trained: np.ndarray, base: np.ndarray,
                           rng: np.random.Generator, turn: int, observed: np.ndarray | None,
                           loss: Callable[[np.ndarray], float] | None) -> np.ndarray:
        edge, body, _ = self._edge(trained, base, rng, observed)
        if loss is None:
            raise ValueError("probe_edge needs the attacker's validation loss (loss=...)")
        if body == 0 or observed is None or len(observed) == 0:
            return edge
        if self.burst and turn % int(self.burst) == int(self.burst) - 1:
            return edge
        step = np.float32(self.probe_step)
        start = float(loss(trained))

        def rise(target: np.ndarray) -> float:
            moved = trained.copy()
            moved[:body] += step * (target - trained[:body])
            return float(loss(moved)) - start

        honest = [rise(base[:body] + u[:body]) for u in observed]
        limit = float(self.safety) * (float(self.probe) * max(float(np.median(honest)), 0.0)
                                      + float(self.probe_slack))
        push = edge[:body] - trained[:body]
        if rise(trained[:body] + push) <= limit:
            return edge
        low, high = 0.0, 1.0
        for _ in range(10):
            mid = 0.5 * (low + high)
            low, high = (mid, high) if rise(trained[:body] + mid * push) <= limit else (low, mid)
        out = trained.copy()
        out[:body] = trained[:body] + np.float32(low) * push
        return out


@dataclass(frozen=True)
class ShieldEdge(Attack):
    """Publish base - t * mean(u) / ||mean(u)|| off the output layer, the trained output layer
    on it: white-box against dfl_shield (`dfl_ray.defense.shield`).

    dfl_shield clips every update to `clip` x the median update norm r and gates at a larger
    multiple, so the attacker sizes its update to t = `fraction` x `clip` x r, r estimated as
    the median norm of the honest updates it observed and its own: never clipped, never gated,
    pointing straight against the honest mean. It cannot run the shield's validation probe,
    which needs data it does not hold; that test is what is left to stop it.
    """

    name: ClassVar[str] = "shield_edge"
    observes: ClassVar[bool] = True
    clip: float = 2.0
    """The clip of the defense attacked (dfl_shield's default 2)."""
    fraction: float = 0.95
    """Where inside the clip radius to sit."""
    keep_last: int = 5010
    """Trailing coordinates published as trained (the output layer)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("clip", self.clip)
        check_positive("fraction", self.fraction)
        check_count("keep_last", self.keep_last)

    def _publish(self, trained: np.ndarray, base: np.ndarray, rng: np.random.Generator,
                 turn: int, observed: np.ndarray | None) -> np.ndarray:
        body, own, u = edge_updates(trained, base, self.keep_last, observed)
        mean = u[:, :body].mean(axis=0)
        norm = float(np.linalg.norm(mean))
        out = trained.copy()
        if norm == 0.0 or body == 0:
            return out
        reach = float(self.fraction) * float(self.clip) * float(np.median(np.linalg.norm(u, axis=1)))
        # The head stays as trained, so the body gets what is left of the reach.
        head = float(np.linalg.norm(own[body:]))
        t = float(np.sqrt(max(reach * reach - head * head, 0.0)))
        out[:body] = (base[:body] - (t / norm) * mean).astype(np.float32)
        return out


@dataclass(frozen=True)
class SentinelEdge(Attack):
    """Publish base + mean(u) - z * std(u) off the output layer (coordinate by coordinate),
    shortened to `fraction` x `clip` x r when longer, and the trained output layer on it:
    white-box against dfl_sentinel (`dfl_ray.defense.sentinel`).

    u are the honest updates observed and the attacker's own, r their median norm (the
    attacker's estimate of a receiver's own update norm, which sets dfl_sentinel's clip radius).
    dfl_sentinel trims the feature layers coordinate by coordinate, so a push against the honest
    mean by a whole update norm is cut away; what survives a trimmed mean is a shift inside the
    honest spread, ALIE's recipe (Baruch et al., NeurIPS 2019): all colluders publish the same
    value, `z` honest standard deviations below the honest mean, so that they fill the low end
    of every coordinate's trimmed window. The output layer stays as trained (the reversal test
    passes), and the update stays inside the clip radius (never clipped). The sentinel's
    validation test needs data the attacker never sees; a small `z` is the attacker's lever
    against it.
    """

    name: ClassVar[str] = "sentinel_edge"
    observes: ClassVar[bool] = True
    z: float = 1.0
    """Honest standard deviations below the honest mean, per coordinate."""
    clip: float = 2.0
    """The clip of the defense attacked (dfl_sentinel's default 2)."""
    fraction: float = 0.95
    """At most this share of the clip radius."""
    keep_last: int = 5010
    """Trailing coordinates published as trained (the output layer)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("z", self.z)
        check_positive("clip", self.clip)
        check_positive("fraction", self.fraction)
        check_count("keep_last", self.keep_last)

    def _publish(self, trained: np.ndarray, base: np.ndarray, rng: np.random.Generator,
                 turn: int, observed: np.ndarray | None) -> np.ndarray:
        body, own, u = edge_updates(trained, base, self.keep_last, observed)
        out = trained.copy()
        if body == 0:
            return out
        shift = u[:, :body].mean(axis=0) - float(self.z) * u[:, :body].std(axis=0)
        reach = float(self.fraction) * float(self.clip) * float(np.median(np.linalg.norm(u, axis=1)))
        head = float(np.linalg.norm(own[body:]))
        room = float(np.sqrt(max(reach * reach - head * head, 0.0)))
        length = float(np.linalg.norm(shift))
        if length > room:
            shift *= room / length
        out[:body] = (base[:body] + shift).astype(np.float32)
        return out


@dataclass(frozen=True)
class ReversalEdge(Attack):
    """Publish base - (trained - base), the whole update reversed, with the output layer's
    reversal hidden: white-box against dfl_guard's reversal test (`reversal_readings`).

    A reversed update lowers the classes the attacker's data raised, which the reversal test
    reads as a negative skew of the output bias and of the output weights' row sums. Each of
    the two readings q (centred over the classes, as `lower` reads them) is mended on one
    class t, its largest: q_t is raised by d and every class lowered by d / classes, so the
    class-sum stays what the reversed update had (the balance test reads that sum), and d is
    the least that lifts the skew (max + min) / (max - min) to `skew`. A row's sum is raised by
    spreading d over its weights. The receiver reads the skew from its own reference, not the
    attacker's round start; `skew` is the margin kept for that difference. Everything but the
    output layer is the plain reversal of `sign_flip_layer_kept`.

    The layout is LeNet's (and every model here): the output layer is the last `keep_last`
    coordinates, `classes` rows of weights, then `classes` biases. A model smaller than
    `keep_last` is published as the plain reversal.
    """

    name: ClassVar[str] = "reversal_edge"
    keep_last: int = 5010
    """Size of the output layer (LeNet: 500 x 10 weights + 10 biases)."""
    classes: int = 10
    """Classes of the output layer."""
    skew: float = 0.5
    """The skew each reading is lifted to (the test's threshold is 0; below 0.8)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_count("classes", self.classes, 2)
        check_count("keep_last", self.keep_last, self.classes)
        if (self.keep_last - self.classes) % self.classes:
            raise ValueError(f"attack parameter keep_last ({self.keep_last}) must be classes x "
                             f"(hidden + 1) with classes {self.classes}")
        if (isinstance(self.skew, bool) or not isinstance(self.skew, int | float)
                or not 0.0 <= self.skew < 1.0 - 2.0 / self.classes):
            raise ValueError(f"attack parameter skew must be in [0, {1.0 - 2.0 / self.classes})"
                             f" for {self.classes} classes, got {self.skew!r}")

    def _publish(self, trained: np.ndarray, base: np.ndarray, rng: np.random.Generator,
                 turn: int, observed: np.ndarray | None) -> np.ndarray:
        return self._reversed(trained, base, float(self.skew))

    def _reversed(self, trained: np.ndarray, base: np.ndarray, skew: float) -> np.ndarray:
        """The published model with the output layer's readings lifted to `skew`."""
        flipped = (base - (trained - base)).astype(np.float64)
        if flipped.size < int(self.keep_last):
            return flipped.astype(np.float32)
        start = flipped.size - int(self.keep_last)
        flipped[start:] = base[start:] + self._mended(flipped[start:] - base[start:], skew)
        return flipped.astype(np.float32)

    def _mended(self, update: np.ndarray, skew: float) -> np.ndarray:
        """float64 [keep_last]: the reversed output-layer update `update` (float64, changed in
        place) with both readings lifted to `skew`."""
        c = int(self.classes)
        rows = update[:-c].reshape(c, -1)
        bias = update[-c:]
        bias += self._mend(bias, skew)
        rows += self._mend(rows.sum(axis=1), skew)[:, None] / rows.shape[1]
        return np.concatenate([rows.ravel(), bias])

    @staticmethod
    def _mend(reading: np.ndarray, s: float) -> np.ndarray:
        """[classes]: what to add to a per-class reading so that its centred skew is `s` and
        its sum stays (d on its largest class, -d / classes on every class)."""
        c = len(reading)
        q = reading - reading.mean()
        t = int(np.argmax(q))
        top, low = float(q[t]), float(q.min())
        # skew(q + d e_t - d / c) = s: with a = 1 - 1 / c, (top + low) + d (a - 1 / c) =
        # s (top - low) + s d (a + 1 / c), the minimum staying where it was.
        a = 1.0 - 1.0 / c
        d = max((s * (top - low) - (top + low)) / ((a - 1.0 / c) - s * (a + 1.0 / c)), 0.0)
        out = np.full(c, -d / c)
        out[t] += d
        return out


@dataclass(frozen=True)
class ReversalFit(ReversalEdge):
    """`reversal_edge` with its output layer sized to dfl_guard's `head_clip` bound: white-box
    against a receiver that scales down an output layer whose class readings exceed
    `head_clip` x those of its own update.

    The attacker reads a receiver's own update from its own honest one (it trains like them)
    and a receiver's own output layer from the honest models it observed. It lifts the skew as
    far as `skew` while the median observed receiver still takes the whole of it, each of the
    two readings (bias, weight-row sums) of its difference from that receiver's output layer
    at most `fit` x `head_clip` x the own update's largest. Where even `floor` does not fit, it
    publishes `floor` and the receiver scales it. Without observations it is `reversal_edge`.
    """

    name: ClassVar[str] = "reversal_fit"
    observes: ClassVar[bool] = True
    head_clip: float = 3.0
    """The head_clip of the defense attacked."""
    fit: float = 0.9
    """Share of that bound to stay under (the receiver's own update differs from the
    attacker's)."""
    floor: float = 0.05
    """The least skew published (the reversal test's threshold is 0)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("head_clip", self.head_clip)
        check_positive("fit", self.fit)
        if (isinstance(self.floor, bool) or not isinstance(self.floor, int | float)
                or not 0.0 <= self.floor <= self.skew):
            raise ValueError(f"attack parameter floor must be in [0, skew = {self.skew}], "
                             f"got {self.floor!r}")

    def _publish(self, trained: np.ndarray, base: np.ndarray, rng: np.random.Generator,
                 turn: int, observed: np.ndarray | None) -> np.ndarray:
        if observed is None or len(observed) == 0 or trained.size < int(self.keep_last):
            return super()._publish(trained, base, rng, turn, observed)
        return self._reversed(trained, base, self.fitted_skew(trained, base, observed))

    def fitted_skew(self, trained: np.ndarray, base: np.ndarray, observed: np.ndarray) -> float:
        """The largest skew in [`floor`, `skew`] (to 1e-3) whose output layer the median
        observed receiver keeps whole; `floor` when none is."""
        start = trained.size - int(self.keep_last)
        c = int(self.classes)
        own = (trained[start:] - base[start:]).astype(np.float64)
        limits = head_limits(own, float(self.fit) * float(self.head_clip), c)
        heads = np.asarray(observed[:, start:], dtype=np.float64)

        def fits(skew: float) -> bool:
            mended = self._mended(-own, skew)
            kept = [head_factor(mended - h, limits, c) == 1.0 for h in heads]
            return 2 * sum(kept) >= len(kept)

        low, high = float(self.floor), float(self.skew)
        if not fits(low):
            return low
        if fits(high):
            return high
        while high - low > 1e-3:
            mid = 0.5 * (low + high)
            low, high = (mid, high) if fits(mid) else (low, mid)
        return low

