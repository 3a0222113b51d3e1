"""Activations, compiled (twin: ``fastnet.kernels.numpy.activations``).

Two kernels per activation code: ``FORWARD[kind]`` (y = f(a), optionally after
a += b) and ``BACKWARD[kind]`` (dz = dy * f'(a), optionally with the bias
gradient).  Each is compiled with the code as a constant, so numba drops the
branches of the other activations before it types anything: a network compiles
the activations it uses and nothing of the others.  Measured cold on Zen 3:
the forward and backward passes with all eight activations' code behind a
run-time switch took 3.7 s to compile (with their scalar helpers); a ReLU pair
alone takes a few tenths of a second.  (numba prunes branches on constants of
the function being compiled, not on the values of literal arguments, and
inlining a switch with ``inline="always"`` and pruning it there cost 0.9 s per
kernel, so the switch is written out in each kernel.)
"""

import functools
import math

import numpy as np

from fastnet.kernels import ACTIVATIONS, ELU, IDENTITY, LEAKY_RELU, RELU, SIGMOID, SOFTPLUS, TANH
from fastnet.kernels.numpy import activations as _ref

from .cpu import by_code, jit
from .tuning import UFUNC_FORWARD, UFUNC_GRAD

__all__ = ["activation_derivative", "activation_forward", "activation_grad"]

_GELU_2C, _GELU_K, _GELU_CLIP = 2 * _ref.GELU_C, _ref.GELU_K, _ref.GELU_CLIP


@jit
def sigmoid(v, one):
    """1 / (1 + e^-v) without overflow (one: 1 in v's type)."""
    if v >= 0:
        return one / (one + math.exp(-v))
    e = math.exp(v)
    return e / (one + e)


def _make_forward(kind):
    def forward(b, alpha, a, y, add_bias):
        """y = f(a) for (B, n) arrays, after a += b (row-broadcast) when
        ``add_bias``: each row finished while in cache (alpha: a float)."""
        T = a.dtype.type
        zero, one, alpha = T(0), T(1), T(alpha)
        bias = b[0]
        for r in range(a.shape[0]):
            ar, yr = a[r], y[r]
            if add_bias:
                for j in range(ar.size):
                    ar[j] += bias[j]
            if kind == IDENTITY:
                for j in range(ar.size):
                    yr[j] = ar[j]
            elif kind == RELU:
                for j in range(ar.size):
                    v = ar[j]
                    yr[j] = zero if v <= zero else v  # NaN passes through, as np.maximum does
            elif kind == LEAKY_RELU:
                for j in range(ar.size):
                    v = ar[j]
                    yr[j] = v if v > zero else alpha * v
            elif kind == SIGMOID:
                for j in range(ar.size):
                    yr[j] = sigmoid(ar[j], one)
            elif kind == TANH:
                for j in range(ar.size):
                    yr[j] = math.tanh(ar[j])
            elif kind == ELU:
                for j in range(ar.size):
                    v = ar[j]
                    yr[j] = v if v > zero else alpha * math.expm1(v)
            elif kind == SOFTPLUS:
                for j in range(ar.size):
                    v = ar[j]
                    yr[j] = (v if v > zero else zero) + math.log1p(math.exp(-abs(v)))
            else:  # GELU, tanh form, as a * sigmoid(2u): see the reference for why
                clip, c2, k = T(_GELU_CLIP), T(_GELU_2C), T(_GELU_K)
                for j in range(ar.size):
                    v = ar[j]
                    vc = -clip if v < -clip else clip if v > clip else v
                    yr[j] = (v if v >= zero else vc) * sigmoid(c2 * (vc + k * vc * vc * vc), one)

    return forward


def _make_backward(kind, in_place=False):
    def backward(alpha, a, y, dy, dz, db, with_db):
        """dz = dy * f'(a) for (B, n) arrays (y = f(a); dz may be dy), and, when
        ``with_db``, db = the column mean of dz in the same pass (alpha: a float).
        ``in_place`` (the kernels of ``BACKWARD_IN_PLACE``): dz is dy, dy unread."""
        T = a.dtype.type
        zero, one, alpha = T(0), T(1), T(alpha)
        acc = db[0]
        if with_db:
            for j in range(acc.size):
                acc[j] = 0
        for r in range(a.shape[0]):
            ar, yr, g = a[r], y[r], dz[r]
            if in_place:  # a constant: the other branch is not compiled
                dyr = g
            else:
                dyr = dy[r]
            if kind == IDENTITY:
                for j in range(ar.size):
                    g[j] = dyr[j]
            elif kind == RELU:
                for j in range(ar.size):
                    # dy loaded before the test, not in a branch: LLVM then selects, vectorised
                    # (a load under the branch it may not move, so it kept the branch: 9x
                    # slower, 0.9 ms at 1024 x 256, a mispredicted branch per element half the
                    # time; Emerald Rapids)
                    d = dyr[j]
                    g[j] = d if ar[j] > zero else zero
            elif kind == LEAKY_RELU:
                for j in range(ar.size):
                    d = dyr[j]  # as for RELU: 4x faster than loading it in each branch
                    g[j] = d if ar[j] > zero else alpha * d
            elif kind == SIGMOID:
                for j in range(ar.size):
                    g[j] = dyr[j] * (yr[j] * (one - yr[j]))
            elif kind == TANH:
                for j in range(ar.size):
                    g[j] = dyr[j] * (one - yr[j] * yr[j])
            elif kind == ELU:
                for j in range(ar.size):
                    v = ar[j]
                    g[j] = dyr[j] * (one if v > zero else alpha * math.exp(v))
            elif kind == SOFTPLUS:
                for j in range(ar.size):
                    g[j] = dyr[j] * sigmoid(ar[j], one)
            else:  # GELU: f' = s + a * 2 u'(a) * s * (1 - s), s = sigmoid(2u), 1 - s = sigmoid(-2u)
                clip, c2, k, three = T(_GELU_CLIP), T(_GELU_2C), T(_GELU_K), T(3)
                for j in range(ar.size):
                    v = ar[j]
                    vc = -clip if v < -clip else clip if v > clip else v
                    u2 = c2 * (vc + k * vc * vc * vc)
                    s = sigmoid(u2, one)
                    g[j] = dyr[j] * (s + vc * (s * sigmoid(-u2, one)) * (c2 * (one + three * k * vc * vc)))
            if with_db:
                for j in range(acc.size):
                    acc[j] += g[j]
        if with_db:
            inv = one / T(a.shape[0])
            for j in range(acc.size):
                acc[j] *= inv

    if in_place:
        backward.__name__ = backward.__qualname__ = "backward_in_place"  # an index of its own in the cache
    return backward


#: Per activation code: ``FORWARD[kind](b, alpha, a, y, add_bias)`` and
#: ``BACKWARD[kind](alpha, a, y, dy, dz, db, with_db)`` (alpha a Python float, cast
#: inside, so that every caller compiles the same signature; b and db are not
#: read without their flag: pass any (1, n) or larger array of the dtype).
FORWARD = by_code(_make_forward, ACTIVATIONS, jit)
BACKWARD = by_code(_make_backward, ACTIVATIONS, jit)
#: ``BACKWARD``'s kernels for dz that is dy (the fused step's), each reading and writing one
#: pointer.  Given two pointers to one array, LLVM's vectorised loop checks at run time
#: whether they overlap, finds that they do, and runs the scalar loop instead: ReLU's
#: gradient with db, 256 x 256 float32, 24.6 us that way, 7.3 us this way; sigmoid's 45.0
#: and 12.4 us; the identity's 21.2 and 4.3 us (Zen 4).  A kernel of their own, not a row
#: helper inlined into ``BACKWARD`` (``inline="always"``) and called with one pointer or two:
#: that compiled 1 s longer in a cold fused-16 or fused-64 process.
BACKWARD_IN_PLACE = by_code(functools.partial(_make_backward, in_place=True), ACTIVATIONS, jit)


def _rows(a):
    """a as a 2-D C-contiguous view: itself when 2-D, else one row."""
    return a if a.ndim == 2 else a.reshape(1, -1)


def activation_forward(kind, alpha, a, y):
    """Same contract as ``fastnet.kernels.numpy.activation_forward``."""
    if kind in UFUNC_FORWARD:
        return _ref.activation_forward(kind, alpha, a, y)
    a2 = _rows(a)
    FORWARD[kind](a2, float(alpha), a2, _rows(y), False)
    return y


def activation_grad(kind, alpha, a, y, dy, dz):
    """Same contract as ``fastnet.kernels.numpy.activation_grad``."""
    if kind in UFUNC_GRAD:
        return _ref.activation_grad(kind, alpha, a, y, dy, dz)
    a2 = _rows(a)
    BACKWARD[kind](float(alpha), a2, _rows(y), _rows(dy), _rows(dz), a2, False)
    return dz


def activation_derivative(kind, alpha, a, out):
    """Same contract as ``fastnet.kernels.numpy.activation_derivative`` (f(a)
    and a row of ones are temporaries: sigmoid's and tanh's derivatives are
    computed from f(a))."""
    a2, out2 = _rows(a), _rows(out)
    y = np.empty_like(a2)
    FORWARD[kind](a2, float(alpha), a2, y, False)
    BACKWARD[kind](float(alpha), a2, y, np.ones_like(a2), out2, a2, False)
    return out


# -- the layered path's epilogues ----------------------------------------------------------
def forward_epilogue(b, kind, alpha, a, y):
    """a += b, y = f(a): one compiled pass, or NumPy's ufuncs for ``UFUNC_FORWARD``."""
    if kind in UFUNC_FORWARD:
        np.add(a, b, out=a)
        _ref.activation_forward(kind, alpha, a, y)
    else:
        FORWARD[kind](b, float(alpha), a, y, True)


def backward_prologue(kind, alpha, a, y, dy, dz, db):
    """dz = dy * f'(a), db = mean of dz: one compiled pass, or ufuncs for ``UFUNC_GRAD``."""
    if kind in UFUNC_GRAD:
        _ref.activation_grad(kind, alpha, a, y, dy, dz)
        np.sum(dz, axis=0, keepdims=True, out=db)
        np.multiply(db, db.dtype.type(1.0 / a.shape[0]), out=db)
    else:
        BACKWARD[kind](float(alpha), a, y, dy, dz, db, True)
