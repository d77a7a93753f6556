"""Models, their flat-vector form, and the local train/evaluate loops."""

from dfl_ray.models.flat import ModelSpec, model_to_vector, vector_to_model
from dfl_ray.models.lenet import LeNet
from dfl_ray.models.registry import MODELS, build_model, register_model
from dfl_ray.models.training import SGDSettings, evaluate, make_optimizer, train_steps

__all__ = [
    "MODELS",
    "LeNet",
    "ModelSpec",
    "SGDSettings",
    "build_model",
    "evaluate",
    "make_optimizer",
    "model_to_vector",
    "register_model",
    "train_steps",
    "vector_to_model",
]
