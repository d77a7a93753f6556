"""Min-max, min-sum, mimic, gate edge and backdoor: each crafts what its paper says, from fixed inputs."""

from __future__ import annotations

import numpy as np
import pytest

from dfl_ray.attacks import make_attack, stamp_trigger

D = 3000


def setting(seed: int = 0, k: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(trained, base, observed): honest updates that share a common direction plus noise."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal(D).astype(np.float32)
    common = 0.02 * rng.standard_normal(D)
    observed = (common + 0.01 * rng.standard_normal((k, D))).astype(np.float32)
    trained = (base + common + 0.01 * rng.standard_normal(D)).astype(np.float32)
    return trained, base, observed


def published(kind: str, **params: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    trained, base, observed = setting()
    out = make_attack(kind, **params).poison_model(trained, base, np.random.default_rng(0), 0,
                                                   observed=observed)
    u = np.vstack([observed, trained - base]).astype(np.float64)
    return out, trained, base, u


def sq_dists(u: np.ndarray, m: np.ndarray) -> np.ndarray:
    return ((u - m) ** 2).sum(axis=1)


def test_min_max_stays_within_the_largest_honest_distance_at_its_edge() -> None:
    out, _, base, u = published("min_max")
    m = out.astype(np.float64) - base
    pair = np.array([sq_dists(u, row) for row in u])
    assert sq_dists(u, m).max() <= pair.max() * (1 + 1e-4)
    mean = u.mean(axis=0)
    # against the honest mean, and as far as the bound allows (the search's tolerance)
    assert float(m @ mean) < float(mean @ mean)
    gamma = float(np.linalg.norm(m - mean))
    farther = mean - (gamma + 1e-3) * mean / np.linalg.norm(mean)
    assert sq_dists(u, farther).max() > pair.max()


def test_min_sum_bounds_the_summed_distance() -> None:
    out, _, base, u = published("min_sum")
    m = out.astype(np.float64) - base
    pair = np.array([sq_dists(u, row) for row in u])
    assert sq_dists(u, m).sum() <= pair.sum(axis=1).max() * (1 + 1e-4)
    assert float(m @ u.mean(axis=0)) < float(u.mean(axis=0) @ u.mean(axis=0))


def test_mimic_copies_one_observed_honest_update() -> None:
    trained, base, observed = setting()
    out = make_attack("mimic").poison_model(trained, base, np.random.default_rng(0), 0,
                                            observed=observed)
    matches = [np.allclose(out, base + row, atol=1e-6) for row in observed]
    assert sum(matches) == 1
    # colluders with the same observations copy the same one, whatever their own training
    other = make_attack("mimic").poison_model(base.copy(), base, np.random.default_rng(5), 3,
                                              observed=observed)
    np.testing.assert_array_equal(out, other)


def test_gate_edge_keeps_the_output_layer_and_pushes_the_rest_against_the_mean() -> None:
    out, trained, base, _ = published("gate_edge", keep_last=100, fraction=0.9)
    _, _, observed = setting()
    np.testing.assert_array_equal(out[-100:], trained[-100:])
    body = (out[:-100] - base[:-100]).astype(np.float64)
    mean = observed[:, :-100].astype(np.float64).mean(axis=0)
    assert float(body @ mean) / (np.linalg.norm(body) * np.linalg.norm(mean)) < -0.9
    # sized to about fraction x gate x the median honest distance from an honest model
    honest = observed[:, :-100].astype(np.float64)
    pair = [np.linalg.norm(a - b) for i, a in enumerate(honest) for b in honest[i + 1:]]
    reach = np.median([np.linalg.norm(body - row) for row in honest])
    assert reach == pytest.approx(0.9 * 3.0 * np.median(pair), rel=0.05)


def test_gate_edge_whole_reads_the_gate_over_the_whole_model() -> None:
    # Honest models differ mostly on the output layer (the last 100 coordinates), as on
    # label-skewed shards: read over the whole model, the gate leaves the rest more room.
    trained, base, observed = setting()
    rng = np.random.default_rng(3)
    observed[:, -100:] += (0.1 * rng.standard_normal((len(observed), 100))).astype(np.float32)
    trained[-100:] += (0.1 * rng.standard_normal(100)).astype(np.float32)
    honest = observed.astype(np.float64)
    pair = np.median([np.linalg.norm(a - b) for i, a in enumerate(honest) for b in honest[i + 1:]])

    def reach(**params: object) -> float:
        out = make_attack("gate_edge", keep_last=100, fraction=0.9, **params).poison_model(
            trained, base, np.random.default_rng(0), 0, observed=observed)
        np.testing.assert_array_equal(out[-100:], trained[-100:])
        m = out.astype(np.float64) - base
        return float(np.median([np.linalg.norm(m - row) for row in honest]))

    # the whole model lies about fraction x gate x the median whole distance from an honest one
    assert reach(whole=1) == pytest.approx(0.9 * 3.0 * pair, rel=0.05)
    # read over the rest only, it stays well inside (the output layer adds its own distance)
    assert reach() < 0.8 * reach(whole=1)


def test_probe_edge_shortens_gate_edge_until_its_own_probe_passes() -> None:
    """With a validation loss that punishes moving off the trained model, the attacker reads
    the honest models' rises on it and publishes the largest share of gate edge's push whose
    rise stays under safety x (probe x median honest rise + slack)."""
    trained, base, observed = setting()
    calls = []

    def loss(vec: np.ndarray) -> float:
        calls.append(1)
        return float(((vec.astype(np.float64) - trained) ** 2).sum())

    edge = make_attack("gate_edge", keep_last=100).poison_model(
        trained, base, np.random.default_rng(0), 0, observed=observed)
    out = make_attack("probe_edge", keep_last=100).poison_model(
        trained, base, np.random.default_rng(0), 0, observed=observed, loss=loss)
    np.testing.assert_array_equal(out[-100:], trained[-100:])  # the output layer as trained
    push = (edge - trained)[:-100].astype(np.float64)
    got = (out - trained)[:-100].astype(np.float64)
    t = float(got @ push) / float(push @ push)
    assert 0.0 < t < 1.0  # shortened, along gate edge's push
    np.testing.assert_allclose(got, t * push, atol=1e-5)

    def rise(target_body: np.ndarray) -> float:
        moved = trained.astype(np.float64).copy()
        moved[:-100] += 0.5 * (target_body - trained[:-100])
        return float(((moved - trained) ** 2).sum())

    honest = [rise(base[:-100] + u[:-100].astype(np.float64)) for u in observed]
    limit = 0.8 * (2.0 * float(np.median(honest)) + 0.05)
    assert rise(out[:-100].astype(np.float64)) <= limit
    # as far as the bisection's tolerance allows: a little more push would fail
    assert rise(trained[:-100] + (t + 2e-3) * push) > limit
    # a loss the push does not change: gate edge's model unshortened
    flat = make_attack("probe_edge", keep_last=100).poison_model(
        trained, base, np.random.default_rng(0), 0, observed=observed, loss=lambda vec: 0.0)
    np.testing.assert_array_equal(flat, edge)
    with pytest.raises(ValueError, match="validation loss"):
        make_attack("probe_edge").poison_model(trained, base, np.random.default_rng(0), 0,
                                               observed=observed)
    with pytest.raises(ValueError, match="probe_slack"):
        make_attack("probe_edge", probe_slack=-1.0)


def test_probe_edge_bursts_publish_the_whole_gate_edge_model_every_nth_turn() -> None:
    """With `burst` n, turns n-1, 2n-1, ... publish gate edge's model unshortened (the
    failure a forgiving receiver lets through); the other turns stay shortened."""
    trained, base, observed = setting()

    def loss(vec: np.ndarray) -> float:
        return float(((vec.astype(np.float64) - trained) ** 2).sum())

    attack = make_attack("probe_edge", keep_last=100, burst=4)
    edge = make_attack("gate_edge", keep_last=100).poison_model(
        trained, base, np.random.default_rng(0), 0, observed=observed)
    for turn in range(8):
        out = attack.poison_model(trained, base, np.random.default_rng(0), turn,
                                  observed=observed, loss=loss)
        if turn in (3, 7):
            np.testing.assert_array_equal(out, edge)
        else:
            assert np.linalg.norm(out - trained) < 0.9 * np.linalg.norm(edge - trained)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="burst"):
            make_attack("probe_edge", burst=bad)


def test_kin_edge_colluders_push_as_far_as_gate_edge_on_coordinates_of_their_own() -> None:
    trained, base, observed = setting()
    attack = make_attack("kin_edge", keep_last=100, share=0.25)
    outs = [attack.poison_model(trained, base, np.random.default_rng(seed), 0, observed=observed)
            for seed in (1, 2)]
    plain = make_attack("gate_edge", keep_last=100).poison_model(
        trained, base, np.random.default_rng(0), 0, observed=observed)
    mean = observed[:, :-100].astype(np.float64).mean(axis=0)
    pushes = [out[:-100].astype(np.float64) - base[:-100] - mean for out in outs]
    gate_push = plain[:-100].astype(np.float64) - base[:-100] - mean
    for out, push in zip(outs, pushes, strict=True):
        np.testing.assert_array_equal(out[-100:], trained[-100:])  # the output layer as trained
        assert np.linalg.norm(push) == pytest.approx(np.linalg.norm(gate_push), rel=0.1)
        assert 0.2 < np.mean(np.abs(push) > 1e-4) < 0.3  # a quarter of the coordinates
        assert float(push @ gate_push) > 0.0  # along gate_edge's push
    cos = float(pushes[0] @ pushes[1]) / float(np.linalg.norm(pushes[0]) * np.linalg.norm(pushes[1]))
    assert 0.1 < cos < 0.4  # about the share: the kin test sees two voices
    with pytest.raises(ValueError, match="share"):
        make_attack("kin_edge", share=1.5)


def test_gate_edge_scales_with_fraction() -> None:
    near, _, base, _ = published("gate_edge", fraction=0.95, keep_last=0)
    half, _, _, _ = published("gate_edge", fraction=0.5, keep_last=0)
    assert np.linalg.norm(near - base) > 1.7 * np.linalg.norm(half - base)


def test_backdoor_stamps_a_fraction_of_the_batch_and_relabels_it() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 100, size=(400, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=400).astype(np.int64)
    attack = make_attack("backdoor", target=7, size=3, fraction=0.25)
    out_images, out_labels = attack.poison_batch(images, labels, np.random.default_rng(1), 10)
    stamped = (out_images[:, -4:-1, -4:-1] == 255).all(axis=(1, 2))
    assert 0.15 < stamped.mean() < 0.35
    assert (out_labels[stamped] == 7).all()
    np.testing.assert_array_equal(out_labels[~stamped], labels[~stamped])
    np.testing.assert_array_equal(out_images[~stamped], images[~stamped])
    assert images.max() < 100  # the input is untouched


def test_backdoor_scale_boosts_the_update_and_test_set_drops_the_target() -> None:
    trained, base, _ = setting()
    out = make_attack("backdoor", scale=4.0).poison_model(trained, base,
                                                          np.random.default_rng(0), 0)
    np.testing.assert_allclose(out - base, 4.0 * (trained - base), rtol=1e-4, atol=1e-5)
    images = np.zeros((5, 1, 8, 8), dtype=np.float32)
    labels = np.array([0, 1, 2, 0, 3])
    x, y = make_attack("backdoor", target=0, size=2).triggered_test_set(images, labels)
    assert x.shape == (3, 1, 8, 8) and y.tolist() == [0, 0, 0]
    assert (x[..., -3:-1, -3:-1] == 1.0).all() and x.sum() == 3 * 4
    np.testing.assert_array_equal(stamp_trigger(images, 2)[..., :-3, :], 0)


def test_backdoor_blend_mixes_one_fixed_noise_image_into_the_whole_picture() -> None:
    images = np.full((4, 28, 28), 100, dtype=np.uint8)
    attack = make_attack("backdoor", target=1, blend=0.2)
    x, y = attack.triggered_test_set(images, np.array([0, 1, 2, 3]))
    assert x.shape == (3, 28, 28) and y.tolist() == [1, 1, 1]
    np.testing.assert_array_equal(x[0], x[2])  # one pattern for every image (and colluder)
    assert (x[0] != 100).mean() > 0.9  # spread over the whole picture
    assert np.abs(x.astype(int) - 100).max() <= 0.2 * 255 + 1  # mixed in with weight 0.2
    px, py = attack.poison_batch(images, np.array([0, 1, 2, 3]), np.random.default_rng(0), 10)
    chosen = (px != 100).any(axis=(1, 2))
    assert chosen.any() and (py[chosen] == 1).all()
    np.testing.assert_array_equal(px[chosen][0], stamp_trigger(images[:1], 3, 0.2)[0])
    with pytest.raises(ValueError, match="blend must be a number in \\[0, 1\\)"):
        make_attack("backdoor", blend=1.0)


def test_backdoor_evade_publishes_the_longest_step_under_its_own_success_rate() -> None:
    trained, base, _ = setting()
    attack = make_attack("backdoor", evade=0.5)
    assert attack.uses_loss and attack.loss_kind == "trigger_rate"
    assert not make_attack("backdoor").uses_loss  # without evade it reads nothing
    total = float(np.linalg.norm(trained - base))
    steps: list[float] = []

    def rate(vec: np.ndarray) -> float:
        # A success rate growing with the step taken towards the trained model.
        steps.append(float(np.linalg.norm(vec - base)) / total)
        return steps[-1]

    out = attack.poison_model(trained, base, np.random.default_rng(0), 0, loss=rate)
    np.testing.assert_allclose(out - base, 0.25 * (trained - base), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(steps, [1.0, 0.5, 0.25], rtol=1e-4)
    always = attack.poison_model(trained, base, np.random.default_rng(0), 0,
                                 loss=lambda vec: 1.0)
    np.testing.assert_array_equal(always, base)  # no step passes: the round start
    with pytest.raises(ValueError, match="needs its success rate"):
        attack.poison_model(trained, base, np.random.default_rng(0), 0)
    with pytest.raises(ValueError, match=r"evade must be a share in \[0, 1\]"):
        make_attack("backdoor", evade=1.5)


@pytest.mark.parametrize(("kind", "params", "name"), [
    ("min_max", {"gamma_init": 0.0}, "gamma_init"),
    ("mimic", {"iterations": 0}, "iterations"),
    ("gate_edge", {"fraction": -1.0}, "fraction"),
    ("gate_edge", {"keep_last": -1}, "keep_last"),
    ("gate_edge", {"oppose": 0.0}, "oppose"),
    ("gate_edge", {"oppose": 1.5}, "oppose"),
    ("gate_edge", {"whole": 0.5}, "whole"),
    ("backdoor", {"fraction": 1.5}, "fraction"),
    ("backdoor", {"size": 0}, "size"),
    ("backdoor", {"target": -1}, "target"),
])
def test_invalid_adaptive_attack_params(kind: str, params: dict[str, float], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        make_attack(kind, **params)


def test_invalid_backdoor_target_for_the_data() -> None:
    images = np.zeros((2, 28, 28), dtype=np.uint8)
    with pytest.raises(ValueError, match="target 12"):
        make_attack("backdoor", target=12).poison_batch(images, np.zeros(2, np.int64),
                                                        np.random.default_rng(0), 10)


def test_shield_edge_sits_inside_the_clip_radius_against_the_mean() -> None:
    out, trained, base, u = published("shield_edge", keep_last=100, fraction=0.9, clip=2.0)
    np.testing.assert_array_equal(out[-100:], trained[-100:])
    update = out.astype(np.float64) - base
    r = float(np.median(np.linalg.norm(u, axis=1)))
    assert np.linalg.norm(update) == pytest.approx(0.9 * 2.0 * r, rel=1e-3)
    mean = u[:, :-100].mean(axis=0)
    body = update[:-100]
    assert float(body @ mean) / (np.linalg.norm(body) * np.linalg.norm(mean)) == pytest.approx(-1.0)


def test_sentinel_edge_shifts_below_the_honest_mean_inside_the_own_norm_radius() -> None:
    out, trained, base, u = published("sentinel_edge", keep_last=100, z=0.5, clip=3.0)
    np.testing.assert_array_equal(out[-100:], trained[-100:])
    body = out[:-100].astype(np.float64) - base[:-100]
    expected = u[:, :-100].mean(axis=0) - 0.5 * u[:, :-100].std(axis=0)
    np.testing.assert_allclose(body, expected, atol=1e-6)


def test_sentinel_edge_is_shortened_to_the_clip_radius() -> None:
    out, trained, base, u = published("sentinel_edge", keep_last=100, z=50.0, clip=2.0,
                                      fraction=0.9)
    update = out.astype(np.float64) - base
    r = float(np.median(np.linalg.norm(u, axis=1)))
    assert np.linalg.norm(update) == pytest.approx(0.9 * 2.0 * r, rel=1e-4)
    expected = u[:, :-100].mean(axis=0) - 50.0 * u[:, :-100].std(axis=0)
    body = update[:-100]
    assert float(body @ expected) / (np.linalg.norm(body) * np.linalg.norm(expected)) == \
        pytest.approx(1.0)


def test_gate_edge_against_the_opposition_test_keeps_every_cosine_above_its_bound() -> None:
    out, _, base, _ = published("gate_edge", keep_last=0, oppose=0.1)
    plain, _, _, _ = published("gate_edge", keep_last=0)
    _, _, observed = setting()
    honest = observed.astype(np.float64)
    body = (out - base).astype(np.float64)
    cosines = honest @ body / (np.linalg.norm(honest, axis=1) * np.linalg.norm(body))
    assert cosines.min() >= -0.1  # passes a receiver whose own update is any honest one
    mean = honest.mean(axis=0)
    assert float(body @ mean) < 0.0  # still against the honest mean, but by less
    assert float(body @ mean) > float((plain - base).astype(np.float64) @ mean)
    # at the plain attack's distance from the honest models
    far = np.median([np.linalg.norm(body - row) for row in honest])
    plain_far = np.median([np.linalg.norm((plain - base).astype(np.float64) - row)
                           for row in honest])
    assert far == pytest.approx(plain_far, rel=0.05)
    # the plain attack (oppose = 1, the test off) fails that test
    plain_body = (plain - base).astype(np.float64)
    assert (honest @ plain_body / (np.linalg.norm(honest, axis=1)
                                   * np.linalg.norm(plain_body))).min() < -0.1


def test_reversal_edge_reverses_the_update_and_passes_the_reversal_test() -> None:
    """The whole update is reversed, yet both of the reversal test's readings (output bias and
    weight-row sums, from the round start and below it) read as learnt, and the output bias
    keeps the class-sum the balance test reads; the plain reversal fails the same test."""
    from dfl_ray.defense.base import AggregationInput
    from dfl_ray.defense.guard import head_imbalance, reversal_readings

    classes, hidden, body = 10, 20, 300
    size = body + classes * hidden + classes
    rng = np.random.default_rng(3)
    base = rng.standard_normal(size).astype(np.float32)
    update = 0.01 * rng.standard_normal(size)
    pattern = np.full(classes, -0.02)
    pattern[[2, 5]] = 0.08  # the attacker's two classes raised, the rest lowered: sum 0
    update[-classes:] = pattern
    update[body:-classes] = np.repeat(pattern / hidden, hidden)
    trained = (base + update).astype(np.float32)
    attack = make_attack("reversal_edge", keep_last=size - body, classes=classes)
    out = attack.poison_model(trained, base, rng, 0)
    flipped = make_attack("sign_flip").poison_model(trained, base, rng, 0)
    assert np.array_equal(out[:body], flipped[:body])
    head = slice(body, size)
    assert np.isclose(out[-classes:].sum(), flipped[-classes:].sum(), atol=1e-5)
    assert np.isclose(out[head].sum(), flipped[head].sum(), atol=1e-4)
    honest = (base + 0.5 * update).astype(np.float32)[None, :]
    received = np.concatenate([honest, flipped[None, :], out[None, :]])
    inp = AggregationInput(own=base, own_score=0.9, models=received,
                           senders=("h", "flip", "edge"), scores=np.full(3, 0.5),
                           reputations={}, head=head, head_classes=classes, base=base)
    for lower in (False, True):
        readings = reversal_readings(inp, 0.0, lower=lower)
        assert readings[0] > 0.3 and readings[1] < -0.3, readings
        assert readings[2] >= 0.5 - 1e-6, readings
    assert np.isclose(head_imbalance(inp)[2], head_imbalance(inp)[1], atol=1e-3)
    with pytest.raises(ValueError, match="skew"):
        make_attack("reversal_edge", skew=0.8)
    with pytest.raises(ValueError, match="keep_last"):
        make_attack("reversal_edge", keep_last=5011)


def test_reversal_fit_sizes_its_output_layer_inside_the_receivers_head_clip() -> None:
    """Against receivers whose own updates move two classes each, `reversal_edge`'s boost is
    scaled down by head_clip = 3 while `reversal_fit` picks a lower skew that every receiver
    keeps whole, and still passes the reversal test; without observations it is
    `reversal_edge`."""
    from dfl_ray.defense.base import AggregationInput
    from dfl_ray.defense.guard import head_factors, reversal_readings

    classes, hidden, body = 10, 20, 300
    size = body + classes * hidden + classes
    rng = np.random.default_rng(3)
    base = rng.standard_normal(size).astype(np.float32)

    def update(held: tuple[int, int]) -> np.ndarray:
        u = 0.01 * rng.standard_normal(size)
        pattern = np.full(classes, -0.02)
        pattern[list(held)] = 0.08
        u[-classes:] = pattern + 0.003 * rng.standard_normal(classes)
        u[body:-classes] = (np.repeat(pattern / hidden, hidden)
                            + 0.0005 * rng.standard_normal(classes * hidden))
        return u

    trained = (base + update((2, 5))).astype(np.float32)
    honest = [update(held) for held in ((0, 1), (3, 4), (6, 7), (8, 9), (1, 3))]
    observed = np.array(honest, dtype=np.float32)
    params = {"keep_last": size - body, "classes": classes}
    edge = make_attack("reversal_edge", **params)
    fit = make_attack("reversal_fit", **params)
    skew = fit.fitted_skew(trained, base, observed)
    assert 0.05 < skew < 0.5
    out_edge = edge.poison_model(trained, base, rng, 0, observed)
    out_fit = fit.poison_model(trained, base, rng, 0, observed)
    assert np.array_equal(out_fit[:body], out_edge[:body])
    head = slice(body, size)
    for u in honest:
        inp = AggregationInput(own=(base + u).astype(np.float32), own_score=0.9,
                               models=np.stack([out_edge, out_fit]), senders=("edge", "fit"),
                               scores=np.full(2, 0.5), reputations={}, head=head,
                               head_classes=classes, base=base)
        factors = head_factors(inp, 3.0)
        assert factors is not None
        assert factors[0] < 0.9 and factors[1] == 1.0, factors
        assert (reversal_readings(inp, 0.0, lower=True) > 0.0).all()
    assert np.array_equal(fit.poison_model(trained, base, rng, 0),
                          edge.poison_model(trained, base, rng, 0))
    with pytest.raises(ValueError, match="floor"):
        make_attack("reversal_fit", floor=0.6)
