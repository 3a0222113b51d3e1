"""Activations, the reference (twin: ``fastnet.kernels.numba.activations``).

Elementwise, selected by the codes of ``fastnet.kernels.ACTIVATIONS``.
"""

import numpy as np

from fastnet.kernels import ELU, GELU, IDENTITY, LEAKY_RELU, RELU, SIGMOID, SOFTPLUS, TANH

__all__ = ["activation_derivative", "activation_forward", "activation_grad"]

# GELU, tanh form: 0.5 a (1 + tanh(u)), u = c (a + k a^3).  Computed as
# a * sigmoid(2u), the same function (0.5 (1 + tanh(u)) = sigmoid(2u)), because
# 1 + tanh(u) cancels catastrophically for negative u while the stable sigmoid
# does not; likewise f' = s + a * 2 u'(a) * s * (1 - s), with s = sigmoid(2u) and
# 1 - s = sigmoid(-2u) each computed without cancellation.  Beyond |a| = 10,
# sigmoid(2u) is 0 or 1 to float64 precision, so the cubic is evaluated on a
# clipped copy of ``a``: the same results, and no overflow for huge inputs.
GELU_C = float(np.sqrt(2.0 / np.pi))
GELU_K = 0.044715
GELU_CLIP = 10.0


def stable_sigmoid(a, out):
    """out = 1 / (1 + exp(-a)) without overflow: exp is only taken of -|a|."""
    e = np.exp(-np.abs(a))
    out[...] = np.where(a >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return out


def _gelu_parts(a):
    """(clipped a, sigmoid(2u), sigmoid(-2u)) for GELU."""
    ac = np.clip(a, -GELU_CLIP, GELU_CLIP)
    u2 = 2 * GELU_C * (ac + GELU_K * ac * ac * ac)
    return ac, stable_sigmoid(u2, np.empty_like(a)), stable_sigmoid(-u2, np.empty_like(a))


def activation_forward(kind, alpha, a, y):
    """Apply activation ``kind`` elementwise: ``y = f(a)``.

    a, y : arrays of one shape and dtype.  Reads ``a``, overwrites ``y``
    (``y`` may be ``a``).  ``alpha`` is the slope of leaky_relu and the scale
    of elu; other activations ignore it.  Returns ``y``.
    """
    if kind == IDENTITY:
        y[...] = a
    elif kind == SIGMOID:
        stable_sigmoid(a, y)
    elif kind == TANH:
        np.tanh(a, out=y)
    elif kind == RELU:
        np.maximum(a, 0, out=y)
    elif kind == LEAKY_RELU:
        y[...] = np.where(a > 0, a, alpha * a)
    elif kind == ELU:
        y[...] = np.where(a > 0, a, alpha * np.expm1(np.minimum(a, 0)))
    elif kind == SOFTPLUS:
        # log(1 + e^a) = max(a, 0) + log1p(e^-|a|): no overflow for large |a|.
        y[...] = np.maximum(a, 0) + np.log1p(np.exp(-np.abs(a)))
    elif kind == GELU:
        ac, s, _ = _gelu_parts(a)
        y[...] = np.where(a >= 0, a, ac) * s  # ac: a * s is 0 below -10, not a * 1e-38
    else:
        raise ValueError(f"unknown activation code {kind}")
    return y


def activation_derivative(kind, alpha, a, out):
    """Derivative of activation ``kind`` with respect to its input: ``out = f'(a)``.

    a, out : arrays of one shape and dtype.  Reads ``a``, overwrites ``out``.
    At a = 0 relu and leaky_relu take the derivative of the left side.
    Returns ``out``.
    """
    if kind == IDENTITY:
        out[...] = 1
    elif kind == SIGMOID:
        stable_sigmoid(a, out)
        out *= 1 - out
    elif kind == TANH:
        t = np.tanh(a)
        out[...] = 1 - t * t
    elif kind == RELU:
        out[...] = a > 0
    elif kind == LEAKY_RELU:
        out[...] = np.where(a > 0, 1, alpha)
    elif kind == ELU:
        out[...] = np.where(a > 0, 1, alpha * np.exp(np.minimum(a, 0)))
    elif kind == SOFTPLUS:
        stable_sigmoid(a, out)
    elif kind == GELU:
        ac, s, sm = _gelu_parts(a)
        out[...] = s + ac * (s * sm) * (2 * GELU_C * (1 + 3 * GELU_K * ac * ac))
    else:
        raise ValueError(f"unknown activation code {kind}")
    return out


def activation_grad(kind, alpha, a, y, dy, dz):
    """Chain rule through the activation: ``dz = dy * f'(a)``.

    a, y, dy, dz : (B, n) arrays of one dtype, ``y = f(a)`` as computed by
    ``activation_forward``.  Sigmoid and tanh read their derivative from ``y``
    (s' = s (1 - s), tanh' = 1 - tanh^2); the others from ``a``.  Overwrites
    ``dz`` (which may be ``dy``).  Returns ``dz``.
    """
    if kind == SIGMOID:
        dz[...] = dy * y * (1 - y)
    elif kind == TANH:
        dz[...] = dy * (1 - y * y)
    else:
        d = activation_derivative(kind, alpha, a, np.empty_like(a))
        dz[...] = dy * d
    return dz
