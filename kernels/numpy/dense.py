"""The dense layer's passes, the reference (twin: ``fastnet.kernels.numba.dense``)."""

import numpy as np

from .activations import activation_forward, activation_grad

__all__ = ["dense_backward", "dense_forward", "input_grad"]


def dense_forward(x, w, b, kind, alpha, a, y):
    """Forward pass of a dense layer: ``a = x @ w + b``, ``y = f(a)``.

    x : (B, n_in), w : (n_in, n_out), b : (1, n_out), a, y : (B, n_out).
    Reads x, w, b; overwrites a and y.  Returns ``y``.
    """
    np.matmul(x, w, out=a)
    a += b
    return activation_forward(kind, alpha, a, y)


def dense_backward(x, a, y, dy, kind, alpha, dz, dw, db):
    """Parameter gradients of a dense layer, averaged over the batch.

    x : (B, n_in) the layer's input, a, y : (B, n_out) from ``dense_forward``,
    dy : (B, n_out) per-sample gradient of the loss with respect to y.
    Overwrites dz (B, n_out) with ``dy * f'(a)``, dw (n_in, n_out) with
    ``x.T @ dz / B`` and db (1, n_out) with the column mean of dz.  The input
    gradient is a separate kernel, ``input_grad``, because the first layer of
    a network does not need it.  Returns ``dw``.
    """
    activation_grad(kind, alpha, a, y, dy, dz)
    n = x.shape[0]
    np.matmul(x.T, dz, out=dw)
    dw /= n
    np.sum(dz, axis=0, keepdims=True, out=db)
    db /= n
    return dw


def input_grad(dz, w, dx):
    """Gradient with respect to a dense layer's input: ``dx = dz @ w.T``.

    dz : (B, n_out), w : (n_in, n_out), dx : (B, n_in), overwritten.  Per
    sample, not averaged.  Returns ``dx``.
    """
    np.matmul(dz, w.T, out=dx)
    return dx





