"""fastnet: fully-connected neural networks for the CPU.

>>> import fastnet as fn
>>> net = fn.NeuralNetwork(
...     [fn.DenseLayer("relu", 64, neurons_num=32, rng=0),
...      fn.DenseLayer("identity", neurons_num=10, rng=1)],
...     loss=fn.SoftmaxCrossEntropy(), optimizer=fn.SGD(0.1, momentum=0.9))
"""

from fastnet.activations import (
    ELU,
    GELU,
    Activation,
    Identity,
    LeakyReLU,
    ReLU,
    Sigmoid,
    Softplus,
    Tanh,
    get_activation,
)
from fastnet.backend import (
    available_backends,
    get_default_backend,
    resolve_backend,
    set_default_backend,
)
from fastnet.distributed import DistributedError
from fastnet.init import WeightInit
from fastnet.layers import DenseLayer
from fastnet.losses import BinaryCrossEntropy, Loss, MeanSquaredError, SoftmaxCrossEntropy
from fastnet.network import NeuralNetwork
from fastnet.optimizers import SGD, Adam, Optimizer
from fastnet.runtime import get_num_threads, set_num_threads, warmup
from fastnet.serialization import ModelFileError

__version__ = "0.1.0"

__all__ = [
    "ELU",
    "GELU",
    "SGD",
    "Activation",
    "Adam",
    "BinaryCrossEntropy",
    "DenseLayer",
    "Identity",
    "LeakyReLU",
    "Loss",
    "MeanSquaredError",
    "ModelFileError",
    "NeuralNetwork",
    "DistributedError",
    "Optimizer",
    "ReLU",
    "Sigmoid",
    "SoftmaxCrossEntropy",
    "Softplus",
    "Tanh",
    "WeightInit",
    "available_backends",
    "get_activation",
    "get_default_backend",
    "get_num_threads",
    "resolve_backend",
    "set_default_backend",
    "set_num_threads",
    "warmup",
]


def __getattr__(name):
    # the estimators import scikit-learn, so they are imported on first use only
    if name in ("MLPClassifier", "MLPRegressor"):
        from fastnet import estimators

        return getattr(estimators, name)
    raise AttributeError(f"module 'fastnet' has no attribute {name!r}")
