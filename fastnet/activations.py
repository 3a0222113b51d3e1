"""Activation functions: small objects with ``f(a)``, ``df(a)`` and a ``name``.

``f`` and ``df`` are the user-facing API; they call the same reference kernels
that the layers use (``fastnet.kernels.numpy``), looked up by ``name``.  A
layer accepts an activation object or its name as a string (``"relu"``).

A user may pass any other object with ``f``, ``df`` and ``name``: the layers
then call its methods in Python instead of a kernel (slower, never wrong).
"""

import numpy as np

from fastnet.kernels import ACTIVATION_CODES
from fastnet.kernels import numpy as _ref


class Activation:
    """Base of the built-in activations; ``name`` selects the kernel."""

    name = None
    alpha = 0.0

    @property
    def code(self):
        """The kernel code of this activation (``fastnet.kernels.ACTIVATIONS``)."""
        return ACTIVATION_CODES[self.name]

    def f(self, a):
        """The activation of ``a``, elementwise; float arrays keep their dtype."""
        a = _as_float_array(a)
        return _ref.activation_forward(self.code, self.alpha, a, np.empty_like(a))

    def df(self, a):
        """The derivative of the activation with respect to ``a``, elementwise."""
        a = _as_float_array(a)
        return _ref.activation_derivative(self.code, self.alpha, a, np.empty_like(a))

    def __eq__(self, other):
        return type(self) is type(other) and self.alpha == other.alpha

    def __hash__(self):
        return hash((self.name, self.alpha))

    def __repr__(self):
        return f"{type(self).__name__}()"


class Identity(Activation):
    """f(a) = a.  The output activation for the cross-entropy losses (logits)."""

    name = "identity"


class Sigmoid(Activation):
    """f(a) = 1 / (1 + exp(-a)), computed without overflow for large |a|."""

    name = "sigmoid"


class Tanh(Activation):
    """f(a) = tanh(a)."""

    name = "tanh"


class ReLU(Activation):
    """f(a) = max(a, 0); f'(0) is taken as 0."""

    name = "relu"


class _WithAlpha(Activation):
    default_alpha = 0.0

    def __init__(self, alpha=None):
        alpha = self.default_alpha if alpha is None else alpha
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)):
            raise TypeError(f"{type(self).__name__} alpha must be a real number, got {alpha!r}")
        if not np.isfinite(alpha) or alpha < 0:
            raise ValueError(
                f"{type(self).__name__} alpha must be finite and >= 0, got {alpha!r}"
            )
        self._alpha = float(alpha)

    @property
    def alpha(self):
        """The activation's parameter, fixed when the activation is made: it is
        part of its hash, and the fused training step compiles it into its
        arguments.  To change it, give the layer a new activation."""
        return self._alpha

    @alpha.setter
    def alpha(self, value):
        name = type(self).__name__
        raise AttributeError(f"{name}.alpha is fixed when the activation is made; "
                             f"assign layer.activation = {name}({value!r}) instead")

    def __repr__(self):
        return f"{type(self).__name__}(alpha={self.alpha!r})"


class LeakyReLU(_WithAlpha):
    """f(a) = a for a > 0, alpha * a otherwise (alpha defaults to 0.01)."""

    name = "leaky_relu"

    default_alpha = 0.01


class ELU(_WithAlpha):
    """f(a) = a for a > 0, alpha * (exp(a) - 1) otherwise (alpha defaults to 1)."""

    name = "elu"

    default_alpha = 1.0


class Softplus(Activation):
    """f(a) = log(1 + exp(a)), computed without overflow for large |a|."""

    name = "softplus"


class GELU(Activation):
    """Gaussian error linear unit, tanh form:
    f(a) = 0.5 a (1 + tanh(sqrt(2/pi) (a + 0.044715 a^3)))."""

    name = "gelu"


_BY_NAME = {
    cls.name: cls for cls in (Identity, Sigmoid, Tanh, ReLU, LeakyReLU, ELU, Softplus, GELU)
}
_BUILTIN_TYPES = frozenset(_BY_NAME.values())


def get_activation(spec):
    """An activation object from an object or a name such as ``"relu"``.

    Objects with ``f`` and ``df`` methods are returned as they are.
    """
    if isinstance(spec, str):
        key = spec.lower()
        if key not in _BY_NAME:
            raise ValueError(f"unknown activation {spec!r}; expected one of {sorted(_BY_NAME)}")
        return _BY_NAME[key]()
    if isinstance(spec, type) and issubclass(spec, Activation):
        return spec()
    if callable(getattr(spec, "f", None)) and callable(getattr(spec, "df", None)):
        return spec
    raise TypeError(
        "activation must be a name such as 'relu' or an object with f(a) and df(a) methods, "
        f"got {spec!r}"
    )


def activation_from_name(name, alpha):
    """Rebuild a built-in activation from its name and alpha (used by ``load``)."""
    cls = _BY_NAME[name]
    return cls(alpha) if issubclass(cls, _WithAlpha) else cls()


def kernel_code(activation):
    """The kernel code of a built-in activation, or None for any other object,
    subclasses of the built-ins included (their own f and df must be called)."""
    if type(activation) in _BUILTIN_TYPES:
        return activation.code
    return None


def _as_float_array(a):
    """float32 and float64 arrays as they are; anything else as float64."""
    a = np.asarray(a)
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float64)
    return np.ascontiguousarray(a)
