"""LeNet's size, the flat-vector round trip, and the model registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dfl_ray.models import LeNet, ModelSpec, build_model, model_to_vector, vector_to_model


def test_lenet_has_431080_parameters() -> None:
    model = LeNet()
    assert sum(p.numel() for p in model.parameters()) == 431_080
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_flat_vector_round_trip_is_exact() -> None:
    torch.manual_seed(0)
    a, b = LeNet(), LeNet()
    vec = model_to_vector(a)
    assert vec.dtype == np.float32 and vec.shape == (431_080,) and vec.flags.c_contiguous
    vector_to_model(vec, b)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert np.array_equal(model_to_vector(b), vec)


def test_vector_to_model_accepts_read_only_views() -> None:
    vec = np.arange(431_080, dtype=np.float32)
    vec.setflags(write=False)
    model = LeNet()
    vector_to_model(vec, model)
    assert float(model.conv1.weight.detach().flatten()[3]) == 3.0


def test_spec_id_is_stable_and_layout_sensitive() -> None:
    spec = ModelSpec.of(LeNet(), "lenet")
    assert spec.size == 431_080 and spec.nbytes == 4 * 431_080
    assert spec.id == ModelSpec.of(LeNet(), "lenet").id
    assert spec.id != ModelSpec.of(LeNet(num_classes=9), "lenet").id
    assert spec.names[0] == "conv1.weight"


def test_invalid_vector_is_named() -> None:
    spec = ModelSpec.of(LeNet(), "lenet")
    with pytest.raises(ValueError, match="dtype"):
        spec.check_vector(np.zeros(spec.size, dtype=np.float64))
    with pytest.raises(ValueError, match="shape"):
        spec.check_vector(np.zeros(5, dtype=np.float32))
    with pytest.raises(ValueError, match="shape"):
        vector_to_model(np.zeros(5, dtype=np.float32), LeNet())


def test_invalid_unknown_model() -> None:
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        build_model("vgg")


def test_grad_clip_bounds_each_step_to_lr_times_the_clip() -> None:
    """One plain SGD step (no momentum, no weight decay) moves the weights by lr x the gradient:
    with grad_clip below the gradient's norm, by exactly lr x grad_clip in the same direction."""
    from dfl_ray.models.training import SGDSettings, make_optimizer, train_steps

    torch.manual_seed(0)
    images = torch.randint(0, 256, (8, 28, 28), dtype=torch.uint8)
    labels = torch.arange(8) % 10
    sgd = SGDSettings(lr=0.5, momentum=0.0, weight_decay=0.0)

    def step(grad_clip: float) -> np.ndarray:
        torch.manual_seed(1)
        model = LeNet()
        start = model_to_vector(model)
        train_steps(model, make_optimizer(model, sgd), images, labels, batch_size=8, steps=1,
                    rng=np.random.default_rng(0), grad_clip=grad_clip)
        return (model_to_vector(model) - start).astype(np.float64)

    free = step(0.0)
    norm = float(np.linalg.norm(free)) / sgd.lr
    assert norm > 0.1
    clipped = step(norm / 4)
    assert np.isclose(np.linalg.norm(clipped), sgd.lr * norm / 4, rtol=1e-4)
    assert np.allclose(clipped, free / 4, rtol=1e-3, atol=1e-7)
    assert np.array_equal(step(norm * 4), free)  # a clip above the norm changes nothing
