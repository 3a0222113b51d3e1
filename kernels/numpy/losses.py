"""Losses and the targets they take, the reference (twin: ``fastnet.kernels.numba.losses``).

Selected by the codes of ``fastnet.kernels.LOSSES``.
"""

import math

import numpy as np

from fastnet.kernels import BCE_LOGITS, MSE, SOFTMAX_XENT

from .activations import stable_sigmoid
from .optimizers import max_abs

__all__ = ["check_and_one_hot", "loss_and_grad", "loss_grad", "loss_value", "softmax"]


def check_and_one_hot(x, labels, t):
    """Validate a batch of inputs and class labels and build one-hot targets.

    x : (B, n) float, C-contiguous; labels : (B,) int64; t : (B, C) float,
    overwritten with one-hot rows only when every value of x is finite and
    every label is in [0, C).  Returns x's largest magnitude (a float >= 0,
    which bounds the training step's first gradient: see ``sgd_update_bound``)
    when they are, else -1.0, leaving t as it was: the caller then finds and
    reports what is wrong.
    """
    x_max = max_abs(x)
    if x_max == math.inf or (labels.size and (labels.min() < 0 or labels.max() >= t.shape[1])):
        return -1.0
    t.fill(0)
    t[np.arange(t.shape[0]), labels] = 1
    return x_max


def softmax(z, out):
    """Row-wise softmax of logits z (B, C) into out (B, C); stable for large |z|."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    out[...] = e / e.sum(axis=1, keepdims=True)
    return out


def loss_value(kind, z, t):
    """Mean over the batch of the per-sample loss; returns a scalar of z's dtype.

    z : (B, C) network outputs (logits for the cross-entropies), t : (B, C)
    targets of the same dtype.  Per-sample losses:

    * mse: mean over the C outputs of (z - t)^2;
    * softmax_xent: logsumexp(z) - z . t (t one-hot or a distribution);
    * bce_logits: mean over the C outputs of log(1 + e^z) - t z.
    """
    if kind == MSE:
        return np.mean((z - t) ** 2)
    if kind == SOFTMAX_XENT:
        m = z.max(axis=1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
        return np.mean(lse - (z * t).sum(axis=1))
    if kind == BCE_LOGITS:
        softplus = np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))
        return np.mean(softplus - t * z)
    raise ValueError(f"unknown loss code {kind}")


def loss_grad(kind, z, t, out):
    """Per-sample gradient of the loss of ``loss_value`` with respect to z.

    z, t, out : (B, C) of one dtype; overwrites ``out``.  Not divided by B:
    the layers average their parameter gradients over the batch.  The
    cross-entropies take logits, which is why their gradients are the simple
    ``softmax(z) - t`` and ``(sigmoid(z) - t) / C``: the output layer's
    activation must be the identity for these to be right.  Returns ``out``.
    """
    c = z.shape[1]
    if kind == MSE:
        out[...] = 2 * (z - t) / c
    elif kind == SOFTMAX_XENT:
        softmax(z, out)
        out -= t
    elif kind == BCE_LOGITS:
        stable_sigmoid(z, out)
        out -= t
        out /= c
    else:
        raise ValueError(f"unknown loss code {kind}")
    return out


def loss_and_grad(kind, z, t, out):
    """``loss_value(kind, z, t)``, returned, and ``loss_grad(kind, z, t, out)``
    written into ``out``: what a training step needs of the loss (one pass over
    z where compiled).  Returns the loss."""
    loss_grad(kind, z, t, out)
    return loss_value(kind, z, t)
