"""Attacks: each kind changes what it should and nothing else, deterministically for a seed."""

from __future__ import annotations

import numpy as np
import pytest

from dfl_ray.attacks import ATTACK_KINDS, Attack, attack_params, make_attack

D = 2000
NUM_CLASSES = 10
MODEL_KINDS = ("random_model", "random_model_by_turn", "minus_uniform", "free_rider",
               "sign_flip", "scaled_update", "gaussian_noise", "alie", "ipm", "min_max",
               "min_sum", "mimic", "gate_edge", "kin_edge", "probe_edge", "shield_edge",
               "sentinel_edge", "reversal_edge", "reversal_fit",
               "byzfl_sign_flip", "byzfl_ipm", "byzfl_alie", "byzfl_opt_ipm", "byzfl_opt_alie",
               "byzfl_mimic", "byzfl_inf", "byzfl_gaussian")
DATA_KINDS = ("label_shuffle", "label_shift", "label_swap", "blank_images", "backdoor")


def batch(seed: int = 0, shape: tuple[int, ...] = (16, 28, 28)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(1, 256, size=shape, dtype=np.uint8)
    labels = rng.integers(0, NUM_CLASSES, size=shape[0]).astype(np.int64)
    return images, labels


def models(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.standard_normal(D).astype(np.float32)
    trained = (base + 0.01 * rng.standard_normal(D)).astype(np.float32)
    return trained, base


def publish(attack: Attack, seed: int = 5, turn: int = 0) -> tuple[np.ndarray, np.ndarray,
                                                                 np.ndarray]:
    trained, base = models()
    # Attacks that read their own validation loss get a quadratic one around the trained model.
    loss = (lambda vec: float(((vec - trained) ** 2).sum())) if attack.uses_loss else None
    out = attack.poison_model(trained, base, np.random.default_rng(seed), turn, loss=loss)
    return out, trained, base


def test_attack_kinds_are_complete() -> None:
    assert set(ATTACK_KINDS) == {"none", *MODEL_KINDS, *DATA_KINDS}


@pytest.mark.parametrize("kind", ATTACK_KINDS)
def test_attack_name_and_published_model_is_fresh_float32(kind: str) -> None:
    attack = make_attack(kind)
    assert attack.name == kind
    out, trained, base = publish(attack)
    assert out.dtype == np.float32 and out.shape == (D,)
    assert not np.shares_memory(out, trained) and not np.shares_memory(out, base)
    np.testing.assert_array_equal((trained, base), models())  # inputs untouched


@pytest.mark.parametrize("kind", ATTACK_KINDS)
def test_attack_is_deterministic_for_a_seed(kind: str) -> None:
    attack = make_attack(kind)
    np.testing.assert_array_equal(publish(attack, seed=3)[0], publish(attack, seed=3)[0])
    images, labels = batch()
    a = attack.poison_batch(images, labels, np.random.default_rng(3), NUM_CLASSES)
    b = attack.poison_batch(images, labels, np.random.default_rng(3), NUM_CLASSES)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("kind", ("none", *MODEL_KINDS))
def test_model_attacks_leave_the_batch_alone(kind: str) -> None:
    images, labels = batch()
    out_images, out_labels = make_attack(kind).poison_batch(
        images, labels, np.random.default_rng(0), NUM_CLASSES)
    assert out_images is images and out_labels is labels
    assert not make_attack(kind).poisons_data


@pytest.mark.parametrize("kind", ("none", *DATA_KINDS))
def test_data_attacks_publish_the_trained_model(kind: str) -> None:
    out, trained, _ = publish(make_attack(kind))
    np.testing.assert_array_equal(out, trained)
    assert make_attack(kind).trains


def test_random_model_ignores_the_trained_model() -> None:
    out, _, _ = publish(make_attack("random_model"))
    assert out.min() >= 0.0 and out.max() < 0.001
    assert out.std() > 1e-4  # not constant
    assert not np.array_equal(out, publish(make_attack("random_model"), seed=6)[0])


def test_random_model_by_turn_alternates() -> None:
    attack = make_attack("random_model_by_turn")
    for turn in (0, 2, 10):
        out, _, _ = publish(attack, turn=turn)
        assert out.min() >= 0.0 and out.max() < 0.001
    for turn in (1, 3):
        out, trained, _ = publish(attack, turn=turn)
        np.testing.assert_array_equal(out, trained)


def test_minus_uniform_subtracts_up_to_a_tenth() -> None:
    out, trained, _ = publish(make_attack("minus_uniform"))
    noise = trained.astype(np.float64) - out
    assert noise.min() >= -1e-6 and noise.max() <= 0.1 + 1e-6
    assert abs(noise.mean() - 0.05) < 0.005


def test_free_rider_republishes_its_base_without_training() -> None:
    attack = make_attack("free_rider")
    assert not attack.trains
    out, _, base = publish(attack)
    np.testing.assert_array_equal(out, base)


def test_sign_flip_reverses_the_update() -> None:
    out, trained, base = publish(make_attack("sign_flip", scale=2.0))
    np.testing.assert_allclose(out, base - 2.0 * (trained - base), rtol=1e-6, atol=1e-6)
    out, trained, base = publish(make_attack("sign_flip"))
    np.testing.assert_allclose(out - base, -(trained - base), rtol=1e-4, atol=1e-6)


def test_sign_flip_can_leave_the_last_weights_as_trained() -> None:
    out, trained, base = publish(make_attack("sign_flip", keep_last=3))
    np.testing.assert_array_equal(out[-3:], trained[-3:])
    np.testing.assert_allclose(out[:-3] - base[:-3], -(trained[:-3] - base[:-3]),
                               rtol=1e-4, atol=1e-6)


def test_scaled_update_boosts_the_update() -> None:
    out, trained, base = publish(make_attack("scaled_update"))
    np.testing.assert_allclose(out - base, 10.0 * (trained - base), rtol=1e-4, atol=1e-5)


def test_gaussian_noise_adds_noise_of_the_given_std() -> None:
    out, trained, _ = publish(make_attack("gaussian_noise", std=0.5))
    noise = out.astype(np.float64) - trained
    assert abs(noise.std() - 0.5) < 0.05 and abs(noise.mean()) < 0.05


def test_label_shuffle_permutes_labels_only() -> None:
    images, labels = batch()
    before = labels.copy()
    out_images, out_labels = make_attack("label_shuffle").poison_batch(
        images, labels, np.random.default_rng(1), NUM_CLASSES)
    assert out_images is images
    assert sorted(out_labels.tolist()) == sorted(labels.tolist())
    assert not np.array_equal(out_labels, labels)
    np.testing.assert_array_equal(labels, before)


def test_label_shift_adds_one_modulo_classes() -> None:
    images = np.zeros((3, 1, 4, 4), np.uint8)
    labels = np.array([0, 5, 9], np.int64)
    out_images, out_labels = make_attack("label_shift").poison_batch(
        images, labels, np.random.default_rng(0), NUM_CLASSES)
    assert out_labels.tolist() == [1, 6, 0] and out_images is images
    assert labels.tolist() == [0, 5, 9]


def test_label_swap_names_the_batch_classes_in_reverse_order() -> None:
    images = np.zeros((5, 1, 4, 4), np.uint8)
    swap = make_attack("label_swap")
    rng = np.random.default_rng(0)
    # Two classes (a 2-labels-per-node shard): swapped.
    out_images, out_labels = swap.poison_batch(images, np.array([3, 5, 5, 3, 3]), rng,
                                               NUM_CLASSES)
    assert out_labels.tolist() == [5, 3, 3, 5, 5] and out_images is images
    # Three: the outer two exchanged, the middle one kept; one class: unchanged.
    labels = np.array([0, 2, 7, 7, 2])
    assert swap.poison_batch(images, labels, rng, NUM_CLASSES)[1].tolist() == [7, 2, 0, 0, 2]
    assert labels.tolist() == [0, 2, 7, 7, 2]
    assert swap.poison_batch(images, np.full(5, 4), rng, NUM_CLASSES)[1].tolist() == [4] * 5


def test_blank_images_zeroes_pixels_only() -> None:
    images, labels = batch(shape=(4, 1, 28, 28))
    before = images.copy()
    out_images, out_labels = make_attack("blank_images").poison_batch(
        images, labels, np.random.default_rng(0), NUM_CLASSES)
    assert out_images.shape == images.shape and out_images.dtype == np.uint8
    assert not out_images.any()
    assert out_labels is labels
    np.testing.assert_array_equal(images, before)


def test_attack_params_list_defaults() -> None:
    assert attack_params("none") == {"honest_turns": 0}
    assert attack_params("sign_flip") == {"honest_turns": 0, "scale": 1.0, "keep_last": 0}
    assert attack_params("scaled_update") == {"honest_turns": 0, "scale": 10.0}
    assert attack_params("gaussian_noise") == {"honest_turns": 0, "std": 0.1}
    assert attack_params("alie") == {"honest_turns": 0, "z": 1.0}
    assert attack_params("ipm") == {"honest_turns": 0, "epsilon": 0.5}


def test_invalid_attack_kind_lists_valid_kinds() -> None:
    with pytest.raises(ValueError, match="unknown attack kind 'trojan'.*'sign_flip'"):
        make_attack("trojan")
    with pytest.raises(ValueError, match="unknown attack kind"):
        attack_params("trojan")


def test_invalid_attack_param_is_named() -> None:
    with pytest.raises(ValueError, match="has no parameter 'std'.*'scale'"):
        make_attack("sign_flip", std=1.0)
    with pytest.raises(ValueError, match="has no parameter 'scale'"):
        make_attack("random_model", scale=1.0)


@pytest.mark.parametrize(("kind", "params"), [("sign_flip", {"scale": 0.0}),
                                              ("sign_flip", {"keep_last": -1}),
                                              ("sign_flip", {"keep_last": 2.5}),
                                              ("scaled_update", {"scale": -2.0}),
                                              ("gaussian_noise", {"std": float("nan")}),
                                              ("gaussian_noise", {"std": "0.1"})])
def test_invalid_attack_param_value(kind: str, params: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(params))):
        make_attack(kind, **params)


def test_invalid_model_inputs() -> None:
    attack = make_attack("sign_flip")
    trained, base = models()
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="trained"):
        attack.poison_model(trained.astype(np.float64), base, rng, 0)
    with pytest.raises(ValueError, match="shape"):
        attack.poison_model(trained, base[:-1], rng, 0)
    with pytest.raises(ValueError, match="turn"):
        attack.poison_model(trained, base, rng, -1)


def test_invalid_batch_inputs() -> None:
    attack = make_attack("label_shift")
    images, labels = batch()
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="images"):
        attack.poison_batch(images[0], labels, rng, NUM_CLASSES)
    with pytest.raises(ValueError, match="labels has 15"):
        attack.poison_batch(images, labels[1:], rng, NUM_CLASSES)
    with pytest.raises(ValueError, match="labels must be in"):
        attack.poison_batch(images, labels + NUM_CLASSES, rng, NUM_CLASSES)
    with pytest.raises(ValueError, match="labels must be a 1-D integer"):
        attack.poison_batch(images, labels.astype(np.float32), rng, NUM_CLASSES)
    with pytest.raises(ValueError, match="num_classes"):
        attack.poison_batch(images, labels, rng, 1)


def observations(k: int = 4, seed: int = 9) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.01 * rng.standard_normal((k, D))).astype(np.float32)


def test_alie_moves_z_standard_deviations_against_the_mean_of_honest_updates() -> None:
    trained, base = models()
    seen = observations()
    out = make_attack("alie", z=1.5).poison_model(trained, base, np.random.default_rng(0), 0,
                                                  observed=seen)
    u = np.vstack([seen, trained - base]).astype(np.float64)  # the own update counts too
    expected = base + u.mean(axis=0) - 1.5 * u.std(axis=0)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)
    # every coordinate sits below the honest mean, within 1.5 standard deviations of it
    assert np.all(out - base <= u.mean(axis=0) + 1e-7)


def test_ipm_publishes_minus_epsilon_times_the_mean_honest_update() -> None:
    trained, base = models()
    seen = observations()
    out = make_attack("ipm", epsilon=0.3).poison_model(trained, base, np.random.default_rng(0), 0,
                                                       observed=seen)
    mean = np.vstack([seen, trained - base]).astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(out, base - 0.3 * mean, rtol=0, atol=1e-6)
    assert float(np.dot(out - base, mean)) < 0  # the inner product with the honest mean is negative


@pytest.mark.parametrize("observed", [None, np.empty((0, D), dtype=np.float32)])
def test_observing_attacks_fall_back_to_the_own_update_without_observations(
        observed: np.ndarray | None) -> None:
    trained, base = models()
    rng = np.random.default_rng(0)
    alie = make_attack("alie").poison_model(trained, base, rng, 0, observed=observed)
    np.testing.assert_allclose(alie, trained, rtol=0, atol=1e-6)  # one sample: std 0
    ipm = make_attack("ipm", epsilon=2.0).poison_model(trained, base, rng, 0, observed=observed)
    np.testing.assert_allclose(ipm, base - 2.0 * (trained - base), rtol=0, atol=1e-6)


def test_observed_updates_of_the_wrong_shape_are_refused() -> None:
    trained, base = models()
    with pytest.raises(ValueError, match=r"observed must be an array \[k, 2000\]"):
        make_attack("alie").poison_model(trained, base, np.random.default_rng(0), 0,
                                         observed=np.zeros((3, D + 1), dtype=np.float32))


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_honest_turns_publish_the_trained_model_then_the_attack(kind: str) -> None:
    attack = make_attack(kind, honest_turns=3)
    trained, base = models()
    loss = (lambda vec: float(((vec - trained) ** 2).sum())) if attack.uses_loss else None
    for turn in range(3):
        assert not attack.active(turn)
        out = attack.poison_model(trained, base, np.random.default_rng(1), turn, loss=loss)
        np.testing.assert_array_equal(out, trained)
        assert not np.shares_memory(out, trained)
    assert attack.active(3)
    # from turn 3 on it publishes what the same attack without a grace period publishes
    plain = make_attack(kind)
    np.testing.assert_array_equal(
        attack.poison_model(trained, base, np.random.default_rng(1), 3, loss=loss),
        plain.poison_model(trained, base, np.random.default_rng(1), 3, loss=loss),
    )


@pytest.mark.parametrize("value", [-1, 1.5, True, "2"])
def test_honest_turns_must_be_a_non_negative_integer(value: object) -> None:
    with pytest.raises(ValueError, match="honest_turns must be an integer >= 0"):
        make_attack("sign_flip", honest_turns=value)
