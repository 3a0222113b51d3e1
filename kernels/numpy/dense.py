"""The dense layer's passes, the reference (twin: ``fastnet.kernels.numba.dense``)."""

import numpy as np

from .activations import activation_forward, activation_grad
from .optimizers import sgd_step

__all__ = ["dense_backward", "dense_backward_dz", "dense_backward_sgd", "dense_forward", "input_grad",
           "weight_sgd_step"]


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


def dense_backward_sgd(x, a, y, dy, kind, alpha, dz, dw, db, dx, w, lr):
    """A dense layer's backward pass with a plain SGD step on w (no momentum,
    no weight decay).

    As ``dense_backward`` followed by ``input_grad`` (into dx, unless dx is
    None) with the weights before the step, and then ``w -= lr * dw`` with
    ``dw = x.T @ dz / B``.  dw is scratch space: an implementation need not
    materialise the gradient there, and its content afterwards is unspecified.
    Overwrites dz and db as ``dense_backward`` does; the bias step is left to
    the caller (``sgd_step`` on b and db).  Returns dx.
    """
    dense_backward_dz(x, a, y, dy, kind, alpha, dz, db, dx, w)
    weight_sgd_step(x, dz, dw, w, lr)
    return dx


def dense_backward_dz(x, a, y, dy, kind, alpha, dz, db, dx, w):
    """``dense_backward_sgd``'s first half, without touching w: dz and db as
    ``dense_backward`` writes them, then ``input_grad`` into dx (unless dx is
    None).  A network that checks every layer's update before applying any
    runs this for every layer, then ``weight_sgd_step``.  Returns dx."""
    activation_grad(kind, alpha, a, y, dy, dz)
    np.sum(dz, axis=0, keepdims=True, out=db)
    db /= x.shape[0]
    if dx is not None:
        input_grad(dz, w, dx)
    return dx


def weight_sgd_step(x, dz, dw, w, lr):
    """``dense_backward_sgd``'s second half: ``w -= lr * x.T @ dz / B``, dw
    scratch as there.  Returns w."""
    np.matmul(x.T, dz, out=dw)
    dw /= x.shape[0]
    sgd_step(w, dw, w[:0], lr, 0.0, 0.0, False)
    return w
