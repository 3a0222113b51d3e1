"""Weight initialisation: functions that take a layer and fill its parameters.

Each function reads the layer's ``n_inputs``, ``neurons_num``, ``dtype`` and
``rng`` (a ``numpy.random.Generator``) and sets ``layer.w`` (n_inputs x
neurons_num) and ``layer.b`` (1 x neurons_num, zeros).  The random numbers are
drawn in float64 and then cast, so a seed gives the same weights (to rounding)
in float32 and float64.
"""

import numpy as np


def _fill(layer, w):
    layer.w = np.asarray(w, dtype=layer.dtype)  # build() keeps an aligned copy
    layer.b = np.zeros((1, layer.neurons_num), dtype=layer.dtype)


def _shape(layer):
    return (layer.n_inputs, layer.neurons_num)


class WeightInit:
    """The weight initialisers, as static methods; pass one as ``init_func``."""

    @staticmethod
    def xavier_init_gauss(layer):
        """Glorot/Xavier normal: N(0, 2 / (fan_in + fan_out))."""
        std = np.sqrt(2.0 / (layer.n_inputs + layer.neurons_num))
        _fill(layer, layer.rng.normal(0.0, std, _shape(layer)))

    @staticmethod
    def xavier_init_uniform(layer):
        """Glorot/Xavier uniform: U(-l, l), l = sqrt(6 / (fan_in + fan_out))."""
        limit = np.sqrt(6.0 / (layer.n_inputs + layer.neurons_num))
        _fill(layer, layer.rng.uniform(-limit, limit, _shape(layer)))

    @staticmethod
    def he_init_gauss(layer):
        """He/Kaiming normal, for ReLU layers: N(0, 2 / fan_in)."""
        std = np.sqrt(2.0 / layer.n_inputs)
        _fill(layer, layer.rng.normal(0.0, std, _shape(layer)))

    @staticmethod
    def he_init_uniform(layer):
        """He/Kaiming uniform: U(-l, l), l = sqrt(6 / fan_in)."""
        limit = np.sqrt(6.0 / layer.n_inputs)
        _fill(layer, layer.rng.uniform(-limit, limit, _shape(layer)))

    @staticmethod
    def lecun_init_gauss(layer):
        """LeCun normal, for tanh/SELU-like layers: N(0, 1 / fan_in)."""
        std = np.sqrt(1.0 / layer.n_inputs)
        _fill(layer, layer.rng.normal(0.0, std, _shape(layer)))

    @staticmethod
    def zeros(layer):
        """All weights and biases zero (for tests and linear models; a hidden
        layer initialised so never breaks its symmetry)."""
        _fill(layer, np.zeros(_shape(layer)))


INIT_NAMES = (
    "xavier_init_gauss",
    "xavier_init_uniform",
    "he_init_gauss",
    "he_init_uniform",
    "lecun_init_gauss",
    "zeros",
)


def get_init(spec):
    """An initialiser from a ``WeightInit`` function, its name, or any callable(layer)."""
    if isinstance(spec, str):
        if spec not in INIT_NAMES:
            raise ValueError(f"unknown init function {spec!r}; expected one of {list(INIT_NAMES)}")
        return getattr(WeightInit, spec)
    if callable(spec):
        return spec
    raise TypeError(f"init_func must be a WeightInit function, its name or a callable, got {spec!r}")


def init_name(func):
    """The name of a built-in initialiser, or None for a user-defined one."""
    name = getattr(func, "__name__", None)
    return name if name in INIT_NAMES and getattr(WeightInit, name) is func else None
