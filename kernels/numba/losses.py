"""Losses and the targets they take, compiled (twin: ``fastnet.kernels.numpy.losses``).

The loss is accumulated in float64 and returned as the arrays' dtype.  Like the
activations, each loss kernel is compiled once per loss code, with the code as
a constant, so only the losses in use are compiled.
"""

import math

from fastnet.kernels import LOSSES, MSE, SOFTMAX_XENT

from .activations import sigmoid
from .cpu import by_code, jit, jit_dot
from .optimizers import max_abs

__all__ = ["check_and_one_hot", "loss_and_grad", "loss_grad", "loss_value", "softmax"]


@jit_dot
def check_and_one_hot(x, labels, t):
    """Same contract as ``fastnet.kernels.numpy.check_and_one_hot``, in one compiled pass
    over x (``max_abs``: inf for NaN and inf)."""
    x_max = max_abs(x)
    if x_max == math.inf:
        return -1.0
    n_classes = t.shape[1]
    for r in range(labels.size):
        if labels[r] < 0 or labels[r] >= n_classes:
            return -1.0
    zero, one = t.dtype.type(0), t.dtype.type(1)
    for r in range(labels.size):
        row = t[r]
        for j in range(n_classes):
            row[j] = zero
        row[labels[r]] = one
    return x_max


@jit
def softmax(z, out):
    """Same contract as ``fastnet.kernels.numpy.softmax``."""
    n_rows, c = z.shape
    for r in range(n_rows):
        m = z[r, 0]
        for j in range(1, c):
            m = m if m >= z[r, j] else z[r, j]
        s = z.dtype.type(0)
        for j in range(c):
            e = math.exp(z[r, j] - m)
            out[r, j] = e
            s += e
        for j in range(c):
            out[r, j] /= s
    return out


def _make_loss_value(kind):
    def value(z, t):
        """The mean loss (accumulated in float64, in any order) as z's dtype."""
        n_rows, c = z.shape
        total = 0.0
        if kind == SOFTMAX_XENT:
            for r in range(n_rows):
                m = z[r, 0]
                for j in range(1, c):
                    m = m if m >= z[r, j] else z[r, j]
                s = 0.0
                dot = 0.0
                for j in range(c):
                    s += math.exp(float(z[r, j] - m))
                    dot += float(z[r, j]) * float(t[r, j])
                total += float(m) + math.log(s) - dot
        elif kind == MSE:
            for r in range(n_rows):
                for j in range(c):
                    d = float(z[r, j]) - float(t[r, j])
                    total += d * d
            total /= c
        else:
            for r in range(n_rows):
                for j in range(c):
                    v = float(z[r, j])
                    total += (v if v > 0.0 else 0.0) + math.log1p(math.exp(-abs(v))) - float(t[r, j]) * v
            total /= c
        return z.dtype.type(total / n_rows)

    return value


def _make_loss_and_grad(kind):
    def loss_and_grad(z, t, out):
        """The mean loss (as ``value``), returned, and its per-sample gradient into
        out, in one pass over z."""
        n_rows, c = z.shape
        T = z.dtype.type
        one, cc = T(1), T(c)
        total = 0.0
        for r in range(n_rows):
            zr, tr, g = z[r], t[r], out[r]
            if kind == SOFTMAX_XENT:  # softmax(z) - t, as ``softmax`` computes it
                m = zr[0]
                for j in range(1, c):
                    m = m if m >= zr[j] else zr[j]
                s = T(0)
                dot = 0.0
                for j in range(c):
                    e = math.exp(zr[j] - m)
                    g[j] = e
                    s += e
                    dot += float(zr[j]) * float(tr[j])
                for j in range(c):
                    g[j] = g[j] / s - tr[j]
                total += float(m) + math.log(float(s)) - dot
            elif kind == MSE:
                scale = T(2) / cc
                for j in range(c):
                    d = zr[j] - tr[j]
                    g[j] = scale * d
                    total += float(d) * float(d)
            else:
                for j in range(c):
                    v = zr[j]
                    g[j] = (sigmoid(v, one) - tr[j]) / cc
                    fv = float(v)
                    total += (fv if fv > 0.0 else 0.0) + math.log1p(math.exp(-abs(fv))) - float(tr[j]) * fv
        if kind != SOFTMAX_XENT:
            total /= c
        return T(total / n_rows)

    return loss_and_grad


#: Per loss code: ``LOSS_VALUE[kind](z, t)`` and ``LOSS_AND_GRAD[kind](z, t, out)``,
#: each compiled with the code as a constant (the other losses' code is dropped).
LOSS_VALUE = by_code(_make_loss_value, LOSSES, jit_dot)
LOSS_AND_GRAD = by_code(_make_loss_and_grad, LOSSES, jit_dot)


def loss_value(kind, z, t):
    """Same contract as ``fastnet.kernels.numpy.loss_value``."""
    return LOSS_VALUE[kind](z, t)


def loss_grad(kind, z, t, out):
    """Same contract as ``fastnet.kernels.numpy.loss_grad`` (by ``loss_and_grad``)."""
    LOSS_AND_GRAD[kind](z, t, out)
    return out


def loss_and_grad(kind, z, t, out):
    """Same contract as ``fastnet.kernels.numpy.loss_and_grad``, in one pass."""
    return LOSS_AND_GRAD[kind](z, t, out)
